"""BlockingPool: blocking calls on bounded threads, awaited without blocking the loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest

from attune_actors.actors import AsyncioActor, BlockingPool

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def test_run_returns_the_result_from_another_thread() -> None:
    async with BlockingPool(2) as pool:
        thread = await pool.run(threading.get_ident)
        assert thread != threading.get_ident()
        assert await pool.run(divmod, 7, 2) == (3, 1)
        assert await pool.run(int, "ff", base=16) == 255


async def test_errors_are_raised_to_the_awaiter() -> None:
    async with BlockingPool(1) as pool:
        with pytest.raises(ZeroDivisionError):
            await pool.run(divmod, 1, 0)


async def test_a_blocked_call_does_not_block_the_loop() -> None:
    release = threading.Event()
    async with BlockingPool(1) as pool:
        blocked = asyncio.ensure_future(pool.run(release.wait, 5))
        ticks = 0
        for _ in range(10):  # the loop keeps running while the call blocks its thread
            await asyncio.sleep(0)  # deliberate: one loop turn
            ticks += 1
        assert ticks == 10
        assert not blocked.done()
        release.set()
        assert await blocked is True


async def test_at_most_max_workers_calls_run_at_once() -> None:
    running = peak = 0
    lock = threading.Lock()
    gate = threading.Event()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(timeout=5)
        with lock:
            running -= 1

    async with BlockingPool(2) as pool:
        calls = asyncio.gather(*(pool.run(work) for _ in range(6)))
        deadline = asyncio.get_running_loop().time() + 5
        while running < 2:  # two calls start; the other four wait for a thread
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)  # deliberate: polling with a deadline
        gate.set()
        await calls
    assert peak == 2


async def test_context_variables_reach_the_call() -> None:
    request_id.set("req-42")
    async with BlockingPool(1) as pool:
        assert await pool.run(request_id.get) == "req-42"


async def test_a_cancelled_queued_call_never_runs() -> None:
    release = threading.Event()
    ran: list[str] = []
    async with BlockingPool(1) as pool:
        busy = asyncio.ensure_future(pool.run(release.wait, 5))
        queued = asyncio.ensure_future(pool.run(ran.append, "queued"))
        await asyncio.sleep(0)  # deliberate: both calls reach the pool; one runs, one waits
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued  # by now the pool has withdrawn the waiting call
        release.set()
        await busy
    assert ran == []


async def test_shutdown_refuses_new_calls() -> None:
    pool = BlockingPool(1)
    await pool.aclose()
    with pytest.raises(RuntimeError):
        await pool.run(int)
    pool.shutdown()  # idempotent


async def test_actors_await_the_pool_and_keep_handling_in_order() -> None:
    release = threading.Event()

    class Runner(AsyncioActor):
        def __init__(self, pool: BlockingPool) -> None:
            super().__init__()
            self.pool = pool
            self.log: list[str] = []

        async def on_receive(self, message: Any) -> Any:
            result = await self.pool.run(release.wait, 5) if message == "block" else message
            self.log.append(message)
            return result

    async with BlockingPool(1) as pool:
        ref = Runner.start(pool)
        blocked = ref.ask("block", block=False)
        after = ref.ask("after", block=False)
        other = Runner.start(pool)
        # another actor on the same loop is not held up by the blocked call
        assert await other.ask("free", block=False) == "free"
        release.set()
        assert await blocked is True
        assert await after == "after"
        assert await ref.proxy().log == ["block", "after"]


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BlockingPool(0)
