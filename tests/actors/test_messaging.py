"""tell, ask, proxies and futures of AsyncioActors, on the actor's own loop."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pykka
import pytest
from helpers import eventually

from attune_actors.actors import AsyncioActor, AsyncioFuture, deliver_burst


class Counter(AsyncioActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        self.seen.append(message)
        if message == "fail":
            raise ValueError("bad message")
        return message

    def add(self, n: int = 1) -> int:
        self.count += n
        return self.count

    async def add_later(self, n: int) -> int:
        await asyncio.sleep(0)  # deliberate: one loop turn
        self.count += n
        return self.count

    async def explode(self) -> None:
        await asyncio.sleep(0)  # deliberate: one loop turn
        raise KeyError("inside")


async def test_ask_returns_the_handler_result() -> None:
    ref = Counter.start()
    future = ref.ask("hello", block=False)
    assert isinstance(future, AsyncioFuture)
    assert await future == "hello"


async def test_tells_are_handled_in_order() -> None:
    ref = Counter.start()
    for i in range(100):
        ref.tell(i)
    assert await ref.proxy().seen == list(range(100))


async def test_any_message_is_told_as_sent_even_a_pykka_envelope() -> None:
    """Tells are queued without an envelope; one that *is* an envelope still arrives as sent."""
    from pykka._envelope import Envelope

    ref = Counter.start()
    odd = Envelope("inner")
    for message in (None, ("a", 1), odd, "last"):
        ref.tell(message)
    seen = await ref.proxy().seen
    assert seen == [None, ("a", 1), odd, "last"]
    assert seen[2] is odd


async def test_proxy_method_calls_are_awaitable() -> None:
    proxy = Counter.start().proxy()
    assert await proxy.add() == 1
    assert await proxy.add(n=5) == 6
    assert await proxy.count == 6


async def test_async_proxy_methods_run_to_completion_one_at_a_time() -> None:
    proxy = Counter.start().proxy()
    results = await asyncio.gather(*(proxy.add_later(1) for _ in range(50)))
    assert results == list(range(1, 51))  # no interleaving: each call saw the previous one's state


async def test_proxy_defer_is_a_tell() -> None:
    proxy = Counter.start().proxy()
    proxy.add.defer(3)
    assert await proxy.count == 3


async def test_exceptions_reach_the_asker_with_their_type() -> None:
    ref = Counter.start()
    with pytest.raises(ValueError, match="bad message"):
        await ref.ask("fail", block=False)
    with pytest.raises(KeyError, match="inside"):
        await ref.proxy().explode()
    assert await ref.ask("alive", block=False) == "alive"


async def test_a_future_can_be_awaited_many_times_and_by_many_tasks() -> None:
    ref = Counter.start()
    future = ref.ask("x", block=False)
    assert list(await asyncio.gather(future, future, future)) == ["x", "x", "x"]
    assert await future == "x"
    failing = ref.ask("fail", block=False)
    for _ in range(2):
        with pytest.raises(ValueError, match="bad message"):
            await failing


async def test_get_on_the_loop_thread_refuses_to_block() -> None:
    ref = Counter.start()
    future = ref.ask("x", block=False)
    with pytest.raises(RuntimeError, match="await future"):
        future.get()
    assert await future == "x"
    assert future.get() == "x"  # once set, get() does not need to wait


async def test_futures_work_with_asyncio_wait_for_and_gather() -> None:
    ref = Counter.start()
    assert await asyncio.wait_for(ref.ask(1, block=False), timeout=5) == 1
    assert await asyncio.gather(*(ref.ask(i, block=False) for i in range(10))) == list(range(10))


async def test_waiting_for_a_future_can_be_cancelled() -> None:
    future: AsyncioFuture[int] = AsyncioFuture()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(future, timeout=0.01)
    future.set(3)  # the cancelled waiter is not woken twice
    assert await future == 3


async def test_combinators_are_awaitable() -> None:
    ref = Counter.start()
    doubled = ref.ask(21, block=False).map(lambda v: v * 2)
    assert await doubled == 42
    evens = ref.ask([1, 2, 3, 4], block=False).filter(lambda v: v % 2 == 0)
    assert list(await evens) == [2, 4]
    joined = ref.ask("a", block=False).join(ref.ask("b", block=False), ref.ask("c", block=False))
    assert list(await joined) == ["a", "b", "c"]
    total = ref.ask([1, 2, 3], block=False).reduce(lambda a, b: a + b, 10)
    assert await total == 16
    failed = ref.ask("ok", block=False).join(ref.ask("fail", block=False))
    with pytest.raises(ValueError, match="bad message"):
        await failed


async def test_get_hook_futures_are_awaited_without_blocking_the_loop() -> None:
    future: AsyncioFuture[int] = AsyncioFuture()
    future.set_get_hook(lambda timeout: 5)
    assert await future == 5
    assert future.get() == 5


async def test_future_set_twice_is_refused() -> None:
    import queue

    future: AsyncioFuture[int] = AsyncioFuture()
    future.set(1)
    with pytest.raises(queue.Full):
        future.set(2)
    with pytest.raises(queue.Full):
        future.set_exception((ValueError, ValueError(), None))


async def test_unknown_messages_reach_default_on_receive(caplog: pytest.LogCaptureFixture) -> None:
    class Silent(AsyncioActor):
        pass

    ref = Silent.start()
    with caplog.at_level("WARNING", logger="pykka"):
        assert await ref.ask("unexpected", block=False) is None
    assert "Unexpected message received" in caplog.text


async def test_proxy_to_a_stopped_actor_is_refused() -> None:
    ref = Counter.start()
    await ref.stop(block=False)
    with pytest.raises(pykka.ActorDeadError):
        ref.proxy()


class Batcher(AsyncioActor):
    """Records messages, and in `on_drained` closes the burst they arrived in."""

    def __init__(self, fail_when_drained: bool = False) -> None:
        super().__init__()
        self.log: list[Any] = []
        self.fail_when_drained = fail_when_drained
        self.echo = False

    def on_receive(self, message: Any) -> Any:
        self.log.append(message)
        self.echo = self.echo or message == "again"
        return len(self.log)

    def on_drained(self) -> None:
        self.log.append("|")
        if self.fail_when_drained:
            raise RuntimeError("cannot close the burst")
        if self.echo:  # a message sent from the hook is handled before the actor parks
            self.echo = False
            self.actor_ref.tell("echo")


async def test_on_drained_runs_once_after_each_burst_of_messages() -> None:
    ref = Batcher.start()
    for i in range(3):
        ref.tell(i)
    assert await ref.ask("last", block=False) == 4  # the hook ran in that turn, before parking
    ref.tell("again")
    assert await ref.ask("later", block=False) == 7  # "|", "again", "later"
    log = await ref.proxy().log  # a message too: the burst it ends adds the last "|"
    # Each burst ends once; the second one's hook tells "echo", handled before the actor parks.
    assert log == [0, 1, 2, "last", "|", "again", "later", "|", "echo", "|", "|"]


async def test_a_failing_on_drained_fails_the_actor() -> None:
    ref = Batcher.start(fail_when_drained=True)
    ref.tell("x")
    await eventually(lambda: not ref.is_alive(), "the actor to fail")
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("y")


_who = contextvars.ContextVar("who", default="nobody")


class ContextReader(AsyncioActor):
    def on_receive(self, message: Any) -> Any:
        seen = _who.get()
        if message == "set":
            self.token = _who.set("the actor")  # left set: the next message shows where it ran
        elif message == "reset":
            _who.reset(self.token)
        return seen


async def test_handlers_run_in_the_loop_context_not_the_senders() -> None:
    ref = ContextReader.start()
    token = _who.set("the sender")
    try:
        assert await ref.ask("read", block=False) == "nobody"
        assert await ref.ask("set", block=False) == "nobody"
        assert await ref.ask("read", block=False) == "the actor"  # hence: handlers reset what they set
        assert _who.get() == "the sender"
        assert await ref.ask("reset", block=False) == "the actor"
        assert await ref.ask("read", block=False) == "nobody"
    finally:
        _who.reset(token)
    await ref.stop(block=False)


class Relay(AsyncioActor):
    """Forwards every message to `next` (if any), noting what it handled and what was handled
    downstream before its own handler went on."""

    def __init__(self, log: list[str], name: str, next_ref: pykka.ActorRef[Any] | None = None) -> None:
        super().__init__()
        self.log, self.name, self.next = log, name, next_ref

    def on_receive(self, message: Any) -> Any:
        self.log.append(f"{self.name} got {message}")
        if self.next is not None:
            self.next.tell(message)
        self.log.append(f"{self.name} done {message}")


async def test_an_idle_actor_told_from_a_handler_handles_it_before_the_handler_goes_on() -> None:
    log: list[str] = []
    c = Relay.start(log, "c")
    b = Relay.start(log, "b", c)
    a = Relay.start(log, "a", b)
    await asyncio.gather(*(ref.ask("ready", block=False) for ref in (a, b, c)))  # all idle now
    log.clear()
    a.tell(1)  # from plain code: a runs on the next loop turn
    await eventually(lambda: len(log) == 6, "the message to reach c")
    # a's tell hands the message to idle b at once, b's to idle c: no loop turn in between.
    assert log == ["a got 1", "b got 1", "c got 1", "c done 1", "b done 1", "a done 1"]


async def test_a_long_chain_of_forwarding_actors_does_not_nest_handlers_without_bound() -> None:
    # Handing messages over inside the sender's handler stops after a few levels: 600 actors
    # deep would otherwise be far past the interpreter's recursion limit.
    log: list[str] = []
    last = Relay.start(log, "last")
    ref = last
    for i in range(600):
        ref = Relay.start(log, str(i), ref)
    await ref.ask("ready", block=False)
    await eventually(lambda: "last got ready" in log, "the chain to start")
    log.clear()
    ref.tell("go")
    await eventually(lambda: "last done go" in log, "the message to reach the end")
    assert log.count("last got go") == 1


async def test_messages_told_from_callbacks_reach_an_idle_actor_as_one_burst() -> None:
    ref = Batcher.start()
    assert await ref.ask("ready", block=False) == 1
    loop = asyncio.get_running_loop()
    for i in range(3):  # e.g. a transport's outcomes, each its own loop callback
        loop.call_soon(ref.tell, i)
    asked: asyncio.Future[Any] = loop.create_future()
    loop.call_soon(lambda: asked.set_result(ref.ask("last", block=False)))
    assert await (await asked) == 6
    assert await ref.proxy().log == ["ready", "|", 0, 1, 2, "last", "|", "|"]


async def _parked_batcher() -> tuple[Any, list[Any]]:
    """A Batcher that has handled a first message and waits for the next; its log, live."""
    ref = Batcher.start()
    await ref.ask("ready", block=False)
    log: list[Any] = await ref.proxy().log  # the actor's own list: it grows as it handles
    log.clear()
    return ref, log


async def test_a_delivered_burst_is_handled_as_one_before_the_callback_returns() -> None:
    (odd, odd_log), (even, even_log) = await _parked_batcher(), await _parked_batcher()
    seen: list[tuple[list[Any], list[Any]]] = []

    def delivered() -> None:  # a loop callback, e.g. a transport's outcomes of one turn
        deliver_burst(lambda m: (odd if m % 2 else even).tell(m), [1, 2, 3, 4, 5])
        # Each actor handled its messages before deliver_burst returned, as one burst.
        seen.append((list(odd_log), list(even_log)))

    asyncio.get_running_loop().call_soon(delivered)
    await eventually(lambda: bool(seen), "the callback to run")
    assert seen == [([1, 3, 5, "|"], [2, 4, "|"])]


async def test_a_failing_call_in_a_burst_still_wakes_the_actors_it_reached() -> None:
    ref, log = await _parked_batcher()
    failed: list[BaseException] = []

    def send(message: int) -> None:
        if message == 3:
            raise RuntimeError("this transport broke")
        ref.tell(message)

    def delivered() -> None:
        try:
            deliver_burst(send, [1, 2, 3, 4])
        except RuntimeError as exc:
            failed.append(exc)

    asyncio.get_running_loop().call_soon(delivered)
    await eventually(lambda: bool(failed), "the callback to run")
    await eventually(lambda: log == [1, 2, "|"], "the messages sent before the failure")  # not parked forever
    assert [str(e) for e in failed] == ["this transport broke"]
