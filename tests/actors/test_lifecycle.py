"""Starting and stopping AsyncioActors: hooks, order, refusals and what is left behind."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import pykka
import pytest
from pykka._envelope import Envelope

from attune_actors.actors import AsyncioActor, running_actors, wait_all_stopped


class Recorder(AsyncioActor):
    use_actor_registry = False

    def __init__(self, log: list[str], *, fail_on_start: bool = False) -> None:
        super().__init__()
        self.log = log
        self.fail_on_start = fail_on_start
        self.log.append("init")

    def on_start(self) -> None:
        self.log.append("start")
        if self.fail_on_start:
            raise ValueError("cannot start")

    def on_stop(self) -> None:
        self.log.append("stop")

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.log.append(f"failure:{exception_value!r}")

    def on_receive(self, message: Any) -> Any:
        self.log.append(f"msg:{message}")
        if message == "boom":
            raise RuntimeError("boom")
        if message == "stop-self":
            self.stop()
        return message


class AsyncHooks(AsyncioActor):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    # pykka declares these hooks `-> None`, so mypy wants the ignore on an `async def` override.
    async def on_start(self) -> None:  # type: ignore[override]
        await asyncio.sleep(0)  # deliberate: one loop turn
        self.log.append("start")

    async def on_stop(self) -> None:  # type: ignore[override]
        await asyncio.sleep(0)  # deliberate: one loop turn
        self.log.append("stop")

    async def on_receive(self, message: Any) -> Any:
        await asyncio.sleep(0)  # deliberate: one loop turn
        self.log.append(f"msg:{message}")
        return message


def actor_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


async def test_hooks_run_in_order_and_stop_answers_true() -> None:
    log: list[str] = []
    ref = Recorder.start(log)
    assert log == ["init"]  # __init__ runs in start(); on_start in the actor's task
    assert await ref.ask("a", block=False) == "a"
    assert await ref.stop(block=False) is True
    assert log == ["init", "start", "msg:a", "stop"]
    assert not ref.is_alive()


async def test_async_hooks_and_handlers_are_awaited() -> None:
    log: list[str] = []
    ref = AsyncHooks.start(log)
    assert await ref.ask("a", block=False) == "a"
    await ref.stop(block=False)
    assert log == ["start", "msg:a", "stop"]


async def test_idle_actors_have_no_task_and_stopped_ones_leave_none() -> None:
    before = actor_tasks()
    refs = [Recorder.start([]) for _ in range(20)]
    for ref in refs:
        assert await ref.ask("hello", block=False) == "hello"
    assert actor_tasks() == before  # an idle actor waits on its inbox without a task
    assert len(running_actors()) == 20
    for future in [ref.stop(block=False) for ref in refs]:
        assert await future is True
    assert actor_tasks() == before
    assert running_actors() == []


async def test_an_actor_awaiting_has_a_task_until_its_stop_answers() -> None:
    before = actor_tasks()
    refs = [AsyncHooks.start([]) for _ in range(20)]
    asked = [ref.ask("a", block=False) for ref in refs]
    await asyncio.sleep(0)  # deliberate: one loop turn, each actor is awaiting its on_start
    assert len(actor_tasks()) == len(before) + 20
    for future in asked:
        assert await future == "a"
    for future in [ref.stop(block=False) for ref in refs]:
        assert await future is True
    assert actor_tasks() == before  # the stop future resolves after the task has ended
    assert running_actors() == []


async def test_stopping_a_stopped_actor_answers_false() -> None:
    ref = Recorder.start([])
    assert await ref.stop(block=False) is True
    assert await ref.stop(block=False) is False


async def test_messages_queued_before_stop_are_handled_and_later_ones_refused() -> None:
    log: list[str] = []
    ref = Recorder.start(log)
    first = ref.ask(1, block=False)
    ref.tell(2)
    stopped = ref.stop(block=False)
    assert await first == 1
    assert await stopped is True
    assert log == ["init", "start", "msg:1", "msg:2", "stop"]
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(3)
    with pytest.raises(pykka.ActorDeadError):
        await ref.ask(4, block=False)


async def test_asks_queued_behind_a_stop_get_actor_dead_error() -> None:
    log: list[str] = []
    ref = Recorder.start(log)
    stopped = ref.stop(block=False)
    # Put straight into the inbox behind the stop, as a racing sender on another thread would.
    late: pykka.Future[Any] = ref.actor_class._create_future()
    ref.actor_inbox.put(Envelope("late", reply_to=late))
    assert await stopped is True
    with pytest.raises(pykka.ActorDeadError, match="stopped before handling the message"):
        await late
    assert "msg:late" not in log


async def test_actor_can_stop_itself() -> None:
    log: list[str] = []
    ref = Recorder.start(log)
    ref.tell("stop-self")
    ref.tell("after")  # queued before the stop the handler sends: still handled
    await wait_all_stopped(timeout=5.0)
    assert log == ["init", "start", "msg:stop-self", "msg:after", "stop"]


async def test_failure_in_on_start_runs_on_failure_and_stops() -> None:
    log: list[str] = []
    ref = Recorder.start(log, fail_on_start=True)
    await wait_all_stopped(timeout=5.0)
    assert log == ["init", "start", "failure:ValueError('cannot start')"]
    assert not ref.is_alive()


async def test_failure_in_a_told_handler_stops_the_actor_and_fails_queued_asks() -> None:
    log: list[str] = []
    ref = Recorder.start(log)
    ref.tell("boom")
    queued = ref.ask("never", block=False)
    with pytest.raises(pykka.ActorDeadError):
        await queued
    await wait_all_stopped(timeout=5.0)
    assert log == ["init", "start", "msg:boom", "failure:RuntimeError('boom')"]


async def test_exception_in_an_asked_handler_goes_to_the_asker_and_the_actor_goes_on() -> None:
    log: list[str] = []
    ref = Recorder.start(log)
    with pytest.raises(RuntimeError, match="boom"):
        await ref.ask("boom", block=False)
    assert await ref.ask("still here", block=False) == "still here"
    await ref.stop(block=False)


async def test_cancelling_the_task_stops_the_actor_abruptly() -> None:
    waiting = asyncio.Event()

    class Blocked(AsyncioActor):
        async def on_receive(self, message: Any) -> Any:
            waiting.set()
            await asyncio.Event().wait()

    ref = Blocked.start()
    pending = ref.ask("wait", block=False)
    queued = ref.ask("queued", block=False)
    await waiting.wait()
    task = ref._actor_weakref()._task  # type: ignore[union-attr]
    assert task is not None
    task.cancel()
    with pytest.raises(pykka.ActorDeadError):
        await pending
    with pytest.raises(pykka.ActorDeadError):
        await queued
    assert not ref.is_alive()
    await wait_all_stopped(timeout=5.0)
    assert task.cancelled()


async def test_start_outside_a_running_loop_is_refused() -> None:
    def start_in_thread() -> None:
        Recorder.start([])

    with pytest.raises(RuntimeError, match="running asyncio event loop"):
        await asyncio.to_thread(start_in_thread)


async def test_forgetting_super_init_is_reported() -> None:
    class Broken(AsyncioActor):
        def __init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="super"):
        Broken.start()


async def test_actor_stays_alive_without_any_reference() -> None:
    import gc

    done = asyncio.get_running_loop().create_future()

    class Lonely(AsyncioActor):
        use_actor_registry = False

        def on_receive(self, message: Any) -> None:
            done.set_result(message)

    Lonely.start().tell("hello")  # nobody keeps the ref
    gc.collect()
    assert await done == "hello"


async def test_a_parked_actor_keeps_nothing_of_its_last_message() -> None:
    import gc
    import weakref

    class Payload:
        pass

    class Sink(AsyncioActor):
        def on_receive(self, message: Any) -> Any:
            return Payload()

    ref = Sink.start()
    message = Payload()
    future = ref.ask(message, block=False)
    result = await future
    sent, replied, reply = weakref.ref(message), weakref.ref(result), weakref.ref(future)
    del message, result, future
    gc.collect()
    assert (sent(), replied(), reply()) == (None, None, None)
