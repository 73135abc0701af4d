"""The SQLite store on real files: same answers as MemoryStore, group commit, durability, failures."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually

from attune_actors.codec import encode
from attune_actors.errors import StoreError
from attune_actors.kv import KVStore
from attune_actors.store import migrations
from attune_actors.store import sqlite as sqlite_store
from attune_actors.store.base import (
    HeaderBase,
    ItemRecord,
    ItemRow,
    Listing,
    MemoryStore,
    RunRow,
    Store,
    encode_step,
    run_record,
)
from attune_actors.store.sqlite import SQLiteStore

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


def encoded_step(
    hdr: dict[str, Any], runs: list[dict[str, Any]], items: list[ItemRecord], active: list[dict[str, Any]]
) -> tuple[bytes, Listing, list[RunRow], list[ItemRow]]:
    """A step's records as `Runtime.save_step` makes them: `active` runs carried by the header."""
    _blob, listing, rows, item_rows = encode_step(hdr, runs, items)
    carried = [encode(run_record(rec)) for rec in active]
    return HeaderBase({}).record(hdr, carried), listing, rows, item_rows


def item(status: str, result: Any = None) -> list[Any]:
    """An ItemRun record."""
    return [status, result, None, 1, 100.0, None, None]


def count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "attune.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(db)
    yield s
    await s.close()


# -- same answers as MemoryStore ------------------------------------------------------------------


class Pair:
    """The same writes to a MemoryStore and a SQLiteStore; `check` compares every read."""

    def __init__(self, sql: SQLiteStore) -> None:
        self.mem = MemoryStore()
        self.sql = sql
        self.stores: tuple[Store, ...] = (self.mem, sql)
        self.ids: list[str] = []
        self.refs: set[str] = set()
        self.digests: set[str] = set()

    def save(self, eid: str, hdr: dict[str, Any], runs: list[dict[str, Any]],
             items: list[ItemRecord], active: list[dict[str, Any]] | None = None) -> None:
        """Save a step; runs in `active` go in the header (as `Runtime.save_step` saves them)."""
        if eid not in self.ids:
            self.ids.append(eid)
        for s in self.stores:
            if active is None:
                s.save(eid, hdr, runs, items)
            else:
                s.save_encoded(eid, *encoded_step(hdr, runs, items, active))

    def put_definition(self, ref: str, pack: str, source: str) -> None:
        self.refs.add(ref)
        for s in self.stores:
            s.put_definition(ref, pack, source)

    def delete_definition(self, ref: str) -> None:
        assert self.mem.delete_definition(ref) == self.sql.delete_definition(ref)

    def put_source(self, digest: str, pack: str, source: str) -> None:
        self.digests.add(digest)
        for s in self.stores:
            s.put_source(digest, pack, source)

    def check(self, sql: SQLiteStore | None = None) -> None:
        mem, sql = self.mem, sql or self.sql
        for eid in [*self.ids, "missing"]:
            assert sql.load(eid) == mem.load(eid), eid
        parents = [None, *self.ids[:3], "missing"]
        for status in (None, *STATUSES):
            for limit in (None, 0, 1, 3):
                for parent_id in parents:
                    for roots_only in (False, True):
                        kw: dict[str, Any] = {"status": status, "limit": limit,
                                              "parent_id": parent_id, "roots_only": roots_only}
                        assert sql.headers(**kw) == mem.headers(**kw), kw
        assert sql.unfinished() == mem.unfinished()
        assert sql.definitions() == mem.definitions()
        for digest in [*self.digests, "missing"]:
            assert sql.get_source(digest) == mem.get_source(digest)


