"""The NATS transport: attempts go to worker processes through a JetStream work queue; outcomes come back.

Engine side (`NatsTransport`, behind the `Transport` interface):

- `submit` publishes the attempt to `Subjects.runs(pack, runner_type)` on the runs stream (retention
  WORK_QUEUE: each attempt is taken by one worker) with `Nats-Msg-Id: <run key>@<incarnation>`. A
  publish that is not acknowledged (server down, restarting) is re-sent with the same id until it is
  stored, and the server keeps one copy. (The incarnation is random per transport: an engine that
  restarts and recovers an execution re-dispatches its unfinished attempt for real, instead of having
  it dropped as a duplicate of the copy a worker may already have taken and lost.) `submit` never
  waits: a writer task pipelines the publishes.
- Workers report `started` and `ended` events, batched, on `Subjects.results(engine_id)`; the results
  stream keeps them until this engine's durable consumer has taken and acknowledged them, so an
  outcome survives a disconnect of the engine or of the worker, and a server restart. `start`
  returns once what was waiting there has been taken.
- Outcomes are applied once: an event for an attempt this engine does not have in flight (finished,
  abandoned, duplicate) is ignored. A real outcome (not `canceled`/`abandoned`) that arrives before
  its attempt is submitted (an engine restarted with the same id) is kept a minute and applied at
  submit without dispatching again; an attempt a worker's heartbeat says it still runs is not
  dispatched again either.
- Liveness: workers publish heartbeats (`Subjects.heartbeats`) listing the attempts they hold, from
  taking one until its outcome is stored. An attempt whose worker is silent for `heartbeat_timeout`
  seconds (while this engine is connected: after an outage of its own every worker gets a fresh
  timeout), or whose worker has stopped listing it for that long, ends `abandoned`, which the
  conductor retries per the task's retry policy. An attempt no worker started by its deadline (plus
  `heartbeat_timeout`) ends `timeout`.
- `cancel` sends the attempt's key to `Subjects.cancel(worker)` of the worker that started it; for an
  attempt not started yet the request is kept and sent when its `started` event arrives, and it is
  repeated while the worker's heartbeats still list the attempt.
- `close` stops listening; attempts out on workers are not stopped by it (the engine's task actors
  cancel theirs when they stop).

The pieces shared with the worker (stream and consumer set-up, the reliable publisher, the continuous
pull consumer) live here too. Wire formats (msgpack, see `codec`):

    dispatch  {"v": 1, "engine": id, "runner": runner_type, "sent": epoch, "run": {ActionRun fields}}
    results   [1, worker_id, event...]  event: ["s", key, started_at] | ["e", key, started_at,
              status, result, error]
    heartbeat {"v": 1, "worker": id, "pid": n, "interval": s, "concurrency": n, "draining": bool,
               "running": {engine_id: [key, ...]}}
    cancel    {"v": 1, "keys": [key, ...]}

Bad input on any of these subjects is logged, recorded on `Subjects.dead_letters` and announced as
an `error` event on `Subjects.service_events` (JSON, the control service's format); a dispatch that
names its engine and attempt also gets a `failed` outcome back. Parameters travel in clear text
(decrypted secrets included): protect the runs subjects with NATS permissions and TLS.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError as JsNotFoundError

from attune_actors import codec
from attune_actors.errors import AttuneError, TransportError
from attune_actors.nats.subjects import Subjects, _token
from attune_actors.spec.model import ActionSpec
from attune_actors.statuses import TERMINAL
from attune_actors.transport.base import ActionRun, OutcomeCallback, RunOutcome, Transport

log = logging.getLogger("attune_actors.nats.transport")

PROTOCOL = 1
MSG_ID = "Nats-Msg-Id"
JS_API = "$JS.API"
MAX_MSG_SIZE = 1024 * 1024  # bytes; the stream's max_msg_size and the default server max_payload
DEAD_LETTER_SAMPLE = 1024
STARTED, ENDED = "s", "e"
RUN_FIELDS = ("execution_id", "run_id", "item", "attempt", "task", "action", "parameters", "deadline")


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
                    raise TransportError(f"cannot create stream {config.name}: {_describe(exc)}") from None
            continue
        except Exception as exc:
            raise TransportError(f"cannot read stream {config.name}: {_describe(exc)}") from None
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
        raise TransportError(f"cannot read consumer {config.durable_name}: {_describe(exc)}") from None
    try:
        await js.add_consumer(stream, config)
    except Exception as exc:
        raise TransportError(
            f"cannot create consumer {config.durable_name} on {stream}: {_describe(exc)}"
        ) from None


def _describe(exc: BaseException) -> str:
    description = getattr(exc, "description", None)
    return str(description or exc or type(exc).__name__)


# ------------------------------------------------------------------------------------- connection


class ConnectionWatch:
    """Notices a connection that came back (reconnects counter moved, or was down at the last look)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._reconnects = nc.stats["reconnects"]
        self.connected = nc.is_connected

    def poll(self) -> bool:
        """True once after each return of the connection."""
        connected = self._nc.is_connected
        reconnects = self._nc.stats["reconnects"]
        came_back = connected and (reconnects != self._reconnects or not self.connected)
        self._reconnects, self.connected = reconnects, connected
        return came_back


