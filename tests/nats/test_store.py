"""The `nats` store on a real nats-server: MemoryStore's answers, atomic group commits, durability.

Every test runs its own nats-server (JetStream in a temp dir). Nothing is mocked: server restarts
and SIGKILLed writers are real.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually as wait_for
from helpers import execution_reaches as until
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.js.errors import NoKeysError
from nats.js.kv import _is_key_valid

from attune_actors import Engine
from attune_actors.config import NatsSettings
from attune_actors.errors import StoreError
from attune_actors.nats.connection import connect
from attune_actors.nats.store import NatsStore, escape_path, escape_token, unescape
from attune_actors.nats.subjects import Subjects
from attune_actors.store.base import HeaderBase, ItemRecord, MemoryStore, Store

REPO = Path(__file__).resolve().parents[2]
STATUSES = ("requested", "running", "paused", "succeeded", "failed", "canceled")


def header(eid: str, status: str = "running", *, parent_id: str | None = None,
           started_at: float | None = 100.0, **extra: Any) -> dict[str, Any]:
    """A header shaped like Conductor.header() (plus whatever a test adds)."""
    return {"id": eid, "ref": "pack.flow", "status": status, "vars": {"n": 1}, "output": None,
            "error": None, "started_at": started_at, "ended_at": None, "parent_id": parent_id,
            "seq": 0, "inflight": 0, "paused_children": [], "failing": False, "ending": False,
            "barriers": {}, "timers": [], "staged": [], **extra}


def run(run_id: str, seq: int, status: str = "running", **extra: Any) -> dict[str, Any]:
    """A task run record shaped like TaskRun.to_record()."""
    return {"id": run_id, "task": f"t{seq}", "seq": seq, "status": status, "result": None,
            "error": None, "attempts": 1, "started_at": 100.0, "ended_at": None, "group": None,
            "input": {"x": seq}, "deadline": None, "inquiry_id": None, "child_id": None,
            "item_count": None, "next_item": 0, "pending_subs": 0, "handled": False, "fired": [],
            **extra}


def item(status: str, result: Any = None) -> list[Any]:
    """An ItemRun record."""
    return [status, result, None, 1, 100.0, None, None]


async def connected(url: str) -> Client:
    return await connect(NatsSettings(url=url), name="test")


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Client]:
    client = await connected(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def store(nc: Client) -> AsyncIterator[NatsStore]:
    s = NatsStore(nc, Subjects())
    await s.open()
    yield s
    await s.close()


async def reopened(nc: Client, **kwargs: Any) -> NatsStore:
    s = NatsStore(nc, Subjects(), **kwargs)
    await s.open()
    return s


# -- same answers as MemoryStore ------------------------------------------------------------------


class Pair:
    """The same writes to a MemoryStore and a NatsStore; `check` compares every read."""

    def __init__(self, nats_store: NatsStore) -> None:
        self.mem = MemoryStore()
        self.nats = nats_store
        self.stores: tuple[Store, ...] = (self.mem, nats_store)
        self.ids: list[str] = []
        self.digests: set[str] = set()

    def save(self, eid: str, hdr: dict[str, Any], runs: list[dict[str, Any]],
             items: list[ItemRecord]) -> None:
        if eid not in self.ids:
            self.ids.append(eid)
        for s in self.stores:
            s.save(eid, hdr, runs, items)

    def put_definition(self, ref: str, pack: str, source: str) -> None:
        for s in self.stores:
            s.put_definition(ref, pack, source)

    def delete_definition(self, ref: str) -> None:
        assert self.mem.delete_definition(ref) == self.nats.delete_definition(ref)

    def put_source(self, digest: str, pack: str, source: str) -> None:
        self.digests.add(digest)
        for s in self.stores:
            s.put_source(digest, pack, source)

    def check(self, other: Store | None = None) -> None:
        mem, got = self.mem, other or self.nats
        for eid in [*self.ids, "missing"]:
            assert got.load(eid) == mem.load(eid), eid
        for status in (None, *STATUSES):
            for limit in (None, 0, 1, 3):
                for parent_id in [None, *self.ids[:3], "missing"]:
                    for roots_only in (False, True):
                        kw: dict[str, Any] = {"status": status, "limit": limit,
                                              "parent_id": parent_id, "roots_only": roots_only}
                        assert got.headers(**kw) == mem.headers(**kw), kw
        assert got.unfinished() == mem.unfinished()
        assert got.definitions() == mem.definitions()
        for digest in [*self.digests, "missing"]:
            assert got.get_source(digest) == mem.get_source(digest)


@pytest.mark.parametrize("seed", range(3))
async def test_random_writes_match_memory_store_and_survive_reopening(nc: Client, seed: int) -> None:
    """Random writes, turns and flushes: reads agree now, and from a new store on the same bucket."""
    rng = random.Random(seed)
    store = await reopened(nc)
    p = Pair(store)
    run_seq: dict[str, int] = {}
    for step in range(300):
        op = rng.random()
        if op < 0.75:
            eid = f"e{rng.randrange(12)}"
            parent = None if eid in ("e0", "e1", "e2") else f"e{rng.randrange(3)}"
            runs = []
            for _ in range(rng.randrange(3)):
                rid = f"{eid}.{rng.randrange(4)}"
                seq = run_seq.setdefault(rid, len(run_seq))
                runs.append(run(rid, seq, rng.choice(STATUSES), attempts=step))
            items: list[ItemRecord] = [
                (f"{eid}.0", rng.randrange(5), item(rng.choice(STATUSES), step))
                for _ in range(rng.randrange(3))
            ]
            started = rng.choice((None, 100.0, 200.0, 200.0, float(step)))
            p.save(eid, header(eid, rng.choice(STATUSES), parent_id=parent, started_at=started,
                               step=step), runs, items)
        elif op < 0.82:
            p.put_definition(f"pack.w{rng.randrange(4)}", "pack", f"source {step}")
        elif op < 0.86:
            p.delete_definition(f"pack.w{rng.randrange(4)}")
        elif op < 0.9:
            p.put_source(f"d{rng.randrange(3)}", "pack", f"source {step}")
        elif op < 0.96:
            await asyncio.sleep(0)  # end the turn: the writer takes the batch  # deliberate: one loop turn
        else:
            await store.flush()
        if step % 50 == 0:
            p.check()
    p.check()
    await store.close()  # closing writes what is pending
    assert store.stats().failed_batches == 0
    again = await reopened(nc)
    try:
        p.check(again)  # ties in started_at keep the first-save order, as MemoryStore's
    finally:
        await again.close()


async def test_a_header_saved_in_two_parts_reads_back_whole(store: NatsStore, nc: Client) -> None:
    """The runtime encodes a header's fixed part once per execution (`HeaderBase`): the bucket
    holds the whole header, as a reopened store reads it."""
    whole = header("e", parent_id="root", system={"execution_id": "e"}, owner="me")
    fixed = ["id", "ref", "parent_id", "system", "owner"]
    base = HeaderBase({k: whole[k] for k in fixed})
    store.save("e", {k: v for k, v in whole.items() if k not in fixed}, [run("e.1", 1)], [], base)
    snap = store.load("e")
    assert snap is not None
    assert snap.header == whole
    await store.flush()
    again = await reopened(nc)
    try:
        snap = again.load("e")
        assert snap is not None
        assert snap.header == whole
        assert set(snap.runs) == {"e.1"}
        assert [h["id"] for h in again.headers(parent_id="root")] == ["e"]
    finally:
        await again.close()


async def test_flush_makes_a_turn_durable_in_one_atomic_batch(store: NatsStore, nc: Client) -> None:
    await store.flush()  # the `meta` key written at open
    before = store.stats()
    for i in range(1000):
        store.save("x", header("x", step=i), [run("x.1", 1, attempts=i)], [("x.1", 0, item("running", i))])
    for i in range(50):
        store.save(f"y{i}", header(f"y{i}"), [run(f"y{i}.1", 1)], [])
    await store.flush()
    stats = store.stats()
    assert stats.saves - before.saves == 1050
    assert stats.group_commits - before.group_commits == 1
    # x: header, run, item, creation mark; each y: header, run, mark. Once each: later saves coalesce.
    assert stats.records_written - before.records_written == 4 + 50 * 3
    assert stats.batches - before.batches == 1
    again = await reopened(nc)
    try:
        snap = again.load("x")
        assert snap is not None
        assert snap.header["step"] == 999
        assert snap.runs["x.1"]["attempts"] == 999
        assert snap.items == {("x.1", 0): item("running", 999)}
        assert len(again.headers()) == 51
    finally:
        await again.close()


async def test_a_group_commit_larger_than_a_batch_goes_in_several(nc: Client) -> None:
    store = await reopened(nc, batch_size=10)
    try:
        for i in range(30):
            store.save(f"e{i}", header(f"e{i}"), [run(f"e{i}.1", 1)], [])  # 3 messages each
        store.save("big", header("big"), [run(f"big.{n}", n) for n in range(25)], [])  # 27 messages
        await store.flush()
        assert store.stats().batches >= 9 + 3
    finally:
        await store.close()
    again = await reopened(nc)
    try:
        assert len(again.headers()) == 31
        snap = again.load("big")
        assert snap is not None
        assert len(snap.runs) == 25
    finally:
        await again.close()


# -- keys -----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_escaped_ids_are_valid_keys_and_round_trip(text: str) -> None:
    for escaped in (escape_token(text), escape_path(text)):
        assert _is_key_valid(escaped), escaped
        assert _is_key_valid(f"x.{escaped}.h"), escaped
        assert ".." not in escaped
        assert unescape(escaped) == text
    assert "." not in escape_token(text)


async def test_ids_with_any_characters_round_trip(store: NatsStore, nc: Client) -> None:
    odd = ["a.b", ".x", "x.", "a..b", "", "sp ace", "ü/é=*>", "=3D", "x.h", "*", ">", "r.1", "i.2.3"]
    for n, eid in enumerate(odd):
        rid = f"{eid}.{n}" if eid else "."
        store.save(eid, header(eid), [run(rid, n)], [(rid, n, item("running", eid))])
        store.put_definition(f"pack.{eid}", "pack", eid)
        store.put_source(f"d{eid}", "pack", eid)
    await store.close()
    again = await reopened(nc)
    try:
        for n, eid in enumerate(odd):
            rid = f"{eid}.{n}" if eid else "."
            snap = again.load(eid)
            assert snap is not None, eid
            assert snap.header["id"] == eid
            assert snap.runs == {rid: run(rid, n)}
            assert snap.items == {(rid, n): item("running", eid)}
            assert again.get_source(f"d{eid}") == ("pack", eid)
        assert again.definitions() == sorted((f"pack.{e}", "pack", e) for e in odd)
        assert again.unfinished() == odd  # in the order of first save
    finally:
        await again.close()


async def test_values_larger_than_max_payload_are_stored_in_parts(store: NatsStore, nc: Client) -> None:
    big = "x" * (nc.max_payload * 2 + 123)
    store.save("e", header("e", vars={"big": big}), [run("e.1", 1, result=big)], [])
    store.put_definition("pack.big", "pack", big)
    await store.flush()
    kv = await nc.jetstream().key_value(store.bucket)

    async def parts() -> list[str]:
        # nats-py's keys() lists through a watcher that may end before the first delivery under
        # load ("no keys found"): read again until the listing settles, within a deadline.
        try:
            return [k for k in await kv.keys() if k.startswith("p.")]
        except NoKeysError:
            return []

    await wait_for(lambda: _count_is(parts, 3 * 3), timeout=10)
    again = await reopened(nc)
    try:
        snap = again.load("e")
        assert snap is not None
        assert snap.header["vars"]["big"] == big
        assert snap.runs["e.1"]["result"] == big
        assert again.definitions() == [("pack.big", "pack", big)]
        # A smaller value replaces the parts: they are deleted in the same batch.
        again.save("e", header("e", vars={"big": "small"}), [run("e.1", 1, result=None)], [])
        again.delete_definition("pack.big")
        await again.flush()
    finally:
        await again.close()
    await wait_for(lambda: _count_is(parts, 0), timeout=10)
    third = await reopened(nc)
    try:
        snap = third.load("e")
        assert snap is not None
        assert snap.header["vars"]["big"] == "small"
        assert third.definitions() == []
    finally:
        await third.close()


async def _count_is(listing: Callable[[], Any], expected: int) -> bool:
    return len(await listing()) == expected


# -- the bucket -----------------------------------------------------------------------------------


async def test_bucket_settings_are_explicit(store: NatsStore, nc: Client) -> None:
    info = await nc.jetstream().stream_info(f"KV_{Subjects().snapshot_bucket}")
    config = info.config
    assert config.storage is not None
    assert config.storage == "file"
    assert config.num_replicas == 1
    assert config.max_msgs_per_subject == 1  # history 1
    assert not config.max_age  # no TTL: snapshots never expire
    assert config.allow_atomic
    assert config.allow_direct
    assert config.subjects == [f"$KV.{Subjects().snapshot_bucket}.>"]
    # It is a KV bucket like any other: nats-py binds it and reads a key.
    kv = await nc.jetstream().key_value(store.bucket)
    assert (await kv.get("meta")).value


async def test_a_bucket_with_other_storage_or_a_ttl_or_a_newer_format_is_refused(
    store: NatsStore, nc: Client
) -> None:
    await store.flush()
    with pytest.raises(StoreError, match="exists with file storage, not memory"):
        await reopened(nc, storage="memory")
    js = nc.jetstream()
    kv = await js.key_value(store.bucket)
    from attune_actors.codec import encode

    await kv.put("meta", encode({"format": 99}))
    with pytest.raises(StoreError, match="newer attune-actors"):
        await reopened(nc)
    other = NatsStore(nc, Subjects("ttl"))
    await js.create_key_value(bucket=Subjects("ttl").snapshot_bucket, ttl=60)
    with pytest.raises(StoreError, match="TTL of 60 s"):
        await other.open()


async def test_a_format_1_bucket_is_read_as_written_and_marked_format_2(store: NatsStore, nc: Client) -> None:
    """Format 1 (before the header carried active runs): run records are dicts, each with a key."""
    from attune_actors.codec import decode, encode

    await store.flush()
    await store.close()
    kv = await nc.jetstream().key_value(store.bucket)
    old_header = header("e1", parent_id=None)
    old_runs = {"e1.1": run("e1.1", 1, "succeeded", result={"ok": True}), "e1.2": run("e1.2", 2, "running")}
    await kv.put("meta", encode({"format": 1}))
    await kv.put("x.e1.n", b"")
    for rid, rec in old_runs.items():
        await kv.put(f"x.e1.r.{escape_path(rid)}", encode(rec))
    await kv.put(f"x.e1.i.{escape_path('e1.2')}.0", encode(item("running")))
    await kv.put("x.e1.h", encode(old_header))
    again = await reopened(nc)
    try:
        snap = again.load("e1")
        assert snap is not None
        assert snap.header == old_header
        assert snap.runs == old_runs
        assert snap.items == {("e1.2", 0): item("running")}
        assert again.headers() == [old_header]
        await again.flush()
        assert decode((await kv.get("meta")).value) == {"format": 2}
    finally:
        await again.close()


async def test_writes_are_refused_when_closed_or_from_another_thread(store: NatsStore) -> None:
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            store.save("t", header("t"), [], [])
        except StoreError as e:
            errors.append(e)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert "thread" in str(errors[0])
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        store.save("t", header("t"), [], [])
    with pytest.raises(StoreError, match="closed"):
        await store.flush()
    await store.close()  # twice is harmless


# -- failures and crashes -------------------------------------------------------------------------


async def test_saves_during_a_server_restart_are_kept_and_written_after(
    nats_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="attune_actors.nats.store")
    nc = await connected(nats_server.url)
    try:
        store = NatsStore(nc, Subjects(), ack_timeout=2.0)
        await store.open()
        for i in range(100):
            store.save(f"e{i}", header(f"e{i}", step=0), [run(f"e{i}.1", 1)], [])
        await store.flush()
        nats_server.stop()
        for i in range(100):
            store.save(f"e{i}", header(f"e{i}", step=1), [run(f"e{i}.1", 1, "succeeded")], [])
        store.save("during", header("during"), [], [])
        await wait_for(lambda: "cannot write" in caplog.text)
        assert store.pending() > 0
        nats_server.start()
        async with asyncio.timeout(30):
            await store.flush()
        assert "writes again" in caplog.text
        assert store.pending() == 0
        await store.close()
        again = await reopened(nc)
        try:
            assert len(again.headers()) == 101
            for i in range(100):
                snap = again.load(f"e{i}")
                assert snap is not None
                assert snap.header["step"] == 1
                assert snap.runs[f"e{i}.1"]["status"] == "succeeded"
        finally:
            await again.close()
    finally:
        await nc.close()


async def test_what_flush_returned_for_survives_a_sigkilled_server(nats_server: Any) -> None:
    nc = await connected(nats_server.url)
    try:
        store = await reopened(nc)
        for i in range(2000):
            rid = f"e{i}.1"
            store.save(f"e{i}", header(f"e{i}", step=i), [run(rid, 1)], [(rid, 0, item("running"))])
            if i % 100 == 99:
                await asyncio.sleep(0)  # deliberate: one loop turn
        await store.flush()
        reconnects = nc.stats["reconnects"]
        nats_server.proc.kill()  # no clean shutdown: what the server acknowledged must be in its files
        nats_server.proc.wait()
        nats_server.proc = None
        nats_server.start()
        await store.close()  # nothing pending: nothing to lose
        await wait_for(lambda: nc.is_connected and nc.stats["reconnects"] > reconnects, timeout=20)
        again = None
        async with asyncio.timeout(20):
            while again is None:  # JetStream may still be recovering its streams
                try:
                    again = await reopened(nc)
                except StoreError:
                    await asyncio.sleep(0.05)  # deliberate: polling with a deadline
        try:
            assert len(again.headers()) == 2000
            snap = again.load("e1999")
            assert snap is not None
            assert snap.header["step"] == 1999
            assert snap.items == {("e1999.1", 0): item("running")}
        finally:
            await again.close()
    finally:
        await nc.close()


async def test_close_gives_up_after_close_timeout_and_says_what_is_lost(nats_server: Any) -> None:
    nc = await connected(nats_server.url)
    try:
        store = NatsStore(nc, Subjects(), ack_timeout=0.5, close_timeout=1.0)
        await store.open()
        await store.flush()
        nats_server.stop()
        store.save("lost", header("lost"), [run("lost.1", 1)], [])
        with pytest.raises(StoreError, match=r"3 pending records could not be written and are lost"):
            await store.close()
    finally:
        await nc.close()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from attune_actors.config import NatsSettings
    from attune_actors.nats.connection import connect
    from attune_actors.nats.store import NatsStore
    from attune_actors.nats.subjects import Subjects

    async def main() -> None:
        nc = await connect(NatsSettings(url=sys.argv[1]), name="writer")
        store = NatsStore(nc, Subjects())
        await store.open()
        i = 0
        while True:
            for _ in range(20):
                eid = f"e{i}"
                store.save(eid, {"id": eid, "status": "running", "parent_id": None, "started_at": float(i),
                                 "vars": {"i": i}}, [{"id": f"{eid}.1", "seq": 1, "attempts": i}], [])
                store.save("counter", {"id": "counter", "status": "running", "parent_id": None,
                                       "started_at": 0.0, "vars": {"n": i}}, [], [])
                i += 1
            await store.flush()
            print(i - 1, flush=True)  # every save up to i - 1 is acknowledged
            for _ in range(5):
                await asyncio.sleep(0)  # deliberate: a batch goes in flight, unawaited

    asyncio.run(main())
    """
)


