"""Crash recovery: an engine SIGKILLed at seeded random moments and restarted loses nothing.

A real engine subprocess (tests/recovery/driver.py) runs a mix of workflows (sequential, with_items
with batch_size, parallel, retry with backoff, nested, a pending inquiry, a paused execution) on a
SQLite data dir. It is killed with SIGKILL at random moments and restarted on the same data dir
until it finishes. Then:

- final statuses and outputs equal those of an uninterrupted reference run;
- no execution is lost;
- no attempt whose outcome had been recorded when the engine was killed is dispatched again
  (actions log every invocation with its run id, item and attempt).

`bench/recovery.py` runs the same with hundreds of kill points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from attune_actors.store.sqlite import SQLiteStore

DRIVER = Path(__file__).parent / "driver.py"
TERMINAL = {"succeeded", "failed", "timeout", "canceled", "abandoned"}


def start_driver(data_dir: Path, result: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CRASH_LOG=str(log), ATTUNE_LOGGING__LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(data_dir), str(result)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def run_to_end(data_dir: Path, result: Path, log: Path, timeout: float = 120) -> dict[str, Any]:
    proc = start_driver(data_dir, result, log)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    loaded: dict[str, Any] = json.loads(result.read_text())
    return loaded


def recorded_attempts(db: Path) -> set[tuple[str, int | None, int]]:
    """Attempts whose outcome the store holds: terminal runs/items, and earlier attempts of any."""
    done: set[tuple[str, int | None, int]] = set()
    if not db.exists():
        return done
    store = SQLiteStore(db)
    try:
        for header in store.headers():
            snap = store.load(header["id"])
            assert snap is not None
            for rec in snap.runs.values():
                last = rec["attempts"]
                finished = rec["status"] in TERMINAL or rec["status"] == "delayed"
                for attempt in range(1, last + (1 if finished else 0)):
                    done.add((rec["id"], None, attempt))
            for (run_id, idx), rec in snap.items.items():
                status, attempts = rec[0], rec[3]
                finished = status in TERMINAL or status == "delayed"
                for attempt in range(1, attempts + (1 if finished else 0)):
                    done.add((run_id, idx, attempt))
    finally:
        store.close_sync()
    return done


def invocations(log: Path, start: int = 0) -> list[tuple[str, int | None, int]]:
    if not log.exists():
        return []
    data = log.read_bytes()[start:]
    found = []
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the line a kill cut short
        found.append((entry["run"], entry["item"], entry["attempt"]))
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("reference")
    return run_to_end(root / "data", root / "result.json", root / "invocations.log")


MIN_KILL_POINTS = 20
KILLS_PER_SEED = 6


def crash_until_done(seed: int, root: Path) -> tuple[int, list[tuple[str, int | None, int]], dict[str, Any]]:
    """Run the driver on a fresh data dir, killing it up to KILLS_PER_SEED times; then to the end.

    Returns the kills made, the attempts dispatched again after their outcome was recorded, and
    the final results.
    """
    rng = random.Random(seed)
    data, result, log = root / "data", root / "result.json", root / "invocations.log"
    db = data / "attune.db"
    violations: list[tuple[str, int | None, int]] = []
    kills = 0
    finished = False
    while not finished:
        # What the store holds now must never be dispatched again by the next generation.
        recorded = recorded_attempts(db)
        offset = log.stat().st_size if log.exists() else 0
        if kills < KILLS_PER_SEED:
            proc = start_driver(data, result, log)
            # A kill point: during start-up, mid-run, or while the inquiry waits.
            try:
                proc.wait(timeout=rng.uniform(0.3, 0.9))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                proc.wait()
            finished = proc.returncode == 0
        else:
            run_to_end(data, result, log)
            finished = True
        violations += [key for key in invocations(log, offset) if key in recorded]
    return kills, violations, json.loads(result.read_text())


def test_killed_engine_resumes_and_loses_nothing(reference: dict[str, Any], tmp_path: Path) -> None:
    total_kills = 0
    seed = 0
    while total_kills < MIN_KILL_POINTS:
        seed += 1
        assert seed <= 60, f"only {total_kills} kill points in 60 seeds"
        kills, violations, final = crash_until_done(seed, tmp_path / f"seed{seed}")
        total_kills += kills
        assert violations == [], f"seed {seed}: recorded attempts dispatched again: {violations}"
        assert set(final) == set(reference), f"seed {seed}: an execution was lost"
        # An attempt cut short by a kill goes out again as a new attempt, and is counted: the
        # retried task may report more attempts than the uninterrupted run, never fewer.
        attempts = final["retry"]["output"]["attempts"]
        assert int(attempts) >= int(reference["retry"]["output"]["attempts"]), f"seed {seed}"
        final["retry"]["output"] = reference["retry"]["output"]
        assert final == reference, f"seed {seed}: results differ from the uninterrupted run"
