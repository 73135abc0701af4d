"""Timer rules and sensors on a data dir that several processes share: one process runs them, and
another takes them over when it dies. Real subprocesses, a real SQLite file."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from helpers import eventually

DEADLINE = 30.0  # seconds any awaited state may take on a loaded machine

ENGINE = """
import asyncio, sys
from attune_actors import Engine

async def main():
    async with Engine(packs=[sys.argv[1]], data_dir=sys.argv[2]):
        print("ready", flush=True)
        await asyncio.Event().wait()  # until killed

asyncio.run(main())
"""


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    pack = tmp_path / "packs" / "tick"
    (pack / "rules").mkdir(parents=True)
    (pack / "workflows").mkdir()
    (pack / "pack.yaml").write_text('ref: tick\nversion: "1.0.0"\n', encoding="utf-8")
    (pack / "workflows" / "noop.yaml").write_text(
        "tasks:\n  - {name: a, action: core.noop}\n", encoding="utf-8")
    (pack / "rules" / "every.yaml").write_text(
        "ref: tick.every\ntrigger: {type: core.interval, parameters: {seconds: 1}}\naction: tick.noop\n",
        encoding="utf-8")
    return tmp_path / "packs"


def start(packs: Path, data: Path, procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTUNE_")}
    proc = subprocess.Popen([sys.executable, "-c", ENGINE, str(packs), str(data)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def fires(data: Path) -> list[datetime]:
    """When each fire of tick.every was scheduled, from the enforcement records."""
    with sqlite3.connect(data / "attune.db") as db:
        rows = db.execute(
            "SELECT trigger_instance_id FROM rule_enforcement WHERE rule = 'tick.every'").fetchall()
    # (an instance id is `core.interval:<rule>:<scheduled time, ISO 8601>`)
    return sorted(datetime.fromisoformat(r[0].split(":", 2)[2]) for r in rows)


def at_least(data: Path, count: int) -> Callable[[], list[datetime] | None]:
    def probe() -> list[datetime] | None:
        found = fires(data)
        return found if len(found) >= count else None

    return probe


def one_timer(found: list[datetime]) -> bool:
    """One phase, one fire each: the fires are whole seconds apart (two timers had two phases)."""
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(found)]
    return all(g >= 1 and g == round(g) for g in gaps)


async def test_one_process_runs_the_timers_and_another_takes_them_over_when_it_dies(
    packs: Path, tmp_path: Path, background: list[subprocess.Popen[str]]
) -> None:
    data = tmp_path / "data"
    first = start(packs, data, background)
    start(packs, data, background)
    before = await eventually(at_least(data, 3), "three fires", DEADLINE)
    assert one_timer(before), before
    with sqlite3.connect(data / "attune.db") as db:
        started = db.execute("SELECT count(*) FROM workflow_execution WHERE ref = 'tick.noop'").fetchone()[0]
    assert started >= len(before) - 1  # (the last fire's execution may not be saved yet)

    first.send_signal(signal.SIGKILL)
    first.wait()
    after = await eventually(at_least(data, len(before) + 3), "three fires more", DEADLINE)
    assert one_timer(after), after
