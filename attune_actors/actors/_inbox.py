"""AsyncioInbox: where messages for one AsyncioActor wait, and how senders on other threads get in.

Senders call `put()` (through pykka's `ActorRef.ask`, `AsyncioActorRef.tell`) from any thread; the
actor is the only reader. A told message is queued as it is, an ask in pykka's `Envelope` with its
reply future: an envelope per tell was one more object per message for the garbage collector to
track, and a thousand outcomes queued at once outlived its young collections. All inbox state is
touched on the actor's loop thread only: a sender on another thread hands its message over with
`loop.call_soon_threadsafe`, which keeps each sender's messages in order. An idle actor has no
task waiting on its inbox: the inbox holds it as its *reader* and runs the reader's `_drain()`
when the next message arrives: at once when another actor's handler sent it
(a hand-over, `run_reader`), at the end of a `deliver_burst`, else as a loop callback.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from pykka import ActorDeadError
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

__all__ = ["AsyncioInbox", "Reader", "deliver_burst"]

T = TypeVar("T")

logger = logging.getLogger("attune_actors.actors")

# `asyncio._get_running_loop()` costs a getpid() system call on Python 3.11; the thread id is enough,
# since the actor's loop runs on the thread that created the actor.
_get_ident = threading.get_ident

# What actors' handlers run in: one empty context per loop thread, not a copy of the sender's (a
# handler sees no variable a sender had set, and a wake-up copies no context). Handlers that set
# a variable reset it before they return (`logctx` does).
_local = threading.local()

# How many actors may be handed a message at once, one inside the other, by `put()` (see there).
_HANDOVER_DEPTH = 2


class _LoopThread:
    """Per loop thread: the handlers' context, whether a reader runs in it now, and how deep."""

    __slots__ = ("context", "depth", "inside", "woken")

    def __init__(self) -> None:
        self.context = contextvars.Context()
        self.inside = False  # a reader's _drain is on this thread's stack (in `context`)
        self.depth = 0  # readers run by put() inside a sender's _drain, on the stack now
        # Inside `deliver_burst`: the readers its calls woke, run once they all returned.
        self.woken: list[tuple[AsyncioInbox, Callable[[], None]]] | None = None


def _loop_thread() -> _LoopThread:
    try:
        state: _LoopThread = _local.state
    except AttributeError:
        state = _local.state = _LoopThread()
    return state


def deliver_burst(call: Callable[[T], object], args: Iterable[T]) -> None:
    """`call(arg)` for each of `args` (a loop callback's work: outcomes from a transport), then the
    actors those calls woke, at once rather than a loop turn later.

    Each actor gets everything the calls sent it as one burst, as it would on the next turn: the
    turn is what is saved (for a chain of quick tasks, one of the two a transition took). Inside
    an actor's handler, the calls' messages are handed over as any other (`run_reader`).
    """
    thread = _loop_thread()
    if thread.inside or thread.woken is not None:
        for arg in args:
            call(arg)
        return
    woken: list[tuple[AsyncioInbox, Callable[[], None]]] = []
    thread.woken = woken
    try:
        for arg in args:
            call(arg)
    except BaseException:
        _later(woken, thread)  # a reader not run stays parked forever: never drop one
        raise
    finally:
        thread.woken = None
    enter = thread.context.run
    for at, (inbox, reader) in enumerate(woken):
        try:
            enter(inbox._enter, reader)
        except BaseException:
            _later(woken[at + 1 :], thread)
            raise


def _later(woken: list[tuple[AsyncioInbox, Callable[[], None]]], thread: _LoopThread) -> None:
    for inbox, reader in woken:
        inbox._loop.call_soon(inbox._enter, reader, context=thread.context)


def opened(item: Any) -> tuple[Any, Any]:
    """(message, reply future or None) of a queued item: an `Envelope`, or a told message as is."""
    if type(item) is Envelope:
        return item.message, item.reply_to
    return item, None


def reject(item: Any, owner: object) -> None:
    """Answer a queued item the actor will never handle: a stop request gets `None` (it is
    stopped), any other ask `ActorDeadError`; a tell is dropped."""
    message, reply_to = opened(item)
    if reply_to is None:
        logger.debug("Dropped message to stopped %s: %r", owner, message)
    elif isinstance(message, _ActorStop):
        reply_to.set(None)
    else:
        error = ActorDeadError(f"{owner} stopped before handling the message")
        reply_to.set_exception((ActorDeadError, error, None))


