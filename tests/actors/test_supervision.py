"""Parents, children and what a parent's strategy does with a failed child."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, ClassVar

import pykka
import pytest
from helpers import eventually
from pykka import ActorRef

from attune_actors.actors import AsyncioActor, Directive, wait_all_stopped


class Worker(AsyncioActor):
    """A child that fails on request and records its life in a shared log."""

    use_actor_registry = False

    def __init__(self, name: str, log: list[str], *, fail_on_start: bool = False) -> None:
        super().__init__()
        self.name = name
        self.log = log
        self.fail_on_start = fail_on_start

    def on_start(self) -> None:
        self.log.append(f"{self.name}:start")
        if self.fail_on_start:
            raise RuntimeError(f"{self.name} cannot start")

    def on_stop(self) -> None:
        self.log.append(f"{self.name}:stop")

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.log.append(f"{self.name}:failure")

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if message == "done":
            self.stop()
        return f"{self.name}:{message}"

    def spawn_worker(self, name: str) -> ActorRef[Worker]:
        return self.spawn(Worker, name, self.log)


class Supervisor(AsyncioActor):
    """Spawns workers; reports every supervision event to an asyncio queue the test reads."""

    supervisor_strategy: ClassVar[Directive] = Directive.STOP

    def __init__(self, log: list[str], events: asyncio.Queue[tuple[Any, ...]]) -> None:
        super().__init__()
        self.log = log
        self.events = events

    def on_stop(self) -> None:
        self.log.append("supervisor:stop")

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.log.append("supervisor:failure")
        self.events.put_nowait(("supervisor-failed", exception_value))

    def spawn_worker(self, name: str, **kwargs: Any) -> ActorRef[Worker]:
        return self.spawn(Worker, name, self.log, **kwargs)

    def spawn_supervisor(self) -> ActorRef[Supervisor]:
        return self.spawn(type(self), self.log, self.events)

    def on_child_failure(self, child: ActorRef[Any], error: BaseException) -> Directive:
        directive = super().on_child_failure(child, error)
        self.events.put_nowait(("failed", child, error, directive))
        return directive  # type: ignore[return-value]

    def on_child_restarted(self, old: ActorRef[Any], new: ActorRef[Any]) -> None:
        self.events.put_nowait(("restarted", old, new))

    def on_child_stopped(self, child: ActorRef[Any]) -> None:
        self.events.put_nowait(("stopped", child))


class Restarting(Supervisor):
    supervisor_strategy = Directive.RESTART
    max_restarts = 2
    restart_window = 60.0


class Escalating(Supervisor):
    supervisor_strategy = Directive.ESCALATE


async def next_event(events: asyncio.Queue[tuple[Any, ...]]) -> tuple[Any, ...]:
    return await asyncio.wait_for(events.get(), timeout=5)


@pytest.fixture
def events() -> asyncio.Queue[tuple[Any, ...]]:
    return asyncio.Queue()


async def test_spawned_children_know_their_parent(events: asyncio.Queue[tuple[Any, ...]]) -> None:
    parent = Supervisor.start([], events)
    child = await parent.proxy().spawn_worker("w1")
    assert await child.ask("hi", block=False) == "w1:hi"
    assert await parent.proxy().children == [child]
    assert await child.proxy().parent is parent
    assert await parent.proxy().parent is None


async def test_a_child_that_stops_is_reported_and_forgotten(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    parent = Supervisor.start([], events)
    child = await parent.proxy().spawn_worker("w1")
    child.tell("done")
    assert await next_event(events) == ("stopped", child)
    assert await parent.proxy().children == []


async def test_stop_directive_leaves_the_child_stopped(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    log: list[str] = []
    parent = Supervisor.start(log, events)
    child = await parent.proxy().spawn_worker("w1")
    child.tell("crash")
    kind, failed, error, directive = await next_event(events)
    assert (kind, failed, directive) == ("failed", child, Directive.STOP)
    assert isinstance(error, RuntimeError)
    assert str(error) == "w1 crashed"
    assert not child.is_alive()
    assert log == ["w1:start", "w1:failure"]  # the child failed; on_stop is not run
    assert await parent.proxy().children == []
    assert parent.is_alive()


async def test_restart_directive_starts_a_new_child_with_the_same_arguments(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    log: list[str] = []
    parent = Restarting.start(log, events)
    child = await parent.proxy().spawn_worker("w1")
    child.tell("crash")
    assert (await next_event(events))[3] is Directive.RESTART
    kind, old, new = await next_event(events)
    assert (kind, old) == ("restarted", child)
    assert new is not child
    assert await new.ask("again", block=False) == "w1:again"
    assert await parent.proxy().children == [new]
    assert log == ["w1:start", "w1:failure", "w1:start"]


class RestartingSpawner(Supervisor):
    """A top supervisor whose child supervisor restarts children at most twice."""

    def spawn_restarting(self) -> ActorRef[Restarting]:
        return self.spawn(Restarting, self.log, self.events)


async def test_a_child_failing_in_on_start_is_restarted_until_the_limit_then_escalates(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    top = RestartingSpawner.start([], events)
    middle = await top.proxy().spawn_restarting()
    await middle.proxy().spawn_worker("w", fail_on_start=True)
    seen = [await next_event(events) for _ in range(6)]
    kinds = [event[0] for event in seen]
    # 2 restarts allowed; the third failure escalates: `middle` fails, and `top` (STOP) is told
    assert kinds == ["failed", "restarted", "failed", "restarted", "failed", "supervisor-failed"]
    kind, failed, error, directive = await next_event(events)
    assert (kind, failed, directive) == ("failed", middle, Directive.STOP)
    assert str(error) == "w cannot start"  # the grandparent sees the original error
    assert not middle.is_alive()
    assert top.is_alive()


async def test_escalate_fails_the_parent_which_stops_its_other_children(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    log: list[str] = []
    parent = Escalating.start(log, events)
    crashing = await parent.proxy().spawn_worker("a")
    sibling = await parent.proxy().spawn_worker("b")
    crashing.tell("crash")
    assert (await next_event(events))[3] is Directive.ESCALATE
    kind, error = await next_event(events)
    assert kind == "supervisor-failed"
    assert str(error) == "a crashed"
    await wait_all_stopped(timeout=5.0)
    assert not sibling.is_alive()
    assert not parent.is_alive()
    # the sibling stopped (normally) before the parent's on_failure ran
    assert log.index("b:stop") < log.index("supervisor:failure")


async def test_stopping_a_parent_stops_children_first_depth_first(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    log: list[str] = []
    root = Supervisor.start(log, events)
    middle = await root.proxy().spawn_supervisor()
    leaf = await middle.proxy().spawn_worker("leaf")
    await middle.proxy().spawn_worker("leaf2")
    assert await root.stop(block=False) is True
    assert log.count("supervisor:stop") == 2
    assert log.index("leaf:stop") < log.index("supervisor:stop")
    assert log.index("leaf2:stop") < log.index("supervisor:stop")
    assert log[-1] == "supervisor:stop"
    assert not leaf.is_alive()
    assert not middle.is_alive()
    # children stopped by their stopping parent are not reported to it
    assert events.empty()


async def test_a_parent_stops_when_its_child_stopped_just_before(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    log: list[str] = []
    root = Supervisor.start(log, events)
    child = await root.proxy().spawn_worker("w")
    # The child stops first; its notice reaches the parent only after the parent's own stop, so
    # the parent asks a dead child to stop, whose answer comes at once.
    child_stopped = child.stop(block=False)
    root_stopped = root.stop(block=False)
    assert await child_stopped is True
    assert await root_stopped is True
    assert log == ["w:start", "w:stop", "supervisor:stop"]
    assert events.empty()


async def test_a_failing_parent_stops_its_children_before_on_failure(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    log: list[str] = []

    class Fragile(Supervisor):
        def on_receive(self, message: Any) -> Any:
            raise RuntimeError("parent broke")

    parent = Fragile.start(log, events)
    child = await parent.proxy().spawn_worker("c")
    parent.tell("anything")
    assert (await next_event(events))[0] == "supervisor-failed"
    assert not child.is_alive()
    assert log == ["c:start", "c:stop", "supervisor:failure"]


async def test_async_on_child_failure_is_awaited(events: asyncio.Queue[tuple[Any, ...]]) -> None:
    class Thoughtful(Supervisor):
        async def on_child_failure(  # type: ignore[override]
            self, child: ActorRef[Any], error: BaseException
        ) -> Directive:
            await asyncio.sleep(0)  # deliberate: one loop turn
            self.events.put_nowait(("thought", child))
            return Directive.RESTART

    parent = Thoughtful.start([], events)
    child = await parent.proxy().spawn_worker("w")
    child.tell("crash")
    assert await next_event(events) == ("thought", child)
    assert (await next_event(events))[0] == "restarted"


async def test_an_invalid_directive_fails_the_parent(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    class Confused(Supervisor):
        def on_child_failure(self, child: ActorRef[Any], error: BaseException) -> Directive:
            return "restart"  # type: ignore[return-value]

    parent = Confused.start([], events)
    child = await parent.proxy().spawn_worker("w")
    child.tell("crash")
    kind, error = await next_event(events)
    assert kind == "supervisor-failed"
    assert isinstance(error, TypeError)
    await wait_all_stopped(timeout=5.0)


async def test_root_actor_escalation_just_stops_it(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    parent = Escalating.start([], events)
    child = await parent.proxy().spawn_worker("w")
    child.tell("crash")
    await wait_all_stopped(timeout=5.0)
    assert not parent.is_alive()


async def test_spawn_is_refused_once_stopping_and_for_non_asyncio_actors(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    spawned: list[Any] = []

    class Late(Supervisor):
        def on_stop(self) -> None:
            try:
                self.spawn(Worker, "late", [])
            except pykka.ActorDeadError as error:
                spawned.append(error)

        def spawn_thread_actor(self) -> None:
            self.spawn(pykka.ThreadingActor)  # type: ignore[type-var]

    ref = Late.start([], events)
    with pytest.raises(TypeError, match="AsyncioActor subclasses"):
        await ref.proxy().spawn_thread_actor()
    await ref.stop(block=False)
    assert len(spawned) == 1


async def test_grandchildren_failures_go_to_their_own_parent(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    log: list[str] = []
    root = Supervisor.start(log, events)
    middle = await root.proxy().spawn_supervisor()
    leaf = await middle.proxy().spawn_worker("leaf")
    leaf.tell("crash")
    kind, failed, _error, _directive = await next_event(events)
    assert (kind, failed) == ("failed", leaf)
    assert middle.is_alive()
    assert await root.proxy().children == [middle]


class Slow(AsyncioActor):
    """A child whose handler and `on_stop` wait for the test to let them go on."""

    use_actor_registry = False

    def __init__(self, log: list[str], gate: asyncio.Event) -> None:
        super().__init__()
        self.log = log
        self.gate = gate

    async def on_receive(self, message: Any) -> Any:
        self.log.append(f"slow:{message}")
        await self.gate.wait()
        self.log.append(f"slow:{message}:done")

    async def on_stop(self) -> None:
        await self.gate.wait()
        self.log.append("slow:stop")


class Parent(Supervisor):
    def spawn_slow(self, gate: asyncio.Event) -> ActorRef[Slow]:
        return self.spawn(Slow, self.log, gate)


async def _parent_of_slow(
    events: asyncio.Queue[tuple[Any, ...]],
) -> tuple[ActorRef[Parent], ActorRef[Slow], list[str], asyncio.Event]:
    log: list[str] = []
    gate = asyncio.Event()
    root = Parent.start(log, events)
    return root, await root.proxy().spawn_slow(gate), log, gate


async def test_a_parent_stops_only_after_an_idle_child_s_async_on_stop(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    root, child, log, gate = await _parent_of_slow(events)
    stopping = root.stop(block=False)
    await eventually(lambda: not root.is_alive(), "the parent to begin stopping")
    gate.set()  # the child's on_stop may go on; its parent's comes after it
    assert await stopping is True
    assert log == ["slow:stop", "supervisor:stop"]
    assert not child.is_alive()


async def test_a_busy_child_finishes_its_message_before_its_parent_stops_it(
    events: asyncio.Queue[tuple[Any, ...]],
) -> None:
    root, child, log, gate = await _parent_of_slow(events)
    child.tell("work")
    await eventually(lambda: "slow:work" in log, "the handler to begin (it then waits)")
    stopping = root.stop(block=False)
    gate.set()
    assert await stopping is True
    assert log == ["slow:work", "slow:work:done", "slow:stop", "supervisor:stop"]
    assert not child.is_alive()
