"""AsyncioFuture: the reply to one `ask`, awaitable on an event loop and waitable from a thread.

An actor sets it (on its loop thread, or from any thread); the asker either `await`s it on an event
loop, which parks only the awaiting task, or calls `get()` from a thread that runs no event loop,
which blocks that thread. Nothing here ever blocks an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pykka import Future, Timeout

if TYPE_CHECKING:
    from pykka._future import GetHookFunc
    from pykka._types import OptExcInfo

__all__ = ["AsyncioFuture"]

logger = logging.getLogger("attune_actors.actors")

T = TypeVar("T")
J = TypeVar("J")
M = TypeVar("M")
R = TypeVar("R")

_get_running_loop = asyncio._get_running_loop  # C-accelerated; None when this thread runs no loop

# Guards only the slow paths (a thread blocking in get(), done callbacks); set() takes it only when a
# callback is registered. A lock per future would cost more than it saves.
_slow_lock = threading.Lock()


def _wake_waiter(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _ThreadsafeWake:
    """Done callback that wakes a waiter of another loop than the setter's."""

    __slots__ = ("waiter",)

    def __init__(self, waiter: asyncio.Future[None]) -> None:
        self.waiter = waiter

    def __call__(self, _future: object) -> None:
        with contextlib.suppress(RuntimeError):  # RuntimeError: that loop is closed
            self.waiter.get_loop().call_soon_threadsafe(_wake_waiter, self.waiter)


