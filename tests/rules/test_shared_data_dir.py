"""Timer rules and sensors on a data dir that several processes share: one process runs them, and
another takes them over when it dies. Real subprocesses, a real SQLite file."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from helpers import eventually

from attune_actors import Engine

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


def quiet_for(data: Path, seconds: float) -> Callable[[], list[datetime] | None]:
    """A probe that holds once no fire was recorded for `seconds` (the rule fires every second)."""
    seen: list[datetime] | None = None
    since = time.monotonic()

    def probe() -> list[datetime] | None:
        nonlocal seen, since
        found = fires(data)
        if found != seen:
            seen, since = found, time.monotonic()
        return found if time.monotonic() - since >= seconds else None

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


async def test_a_rule_disabled_through_another_process_stops_where_the_timers_run(
    packs: Path, tmp_path: Path, background: list[subprocess.Popen[str]]
) -> None:
    data = tmp_path / "data"
    start(packs, data, background)  # takes the timers: it holds the data dir's sources lock
    await eventually(at_least(data, 2), "two fires", DEADLINE)
    async with Engine(packs=[str(packs)], data_dir=data) as engine:
        assert (await engine.disable_rule("tick.every"))["enabled"] is False
        stopped = await eventually(quiet_for(data, 3.0), "the fires to stop", DEADLINE)
        assert (await engine.enable_rule("tick.every"))["enabled"] is True
        again = await eventually(at_least(data, len(stopped) + 2), "two fires more", DEADLINE)
    assert (again[len(stopped)] - stopped[-1]).total_seconds() >= 3
