"""The sidecar: a thread with its own event loop and NATS connection, for what must go on while the
engine's loop is busy.

An engine's event loop runs every execution's supervisor; a template at the edge of its render
budget, or a burst of work, keeps it busy for a while. The lease renewals and the control service's
discovery answers (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`) run here instead, so a busy engine is
still seen as alive; requests that need the engine are forwarded to its loop (`ControlService`).

Liveness is not blind: `Heartbeat` ticks on the engine's loop, and `serve` renews the lease only
while the beat is recent (`stall` seconds), so a wedged engine gives its lease up and, if its loop
cannot even stop, exits; if it was stuck resuming an execution, the next engine quarantines it
(`engine.quarantine`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from nats.aio.client import Client

__all__ = ["Heartbeat", "Sidecar"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Sidecar:
    """A daemon thread running an asyncio loop, with one NATS connection made on that loop."""

    def __init__(self, name: str = "attune-sidecar") -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._nc: Client | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Whatever is left (a stop() that timed out) is cancelled, then the loop closes.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("the sidecar is not started")
        return self._nc

    async def start(self, connect: Callable[[], Awaitable[Client]]) -> None:
        """Start the thread and make its NATS connection there (`connect` runs on its loop)."""
        self._thread.start()

        async def make() -> Client:
            return await connect()

        try:
            self._nc = await self.run(make())
        except BaseException:
            self._halt()
            raise

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coro` on the sidecar's loop (from any thread); its concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` run on the sidecar's loop, from another loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(callback, *args)

    async def stop(self) -> None:
        """Close the connection (flushing it), stop the loop and join the thread."""
        nc, self._nc = self._nc, None
        if nc is not None and self._thread.is_alive():

            async def close() -> None:
                with contextlib.suppress(Exception):
                    await nc.flush(timeout=2)
                await nc.close()

            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.run(close()), 5)
        self._halt()
        await asyncio.to_thread(self._thread.join, 5)

    def _halt(self) -> None:
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.loop.stop)


class Heartbeat:
    """Ticks on the loop it is started on; `age()` (from any thread) is how long since the last."""

    def __init__(self, period: float = 0.25) -> None:
        self.period = period
        self._at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._at = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="attune-heartbeat")

    async def _beat(self) -> None:
        while True:
            self._at = time.monotonic()
            await asyncio.sleep(self.period)

    def age(self) -> float:
        return time.monotonic() - self._at

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
