"""The embedded transport: action runs execute on this process's event loop.

Sync Python actions run in the runners' bounded thread pool; everything else is a coroutine on the
loop. `core.noop` and `core.echo` skip the coroutine entirely (their outcome is known at submit),
which is what keeps a long chain of noop tasks cheap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from attune_actors.clock import Clock, RealClock
from attune_actors.errors import ActionError, AttuneError
from attune_actors.runners import RunContext, RunnerSet
from attune_actors.spec.model import ActionSpec
from attune_actors.transport.base import ActionRun, OutcomeCallback, RunOutcome, Transport

log = logging.getLogger("attune_actors.transport")


class InProcessTransport(Transport):
    """Runs attempts as tasks on the running loop, at most `max_inflight` at once."""

    def __init__(
        self,
        actions: Callable[[str], ActionSpec],
        runners: RunnerSet,
        *,
        max_inflight: int = 10000,
        clock: Clock | None = None,
    ) -> None:
        self._actions = actions
        # Deadlines are in the engine's time: with a virtual clock (which stands still while an
        # action runs) the time left is still deadline - now.
        self._clock: Clock = clock or RealClock()
        self._runners = runners
        self._running: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max_inflight)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        await self._runners.aclose()

    def submit(self, run: ActionRun, on_outcome: OutcomeCallback) -> None:
        loop = asyncio.get_running_loop()
        try:
            action = self._actions(run.action)
        except AttuneError as exc:
            loop.call_soon(on_outcome, _outcome(run, "failed", error=exc.message))
            return
        # Outcomes known at submit are delivered on the next loop turn, never re-entrantly.
        if action.runner_type == "noop":
            loop.call_soon(on_outcome, _outcome(run, "succeeded"))
            return
        if action.runner_type == "echo":
            loop.call_soon(on_outcome, _outcome(run, "succeeded", result=dict(run.parameters)))
            return
        key = run.key
        self._running[key] = loop.create_task(self._execute(run, action, on_outcome), name=f"run {key}")

    def cancel(self, run: ActionRun) -> None:
        task = self._running.get(run.key)
        if task is not None:
            task.cancel()

    async def _execute(self, run: ActionRun, action: ActionSpec, on_outcome: OutcomeCallback) -> None:
        key = run.key
        outcome: RunOutcome
        try:
            async with self._slots:
                timeout = None if run.deadline is None else run.deadline - self._clock.now()
                if timeout is not None and timeout <= 0:
                    raise TimeoutError
                runner = self._runners.get(action.runner_type)
                context = RunContext(
                    run.execution_id, run.run_id, run.attempt, run.task, run.item, action.ref
                )
                async with asyncio.timeout(timeout):
                    result = await runner.run(action, run.parameters, context)
            outcome = _outcome(run, "succeeded", result=result)
        except TimeoutError:
            outcome = _outcome(run, "timeout", error=f"{action.ref} timed out")
        except asyncio.CancelledError:
            outcome = _outcome(run, "canceled", error="canceled")
        except ActionError as exc:
            outcome = _outcome(run, "failed", result=exc.result, error=exc.message)
        except AttuneError as exc:
            outcome = _outcome(run, "failed", error=exc.message)
        except Exception as exc:  # a runner bug must not take the engine down
            log.exception("runner %s crashed on %s", action.runner_type, key)
            outcome = _outcome(run, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._running.pop(key, None)
        on_outcome(outcome)


def _outcome(run: ActionRun, status: str, *, result: Any = None, error: str | None = None) -> RunOutcome:
    return RunOutcome(run.run_id, run.item, run.attempt, status, result, error)
