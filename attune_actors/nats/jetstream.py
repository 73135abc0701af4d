"""JetStream plumbing shared by engines and workers: the streams, durable consumers, a reliable
publisher and a continuous pull consumer.

- The runs stream (`Subjects.runs_stream`, retention WORK_QUEUE: each attempt is taken by one worker)
  carries attempts from engines to workers; the results stream keeps outcomes until their engine's
  durable consumer has taken them. `ensure_streams`/`ensure_consumer` create them when missing.
- `Publisher`: JetStream publishes, pipelined, each re-sent with the same `Nats-Msg-Id` until the
  server stores it (the server keeps one copy); and `send`s, which ask for no reply (the owner
  finds out another way whether they were stored, and re-publishes those it cannot confirm).
  Written from synchronous code (`write_commands`), acknowledgements of consumed messages with them.
- `Puller`: keeps pull requests out for as many messages as its owner has room for.
- `subscribe_inline`: a subscription whose messages are handled from the client's read loop, in
  order, without nats-py's task per subscription (the publisher's replies and the pullers use it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import (
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError as JsNotFoundError

from attune_actors.errors import AttuneError, TransportError
from attune_actors.nats.connection import describe
from attune_actors.nats.subjects import Subjects
from attune_actors.nats.wire import MAX_MSG_SIZE, MSG_ID

log = logging.getLogger("attune_actors.nats.jetstream")

JS_API = "$JS.API"


# ------------------------------------------------------------------------------------------ streams


@dataclass(frozen=True)
class StreamOptions:
    """How the runs and results streams are created (when they do not exist yet)."""

    replicas: int = 1
    max_msg_size: int = MAX_MSG_SIZE
    duplicate_window: float = 120.0  # seconds during which a re-sent publish is recognised
    results_max_age: float = 86400.0  # outcomes nobody takes (their engine is gone) expire


async def ensure_streams(nc: Client, subjects: Subjects, options: StreamOptions) -> None:
    """Create the runs and results streams if missing; TransportError when one exists unusably."""
    js = nc.jetstream()
    wanted = (
        StreamConfig(
            name=subjects.runs_stream,
            description="attune action runs, engines -> workers",
            subjects=[subjects.runs_all],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=options.replicas,
            duplicate_window=options.duplicate_window,
            max_msg_size=options.max_msg_size,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=subjects.results_stream,
            description="attune run outcomes, workers -> engines",
            subjects=[subjects.results_all],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=options.replicas,
            duplicate_window=options.duplicate_window,
            max_msg_size=options.max_msg_size,
            max_age=options.results_max_age,
            discard=DiscardPolicy.OLD,
        ),
    )
    for config in wanted:
        assert config.name is not None
        try:
            info = await js.stream_info(config.name)
        except JsNotFoundError:
            try:
                await js.add_stream(config)
            except Exception as exc:  # a concurrent creator with the same config is fine
                try:
                    await js.stream_info(config.name)
                except Exception:
                    raise TransportError(f"cannot create stream {config.name}: {describe(exc)}") from None
            continue
        except Exception as exc:
            raise TransportError(f"cannot read stream {config.name}: {describe(exc)}") from None
        if info.config.retention != RetentionPolicy.WORK_QUEUE:
            raise TransportError(
                f"stream {config.name} exists with retention {info.config.retention}, not workqueue"
            )


async def ensure_consumer(nc: Client, stream: str, config: ConsumerConfig) -> None:
    """Create a durable consumer if missing (an existing one is used as it is)."""
    js = nc.jetstream()
    assert config.durable_name is not None
    try:
        await js.consumer_info(stream, config.durable_name)
        return
    except JsNotFoundError:
        pass
    except Exception as exc:
        raise TransportError(f"cannot read consumer {config.durable_name}: {describe(exc)}") from None
    try:
        await js.add_consumer(stream, config)
    except Exception as exc:
        raise TransportError(
            f"cannot create consumer {config.durable_name} on {stream}: {describe(exc)}"
        ) from None


# ----------------------------------------------------------------------------------------- delivery

# A message handler run from the client's read loop; what it returns (if anything) is awaited before
# the next message of the subscription is handled.
MessageHandler = Callable[[Msg], Awaitable[None] | None]


class _Inline(asyncio.Queue[Msg]):
    """Stands in for nats-py's per-subscription queue: a message is handled as it is parsed.

    nats-py (pinned) hands every message of a callback subscription to a task of its own through an
    `asyncio.Queue`: a loop turn, a task switch and a queue round per message, on every hop of a
    chain. Here `put_nowait`, which nats-py's `_process_msg` calls, runs the handler at once. When
    the handler returns an awaitable (the rare paths that must wait: a nak, a dead letter), the
    messages after it are queued, as nats-py would, and handled in order by a task once it is done;
    `qsize()`, `join()` and `Subscription.drain()` keep their meaning. A handler's exception is
    logged: it must not reach nats-py's parser, which would drop the connection.
    """

    def __init__(self, sub: Subscription, handler: MessageHandler) -> None:
        super().__init__()
        self._sub = sub
        self._handler = handler
        self._behind: asyncio.Task[None] | None = None  # handles what waits behind an awaitable

    def put_nowait(self, item: Msg) -> None:
        if self._behind is not None:
            super().put_nowait(item)
            return
        pending = self._run(item)
        if pending is not None:
            self._behind = asyncio.get_running_loop().create_task(self._catch_up(pending))

    def _run(self, msg: Msg) -> Awaitable[None] | None:
        self._sub._pending_size -= len(msg.data)  # (nats-py counted it in; its task took it out)
        try:
            return self._handler(msg)
        except Exception:
            log.exception("message handler failed on %s", msg.subject)
            return None

    async def _catch_up(self, pending: Awaitable[None]) -> None:
        queued = False  # whether `pending` is the handling of a message taken from the queue
        try:
            while True:
                try:
                    await pending
                except Exception:
                    log.exception("message handler failed")
                if queued:
                    self.task_done()
                while True:
                    if self.empty():
                        return
                    later = self._run(self.get_nowait())
                    if later is not None:
                        pending, queued = later, True
                        break
                    self.task_done()
        finally:
            self._behind = None


async def subscribe_inline(nc: Client, subject: str, handler: MessageHandler) -> Subscription:
    """A subscription whose messages go to `handler` from the client's read loop (`_Inline`).

    Uses nats-py's `Subscription._pending_queue` and `_wait_for_msgs_task` (pinned nats-py): the
    queue is replaced and the task that read the old one is stopped before any message arrives
    (the SUB is written after this returns, at the flusher's next turn)."""

    async def unused(msg: Msg) -> None:  # nats-py wants a coroutine function; never called
        raise AssertionError("inline subscription")

    sub = await nc.subscribe(subject, cb=unused, pending_msgs_limit=-1, pending_bytes_limit=-1)
    sub._pending_queue = _Inline(sub, handler)
    task = sub._wait_for_msgs_task
    if task is not None:
        task.cancel()
    return sub


async def quietly(pending: Awaitable[None]) -> None:
    """Await `pending`, ignoring its failure (a nak or an ack of a message the server redelivers
    anyway)."""
    with contextlib.suppress(Exception):
        await pending


def parsed_all(nc: Client) -> bool:
    """Whether nats-py's parser has handed out everything it read (called from an inline handler:
    this message is the last of what arrived together). Reads its buffer (pinned nats-py)."""
    return not nc._ps.buf


# ---------------------------------------------------------------------------------------- publisher

# JetStream's error code for a publish whose `Nats-Expected-Last-Subject-Sequence` does not hold
WRONG_LAST_SEQUENCE = 10071


@dataclass(frozen=True, slots=True)
class PublishError:
    """Why the server refused a message for good; `err_code` is JetStream's (e.g. WRONG_LAST_SEQUENCE)."""

    description: str
    err_code: int = 0

    def __str__(self) -> str:
        return self.description


# May return something to await (a coroutine function's call does): messages after it wait for it.
DoneCallback = Callable[[PublishError | None], Awaitable[None] | None]

_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


_header_keys: dict[str, str | None] = {}  # a header name -> as written (None: left out)


def pub_command(
    subject: str, reply: str, payload: bytes, headers: dict[str, str] | None, msg_id: str = ""
) -> bytes:
    """The client protocol's PUB (HPUB with headers) for a message, as nats-py writes it;
    `msg_id` goes as its `Nats-Msg-Id` header, after `headers`."""
    space = " " if reply else ""
    if not headers and not msg_id:
        return f"PUB {subject} {reply}{space}{len(payload)}\r\n".encode() + payload + b"\r\n"
    lines = ["NATS/1.0\r\n"]
    for key, value in (headers or {}).items():
        name = _header_keys.get(key)
        if name is None and key not in _header_keys:
            stripped = key.strip()
            # (ours, and a trace context's: a bad one is left out)
            name = stripped if _HEADER_KEY.fullmatch(stripped) else None
            if len(_header_keys) < 256:
                _header_keys[key] = name
        if name is not None:
            lines.append(f"{name}: {_header_value(value)}\r\n")
    if msg_id:
        lines.append(f"{MSG_ID}: {_header_value(msg_id)}\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode()
    return (f"HPUB {subject} {reply}{space}{len(head)} {len(head) + len(payload)}\r\n".encode()
            + head + payload + b"\r\n")


def _header_value(value: str) -> str:
    value = value.strip()
    return value.translate(_HEADER_VALUE_NEWLINES) if "\r" in value or "\n" in value else value


def write_commands(nc: Client, commands: list[bytes], count: int, size: int) -> bool:
    """Write protocol commands (`count` messages of `size` payload bytes) to the connection now, from
    synchronous code: no turn of nats-py's flusher task. After what nats-py has buffered, if anything
    (its own order kept). False when not connected: nothing was written.

    nats-py (pinned) has no synchronous publish; this uses its buffer and transport the way its own
    `_flusher` does. What a dropped connection swallows is lost as it would be from nats-py's buffer:
    the callers re-send (a message id) or re-publish what nothing confirmed."""
    if not nc.is_connected:
        return False
    stats = nc.stats
    stats["out_msgs"] += count
    stats["out_bytes"] += size
    pending: list[bytes] = nc._pending
    if pending:  # nats-py's flusher writes them, after its own, at its next turn
        pending.extend(commands)
        nc._pending_data_size += sum(len(c) for c in commands)
        kick = nc._flush_queue
        if kick is not None and kick.empty():
            kick.put_nowait(asyncio.get_running_loop().create_future())
        return True
    transport = nc._transport
    assert transport is not None
    try:
        transport.writelines(commands)
    except Exception as exc:  # a transport closing under us: as if the connection dropped
        log.debug("write failed (%s)", describe(exc))
        return False
    return True


@dataclass(slots=True, eq=False)
class _Out:
    subject: str
    payload: bytes
    msg_id: str
    on_done: DoneCallback | None  # None: a `send`, no reply asked for
    token: str  # "" for a `send`
    created: float  # monotonic
    headers: dict[str, str] | None = None  # sent with the message, besides Nats-Msg-Id
    sent: float = 0.0  # monotonic; 0 while never sent
    tries: int = 0
    queued: bool = False


class Publisher:
    """JetStream publishes, pipelined, each re-sent (same `Nats-Msg-Id`) until the server stores it.

    `publish` queues a message, written at the end of the loop turn (or at once by `write()`, for an
    owner that is done for now); `on_done(None)` runs once the message is stored (or recognised as
    a duplicate), `on_done(error)` when the server refuses it for good (too large, an expectation
    in its headers that does not hold, ...). An unavailable server or a missing stream is waited
    out: the owner calls `sweep()` periodically (and `sweep(resend_all=True)` + `kick()` after a
    reconnect). `send` publishes once, asking for no reply. `ack` acknowledges consumed messages
    with the next write.

    Writes go to the socket from the caller's code (`write_commands`): no writer task to wake, no
    turn of nats-py's flusher task.
    """

    def __init__(
        self, nc: Client, *, ack_timeout: float = 2.0, ack_delay: float = 0.002, ack_hold: bool = False
    ) -> None:
        self._nc = nc
        self._ack_timeout = ack_timeout
        self._ack_delay = ack_delay
        self._ack_hold = ack_hold
        self._acks: list[str] = []  # reply subjects of consumed messages, acknowledged with the next write
        self._ack_timer: asyncio.TimerHandle | None = None
        self._queue: collections.deque[_Out] = collections.deque()
        self._inflight: dict[str, _Out] = {}  # every message not stored yet, oldest first
        self._seq = 0
        self._inbox = ""
        self._prefix_len = 0
        self._sub: Subscription | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._soon: asyncio.Handle | None = None  # the end-of-turn write, once scheduled
        self._refused: set[asyncio.Future[None]] = set()  # on_done callbacks of messages too large
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox = self._nc.new_inbox()
        self._prefix_len = len(self._inbox) + 1
        self._sub = await subscribe_inline(self._nc, self._inbox + ".*", self._on_reply)

    async def close(self) -> None:
        self.write(messages=False, held=True)  # (messages not written yet are dropped: the owner closes)
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._queue.clear()
        self._inflight.clear()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Messages not stored yet."""
        return len(self._inflight)

    async def wait_idle(self) -> None:
        """Until every message published so far is stored (or refused)."""
        await self._idle.wait()

    def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        on_done: DoneCallback,
        headers: dict[str, str] | None = None,
        *,
        soon: bool = True,
    ) -> None:
        """Queue a message, written at the end of this loop turn (`soon`) or by the caller's
        `write()` before it returns to the loop."""
        self._seq += 1
        out = _Out(subject, payload, msg_id, on_done, str(self._seq), time.monotonic(), headers)
        self._inflight[out.token] = out
        self._idle.clear()
        self._enqueue(out, soon)

    def send(self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None) -> None:
        """Publish once, without asking for the server's acknowledgement (one wake-up less for this
        process and one write less for the server). Nothing says whether it was stored: the caller
        must learn that another way and `publish` it (same `msg_id`: not stored twice) otherwise."""
        self._enqueue(_Out(subject, payload, msg_id, None, "", 0.0, headers))

    def ack(self, msg: Msg) -> None:
        """Acknowledge a consumed JetStream message with the next write, or within `ack_delay`.

        An acknowledgement on its own costs a write (a system call, a wake-up of the server) per
        message; riding along with the next publish, it costs nothing more. Until it arrives the
        server keeps the message, and delivers it again only after the consumer's ack_wait.

        With `ack_hold`, the newest acknowledgement waits for a newer one (or `ack_delay`): a
        stream whose last message is acknowledged is empty, and nats-server's file store then
        deletes the block file and creates a new one, a fifth of the server's CPU in a chain of
        tasks. One message kept back keeps the block.
        """
        if msg.reply:
            self._acks.append(msg.reply)
            if self._ack_timer is None:
                loop = self._loop or asyncio.get_running_loop()
                self._ack_timer = loop.call_later(self._ack_delay, self._acks_due)

    def _acks_due(self) -> None:
        self._ack_timer = None
        self.write(held=True)

    def _enqueue(self, out: _Out, soon: bool = True) -> None:
        if not out.queued:
            out.queued = True
            self._queue.append(out)
            if soon and self._soon is None:
                loop = self._loop or asyncio.get_running_loop()
                self._soon = loop.call_soon(self.write)

    def sweep(self, *, resend_all: bool = False) -> None:
        """Re-send what was not acknowledged in time (everything sent, after a reconnect)."""
        now = time.monotonic()
        for out in self._inflight.values():
            if not resend_all and now - out.created <= self._ack_timeout:
                break  # younger ones cannot have timed out yet
            if out.sent and not out.queued:
                timeout = min(self._ack_timeout * 2 ** max(out.tries - 1, 0), 10.0)
                if resend_all or now - out.sent > timeout:
                    self._enqueue(out)

    def kick(self) -> None:
        """Resume sending (after the connection came back)."""
        if self._queue or self._acks:
            self.write(held=True)

    def write(self, *, messages: bool = True, held: bool = False) -> None:
        """Write what is queued (`messages`) and the acknowledgements waiting (the one held back
        too: `held`), now, in one write."""
        if messages and self._soon is not None:
            self._soon.cancel()
            self._soon = None
        nc = self._nc
        if not nc.is_connected:
            return  # kept: `kick()` writes it once the connection is back
        commands: list[bytes] = []
        size = self._commands(commands) if messages else 0
        count = len(commands)
        acks = self._acks
        if acks:
            keep = 1 if self._ack_hold and not held else 0
            if len(acks) > keep:
                commands.extend(f"PUB {reply} 0\r\n\r\n".encode() for reply in acks[: len(acks) - keep])
                count += len(acks) - keep
                del acks[: len(acks) - keep]
            if not acks and self._ack_timer is not None:
                self._ack_timer.cancel()
                self._ack_timer = None
        if commands and not write_commands(nc, commands, count, size):
            # not written (the connection dropped meanwhile): the sweep re-sends what asked for a
            # reply, the owner re-publishes what it cannot confirm, and unacknowledged messages
            # are delivered again after ack_wait
            log.debug("%d message(s) not written: connection lost", count)

    def _commands(self, commands: list[bytes]) -> int:
        """The queued messages' commands appended to `commands`; their payload bytes."""
        size = 0
        now = time.monotonic()
        inbox = self._inbox
        limit = self._nc.max_payload
        for out in self._queue:
            out.queued = False
            if out.token and out.token not in self._inflight:
                continue  # acknowledged while it waited to be re-sent
            if limit and len(out.payload) > limit:  # the server would close the connection
                self._refuse(out, f"{len(out.payload)} bytes, more than the server's max_payload {limit}")
                continue
            if out.token:
                out.sent = now
                out.tries += 1
            commands.append(pub_command(out.subject, f"{inbox}.{out.token}" if out.token else "",
                                        out.payload, out.headers, out.msg_id))
            size += len(out.payload)
        self._queue.clear()
        return size

    def _refuse(self, out: _Out, reason: str) -> None:
        log.error("not published to %s: %s", out.subject, reason)
        if not out.token or self._inflight.pop(out.token, None) is None:
            return
        if not self._inflight:
            self._idle.set()
        assert out.on_done is not None
        pending = out.on_done(PublishError(reason))
        if pending is not None:
            task: asyncio.Future[None] = asyncio.ensure_future(pending)
            self._refused.add(task)
            task.add_done_callback(self._refused.discard)

    def _on_reply(self, msg: Msg) -> Awaitable[None] | None:
        out = self._inflight.get(msg.subject[self._prefix_len :])
        if out is None:
            return None  # a reply to a re-sent message that was acknowledged already
        headers = msg.headers
        if headers and headers.get("Status") == "503":
            return None  # no stream (yet): the sweep re-sends after the timeout
        error: PublishError | None = None
        data = msg.data
        if b'"error"' in data:
            try:
                body = json.loads(data)
                err = body.get("error") or {}
                code = int(err.get("code", 0))
                description = str(err.get("description", "unknown error"))
                error = PublishError(description, int(err.get("err_code", 0)))
            except (ValueError, TypeError, AttributeError):
                code, error = 500, PublishError(f"unreadable reply {data[:200]!r}")
            if code >= 500:
                log.debug("transient publish error on %s: %s", out.subject, error)
                return None  # the sweep re-sends
        del self._inflight[out.token]
        if not self._inflight:
            self._idle.set()
        assert out.on_done is not None
        return out.on_done(error)  # (an exception is logged by the subscription's delivery)


# ------------------------------------------------------------------------------------------- puller


class Puller:
    """A continuous pull consumer: keeps pull requests out for as many messages as `free()` allows.

    Delivered messages go to `handler` one at a time, from the client's read loop (`subscribe_inline`:
    what it returns is awaited before the next), each followed by `on_handled(drained)`: `drained`
    after the last of those that arrived together (nothing more is waiting to be handled).
    Credits: every delivered message uses one (of the oldest request: the server serves requests
    in order); a request that expires (408) or is refused (409, 503) gives back what it did not
    deliver. After a reconnect, or when `ensure` re-creates a missing consumer, the accounting
    starts over (the server forgot our requests).
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        handler: MessageHandler,
        free: Callable[[], int],
        *,
        ensure: Callable[[], Awaitable[None]],
        expires: float = 5.0,
        min_batch: int = 1,
        on_handled: Callable[[bool], None] | None = None,
    ) -> None:
        self._nc = nc
        self._next = f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._handler = handler
        self._free = free
        self._ensure = ensure
        self._expires = expires
        self._min_batch = max(1, min_batch)
        self._on_handled = on_handled
        self._credits = 0
        # token -> [messages still due, expires at (monotonic)], oldest first
        self._requests: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._seq = 0
        self._inbox = ""
        self._prefix_len = 0
        self._sub: Subscription | None = None
        self._broken_since: float | None = None
        self._next_ensure = 0.0
        self.paused = False

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._prefix_len = len(self._inbox) + 1
        self._sub = await subscribe_inline(self._nc, self._inbox + ".*", self._on_msg)
        self.top_up()

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def stop_pulling(self) -> None:
        """Ask for nothing more and give up interest: the server skips our waiting requests.

        Messages already on their way still reach the handler (which should hand them back).
        """
        self.paused = True
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                async with asyncio.timeout(5):
                    await sub.drain()  # type: ignore[no-untyped-call]
            except Exception:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def reset(self) -> None:
        """Forget outstanding requests (the server forgot them: reconnect, consumer re-created)."""
        self._credits = 0
        self._requests.clear()

    def top_up(self) -> None:
        """Ask for more messages if free slots exceed what is already asked for (written now)."""
        if self.paused or self._sub is None or self._broken_since is not None or not self._nc.is_connected:
            return
        want = self._free() - self._credits
        if want <= 0 or (want < self._min_batch and self._credits > 0):
            return
        self._seq += 1
        token = str(self._seq)
        self._requests[token] = [want, time.monotonic() + self._expires]
        self._credits += want
        request = json.dumps({"batch": want, "expires": int(self._expires * 1e9)}).encode()
        command = pub_command(self._next, f"{self._inbox}.{token}", request, None)
        if not write_commands(self._nc, [command], 1, len(request)):
            log.debug("pull request not written: connection lost")
            self._end_request(token, None)

    async def maintain(self, *, reconnected: bool = False) -> None:
        """Periodic: expire forgotten requests, re-create a missing consumer, top up."""
        now = time.monotonic()
        if reconnected:
            self.reset()
        elif self._requests:
            for token, (_, expires_at) in list(self._requests.items()):
                if now > expires_at + 2.0:  # its 408 never came (lost in a disconnect)
                    self._end_request(token, None)
        if self._broken_since is not None and now >= self._next_ensure:
            try:
                await self._ensure()
            except AttuneError as exc:
                self._next_ensure = now + min(0.25 * 2 ** min(int(now - self._broken_since), 4), 5.0)
                log.debug("consumer still unavailable: %s", exc)
            else:
                log.info("consumer available again")
                self._broken_since = None
                self.reset()
        self.top_up()

    def _end_request(self, token: str, unused: int | None) -> None:
        entry = self._requests.pop(token, None)
        if unused is None:
            unused = int(entry[0]) if entry is not None else 0
        self._credits = max(0, self._credits - unused)

    def _on_msg(self, msg: Msg) -> Awaitable[None] | None:
        headers = msg.headers
        if headers is not None and not msg.reply and "Status" in headers:
            self._on_status(msg, headers)
            return None
        if self._credits > 0:
            self._credits -= 1
        if self._requests:
            token, entry = next(iter(self._requests.items()))
            entry[0] -= 1
            if entry[0] <= 0:
                del self._requests[token]
        try:
            pending = self._handler(msg)
        except Exception:
            log.exception("message handler failed on %s", msg.subject)
            pending = None
        if pending is not None:
            return self._handled_after(pending)
        self._handled()
        return None

    async def _handled_after(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception:
            log.exception("message handler failed")
        self._handled()

    def _handled(self) -> None:
        if self._on_handled is not None:  # (first: the owner's answers before a pull request)
            sub = self._sub
            try:
                self._on_handled(sub is not None and not sub.pending_msgs and parsed_all(self._nc))
            except Exception:
                log.exception("after-delivery hook failed")
        if self._free() - self._credits >= self._min_batch:
            self.top_up()

    def _on_status(self, msg: Msg, headers: dict[str, str]) -> None:
        status = headers.get("Status", "")
        if status == "100":
            return  # idle heartbeat / flow control
        token = msg.subject[self._prefix_len :]
        pending = headers.get("Nats-Pending-Messages")
        unused: int | None = None
        if pending is not None:
            with contextlib.suppress(ValueError):
                unused = int(pending)
        self._end_request(token, unused)
        description = headers.get("Description", "").strip()
        if status == "503" or (status == "409" and "deleted" in description.lower()):
            if self._broken_since is None:
                log.warning("consumer unavailable (%s %s); will re-create it", status, description)
                self._broken_since = time.monotonic()
                self._next_ensure = time.monotonic() + 0.25
        elif status in ("404", "408"):
            self.top_up()
        elif status != "409":  # 409s (limits, leadership change, shutdown): the next maintain tops up
            log.warning("unexpected pull status %s %s", status, description)
