"""JetStream plumbing shared by engines and workers: the streams, durable consumers, a reliable
publisher and a continuous pull consumer.

- The runs stream (`Subjects.runs_stream`, retention WORK_QUEUE: each attempt is taken by one worker)
  carries attempts from engines to workers; the results stream keeps outcomes until their engine's
  durable consumer has taken them. `ensure_streams`/`ensure_consumer` create them when missing.
- `Publisher`: JetStream publishes, pipelined, each re-sent with the same `Nats-Msg-Id` until the
  server stores it (the server keeps one copy); and `send`s, which ask for no reply (the owner
  finds out another way whether they were stored, and re-publishes those it cannot confirm).
- `Puller`: keeps pull requests out for as many messages as its owner has room for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
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


DoneCallback = Callable[[PublishError | None], Awaitable[None]]


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

    `publish` only queues; a writer task sends while connected. `on_done(None)` runs once the
    message is stored (or recognised as a duplicate), `on_done(error)` when the server refuses it for
    good (too large, an expectation in its headers that does not hold, ...). An unavailable server
    or a missing stream is waited out: the owner calls `sweep()` periodically (and
    `sweep(resend_all=True)` + `kick()` after a reconnect). `send` publishes once, asking for no
    reply. `ack` acknowledges consumed messages with the next write. `flush()` writes what is
    queued from the caller's task, for an owner that is awake anyway.
    """

    def __init__(self, nc: Client, *, ack_timeout: float = 2.0, ack_delay: float = 0.002) -> None:
        self._nc = nc
        self._ack_timeout = ack_timeout
        self._ack_delay = ack_delay
        self._acks: list[str] = []  # reply subjects of consumed messages, acknowledged with the next write
        self._ack_timer: asyncio.TimerHandle | None = None
        self._queue: collections.deque[_Out] = collections.deque()
        self._inflight: dict[str, _Out] = {}  # every message not stored yet, oldest first
        self._seq = 0
        self._inbox = ""
        self._prefix_len = 0
        self._sub: Subscription | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._prefix_len = len(self._inbox) + 1
        self._sub = await self._nc.subscribe(
            self._inbox + ".*", cb=self._on_reply, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        self._writer = asyncio.get_running_loop().create_task(self._write(), name="nats publisher")

    async def close(self) -> None:
        await self._send_acks()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
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
        write: bool = True,
    ) -> None:
        """Queue a message; the writer task sends it (`write=False`: the caller awaits `flush()` next)."""
        self._seq += 1
        out = _Out(subject, payload, msg_id, on_done, str(self._seq), time.monotonic(), headers)
        self._inflight[out.token] = out
        self._idle.clear()
        self._enqueue(out, wake=write)

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
        """
        if msg.reply:
            self._acks.append(msg.reply)
            if self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(self._ack_delay, self._wake.set)

    async def _send_acks(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        acks, self._acks = self._acks, []
        for reply in acks:
            try:
                await self._nc.publish(reply)
            except Exception as exc:  # not acknowledged: the server delivers it again after ack_wait
                log.debug("acknowledgement not sent (%s)", describe(exc))

    def _enqueue(self, out: _Out, *, wake: bool = True) -> None:
        if not out.queued:
            out.queued = True
            self._queue.append(out)
            if wake:
                self._wake.set()

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
        if self._queue:
            self._wake.set()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send what is queued (and the acknowledgements waiting) now, from the caller's task: the
        writer task's turn is saved when the caller is awake anyway."""
        nc = self._nc
        while self._queue and nc.is_connected:
            out = self._queue.popleft()
            out.queued = False
            if out.token:
                if out.token not in self._inflight:
                    continue  # acknowledged while it waited to be re-sent
                out.sent = time.monotonic()
                out.tries += 1
            try:
                await nc.publish(
                    out.subject, out.payload, reply=f"{self._inbox}.{out.token}" if out.token else "",
                    headers={MSG_ID: out.msg_id} if out.headers is None
                    else {**out.headers, MSG_ID: out.msg_id},
                )
            except Exception as exc:  # buffer full while reconnecting, closed: the sweep re-sends
                log.debug("publish to %s failed (%s); will retry", out.subject, describe(exc))
        if self._acks and nc.is_connected:
            await self._send_acks()

    async def _on_reply(self, msg: Msg) -> None:
        out = self._inflight.get(msg.subject[self._prefix_len :])
        if out is None:
            return  # a reply to a re-sent message that was acknowledged already
        headers = msg.headers
        if headers and headers.get("Status") == "503":
            return  # no stream (yet): the sweep re-sends after the timeout
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
                return  # the sweep re-sends
        del self._inflight[out.token]
        if not self._inflight:
            self._idle.set()
        assert out.on_done is not None
        try:
            await out.on_done(error)
        except Exception:
            log.exception("publish callback failed")