# ---------------------------------------------------------------------------------------- publisher

DoneCallback = Callable[[str | None], Awaitable[None]]


@dataclass(slots=True, eq=False)
class _Out:
    subject: str
    payload: bytes
    msg_id: str
    on_done: DoneCallback
    token: str
    created: float  # monotonic
    sent: float = 0.0  # monotonic; 0 while never sent
    tries: int = 0
    queued: bool = False


class Publisher:
    """JetStream publishes, pipelined, each re-sent (same `Nats-Msg-Id`) until the server stores it.

    `publish` only queues; a writer task sends while connected. `on_done(None)` runs once the
    message is stored (or recognised as a duplicate), `on_done(error)` when the server refuses it for
    good (too large, ...). An unavailable server or a missing stream is waited out: the owner calls
    `sweep()` periodically (and `sweep(resend_all=True)` + `kick()` after a reconnect).
    """

    def __init__(self, nc: Client, *, ack_timeout: float = 2.0) -> None:
        self._nc = nc
        self._ack_timeout = ack_timeout
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

    def publish(self, subject: str, payload: bytes, msg_id: str, on_done: DoneCallback) -> None:
        self._seq += 1
        out = _Out(subject, payload, msg_id, on_done, str(self._seq), time.monotonic())
        self._inflight[out.token] = out
        self._idle.clear()
        self._enqueue(out)

    def _enqueue(self, out: _Out) -> None:
        if not out.queued:
            out.queued = True
            self._queue.append(out)
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
        nc = self._nc
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and nc.is_connected:
                out = self._queue.popleft()
                out.queued = False
                if out.token not in self._inflight:
                    continue  # acknowledged while it waited to be re-sent
                out.sent = time.monotonic()
                out.tries += 1
                try:
                    await nc.publish(
                        out.subject, out.payload, reply=f"{self._inbox}.{out.token}",
                        headers={MSG_ID: out.msg_id},
                    )
                except Exception as exc:  # buffer full while reconnecting, closed: the sweep re-sends
                    log.debug("publish to %s failed (%s); will retry", out.subject, _describe(exc))

    async def _on_reply(self, msg: Msg) -> None:
        out = self._inflight.get(msg.subject[self._prefix_len :])
        if out is None:
            return  # a reply to a re-sent message that was acknowledged already
        headers = msg.headers
        if headers and headers.get("Status") == "503":
            return  # no stream (yet): the sweep re-sends after the timeout
        error: str | None = None
        data = msg.data
        if b'"error"' in data:
            try:
                body = json.loads(data)
                err = body.get("error") or {}
                code = int(err.get("code", 0))
                description = str(err.get("description", "unknown error"))
            except (ValueError, TypeError, AttributeError):
                code, description = 500, f"unreadable reply {data[:200]!r}"
            if code >= 500:
                log.debug("transient publish error on %s: %s", out.subject, description)
                return  # the sweep re-sends
            error = description
        del self._inflight[out.token]
        if not self._inflight:
            self._idle.set()
        try:
            await out.on_done(error)
        except Exception:
            log.exception("publish callback failed")


