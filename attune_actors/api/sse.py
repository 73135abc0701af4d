"""One execution's events as server-sent events: its status now, then every change, until it ends.

    id: 1
    event: execution
    data: {"type": "execution", "id": ..., "status": "running", ...}

The first event is the execution as it is when the stream opens (the whole execution document,
tasks included, as an `execution` event); then each engine event of it and
its nested executions follows (`execution`, `task`, `inquiry`, as `Engine.events()` gives them,
secrets masked). The stream ends after the execution's own terminal `execution` event, or at once if
it had already ended. A listener too slow for the engine's buffer gets a `gap` event followed by the
execution's current document, so it never misses the end. A comment line every `heartbeat` seconds
keeps proxies from closing a quiet stream. The server closes open streams when it stops.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from attune_actors.api.deps import EngineApi
from attune_actors.engine.events import Subscription
from attune_actors.engine.execution import Execution
from attune_actors.statuses import TERMINAL

HEARTBEAT = 15.0


class EventStreams:
    """The open streams of one app, so that stopping the server can end them."""

    def __init__(self, heartbeat: float = HEARTBEAT) -> None:
        self.heartbeat = heartbeat
        self._open: set[Subscription] = set()
        self._closed = False

    async def open(self, engine: EngineApi, execution_id: str) -> AsyncIterator[bytes]:
        """The stream of `execution_id`; NotFoundError (before anything is sent) if there is none."""
        # Subscribe before reading the status: a change in between is then sent, not lost.
        sub = engine.events(execution_id)
        try:
            first = await engine.get(execution_id)
        except BaseException:
            sub.close()
            raise
        if self._closed:
            sub.close()
        self._open.add(sub)
        return self._frames(engine, execution_id, sub, first)

    def close(self) -> None:
        self._closed = True
        for sub in tuple(self._open):
            sub.close()

    async def _frames(
        self, engine: EngineApi, execution_id: str, sub: Subscription, first: Execution
    ) -> AsyncIterator[bytes]:
        seq = 0

        def frame(event: dict[str, Any]) -> bytes:
            nonlocal seq
            seq += 1
            data = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)
            return f"id: {seq}\nevent: {event['type']}\ndata: {data}\n\n".encode()

        try:
            yield frame(_status(first))
            if first.terminal:
                return
            while True:
                try:
                    event = await asyncio.wait_for(anext(sub), self.heartbeat)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                except StopAsyncIteration:
                    return  # the server is stopping
                yield frame(event)
                if event["type"] == "gap":
                    # Dropped events may have held the end: say where it stands now.
                    now = await engine.get(execution_id)
                    yield frame(_status(now))
                    if now.terminal:
                        return
                elif (
                    event["type"] == "execution"
                    and event.get("execution_id") == execution_id
                    and event.get("status") in TERMINAL
                ):
                    return
        finally:
            sub.close()
            self._open.discard(sub)


def _status(execution: Execution) -> dict[str, Any]:
    """An `execution` event holding the whole document, tasks included: all a late listener needs."""
    return {"type": "execution", "execution_id": execution.id, **execution.to_dict()}


__all__ = ["HEARTBEAT", "EventStreams"]