async def fixed_scenario(p: Pair) -> None:
    """Executions (roots, children, not started, ended), runs saved again, items, definitions."""
    p.save("a", header("a", "requested", started_at=None), [], [])
    p.save("b", header("b", "running", started_at=200.0), [run("b1", 1)], [])
    p.save("c", header("c", "requested", started_at=None, parent_id="b"), [], [])
    p.put_definition("pack.one", "pack", "tasks: []")
    p.put_source("d1", "pack", "v1")
    p.check()  # everything pending, nothing committed
    await p.sql.flush()
    p.check()  # everything committed
    p.save("a", header("a", "running", started_at=300.0), [run("a1", 1)], [])
    p.save("b", header("b", "running", started_at=200.0),
           [run("b1", 1, "succeeded", result={"ok": True}), run("b2", 2, item_count=3)],
           [("b2", 0, item("running")), ("b2", 2, item("succeeded", 5))])
    p.save("c", header("c", "running", started_at=200.0, parent_id="b"), [run("c1", 1)], [])
    p.save("d", header("d", "requested", started_at=None), [], [])
    p.put_definition("pack.two", "pack", "tasks: [2]")
    p.delete_definition("pack.one")
    p.delete_definition("pack.none")
    p.put_source("d1", "pack", "v1 again")
    p.put_source("d2", "other", "v2")
    p.check()  # pending on top of committed
    await asyncio.sleep(0)  # deliberate: one loop turn
    p.save("b", header("b", "succeeded", started_at=200.0, output={"r": 1}),
           [run("b2", 2, "succeeded", item_count=3)],
           [("b2", 0, item("succeeded", 1)), ("b2", 1, item("succeeded", 2))])
    p.save("e", header("e", "failed", started_at=50.0, parent_id="c"), [], [])
    p.check()
    await p.sql.flush()
    p.check()


async def test_fixed_scenario_matches_memory_store(store: SQLiteStore) -> None:
    await fixed_scenario(Pair(store))


async def test_fixed_scenario_survives_reopen(db: Path) -> None:
    store = SQLiteStore(db)
    p = Pair(store)
    await fixed_scenario(p)
    p.save("f", header("f", "running", started_at=400.0), [run("f1", 1)], [])
    await store.close()  # closing commits what is pending
    reopened = SQLiteStore(db)
    try:
        p.check(reopened)
    finally:
        await reopened.close()


@pytest.mark.parametrize("seed", range(6))
async def test_random_scenario_matches_memory_store(store: SQLiteStore, seed: int) -> None:
    """Random writes, turns and flushes: reads agree whatever is committed and what is pending."""
    rng = random.Random(seed)
    p = Pair(store)
    run_seq: dict[str, int] = {}
    for step in range(300):
        op = rng.random()
        if op < 0.75:
            eid = f"e{rng.randrange(12)}"
            parent = None if eid in ("e0", "e1", "e2") else f"e{rng.randrange(3)}"
            runs, active = [], []
            for _ in range(rng.randrange(3)):
                rid = f"{eid}-r{rng.randrange(4)}"
                seq = run_seq.setdefault(rid, len(run_seq))
                rec = run(rid, seq, rng.choice(STATUSES), attempts=step)
                (active if rng.random() < 0.4 else runs).append(rec)
            items: list[ItemRecord] = [
                (f"{eid}-r0", rng.randrange(5), item(rng.choice(STATUSES), step))
                for _ in range(rng.randrange(3))
            ]
            started = rng.choice((None, 100.0, 200.0, 200.0, float(step)))
            p.save(eid, header(eid, rng.choice(STATUSES), parent_id=parent, started_at=started,
                               step=step), runs, items, active if rng.random() < 0.5 else None)
        elif op < 0.82:
            p.put_definition(f"pack.w{rng.randrange(4)}", "pack", f"source {step}")
        elif op < 0.86:
            p.delete_definition(f"pack.w{rng.randrange(4)}")
        elif op < 0.9:
            p.put_source(f"d{rng.randrange(3)}", "pack", f"source {step}")
        elif op < 0.96:
            await asyncio.sleep(0)  # deliberate: end the turn, a commit starts in the background
        else:
            await p.sql.flush()
        if step % 25 == 0:
            p.check()
    p.check()
    await p.sql.flush()
    p.check()
    assert store.stats().failed_commits == 0


# -- a header in two parts (the runtime encodes its fixed part once per execution) ---------------


def split(whole: dict[str, Any], fixed: list[str]) -> tuple[dict[str, Any], HeaderBase]:
    return {k: v for k, v in whole.items() if k not in fixed}, HeaderBase({k: whole[k] for k in fixed})