class Reader(Protocol):
    """What an inbox wakes: `_drain()` runs on the loop thread when envelopes wait."""

    def _drain(self) -> None: ...


class AsyncioInbox:
    """An asyncio queue of messages for one actor (implements pykka's `ActorInbox` protocol): asks
    in pykka envelopes, tells as they are (`opened()` tells them apart).

    Unbounded; `put()` never blocks. The reader (the actor) takes all queued items at once
    with `take()` and, when there are none, `park()`s itself: the next `put()` runs its
    `_drain()` (once; the reader parks again when it has drained). After `close()`
    every new envelope is rejected at once: asks get `ActorDeadError`, tells from the loop thread
    raise it, tells that arrive from other threads are dropped.
    """

    __slots__ = ("_closed", "_items", "_loop", "_owner", "_reader", "_thread", "_thread_id")

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: object = "actor") -> None:
        self._loop = loop
        self._thread_id = _get_ident()  # created on the loop's thread (it runs the loop)
        self._thread = _loop_thread()
        self._items: list[Any] = []  # envelopes and told messages
        self._reader: Reader | None = None  # parked: wake it with the next envelope
        self._closed = False
        self._owner = owner  # names the actor in errors; the actor sets its URN (no extra string)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop that runs the reader."""
        return self._loop

    def put(self, envelope: Any, /) -> None:
        """Queue an envelope, or a told message as is (never an `Envelope` itself: a tell of one
        is put in an envelope of its own), from any thread; never blocks."""
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
        reader = self._reader
        if reader is not None:
            self._reader = None
            self.run_reader(reader._drain)

    def run_reader(self, callback: Callable[[], None]) -> None:
        """Run `callback`, the reader's code (its `_drain`, or how it begins).

        From inside another actor's handler it runs now: the reader is idle, so nothing of it is
        on the stack, and a message is handed over at once instead of a loop turn later (a turn
        costs more than most handlers); at most `_HANDOVER_DEPTH` readers deep. Otherwise, and
        from callbacks (transports, timers), it runs on the next loop turn, so that a burst of
        messages sent meanwhile reaches the reader as one burst.
        """
        thread = self._thread
        if thread.inside and thread.depth < _HANDOVER_DEPTH:
            thread.depth += 1
            try:
                callback()
            finally:
                thread.depth -= 1
        elif thread.woken is not None and not thread.inside:  # in deliver_burst: after its calls
            thread.woken.append((self, callback))
        else:
            self._loop.call_soon(self._enter, callback, context=thread.context)

    def _enter(self, callback: Callable[[], None]) -> None:
        """A loop callback running the reader's code, in the thread's handler context."""
        thread = self._thread
        inside, thread.inside = thread.inside, True
        try:
            callback()
        finally:
            thread.inside = inside

    def _deliver(self, envelope: Any) -> None:
        """`put()` for envelopes from other threads, run on the loop thread."""
        if self._closed:
            reject(envelope, self._owner)
            return
        self._items.append(envelope)
        reader = self._reader
        if reader is not None:
            self._reader = None
            self._thread.context.run(self._enter, reader._drain)  # already a callback on the loop

    def _refuse(self, envelope: Any) -> None:
        if opened(envelope)[1] is None:
            msg = f"{self._owner} not found"
            raise ActorDeadError(msg)
        reject(envelope, self._owner)

    def get(self) -> Envelope[Any]:
        """Remove and return the oldest envelope (pykka protocol; never blocks; `IndexError` if empty)."""
        message, reply_to = opened(self._items.pop(0))
        return Envelope(message, reply_to)

    def empty(self) -> bool:
        """Whether no envelope is queued."""
        return not self._items

    def __len__(self) -> int:
        return len(self._items)

    # -- reader side (the actor, on the loop thread) ---------------------------------------------

    def take(self) -> list[Any]:
        """Remove and return every queued item (see `opened()`), oldest first."""
        items = self._items
        if items:
            self._items = []
        return items

    def unshift(self, envelopes: list[Any]) -> None:
        """Put items taken but not handled back in front of the queue."""
        if envelopes:
            self._items[:0] = envelopes

    def park(self, reader: Reader) -> None:
        """Have the next `put()` schedule `reader._drain()`; the reader calls it when `take()`
        found nothing, and handles nothing until then."""
        self._reader = reader

    def close(self) -> list[Any]:
        """Refuse every later item and return the ones still queued."""
        self._closed = True
        self._reader = None
        items, self._items = self._items, []
        return items
