"""NatsTransport on its own against a real nats-server, with the test playing the worker's side of the
protocol (taking dispatches from the runs stream, publishing results batches and heartbeats), and the
`Worker` class run in-process for what only a worker decides (redeliveries, drain).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers import eventually as until
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from attune_actors import codec
from attune_actors.config import NatsSettings
from attune_actors.kv.masking import Masker
from attune_actors.nats.connection import connect
from attune_actors.nats.payload import PayloadCipher
from attune_actors.nats.subjects import Subjects
from attune_actors.nats.transport import NatsTransport
from attune_actors.nats.wire import MSG_ID, decode_dispatch, encode_dispatch
from attune_actors.nats.worker import Worker
from attune_actors.spec.packs import Catalog, load_packs
from attune_actors.transport.base import ActionRun, RunOutcome

WORKER_PACKS = Path(__file__).parent / "worker_packs"
ENGINE = "t-engine"
TIMEOUT = 0.5  # heartbeat_timeout of the transport under test
S = Subjects()
T = TypeVar("T")


def attempt(run_id: str = "ex1.1", *, action: str = "natstest.whoami", item: int | None = None,
            attempt: int = 1, parameters: dict[str, Any] | None = None,
            deadline: float | None = None) -> ActionRun:
    return ActionRun("ex1", run_id, item, attempt, "t", action, parameters or {}, deadline)


@dataclass
class Rig:
    nc: Client
    transport: NatsTransport
    catalog: Catalog
    outcomes: list[RunOutcome] = field(default_factory=list)

    def submit(self, run: ActionRun) -> None:
        self.transport.submit(run, self.outcomes.append)

    async def take(self, n: int = 1) -> list[Msg]:
        """Take dispatches from the runs stream as a worker would (and acknowledge them)."""
        psub = await self.nc.jetstream().pull_subscribe_bind("workers", stream=S.runs_stream)
        msgs = await psub.fetch(n, timeout=5)
        for msg in msgs:
            await msg.ack()
        await psub.unsubscribe()
        return msgs

    async def report(self, worker: str, *events: list[Any]) -> None:
        await self.nc.jetstream().publish(S.results(ENGINE), codec.encode([1, worker, *events]))

    async def heartbeat(self, worker: str, keys: list[str]) -> None:
        body = {"v": 1, "worker": worker, "pid": 0, "interval": 0.1, "concurrency": 1, "draining": False,
                "running": {ENGINE: keys}}
        await self.nc.publish(S.heartbeats, codec.encode(body))

    async def outcome(self, count: int = 1) -> RunOutcome:
        await until(lambda: len(self.outcomes) >= count, f"{count} outcome(s)")
        return self.outcomes[count - 1]


@pytest.fixture
async def rig(nats_server: Any) -> AsyncIterator[Rig]:
    nc = await connect(NatsSettings(url=nats_server.url), name="transport test")
    catalog, problems = load_packs([WORKER_PACKS])
    assert not problems
    transport = NatsTransport(nc, S, engine_id=ENGINE, actions=catalog.action, heartbeat_timeout=TIMEOUT)
    await transport.start()
    js = nc.jetstream()
    await js.add_consumer(S.runs_stream, ConsumerConfig(durable_name="workers", filter_subject=S.runs_all))
    try:
        yield Rig(nc, transport, catalog)
    finally:
        await transport.close()
        await nc.close()


async def test_dispatch_goes_to_the_pack_runner_subject_with_a_message_id(rig: Rig) -> None:
    run = attempt(item=3, attempt=2, parameters={"seconds": 0.5}, deadline=time.time() + 60)
    rig.submit(run)
    (msg,) = await rig.take()
    assert msg.subject == S.runs("natstest", "python", run.key)
    assert msg.headers is not None
    assert msg.headers[MSG_ID].startswith(f"{run.key}@")
    dispatch = decode_dispatch(msg.data)
    engine, decoded = dispatch.engine, dispatch.run
    assert engine == ENGINE
    assert decoded == run


async def test_an_outcome_is_applied_once(rig: Rig) -> None:
    run = attempt()
    rig.submit(run)
    await rig.take()
    start = time.time()
    await rig.report("w", ["s", run.key, start])
    await rig.report("w", ["e", run.key, start, "succeeded", {"pid": 1}, None],
                     ["e", run.key, start, "failed", None, "a duplicate"])
    await rig.report("w", ["e", run.key, start, "failed", None, "redelivered"])
    outcome = await rig.outcome()
    assert outcome == RunOutcome(run.run_id, None, 1, "succeeded", {"pid": 1}, None)
    # a later, valid attempt is still served: nothing else arrived for the first one
    second = attempt(attempt=2)
    rig.submit(second)
    await rig.take()
    await rig.report("w", ["e", second.key, time.time(), "failed", None, "boom"])
    assert (await rig.outcome(2)).error == "boom"
    assert len(rig.outcomes) == 2
    assert len(rig.transport.dispatch_latencies) == 2


async def test_an_outcome_that_arrives_before_its_submit_is_delivered_on_submit(rig: Rig) -> None:
    run = attempt("ex9.4")  # e.g. an engine restarted with the same id re-submits an attempt that ended
    await rig.report("w", ["e", run.key, time.time(), "succeeded", 42, None])
    js = rig.nc.jetstream()

    async def taken() -> bool:
        return (await js.stream_info(S.results_stream)).state.messages == 0

    await until(taken, "the engine to take the early outcome")
    rig.submit(run)
    assert (await rig.outcome()).result == 42
    info = await rig.nc.jetstream().stream_info(S.runs_stream)
    assert info.state.messages == 0  # not dispatched again


async def test_an_attempt_a_worker_still_runs_is_not_dispatched_again(rig: Rig) -> None:
    run = attempt("ex8.2")  # taken by a worker before the engine (with this id) crashed and came back
    hb_seen = asyncio.Event()

    async def on_hb(msg: Msg) -> None:
        hb_seen.set()

    await rig.nc.subscribe(S.heartbeats, cb=on_hb)
    await rig.heartbeat("w3", [run.key])
    await asyncio.wait_for(hb_seen.wait(), 5)
    await rig.nc.flush()
    rig.submit(run)
    await rig.report("w3", ["e", run.key, time.time(), "succeeded", "done", None])
    assert (await rig.outcome()).result == "done"
    info = await rig.nc.jetstream().stream_info(S.runs_stream)
    assert info.state.messages == 0


async def test_a_stale_canceled_outcome_is_not_kept_for_a_later_submit(rig: Rig) -> None:
    run = attempt("ex7.1")
    await rig.report("w", ["e", run.key, time.time(), "canceled", None, "canceled"])
    js = rig.nc.jetstream()

    async def taken() -> bool:
        return (await js.stream_info(S.results_stream)).state.messages == 0

    await until(taken, "the engine to take the stale outcome")
    rig.submit(run)
    (msg,) = await rig.take()  # dispatched: it has to run again
    assert decode_dispatch(msg.data).run == run
    assert rig.outcomes == []


async def test_a_silent_worker_s_attempt_is_abandoned(rig: Rig) -> None:
    run = attempt()
    rig.submit(run)
    await rig.take()
    await rig.report("w7", ["s", run.key, time.time()])
    began = time.monotonic()
    outcome = await rig.outcome()
    assert outcome.status == "abandoned"
    assert outcome.error == f"worker w7 stopped responding (no heartbeat for {TIMEOUT:g} s)"
    assert time.monotonic() - began >= TIMEOUT * 0.9


async def test_heartbeats_keep_an_attempt_alive_until_they_stop_listing_it(rig: Rig) -> None:
    run = attempt()
    rig.submit(run)
    await rig.take()
    await rig.report("w8", ["s", run.key, time.time()])
    deadline = time.monotonic() + 3 * TIMEOUT
    while time.monotonic() < deadline:  # beating and listing it: it stays running
        await rig.heartbeat("w8", [run.key])
        await asyncio.sleep(TIMEOUT / 5)  # deliberate: paces the heartbeats under test
    assert rig.outcomes == []
    while not rig.outcomes:  # still beating, but it no longer holds the attempt
        await rig.heartbeat("w8", [])
        await asyncio.sleep(TIMEOUT / 5)  # deliberate: paces the heartbeats under test
    assert rig.outcomes[0].status == "abandoned"
    assert rig.outcomes[0].error == "worker w8 no longer runs this attempt"


async def test_cancel_before_start_is_sent_when_the_worker_reports_it(rig: Rig) -> None:
    cancels: list[Any] = []

    async def on_cancel(msg: Msg) -> None:
        cancels.append(codec.decode(msg.data))

    await rig.nc.subscribe(S.cancel("w9"), cb=on_cancel)
    run = attempt()
    rig.submit(run)
    rig.transport.cancel(run)
    await rig.take()
    assert cancels == []
    await rig.report("w9", ["s", run.key, time.time()])
    await until(lambda: cancels, "the cancel request")
    assert cancels[0]["keys"] == [run.key]
    # while the worker's heartbeats still list it, the request is repeated (about once a second)
    deadline = time.monotonic() + 5
    while len(cancels) < 2:
        assert time.monotonic() < deadline, "the cancel was not repeated"
        await rig.heartbeat("w9", [run.key])
        await asyncio.sleep(0.1)  # deliberate: polling with a deadline
    assert cancels[1]["keys"] == [run.key]


async def test_an_attempt_no_worker_started_by_its_deadline_times_out(rig: Rig) -> None:
    run = attempt(deadline=time.time() + 0.2)
    rig.submit(run)
    outcome = await rig.outcome()
    assert outcome.status == "timeout"
    assert outcome.error == "natstest.whoami timed out before a worker started it"


async def test_bad_submits_fail_at_once(rig: Rig) -> None:
    rig.submit(attempt(action="natstest.nope"))
    rig.submit(attempt("ex1.2", parameters={"blob": "x" * (2 * 1024 * 1024)}))
    first, second = await rig.outcome(1), await rig.outcome(2)
    assert first.status == "failed"
    assert first.error is not None
    assert "unknown action or workflow 'natstest.nope'" in first.error
    assert second.status == "failed"
    assert second.error is not None
    assert "too large to send to a worker" in second.error


async def test_bad_results_are_dead_lettered_and_the_transport_keeps_serving(rig: Rig) -> None:
    dead: list[dict[str, Any]] = []

    async def on_dead(msg: Msg) -> None:
        dead.append(json.loads(msg.data))

    await rig.nc.subscribe(S.dead_letters, cb=on_dead)
    js = rig.nc.jetstream()
    await js.publish(S.results(ENGINE), b"\xc1")
    await js.publish(S.results(ENGINE), codec.encode([1, "w", ["e", "k", 0, "exploded", None, None]]))
    await rig.nc.publish(S.heartbeats, b"{}")
    await until(lambda: len(dead) >= 3, "three dead-letter records")
    assert sorted(d["code"] for d in dead) == ["bad_heartbeat", "bad_result", "bad_result"]
    run = attempt()
    rig.submit(run)
    await rig.take()
    await rig.report("w", ["e", run.key, time.time(), "succeeded", None, None])
    assert (await rig.outcome()).status == "succeeded"


async def test_a_submit_while_the_server_is_down_is_sent_once_it_is_back(rig: Rig, nats_server: Any) -> None:
    await asyncio.to_thread(nats_server.stop)
    await until(lambda: not rig.nc.is_connected, "the disconnect")
    run = attempt()
    rig.submit(run)
    await asyncio.to_thread(nats_server.start)
    js = rig.nc.jetstream()

    async def stored() -> bool:
        return (await js.stream_info(S.runs_stream)).state.messages > 0

    await until(stored, "the dispatch to be stored", timeout=20)
    await rig.transport.close()  # nothing is re-sent after this: exactly one copy was stored
    info = await js.stream_info(S.runs_stream)
    assert info.state.messages == 1
    (msg,) = await rig.take()
    assert decode_dispatch(msg.data).run == run


# ------------------------------------------------- dispatches sent without waiting for the server's ack


async def make_live(rig: Rig, *, started: bool = True) -> None:
    """Run one attempt of execution ex1 through the rig: a worker took one of its attempts (reported
    `started`, or only its outcome: a noop's), so the transport sends its next dispatches without
    waiting for the server's acknowledgement."""
    first = attempt("ex1.0")
    rig.submit(first)
    await rig.take()
    now = time.time()
    ended = ["e", first.key, now, "succeeded", None, None]
    await rig.report("w", *([["s", first.key, now], ended] if started else [ended]))
    await rig.outcome()
    rig.outcomes.clear()


async def test_a_dispatch_the_server_dropped_is_published_again_and_stored_once(rig: Rig) -> None:
    await make_live(rig)
    rig.transport.confirm_after = 0.2
    js = rig.nc.jetstream()
    config = (await js.stream_info(S.runs_stream)).config
    await js.delete_stream(S.runs_stream)  # what is sent meanwhile is dropped: no stream holds it
    run = attempt()
    rig.submit(run)
    dropped = attempt("ex1.2")
    rig.submit(dropped)
    await rig.nc.flush()
    await js.add_stream(config)
    await js.add_consumer(S.runs_stream, ConsumerConfig(durable_name="workers", filter_subject=S.runs_all))

    async def stored() -> bool:
        return (await js.stream_info(S.runs_stream)).state.messages >= 2

    await until(stored, "both dispatches to be stored", timeout=20)
    msgs = await rig.take(3)
    assert sorted(decode_dispatch(m.data).run.run_id for m in msgs) == ["ex1.1", "ex1.2"]
    await rig.report("w", ["e", run.key, time.time(), "succeeded", None, None],
                     ["e", dropped.key, time.time(), "succeeded", None, None])
    await rig.outcome(2)
    assert {o.status for o in rig.outcomes} == {"succeeded"}
    assert (await js.stream_info(S.runs_stream)).state.messages == 0


@pytest.mark.parametrize("started", [True, False], ids=["started-reported", "outcome-only"])
async def test_a_dispatch_no_worker_takes_in_time_stays_queued_once(
    rig: Rig, caplog: pytest.LogCaptureFixture, started: bool
) -> None:
    caplog.set_level(logging.DEBUG, logger="attune_actors.nats.transport")
    await make_live(rig, started=started)
    rig.transport.confirm_after = 0.1
    js = rig.nc.jetstream()
    run = attempt()
    rig.submit(run)
    # published again, acknowledged, after confirm_after: refused (queued already), found to be ours
    await until(lambda: "was queued before" in caplog.text, "the transport to check the queued copy")
    (checked,) = [r for r in caplog.records if "was queued before" in r.getMessage()]
    assert checked.levelno == logging.DEBUG  # its own copy waiting for a worker: no news
    later = attempt("ex1.2")
    rig.submit(later)  # for a while every dispatch asks for the server's acknowledgement

    async def both_stored() -> bool:
        return (await js.stream_info(S.runs_stream)).state.messages == 2

    await until(both_stored, "the second dispatch to be stored")
    msgs = await rig.take(3)
    assert sorted(decode_dispatch(m.data).run.run_id for m in msgs) == ["ex1.1", "ex1.2"]
    await rig.report("w", ["e", run.key, time.time(), "succeeded", None, None],
                     ["e", later.key, time.time(), "succeeded", None, None])
    await rig.outcome(2)
    assert [o.status for o in rig.outcomes] == ["succeeded", "succeeded"]


async def test_a_dispatch_written_just_before_a_server_restart_is_stored_and_run_once(
    rig: Rig, nats_server: Any
) -> None:
    await make_live(rig)
    rig.transport.confirm_after = 0.2
    run = attempt()
    written = rig.nc.stats["out_msgs"]
    rig.submit(run)  # written from the submitting code, asking for no acknowledgement
    await until(lambda: rig.nc.stats["out_msgs"] > written, "the dispatch to be written")
    await asyncio.to_thread(nats_server.restart)
    await until(lambda: rig.nc.is_connected, "the reconnect", timeout=20)
    js = rig.nc.jetstream()

    async def stored() -> bool:
        return (await js.stream_info(S.runs_stream)).state.messages > 0

    await until(stored, "the dispatch to be stored", timeout=20)
    msgs = await rig.take(3)
    assert [decode_dispatch(m.data).run.run_id for m in msgs] == ["ex1.1"]
    await rig.report("w", ["e", run.key, time.time(), "succeeded", None, None])
    assert (await rig.outcome()).status == "succeeded"
    await rig.transport.close()  # nothing is re-sent after this
    assert (await js.stream_info(S.runs_stream)).state.messages == 0


async def test_an_applied_outcome_is_acknowledged_though_no_dispatch_follows(rig: Rig) -> None:
    run = attempt()
    rig.submit(run)
    await rig.take()
    await rig.report("w", ["e", run.key, time.time(), "succeeded", None, None])
    await rig.outcome()
    js = rig.nc.jetstream()

    async def acknowledged() -> bool:
        return (await js.stream_info(S.results_stream)).state.messages == 0

    await until(acknowledged, "the outcome to be acknowledged")


async def test_a_dispatch_the_stream_refuses_fails_with_the_server_s_reason(nats_server: Any) -> None:
    nc = await connect(NatsSettings(url=nats_server.url), name="transport test")
    catalog, problems = load_packs([WORKER_PACKS])
    assert not problems
    js = nc.jetstream()
    # created by someone else with a smaller message limit than the engine's: kept as it is
    await js.add_stream(name=S.runs_stream, subjects=[S.runs_all], retention="workqueue", max_msg_size=2048)
    transport = NatsTransport(nc, S, engine_id=ENGINE, actions=catalog.action, confirm_after=0.2)
    await transport.start()
    outcomes: list[RunOutcome] = []
    try:
        first = attempt("ex1.0")  # a worker started one of ex1's attempts: the next go unacknowledged
        transport.submit(first, outcomes.append)
        await js.publish(S.results(ENGINE), codec.encode(
            [1, "w", ["s", first.key, time.time()], ["e", first.key, time.time(), "succeeded", None, None]]
        ))
        await until(lambda: outcomes, "the first outcome")
        outcomes.clear()
        await js.purge_stream(S.runs_stream)
        transport.submit(attempt(parameters={"blob": "x" * 4000}), outcomes.append)
        transport.submit(attempt("ex1.2", parameters={"seconds": 0}), outcomes.append)
        await until(lambda: outcomes, "the refusal")
        (refusal,) = outcomes
        assert refusal.run_id == "ex1.1"
        assert refusal.status == "failed"
        assert refusal.error is not None
        assert refusal.error.startswith("cannot dispatch natstest.whoami: ")
        assert "maximum" in refusal.error
        assert (await js.stream_info(S.runs_stream)).state.messages == 1  # the other one went out
    finally:
        await transport.close()
        await nc.close()


# ------------------------------------------------------------------------------- the worker in-process


async def test_worker_runs_a_redelivered_attempt_once_and_drains(rig: Rig, tmp_path: Path) -> None:
    await rig.nc.jetstream().delete_consumer(S.runs_stream, "workers")  # the worker creates its own
    worker = Worker(rig.nc, S, rig.catalog, worker_id="inproc", concurrency=4, heartbeat_interval=0.1)
    serving = asyncio.get_running_loop().create_task(worker.run())
    markers = tmp_path / "m"
    markers.mkdir()
    run = attempt(action="natstest.slow", parameters={"seconds": 0.3, "marker_dir": str(markers)})
    rig.submit(run)
    # the same attempt again under another message id: the server keeps both, the worker runs one
    await rig.nc.jetstream().publish(S.runs("natstest", "python", run.key),
                                     encode_dispatch(ENGINE, run, "python"), headers={MSG_ID: "another"})
    await until(lambda: list(markers.iterdir()), "the run to start")
    await worker.drain()
    assert serving.done()
    outcome = await rig.outcome()
    assert outcome.status == "succeeded"
    assert len(list(markers.iterdir())) == 1
    assert worker.runs_started == 1
    info = await rig.nc.jetstream().stream_info(S.runs_stream)
    assert info.state.messages == 0  # both acknowledged


# ------------------------------------------------------------------------- trust: workers and payloads

KEY = PayloadCipher(bytes(range(32)))
SECRET = "S3cr3t-value-77"


async def test_an_outcome_from_another_worker_is_refused_and_the_real_one_applied(rig: Rig) -> None:
    dead: list[dict[str, Any]] = []

    async def on_dead(msg: Msg) -> None:
        dead.append(json.loads(msg.data))

    await rig.nc.subscribe(S.dead_letters, cb=on_dead)
    run = attempt()
    rig.submit(run)
    await rig.take()
    start = time.time()
    await rig.report("w-real", ["s", run.key, start])
    # The real worker's heartbeat goes first on the same connection as the forger's, so the engine
    # hears w-real claim the attempt before mallory does, whenever the JetStream report arrives.
    await rig.heartbeat("w-real", [run.key])
    # a forger with a worker credential: a heartbeat claiming the attempt, then its outcome
    await rig.heartbeat("mallory", [run.key])
    await rig.report("mallory", ["e", run.key, start, "succeeded", {"pid": 666}, None])
    await until(lambda: dead, "the forged outcome to be dead-lettered")
    assert dead[0]["code"] == "refused_result"
    assert dead[0]["reason"] == f"worker mallory reported on {run.key}, which worker w-real took"
    assert rig.outcomes == []
    await rig.report("w-real", ["e", run.key, start, "succeeded", {"pid": 1}, None])
    assert (await rig.outcome()).result == {"pid": 1}


@pytest.fixture
async def sealed(rig: Rig) -> AsyncIterator[NatsTransport]:
    """A second engine on the rig's connection, with a payload key, for which `SECRET` is a secret."""
    transport = NatsTransport(
        rig.nc, S, engine_id="sealed-engine", actions=rig.catalog.action, heartbeat_timeout=5.0,
        cipher=KEY, secrets_in=Masker([SECRET]).found_in,
    )
    await transport.start()
    await rig.nc.jetstream().delete_consumer(S.runs_stream, "workers")  # the worker creates its own
    yield transport
    await transport.close()


async def run_on_worker(rig: Rig, transport: NatsTransport, run: ActionRun, cipher: PayloadCipher | None,
                        seen: list[bytes] | None = None) -> RunOutcome:
    """`run` through `transport` and an in-process worker with `cipher`; every message on the bus into
    `seen`."""
    if seen is not None:
        async def snoop(msg: Msg) -> None:
            seen.append(msg.subject.encode() + json.dumps(msg.headers or {}).encode() + msg.data)

        await rig.nc.subscribe(">", cb=snoop)
    worker = Worker(rig.nc, S, rig.catalog, worker_id="w1", heartbeat_interval=0.1, cipher=cipher,
                    masker=Masker())
    serving = asyncio.get_running_loop().create_task(worker.run())
    outcomes: list[RunOutcome] = []
    transport.submit(run, outcomes.append)
    try:
        await until(lambda: outcomes, "the outcome")
    finally:
        await worker.drain()
        await serving
    return outcomes[0]


async def test_sealed_parameters_and_outcomes_cross_the_bus_encrypted(
    rig: Rig, sealed: NatsTransport
) -> None:
    seen: list[bytes] = []
    run = attempt(action="core.echo", parameters={"header": f"Bearer {SECRET}", "n": 3})
    outcome = await run_on_worker(rig, sealed, run, KEY, seen)
    assert outcome.status == "succeeded"
    assert outcome.result == {"header": f"Bearer {SECRET}", "n": 3}
    assert any(b".runs." in m for m in seen)
    assert any(b".results." in m for m in seen)
    assert [m[:200] for m in seen if SECRET.encode() in m] == []
    dispatches = [m for m in seen if m.startswith(S.runs("core", "echo", run.key).encode())]
    assert dispatches  # the publish and its delivery to the worker: neither holds any parameter
    assert [m for m in dispatches if b"Bearer" in m] == []


async def test_a_secret_is_not_dispatched_without_a_payload_key(rig: Rig) -> None:
    clear = NatsTransport(
        rig.nc, S, engine_id="clear-engine", actions=rig.catalog.action, secrets_in=Masker([SECRET]).found_in
    )
    await clear.start()
    outcomes: list[RunOutcome] = []
    try:
        clear.submit(attempt(parameters={"seconds": 0, "password": SECRET}), outcomes.append)
        clear.submit(attempt("ex1.2", parameters={"seconds": 0}), outcomes.append)
        await until(lambda: outcomes, "the refusal")
        (msg,) = await rig.take()  # only the run without a secret went out
    finally:
        await clear.close()
    assert decode_dispatch(msg.data).run.run_id == "ex1.2"
    (refusal,) = outcomes
    assert refusal.status == "failed"
    assert refusal.error is not None
    assert "its parameters hold a secret" in refusal.error
    assert "nats.payload_key" in refusal.error


async def test_a_worker_without_the_key_or_with_another_fails_the_attempt_clearly(
    rig: Rig, sealed: NatsTransport
) -> None:
    run = attempt(action="core.echo", parameters={"x": SECRET})
    without = await run_on_worker(rig, sealed, run, None)
    assert without.status == "failed"
    assert without.error is not None
    assert "this worker has no nats.payload_key" in without.error
    other = await run_on_worker(rig, sealed, attempt(action="core.echo", attempt=2), PayloadCipher(bytes(32)))
    assert other.status == "failed"
    assert other.error is not None
    assert "do not open with this worker's nats.payload_key" in other.error
