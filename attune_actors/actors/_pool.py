"""BlockingPool: a bounded set of threads for blocking Python code, awaited from the event loop.

The loop hands a call to one of at most `max_workers` threads and parks only the awaiting task until
the call returns; calls beyond `max_workers` wait in a FIFO queue. Nothing here runs on the loop
thread except the hand-over.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ParamSpec, Self, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["BlockingPool"]

P = ParamSpec("P")
T = TypeVar("T")


class BlockingPool:
    """Run blocking functions on at most `max_workers` threads: `await pool.run(fn, *args, **kw)`.

    - Threads are created on demand, up to `max_workers` (default: `min(32, cpus + 4)`), named
      `<thread_name_prefix>_N`, and reused.
    - Each call runs in a copy of the caller's `contextvars` context, like `asyncio.to_thread()`.
    - Cancelling the awaiting task withdraws a call that has not started; a call already running
      cannot be interrupted and finishes in its thread (its result is discarded).
    - `shutdown()` / `aclose()` refuse new calls (`RuntimeError`) and wait for running ones.
    """

    def __init__(
        self, max_workers: int | None = None, *, thread_name_prefix: str = "attune-blocking"
    ) -> None:
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if max_workers < 1:
            msg = f"max_workers must be at least 1, not {max_workers}"
            raise ValueError(msg)
        self.max_workers = max_workers
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix=thread_name_prefix)

    def __repr__(self) -> str:
        return f"<BlockingPool max_workers={self.max_workers}>"

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call `fn(*args, **kwargs)` on a pool thread; return its result or raise its error."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None:
        """Refuse new calls; with `wait`, block this thread until running calls end (from the loop, use
        `await aclose()`); with `cancel_pending`, drop queued calls (their awaiters are cancelled).
        """
        self._executor.shutdown(wait=wait, cancel_futures=cancel_pending)

    async def aclose(self, *, cancel_pending: bool = False) -> None:
        """`shutdown(wait=True)` without blocking the loop: a helper thread does the waiting."""
        self._executor.shutdown(wait=False, cancel_futures=cancel_pending)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
