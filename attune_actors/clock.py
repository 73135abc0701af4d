"""Clocks: where the engine reads the time and schedules its timers, so a test can skip time.

Every time the engine acts on (retry delays, `delay:`, per-attempt and workflow timeouts, inquiry
expiry, the `now` each conductor event carries) comes from the `Clock` given to
`Engine(clock=...)`. `RealClock`, the default, is wall time with timers on the running event loop.
`VirtualClock` is time that moves only when told to (`advance`) or, with `auto_advance`, when the
engine is idle: nothing but timers left to wait for, so a retry delay of 10 s passes at once.

Times are epoch seconds (what snapshots store, so a deadline survives a restart).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Clock", "RealClock", "TimerHandle", "VirtualClock"]


class TimerHandle(Protocol):
    """A scheduled callback; `cancel()` makes sure it does not run (harmless once it ran)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The time and the timers of one engine."""

    def now(self) -> float:
        """Epoch seconds."""
        ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run `callback(*args)` on the event loop once `now()` reaches `when` (epoch seconds)."""
        ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run `callback(*args)` on the event loop `delay` seconds from now."""
        ...


class RealClock:
    """Wall time; timers on the running event loop."""

    __slots__ = ()

    now = staticmethod(time.time)  # the C function itself: read on every engine step

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, when - time.time()), callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback, *args)

    def __repr__(self) -> str:
        return "RealClock()"


class _VirtualTimer:
    __slots__ = ("args", "callback", "canceled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.canceled = False

    def cancel(self) -> None:
        self.canceled = True


class VirtualClock:
    """Time that moves only when told to, or when the engine it drives is idle.

    `advance(seconds)` moves time forward and runs, in order, the callbacks that fall due (each at
    its own time: a callback that schedules another within the step sees it run too). With
    `auto_advance` (the default), a background task on the event loop jumps to the next timer
    once the engine is idle: `idle()` (set by the engine with `attach`: no action attempt in
    flight, no event unread by a subscriber) holds and nothing touched the clock for
    `settle_turns` loop turns. Action code that sleeps or waits for I/O still takes real time,
    and an unanswered inquiry lets time pass up to its expiry (answer it when its event comes).
    """

    def __init__(
        self, start: float | None = None, *, auto_advance: bool = True, settle_turns: int = 20
    ) -> None:
        self._now = time.time() if start is None else start
        self._timers: list[tuple[float, int, _VirtualTimer]] = []
        self._seq = itertools.count()
        self._auto = auto_advance
        self._settle = settle_turns
        self._idle: Callable[[], bool] = _always
        self._touched = 0  # bumped by every use of the clock: activity the advancer waits out
        self._advancer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now!r}, timers={len(self._timers)})"

    def attach(self, idle: Callable[[], bool]) -> None:
        """How auto-advance tells that nothing but timers is left to wait for."""
        self._idle = idle

    def now(self) -> float:
        self._touched += 1
        return self._now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        self._touched += 1
        timer = _VirtualTimer(max(when, self._now), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        if self._auto and (self._advancer is None or self._advancer.done()):
            self._advancer = asyncio.get_running_loop().create_task(self._advance_when_idle())
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        return self.call_at(self._now + max(0.0, delay), callback, *args)

    def next_due(self) -> float | None:
        """When the next timer falls due (None: no timer)."""
        self._drop_canceled()
        return self._timers[0][0] if self._timers else None

    def advance(self, seconds: float) -> int:
        """Move time forward by `seconds`, running the callbacks that fall due; how many ran."""
        return self.advance_to(self._now + seconds)

    def advance_to(self, when: float) -> int:
        """Move time forward to `when` (never back), running the callbacks that fall due."""
        ran = 0
        self._touched += 1
        while True:
            self._drop_canceled()
            if not self._timers or self._timers[0][0] > when:
                break
            due, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, due)
            timer.callback(*timer.args)
            ran += 1
        self._now = max(self._now, when)
        return ran

    def _drop_canceled(self) -> None:
        timers = self._timers
        while timers and timers[0][2].canceled:
            heapq.heappop(timers)

    async def _advance_when_idle(self) -> None:
        quiet, seen = 0, -1
        while (due := self.next_due()) is not None:
            if not self._idle():
                quiet = 0
                await asyncio.sleep(0.001)  # real work (an action) in flight: wait for it in real time
                continue
            if self._touched == seen:
                quiet += 1
            else:
                quiet, seen = 0, self._touched
            if quiet >= self._settle:
                self.advance_to(due)
                quiet = 0
            await asyncio.sleep(0)


def _always() -> bool:
    return True
