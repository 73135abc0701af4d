"""AsyncioActorRef: pykka's `ActorRef`, with a `stop()` whose future can be awaited.

`ask()`, `proxy()` and `is_alive()` are pykka's own. `stop()` changes: pykka converts the stop reply
with a blocking get hook, which an event loop cannot wait on; here the conversion is a done
callback, so `await ref.stop(block=False)` parks only the awaiting task. And `tell()` queues the
message without pykka's envelope (see `AsyncioInbox`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

from pykka import ActorDeadError, ActorRef
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

from attune_actors.actors._future import AsyncioFuture

if TYPE_CHECKING:
    from pykka import Actor, Future

__all__ = ["AsyncioActorRef"]

A = TypeVar("A", bound="Actor")


class _StopResult:
    """Done callback turning the stop ask's outcome into pykka's `stop()` result."""

    __slots__ = ("result",)

    def __init__(self, result: AsyncioFuture[bool]) -> None:
        self.result = result

    def __call__(self, asked: AsyncioFuture[Any]) -> None:
        exc_info = asked._exc_info
        if exc_info is None:
            self.result.set(True)
        elif isinstance(exc_info[1], ActorDeadError):
            self.result.set(False)
        else:
            self.result.set_exception(exc_info)


class AsyncioActorRef(ActorRef[A]):
    """Reference to an `AsyncioActor`; safe to pass around and to use from any thread."""

    def tell(self, message: Any) -> None:
        """Send `message` without waiting for anything; `ActorDeadError` if the actor is gone."""
        if self.actor_stopped.is_set():
            msg = f"{self} not found"
            raise ActorDeadError(msg)
        self.actor_inbox.put(Envelope(message) if type(message) is Envelope else message)

    @overload
    def stop(self, *, block: Literal[True], timeout: float | None = None) -> bool: ...

    @overload
    def stop(self, *, block: Literal[False], timeout: float | None = None) -> Future[bool]: ...

    @overload
    def stop(self, *, block: bool = True, timeout: float | None = None) -> bool | Future[bool]: ...

    def stop(self, *, block: bool = True, timeout: float | None = None) -> bool | Future[bool]:
        """Ask the actor to stop, after the messages already in its inbox.

        The result is `True` if the actor stopped (or was stopping), `False` if it was already dead.
        On the loop thread use `await ref.stop(block=False)`; the default `block=True` is for other
        threads (on a thread running an event loop it raises `RuntimeError`, sending nothing, rather
        than block the loop). The actor stops its children first, then runs `on_stop`; the future
        resolves once its task has ended.
        """
        if block and asyncio._get_running_loop() is not None:
            msg = "ref.stop() would block this thread's event loop; use `await ref.stop(block=False)`"
            raise RuntimeError(msg)
        asked = cast("AsyncioFuture[Any]", self.ask(_ActorStop(), block=False))
        result: AsyncioFuture[bool] = AsyncioFuture()
        asked.add_done_callback(_StopResult(result))
        if block:
            return result.get(timeout=timeout)
        return result
