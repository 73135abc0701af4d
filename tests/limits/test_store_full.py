"""A full disk under the SQLite store (SPEC 12): the affected executions fail cleanly, the failure is
logged once without a traceback, the engine goes on serving, and nothing is lost once space is back.

The disk is real: a 2 MB tmpfs mounted for the test (root only; skipped otherwise), filled up by a
file while executions run.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from attune_actors import Engine, StoreError

SLOW = """
tasks:
  - {name: first, action: testpack.wait, input: {seconds: 0.3}, on_success: second}
  - {name: second, action: core.echo, input: {v: "{{ 'y' * 300000 }}"}}
"""
QUICK = "tasks:\n  - {name: one, action: testpack.square, input: {n: 7}}\n"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the file system."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


async def test_a_full_disk_fails_the_executions_it_hits_and_the_engine_serves_on(
    small_disk: Path,
    engine_factory: Callable[..., Any],
    workflow: Callable[[str, str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow, quick = workflow("slow", SLOW), workflow("quick", QUICK)
    data = small_disk / "data"
    engine: Engine = await engine_factory(data_dir=data)
    running = [(await engine.execute(slow)).id for _ in range(2)]
    filler = fill(small_disk)
    caplog.set_level(logging.INFO)

    for execution_id in running:
        final = await engine.wait(execution_id, timeout=30)
        assert final.status == "failed"
        assert final.error is not None
        assert final.error["message"].startswith(
            f"the store cannot keep this execution: cannot write to the store {data / 'attune.db'}: "
            "database or disk is full"
        )
    # Refused, and not run later behind the caller's back: before anything is kept (a definition
    # not stored yet), or kept as failed.
    for ref in (quick, slow):
        with pytest.raises(StoreError, match="database or disk is full"):
            await engine.execute(ref)
    assert sorted(e.status.value for e in await engine.list()) == ["failed"] * 3  # still answering

    store_errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(store_errors) == 1, [r.getMessage() for r in store_errors]
    assert "database or disk is full" in store_errors[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)

    filler.unlink()  # space again: the engine writes what it kept (at its next retry), runs new work
    deadline = time.monotonic() + 30
    while True:
        try:
            accepted = await engine.execute(quick)
            break
        except StoreError:
            assert time.monotonic() < deadline, "the store did not recover"
            await asyncio.sleep(0.05)  # deliberate: polling with a deadline
    final = await engine.wait(accepted.id, timeout=30)
    assert final.status == "succeeded"
    await engine.close()

    reopened: Engine = await engine_factory(data_dir=data)
    stored = {e.id: e for e in await reopened.list()}
    assert len(stored) == 4
    assert all(stored[i].status == "failed" for i in running)
    assert stored[final.id].status == "succeeded"
    refused = [e for e in stored.values() if e.id not in (*running, final.id)]
    assert len(refused) == 1
    assert refused[0].status == "failed"
    assert refused[0].error is not None
    assert refused[0].error["message"].startswith("not started: cannot write to the store")
    assert not refused[0].tasks
