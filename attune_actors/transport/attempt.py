"""Running one attempt through the runners, the same way in-process and on a NATS worker.

`immediate_outcome` answers for the runners whose outcome is known without running anything
(`noop`, `echo`): transports deliver it without starting a task, which keeps long chains of noop
tasks cheap. `run_attempt` runs any other attempt within its deadline and turns whatever happens
into a `RunOutcome`; it never raises, not even when cancelled (the outcome is then `canceled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from attune_actors.errors import ActionError, AttuneError
from attune_actors.observability.tracing import Tracing
from attune_actors.runners import RunContext, RunnerSet
from attune_actors.spec.model import ActionSpec
from attune_actors.transport.base import ActionRun, RunOutcome

log = logging.getLogger("attune_actors.transport")


def outcome(run: ActionRun, status: str, *, result: Any = None, error: str | None = None) -> RunOutcome:
    """The outcome of `run` (a shorthand for the transports)."""
    return RunOutcome(run.run_id, run.item, run.attempt, status, result, error)


def immediate_outcome(run: ActionRun, action: ActionSpec) -> RunOutcome | None:
    """The outcome of an attempt that needs no running (`noop`, `echo`), else None."""
    if action.runner_type == "noop":
        return outcome(run, "succeeded")
    if action.runner_type == "echo":
        return outcome(run, "succeeded", result=dict(run.parameters))
    return None


def run_attempt(
    runners: RunnerSet,
    action: ActionSpec,
    run: ActionRun,
    *,
    slots: asyncio.Semaphore | None = None,
    now: Callable[[], float] = time.time,
    tracing: Tracing | None = None,
    span_attributes: dict[str, Any] | None = None,
) -> Coroutine[Any, Any, RunOutcome]:
    """Run `run` with its runner until it ends, its deadline passes or it is cancelled.

    `slots` bounds how many attempts run at once: the attempt waits for one first (its deadline
    counts from submission, so the wait counts against it once started). `now` reads the time
    the deadline is in (the engine's clock in-process; wall time on a worker). With `tracing`, the
    attempt is a span, child of the task span `run.trace` names, with `span_attributes` too.
    """
    # Not a coroutine itself: a parked attempt (a long sleep) keeps one frame less.
    if tracing is None:
        return _run(runners, action, run, slots, now)
    return _traced(runners, action, run, slots, now, tracing, span_attributes)


async def _traced(
    runners: RunnerSet,
    action: ActionSpec,
    run: ActionRun,
    slots: asyncio.Semaphore | None,
    now: Callable[[], float],
    tracing: Tracing,
    span_attributes: dict[str, Any] | None,
) -> RunOutcome:
    span = tracing.start(
        f"attempt {run.task}",
        run.trace,
        {
            "attune.execution_id": run.execution_id,
            "attune.task": run.task,
            "attune.action": run.action,
            "attune.attempt": run.attempt,
            "attune.item": run.item,
            **(span_attributes or {}),
        },
    )
    ended = await _run(runners, action, run, slots, now)
    tracing.end(span, ended.status)  # no error text: spans leave the process, unmasked
    return ended


async def _run(
    runners: RunnerSet,
    action: ActionSpec,
    run: ActionRun,
    slots: asyncio.Semaphore | None,
    now: Callable[[], float],
) -> RunOutcome:
    try:
        async with slots if slots is not None else contextlib.nullcontext():
            timeout = None if run.deadline is None else run.deadline - now()
            if timeout is not None and timeout <= 0:
                raise TimeoutError
            runner = runners.get(action.runner_type)
            context = RunContext(run.execution_id, run.run_id, run.attempt, run.task, run.item, action.ref)
            async with asyncio.timeout(timeout):
                result = await runner.run(action, run.parameters, context)
        return outcome(run, "succeeded", result=result)
    except TimeoutError:
        return outcome(run, "timeout", error=f"{action.ref} timed out")
    except asyncio.CancelledError:
        return outcome(run, "canceled", error="canceled")
    except ActionError as exc:
        return outcome(run, "failed", result=exc.result, error=exc.message)
    except AttuneError as exc:
        return outcome(run, "failed", error=exc.message)
    except Exception as exc:  # a runner bug must take down neither the engine nor the worker
        log.exception("runner %s crashed on %s", action.runner_type, run.key)
        return outcome(run, "failed", error=f"{type(exc).__name__}: {exc}")
