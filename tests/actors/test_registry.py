"""pykka's ActorRegistry with AsyncioActors, and the per-class opt-out."""

from __future__ import annotations

from typing import Any

from pykka import ActorRegistry

from attune_actors.actors import AsyncioActor, running_actors, stop_all_actors, wait_all_stopped


class Registered(AsyncioActor):
    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash")
        return message


class Unregistered(AsyncioActor):
    use_actor_registry = False

    def on_receive(self, message: Any) -> Any:
        return message


async def test_started_actors_are_registered_and_found() -> None:
    ref = Registered.start()
    assert ActorRegistry.get_by_urn(ref.actor_urn) is ref
    assert ActorRegistry.get_by_class(Registered) == [ref]
    assert ActorRegistry.get_by_class_name("Registered") == [ref]
    assert ref in ActorRegistry.get_all()


async def test_stopped_and_failed_actors_are_unregistered() -> None:
    stopped, failed = Registered.start(), Registered.start()
    await stopped.stop(block=False)
    failed.tell("crash")
    await wait_all_stopped(timeout=5.0)
    assert ActorRegistry.get_by_class(Registered) == []


async def test_broadcast_reaches_registered_actors() -> None:
    refs = [Registered.start() for _ in range(3)]
    ActorRegistry.broadcast("crash", target_class=Registered)
    await wait_all_stopped(timeout=5.0)
    assert not any(ref.is_alive() for ref in refs)


async def test_registry_stop_all_without_blocking_can_be_awaited() -> None:
    refs = [Registered.start() for _ in range(3)]
    results = [await future for future in ActorRegistry.stop_all(block=False)]
    assert results == [True, True, True]
    assert not any(ref.is_alive() for ref in refs)


async def test_opted_out_classes_stay_out_of_the_registry_but_are_still_tracked() -> None:
    ref = Unregistered.start()
    assert await ref.ask("x", block=False) == "x"
    assert ActorRegistry.get_by_urn(ref.actor_urn) is None
    assert running_actors() == [ref]
    assert await stop_all_actors(timeout=5.0) == 1
    assert not ref.is_alive()


async def test_children_use_their_own_class_setting() -> None:
    class Parent(Unregistered):
        def make(self) -> Any:
            return self.spawn(Registered)

    parent = Parent.start()
    child = await parent.proxy().make()
    assert ActorRegistry.get_by_class(Registered) == [child]
    assert ActorRegistry.get_by_urn(parent.actor_urn) is None
    await parent.stop(block=False)
    assert ActorRegistry.get_by_class(Registered) == []
