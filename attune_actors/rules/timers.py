"""Timers: `core.interval`, `core.cron` and `core.datetime` rules fire at nominal times, once each.

Each enabled timer rule has a `TimerActor`. It computes the next *nominal* fire time (the time the
schedule names, not when the loop woke up), sleeps on the clock until then, and hands the rules
service a trigger instance whose id is `<type>:<rule>:<nominal time>`. That id makes the
enforcement claim the dedupe key: a second engine, or this one after a restart, firing the same
nominal time finds the record already there. After each fire the nominal time is stored as the
rule's `last_fire`, so a restarted engine resumes from it:

- a fire that fell due while the engine was down is made up once if it is at most `catchup`
  seconds late (default 60), and skipped (logged, counted in `missed`) otherwise; never more than
  one missed fire is made up, so an outage does not end in a burst;
- interval rules keep their phase: nominal times are `last_fire + k * seconds`.

Time comes from the engine's `Clock` (`Engine(clock=...)`), so tests and the testing toolkit move
time with a `VirtualClock` instead of waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from attune_actors.actors import AsyncioActor
from attune_actors.clock import Clock
from attune_actors.spec.rules import RuleSpec

log = logging.getLogger("attune_actors.rules")

DEFAULT_CATCHUP = 60.0


async def sleep(clock: Clock, seconds: float) -> None:
    """Sleep `seconds` on `clock` (on a `VirtualClock`, until its time gets there)."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    handle = clock.call_later(seconds, _wake, fut)
    try:
        await fut
    finally:
        handle.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Schedule:
    """The nominal fire times of one timer rule."""

    def __init__(self, rule: RuleSpec) -> None:
        params = rule.trigger_parameters
        self.kind = rule.trigger_type
        self.catchup = float(params.get("catchup", DEFAULT_CATCHUP))
        self._tz = ZoneInfo(params.get("timezone") or "UTC")
        self._seconds = float(params.get("seconds", 0))
        self._expression = str(params.get("expression") or "")
        self._at: float | None = None
        if self.kind == "core.datetime":
            at = datetime.fromisoformat(params["at"])
            self._at = (at if at.tzinfo is not None else at.replace(tzinfo=self._tz)).timestamp()

    def next_after(self, moment: float, anchor: float | None) -> float | None:
        """The first nominal time after `moment` (None: never again). `anchor`: the last fire."""
        if self.kind == "core.datetime":
            assert self._at is not None
            return self._at if self._at > moment and anchor is None else None
        if self.kind == "core.interval":
            if anchor is None:
                return moment + self._seconds
            steps = max(1, int((moment - anchor) // self._seconds) + 1)
            return anchor + steps * self._seconds
        start = datetime.fromtimestamp(moment, tz=self._tz)
        nxt: float = croniter(self._expression, start).get_next(float)
        return nxt

    def missed(self, last: float, now: float) -> tuple[float | None, int]:
        """The latest nominal time in (last, now] and how many fell there (capped for long outages)."""
        if self.kind == "core.datetime":
            assert self._at is not None
            return (self._at, 1) if last < self._at <= now else (None, 0)
        latest, count, t = None, 0, last
        while count < 10_000:
            nxt = self.next_after(t, last if self.kind == "core.interval" else None)
            if nxt is None or nxt > now:
                break
            latest, count, t = nxt, count + 1, nxt
        return latest, count


Fire = Callable[[RuleSpec, float], Awaitable[bool]]


@dataclass
class TimerState:
    """What a timer has done, shared with whoever started it: the last nominal fire, missed fires."""

    last_fire: float | None = None
    missed: int = 0


class TimerActor(AsyncioActor):
    """Fires one timer rule at its nominal times, through `fire(rule, nominal)`; stop() stops it.

    `fire` returns whether the rule is still enabled (a disabled rule's timer stops at once).
    `state.last_fire` is the nominal time stored by the previous fire, if any.
    """

    use_actor_registry = False

    def __init__(self, rule: RuleSpec, clock: Clock, fire: Fire, state: TimerState) -> None:
        super().__init__()
        self.rule = rule
        self.clock = clock
        self.fire = fire
        self.state = state
        self.schedule = Schedule(rule)
        self._task: asyncio.Task[None] | None = None

    def on_start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"timer {self.rule.ref}")

    def on_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not end the timer silently
            log.exception("timer of rule %s stopped", self.rule.ref)

    async def _loop(self) -> None:
        now = self.clock.now()
        last = self.state.last_fire
        if last is None and self.schedule.kind == "core.datetime":
            last = now - self.schedule.catchup  # a date just passed when the rule appeared still fires
        if last is not None:
            latest, count = self.schedule.missed(last, now)
            if latest is not None:
                make_up = now - latest <= self.schedule.catchup
                skipped = count - 1 if make_up else count
                if skipped:
                    self.state.missed += skipped
                    log.warning(
                        "rule %s: %d fire(s) missed while the engine was down (catchup %g s)",
                        self.rule.ref,
                        skipped,
                        self.schedule.catchup,
                    )
                if make_up and not await self._fire(latest):
                    return
        while True:
            now = self.clock.now()
            nxt = self.schedule.next_after(max(now, self.state.last_fire or now), self.state.last_fire)
            if nxt is None:
                return
            await sleep(self.clock, nxt - now)
            while self.clock.now() < nxt:  # a clock may wake a sleeper early; never fire early
                await sleep(self.clock, nxt - self.clock.now())
            if not await self._fire(nxt):
                return

    async def _fire(self, nominal: float) -> bool:
        self.state.last_fire = nominal
        return await self.fire(self.rule, nominal)


def timer_instance(rule: RuleSpec, nominal: float, now: float) -> dict[str, Any]:
    """The trigger instance of one fire; its id is the dedupe key (rule, nominal time)."""
    stamp = datetime.fromtimestamp(nominal, tz=UTC).isoformat()
    return {
        "id": f"{rule.trigger_type}:{rule.ref}:{stamp}",
        "type": rule.trigger_type,
        "payload": {"rule": rule.ref, "scheduled_at": stamp},
        "occurred_at": datetime.fromtimestamp(now, tz=UTC).isoformat(),
    }


__all__ = ["Schedule", "TimerActor", "TimerState", "sleep", "timer_instance"]
