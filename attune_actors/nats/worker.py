"""The worker: takes attempts from the runs stream, runs them, and reports to the engine that sent them.

    attune-actors worker --nats URL [--packs DIR]... [--concurrency N] [--subjects PACK.RUNNER ...]
                         [--loop auto|uvloop|asyncio]
    python -m attune_actors.nats.worker ...          # the same, without the rest of the CLI

Any number of workers share one durable pull consumer on the runs stream (a work queue), so each
attempt goes to one of them. A worker asks for at most as many messages as it has free slots
(`--concurrency`). `--subjects` limits a worker to some `pack.runner` subjects (`*` matches any
token): workers with the same set share that set's consumer; a JetStream work queue refuses sets
that overlap (another set, or the unfiltered default), so specialised workers use disjoint sets.

For each attempt: decode it (malformed: acknowledged, dead-lettered, an `error` event, and a
`failed` outcome when its engine and key can be read), report `started` to the engine's results
subject, acknowledge the message once that report is stored, with the next report (or within
2 ms: one write for both; a worker that dies before gets the message redelivered to another after
`ack_wait`), run it with `transport.attempt.run_attempt` (the in-process transport's way: deadline,
`RunContext`, errors to outcomes), and report how it ended. Reports are batched per engine (one
JetStream message for what arrived together, or per loop turn) and re-sent until stored. `noop`
and `echo` attempts end as soon as they are taken, as in-process. A redelivered message this
worker already took, or an attempt it still holds, is acknowledged and not run again.

With `nats.payload_key` the worker opens sealed dispatches and seals their outcomes (`nats.payload`);
the secret values a dispatch names are added to the process's masker, so its log handlers print
them as `***`. A sealed dispatch it cannot open fails with a one-line error naming the setting.

Heartbeats every `heartbeat_interval` list the attempts the worker holds, so the engine can tell a
dead worker (or a lost attempt) from a busy one. Cancel requests on `Subjects.cancel(worker_id)`
stop the attempt (its task is cancelled; the local runner kills the process group).

SIGTERM/SIGINT: drain (stop taking attempts, finish the running ones, deliver their outcomes, exit 0).
A second signal stops at once: running attempts end `abandoned`, which their engines retry elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from attune_actors import logctx
from attune_actors.config import Settings, configure_logging, load_settings
from attune_actors.errors import AttuneError, ConfigError, TransportError, ValidationError
from attune_actors.kv.masking import Masker, default_masker
from attune_actors.nats import loop as event_loop
from attune_actors.nats.connection import ConnectionWatch, connect
from attune_actors.nats.jetstream import (
    Publisher,
    PublishError,
    Puller,
    StreamOptions,
    ensure_consumer,
    ensure_streams,
    quietly,
)
from attune_actors.nats.payload import PayloadCipher
from attune_actors.nats.subjects import Subjects, token
from attune_actors.nats.wire import (
    ENDED,
    MAX_MSG_SIZE,
    STARTED,
    BadMessage,
    Heartbeat,
    decode_cancel,
    decode_dispatch,
    encode_ended,
    encode_started,
    report_bad_input,
    result_binding,
    results_head,
    results_message,
)
from attune_actors.observability.metrics import WorkerMetrics, listen_address, serve_metrics
from attune_actors.observability.tracing import Tracing, carrier_from_headers
from attune_actors.observability.tracing import resolve as resolve_tracing
from attune_actors.runners import RunnerLimits, RunnerSet
from attune_actors.spec.model import ActionSpec
from attune_actors.spec.packs import Catalog, load_packs
from attune_actors.transport.attempt import immediate_outcome, run_attempt
from attune_actors.transport.base import ActionRun

log = logging.getLogger("attune_actors.nats.worker")

RECENT_MESSAGES = 10_000  # stream sequences of the last dispatches taken, to recognise redeliveries


def filter_subjects(subjects: Subjects, patterns: Sequence[str]) -> list[str]:
    """`pack.runner` patterns (either token may be `*`) -> the runs subjects they name."""
    out: list[str] = []
    for pattern in patterns:
        parts = pattern.split(".")
        if len(parts) == 1 and parts[0] == ">":
            parts = ["*", "*"]
        elif len(parts) == 2 and parts[1] == ">":
            parts[1] = "*"
        if len(parts) != 2 or not all(p == "*" or (p and token(p) == p) for p in parts):
            raise ConfigError(
                f"--subjects: {pattern!r} is not PACK.RUNNER (names or '*', e.g. core.local, mypack.*)"
            )
        subject = subjects.runs_filter(parts[0], parts[1])
        if subject not in out:
            out.append(subject)
    return out


def consumer_name(subjects: Subjects, filters: Sequence[str]) -> str:
    """The durable consumer shared by every worker that takes these subjects."""
    if not filters:
        return subjects.workers_consumer
    digest = hashlib.sha1(",".join(sorted(filters)).encode()).hexdigest()[:12]
    return f"{subjects.workers_consumer}_{digest}"


def default_worker_id() -> str:
    return f"{token(socket.gethostname())}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(slots=True, eq=False)
class _Event:
    kind: str  # STARTED or ENDED
    key: str
    at: float  # epoch seconds when the attempt started here
    status: str = ""
    result: Any = None
    error: str | None = None
    msgs: list[Msg] = field(default_factory=list)  # run messages acknowledged once this is stored
    sealed: bool = False  # its dispatch came encrypted: its outcome goes back encrypted

    def encode(self, limit: int, action: str, cipher: PayloadCipher | None, binding: bytes) -> bytes:
        if self.kind == STARTED:
            return encode_started(self.key, self.at)
        cipher = cipher if self.sealed else None

        def ended(result: Any, error: str | None) -> bytes:
            return encode_ended(self.key, self.at, self.status, result, error, cipher=cipher, binding=binding)

        try:
            data = ended(self.result, self.error)
        except AttuneError as exc:
            self.status, self.result, self.error = "failed", None, f"{action}: result not sendable: {exc}"
            return ended(None, self.error)
        if len(data) > limit:
            self.status, self.result = "failed", None
            self.error = f"{action}: the result is too large to send back: {len(data)} bytes (limit {limit})"
            data = ended(None, self.error)
        return data


class Worker:
    """Runs attempts from the runs stream until `stop()` or `drain()` (see the module docstring)."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        catalog: Catalog,
        *,
        worker_id: str | None = None,
        concurrency: int = 16,
        subjects_filter: list[str] | None = None,
        runners: RunnerSet | None = None,
        heartbeat_interval: float = 1.0,
        ack_wait: float = 10.0,
        streams: StreamOptions | None = None,
        cipher: PayloadCipher | None = None,
        masker: Masker | None = None,
        metrics: WorkerMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """`cipher` opens encrypted dispatches and seals their outcomes (`nats.payload_key`); the
        secret values a dispatch names are added to `masker` (default: the process's, which the
        log handlers mask with). `metrics` (default: a registry of its own) counts attempts;
        `tracing` (default: as the OTEL_* variables say) makes each attempt a span, child of the
        engine's task span named in the dispatch's headers."""
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        if not heartbeat_interval > 0:
            raise ConfigError(f"the heartbeat interval must be more than 0, got {heartbeat_interval}")
        self._nc = nc
        self.subjects = subjects
        self._catalog = catalog
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.filters = filter_subjects(subjects, subjects_filter or [])
        self.consumer = consumer_name(subjects, self.filters)
        self._runners = runners
        self._owns_runners = False
        self.heartbeat_interval = heartbeat_interval
        self._ack_wait = ack_wait
        self._streams = streams or StreamOptions()
        self._cipher = cipher
        self._masker = default_masker() if masker is None else masker
        self._sealed: set[str] = set()  # keys of attempts whose dispatch came encrypted
        self._boot = secrets.token_hex(4)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._actions: dict[str, str] = {}  # key -> action ref, for messages about it
        self._held: dict[str, str] = {}  # key -> engine id, from taking an attempt to storing its end
        self._recent: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._outbox: dict[str, dict[str, _Event]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._delivering = False  # in `_on_dispatch` (until `_on_handled`): reports wait for its end
        self._loop: asyncio.AbstractEventLoop | None = None  # (get_running_loop costs a getpid call)
        self._batch_seq = 0
        self._head = results_head(self.worker_id)
        self._results_subjects: dict[str, str] = {}  # engine id -> its results subject
        self._publisher = Publisher(nc)
        self._puller = Puller(
            nc, subjects.runs_stream, self.consumer, self._on_dispatch, self._free,
            ensure=self._ensure, min_batch=max(1, concurrency // 4), on_handled=self._on_handled,
        )
        self._cancel_sub: Subscription | None = None
        self._draining = False
        self._abandon = False
        self._stopped = asyncio.Event()
        self._done = asyncio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None
        self._started = False
        self.runs_started = 0  # attempts taken (for logs and tests)
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self._tracing = tracing if tracing is not None else resolve_tracing()
        self.metrics.gauge("attune_worker_attempts_running", "Attempts running on this worker.",
                           lambda: len(self._running))
        self.metrics.gauge("attune_worker_attempts_held", "Attempts taken and not yet reported ended.",
                           lambda: len(self._held))
        self.metrics.counter_from("attune_nats_reconnects_total", "Reconnections to the NATS server.",
                                  lambda: self._nc.stats["reconnects"])

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve until stopped; TransportError when the streams or the consumer cannot be set up."""
        if self._started:
            raise RuntimeError("a Worker runs once")
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._ensure()
            if self._runners is None:
                self._owns_runners = True
                self._runners = RunnerSet(
                    limits=RunnerLimits(python_workers=self.concurrency), masker=self._masker
                )
            await self._publisher.start()
            self._cancel_sub = await self._nc.subscribe(
                self.subjects.cancel(self.worker_id), cb=self._on_cancel
            )
            watch = ConnectionWatch(self._nc)
            tasks.append(loop.create_task(self._heartbeats(), name="worker heartbeats"))
            tasks.append(loop.create_task(self._maintain(watch), name="worker maintenance"))
            await self._puller.start()
            log.info(
                "worker %s ready: consumer %s (%s), concurrency %d, loop %s",
                self.worker_id, self.consumer, ", ".join(self.filters) or self.subjects.runs_all,
                self.concurrency, event_loop.running_loop_name(),
            )
            await self._stopped.wait()
        finally:
            self._abandon = True  # attempts still running (run() itself was cancelled) are abandoned
            for task in self._running.values():
                task.cancel()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._puller.close()
            if self._cancel_sub is not None:
                with contextlib.suppress(Exception):
                    await self._cancel_sub.unsubscribe()
            if not self._held:
                await self._heartbeat()  # "holding nothing": engines need not wait for a timeout
            await self._publisher.close()
            if self._owns_runners:
                assert self._runners is not None
                await self._runners.aclose()
            self._done.set()
            log.info("worker %s stopped", self.worker_id)

    async def drain(self) -> None:
        """Stop taking attempts, finish the running ones, deliver their outcomes, then stop."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.get_running_loop().create_task(self._shutdown())
        await asyncio.shield(self._shutdown_task)
        if self._started:
            await self._done.wait()

    def stop(self) -> None:
        """Stop now: running attempts are cancelled and reported `abandoned` (their engines retry them)."""
        self._abandon = True
        for task in self._running.values():
            task.cancel()
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.get_running_loop().create_task(self._shutdown())

    async def _shutdown(self) -> None:
        self._draining = True
        await self._puller.stop_pulling()  # what still arrives is handed back (nak) to the others
        log.info("worker %s draining: %d attempt(s) running", self.worker_id, len(self._running))
        while self._running:
            await asyncio.wait(list(self._running.values()))
        await asyncio.sleep(0)  # let the last reports be batched
        deadline: float | None = None
        while self._publisher.pending or self._outbox:
            if self._abandon and deadline is None:
                deadline = time.monotonic() + 5.0
            if deadline is not None and time.monotonic() > deadline:
                log.warning("worker %s: %d report(s) not delivered", self.worker_id, self._publisher.pending)
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._publisher.wait_idle()
        self._stopped.set()

    async def _ensure(self) -> None:
        await ensure_streams(self._nc, self.subjects, self._streams)
        filters = self.filters or [self.subjects.runs_all]
        await ensure_consumer(
            self._nc,
            self.subjects.runs_stream,
            ConsumerConfig(
                durable_name=self.consumer,
                description="attune workers" + (f" for {', '.join(self.filters)}" if self.filters else ""),
                filter_subject=filters[0] if len(filters) == 1 else None,
                filter_subjects=filters if len(filters) > 1 else None,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self._ack_wait,
                max_ack_pending=100_000,
            ),
        )

    def _free(self) -> int:
        # A slot is taken from receiving an attempt until its outcome is stored: a worker whose
        # reports cannot be delivered stops taking work instead of piling up outcomes.
        return self.concurrency - len(self._held)

    async def _maintain(self, watch: ConnectionWatch) -> None:
        while True:
            await asyncio.sleep(0.1)
            try:
                came_back = watch.poll()
                if not watch.connected:
                    continue
                if came_back:
                    log.info("worker %s: connection back; re-sending reports, pulling again", self.worker_id)
                    self._publisher.sweep(resend_all=True)
                    self._publisher.kick()
                    await self._heartbeat()
                    await self._puller.maintain(reconnected=True)
                else:
                    self._publisher.sweep()
                    await self._puller.maintain()
            except Exception:
                log.exception("worker maintenance failed")

    # ------------------------------------------------------------------ heartbeats and cancels

    async def _heartbeats(self) -> None:
        while True:
            await self._heartbeat()
            await asyncio.sleep(self.heartbeat_interval)

    async def _heartbeat(self) -> None:
        if not self._nc.is_connected:
            return
        running: dict[str, list[str]] = {}
        for key, engine in self._held.items():
            running.setdefault(engine, []).append(key)
        payload = Heartbeat(
            self.worker_id, running, os.getpid(), self.heartbeat_interval, self.concurrency, self._draining
        ).encode()
        try:
            await self._nc.publish(self.subjects.heartbeats, payload)
        except Exception as exc:
            log.debug("heartbeat not sent: %s", exc)

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            keys = decode_cancel(msg.data)
        except BadMessage as exc:
            await report_bad_input(
                self._nc, self.subjects, msg, "bad_cancel", exc.reason, worker_id=self.worker_id
            )
            return
        for key in keys:
            task = self._running.get(key)
            if task is not None:
                log.info("canceling %s", key)
                task.cancel()

    # ------------------------------------------------------------------ attempts

    def _on_dispatch(self, msg: Msg) -> Awaitable[None] | None:
        """Take an attempt (from the client's read loop: what must wait, a nak, an ack of a message
        not run, a dead letter, is returned to be awaited before the next message)."""
        self._delivering = True
        if self._draining:
            return quietly(msg.nak())  # straight back to the queue for another worker
        try:
            dispatch = decode_dispatch(msg.data, self._cipher)
        except BadMessage as exc:
            return self._reject(msg, exc)
        engine, run = dispatch.engine, dispatch.run
        for secret in dispatch.secrets:
            self._masker.add(secret)
        key = run.key
        seq = _stream_seq(msg)
        if key in self._held or seq in self._recent:
            # A redelivery of a message this worker took (its acknowledgement was late or lost), or an
            # attempt it still runs: its reports stand. (The same attempt sent again as a new message
            # after it ended here, by an engine that restarted, runs again.)
            log.info("attempt %s delivered again; already taken here", key)
            return quietly(msg.ack())
        if seq:
            self._recent[seq] = None
            if len(self._recent) > RECENT_MESSAGES:
                self._recent.popitem(last=False)
        at = time.time()
        self.runs_started += 1
        self._held[key] = engine
        if dispatch.sealed:
            self._sealed.add(key)
        try:
            action = self._catalog.action(run.action)
        except AttuneError as exc:
            self._ended(engine, key, at, "failed", None, f"{exc.message} (on worker {self.worker_id})", msg)
            return None
        known = immediate_outcome(run, action)
        if known is not None:  # like the in-process transport: no task to start
            self._account_attempt(run, known.status, 0.0, known.error, logging.DEBUG)
            self._ended(engine, key, at, known.status, known.result, known.error, msg)
            return None
        self._actions[key] = action.ref
        trace = carrier_from_headers(msg.headers)
        if trace is not None:
            run = dataclasses.replace(run, trace=trace)
        # The attempt's task inherits these: its records (the action's own too) name execution and task.
        with logctx.about(run.execution_id, run.task):
            log.info("attempt %s of %s started (%s)", run.attempt, run.action, key,
                     extra={"attune_fields": {"event": "attempt_started", "key": key, "action": run.action,
                                              "attempt": run.attempt, "item": run.item}})
            self._running[key] = asyncio.get_running_loop().create_task(
                self._execute(engine, run, action, at), name=f"run {key}"
            )
        self._report(engine, _Event(STARTED, key, at, msgs=[msg]))
        return None

    async def _reject(self, msg: Msg, exc: BadMessage) -> None:
        await report_bad_input(
            self._nc, self.subjects, msg, "bad_dispatch", exc.reason, worker_id=self.worker_id
        )
        if exc.engine is not None and exc.key is not None:  # an error reply to the engine that sent it
            self._report(
                exc.engine,
                _Event(ENDED, exc.key, time.time(), "failed", None, f"bad dispatch: {exc.reason}", [msg]),
            )
        else:
            with contextlib.suppress(Exception):
                await msg.ack()

    async def _execute(self, engine: str, run: ActionRun, action: ActionSpec, at: float) -> None:
        assert self._runners is not None
        began = time.monotonic()
        try:
            ended = await run_attempt(
                self._runners, action, run,
                tracing=self._tracing, span_attributes={"attune.worker": self.worker_id},
            )
        finally:
            self._running.pop(run.key, None)
        status, error = ended.status, ended.error
        if status == "canceled" and self._abandon:
            status, error = "abandoned", f"worker {self.worker_id} stopped before the attempt ended"
        self._account_attempt(run, status, time.monotonic() - began, error, logging.INFO)
        self._ended(engine, run.key, at, status, ended.result, error, None)

    def _account_attempt(
        self, run: ActionRun, status: str, seconds: float, error: str | None, level: int
    ) -> None:
        """Count the attempt, log its end (masked by the handlers' filter, like every record)."""
        self.metrics.attempts.inc((run.action, status))
        self.metrics.attempt_seconds.observe((run.action,), seconds)
        if log.isEnabledFor(level):
            with logctx.about(run.execution_id, run.task):
                log.log(level, "attempt %s of %s ended %s in %.3f s%s", run.attempt, run.action, status,
                        seconds, f": {error}" if error else "",
                        extra={"attune_fields": {"event": "attempt_ended", "key": run.key,
                                                 "action": run.action, "attempt": run.attempt,
                                                 "item": run.item, "status": status,
                                                 "duration": round(seconds, 6)}})

    def _ended(
        self, engine: str, key: str, at: float, status: str, result: Any, error: str | None, msg: Msg | None
    ) -> None:
        box = self._outbox.get(engine)
        earlier = box.get(key) if box is not None else None
        msgs = earlier.msgs if earlier is not None else []  # its `started` was not sent yet: replace it
        if msg is not None:
            msgs.append(msg)
        self._report(engine, _Event(ENDED, key, at, status, result, error, msgs, key in self._sealed))

    # ------------------------------------------------------------------ reports

    def _report(self, engine: str, event: _Event) -> None:
        self._outbox.setdefault(engine, {})[event.key] = event
        if self._flush_handle is None and not self._delivering:
            self._flush_handle = (self._loop or asyncio.get_running_loop()).call_soon(self._flush)

    def _on_handled(self, drained: bool) -> None:
        """After each dispatch: the reports leave at once after the last of a delivery (from the
        client's read loop: no batching turn), else at the end of the loop turn, together."""
        self._delivering = False
        if self._outbox:
            if drained:
                self._flush()
            elif self._flush_handle is None:
                self._flush_handle = (self._loop or asyncio.get_running_loop()).call_soon(self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        outbox, self._outbox = self._outbox, {}
        limit = min(self._streams.max_msg_size, self._nc.max_payload or MAX_MSG_SIZE) - 4096
        head = self._head
        subjects = self._results_subjects
        for engine, events in outbox.items():
            subject = subjects.get(engine)
            if subject is None:
                if len(subjects) >= 1024:  # (engine ids come with the dispatches: bounded)
                    subjects.clear()
                subject = subjects[engine] = self.subjects.results(engine)
            parts: list[bytes] = []
            batch: list[_Event] = []
            size = len(head) + 5
            for event in events.values():
                data = event.encode(
                    limit - len(head) - 5, self._actions.get(event.key, "the action"), self._cipher,
                    result_binding(engine, self.worker_id, event.key) if event.sealed else b"",
                )
                if batch and size + len(data) > limit:
                    self._send(subject, head, parts, batch)
                    parts, batch, size = [], [], len(head) + 5
                parts.append(data)
                batch.append(event)
                size += len(data)
            if batch:
                self._send(subject, head, parts, batch)
        self._publisher.write()  # the reports, and the acknowledgements waiting: one write

    def _send(self, subject: str, head: bytes, parts: list[bytes], batch: list[_Event]) -> None:
        self._batch_seq += 1
        payload = results_message(head, parts)

        def stored(error: PublishError | None) -> None:
            if error is not None:  # refused for good: the engine will notice the attempts are gone
                log.error("results for %s refused by the server: %s", subject, error)
            for event in batch:
                for msg in event.msgs:
                    self._publisher.ack(msg)
                if event.kind == ENDED:
                    self._held.pop(event.key, None)
                    self._actions.pop(event.key, None)
                    self._sealed.discard(event.key)
            if not self._draining:
                self._puller.top_up()

        self._publisher.publish(  # (`_flush` writes it)
            subject, payload, f"{self.worker_id}:{self._boot}:{self._batch_seq}", stored, soon=False
        )


def _stream_seq(msg: Msg) -> int:
    """The stream sequence of a JetStream message (0 if it cannot be read), from its reply subject:
    `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...` (9 tokens), or with a domain and an
    account hash before the stream (12 tokens). Cheaper than `msg.metadata`, which parses it all."""
    tokens = msg.reply.split(".")
    try:
        return int(tokens[5] if len(tokens) == 9 else tokens[7])
    except (IndexError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser, *, standalone: bool = False) -> None:
    """The `worker` command's options (`--config`/`--log-level` also belong to the main parser)."""
    parser.add_argument("--nats", metavar="URL", help="NATS server URL(s), comma-separated "
                        "(default: the nats.url setting)")
    parser.add_argument("--packs", action="append", metavar="DIR",
                        help="folder of pack folders (repeatable; the core pack is always loaded)")
    parser.add_argument("--concurrency", type=int, default=16, metavar="N",
                        help="attempts run at once (default 16)")
    parser.add_argument("--subjects", nargs="+", metavar="PACK.RUNNER",
                        help="take only these pack/runner subjects ('*' matches any name); workers with "
                        "the same set share the load; sets must not overlap")
    parser.add_argument("--worker-id", help="this worker's id (default: host-pid-random)")
    parser.add_argument("--heartbeat", type=float, default=1.0, metavar="SECONDS",
                        help="seconds between heartbeats (default 1)")
    parser.add_argument("--metrics-port", metavar="[HOST:]PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (host default 127.0.0.1)")
    event_loop.add_argument(parser)
    default = None if standalone else argparse.SUPPRESS
    parser.add_argument("--config", default=default,
                        help="settings file (default: $ATTUNE_CONFIG, else built-in defaults)")
    parser.add_argument("--log-level", default=default, help="DEBUG, INFO, WARNING, ERROR")


def register(subparsers: Any) -> None:
    """Add `worker` to the CLI's sub-commands."""
    parser = subparsers.add_parser(
        "worker",
        help="take action runs from NATS and run them (the distributed runtime's worker)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_arguments(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """`attune-actors worker`: 0 after a drain; AttuneError (exit 2) for bad settings, packs, NATS."""
    settings = load_settings(
        getattr(args, "config", None),
        overrides={
            "packs": args.packs,
            "nats": {"url": args.nats},
            "logging": {"level": getattr(args, "log_level", None)},
        },
    )
    configure_logging(settings)
    if args.concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {args.concurrency}")
    if not args.heartbeat > 0:
        raise ConfigError(f"--heartbeat must be more than 0, got {args.heartbeat}")
    subjects = Subjects(settings.nats.subject_prefix)
    filter_subjects(subjects, args.subjects or [])  # bad patterns fail before connecting
    if args.metrics_port is not None:
        listen_address(args.metrics_port, "--metrics-port")  # so does a bad address
    PayloadCipher.from_settings(settings.nats)  # so does a bad payload key
    packs: Sequence[str] = settings.packs
    if args.packs is None and tuple(packs) == Settings().packs and not Path(packs[0]).is_dir():
        packs = ()  # no packs folder here and none asked for: the core pack only
    catalog, problems = load_packs(packs)
    if problems:
        raise ValidationError(problems)
    return event_loop.run(getattr(args, "loop", "auto"), lambda: _serve(settings, subjects, catalog, args))


async def _serve(settings: Settings, subjects: Subjects, catalog: Catalog, args: argparse.Namespace) -> int:
    worker_id = args.worker_id or default_worker_id()
    # A connection retries forever once made; the first one must succeed in time, or it is an error
    # (one line: the client's complaints meanwhile are held back, the last one is in the message).
    complaints = _Hold()
    connection_log = logging.getLogger("attune_actors.nats")
    connection_log.addFilter(complaints)
    try:
        async with asyncio.timeout(settings.nats.connect_timeout + 1.0):
            nc = await connect(settings.nats, name=f"attune-worker {worker_id}")
    except TimeoutError:
        why = f": {complaints.last}" if complaints.last else ""
        raise TransportError(f"cannot connect to NATS at {settings.nats.url}{why}") from None
    finally:
        connection_log.removeFilter(complaints)
    limits = RunnerLimits.from_settings(settings.limits)
    runners = RunnerSet(
        limits=dataclasses.replace(limits, python_workers=args.concurrency), masker=default_masker()
    )
    worker = Worker(
        nc, subjects, catalog, worker_id=worker_id, concurrency=args.concurrency,
        subjects_filter=args.subjects, runners=runners, heartbeat_interval=args.heartbeat,
        cipher=PayloadCipher.from_settings(settings.nats),
    )
    stop_metrics = None
    if args.metrics_port is not None:
        stop_metrics = serve_metrics(worker.metrics, *listen_address(args.metrics_port, "--metrics-port"))
    loop = asyncio.get_running_loop()
    signals = 0
    background: set[asyncio.Task[None]] = set()

    def on_signal(name: str) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("%s: draining (again to stop at once)", name)
            task = loop.create_task(worker.drain())
            background.add(task)
            task.add_done_callback(background.discard)
        elif signals == 2:
            log.warning("%s: stopping now; running attempts are abandoned", name)
            worker.stop()
        else:
            os._exit(130)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await worker.run()
    finally:
        if stop_metrics is not None:
            stop_metrics()
        await runners.aclose()
        with contextlib.suppress(Exception):
            await nc.flush(timeout=2)
        with contextlib.suppress(Exception):
            await nc.close()
    return 0


class _Hold(logging.Filter):
    """Holds records back, keeping the last message."""

    last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        self.last = message.split("): ", 1)[-1]
        return False


def main(argv: list[str] | None = None) -> int:
    """`python -m attune_actors.nats.worker`: the `worker` command on its own."""
    parser = argparse.ArgumentParser(prog="attune-actors worker", description=__doc__.split("\n\n")[0])
    add_arguments(parser, standalone=True)
    args = parser.parse_args(argv)
    try:
        return command(args)
    except ValidationError as exc:
        for err in exc.errors:
            print(str(err), file=sys.stderr)
        return 2
    except AttuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