@pytest.mark.parametrize(("fixed_extra", "step_extra"), [(0, 0), (40, 0), (0, 40), (20, 70000)],
                         ids=["small", "large-base", "large-step", "over-65535-fields"])
async def test_a_header_saved_in_two_parts_reads_back_whole(
    db: Path, fixed_extra: int, step_extra: int
) -> None:
    """Whatever the sizes of the two parts (msgpack counts maps in 4, 16 or 32 bits), the stored
    header is the whole one, in every store and after reopening; listing reads its parent."""
    whole = header("e", parent_id="root", system={"execution_id": "e"},
                   **{f"f{i}": i for i in range(fixed_extra)}, **{f"s{i}": [i] for i in range(step_extra)})
    step, base = split(whole, ["id", "ref", "parent_id", "system", *(f"f{i}" for i in range(fixed_extra))])
    sql = SQLiteStore(db)
    for store in (MemoryStore(), sql):
        store.save("e", step, [run("r", 1)], [], base)
        store.save("other", header("other"), [], [])
        snap = store.load("e")
        assert snap is not None
        assert snap.header == whole
        assert [h["id"] for h in store.headers(parent_id="root")] == ["e"]
        assert [h["id"] for h in store.headers(roots_only=True)] == ["other"]
    await sql.close()
    reopened = SQLiteStore(db)
    try:
        snap = reopened.load("e")
        assert snap is not None
        assert snap.header == whole
        assert set(snap.runs) == {"r"}
        assert [h["id"] for h in reopened.headers(parent_id="root")] == ["e"]
    finally:
        await reopened.close()


# -- group commit ---------------------------------------------------------------------------------


async def test_saves_of_one_row_in_a_turn_coalesce(store: SQLiteStore, db: Path) -> None:
    for i in range(1000):
        store.save("x", header("x", step=i), [run("r", 1, attempts=i)], [("r", 0, item("running", i))])
    await store.flush()
    stats = store.stats()
    assert stats.saves == 1000
    assert stats.commits == 1
    assert stats.rows_written == 3  # header, run, item: once each
    assert [count(db, t) for t in ("workflow_execution", "workflow_task_execution",
                                   "workflow_task_item")] == [1, 1, 1]
    snap = store.load("x")
    assert snap is not None
    assert snap.header["step"] == 999
    assert snap.runs["r"]["attempts"] == 999
    assert snap.items[("r", 0)] == item("running", 999)


@pytest.mark.parametrize("n", [1, 3, 1023, 1024, 1025, 2500])
async def test_batches_of_any_size_are_written_whole(store: SQLiteStore, db: Path, n: int) -> None:
    """Rows go in statements of up to 1024 rows, the rest in power-of-two pieces: none is lost."""
    for i in range(n):
        store.save(f"e{i}", header(f"e{i}", started_at=float(i)), [run(f"r{i}", i)], [])
    store.save("many", header("many"), [], [("r", i, item("ok", i)) for i in range(n)])
    await store.flush()
    assert store.stats().commits == 1
    assert count(db, "workflow_execution") == n + 1
    assert count(db, "workflow_task_execution") == n
    assert count(db, "workflow_task_item") == n
    last = store.load(f"e{n - 1}")
    assert last is not None
    assert set(last.runs) == {f"r{n - 1}"}
    many = store.load("many")
    assert many is not None
    assert many.items[("r", n - 1)] == item("ok", n - 1)


