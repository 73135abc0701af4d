"""What every group-committing store shares: numbered commits that `flush()` waits for, and retry backoff.

A store buffers writes in an open batch; each commit takes the whole batch, numbered in commit
order (its generation). `flush()` waits for the generation it saw (`CommitWaiters`); a failed commit
keeps its records and is retried after a delay that doubles up to a maximum (`Backoff`), or at once
on `flush()`. Used by `SQLiteStore` (its writer thread) and the JetStream store (its writer task).
"""

from __future__ import annotations

import asyncio
import time

from attune_actors.errors import StoreError


class Backoff:
    """When to retry a failing commit: `first` seconds after the first failure, doubled up to `maximum`."""

    __slots__ = ("_delay", "_first", "_maximum", "retry_at")

    def __init__(self, first: float, maximum: float) -> None:
        self._first = first
        self._maximum = maximum
        self._delay = first
        self.retry_at = 0.0  # time.monotonic() of the next attempt after a failure

    def failed(self) -> None:
        self.retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self._maximum)

    def succeeded(self) -> None:
        self._delay = self._first

    def remaining(self) -> float:
        """Seconds until the next attempt is due (<= 0: now)."""
        return self.retry_at - time.monotonic()


class CommitWaiters:
    """`flush()` calls waiting for a generation of commit, from any thread and any event loop."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def add(self, gen: int) -> asyncio.Future[None]:
        """A future resolved once commit `gen` is done (or failed with the commit's error)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append((gen, loop, fut))
        return fut

    def resolve(self, gen: int | None, error: StoreError | None = None) -> None:
        """Wake the waiters of commit `gen` or older (all when `gen` is None), with `error` if given."""
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        keep = []
        # One wake-up per other loop, not per waiter: a burst of 1,000 execute() is one commit,
        # and a call_soon_threadsafe each was a write to the loop's wake-up socket each.
        elsewhere: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for waiter in self._waiters:
            target, loop, fut = waiter
            if gen is not None and target > gen:
                keep.append(waiter)
            elif loop is here:
                _settle(fut, error)
            else:
                elsewhere.setdefault(loop, []).append(fut)
        self._waiters = keep
        for loop, futs in elsewhere.items():
            try:
                loop.call_soon_threadsafe(_settle_all, futs, error)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass


def _settle(fut: asyncio.Future[None], error: StoreError | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(StoreError(error.message))


def _settle_all(futs: list[asyncio.Future[None]], error: StoreError | None) -> None:
    for fut in futs:
        _settle(fut, error)


__all__ = ["Backoff", "CommitWaiters"]
