"""AsyncioInbox: where messages for one AsyncioActor wait, and how senders on other threads get in.

Senders call `put()` (through pykka's `ActorRef.tell/ask`) from any thread; the actor's own task is the
only reader. All inbox state is touched on the actor's loop thread only: a sender on another thread
hands its envelope over with `loop.call_soon_threadsafe`, which keeps each sender's messages in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from pykka import ActorDeadError
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

__all__ = ["AsyncioInbox"]

logger = logging.getLogger("attune_actors.actors")

# `asyncio._get_running_loop()` costs a getpid() system call on Python 3.11; the thread id is enough,
# since the actor's loop runs on the thread that created the actor.
_get_ident = threading.get_ident


def reject(envelope: Envelope[Any], owner: object) -> None:
    """Answer an envelope the actor will never handle: a stop request gets `None` (it is stopped),
    any other ask `ActorDeadError`; a tell is dropped."""
    reply_to = envelope.reply_to
    if reply_to is None:
        logger.debug("Dropped message to stopped %s: %r", owner, envelope.message)
    elif isinstance(envelope.message, _ActorStop):
        reply_to.set(None)
    else:
        error = ActorDeadError(f"{owner} stopped before handling the message")
        reply_to.set_exception((ActorDeadError, error, None))


class AsyncioInbox:
    """An asyncio queue of pykka envelopes for one actor (implements pykka's `ActorInbox` protocol).

    Unbounded; `put()` never blocks. The reader (the actor's task) takes all queued envelopes at
    once with `take()` and, when there are none, awaits `park()`, a future the next `put()`
    resolves. After `close()` every new envelope is rejected at once: asks get `ActorDeadError`,
    tells from the loop thread raise it, tells that arrive from other threads are dropped.
    """

    __slots__ = ("_closed", "_items", "_loop", "_owner", "_thread_id", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: object = "actor") -> None:
        self._loop = loop
        self._thread_id = _get_ident()  # created on the loop's thread (it runs the loop)
        self._items: list[Envelope[Any]] = []
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._owner = owner  # names the actor in errors; the actor sets its URN (no extra string)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop that runs the reader."""
        return self._loop

    def put(self, envelope: Envelope[Any], /) -> None:
        """Queue an envelope from any thread; never blocks."""
        if _get_ident() != self._thread_id:
            try:
                self._loop.call_soon_threadsafe(self._deliver, envelope)
            except RuntimeError:  # the loop is closed: the actor is gone with it
                self._refuse(envelope)
            return
        if self._closed:
            self._refuse(envelope)
            return
        self._items.append(envelope)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            try:
                waiter.set_result(None)
            except asyncio.InvalidStateError:  # the reader was cancelled while parked: stopping
                pass

    def _deliver(self, envelope: Envelope[Any]) -> None:
        """`put()` for envelopes from other threads, run on the loop thread."""
        if self._closed:
            reject(envelope, self._owner)
            return
        self._items.append(envelope)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _refuse(self, envelope: Envelope[Any]) -> None:
        if envelope.reply_to is None:
            msg = f"{self._owner} not found"
            raise ActorDeadError(msg)
        reject(envelope, self._owner)

    def get(self) -> Envelope[Any]:
        """Remove and return the oldest envelope (pykka protocol; never blocks; `IndexError` if empty)."""
        return self._items.pop(0)

    def empty(self) -> bool:
        """Whether no envelope is queued."""
        return not self._items

    def __len__(self) -> int:
        return len(self._items)

    # -- reader side (the actor's task, on the loop thread) --------------------------------------

    def take(self) -> list[Envelope[Any]]:
        """Remove and return every queued envelope, oldest first."""
        items = self._items
        if items:
            self._items = []
        return items

    def unshift(self, envelopes: list[Envelope[Any]]) -> None:
        """Put envelopes taken but not handled back in front of the queue."""
        if envelopes:
            self._items[:0] = envelopes

    def park(self) -> asyncio.Future[None]:
        """A future the next `put()` resolves; the reader awaits it when `take()` found nothing."""
        waiter = self._waiter = self._loop.create_future()
        return waiter

    def close(self) -> list[Envelope[Any]]:
        """Refuse every later envelope and return the ones still queued."""
        self._closed = True
        items, self._items = self._items, []
        return items
