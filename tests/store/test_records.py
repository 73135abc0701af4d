"""The stored form of task runs (store.base): list records, and the active runs a header carries.

A step writes the execution's header, which carries the records of its active runs (a few small
ones), and a row for each run that ended (or does not fit in the header): a run that starts and
ends is written as a row once. What a header carries wins over an older row of the same run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import execution_reaches

from attune_actors import Engine
from attune_actors.codec import decode, encode
from attune_actors.engine.runtime import SEALED
from attune_actors.store.base import (
    ACTIVE_RUNS,
    RUN_FIELDS,
    HeaderBase,
    ItemRow,
    Listing,
    MemoryStore,
    RunRow,
    Store,
    run_record,
    run_row,
)
from attune_actors.store.sqlite import SQLiteStore

TOKEN = "tok-81d2-not-in-clear"


def run(run_id: str, seq: int, status: str, **extra: Any) -> dict[str, Any]:
    rec = dict.fromkeys(RUN_FIELDS)
    rec.update(id=run_id, seq=seq, task=f"t{seq}", status=status, attempts=1, next_item=0,
               pending_subs=0, handled=False, fired=[])
    rec.update(extra)
    return rec


def step(status: str, active: list[dict[str, Any]], rows: list[dict[str, Any]]) -> tuple[
    bytes, Listing, list[RunRow], list[ItemRow]
]:
    """A step as `Runtime.save_step` writes it: `active` carried by the header, `rows` as rows."""
    base = HeaderBase({"id": "e", "ref": "pack.flow", "parent_id": None})
    fields = {"status": status, "started_at": 1.0, "ended_at": None, "vars": {}}
    header = base.record(fields, [encode(run_record(rec)) for rec in active])
    return header, base.listing(fields), [run_row(run_record(rec)) for rec in rows], []


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "attune.db")
    yield s
    await s.close()


async def test_the_runs_a_header_carries_win_over_their_rows(store: Store, tmp_path: Path) -> None:
    a1, b1 = run("e.1", 1, "running"), run("e.2", 2, "running")
    store.save_encoded("e", *step("running", [], [a1, b1]))  # both as rows (too many to carry)
    a2 = run("e.1", 1, "delayed", attempts=2)
    store.save_encoded("e", *step("running", [a2], []))  # the header carries a newer state of e.1
    snap = store.load("e")
    assert snap is not None
    assert snap.runs == {"e.1": a2, "e.2": b1}
    assert ACTIVE_RUNS not in snap.header
    assert snap.header == {"id": "e", "ref": "pack.flow", "parent_id": None, "status": "running",
                           "started_at": 1.0, "ended_at": None, "vars": {}}
    assert [h["id"] for h in store.headers()] == ["e"]
    assert ACTIVE_RUNS not in store.headers()[0]
    await store.flush()
    a3 = run("e.1", 1, "succeeded", attempts=2, result={"ok": 1})
    store.save_encoded("e", *step("succeeded", [], [a3]))  # it ended: its row, the header drops it
    snap = store.load("e")
    assert snap is not None
    assert snap.runs == {"e.1": a3, "e.2": b1}
    if isinstance(store, SQLiteStore):
        await store.close()
        reopened = SQLiteStore(store.path)
        try:
            assert reopened.load("e") == snap
        finally:
            await reopened.close()


class WatchedStore(SQLiteStore):
    """The SQLite store, noting which runs each step writes as rows and which its header carries."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rows: list[tuple[str, str]] = []  # (run id, status) of every row written
        self.carried: set[str] = set()

    def save_encoded(self, execution_id: str, header: bytes, listing: Listing, runs: list[RunRow],
                     items: list[ItemRow]) -> None:
        self.rows += [(row[0], row[3]) for row in runs]
        self.carried.update(rec[0] for rec in decode(header).get(ACTIVE_RUNS, ()))
        super().save_encoded(execution_id, header, listing, runs, items)


