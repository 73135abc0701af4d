"""Runners: execute one action run, by `runner_type`, and hand back its JSON result.

The worker picks the runner for an action's `runner_type` from a `RunnerSet` and awaits
`runner.run(action, parameters, context)`. Every runner's result is held to
`limits.max_result_bytes` by the set (`RunnerLimits`). A run returns its result or raises
`ActionError` (with the partial result); exceptions from action code become
`ActionError("<ExcType>: <message> (raised at FILE:LINE)")`. Timeouts and cancellation belong to
the caller (`asyncio.wait_for`, `task.cancel()`): every runner releases what it holds and
re-raises `asyncio.CancelledError`.

Implementing a new runner: any object with `async def run(action, parameters, context) -> Any`
(the `Runner` protocol) and, if it holds resources, `async def aclose()`. Put it in a `RunnerSet`
under its `runner_type`. `inquiry` and `workflow` actions are carried out by the engine itself.
"""

from attune_actors.runners._base import Closeable, RunContext, Runner, json_result
from attune_actors.runners._builtin import EchoRunner, NoopRunner, SleepRunner, sleep_seconds
from attune_actors.runners._http import HttpRunner
from attune_actors.runners._local import LocalRunner
from attune_actors.runners._python import PythonRunner
from attune_actors.runners._set import (
    ENGINE_RUNNER_TYPES,
    RunnerLimits,
    RunnerSet,
    default_runners,
)

__all__ = [
    "ENGINE_RUNNER_TYPES",
    "Closeable",
    "EchoRunner",
    "HttpRunner",
    "LocalRunner",
    "NoopRunner",
    "PythonRunner",
    "RunContext",
    "Runner",
    "RunnerLimits",
    "RunnerSet",
    "SleepRunner",
    "default_runners",
    "json_result",
    "sleep_seconds",
]