async def test_runs_of_executions_whose_num_the_writer_forgot_land_on_their_execution(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer keys runs by their execution's num and remembers it for a few executions only:
    the others' are read again, in the commit that needs them."""
    monkeypatch.setattr(sqlite_store, "_NUMS_KEPT", 2)
    store = SQLiteStore(db)
    try:
        for step in range(1, 4):
            for i in range(6):
                store.save(f"e{i}", header(f"e{i}", seq=step), [run(f"e{i}.{step}", step)],
                           [(f"e{i}.{step}", 0, item("ok", [i, step]))])
                if i % 2:
                    await store.flush()  # several commits per step, each knowing some nums
        await store.flush()
    finally:
        await store.close()
    reopened = SQLiteStore(db)
    try:
        for i in range(6):
            snap = reopened.load(f"e{i}")
            assert snap is not None
            assert list(snap.runs) == [f"e{i}.1", f"e{i}.2", f"e{i}.3"]
            assert snap.items == {(f"e{i}.{n}", 0): item("ok", [i, n]) for n in (1, 2, 3)}
    finally:
        await reopened.close()


async def test_a_save_right_after_a_commit_is_committed_without_a_flush(store: SQLiteStore) -> None:
    """Within the pacing interval after a commit, an idle writer is not woken at once: a timer on
    the loop wakes it when the interval ends, so the save is still committed on its own."""
    store.save("a", header("a"), [], [])
    await store.flush()
    store.save("b", header("b"), [run("r", 1, "succeeded")], [])
    await eventually(lambda: store.stats().commits == 2)
    reopened = SQLiteStore(store.path)
    try:
        snap = reopened.load("b")
        assert snap is not None
        assert snap.runs["r"]["status"] == "succeeded"
    finally:
        await reopened.close()


async def test_one_commit_per_turn_and_columns_filled(store: SQLiteStore, db: Path) -> None:
    for i in range(50):
        store.save(f"e{i}", header(f"e{i}", parent_id="root", started_at=float(i)),
                   [run(f"r{i}", i, "succeeded")], [])
    await eventually(lambda: store.stats().commits == 1)
    assert count(db, "workflow_execution") == 50
    with sqlite3.connect(db) as conn:
        assert conn.execute(
            "SELECT id, ref, status, parent_id, started_at, ended_at FROM workflow_execution "
            "WHERE id = 'e7'").fetchone() == ("e7", "pack.flow", "running", "root", 7.0, None)
        assert conn.execute(
            "SELECT e.id, t.run_id, t.seq, t.task, t.status FROM workflow_task_execution t "
            "JOIN workflow_execution e ON e.num = t.execution_num "
            "WHERE run_id = 'r7'").fetchone() == ("e7", "r7", 7, "t7", "succeeded")


async def test_listing_columns_follow_the_header_across_commits(db: Path) -> None:
    """Steps that change only the header update the header alone; the listing columns (status,
    times, parent) still follow every change, across commits and a reopened store."""

    def row(eid: str) -> tuple[Any, ...]:
        with sqlite3.connect(db) as conn:
            return tuple(conn.execute(
                "SELECT status, started_at, ended_at, parent_id FROM workflow_execution "
                "WHERE id = ?", (eid,)).fetchone())

    store = SQLiteStore(db)
    steps = [("requested", None, None), ("running", 5.0, None), ("running", 5.0, None),
             ("paused", 5.0, None), ("running", 5.0, None), ("succeeded", 5.0, 9.0),
             ("succeeded", 5.0, 9.0)]
    for n, (status, started, ended) in enumerate(steps):
        store.save("e", header("e", status, started_at=started, ended_at=ended, seq=n), [], [])
        await store.flush()
        assert row("e") == (status, started, ended, None)
        loaded = store.load("e")
        assert loaded is not None
        assert loaded.header["seq"] == n
    await store.close()
    store = SQLiteStore(db)  # a new store knows nothing of the rows: it writes them whole first
    store.save("e", header("e", "running", started_at=7.0, parent_id="p", seq=9), [], [])
    await store.flush()
    assert row("e") == ("running", 7.0, None, "p")
    assert [h["id"] for h in store.headers(status="running", parent_id="p")] == ["e"]
    await store.close()


async def test_reads_see_pending_writes(store: SQLiteStore, db: Path) -> None:
    store.save("p", header("p", "running"), [run("r", 1)], [("r", 3, item("running"))])
    store.put_definition("pack.w", "pack", "src")
    store.put_source("dg", "pack", "src")
    assert count(db, "workflow_execution") == 0  # nothing asked the writer yet: same turn
    snap = store.load("p")
    assert snap is not None
    assert snap.header["status"] == "running"
    assert set(snap.runs) == {"r"}
    assert set(snap.items) == {("r", 3)}
    assert [h["id"] for h in store.headers()] == ["p"]
    assert [h["id"] for h in store.headers(status="running")] == ["p"]
    assert store.unfinished() == ["p"]
    assert store.definitions() == [("pack.w", "pack", "src")]
    assert store.get_source("dg") == ("pack", "src")
    assert store.delete_definition("pack.w") is True
    assert store.definitions() == []
    await store.flush()
    # A newer pending header overrides the committed one, in every read.
    store.save("p", header("p", "succeeded"), [], [])
    assert store.unfinished() == []
    assert store.headers(status="running") == []
    assert [h["status"] for h in store.headers(status="succeeded")] == ["succeeded"]
    snap = store.load("p")
    assert snap is not None
    assert snap.header["status"] == "succeeded"
    assert set(snap.runs) == {"r"}


async def test_reads_never_go_back_in_time_while_committing(store: SQLiteStore) -> None:
    """Hammer reads while the writer commits turn after turn: each read sees the latest save."""
    for step in range(200):
        for i in range(20):
            store.save(f"e{i}", header(f"e{i}", step=step), [run(f"r{i}", 1, attempts=step)], [])
        for i in range(0, 20, 7):
            snap = store.load(f"e{i}")
            assert snap is not None
            assert snap.header["step"] == step
            assert snap.runs[f"r{i}"]["attempts"] == step
        assert {h["step"] for h in store.headers()} == {step}
        await asyncio.sleep(0)  # deliberate: one loop turn
    await store.flush()
    assert store.stats().commits >= 2


async def test_flush_waits_only_for_what_was_saved(store: SQLiteStore, db: Path) -> None:
    await store.flush()  # nothing pending: returns at once
    store.save("a", header("a"), [], [])
    await store.flush()
    assert count(db, "workflow_execution") == 1
    store.save("b", header("b"), [], [])
    flushes = [asyncio.ensure_future(store.flush()) for _ in range(3)]
    await asyncio.gather(*flushes)
    assert count(db, "workflow_execution") == 2


def test_close_sync_commits_without_a_loop(db: Path) -> None:
    store = SQLiteStore(db)
    store.save("a", header("a"), [run("r", 1)], [])
    store.close_sync()
    store.close_sync()  # twice is harmless
    assert count(db, "workflow_task_execution") == 1


def test_saves_without_an_event_loop_are_committed(db: Path) -> None:
    store = SQLiteStore(db)
    try:
        def saves() -> None:
            for i in range(100):
                store.save(f"t{i}", header(f"t{i}"), [], [])

        worker = threading.Thread(target=saves)
        worker.start()
        worker.join()
        deadline = time.monotonic() + 10
        while count(db, "workflow_execution") < 100:
            assert time.monotonic() < deadline, "saves made without a loop were not committed"
            time.sleep(0.005)  # deliberate: polling with a deadline
    finally:
        asyncio.run(store.close())


# -- durability -----------------------------------------------------------------------------------

_CHILD = """
import asyncio, os, sys
from pathlib import Path
from attune_actors.store import sqlite as sqlite_store
from attune_actors.store.sqlite import SQLiteStore

def header(eid, step):
    return {"id": eid, "ref": "p.w", "status": "running", "parent_id": None,
            "started_at": 1.0, "ended_at": None, "step": step}

def run(rid, step):
    return {"id": rid, "task": "t", "seq": step, "status": "running", "attempts": step}

async def main(db, mode):
    store = SQLiteStore(Path(db))
    for i in range(500):
        eid = f"f{i}"
        store.save(eid, header(eid, 1), [run("main", 1), run("r1", 1)], [("r1", 0, ["ok", i])])
        if i % 50 == 0:
            await asyncio.sleep(0)  # deliberate: one loop turn
    await store.flush()
    if mode == "flush":
        os._exit(0)  # no close(): what flush() returned for must be on disk
    print("flushed", flush=True)
    base = store.stats().commits
    step = 1
    while True:  # saves, no flush, until killed
        step += 1
        for i in range(200):
            eid = f"k{i}"
            store.save(eid, header(eid, step), [run("main", step), run(f"r{step}", step)], [])
        await asyncio.sleep(0)  # deliberate: one loop turn
        if step == 20 or store.stats().commits == base + 10:
            print("busy", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def child(db: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(db), mode], env=env,
                            stdout=subprocess.PIPE, text=True)


async def test_flush_is_durable_without_close(db: Path) -> None:
    proc = child(db, "flush")
    assert proc.wait(timeout=60) == 0
    store = SQLiteStore(db)
    try:
        assert len(store.headers()) == 500
        snap = store.load("f499")
        assert snap is not None
        assert set(snap.runs) == {"main", "r1"}
        assert snap.items == {("r1", 0): ["ok", 499]}
    finally:
        await store.close()


async def test_sigkill_while_writing_leaves_a_valid_database(db: Path) -> None:
    proc = child(db, "kill")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flushed"
        assert proc.stdout.readline().strip() == "busy"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = SQLiteStore(db)
    try:
        assert len(store.headers()) >= 500  # what was flushed is all there
        assert store.load("f0") is not None
        assert store.load("f499") is not None
        for i in range(200):  # later saves: each one whole, or not there at all
            snap = store.load(f"k{i}")
            if snap is None:
                continue
            step = snap.header["step"]
            assert snap.runs["main"]["attempts"] == step
            assert max(r["seq"] for r in snap.runs.values()) == step
            assert set(snap.runs) == {"main", *(f"r{s}" for s in range(2, step + 1))}
    finally:
        await store.close()


async def test_reopen_keeps_everything_closed_with(db: Path) -> None:
    store = SQLiteStore(db, synchronous="NORMAL")
    store.save("a", header("a"), [run("r", 1)], [("r", 0, item("ok"))])
    store.put_definition("pack.w", "pack", "src")
    store.put_source("dg", "pack", "v")
    await store.close()
    await store.close()  # twice is harmless
    with pytest.raises(StoreError, match="closed"):
        store.save("b", header("b"), [], [])
    with pytest.raises(StoreError, match="closed"):
        store.load("a")
    again = SQLiteStore(db)
    try:
        snap = again.load("a")
        assert snap is not None
        assert set(snap.runs) == {"r"}
        assert snap.items == {("r", 0): item("ok")}
        assert again.definitions() == [("pack.w", "pack", "src")]
        assert again.get_source("dg") == ("pack", "v")
    finally:
        await again.close()


# -- files it must refuse -------------------------------------------------------------------------


async def test_newer_schema_is_refused_untouched(db: Path) -> None:
    store = SQLiteStore(db)
    store.save("a", header("a"), [], [])
    await store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_version SET version = 99 WHERE component = 'store'")
    before = file_bytes(db)
    with pytest.raises(StoreError) as err:
        SQLiteStore(db)
    assert str(db) in str(err.value)
    assert "schema version 99" in str(err.value)
    assert "newer" in str(err.value)
    assert file_bytes(db) == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM workflow_execution").fetchone() == (1,)


def test_corrupt_file_is_refused_untouched(db: Path) -> None:
    db.parent.mkdir(parents=True)
    garbage = random.Random(7).randbytes(64 * 1024)
    db.write_bytes(garbage)
    with pytest.raises(StoreError) as err:
        SQLiteStore(db)
    assert str(db) in str(err.value)
    assert "not a database" in str(err.value)
    assert db.read_bytes() == garbage


def test_foreign_tables_without_a_version_are_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE workflow_execution (id TEXT, whatever BLOB)")
    with pytest.raises(StoreError, match="no schema version"):
        SQLiteStore(db)


def test_unreadable_path_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "a-directory.db"
    folder.mkdir()
    with pytest.raises(StoreError, match=str(folder)):
        SQLiteStore(folder)


def test_invalid_synchronous_mode(db: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(db, synchronous="sometimes")


@pytest.mark.parametrize("opener", [SQLiteStore, KVStore], ids=["store", "datastore"])
def test_opening_waits_for_another_process_creating_the_file(db: Path, opener: Any) -> None:
    """Two commands started together on a fresh data dir: the second waits for the first's lock
    (SQLite fails the switch to WAL at once otherwise; `run` died with "database is locked")."""
    db.parent.mkdir()
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x)")  # still a rollback-journal file, as while being created
    holder.execute("BEGIN IMMEDIATE")  # a writer: SQLite fails the switch to WAL without waiting
    released = threading.Timer(0.3, lambda: holder.execute("COMMIT"))  # deliberate: the lock is held a while
    released.start()
    try:
        opened = opener(db)
    finally:
        released.join()
        holder.close()
    if isinstance(opened, SQLiteStore):
        opened.close_sync()
    else:
        opened.close()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_version_and_indexes(db: Path) -> None:
    asyncio.run(SQLiteStore(db).close())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version WHERE component = 'store'"
                            ).fetchone() == (migrations.SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT header FROM workflow_execution WHERE status = ? "
            "ORDER BY started_at DESC, num LIMIT 10", ("running",)))
        assert "workflow_execution_by_status" in plan
        assert "TEMP B-TREE FOR ORDER BY" not in plan  # only ties are sorted (RIGHT PART)
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT record FROM workflow_task_execution "
            "WHERE execution_num = ? ORDER BY seq", (1,)))
        assert "USING INDEX" in plan
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT record FROM workflow_task_item "
            "WHERE execution_num = ? ORDER BY run_id, idx", (1,)))
        assert "USING INDEX" in plan
        assert "TEMP B-TREE" not in plan


async def test_a_version_2_file_is_migrated_with_its_runs_and_items(db: Path) -> None:
    """A data dir written before runs and items were keyed by their execution's num: every
    execution reads back the same after the migration, and goes on saving."""
    from attune_actors.codec import encode

    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert migrations.migrate(conn, db, migrations.MIGRATIONS[:2]) == 2
        for eid in ("a", "b"):
            conn.execute("INSERT INTO workflow_execution (id, ref, status, started_at, header) "
                         "VALUES (?, 'pack.flow', 'running', 1.0, ?)", (eid, encode(header(eid))))
            for seq in (2, 1):
                conn.execute("INSERT INTO workflow_task_execution VALUES (?, ?, ?, ?, 'running', ?)",
                             (eid, f"{eid}{seq}", seq, f"t{seq}", encode(run(f"{eid}{seq}", seq))))
            conn.execute("INSERT INTO workflow_task_item VALUES (?, ?, 0, ?)",
                         (eid, f"{eid}1", encode(item("ok", eid))))
    finally:
        conn.close()
    store = SQLiteStore(db)
    try:
        for eid in ("a", "b"):
            snap = store.load(eid)
            assert snap is not None
            assert snap.header == header(eid)
            assert list(snap.runs) == [f"{eid}1", f"{eid}2"]  # in seq order
            assert snap.runs[f"{eid}2"] == run(f"{eid}2", 2)
            assert snap.items == {(f"{eid}1", 0): item("ok", eid)}
        store.save("b", header("b", "succeeded"), [run("b2", 2, "succeeded")], [])
        await store.flush()
    finally:
        await store.close()
    reopened = SQLiteStore(db)
    try:
        b = reopened.load("b")
        a = reopened.load("a")
        assert b is not None
        assert a is not None
        assert (b.header["status"], b.runs["b2"]["status"], b.runs["b1"]["status"]) == (
            "succeeded", "succeeded", "running")
        assert a.runs["a2"]["status"] == "running"
    finally:
        await reopened.close()


async def test_a_later_migration_applies_on_top_of_the_current_one(db: Path) -> None:
    """The migration structure: a later version runs once, in order, keeping the data."""
    store = SQLiteStore(db)
    store.save("a", header("a"), [], [])
    await store.close()
    nxt = migrations.SCHEMA_VERSION + 1
    v2 = migrations.Migration(nxt, "a note per execution",
                              ["ALTER TABLE workflow_execution ADD COLUMN note TEXT"],
                              lambda conn: conn.execute("UPDATE workflow_execution SET note = 'v2'"))
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert migrations.migrate(conn, db, (*migrations.MIGRATIONS, v2)) == nxt
        assert migrations.migrate(conn, db, (*migrations.MIGRATIONS, v2)) == nxt  # idempotent
        assert conn.execute("SELECT id, note FROM workflow_execution").fetchall() == [("a", "v2")]
        assert migrations.stored_version(conn, db) == nxt
    finally:
        conn.close()
    with pytest.raises(StoreError, match=f"schema version {nxt}"):  # this program does not know it
        SQLiteStore(db)


# -- sharing the file with the KV datastore -------------------------------------------------------


async def test_kv_store_shares_the_file(db: Path) -> None:
    kv = KVStore(db)
    store = SQLiteStore(db)
    stop = threading.Event()
    errors: list[BaseException] = []

    def kv_writer() -> None:
        i = 0
        try:
            # Both write at once, and every key gets set. Bounded: a writer that never pauses can
            # keep the other from the file's write lock past its busy timeout on a loaded host.
            while i < 200 or (not stop.is_set() and i < 1000):
                kv.set(f"key{i % 50}", {"i": i})
                i += 1
        except BaseException as e:  # reported below
            errors.append(e)

    worker = threading.Thread(target=kv_writer)
    worker.start()
    try:
        for step in range(50):
            for i in range(20):
                store.save(f"e{i}", header(f"e{i}", step=step), [run(f"r{step}", step)], [])
            await asyncio.sleep(0)  # deliberate: one loop turn
            assert kv.get("missing") is None
        await store.flush()
    finally:
        stop.set()
        worker.join()
    assert errors == []
    assert store.stats().failed_commits == 0
    await store.close()
    assert kv.get("key0") is not None
    kv.close()
    again = SQLiteStore(db)
    try:
        snap = again.load("e3")
        assert snap is not None
        assert snap.header["step"] == 49
        assert len(snap.runs) == 50
    finally:
        await again.close()
    with KVStore(db) as kv2:
        assert len(kv2.list()) == 50


# -- when the writer cannot write -----------------------------------------------------------------


def block_writes(db: Path, table: str = "workflow_task_item") -> None:
    """Make every insert into `table` fail, as a full disk would, from another connection."""
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} "
                     "BEGIN SELECT RAISE(ABORT, 'simulated disk full'); END")


def unblock_writes(db: Path, table: str = "workflow_task_item") -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"DROP TRIGGER fail_{table}")


async def test_a_failing_commit_is_raised_logged_kept_and_retried(
    store: SQLiteStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.save("ok", header("ok"), [run("r", 1)], [])
    await store.flush()
    block_writes(db)
    with caplog.at_level(logging.ERROR, logger="attune_actors.store.sqlite"):
        store.save("a", header("a", step=1), [run("ra", 1)], [("ra", 0, item("running"))])
        with pytest.raises(StoreError) as err:
            await store.flush()
    assert str(db) in str(err.value)
    assert "simulated disk full" in str(err.value)
    assert any("simulated disk full" in r.getMessage() for r in caplog.records)
    # The failed batch is kept: reads still see it, and the next save says writes are failing.
    with pytest.raises(StoreError, match="simulated disk full"):
        store.save("a", header("a", step=2), [], [])
    snap = store.load("a")
    assert snap is not None
    assert snap.header["step"] == 2
    assert set(snap.runs) == {"ra"}
    assert store.stats().failed_commits >= 1
    assert count(db, "workflow_execution") == 1  # the failed transaction was rolled back whole
    unblock_writes(db)
    await store.flush()  # retried at once, and succeeds
    store.save("b", header("b"), [], [])  # no longer raises
    await store.flush()
    assert count(db, "workflow_execution") == 3
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM workflow_task_item").fetchone() == (1,)


async def test_a_failing_commit_is_retried_without_flush(store: SQLiteStore, db: Path) -> None:
    block_writes(db)
    store.save("a", header("a"), [run("r", 1)], [("r", 0, item("running"))])
    await eventually(lambda: store.stats().failed_commits >= 2)  # retried on its own, with backoff
    unblock_writes(db)
    await eventually(lambda: count(db, "workflow_task_item") == 1)


async def test_close_reports_what_it_could_not_write(db: Path) -> None:
    store = SQLiteStore(db)
    block_writes(db)
    store.save("a", header("a"), [], [("r", 0, item("running"))])
    with pytest.raises(StoreError, match="could not be written"):
        await store.close()
