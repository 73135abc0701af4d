"""Snapshots written before SQLite schema 4 (run records as dicts, a row for every run, no active
runs in the header) are read and resumed by this version.

`fixtures/schema3.db` is what attune_actors at df841c7 left when the crash test's driver was
SIGKILLed mid-run (see fixtures/make_schema3.py): a sequential chain half done, a with_items run
with some items ended, a parallel group whose merge runs, a retry waiting for its delay, a nested
workflow whose child runs, a pending inquiry and a paused execution.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from recovery.test_crash import invocations, recorded_attempts, run_to_end

from attune_actors.codec import decode
from attune_actors.store import migrations
from attune_actors.store.base import ACTIVE_RUNS, RUN_FIELDS
from attune_actors.store.sqlite import SQLiteStore

FIXTURE = Path(__file__).parent / "fixtures" / "schema3.db"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The driver's results when nothing stops it (this version, fresh data dir)."""
    root = tmp_path_factory.mktemp("reference")
    return run_to_end(root / "data", root / "result.json", root / "invocations.log")


def old_data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(FIXTURE, data / "attune.db")
    return data


def stored_runs(db: Path) -> dict[str, Any]:
    """Run id -> the record of its row, as the file holds it."""
    with sqlite3.connect(db) as conn:
        return {rid: decode(rec) for rid, rec in conn.execute(
            "SELECT run_id, record FROM workflow_task_execution")}


def test_the_fixture_is_in_the_old_format() -> None:
    runs = stored_runs(FIXTURE)
    assert runs
    assert all(isinstance(rec, dict) for rec in runs.values())
    statuses = {rec["status"] for rec in runs.values()}
    assert {"running", "pending", "delayed", "scheduled", "succeeded"} <= statuses
    with sqlite3.connect(FIXTURE) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (3,)
        headers = [decode(h) for (h,) in conn.execute("SELECT header FROM workflow_execution")]
    assert not any(ACTIVE_RUNS in h for h in headers)


def test_old_records_read_back_as_they_were_stored(tmp_path: Path) -> None:
    db = old_data_dir(tmp_path) / "attune.db"
    before = stored_runs(db)
    store = SQLiteStore(db)  # migrates to schema 4: no record is rewritten
    try:
        loaded: dict[str, Any] = {}
        for header in store.headers():
            snap = store.load(header["id"])
            assert snap is not None
            assert ACTIVE_RUNS not in snap.header
            loaded.update(snap.runs)
    finally:
        store.close_sync()
    assert loaded == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (migrations.SCHEMA_VERSION,)


def test_a_data_dir_killed_mid_run_by_the_old_version_is_resumed(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    data = old_data_dir(tmp_path)
    db = data / "attune.db"
    recorded = recorded_attempts(db)  # what the old version had recorded when it was killed
    assert recorded
    log = tmp_path / "invocations.log"
    final = run_to_end(data, tmp_path / "result.json", log)
    again = [key for key in invocations(log) if key in recorded]
    assert again == [], f"attempts recorded by the old version dispatched again: {again}"
    # The retried task may count an attempt the kill cut short: more attempts, never fewer.
    assert int(final["retry"]["output"]["attempts"]) >= int(reference["retry"]["output"]["attempts"])
    final["retry"]["output"] = reference["retry"]["output"]
    assert final == reference
    # Runs the old version had started and this one ended are rows in the new shape now.
    runs = stored_runs(db)
    assert all(rec["status"] == "succeeded" for rec in map(_fields, runs.values()))
    assert any(isinstance(rec, list) for rec in runs.values())


def _fields(rec: Any) -> dict[str, Any]:
    return rec if isinstance(rec, dict) else dict(zip(RUN_FIELDS, rec, strict=True))
