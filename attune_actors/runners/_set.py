"""`RunnerSet`: the runners of one worker, by `runner_type`, and the owner of their resources."""

from __future__ import annotations

import concurrent.futures
import difflib
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from attune_actors.errors import ActionError
from attune_actors.runners._base import Closeable, RunContext, Runner
from attune_actors.runners._builtin import EchoRunner, NoopRunner, SleepRunner
from attune_actors.runners._http import HttpRunner
from attune_actors.runners._local import LocalRunner
from attune_actors.runners._python import PythonRunner
from attune_actors.spec.model import ActionSpec

__all__ = ["ENGINE_RUNNER_TYPES", "RunnerSet", "default_runners"]

# Runner types the engine itself carries out; asking a RunnerSet for them is a programming error.
ENGINE_RUNNER_TYPES = ("inquiry", "workflow")


def default_runners(
    *, executor: concurrent.futures.Executor | None = None, kill_grace: float = 5.0
) -> dict[str, Runner]:
    """One runner per built-in `runner_type` (python, local, http, noop, echo, sleep).

    `executor` runs synchronous python actions (default: a bounded thread pool owned by the python
    runner); `kill_grace` is the SIGTERM-to-SIGKILL delay of cancelled shell commands. Runners that
    hold resources have an `aclose()`; `RunnerSet` calls them.
    """
    return {
        "python": PythonRunner(executor=executor),
        "local": LocalRunner(kill_grace=kill_grace),
        "http": HttpRunner(),
        "noop": NoopRunner(),
        "echo": EchoRunner(),
        "sleep": SleepRunner(),
    }


class RunnerSet:
    """Runners by `runner_type`; `aclose()` (or `async with`) releases their executors and clients.

    Without `runners`, holds `default_runners(executor=..., kill_grace=...)`. A given `executor`
    stays the caller's to shut down.
    """

    def __init__(
        self,
        runners: Mapping[str, Runner] | None = None,
        *,
        executor: concurrent.futures.Executor | None = None,
        kill_grace: float = 5.0,
    ) -> None:
        self._runners: dict[str, Runner] = dict(
            runners
            if runners is not None
            else default_runners(executor=executor, kill_grace=kill_grace)
        )
        self._closed = False

    def get(self, runner_type: str) -> Runner:
        """The runner for `runner_type`; `ActionError` naming the known types when there is none."""
        runner = self._runners.get(runner_type)
        if runner is not None:
            return runner
        if runner_type in ENGINE_RUNNER_TYPES:
            raise ActionError(
                f"runner type {runner_type!r} is carried out by the engine, not by a runner"
            )
        known = sorted(self._runners)
        close = difflib.get_close_matches(runner_type, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ActionError(
            f"unknown runner type {runner_type!r} (known: {', '.join(known)}){hint}"
        )

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        """Run `action` with the runner of its `runner_type`."""
        return await self.get(action.runner_type).run(action, parameters, context)

    async def aclose(self) -> None:
        """Close every runner that holds resources; idempotent."""
        if self._closed:
            return
        self._closed = True
        for runner in self._runners.values():
            if isinstance(runner, Closeable):
                await runner.aclose()

    async def __aenter__(self) -> RunnerSet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def types(self) -> tuple[str, ...]:
        """The runner types this set can run, sorted."""
        return tuple(sorted(self._runners))

    def __contains__(self, runner_type: object) -> bool:
        return runner_type in self._runners
