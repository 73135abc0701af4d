"""Messages to AsyncioActors from other threads and other loops."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pykka
import pytest
from pykka import ActorRegistry

from attune_actors.actors import AsyncioActor, AsyncioFuture, wait_all_stopped


class Collector(AsyncioActor):
    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.received: list[tuple[int, int]] = []
        self.threads: set[int] = set()
        self.done = asyncio.get_running_loop().create_future()

    def on_receive(self, message: Any) -> Any:
        self.threads.add(threading.get_ident())
        if message == "ping":
            return "pong"
        if message == "fail":
            raise ValueError("from actor")
        self.received.append(message)
        if len(self.received) == self.expected:
            self.done.set_result(None)
        return None


async def test_tells_from_many_threads_all_arrive_in_per_sender_order() -> None:
    senders, per_sender = 4, 500
    ref = Collector.start(senders * per_sender)
    start = threading.Barrier(senders)

    def send(sender: int) -> None:
        start.wait()
        for i in range(per_sender):
            ref.tell((sender, i))

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for thread in threads:
        thread.start()
    done = await ref.proxy().done  # an asyncio future, set by the handler of the last message
    await done
    received = await ref.proxy().received
    for thread in threads:
        await asyncio.to_thread(thread.join)
    assert len(received) == senders * per_sender
    for sender in range(senders):
        assert [i for s, i in received if s == sender] == list(range(per_sender))
    # every handler ran on the loop thread, never on a sender's thread
    assert await ref.proxy().threads == {threading.get_ident()}


async def test_blocking_ask_from_a_thread() -> None:
    ref = Collector.start(0)

    def ask() -> Any:
        return ref.ask("ping", timeout=5)

    assert await asyncio.to_thread(ask) == "pong"


async def test_blocking_ask_from_a_thread_raises_the_actor_exception() -> None:
    ref = Collector.start(0)

    def ask() -> Any:
        return ref.ask("fail", timeout=5)

    with pytest.raises(ValueError, match="from actor"):
        await asyncio.to_thread(ask)


async def test_blocking_get_times_out() -> None:
    future: AsyncioFuture[int] = AsyncioFuture()
    with pytest.raises(pykka.Timeout):
        await asyncio.to_thread(future.get, timeout=0.01)


async def test_future_set_from_a_thread_wakes_the_awaiting_task() -> None:
    future: AsyncioFuture[str] = AsyncioFuture()
    waiter = asyncio.ensure_future(future)
    await asyncio.sleep(0)  # the task now waits  # deliberate: one loop turn
    await asyncio.to_thread(future.set, "from thread")
    assert await waiter == "from thread"


async def test_many_threads_block_on_the_same_future() -> None:
    future: AsyncioFuture[int] = AsyncioFuture()
    ready = threading.Barrier(5)

    def wait() -> int:
        ready.wait()
        return future.get(timeout=5)

    waiting = [asyncio.ensure_future(asyncio.to_thread(wait)) for _ in range(4)]
    await asyncio.to_thread(ready.wait)
    future.set(7)
    assert await asyncio.gather(*waiting) == [7, 7, 7, 7]


async def test_stop_from_a_thread_blocks_that_thread_until_stopped() -> None:
    ref = Collector.start(0)
    assert await asyncio.to_thread(ref.stop, timeout=5) is True
    assert not ref.is_alive()
    await wait_all_stopped(timeout=5.0)


async def test_registry_stop_all_from_a_thread() -> None:
    refs = [Collector.start(0) for _ in range(3)]
    results = await asyncio.to_thread(ActorRegistry.stop_all, timeout=5)
    assert results == [True, True, True]
    assert not any(ref.is_alive() for ref in refs)


async def test_a_future_can_be_awaited_from_another_loop() -> None:
    ref = Collector.start(0)
    future = ref.ask("ping", block=False)

    async def await_elsewhere() -> Any:
        return await future

    def other_loop() -> Any:
        return asyncio.run(await_elsewhere())

    assert await asyncio.to_thread(other_loop) == "pong"


async def test_tell_to_an_actor_whose_loop_is_closed_is_refused() -> None:
    refs: list[pykka.ActorRef[Any]] = []

    async def start_and_forget() -> None:
        refs.append(Collector.start(0))

    def other_loop() -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(start_and_forget())
        loop.close()  # the actor's task never finished; its loop is gone

    await asyncio.to_thread(other_loop)
    [ref] = refs
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("hello")
    with pytest.raises(pykka.ActorDeadError):
        await ref.ask("hello", block=False)
    ref.actor_stopped.set()  # clean up after the abandoned actor
    ActorRegistry.unregister(ref)
    from attune_actors.actors._actor import _live

    _live.discard(ref._actor_weakref())


async def test_a_thread_can_wait_for_the_stop_flag() -> None:
    ref = Collector.start(0)

    def wait_for_stop() -> bool:
        return ref.actor_stopped.wait(timeout=5)

    waiting = asyncio.ensure_future(asyncio.to_thread(wait_for_stop))
    await ref.stop(block=False)
    assert await waiting is True


async def test_blocking_calls_on_the_loop_thread_are_refused_before_sending() -> None:
    ref = Collector.start(0)
    with pytest.raises(RuntimeError, match=r"await ref\.stop"):
        ref.stop()
    assert ref.is_alive()
    with pytest.raises(RuntimeError, match="await future"):
        ref.ask("ping")  # pykka's blocking ask: the message is sent, the wait refused


SYSTEM_EXIT_SCRIPT = """
import asyncio, sys
from pykka import ActorRegistry
from attune_actors.actors import AsyncioActor

class Exiting(AsyncioActor):
    def on_receive(self, message):
        raise SystemExit(3)

refs = []

async def main():
    refs.append(Exiting.start())
    await refs[0].ask("exit", block=False)

try:
    asyncio.run(main())
except SystemExit as exc:
    [ref] = refs
    registered = ActorRegistry.get_by_urn(ref.actor_urn) is not None
    print("exit", exc.code, "alive", ref.is_alive(), "registered", registered)
"""


def test_system_exit_in_a_handler_stops_the_actor_and_ends_the_loop() -> None:
    # In a subprocess: what an interrupted loop leaves for the GC (finalizers of its futures) can
    # make CPython 3.11 raise a spurious SystemError in pytest's later ast.parse() calls.
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SYSTEM_EXIT_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "exit 3 alive False registered False", done.stderr
