"""AsyncioActor: a pykka actor whose inbox, message loop and futures live on a running asyncio loop.

Each actor handles the messages of its own inbox, one at a time, on the loop that started it, and
touches only its own state. An idle actor costs no asyncio task: its inbox wakes it with a loop
callback, and it runs as a task only while it has something to await. A parent also owns the
table of the children it spawned; children report to it by messages (see `_supervision`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import uuid
from inspect import isawaitable
from types import CoroutineType
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, cast

from pykka import Actor, ActorDeadError, ActorRef, ActorRegistry
from pykka._envelope import Envelope
from pykka.messages import ProxyCall, ProxyGetAttr, ProxySetAttr, _ActorStop

from attune_actors.actors._future import AsyncioFuture
from attune_actors.actors._inbox import AsyncioInbox, reject
from attune_actors.actors._ref import AsyncioActorRef
from attune_actors.actors._supervision import (
    ChildFailed,
    ChildSpec,
    ChildStopped,
    Directive,
    Escalation,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Coroutine
    from types import TracebackType

    from pykka import Future
    from pykka._types import OptExcInfo

__all__ = ["AsyncioActor"]

logger = logging.getLogger("attune_actors.actors")

C = TypeVar("C", bound="AsyncioActor")

# Running actors, by strong reference. Refs hold their actor weakly and asyncio its tasks, so this is what
# keeps an actor (and through `_task`, its task) alive while nobody else holds it; it is also how
# `stop_all_actors()` finds actors that are not in pykka's ActorRegistry.
_live: set[AsyncioActor] = set()

# Message types handled by the loop itself (control) or by pykka's `_handle_receive` (proxy calls);
# every other message goes straight to `on_receive`, as `_handle_receive` would send it.
_CONTROL = frozenset({_ActorStop, ChildStopped, ChildFailed})
_SPECIAL = _CONTROL | {ProxyCall, ProxyGetAttr, ProxySetAttr}

# Actor URNs: a random UUID per process whose last 48 bits count the actors started. Still
# `urn:uuid:` in the UUID layout, unique in the process and, through the random part, between
# processes; a tenth of the cost of `uuid4()` per actor (an execution starts several).
_URN_PREFIX = uuid.uuid4().urn[:-12]
_urn_serial = itertools.count()


class _StopFlag(threading.Event):
    """`actor_stopped` for asyncio actors: a plain flag, with a real Event only if a thread waits.

    pykka only calls `is_set()` and `set()`; a `threading.Event` costs a Condition, a lock and a deque
    (about 1 KiB) per actor.
    """

    _lock = threading.Lock()

    def __init__(self) -> None:
        self._flag = False
        self._event: threading.Event | None = None

    def __repr__(self) -> str:
        return f"<_StopFlag set={self._flag}>"

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set  # threading.Event's legacy alias

    def set(self) -> None:
        self._flag = True
        event = self._event
        if event is not None:
            event.set()

    def clear(self) -> None:
        self._flag = False
        event = self._event
        if event is not None:
            event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        with self._lock:
            if self._event is None:
                self._event = threading.Event()
        if self._flag:  # set() may have run before the event existed
            return True
        return self._event.wait(timeout)


def _task_is_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _is_failure(exc: BaseException) -> bool:
    """Whether an exception from a handler is the handler's failure (not the task being cancelled,
    nor the interpreter being interrupted or exiting)."""
    if isinstance(exc, Exception):
        return True
    return isinstance(exc, asyncio.CancelledError) and not _task_is_cancelling()


class _ChildrenStopping:
    """A stopping actor's count of its children's answers to its stop requests (a stopped or dead
    child answers alike); whichever comes last, an answer or the end of the asking, stops it."""

    __slots__ = ("actor", "left", "reply_to")

    def __init__(self, actor: AsyncioActor, reply_to: Future[Any] | None, children: int) -> None:
        self.actor = actor
        self.reply_to = reply_to
        self.left = children + 1  # the asking itself counts: answers may come while it asks

    def all_asked(self) -> Coroutine[Any, Any, bool] | None:
        """Called once every child was asked; the job to run if this ended the count."""
        self.left -= 1
        return self.actor._stop_self(self.reply_to) if self.left == 0 else None

    def answered(self, _answer: Future[Any]) -> None:
        self.left -= 1
        if self.left == 0:
            job = self.actor._stop_self(self.reply_to)
            if job is not None:
                self.actor._go_async(job)


def _stop_if_parked(ref: ActorRef[Any]) -> AsyncioFuture[Any] | None:
    """Stop a child that waits for messages (none queued, nothing on the stack) at once, as its
    own `_ActorStop` would, without a message; the future of its stop, or None if it is busy.

    Called by its stopping parent on the loop thread they share. An execution that ends stops
    its idle task actors this way: an envelope, an ask and a wake-up less each.
    """
    actor = ref._actor_weakref()
    if not isinstance(actor, AsyncioActor) or actor._task is not None:
        return None
    inbox = actor.actor_inbox
    if inbox._reader is not actor or inbox:
        return None
    stopped: AsyncioFuture[Any] = AsyncioFuture()
    job = actor._stop_now(stopped)
    if job is not None:
        actor._go_async(job)
    return stopped


class AsyncioActor(Actor):
    """An actor whose messages are handled on the asyncio loop that started it.

    Start it from a coroutine (or callback) on the running loop: `ref = MyActor.start(*args)`, or
    `self.spawn(MyActor, *args)` from another actor to make it a supervised child. The loop must keep
    running on the thread that started the actor. Then:

    - `ref.tell(msg)` queues `msg` for `on_receive` and returns at once; `ref.ask(msg, block=False)`
      returns an `AsyncioFuture` to `await` for `on_receive`'s return value (or its exception);
      `await ref.proxy().method(...)` calls a method in the actor. From other threads the
      same calls are safe: messages are handed to the loop with `call_soon_threadsafe` (each
      sender's order is kept), and a blocking `ref.ask(msg)` waits in that thread. Blocking calls
      (`ref.ask(msg)` with the default `block=True`, `future.get()`, `ref.stop()`, assigning a proxy
      attribute) raise `RuntimeError` on a thread running an event loop instead of blocking it.
    - Messages are handled one at a time, in arrival order. Handlers and the hooks (`on_start`,
      `on_stop`, `on_failure`, `on_child_*`) may be `async def`; while one is awaiting, the actor
      handles nothing else, so its state needs no locks (and an actor that awaits an ask to itself
      waits forever). Blocking code belongs in a `BlockingPool`, not in a handler. (For mypy, an
      `async def` override of `on_start`, `on_stop` or `on_failure` needs `# type: ignore[override]`:
      pykka declares them `-> None`.)
    - An exception in a handler of an `ask` is returned to the asker and the actor carries on. An
      exception in a handler of a `tell` (or a `proxy.method.defer()`) or in `on_start` is a
      failure: the actor refuses new messages, fails the queued asks with `ActorDeadError`, stops
      its children, runs `on_failure` (unlike pykka's ThreadingActor, also after a failed
      `on_start`) and ends; its parent, if any, then decides what to do
      (`on_child_failure`).
    - `ref.stop()` (or `self.stop()`) is queued like any message. When it is handled the actor
      refuses new messages, answers the queued asks with `ActorDeadError`, stops its children (all
      at once, each of them children first), runs `on_stop`, tells its parent and ends;
      the stop future resolves after that (and after its task, if it was awaiting, has ended).
      Exceptions in `on_stop`/`on_failure` are logged.
    - Handlers run as loop callbacks while they need not await, in one context per loop thread (not
      a copy of the sender's: a handler that sets a context variable resets it). The first time a
      hook or handler returns an awaitable, the actor continues in an asyncio task (`_task`) until
      its inbox is empty again; messages are still handled one at a time, in order.
    - If that task is cancelled (e.g. `asyncio.run()` returning while an actor awaits), or a
      handler raises `KeyboardInterrupt`/`SystemExit`, the actor stops abruptly: no `on_stop`,
      the asker of the current message and the queued asks get `ActorDeadError`, children are told
      to stop, the parent is told it stopped, and the exception propagates. Stop actors before the
      loop ends: an idle actor has no task for the loop's end to cancel, so it is never stopped.

    Class attributes to declare per actor class:
    """

    use_actor_registry: ClassVar[bool] = True
    """Register started actors in `pykka.ActorRegistry` (read at `start()`/`spawn()`).

    pykka's registry is one global list: unregistering is a linear scan, so stopping an actor costs
    O(number of registered actors) (about 1 ms each with 100,000 registered). Classes started at
    high rates (one per task run) should set this to `False`; they stay reachable through their
    refs and their parent, and `stop_all_actors()` still finds them."""

    supervisor_strategy: ClassVar[Directive] = Directive.STOP
    """What `on_child_failure` returns unless overridden: the directive for a failed child."""

    max_restarts: ClassVar[int] = 3
    """Restarts allowed per child within `restart_window` seconds; one more escalates instead."""

    restart_window: ClassVar[float] = 60.0
    """See `max_restarts`."""

    actor_inbox: AsyncioInbox
    _parent: ActorRef[Any] | None = None
    _children: dict[ActorRef[Any], ChildSpec] | None = None
    _registered: bool = False
    _task: asyncio.Task[None] | None = None

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        """Create the actor's identity: URN, inbox on the running loop, stop flag and ref.

        Call it from your own `__init__` (`super().__init__()`). It must run on the loop thread,
        with the loop running; `RuntimeError` otherwise. pykka's `Actor.__init__` is not called: it
        would build a `threading.Event` and a plain `ActorRef`; this sets the same four attributes.
        """
        self.actor_urn = f"{_URN_PREFIX}{next(_urn_serial) & 0xFFFFFFFFFFFF:012x}"
        self.actor_inbox = self._create_actor_inbox()
        self.actor_inbox._owner = self.actor_urn
        self.actor_stopped = _StopFlag()
        self._actor_ref = AsyncioActorRef(self)

    # -- pykka's extension points for new actor types -------------------------------------------

    @staticmethod
    def _create_actor_inbox() -> AsyncioInbox:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            msg = "AsyncioActor must be created on a running asyncio event loop (from a coroutine)"
            raise RuntimeError(msg) from None
        return AsyncioInbox(loop)

    @staticmethod
    def _create_future() -> AsyncioFuture[Any]:
        return AsyncioFuture()

    def _start_actor_loop(self) -> None:
        _live.add(self)
        self.actor_inbox.run_reader(self._begin)

    # -- starting --------------------------------------------------------------------------------

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> ActorRef[Self]:
        """Create the actor with `cls(*args, **kwargs)`, register it (unless `use_actor_registry` is
        false) and schedule it on the running loop: `on_start` runs there first."""
        return cls._launch(None, args, kwargs)

    @classmethod
    def _launch(
        cls, parent: ActorRef[Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ActorRef[Self]:
        # pykka's Actor.start(), plus the parent and the registry opt-out.
        actor = cls._create(parent, args, kwargs)
        actor._start_actor_loop()
        return actor.actor_ref

    @classmethod
    def _create(cls, parent: ActorRef[Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Self:
        actor = cls(*args, **kwargs)
        if getattr(actor, "_actor_ref", None) is None:
            msg = f"{cls.__name__}.__init__() must call super().__init__()"
            raise TypeError(msg)
        if parent is not None:
            actor._parent = parent
        if cls.use_actor_registry:
            ActorRegistry.register(actor.actor_ref)
            actor._registered = True
        return actor

    def spawn(self, actor_class: type[C], /, *args: Any, **kwargs: Any) -> ActorRef[C]:
        """Start `actor_class(*args, **kwargs)` as a child of this actor and return its ref.

        Call it from this actor's own handlers or hooks. The child runs on the same loop; its
        failures come to `on_child_failure`, its normal stops to `on_child_stopped`, and it is
        stopped before this actor stops. Raises `ActorDeadError` once this actor is stopping.
        """
        if not (isinstance(actor_class, type) and issubclass(actor_class, AsyncioActor)):
            msg = f"children must be AsyncioActor subclasses, not {actor_class!r}"
            raise TypeError(msg)
        if self.actor_stopped.is_set():
            msg = f"{self} is stopping and cannot spawn children"
            raise ActorDeadError(msg)
        spec = ChildSpec(actor_class, args, kwargs)
        return self._spawn_spec(spec)

    def _spawn_spec(self, spec: ChildSpec) -> ActorRef[Any]:
        child = spec.actor_class._create(self.actor_ref, spec.args, spec.kwargs)
        ref: ActorRef[Any] = child.actor_ref
        children = self._children
        if children is None:
            children = self._children = {}
        children[ref] = spec  # before it begins: it may begin (and end) before spawn() returns
        child._start_actor_loop()
        return ref

    @property
    def parent(self) -> ActorRef[Any] | None:
        """The ref of the actor that spawned this one, or `None` for a root actor."""
        return self._parent

    @property
    def children(self) -> list[ActorRef[Any]]:
        """Refs of the running children this actor spawned (or restarted), oldest first."""
        return list(self._children or ())

    # -- hooks (all may be `async def` or return an awaitable, which is awaited) ----------------

    def on_start(self) -> Awaitable[None] | None:  # type: ignore[override]
        """Run before the first message. Raising is a failure."""
        return None

    def on_stop(self) -> Awaitable[None] | None:  # type: ignore[override]
        """Run after the actor's children stopped, when it stops normally."""
        return None

    def on_failure(  # type: ignore[override]
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None] | None:
        """Run after the actor's children stopped, when it stops after a failure."""
        return None

    def on_drained(self) -> None:
        """Run each time the actor's inbox runs empty, before it waits for the next
        message: the end of a burst of messages (all those that arrived while it was busy).
        Work that can wait for the burst's end (a snapshot of its state) is done once here instead
        of after each message. Synchronous; raising is a failure. Not run when it stops."""
        return None

    def on_child_failure(
        self, child: ActorRef[Any], error: BaseException
    ) -> Directive | Awaitable[Directive]:
        """Decide what to do about a child that failed with `error` (it has already stopped).

        Runs like a message handler. The default returns the class's
        `supervisor_strategy`. Raising here is this actor's own failure.
        """
        return self.supervisor_strategy

    def on_child_restarted(self, old: ActorRef[Any], new: ActorRef[Any]) -> Awaitable[None] | None:
        """Learn the ref of a restarted child (after `Directive.RESTART`)."""
        return None

    def on_child_stopped(self, child: ActorRef[Any]) -> Awaitable[None] | None:
        """Learn that a child stopped normally. Not called for children this actor stops itself
        while stopping (it is no longer handling messages then)."""
        return None

    # -- the message loop ------------------------------------------------------------------------

    # The loop is callback-driven: an actor with nothing to await has no asyncio task. Its inbox
    # schedules `_drain` when a message arrives; `_drain` handles everything queued, synchronously,
    # then parks the actor on its inbox again. The first time something must be awaited (an async
    # hook or handler, a stop, a child's notice, a failure), the rest of the burst moves to a task
    # (`_run_async`), which ends, and leaves the actor task-less again, when the inbox is empty.
    # A task per actor cost a wake-up future, a task step per message burst and ~1 KiB per actor.

    def _begin(self) -> None:
        """First callback of a started actor: `on_start`, then the messages sent meanwhile."""
        try:
            started = self.on_start()
        except BaseException as exc:
            if not _is_failure(exc):
                self._abort()
                raise
            self._go_async(self._failed(exc))
            return
        if started is not None and isawaitable(started):
            self._go_async(self._handled(started, None))
            return
        self._drain()

    def _drain(self) -> None:
        """Handle the queued messages now; hand over to a task at the first thing to await."""
        try:
            pending = self._handle_queued()
        except BaseException:
            self._abort()
            raise
        if pending is not None:
            self._go_async(pending)

    def _go_async(self, job: Coroutine[Any, Any, bool]) -> None:
        self._task = self.actor_inbox.loop.create_task(self._run_async(job))

    async def _run_async(self, job: Coroutine[Any, Any, bool]) -> None:
        """The actor's task while it has something to await: the job, then the queued messages,
        until the inbox is empty (the actor parks, task-less) or the actor has ended."""
        try:
            while await job:
                next_job = self._handle_queued()
                if next_job is None:
                    break
                job = next_job
        except BaseException:
            self._abort()
            raise
        finally:
            self._task = None

    def _handle_queued(self) -> Coroutine[Any, Any, bool] | None:
        """Handle queued messages until the inbox is empty (the actor parks) or the actor stopped,
        and return `None`; or until one needs awaiting: return the job that awaits it (the job
        returns whether the actor goes on). Messages taken but not handled are put back first."""
        inbox = self.actor_inbox
        cls = type(self)
        on_receive = cls.on_receive
        handle = cls._handle_receive
        drained = None if cls.on_drained is AsyncioActor.on_drained else cls.on_drained
        while True:
            items = inbox.take()
            if not items:
                if drained is not None:
                    try:
                        drained(self)
                    except BaseException as exc:
                        if not _is_failure(exc):
                            raise
                        return self._failed(exc)
                    if inbox:  # the hook sent this actor messages: handle them first
                        continue
                inbox.park(self)
                return None
            for index, item in enumerate(items):
                if type(item) is Envelope:
                    message = item.message
                    reply_to = item.reply_to
                else:  # told as is (`AsyncioActorRef.tell`); `_inbox.opened()`, inlined per message
                    message = item
                    reply_to = None
                try:
                    kind = type(message)
                    if kind not in _SPECIAL:
                        result = on_receive(self, message)
                    elif kind is _ActorStop:
                        inbox.unshift(items[index + 1 :])  # for _detach() to answer
                        return self._stop_now(reply_to)
                    elif kind in _CONTROL:
                        inbox.unshift(items[index + 1 :])
                        return self._handled(self._handle_notice(message), reply_to)
                    else:
                        result = handle(self, message)
                except BaseException as exc:
                    if self._settled(exc, reply_to):
                        continue
                    inbox.unshift(items[index + 1 :])
                    if not _is_failure(exc):
                        raise
                    return self._failed(exc)
                if isinstance(result, CoroutineType):
                    inbox.unshift(items[index + 1 :])
                    return self._handled(result, reply_to)
                if reply_to is not None:
                    reply_to.set(result)

    def _settled(self, exc: BaseException, reply_to: Future[Any] | None) -> bool:
        """After a handler raised `exc`: whether the actor goes on (an ask got the exception).
        Otherwise it is a tell's failure (the actor fails), or not a failure at all (cancelled,
        exiting: the asker is told the actor is dead, and the caller re-raises)."""
        if not _is_failure(exc):
            if reply_to is not None:
                reply_to.set_exception(self._dead_exc_info())
            return False
        if reply_to is None:
            return False
        logger.info("Exception returned from %s to caller:", self, exc_info=exc)
        reply_to.set_exception((type(exc), exc, exc.__traceback__))
        return True

    # Jobs: each awaits one thing and returns whether the actor goes on handling messages.
    # `_handled` is the message loop's own error handling, for a hook, handler or notice that
    # awaits: an ask gets the exception, anything else fails the actor.

    async def _handled(self, result: Awaitable[Any], reply_to: Future[Any] | None) -> bool:
        try:
            value = await result
        except BaseException as exc:
            if self._settled(exc, reply_to):
                return True
            if not _is_failure(exc):
                raise
            await self._fail(exc)
            return False
        if reply_to is not None:
            reply_to.set(value)
        return True

    async def _stopping_after(self, on_stop: Awaitable[None], reply_to: Future[Any] | None) -> bool:
        try:
            await on_stop
        except Exception:
            logger.exception("Unhandled exception in %s.on_stop():", self)
        self._stopped(reply_to)
        return False

    async def _failed(self, exc: BaseException) -> bool:
        await self._fail(exc)
        return False

    async def _handle_notice(self, notice: ChildStopped | ChildFailed) -> None:
        if isinstance(notice, ChildStopped):
            await self._child_stopped(notice.child)
        else:
            await self._child_failed(notice.child, notice.error)

    async def _child_stopped(self, child: ActorRef[Any]) -> None:
        children = self._children
        if children is None or children.pop(child, None) is None:
            return
        result = self.on_child_stopped(child)
        if isawaitable(result):
            await result

    async def _child_failed(self, child: ActorRef[Any], error: BaseException) -> None:
        children = self._children
        spec = children.pop(child, None) if children is not None else None
        if spec is None:  # not (or no longer) our child
            return
        decided = self.on_child_failure(child, error)
        directive = await decided if isawaitable(decided) else decided
        if directive is Directive.RESTART:
            now = self.actor_inbox.loop.time()
            if spec.allow_restart(self.max_restarts, self.restart_window, now):
                new = self._spawn_spec(spec)
                logger.info("%s restarted failed child %s as %s", self, child, new)
                result = self.on_child_restarted(child, new)
                if isawaitable(result):
                    await result
                return
            logger.error(
                "%s: child %s failed more than %d times in %g s; escalating",
                self,
                child,
                self.max_restarts,
                self.restart_window,
            )
            directive = Directive.ESCALATE
        if directive is Directive.ESCALATE:
            raise Escalation(child, error)
        if directive is not Directive.STOP:
            name = type(self).__name__
            msg = f"{name}.on_child_failure() returned {directive!r}, not a Directive"
            raise TypeError(msg)

    # -- stopping --------------------------------------------------------------------------------

    def _dead_exc_info(self) -> OptExcInfo:
        error = ActorDeadError(f"{self.actor_ref} stopped before handling the message")
        return (ActorDeadError, error, None)

    def _detach(self) -> None:
        """Refuse new messages, leave the registry and answer everything still queued."""
        self.actor_stopped.set()
        if self._registered:
            self._registered = False
            ActorRegistry.unregister(self.actor_ref)
        for item in self.actor_inbox.close():
            reject(item, self.actor_ref)

    async def _stop_children(self) -> None:
        children = self._children
        if not children:
            return
        self._children = None
        # Asked directly rather than through `ref.stop()`: one future per child, not two.
        stopping = [child.ask(_ActorStop(), block=False) for child in children]
        for future in stopping:
            with contextlib.suppress(ActorDeadError):  # it stopped by itself meanwhile
                await future

    def _finish(self, notice: ChildStopped | ChildFailed) -> None:
        parent = self._parent
        if parent is not None and parent.is_alive():
            with contextlib.suppress(ActorDeadError):  # the parent began stopping meanwhile
                parent.tell(notice)
        _live.discard(self)

    def _stop_now(self, reply_to: Future[Any] | None) -> Coroutine[Any, Any, bool] | None:
        """Stop: refuse messages, stop the children, then `on_stop`. Without a task unless
        `on_stop` awaits (a task per stop cost as much as the stop): the children's answers are
        counted by callbacks, and the last one stops this actor. Returns the job if one awaits."""
        self._detach()
        children = self._children
        if not children:
            return self._stop_self(reply_to)
        self._children = None
        waiting = _ChildrenStopping(self, reply_to, len(children))
        for child in children:
            stopped = _stop_if_parked(child)
            if stopped is None:  # busy: asked, after what it has queued
                # Asked directly rather than through `ref.stop()`: one future per child, not two.
                stopped = cast("AsyncioFuture[Any]", child.ask(_ActorStop(), block=False))
            if stopped.done():
                waiting.left -= 1
            else:
                stopped.add_done_callback(waiting.answered)
        return waiting.all_asked()

    def _stop_self(self, reply_to: Future[Any] | None) -> Coroutine[Any, Any, bool] | None:
        try:
            result = self.on_stop()
        except Exception:
            logger.exception("Unhandled exception in %s.on_stop():", self)
            result = None
        if result is not None and isawaitable(result):
            return self._stopping_after(result, reply_to)
        self._stopped(reply_to)
        return None

    def _stopped(self, reply_to: Future[Any] | None) -> None:
        logger.debug("Stopped %s", self)
        self._finish(ChildStopped(self.actor_ref))
        if reply_to is not None:
            reply_to.set(None)

    async def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, Escalation):
            logger.error("%s failed: its child %s failed with %r", self, exc.child, exc.error)
            exc = exc.error
        else:
            logger.error("Unhandled exception in %s:", self, exc_info=exc)
        self._detach()
        await self._stop_children()
        try:
            result = self.on_failure(type(exc), exc, exc.__traceback__)
            if isawaitable(result):
                await result
        except Exception:
            logger.exception("Unhandled exception in %s.on_failure():", self)
        self._finish(ChildFailed(self.actor_ref, exc))

    def _abort(self) -> None:
        """Stop at once, without awaiting anything: its task is cancelled or the process exits."""
        self._detach()
        children, self._children = self._children, None
        for child in children or ():
            if child.is_alive():
                with contextlib.suppress(ActorDeadError):
                    child.tell(_ActorStop())
        logger.debug("Aborted %s", self)
        self._finish(ChildStopped(self.actor_ref))

    # pykka's thread-style loop pieces are not used by this actor type.
    def _actor_loop(self) -> None:
        msg = "AsyncioActor runs its loop on an asyncio event loop"
        raise NotImplementedError(msg)

    def _stop(self) -> None:
        msg = "AsyncioActor stops through its message loop; use stop()"
        raise NotImplementedError(msg)

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        msg = "AsyncioActor handles failures in its message loop"
        raise NotImplementedError(msg)