# ------------------------------------------------------------------------------------------- puller

MessageHandler = Callable[[Msg], Awaitable[None]]


class Puller:
    """A continuous pull consumer: keeps pull requests out for as many messages as `free()` allows.

    Delivered messages go to `handler` one at a time. Credits: every delivered message uses one (of
    the oldest request: the server serves requests in order); a request that expires (408) or is
    refused (409, 503) gives back what it did not deliver. After a reconnect, or when `ensure`
    re-creates a missing consumer, the accounting starts over (the server forgot our requests).
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
    ) -> None:
        self._nc = nc
        self._next = f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._handler = handler
        self._free = free
        self._ensure = ensure
        self._expires = expires
        self._min_batch = max(1, min_batch)
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
            log.debug("pull request failed: %s", _describe(exc))
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


# ------------------------------------------------------------------------------------- bad input


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def report_bad_input(
    nc: Client, subjects: Subjects, msg: Msg, code: str, reason: str, **who: str
) -> None:
    """Log, leave a dead-letter record and an `error` event (never raises)."""
    log.error("bad message on %s: %s", msg.subject, reason)
    data = msg.data or b""
    when = now_iso()
    record = {
        "subject": msg.subject,
        "reason": reason,
        "code": code,
        "size": len(data),
        "payload": data[:DEAD_LETTER_SAMPLE].decode("utf-8", errors="replace"),
        "truncated": len(data) > DEAD_LETTER_SAMPLE,
        "time": when,
        **who,
    }
    event = {"type": "error", "code": code, "message": reason, "subject": msg.subject, "time": when}
    try:
        await nc.publish(subjects.dead_letters, json.dumps(record, separators=(",", ":")).encode())
        await nc.publish(subjects.service_events, json.dumps(event, separators=(",", ":")).encode())
    except Exception as exc:
        log.warning("cannot record dead letter: %s", _describe(exc))


class BadMessage(Exception):
    """A message that does not have the expected shape; `engine`/`key` when they could be read."""

    def __init__(self, reason: str, *, engine: str | None = None, key: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.engine = engine
        self.key = key


def encode_dispatch(engine_id: str, run: ActionRun, runner_type: str) -> bytes:
    return codec.encode(
        {
            "v": PROTOCOL,
            "engine": engine_id,
            "runner": runner_type,
            "sent": time.time(),
            "run": {
                "execution_id": run.execution_id,
                "run_id": run.run_id,
                "item": run.item,
                "attempt": run.attempt,
                "task": run.task,
                "action": run.action,
                "parameters": run.parameters,
                "deadline": run.deadline,
            },
        }
    )


def decode_dispatch(data: bytes) -> tuple[str, ActionRun]:
    """(engine id, attempt) from a dispatch message; BadMessage naming what is wrong."""
    try:
        body = codec.decode(data)
    except AttuneError:
        raise BadMessage("not a msgpack document") from None
    if not isinstance(body, dict):
        raise BadMessage(f"a dispatch must be a map, not {type(body).__name__}")
    engine = body.get("engine")
    if not isinstance(engine, str) or not engine:
        raise BadMessage("dispatch without an engine id")
    run = body.get("run")
    key: str | None = None
    if isinstance(run, dict):
        with contextlib.suppress(Exception):
            if isinstance(run.get("run_id"), str) and isinstance(run.get("attempt"), int):
                item = run.get("item")
                key = f"{run['run_id']}/{'' if item is None else item}/{run['attempt']}"
    if body.get("v") != PROTOCOL:
        raise BadMessage(f"unknown dispatch version {body.get('v')!r}", engine=engine, key=key)
    if not isinstance(run, dict):
        raise BadMessage("dispatch without a run", engine=engine)
    problems = []
    for name, kinds in (
        ("execution_id", (str,)),
        ("run_id", (str,)),
        ("item", (int, type(None))),
        ("attempt", (int,)),
        ("task", (str,)),
        ("action", (str,)),
        ("parameters", (dict,)),
        ("deadline", (int, float, type(None))),
    ):
        value = run.get(name)
        if isinstance(value, bool) or not isinstance(value, kinds):
            problems.append(name)
    if problems:
        raise BadMessage(f"dispatch with a missing or mistyped {', '.join(problems)}", engine=engine, key=key)
    return engine, ActionRun(**{name: run[name] for name in RUN_FIELDS})


def array_header(n: int) -> bytes:
    """The msgpack header of an array of `n` elements (the elements follow, each encoded)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


