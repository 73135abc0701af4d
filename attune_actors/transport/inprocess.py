"""The embedded transport: action runs execute on this process's event loop.

Sync Python actions run in the runners' bounded thread pool; everything else is a coroutine on the
loop. `core.noop` and `core.echo` skip the coroutine entirely (their outcome is known at submit),
which is what keeps a long chain of noop tasks cheap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from attune_actors.clock import Clock, RealClock
from attune_actors.errors import AttuneError
from attune_actors.runners import RunnerSet
from attune_actors.spec.model import ActionSpec
from attune_actors.transport.attempt import immediate_outcome, outcome, run_attempt
from attune_actors.transport.base import ActionRun, OutcomeCallback, Transport


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
            loop.call_soon(on_outcome, outcome(run, "failed", error=exc.message))
            return
        # Outcomes known at submit are delivered on the next loop turn, never re-entrantly.
        known = immediate_outcome(run, action)
        if known is not None:
            loop.call_soon(on_outcome, known)
            return
        key = run.key
        self._running[key] = loop.create_task(self._execute(run, action, on_outcome), name=key)

    def cancel(self, run: ActionRun) -> None:
        task = self._running.get(run.key)
        if task is not None:
            task.cancel()

    async def _execute(self, run: ActionRun, action: ActionSpec, on_outcome: OutcomeCallback) -> None:
        try:
            result = await run_attempt(
                self._runners, action, run, slots=self._slots, now=self._clock.now, tracing=self.tracing
            )
        finally:
            self._running.pop(run.key, None)
        on_outcome(result)
