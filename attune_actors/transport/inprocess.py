"""The embedded transport: action runs execute on this process's event loop.

Sync Python actions run in the runners' bounded thread pool; everything else is a coroutine on the
loop. `core.noop` and `core.echo` skip the coroutine entirely (their outcome is known at submit),
which is what keeps a long chain of noop tasks cheap. `core.sleep` is a timer (unless attempts are
traced): an execution parked in a sleep holds a timer handle, not a task and its coroutines
(~2 KiB less each), and takes none of the `max_inflight` slots, which are for actions at work.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

from attune_actors.actors import deliver_burst
from attune_actors.clock import Clock, RealClock
from attune_actors.errors import ActionError, AttuneError
from attune_actors.runners import RunnerSet, sleep_seconds
from attune_actors.spec.model import ActionSpec
from attune_actors.transport.attempt import immediate_outcome, outcome, run_attempt
from attune_actors.transport.base import ActionRun, OutcomeCallback, RunOutcome, Transport


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
        self._sleeping: dict[str, asyncio.TimerHandle] = {}
        self._slots = asyncio.Semaphore(max_inflight)
        # Outcomes known at submit, delivered on the next turn: callbacks and outcomes side by
        # side, not paired in a tuple each, which would outlive young garbage collections.
        self._known_to: list[OutcomeCallback] = []
        self._known: list[RunOutcome] = []

    @property
    def in_flight(self) -> int:
        """Attempts submitted and not ended (running or sleeping)."""
        return len(self._running) + len(self._sleeping)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        for timer in self._sleeping.values():
            timer.cancel()
        self._sleeping.clear()
        await self._runners.aclose()

    def submit(self, run: ActionRun, on_outcome: OutcomeCallback) -> None:
        loop = asyncio.get_running_loop()
        try:
            action = self._actions(run.action)
        except AttuneError as exc:
            self._deliver_later(loop, on_outcome, outcome(run, "failed", error=exc.message))
            return
        known = immediate_outcome(run, action)
        if known is not None:
            self._deliver_later(loop, on_outcome, known)
            return
        if action.runner_type == "sleep" and self.tracing is None:
            self._sleep(loop, run, action, on_outcome)
            return
        key = run.key
        self._running[key] = loop.create_task(self._execute(run, action, on_outcome), name=f"run {key}")

    def _deliver_later(
        self, loop: asyncio.AbstractEventLoop, on_outcome: OutcomeCallback, known: RunOutcome
    ) -> None:
        """Outcomes known at submit are delivered on the next loop turn, never re-entrantly: all
        of a turn's in one callback, which also runs the actors they wake (`deliver_burst`)."""
        pending = self._known
        if not pending:
            loop.call_soon(self._deliver_known, context=_NO_VARS)
        pending.append(known)
        self._known_to.append(on_outcome)

    def _deliver_known(self) -> None:
        to, self._known_to = self._known_to, []
        outcomes, self._known = self._known, []
        deliver_burst(_call, zip(to, outcomes, strict=True))

    def _sleep(
        self, loop: asyncio.AbstractEventLoop, run: ActionRun, action: ActionSpec, on_outcome: OutcomeCallback
    ) -> None:
        """`core.sleep` as a timer: the outcomes the sleep runner would give, without a task."""
        try:
            seconds = sleep_seconds(run.parameters)
        except ActionError as exc:
            loop.call_soon(on_outcome, outcome(run, "failed", error=exc.message))
            return
        timeout: str | None = None  # the action's ref when its deadline comes first
        if run.deadline is not None:
            left = run.deadline - self._clock.now()
            if left <= seconds:
                seconds, timeout = max(left, 0.0), action.ref
        key = run.key
        self._sleeping[key] = loop.call_later(
            seconds, _slept, self._sleeping, key, run, timeout, on_outcome, context=_NO_VARS
        )

    def cancel(self, run: ActionRun) -> None:
        task = self._running.get(run.key)
        if task is not None:
            task.cancel()
        timer = self._sleeping.pop(run.key, None)
        if timer is not None:  # no outcome after a cancel (the contract allows it; none is awaited)
            timer.cancel()

    async def _execute(self, run: ActionRun, action: ActionSpec, on_outcome: OutcomeCallback) -> None:
        try:
            result = await run_attempt(
                self._runners, action, run, slots=self._slots, now=self._clock.now, tracing=self.tracing
            )
        finally:
            self._running.pop(run.key, None)
        on_outcome(result)


# What a sleep's timer and the known outcomes' delivery run in: they read no context variable, and
# a copy of the submitter's context per parked sleep would cost one more object each.
_NO_VARS = contextvars.Context()


def _call(pending: tuple[OutcomeCallback, RunOutcome]) -> None:
    pending[0](pending[1])


def _slept(
    sleeping: dict[str, asyncio.TimerHandle], key: str, run: ActionRun, timeout: str | None,
    on_outcome: OutcomeCallback,
) -> None:
    del sleeping[key]
    if timeout is None:
        on_outcome(outcome(run, "succeeded"))
    else:
        on_outcome(outcome(run, "timeout", error=f"{timeout} timed out"))