async def test_what_flush_returned_for_survives_sigkill(nats_server: Any, nc: Client) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, nats_server.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    flushed = -1
    try:
        async with asyncio.timeout(60):
            while flushed < 2000:
                line = await proc.stdout.readline()
                assert line, (await proc.stderr.read()).decode()[-3000:]
                flushed = int(line)
        proc.send_signal(signal.SIGKILL)  # mid-flight: saves pending, a batch unacknowledged
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    store = await reopened(nc)
    try:
        counter = store.load("counter")
        assert counter is not None
        assert counter.header["vars"]["n"] >= flushed
        for i in range(flushed + 1):
            snap = store.load(f"e{i}")
            assert snap is not None, i
            assert snap.header["vars"] == {"i": i}
            assert snap.runs[f"e{i}.1"]["attempts"] == i
        # What was written after the last flush is whole, per execution, or absent.
        n = counter.header["vars"]["n"]
        for i in range(flushed + 1, n + 1):
            snap = store.load(f"e{i}")
            assert snap is not None
            assert f"e{i}.1" in snap.runs
    finally:
        await store.close()


# -- an engine on the nats store ------------------------------------------------------------------


async def test_engine_closed_mid_run_resumes_on_a_new_nats_store(
    nats_server: Any, workflow: Callable[..., str], packs_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "attempts.log"
    slow = workflow(
        "slowseq",
        f"""
        tasks:
          - {{name: a, action: testpack.flaky, input: {{succeed_on: 1, log_file: "{log}"}}, on_success: b}}
          - {{name: b, action: testpack.wait, input: {{seconds: 1.0}}, on_success: c}}
          - name: c
            action: testpack.flaky
            input: {{succeed_on: 2, log_file: "{log}"}}
            retry: {{count: 3, delay: 0.01}}
    """,
    )
    paused = workflow(
        "topause",
        """
        tasks:
          - {name: x, action: testpack.wait, input: {seconds: 0.01}, on_success: y}
          - {name: y, action: core.noop}
    """,
    )
    asking = workflow(
        "asking",
        """
        tasks:
          - {name: q, action: core.inquiry, input: {prompt: "ok?", schema: {type: boolean}}}
    """,
    )
    deadline = workflow(
        "deadline",
        """
        timeout: 1.5
        tasks:
          - {name: forever, action: testpack.wait, input: {seconds: 30}}
    """,
    )
    data = tmp_path / "data"
    nc1 = await connected(nats_server.url)
    first = Engine(packs=[packs_dir], data_dir=data, store=NatsStore(nc1, Subjects()))
    await first.start()
    try:
        e1 = await first.execute(slow)
        e2 = await first.execute(paused)
        await first.pause(e2.id)
        e3 = await first.execute(asking)
        e4 = await first.execute(deadline)
        await until(first, e1.id, lambda e: any(t.name == "b" and t.status == "running" for t in e.tasks))
        await until(first, e2.id, lambda e: e.status == "paused")
        await until(first, e3.id, lambda e: e.tasks and e.tasks[0].status == "pending")
        await until(first, e4.id, lambda e: e.tasks and e.tasks[0].status == "running")
        inquiry_id = (await first.get(e3.id)).tasks[0].inquiry_id
    finally:
        await first.close()  # as if the process ended: nothing is finished
        await nc1.close()

    nc2 = await connected(nats_server.url)
    second = Engine(packs=[packs_dir], data_dir=data, store=NatsStore(nc2, Subjects()))
    await second.start()
    try:
        assert (await second.get(e2.id)).status == "paused"
        [pending] = await second.inquiries()
        assert pending["id"] == inquiry_id
        await second.respond(inquiry_id, True)
        await second.resume(e2.id)
        assert (await second.wait(e3.id, timeout=10)).task("q").result is True
        assert (await second.wait(e2.id, timeout=10)).status == "succeeded"
        done = await second.wait(e1.id, timeout=20)
        assert done.status == "succeeded"
        # `a` finished before the restart: never dispatched again; `c` failed once, then succeeded.
        attempts = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(a["run_id"].rsplit(".", 1)[0] == e1.id, a["attempt"]) for a in attempts] == [
            (True, 1), (True, 1), (True, 2)
        ]
        timed_out = await second.wait(e4.id, timeout=10)
        assert timed_out.status == "timeout"
        history = {e.id: e.status for e in await second.list()}
        assert history == {e1.id: "succeeded", e2.id: "succeeded", e3.id: "succeeded", e4.id: "timeout"}
    finally:
        await second.close()
        await nc2.close()
    # A third store on the same bucket sees every execution finished.
    nc3 = await connected(nats_server.url)
    try:
        third = await reopened(nc3)
        assert third.unfinished() == []
        await third.close()
    finally:
        await nc3.close()

