"""The NATS transport: attempts go to worker processes through a JetStream work queue; outcomes come back.

Engine side (`NatsTransport`, behind the `Transport` interface):

- `submit` publishes the attempt to `Subjects.runs(pack, runner_type, key)` (a subject per attempt)
  on the runs stream (retention WORK_QUEUE: each attempt is taken by one worker, which removes it)
  with `Nats-Msg-Id: <run key>@<incarnation>`. A publish that is not acknowledged (server down,
  restarting) is re-sent with the same id until it is stored, and the server keeps one copy. (The
  incarnation is random per transport: an engine that restarts and recovers an execution
  re-dispatches its unfinished attempt for real, instead of having it dropped as a duplicate of the
  copy a worker may already have taken and lost.) `submit` never waits: what it publishes is
  written to the socket at the end of the loop turn, with the others of that turn.
- Most dispatches ask the server for no acknowledgement (`Publisher.send`: the engine's wake-up for
  it was a fifth of a hop's CPU): the worker's `started` (or its heartbeat, or the outcome) says the
  dispatch was stored. Not the first of an execution here: an execution resumed after its engine
  died may have its attempt queued still, and the refusal must be handled (below) before a worker
  takes that copy; once a worker took one of its attempts from this transport (reported it
  started, or only its outcome), it is live. A
  dispatch that nothing confirms within `confirm_after` seconds (lost in a server restart or a
  disconnect, refused: too large for the stream, no stream, queued already), and every one after
  a reconnect, is published again the acknowledged way, same `Nats-Msg-Id` (so a copy that was
  stored is not stored twice): from there on it is handled as below, and for
  `10 * confirm_after` seconds every dispatch asks for the acknowledgement (workers are slow to
  start what is sent: a backlog). Only small dispatches go unacknowledged, and only
  `unconfirmed_max` at once: under load the acknowledgements share wake-ups anyway, and what waits
  for a confirmation is held in memory.
- An attempt is queued once: every dispatch carries `Nats-Expected-Last-Subject-Sequence: 0`, so the
  server refuses it while an earlier dispatch of the same attempt is still queued (an engine that
  died before any worker took it, whose execution this engine resumed). The attempt then waits for
  that copy, whose worker reports to the engine id it names; only if another engine id sent it is it
  deleted and replaced (read and deleted by sequence: off the hot path, resumed attempts only).
- Workers report `started` and `ended` events, batched, on `Subjects.results(engine_id)`; the results
  stream keeps them until this engine's durable consumer has taken and acknowledged them, so an
  outcome survives a disconnect of the engine or of the worker, and a server restart. An outcome is
  acknowledged once applied, with the next dispatch after a newer outcome came (or within 50 ms):
  until then the server keeps it, and one delivered again (after `ack_wait`) is ignored. (The
  newest is kept back so that the results stream is not emptied after every outcome: nats-server's
  file store replaces the block file of a stream it empties, a fifth of its CPU in a chain.)
  `start` returns once what was waiting there has been taken.
- Outcomes are applied once: an event for an attempt this engine does not have in flight (finished,
  abandoned, duplicate) is ignored. A real outcome (not `canceled`/`abandoned`) that arrives before
  its attempt is submitted (an engine restarted with the same id) is kept a minute and applied at
  submit without dispatching again; an attempt a worker's heartbeat says it still runs is not
  dispatched again either.
- Only the worker that took an attempt (the first one to report it started, or to list it in a
  heartbeat) is heard about it: an outcome from any other worker id is dead-lettered
  (`refused_result`) and the real one is still applied when it comes.
- Secrets: with a `cipher` (`nats.payload_key`) parameters and outcomes cross NATS sealed (see
  `nats.payload`), and an outcome of a sealed attempt must come back sealed (only a `failed` one
  without a result may come in clear: a worker that could not open the dispatch). Without one, an
  attempt whose parameters hold a secret (`secrets_in`, the engine's masker) is failed at submit
  instead of being sent in clear.
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

Wire format: `nats.wire`; streams, publisher and pull consumer: `nats.jetstream`; the other end:
`nats.worker`. Who may publish and subscribe where: the roles in docs/distributed.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError as JsNotFoundError

from attune_actors.errors import AttuneError
from attune_actors.nats.connection import ConnectionWatch, describe
from attune_actors.nats.jetstream import (
    WRONG_LAST_SEQUENCE,
    Publisher,
    PublishError,
    Puller,
    StreamOptions,
    ensure_consumer,
    ensure_streams,
    quietly,
)
from attune_actors.nats.payload import PayloadCipher
from attune_actors.nats.subjects import Subjects
from attune_actors.nats.wire import (
    ENDED,
    MAX_MSG_SIZE,
    MSG_ID,
    STARTED,
    BadMessage,
    decode_heartbeat,
    decode_results,
    dispatch_engine,
    encode_cancel,
    encode_dispatch,
    open_ended,
    report_bad_input,
    result_binding,
)
from attune_actors.observability.metrics import EngineMetrics
from attune_actors.observability.tracing import Tracing
from attune_actors.spec.model import ActionSpec
from attune_actors.transport.attempt import outcome
from attune_actors.transport.base import ActionRun, OutcomeCallback, RunOutcome, Transport

log = logging.getLogger("attune_actors.nats.transport")


# Stored only if the subject (one per attempt) holds no message: the attempt is not queued already.
EXPECT_NONE_QUEUED = "Nats-Expected-Last-Subject-Sequence"
_EXPECT_NONE_QUEUED = {EXPECT_NONE_QUEUED: "0"}  # (shared: never changed)


def _soon(callback: Callable[..., object], *args: Any) -> None:
    # (not looked up on the way of a dispatch: in Python 3.11 `get_running_loop` makes a getpid call)
    asyncio.get_running_loop().call_soon(callback, *args)


async def _in_turn(pending: Iterable[Awaitable[None]]) -> None:
    for each in pending:
        await each


@dataclass(slots=True, eq=False)
class _Attempt:
    run: ActionRun
    on_outcome: OutcomeCallback
    submitted: float  # epoch seconds
    sealed: bool = False  # its parameters went encrypted: so must its outcome come back
    worker: str | None = None  # the worker that took it: the only one whose outcome counts
    measured: bool = False
    cancel: bool = False
    cancel_sent: float = 0.0  # monotonic


@dataclass(slots=True, eq=False)
class _Unconfirmed:
    """A dispatch sent without asking for the server's acknowledgement, until something confirms it."""

    attempt: _Attempt
    subject: str
    payload: bytes
    sent: float  # monotonic


