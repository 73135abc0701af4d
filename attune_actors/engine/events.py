"""The event stream: status changes of executions, task runs and inquiries, to any subscriber.

Supervisors publish on the event loop's thread, in step order, so each subscriber sees every
execution's events in order. A slow subscriber never slows the engine: each has a bounded buffer,
and when it is full further events are dropped and counted; the subscriber then receives one
`{"type": "gap", "missed": N}` marker before the events that follow.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

Event = dict[str, Any]


class Subscription:
    """One subscriber's bounded buffer; iterate it with `async for`."""

    def __init__(self, bus: EventBus, execution_id: str | None, maxsize: int) -> None:
        self._bus = bus
        self.execution_id = execution_id
        self._buffer: deque[Event] = deque()
        self._maxsize = maxsize
        self._missed = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._closed = False

    def _offer(self, event: Event) -> None:
        if len(self._buffer) >= self._maxsize:
            self._missed += 1
            self._bus.dropped += 1
            return
        if self._missed:
            self._buffer.append({"type": "gap", "missed": self._missed})
            self._missed = 0
        self._buffer.append(event)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def close(self) -> None:
        """Stop receiving; a pending `__anext__` ends the iteration."""
        if not self._closed:
            self._closed = True
            self._bus._subscriptions.discard(self)
            if self._wakeup is not None and not self._wakeup.done():
                self._wakeup.set_result(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._missed:
                missed, self._missed = self._missed, 0
                return {"type": "gap", "missed": missed}
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        return self._buffer.popleft()

    def pending(self) -> int:
        """Events buffered and not yet read."""
        return len(self._buffer)


class EventBus:
    """Fans events out to subscriptions, filtered by execution id (None: every execution)."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._maxsize = maxsize
        self._subscriptions: set[Subscription] = set()
        self.dropped = 0  # events some subscriber missed (for metrics)

    @property
    def active(self) -> bool:
        """Whether anyone listens (publishers skip building events otherwise)."""
        return bool(self._subscriptions)

    def subscribers(self) -> int:
        return len(self._subscriptions)

    def unread(self) -> bool:
        """Some subscriber has events it has not read yet."""
        return any(sub.pending() for sub in self._subscriptions)

    def subscribe(self, execution_id: str | None = None, maxsize: int | None = None) -> Subscription:
        sub = Subscription(self, execution_id, maxsize or self._maxsize)
        self._subscriptions.add(sub)
        return sub

    def publish(self, event: Event) -> None:
        execution_id = event.get("execution_id")
        root_id = event.get("root_id")
        for sub in tuple(self._subscriptions):
            if sub.execution_id is None or sub.execution_id in (execution_id, root_id):
                sub._offer(event)

    def close(self) -> None:
        for sub in tuple(self._subscriptions):
            sub.close()