# ------------------------------------------------------------------------------------------- puller

MessageHandler = Callable[[Msg], Awaitable[None]]


class Puller:
    """A continuous pull consumer: keeps pull requests out for as many messages as `free()` allows.

    Delivered messages go to `handler` one at a time, and `on_drained()` follows the last of those
    that arrived together (nothing more is waiting to be handled). Credits: every delivered message
    uses one (of the oldest request: the server serves requests in order); a request that expires
    (408) or is refused (409, 503) gives back what it did not deliver. After a reconnect, or when
    `ensure` re-creates a missing consumer, the accounting starts over (the server forgot our
    requests).
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
        on_drained: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._nc = nc
        self._next = f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._handler = handler
        self._free = free
        self._ensure = ensure
        self._expires = expires
        self._min_batch = max(1, min_batch)
        self._on_drained = on_drained
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
        self._sub = await self._nc.subscribe(
            self._inbox + ".*", cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        await self.top_up()

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

    async def top_up(self) -> None:
        """Ask for more messages if free slots exceed what is already asked for."""
        if self.paused or self._sub is None or self._broken_since is not None or not self._nc.is_connected:
            return
        want = self._free() - self._credits
        if want <= 0 or (want < self._min_batch and self._credits > 0):
            return
        self._seq += 1
        token = str(self._seq)
        self._requests[token] = [want, time.monotonic() + self._expires]
        self._credits += want
        request = {"batch": want, "expires": int(self._expires * 1e9)}
        try:
            await self._nc.publish(self._next, json.dumps(request).encode(), reply=f"{self._inbox}.{token}")
        except Exception as exc:
            log.debug("pull request failed: %s", describe(exc))
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
        await self.top_up()

    def _end_request(self, token: str, unused: int | None) -> None:
        entry = self._requests.pop(token, None)
        if unused is None:
            unused = int(entry[0]) if entry is not None else 0
        self._credits = max(0, self._credits - unused)

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if headers is not None and not msg.reply and "Status" in headers:
            await self._on_status(msg, headers)
            return
        if self._credits > 0:
            self._credits -= 1
        if self._requests:
            token, entry = next(iter(self._requests.items()))
            entry[0] -= 1
            if entry[0] <= 0:
                del self._requests[token]
        try:
            await self._handler(msg)
        except Exception:
            log.exception("message handler failed on %s", msg.subject)
        if self._free() - self._credits >= self._min_batch:
            await self.top_up()
        sub = self._sub
        if self._on_drained is not None and sub is not None and not sub.pending_msgs:
            try:
                await self._on_drained()  # the last of what arrived together: answer them now
            except Exception:
                log.exception("after-delivery hook failed")

    async def _on_status(self, msg: Msg, headers: dict[str, str]) -> None:
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
            await self.top_up()
        elif status != "409":  # 409s (limits, leadership change, shutdown): the next maintain tops up
            log.warning("unexpected pull status %s %s", status, description)
