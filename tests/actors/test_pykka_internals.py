"""One test per pykka internal the actor layer relies on: a pykka upgrade that changes one fails here.

pyproject.toml pins pykka to >=4.5,<4.6; widening the pin means re-reading these and pykka's source.
"""

from __future__ import annotations

import inspect
import queue
import threading
from importlib.metadata import version
from typing import Any

import pykka
import pytest
from pykka import ActorProxy, ActorRef, ActorRegistry, ThreadingFuture
from pykka._actor import ActorInbox
from pykka._envelope import Envelope
from pykka.messages import ProxyCall, ProxyGetAttr, ProxySetAttr, _ActorStop

from attune_actors.actors import AsyncioActor, AsyncioFuture
from attune_actors.actors._inbox import AsyncioInbox


class RecordingInbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope[Any]] = []

    def put(self, envelope: Envelope[Any], /) -> None:
        self.envelopes.append(envelope)

    def get(self) -> Envelope[Any]:
        return self.envelopes.pop(0)

    def empty(self) -> bool:
        return not self.envelopes


class Probe(pykka.Actor):
    """A pykka actor type that never runs: it records what pykka puts into its inbox."""

    started = 0

    @staticmethod
    def _create_actor_inbox() -> RecordingInbox:
        return RecordingInbox()

    @staticmethod
    def _create_future() -> ThreadingFuture[Any]:
        return ThreadingFuture()

    def _start_actor_loop(self) -> None:
        type(self).started += 1

    def on_receive(self, message: Any) -> Any:
        return ("received", message)

    def method(self, value: int) -> int:
        return value


@pytest.fixture
def probe() -> Probe:
    return Probe()


def test_pykka_version_is_the_pinned_range() -> None:
    major, minor, *_ = (int(part) for part in version("pykka").split("."))
    assert (major, minor) == (4, 5)


def test_actor_type_extension_points_are_the_three_abstract_methods() -> None:
    assert pykka.Actor.__abstractmethods__ == {
        "_create_actor_inbox",
        "_create_future",
        "_start_actor_loop",
    }
    assert isinstance(inspect.getattr_static(pykka.Actor, "_create_actor_inbox"), staticmethod)
    assert isinstance(inspect.getattr_static(pykka.Actor, "_create_future"), staticmethod)


def test_actor_init_sets_exactly_the_four_fields_asyncio_actor_sets(probe: Probe) -> None:
    # AsyncioActor.__init__ replaces pykka's (to use a light stop flag and its own ref type).
    assert set(vars(probe)) == {"actor_urn", "actor_inbox", "actor_stopped", "_actor_ref"}
    assert probe.actor_urn.startswith("urn:uuid:")
    assert isinstance(probe.actor_inbox, RecordingInbox)
    assert isinstance(probe.actor_stopped, threading.Event)
    assert probe.actor_ref.actor_urn == probe.actor_urn


def test_actor_start_constructs_registers_then_starts_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # AsyncioActor.start() replaces pykka's with the same three steps (plus the registry opt-out).
    events: list[str] = []
    register = classmethod(lambda cls, ref: events.append("reg"))
    monkeypatch.setattr(ActorRegistry, "register", register)
    monkeypatch.setattr(Probe, "_start_actor_loop", lambda self: events.append("loop"))
    original_init = Probe.__init__

    def init(self: Probe) -> None:
        events.append("init")
        original_init(self)

    monkeypatch.setattr(Probe, "__init__", init)
    ref = Probe.start()
    assert events == ["init", "reg", "loop"]
    assert isinstance(ref, ActorRef)


def test_actor_ref_copies_the_actor_fields_and_keeps_a_weakref(probe: Probe) -> None:
    ref = probe.actor_ref
    assert ref.actor_class is Probe
    assert ref.actor_inbox is probe.actor_inbox
    assert ref.actor_stopped is probe.actor_stopped
    assert ref._actor_weakref() is probe  # ActorProxy reads it


def test_is_alive_only_reads_actor_stopped_is_set(probe: Probe) -> None:
    # AsyncioActor's stop flag implements is_set()/set() without a Condition.
    class Flag(threading.Event):
        def __init__(self) -> None:
            self.calls = 0

        def is_set(self) -> bool:
            self.calls += 1
            return True

    flag = Flag()
    probe.actor_ref.actor_stopped = flag
    assert probe.actor_ref.is_alive() is False
    assert flag.calls == 1


def test_tell_puts_an_envelope_without_reply(probe: Probe) -> None:
    probe.actor_ref.tell("hello")
    [envelope] = probe.actor_inbox.envelopes  # type: ignore[attr-defined]
    assert type(envelope) is Envelope
    assert (envelope.message, envelope.reply_to) == ("hello", None)


def test_tell_to_a_stopped_actor_raises_before_touching_the_inbox(probe: Probe) -> None:
    probe.actor_stopped.set()
    with pytest.raises(pykka.ActorDeadError):
        probe.actor_ref.tell("hello")
    assert probe.actor_inbox.empty()