# ------------------------------------------------------------------------------------- the engine


@dataclass(slots=True, eq=False)
class _Attempt:
    run: ActionRun
    on_outcome: OutcomeCallback
    submitted: float  # epoch seconds
    worker: str | None = None
    measured: bool = False
    cancel: bool = False
    cancel_sent: float = 0.0  # monotonic


@dataclass
class _WorkerSeen:
    last: float  # monotonic
    keys: set[str] = field(default_factory=set)


class NatsTransport(Transport):
    """Sends attempts to worker processes over NATS JetStream (see the module docstring).

    `actions(ref)` resolves an action ref (for its pack and runner type, which choose the subject);
    `engine_id` names this engine's results subject and durable consumer: it must be unique among
    live engines, and keeping it across restarts lets outcomes sent while it was down arrive. The
    caller owns `nc` (it is not closed here).
    """

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        *,
        engine_id: str,
        actions: Callable[[str], ActionSpec],
        heartbeat_timeout: float = 6.0,
        streams: StreamOptions | None = None,
        latency_samples: int = 100_000,
    ) -> None:
        if not engine_id:
            raise ValueError("engine_id must not be empty")
        if not heartbeat_timeout > 0:
            raise ValueError("heartbeat_timeout must be more than 0")
        self._nc = nc
        self.subjects = subjects
        self.engine_id = engine_id
        self._actions = actions
        self.heartbeat_timeout = heartbeat_timeout
        self._streams = streams or StreamOptions()
        self._incarnation = secrets.token_hex(4)
        self._results_subject = subjects.results(engine_id)
        self._consumer = f"engine_{_token(engine_id)}"
        self._attempts: dict[str, _Attempt] = {}
        self._workers: dict[str, _WorkerSeen] = {}
        self._missing: dict[str, float] = {}  # key -> since when its worker no longer lists it
        self._deadlines: list[tuple[float, str]] = []
        self._orphans: collections.OrderedDict[str, tuple[float, list[Any]]] = collections.OrderedDict()
        self._foreign: dict[str, tuple[str, float]] = {}  # key we do not have -> (worker holding it, when)
        self._publisher = Publisher(nc)
        self._puller = Puller(
            nc, subjects.results_stream, self._consumer, self._on_results, lambda: 512,
            ensure=self._ensure, min_batch=256,
        )
        self._watch: ConnectionWatch | None = None
        self._hb_sub: Subscription | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._started = False
        # Dispatch latency (seconds from submit to the worker starting the attempt), newest last.
        self.dispatch_latencies: collections.deque[float] = collections.deque(maxlen=latency_samples)

    # -- lifecycle

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self._ensure()
        self._watch = ConnectionWatch(self._nc)
        await self._publisher.start()
        await self._puller.start()
        self._hb_sub = await self._nc.subscribe(
            self.subjects.heartbeats, cb=self._on_heartbeat, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        self._loop_task = asyncio.get_running_loop().create_task(self._maintain(), name="nats transport")
        await self._take_waiting_results()

    async def _take_waiting_results(self, timeout: float = 5.0) -> None:
        """Outcomes sent while this engine was away are taken before `start` returns, so that an
        engine recovering its executions finds them when it re-submits their attempts."""
        js = self._nc.jetstream()
        deadline = time.monotonic() + timeout
        unacked = -1
        while time.monotonic() < deadline:
            try:
                info = await js.consumer_info(self.subjects.results_stream, self._consumer)
            except Exception as exc:
                log.debug("cannot read the results consumer: %s", _describe(exc))
                return
            # Delivered and not acknowledged yet: ours are being applied; those a previous process
            # took before it died stay until their ack_wait passes, and come back later.
            if not info.num_pending and (not info.num_ack_pending or info.num_ack_pending == unacked):
                return
            unacked = info.num_ack_pending or 0
            await asyncio.sleep(0.01)

    async def _ensure(self) -> None:
        await ensure_streams(self._nc, self.subjects, self._streams)
        await ensure_consumer(
            self._nc,
            self.subjects.results_stream,
            ConsumerConfig(
                durable_name=self._consumer,
                description=f"outcomes for engine {self.engine_id}",
                filter_subject=self._results_subject,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=30.0,
                max_ack_pending=100_000,
                inactive_threshold=self._streams.results_max_age,
            ),
        )

    async def close(self) -> None:
        """Stop listening; attempts out on workers keep running (their outcomes wait in the stream)."""
        if self._closed:
            return
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._hb_sub is not None:
            with contextlib.suppress(Exception):
                await self._hb_sub.unsubscribe()
        await self._puller.close()
        await self._publisher.close()
        self._attempts.clear()

    # -- the Transport interface

    def submit(self, run: ActionRun, on_outcome: OutcomeCallback) -> None:
        loop = asyncio.get_running_loop()
        key = run.key
        if self._closed:
            loop.call_soon(on_outcome, _outcome(run, "failed", error="the NATS transport is closed"))
            return
        try:
            action = self._actions(run.action)
        except AttuneError as exc:
            loop.call_soon(on_outcome, _outcome(run, "failed", error=exc.message))
            return
        orphan = self._orphans.pop(key, None)
        if orphan is not None:  # ended before we (re)submitted it: an engine restart
            self._attempts[key] = _Attempt(run, on_outcome, time.time(), measured=True)
            loop.call_soon(self._apply_ended, key, orphan[1])
            return
        held = self._foreign.pop(key, None)
        if held is not None and time.monotonic() - held[1] <= self.heartbeat_timeout:
            # a worker still runs it (taken before this engine restarted): wait for its outcome
            attempt = self._attempts[key] = _Attempt(run, on_outcome, time.time(), measured=True)
            self._assign(attempt, held[0], time.monotonic())
            return
        try:
            payload = encode_dispatch(self.engine_id, run, action.runner_type)
        except AttuneError as exc:
            error = f"cannot send {run.action}: {exc.message}"
            loop.call_soon(on_outcome, _outcome(run, "failed", error=error))
            return
        limit = min(self._streams.max_msg_size, self._nc.max_payload or MAX_MSG_SIZE) - 1024
        if len(payload) > limit:
            loop.call_soon(
                on_outcome,
                _outcome(run, "failed", error=f"the parameters of {run.action} are too large to send to a "
                         f"worker: {len(payload)} bytes (limit {limit})"),
            )
            return
        self._attempts[key] = _Attempt(run, on_outcome, time.time())
        if run.deadline is not None:
            heapq.heappush(self._deadlines, (run.deadline, key))

        async def sent(error: str | None) -> None:
            if error is not None:
                self._finish(key, "failed", None, f"cannot dispatch {run.action}: {error}")

        self._publisher.publish(
            self.subjects.runs(action.pack, action.runner_type), payload, f"{key}@{self._incarnation}", sent
        )

    def cancel(self, run: ActionRun) -> None:
        attempt = self._attempts.get(run.key)
        if attempt is None:
            return
        attempt.cancel = True
        if attempt.worker is not None:
            self._send_cancel(attempt)

    # -- internals

    def _send_cancel(self, attempt: _Attempt) -> None:
        assert attempt.worker is not None
        attempt.cancel_sent = time.monotonic()
        payload = codec.encode({"v": PROTOCOL, "engine": self.engine_id, "keys": [attempt.run.key]})
        subject = self.subjects.cancel(attempt.worker)

        async def send() -> None:
            with contextlib.suppress(Exception):
                await self._nc.publish(subject, payload)

        task = asyncio.get_running_loop().create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _finish(self, key: str, status: str, result: Any, error: str | None) -> None:
        attempt = self._attempts.pop(key, None)
        if attempt is None:
            return
        self._missing.pop(key, None)
        if attempt.worker is not None:
            seen = self._workers.get(attempt.worker)
            if seen is not None:
                seen.keys.discard(key)
        run = attempt.run
        try:
            attempt.on_outcome(RunOutcome(run.run_id, run.item, run.attempt, status, result, error))
        except Exception:  # one bad callback must not lose the other outcomes of a batch
            log.exception("outcome callback failed for %s", key)

    def _apply_ended(self, key: str, event: list[Any]) -> None:
        _, _, _, status, result, error = event
        self._finish(key, status, result, error)

    async def _on_results(self, msg: Msg) -> None:
        try:
            worker, events = _decode_results(msg.data)
        except BadMessage as exc:
            await report_bad_input(
                self._nc, self.subjects, msg, "bad_result", exc.reason, engine_id=self.engine_id
            )
            events = []
            worker = ""
        now = time.monotonic()
        seen = self._workers.get(worker)
        if seen is not None:
            seen.last = max(seen.last, now)  # it was alive when it sent this
        for event in events:
            key = event[1]
            attempt = self._attempts.get(key)
            if attempt is None:
                if event[0] == ENDED and event[3] not in ("canceled", "abandoned"):
                    self._keep_orphan(key, event)  # a real outcome: it may be re-submitted (restart)
                continue
            if not attempt.measured:
                attempt.measured = True
                self.dispatch_latencies.append(event[2] - attempt.submitted)
            if event[0] == ENDED:
                self._finish(key, event[3], event[4], event[5])
            elif attempt.worker != worker:
                self._assign(attempt, worker, now)
        with contextlib.suppress(Exception):
            await msg.ack()

    def _assign(self, attempt: _Attempt, worker: str, now: float) -> None:
        key = attempt.run.key
        if attempt.worker is not None and attempt.worker in self._workers:
            self._workers[attempt.worker].keys.discard(key)
        attempt.worker = worker
        seen = self._workers.get(worker)
        if seen is None:
            seen = self._workers[worker] = _WorkerSeen(now)
        seen.keys.add(key)
        self._missing.pop(key, None)
        if attempt.cancel:
            self._send_cancel(attempt)

    def _keep_orphan(self, key: str, event: list[Any]) -> None:
        self._orphans[key] = (time.monotonic(), event)
        while len(self._orphans) > 10_000:
            self._orphans.popitem(last=False)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            body = codec.decode(msg.data)
            if not isinstance(body, dict) or body.get("v") != PROTOCOL:
                raise BadMessage("a heartbeat must be a map with v=1")
            worker = body.get("worker")
            running = body.get("running")
            if not isinstance(worker, str) or not isinstance(running, dict):
                raise BadMessage("a heartbeat needs 'worker' (string) and 'running' (map)")
            mine = running.get(self.engine_id) or []
            if not isinstance(mine, list):
                raise BadMessage("a heartbeat's running entries must be lists of keys")
        except (AttuneError, BadMessage) as exc:
            reason = exc.reason if isinstance(exc, BadMessage) else "not a msgpack document"
            await report_bad_input(
                self._nc, self.subjects, msg, "bad_heartbeat", reason, engine_id=self.engine_id
            )
            return
        now = time.monotonic()
        seen = self._workers.get(worker)
        if seen is None:
            if not mine:
                return  # a worker that holds nothing of ours
            seen = self._workers[worker] = _WorkerSeen(now)
        seen.last = now
        listed = set(mine)
        for key in listed:
            attempt = self._attempts.get(key)
            if attempt is None:
                self._foreign[key] = (worker, now)
                continue
            if attempt.worker != worker:
                self._assign(attempt, worker, now)  # its started event is late, or was taken before a restart
            elif attempt.cancel and now - attempt.cancel_sent > 1.0:
                self._send_cancel(attempt)
        for key in seen.keys:
            if key in listed:
                self._missing.pop(key, None)
            else:
                self._missing.setdefault(key, now)

    async def _maintain(self) -> None:
        assert self._watch is not None
        tick = max(0.02, min(0.1, self.heartbeat_timeout / 10))
        offline = False
        while True:
            await asyncio.sleep(tick)
            try:
                came_back = self._watch.poll()
                if not self._watch.connected:
                    offline = True
                    continue
                if came_back or offline:
                    offline = False
                    self._grace()
                    self._publisher.sweep(resend_all=True)
                    self._publisher.kick()
                    await self._puller.maintain(reconnected=True)
                else:
                    self._publisher.sweep()
                    await self._puller.maintain()
                self._check_liveness()
            except Exception:  # the loop must survive anything
                log.exception("nats transport maintenance failed")

    def _grace(self) -> None:
        """After an outage of our own, every worker gets a fresh heartbeat_timeout."""
        now = time.monotonic()
        for seen in self._workers.values():
            seen.last = max(seen.last, now)
        for key in self._missing:
            self._missing[key] = now

    def _check_liveness(self) -> None:
        now = time.monotonic()
        timeout = self.heartbeat_timeout
        for worker, seen in list(self._workers.items()):
            if now - seen.last <= timeout:
                continue
            if not seen.keys:
                del self._workers[worker]
                continue
            for key in list(seen.keys):
                self._finish(key, "abandoned", None, f"worker {worker} stopped responding (no heartbeat "
                             f"for {timeout:g} s)")
            del self._workers[worker]
        if self._missing:
            for key, since in list(self._missing.items()):
                if now - since > timeout:
                    attempt = self._attempts.get(key)
                    holder = attempt.worker if attempt is not None else None
                    self._finish(key, "abandoned", None, f"worker {holder} no longer runs this attempt")
                    self._missing.pop(key, None)
        wall = time.time()
        if len(self._deadlines) > 2 * len(self._attempts) + 1000:
            self._deadlines = [(d, k) for d, k in self._deadlines if k in self._attempts]
            heapq.heapify(self._deadlines)
        while self._deadlines and self._deadlines[0][0] + timeout < wall:
            _, key = heapq.heappop(self._deadlines)
            attempt = self._attempts.get(key)
            if attempt is not None and attempt.worker is None:
                error = f"{attempt.run.action} timed out before a worker started it"
                self._finish(key, "timeout", None, error)
        if self._foreign:
            for key, (_, at) in list(self._foreign.items()):
                if now - at > timeout:
                    del self._foreign[key]
        if self._orphans:
            while self._orphans:
                key, (at, _) = next(iter(self._orphans.items()))
                if now - at < 60.0:
                    break
                self._orphans.popitem(last=False)


def _decode_results(data: bytes) -> tuple[str, list[list[Any]]]:
    try:
        body = codec.decode(data)
    except AttuneError:
        raise BadMessage("not a msgpack document") from None
    if not isinstance(body, list) or len(body) < 2 or body[0] != PROTOCOL or not isinstance(body[1], str):
        raise BadMessage("a results message must be [1, worker id, event...]")
    events = body[2:]
    for event in events:
        if not (
            isinstance(event, list)
            and len(event) >= 3
            and isinstance(event[1], str)
            and isinstance(event[2], int | float)
            and (
                (event[0] == STARTED and len(event) == 3)
                or (
                    event[0] == ENDED
                    and len(event) == 6
                    and event[3] in TERMINAL
                    and (event[5] is None or isinstance(event[5], str))
                )
            )
        ):
            raise BadMessage(f"malformed results event {str(event)[:200]}")
    return body[1], events


def _outcome(run: ActionRun, status: str, *, result: Any = None, error: str | None = None) -> RunOutcome:
    return RunOutcome(run.run_id, run.item, run.attempt, status, result, error)
