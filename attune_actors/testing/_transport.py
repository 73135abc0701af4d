"""ScriptedTransport: the engine's transport in a workflow test; mocked actions end on the clock.

Attempts of a mocked action never run: their scripted outcome is delivered at the engine time it
falls due (after its delay, or at the attempt's deadline for a timeout), on a timer of the
engine's clock, so a virtual clock skips the wait. Every other attempt goes to the engine's own
in-process transport (`Engine.in_process_transport()`) and runs for real. Every attempt is
recorded as a `Call`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from attune_actors.clock import Clock, TimerHandle
from attune_actors.errors import ActionError
from attune_actors.runners import json_result
from attune_actors.testing._script import Call, Mock, Outcome
from attune_actors.transport.base import ActionRun, OutcomeCallback, RunOutcome, Transport


class ScriptedTransport(Transport):
    """Scripted outcomes for mocked action refs, the in-process transport for the rest."""

    def __init__(self, real: Callable[[], Transport], mocks: dict[str, Mock], clock: Clock) -> None:
        self._make_real = real  # called at start: the engine's own in-process transport
        self._real: Transport | None = None
        self._mocks = mocks
        self._clock = clock
        self._timers: dict[str, TimerHandle] = {}
        self.calls: list[Call] = []

    async def start(self) -> None:
        self._real = self._make_real()
        await self._real.start()

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._real is not None:
            await self._real.close()

    def _runs(self) -> Transport:
        if self._real is None:
            raise RuntimeError("the scripted transport is not started")
        return self._real

    def waiting_on_clock(self) -> int:
        return len(self._timers)

    def submit(self, run: ActionRun, on_outcome: OutcomeCallback) -> None:
        mock = self._mocks.get(run.action)
        outcome = mock.pick(run) if mock is not None else None
        now = self._clock.now()
        self.calls.append(
            Call(
                run.execution_id, run.action, run.task, run.item, run.attempt,
                dict(run.parameters), now, outcome,
            )
        )
        if outcome is None or outcome.real:
            self._runs().submit(run, on_outcome)
            return
        at, ended = _scripted(run, outcome, now)
        if at <= now:
            asyncio.get_running_loop().call_soon(on_outcome, ended)  # never re-entrantly
            return
        key = run.key

        def fire() -> None:
            if self._timers.pop(key, None) is not None:
                on_outcome(ended)

        self._timers[key] = self._clock.call_at(at, fire)

    def cancel(self, run: ActionRun) -> None:
        handle = self._timers.pop(run.key, None)
        if handle is not None:
            handle.cancel()
        else:
            self._runs().cancel(run)


def _scripted(run: ActionRun, outcome: Outcome, now: float) -> tuple[float, RunOutcome]:
    """When the scripted attempt ends (engine time), and how."""
    at = now + outcome.delay
    if outcome.timeout and run.deadline is not None:
        at = run.deadline
    if outcome.timeout or (run.deadline is not None and at > run.deadline):
        return min(at, run.deadline or at), _ended(run, "timeout", None, f"{run.action} timed out")
    try:
        value = json_result(outcome.result, action=run.action)
    except ActionError as exc:
        return at, _ended(run, "failed", None, exc.message)
    if outcome.error is not None:
        return at, _ended(run, "failed", value, outcome.error)
    return at, _ended(run, "succeeded", value, None)


def _ended(run: ActionRun, status: str, result: object, error: str | None) -> RunOutcome:
    return RunOutcome(run.run_id, run.item, run.attempt, status, result, error)