class AsyncioFuture(Future[T]):
    """A pykka `Future` for `AsyncioActor`: `await` it on a loop, or `get()` it from another thread.

    - `await future` parks only the awaiting task (never the loop) and returns the value or raises
      the exception the actor set. It may be awaited from any loop, any number of times.
    - `get(timeout=...)` blocks the calling thread until the value is set; called on a thread that
      is running an event loop while the value is not there yet, it raises `RuntimeError` instead of
      blocking the loop (the reply would usually have to come from that very loop).
    - `set()` / `set_exception()` may be called from any thread, once.
    - `map()`, `filter()`, `join()` and `reduce()` return futures that are resolved as soon as their
      sources are (the function runs in the thread that resolves the last source), so they can be
      awaited too. A get hook set with `set_get_hook()` is run by `get()`; `await` runs it on the
      loop's default executor, since a hook may block.
    """

    # Class-level defaults: a fresh future costs one object and an empty `__dict__`; attributes are
    # only stored when they stop being the default.
    _get_hook: GetHookFunc[T] | None = None
    _done: bool = False
    _value: Any = None
    _exc_info: OptExcInfo | None = None
    _waiter: asyncio.Future[None] | None = None  # parks the awaiting task(s) of one loop
    _waiter_thread: int = 0  # the thread running that loop
    _event: threading.Event | None = None  # created only when a thread blocks in get()
    _callbacks: list[Callable[[AsyncioFuture[T]], None]] | None = None

    def __init__(self) -> None:
        # pykka's Future.__init__ only stores the get-hook state, which lives in class defaults here.
        pass

    def __repr__(self) -> str:
        state = "pending" if not self._done else "failed" if self._exc_info else "done"
        return f"<AsyncioFuture {state}>"

    def done(self) -> bool:
        """Whether a value or an exception has been set (never blocks)."""
        return self._done

    # -- setting ---------------------------------------------------------------------------------

    def set(self, value: T | None = None) -> None:
        """Set the value and wake every waiter; `queue.Full` if already set (as in pykka)."""
        if self._done or self._get_hook is not None:
            raise queue.Full
        self._value = value
        self._done = True
        # `_done` is written before the waiter slots are read; a waiter registering concurrently in
        # another thread writes its slot before re-reading `_done`: one side always sees the other.
        if self._waiter is not None or self._event is not None or self._callbacks is not None:
            self._wake()

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        """Set an exception (`sys.exc_info()` by default) that `get()` and `await` will raise."""
        if exc_info is None:
            exc_info = sys.exc_info()
        if self._done or self._get_hook is not None:
            raise queue.Full
        self._exc_info = exc_info
        self._done = True
        if self._waiter is not None or self._event is not None or self._callbacks is not None:
            self._wake()

    def set_get_hook(self, func: GetHookFunc[T]) -> None:
        """Make `get()` return `func(timeout)` (computed once); `queue.Full` if already set."""
        if self._done:
            raise queue.Full
        self._get_hook = func

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if threading.get_ident() == self._waiter_thread:
                _wake_waiter(waiter)
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody to wake
                    waiter.get_loop().call_soon_threadsafe(_wake_waiter, waiter)
        event = self._event
        if event is not None:
            event.set()
        if self._callbacks is not None:
            with _slow_lock:
                callbacks, self._callbacks = self._callbacks, None
            for callback in callbacks or ():
                self._run_callback(callback)

    def _run_callback(self, callback: Callable[[AsyncioFuture[T]], None]) -> None:
        try:
            callback(self)
        except Exception:
            logger.exception("Exception in a done callback of %r", self)

    def add_done_callback(self, callback: Callable[[AsyncioFuture[T]], None]) -> None:
        """Call `callback(self)` once the future is done: right away if it is, else in the thread
        that sets it. Keep callbacks short; their exceptions are logged, not raised."""
        with _slow_lock:
            registered = not self._done
            if registered:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
        if not registered:
            self._run_callback(callback)
        elif self._done and self._callbacks is not None:
            # A set() racing with the registration may have read `_callbacks` before it was stored.
            # Whoever pops the list under the lock runs it, so every callback runs exactly once.
            with _slow_lock:
                callbacks, self._callbacks = self._callbacks, None
            for pending in callbacks or ():
                self._run_callback(pending)

    # -- getting ---------------------------------------------------------------------------------

    def _outcome(self) -> T:
        exc_info = self._exc_info
        if exc_info is None:
            return cast("T", self._value)
        exc_type, exc_value, exc_traceback = exc_info
        assert exc_type is not None
        if exc_value is None:
            exc_value = exc_type()
        if exc_value.__traceback__ is not exc_traceback:
            raise exc_value.with_traceback(exc_traceback)
        raise exc_value

    def get(self, *, timeout: float | None = None) -> T:
        """Return the value (or raise the exception), blocking this thread until it is set.

        Raises `pykka.Timeout` after `timeout` seconds, and `RuntimeError` if the value is not set
        yet and this thread is running an event loop (use `await future` there).
        """
        if not self._done:
            if self._get_hook is not None:
                return self._run_get_hook(timeout)
            if _get_running_loop() is not None:
                msg = (
                    "AsyncioFuture.get() would block the event loop of this thread; "
                    "use `await future` instead"
                )
                raise RuntimeError(msg)
            with _slow_lock:
                event = self._event
                if event is None:
                    event = self._event = threading.Event()
            if not self._done and not event.wait(timeout):
                msg = f"{timeout} seconds"
                raise Timeout(msg)
        return self._outcome()

    def _run_get_hook(self, timeout: float | None) -> T:
        hook = self._get_hook
        assert hook is not None
        try:
            value = hook(timeout)
        except Timeout:
            raise
        except Exception:
            exc_info = sys.exc_info()
            self._get_hook = None
            if not self._done:
                self.set_exception(exc_info)
            return self._outcome()
        self._get_hook = None
        if not self._done:
            self.set(value)
        return self._outcome()

    def __await__(self) -> Generator[Any, None, T]:
        if not self._done:
            loop = asyncio.get_running_loop()
            if self._get_hook is not None:
                return (yield from loop.run_in_executor(None, self._await_get_hook).__await__())
            waiter = self._waiter
            if waiter is None or waiter.done():
                self._waiter_thread = threading.get_ident()
                waiter = self._waiter = loop.create_future()
            elif waiter.get_loop() is not loop:  # another loop is already waiting for this future
                waiter = loop.create_future()
                self.add_done_callback(_ThreadsafeWake(waiter))
            if not self._done:  # re-check after publishing the waiter (see set())
                yield from waiter
        return self._outcome()

    __iter__ = __await__

    def _await_get_hook(self) -> T:
        return self.get()

    # -- combinators: eager, so the derived futures can be awaited ---------------------------------

    def _derive(self, sources: list[AsyncioFuture[Any]], combine: Callable[[], Any]) -> Any:
        derived: AsyncioFuture[Any] = self.__class__()
        remaining = [len(sources)]

        def on_done(source: AsyncioFuture[Any]) -> None:
            if derived._done:
                return
            if source._exc_info is not None:
                derived.set_exception(source._exc_info)
                return
            remaining[0] -= 1
            if remaining[0] == 0:
                try:
                    value = combine()
                except Exception:
                    derived.set_exception()
                else:
                    derived.set(value)

        for source in sources:
            source.add_done_callback(on_done)
        return derived

    def map(self, func: Callable[[T], M]) -> Future[M]:
        """A future for `func(value)`; `func` runs in the thread that sets this future."""
        return cast("Future[M]", self._derive([self], lambda: func(self._outcome())))

    def filter(self: AsyncioFuture[Iterable[J]], func: Callable[[J], bool]) -> Future[Iterable[J]]:
        """A future for the list of items of this future's value for which `func` is true."""
        return cast("Future[Iterable[J]]", self._derive([self], lambda: list(filter(func, self._outcome()))))

    def join(self, *futures: Future[Any]) -> Future[Iterable[Any]]:
        """A future for the list of this and the other futures' values (the first error wins)."""
        sources = [self, *futures]
        for future in sources:
            if not isinstance(future, AsyncioFuture):
                msg = "AsyncioFuture.join() only joins AsyncioFutures"
                raise TypeError(msg)
        joined = cast("list[AsyncioFuture[Any]]", sources)
        return cast(
            "Future[Iterable[Any]]",
            self._derive(joined, lambda: [f._outcome() for f in joined]),
        )

    def reduce(self: AsyncioFuture[Iterable[J]], func: Callable[[R, J], R], *args: R) -> Future[R]:
        """A future for `functools.reduce(func, value, *args)`."""
        import functools

        return cast(
            "Future[R]",
            self._derive([self], lambda: functools.reduce(func, self._outcome(), *args)),
        )