# Dispatches larger than this always ask for the server's acknowledgement (what waits unconfirmed
# is held in memory).
UNCONFIRMED_BYTES = 16 * 1024
LIVE_EXECUTIONS = 10_000  # executions remembered as started here (older ones: acknowledged again)


@dataclass
class _WorkerSeen:
    last: float  # monotonic
    keys: set[str] = field(default_factory=set)


class NatsTransport(Transport):
    """Sends attempts to worker processes over NATS JetStream (see the module docstring).

    `actions(ref)` resolves an action ref (for its pack and runner type, which choose the subject);
    `engine_id` names this engine's results subject and durable consumer: it must be unique among
    live engines, and keeping it across restarts lets outcomes sent while it was down arrive.
    `cipher` seals parameters and outcomes; `secrets_in(parameters)` names the secret values they
    hold (the worker masks them in its logs; without a cipher such attempts are refused).
    `confirm_after` (seconds) and `unconfirmed_max` (0: none) bound the dispatches sent without
    waiting for the server's acknowledgement. The caller owns `nc` (it is not closed here).
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
        cipher: PayloadCipher | None = None,
        secrets_in: Callable[[Any], list[str]] | None = None,
        owned: Callable[[], bool] | None = None,
        ack_wait: float = 30.0,
        confirm_after: float = 1.0,
        unconfirmed_max: int = 256,
    ) -> None:
        if not engine_id:
            raise ValueError("engine_id must not be empty")
        if not heartbeat_timeout > 0:
            raise ValueError("heartbeat_timeout must be more than 0")
        self._nc = nc
        self.subjects = subjects
        self.engine_id = engine_id
        self._actions = actions
        self._cipher = cipher
        self._secrets_in = secrets_in
        # A cluster's partition transport: while `owned()` is false (the partition's lease is not
        # fresh: this engine may have lost it or is handing it over), nothing is dispatched or
        # canceled, and outcomes are left to the owner (nak'ed: the durable consumer redelivers).
        self._owned = owned
        # Seconds before an outcome taken but not acknowledged (by a process that died, or closed
        # meanwhile) is delivered again. A partition transport waits for those at start.
        self._ack_wait = ack_wait
        self.heartbeat_timeout = heartbeat_timeout
        self._streams = streams or StreamOptions()
        self._incarnation = secrets.token_hex(4)
        self._results_subject = subjects.results(engine_id)
        self._consumer = subjects.results_consumer(engine_id)
        self._attempts: dict[str, _Attempt] = {}
        self._workers: dict[str, _WorkerSeen] = {}
        self._missing: dict[str, float] = {}  # key -> since when its worker no longer lists it
        self._deadlines: list[tuple[float, str]] = []
        # key -> (when, status, result, error) of outcomes for attempts not (yet) submitted
        self._orphans: collections.OrderedDict[str, tuple[float, str, Any, str | None]] = (
            collections.OrderedDict()
        )
        self._foreign: dict[str, tuple[str, float]] = {}  # key we do not have -> (worker holding it, when)
        # Dispatches sent unacknowledged that no worker has confirmed yet, oldest first (see the
        # module docstring).
        self._unconfirmed: dict[str, _Unconfirmed] = {}
        self.confirm_after = confirm_after
        self._unconfirmed_max = unconfirmed_max
        self._acknowledged_until = 0.0  # monotonic; till then every dispatch asks for the server's ack
        # Executions a worker has started an attempt of for this transport, newest last: only their
        # dispatches go unacknowledged. The first dispatch of an execution here (a new one, or one
        # resumed after an engine died, whose attempt that engine may have left queued) waits for
        # the server's answer, so that a refusal is handled at once, before a worker takes the copy.
        self._live: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._publisher = Publisher(nc, ack_delay=0.05, ack_hold=True)
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

    def instrument(self, metrics: EngineMetrics, tracing: Tracing | None) -> None:
        super().instrument(metrics, tracing)
        metrics.gauge("attune_nats_attempts_waiting", "Attempts sent to NATS that no worker has started yet.",
                      lambda: sum(1 for a in self._attempts.values() if a.worker is None))
        metrics.gauge("attune_nats_attempts_running", "Attempts a worker has started and not ended.",
                      lambda: sum(1 for a in self._attempts.values() if a.worker is not None))
        metrics.gauge("attune_nats_publish_pending", "Dispatches not yet known stored by the server.",
                      lambda: self._publisher.pending + len(self._unconfirmed))
        metrics.gauge("attune_nats_workers", "Workers heard from within the heartbeat timeout.",
                      lambda: len(self._workers))
        metrics.counter_from("attune_nats_reconnects_total", "Reconnections to the NATS server.",
                             lambda: self._nc.stats["reconnects"])

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
        engine recovering its executions finds them when it re-submits their attempts.

        A partition transport (`owned`) also waits, up to `ack_wait`, for outcomes the partition's
        previous owner took and did not acknowledge: they come back once their ack_wait passes.
        """
        js = self._nc.jetstream()
        if self._owned is not None:
            timeout = max(timeout, self._ack_wait + 1.0)
        deadline = time.monotonic() + timeout
        unacked = -1
        while time.monotonic() < deadline:
            try:
                info = await js.consumer_info(self.subjects.results_stream, self._consumer)
            except Exception as exc:
                log.debug("cannot read the results consumer: %s", describe(exc))
                return
            # Delivered and not acknowledged yet: ours are being applied; those a previous process
            # took before it died stay until their ack_wait passes, and come back later.
            if not info.num_pending and (
                not info.num_ack_pending or (info.num_ack_pending == unacked and self._owned is None)
            ):
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
                ack_wait=self._ack_wait,
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
        self._unconfirmed.clear()

    # -- the Transport interface

    def submit(self, run: ActionRun, on_outcome: OutcomeCallback) -> None:
        key = run.key
        if self._owned is not None and not self._owned():
            log.warning("%s not dispatched: this engine may no longer own %s", key, self.engine_id)
            return  # the engine is about to be closed; the partition's owner resumes the execution
        if self._closed:
            _soon(on_outcome, outcome(run, "failed", error="the NATS transport is closed"))
            return
        try:
            action = self._actions(run.action)
        except AttuneError as exc:
            _soon(on_outcome, outcome(run, "failed", error=exc.message))
            return
        orphan = self._orphans.pop(key, None)
        if orphan is not None:  # ended before we (re)submitted it: an engine restart
            self._attempts[key] = _Attempt(run, on_outcome, time.time(), measured=True)
            _soon(self._finish, key, *orphan[1:])
            return
        held = self._foreign.pop(key, None)
        if held is not None and time.monotonic() - held[1] <= self.heartbeat_timeout:
            # a worker still runs it (taken before this engine restarted): wait for its outcome
            attempt = self._attempts[key] = _Attempt(run, on_outcome, time.time(), measured=True)
            self._assign(attempt, held[0], time.monotonic())
            return
        secret_values = self._secrets_in(run.parameters) if self._secrets_in is not None else []
        if secret_values and self._cipher is None:
            error = (
                f"{run.action} is not sent to a worker: its parameters hold a secret, and without "
                "nats.payload_key (ATTUNE_NATS__PAYLOAD_KEY, the same on the engine and the workers) "
                "NATS would carry it in clear"
            )
            _soon(on_outcome, outcome(run, "failed", error=error))
            return
        try:
            payload = encode_dispatch(
                self.engine_id, run, action.runner_type, cipher=self._cipher, secrets=secret_values
            )
        except AttuneError as exc:
            error = f"cannot send {run.action}: {exc.message}"
            _soon(on_outcome, outcome(run, "failed", error=error))
            return
        limit = min(self._streams.max_msg_size, self._nc.max_payload or MAX_MSG_SIZE) - 1024
        if len(payload) > limit:
            _soon(
                on_outcome,
                outcome(run, "failed", error=f"the parameters of {run.action} are too large to send to a "
                         f"worker: {len(payload)} bytes (limit {limit})"),
            )
            return
        attempt = _Attempt(run, on_outcome, time.time(), sealed=self._cipher is not None)
        self._attempts[key] = attempt
        if run.deadline is not None:
            heapq.heappush(self._deadlines, (run.deadline, key))
        self._dispatch(attempt, self.subjects.runs(action.pack, action.runner_type, key), payload)

    def _dispatch(
        self, attempt: _Attempt, subject: str, payload: bytes, *, acknowledged: bool = False
    ) -> None:
        # Only if no message of this attempt is queued: one a previous run of this engine (or the
        # partition's previous owner) dispatched and no worker has taken yet is refused, not doubled.
        headers = _EXPECT_NONE_QUEUED
        if attempt.run.trace:  # the task span's trace context: the worker's attempt span is its child
            headers = {**headers, **attempt.run.trace}
        key = attempt.run.key
        msg_id = f"{key}@{self._incarnation}"
        if (
            not acknowledged
            and len(self._unconfirmed) < self._unconfirmed_max
            and len(payload) <= UNCONFIRMED_BYTES
            and attempt.run.execution_id in self._live
            and self._nc.is_connected
        ):
            now = time.monotonic()
            if now >= self._acknowledged_until:
                self._unconfirmed.pop(key, None)
                self._unconfirmed[key] = _Unconfirmed(attempt, subject, payload, now)
                self._publisher.send(subject, payload, msg_id, headers)
                return

        def sent(error: PublishError | None) -> Awaitable[None] | None:
            if error is None:
                return None
            if error.err_code == WRONG_LAST_SEQUENCE:
                return self._queued_before(attempt, subject, payload)
            self._finish(key, "failed", None, f"cannot dispatch {attempt.run.action}: {error}")
            return None

        self._publisher.publish(subject, payload, msg_id, sent, headers)

    def _confirm(self, everything: bool = False) -> None:
        """Publish again, acknowledged, the dispatches nothing confirmed in time (all: after a reconnect)."""
        if not self._unconfirmed or (self._owned is not None and not self._owned()):
            return
        now = time.monotonic()
        due = now - self.confirm_after
        for key, entry in list(self._unconfirmed.items()):
            if not everything and entry.sent > due:
                break  # the younger ones are not due either
            del self._unconfirmed[key]
            if self._attempts.get(key) is entry.attempt:
                # Workers are slow to start what is sent (a backlog), or the server lost it: for a
                # while every dispatch asks for the server's ack (under load they share wake-ups).
                self._acknowledged_until = now + 10 * self.confirm_after
                self._dispatch(entry.attempt, entry.subject, entry.payload, acknowledged=True)

    async def _queued_before(self, attempt: _Attempt, subject: str, payload: bytes) -> None:
        """The attempt is still queued (not taken by any worker) from an earlier dispatch: off the hot
        path (attempts of resumed executions, and unacknowledged dispatches no worker confirmed in
        time), read who sent it. If that was this engine's id, the worker that takes it reports
        here: wait for it. If another engine id sent it (an engine restarted under a new id), its
        outcome would go there: replace it with ours."""
        key = attempt.run.key
        js = self._nc.jetstream()
        try:
            queued = await js.get_last_msg(self.subjects.runs_stream, subject)
        except JsNotFoundError:
            queued = None  # taken meanwhile; its worker reports to whoever sent it
        except Exception as exc:
            log.warning("%s is queued already; cannot read who sent it (%s): waiting for it", key,
                        describe(exc))
            return
        if self._attempts.get(key) is not attempt:
            return  # ended or canceled meanwhile
        sender = None if queued is None or queued.data is None else dispatch_engine(queued.data)
        if queued is None or queued.seq is None or sender == self.engine_id:
            ours = queued is not None and (queued.headers or {}).get(MSG_ID) == f"{key}@{self._incarnation}"
            # (our own unacknowledged copy, waiting for a free worker, is no news)
            log.log(logging.DEBUG if ours else logging.INFO,
                    "%s was queued before (and not taken then): not sent again", key)
            return
        log.warning("%s is queued for engine %s, not this one (%s): replacing it", key, sender,
                    self.engine_id)
        try:
            await js.delete_msg(self.subjects.runs_stream, queued.seq)
        except Exception as exc:
            log.warning("cannot remove the queued %s (%s): waiting for it", key, describe(exc))
            return
        self._dispatch(attempt, subject, payload, acknowledged=True)

    def cancel(self, run: ActionRun) -> None:
        attempt = self._attempts.get(run.key)
        if attempt is None:
            return
        if self._owned is not None and not self._owned():
            # The partition is handed over (its engine stops): the attempt runs on, and its outcome
            # waits on the partition's durable consumer for the new owner.
            return
        attempt.cancel = True
        if attempt.worker is not None:
            self._send_cancel(attempt)

    # -- internals

    def _send_cancel(self, attempt: _Attempt) -> None:
        assert attempt.worker is not None
        attempt.cancel_sent = time.monotonic()
        payload = encode_cancel(self.engine_id, [attempt.run.key])
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
        self._unconfirmed.pop(key, None)
        if attempt.worker is not None:
            seen = self._workers.get(attempt.worker)
            if seen is not None:
                seen.keys.discard(key)
        run = attempt.run
        try:
            attempt.on_outcome(RunOutcome(run.run_id, run.item, run.attempt, status, result, error))
        except Exception:  # one bad callback must not lose the other outcomes of a batch
            log.exception("outcome callback failed for %s", key)

    def _on_results(self, msg: Msg) -> Awaitable[None] | None:
        """Apply a batch of events (from the client's read loop: nothing here waits, but the rare
        dead letters and a nak, returned to be awaited before the next message)."""
        if self._owned is not None and not self._owned():
            return quietly(msg.nak())
        reports: list[Awaitable[None]] = []  # dead letters, sent after the batch is applied
        try:
            worker, events = decode_results(msg.data)
        except BadMessage as exc:
            reports.append(report_bad_input(
                self._nc, self.subjects, msg, "bad_result", exc.reason, engine_id=self.engine_id
            ))
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
                if event[0] != STARTED and event[3] not in ("canceled", "abandoned"):
                    # a real outcome: its attempt may be re-submitted (an engine restart)
                    with contextlib.suppress(BadMessage):
                        self._keep_orphan(key, event[3], *self._open(event, worker))
                continue
            if attempt.worker is not None and attempt.worker != worker:
                # Only the worker that took the attempt reports on it: anyone else is refused.
                reports.append(report_bad_input(
                    self._nc, self.subjects, msg, "refused_result",
                    f"worker {worker} reported on {key}, which worker {attempt.worker} took",
                    engine_id=self.engine_id, worker_id=worker,
                ))
                continue
            if not attempt.measured:
                attempt.measured = True
                latency = event[2] - attempt.submitted
                self.dispatch_latencies.append(latency)
                if self.metrics is not None:
                    self.metrics.nats_dispatch_seconds.observe((), latency)
            if event[0] == STARTED:
                if attempt.worker is None:
                    self._assign(attempt, worker, now)
                continue
            try:
                result, error = self._open(event, worker)
                if attempt.sealed and event[0] == ENDED and not (event[3] == "failed" and result is None):
                    raise BadMessage(f"an outcome in clear for {key}, which was sent encrypted")
            except BadMessage as exc:
                reports.append(report_bad_input(
                    self._nc, self.subjects, msg, "refused_result", exc.reason,
                    engine_id=self.engine_id, worker_id=worker,
                ))
                continue
            if attempt.worker is None:
                # its outcome came without a `started` before it (a noop's, a quick one's): taken all
                # the same
                self._taken(attempt)
            self._finish(key, event[3], result, error)
        self._publisher.ack(msg)  # with the next dispatch: an outcome applied twice is ignored
        return _in_turn(reports) if reports else None

    def _open(self, event: list[Any], worker: str) -> tuple[Any, str | None]:
        """(result, error) of an outcome event; BadMessage when it is sealed and does not open."""
        binding = b"" if event[0] == ENDED else result_binding(self.engine_id, worker, event[1])
        return open_ended(event, self._cipher, binding)  # (only a sealed one is bound)

    def _assign(self, attempt: _Attempt, worker: str, now: float) -> None:
        key = attempt.run.key
        if attempt.worker is not None and attempt.worker in self._workers:
            self._workers[attempt.worker].keys.discard(key)
        attempt.worker = worker
        self._unconfirmed.pop(key, None)  # a worker took it: it was stored
        self._taken(attempt)
        seen = self._workers.get(worker)
        if seen is None:
            seen = self._workers[worker] = _WorkerSeen(now)
        seen.keys.add(key)
        self._missing.pop(key, None)
        if attempt.cancel:
            self._send_cancel(attempt)

    def _taken(self, attempt: _Attempt) -> None:
        """A worker took this attempt from this transport: its execution is live."""
        execution = attempt.run.execution_id
        if execution not in self._live:
            self._live[execution] = None
            if len(self._live) > LIVE_EXECUTIONS:
                self._live.popitem(last=False)  # its next dispatch just asks for the server's answer

    def _keep_orphan(self, key: str, status: str, result: Any, error: str | None) -> None:
        self._orphans[key] = (time.monotonic(), status, result, error)
        while len(self._orphans) > 10_000:
            self._orphans.popitem(last=False)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            worker, mine = decode_heartbeat(msg.data, self.engine_id)
        except BadMessage as exc:
            await report_bad_input(
                self._nc, self.subjects, msg, "bad_heartbeat", exc.reason, engine_id=self.engine_id
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
            if attempt.worker is None:
                self._assign(attempt, worker, now)  # its started event is late, or was taken before a restart
            elif attempt.worker != worker:
                continue  # the first worker seen with it holds it (another is lying or late)
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
                    self._confirm(everything=True)  # what was on its way may be lost
                    self._publisher.sweep(resend_all=True)
                    self._publisher.kick()
                    await self._puller.maintain(reconnected=True)
                else:
                    self._confirm()
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
                key, (at, *_) = next(iter(self._orphans.items()))
                if now - at < 60.0:
                    break
                self._orphans.popitem(last=False)