async def test_a_run_is_written_as_a_row_once_when_it_ends(workflow, packs_dir, tmp_path) -> None:
    ref = workflow("three", """
        tasks:
          - {name: a, action: core.noop, on_success: b}
          - {name: b, action: core.echo, input: {x: 1}, on_success: c}
          - {name: c, action: core.noop}
    """)
    store = WatchedStore(tmp_path / "data" / "attune.db")
    async with Engine(packs=[packs_dir], data_dir=tmp_path / "data", store=store) as engine:
        done = await engine.wait((await engine.execute(ref)).id, timeout=10)
    assert [t.name for t in done.tasks] == ["a", "b", "c"]
    ids = [t.id for t in done.tasks]
    assert store.rows == [(i, "succeeded") for i in ids]
    assert store.carried == set(ids)  # each was carried by the header while it ran


async def test_more_active_runs_than_a_header_carries_survive_a_restart(
    workflow, packs_dir, tmp_path
) -> None:
    ref = workflow("wide", "tasks:\n" + "".join(
        f"  - {{name: q{i}, action: core.inquiry, input: {{prompt: 'q{i}?', schema: {{type: integer}}}}}}\n"
        for i in range(12)
    ) + "  - {name: big, action: core.inquiry, input: {prompt: '" + "x" * 3000 + "'}}\n")
    data = tmp_path / "data"
    first = Engine(packs=[packs_dir], data_dir=data)
    await first.start()
    execution = await first.execute(ref)
    await execution_reaches(first, execution.id, lambda e: len(e.tasks) == 13
                            and all(t.status == "pending" for t in e.tasks))
    await first.close()
    with sqlite3.connect(data / "attune.db") as conn:
        (blob,) = conn.execute("SELECT header FROM workflow_execution").fetchone()
        rows = {decode(rec)[2] for (rec,) in conn.execute("SELECT record FROM workflow_task_execution")}
    carried = {rec[2] for rec in decode(blob)[ACTIVE_RUNS]}
    assert len(carried) == 8
    assert "big" not in carried
    assert carried | rows == {*(f"q{i}" for i in range(12)), "big"}

    second = Engine(packs=[packs_dir], data_dir=data)
    await second.start()
    try:
        pending = await second.inquiries(execution_id=execution.id)
        assert len(pending) == 13
        for inquiry in pending:
            await second.respond(inquiry["id"], 7 if inquiry["prompt"].startswith("q") else {"ok": 1})
        done = await second.wait(execution.id, timeout=10)
        assert done.status == "succeeded"
        assert {t.name: t.result for t in done.tasks} == {**{f"q{i}": 7 for i in range(12)}, "big": {"ok": 1}}
    finally:
        await second.close()


def on_disk(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data.glob("attune.db*")))


async def test_a_secret_in_a_carried_run_is_sealed_and_sent_again_after_a_restart(
    workflow, packs_dir, tmp_path
) -> None:
    """The input of a run waiting for its retry holds a secret: the header carries it sealed, and
    the attempt after the restart gets it back (the action writes to a file named by it)."""
    folder = tmp_path / "out"
    folder.mkdir()
    ref = workflow("secretretry", f"""
        parameters:
          token: {{type: string, secret: true}}
        tasks:
          - name: flaky
            action: testpack.flaky
            input: {{succeed_on: 2, log_file: "{folder}/{{{{ parameters.token }}}}.log"}}
            retry: {{count: 1, delay: 1}}
    """)
    data = tmp_path / "data"
    first = Engine(packs=[packs_dir], data_dir=data)
    await first.start()
    execution = await first.execute(ref, {"token": TOKEN})
    await execution_reaches(first, execution.id, lambda e: bool(e.tasks) and e.tasks[0].status == "delayed")
    await first.close()  # while the retry waits
    assert TOKEN.encode() not in on_disk(data)
    with sqlite3.connect(data / "attune.db") as conn:
        (blob,) = conn.execute("SELECT header FROM workflow_execution").fetchone()
    [carried] = decode(blob)[ACTIVE_RUNS]
    assert carried[RUN_FIELDS.index("status")] == "delayed"
    assert set(carried[RUN_FIELDS.index("input")]) == {SEALED}

    second = Engine(packs=[packs_dir], data_dir=data)
    await second.start()
    try:
        done = await second.wait(execution.id, timeout=10)
        assert done.status == "succeeded"
        assert done.tasks[0].attempts == 2
    finally:
        await second.close()
    assert (folder / f"{TOKEN}.log").read_text().count("\n") == 2  # both attempts, same input
    assert TOKEN.encode() not in on_disk(data)