def test_ask_creates_the_future_with_create_future_and_puts_it_as_reply_to(probe: Probe) -> None:
    future = probe.actor_ref.ask("q", block=False)
    [envelope] = probe.actor_inbox.envelopes  # type: ignore[attr-defined]
    assert isinstance(future, ThreadingFuture)
    assert envelope.message == "q"
    assert envelope.reply_to is future


def test_ask_to_a_stopped_actor_sets_the_exception_from_the_except_block(probe: Probe) -> None:
    # AsyncioFuture.set_exception() reads sys.exc_info() when given nothing, as pykka expects.
    probe.actor_stopped.set()
    future = probe.actor_ref.ask("q", block=False)
    assert probe.actor_inbox.empty()
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=0)


def test_ref_stop_asks_with_an_actor_stop_message(probe: Probe) -> None:
    # The asyncio loop intercepts `_ActorStop` by type; AsyncioActorRef.stop() sends the same.
    probe.actor_ref.stop(block=False)
    [envelope] = probe.actor_inbox.envelopes  # type: ignore[attr-defined]
    assert type(envelope.message) is _ActorStop
    assert envelope.reply_to is not None


def test_actor_stop_tells_an_actor_stop_message(probe: Probe) -> None:
    probe.stop()
    [envelope] = probe.actor_inbox.envelopes  # type: ignore[attr-defined]
    assert type(envelope.message) is _ActorStop
    assert envelope.reply_to is None


def test_envelope_has_message_and_reply_to_slots() -> None:
    assert Envelope.__slots__ == ["message", "reply_to"]
    envelope = Envelope("m", reply_to=None)
    assert (envelope.message, envelope.reply_to) == ("m", None)


def test_handle_receive_handles_only_proxy_messages_and_forwards_the_rest(probe: Probe) -> None:
    # The asyncio loop sends messages of any other type straight to on_receive.
    assert probe._handle_receive(ProxyCall(attr_path=("method",), args=(7,), kwargs={})) == 7
    assert probe._handle_receive(ProxyGetAttr(attr_path=("actor_urn",))) == probe.actor_urn
    probe._handle_receive(ProxySetAttr(attr_path=("extra",), value=3))
    assert probe.extra == 3  # type: ignore[attr-defined]
    assert probe._handle_receive("other") == ("received", "other")
    source = inspect.getsource(pykka.Actor._handle_receive)
    assert source.count("isinstance(message, ") == 4


def test_proxy_calls_ask_without_blocking_and_defer_tells(probe: Probe) -> None:
    proxy = ActorProxy(actor_ref=probe.actor_ref)
    future = proxy.method(5)
    proxy.method.defer(6)
    first, second = probe.actor_inbox.envelopes  # type: ignore[attr-defined]
    assert first.message == ProxyCall(attr_path=("method",), args=(5,), kwargs={})
    assert first.reply_to is future
    assert second.message == ProxyCall(attr_path=("method",), args=(6,), kwargs={})
    assert second.reply_to is None


def test_inbox_protocol_is_put_get_empty() -> None:
    members = {name for name in vars(ActorInbox) if not name.startswith("_")}
    assert members == {"put", "get", "empty"}
    for name in members:
        assert callable(getattr(AsyncioInbox, name))


def test_every_public_future_method_is_overridden_by_asyncio_future() -> None:
    # pykka's own implementations block in get(); a method added upstream would too.
    public = {name for name in vars(pykka.Future) if not name.startswith("_")}
    assert public == {
        "get",
        "set",
        "set_exception",
        "set_get_hook",
        "filter",
        "join",
        "map",
        "reduce",
    }
    for name in public | {"__await__", "__iter__", "__init__"}:
        assert name in vars(AsyncioFuture), name


def test_threading_future_refuses_a_second_set_with_queue_full() -> None:
    # AsyncioFuture mirrors this behaviour.
    future: ThreadingFuture[int] = ThreadingFuture()
    future.set(1)
    with pytest.raises(queue.Full):
        future.set(2)
    asyncio_future: AsyncioFuture[int] = AsyncioFuture()
    asyncio_future.set(1)
    with pytest.raises(queue.Full):
        asyncio_future.set(2)


def test_registry_is_a_locked_list_with_linear_unregister(probe: Probe) -> None:
    # Why AsyncioActor.use_actor_registry exists: unregister scans this list.
    assert isinstance(ActorRegistry._actor_refs, list)
    ActorRegistry.register(probe.actor_ref)
    try:
        assert probe.actor_ref in ActorRegistry._actor_refs
        assert ActorRegistry.get_by_urn(probe.actor_urn) is probe.actor_ref
    finally:
        ActorRegistry.unregister(probe.actor_ref)
    assert probe.actor_ref not in ActorRegistry._actor_refs


def test_asyncio_actor_overrides_the_loop_pieces_it_does_not_use() -> None:
    for name in ("__init__", "start", "_start_actor_loop", "_create_actor_inbox", "_create_future"):
        assert name in vars(AsyncioActor), name
    for name in ("_actor_loop", "_stop", "_handle_failure"):
        assert name in vars(AsyncioActor), name
