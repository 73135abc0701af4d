"""An execution whose recovery kills or wedges the engine is quarantined on the next start (SPEC 12).

Real engine processes on one data dir (see recovery_driver.py): the first is killed while a heavy
render keeps its loop busy, the second is killed while resuming that execution, the third fails it
with a reason instead of resuming it again, and resumes the other execution as usual.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

DRIVER = Path(__file__).parent / "recovery_driver.py"


def start(data_dir: Path, phase: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(data_dir), phase],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(stream: IO[str] | None) -> str:
    assert stream is not None
    return stream.readline().strip()


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_an_execution_that_wedged_recovery_is_failed_and_the_others_resume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start(data, "start")
    try:
        line = read_line(first.stdout)
        assert line.startswith("accepted "), (line, first.stderr.read() if first.stderr else "")
        _, ask_id, heavy_id = line.split()
    finally:
        kill(first)

    marker = data / "recovering.json"
    second = start(data, "recover")
    try:
        deadline = time.monotonic() + 60
        # Resumed one at a time: the marker names the execution being resumed.
        while not (marker.exists() and heavy_id in marker.read_text()):
            assert second.poll() is None, second.stderr.read() if second.stderr else ""
            assert time.monotonic() < deadline, "the engine never got to resume lim.heavy"
            time.sleep(0.02)  # noqa: sleep-ok - polling a file with a deadline
    finally:
        kill(second)  # stuck in the heavy render, as a watchdog or an operator would find it

    third = subprocess.run(
        [sys.executable, str(DRIVER), str(data), "final"], capture_output=True, text=True, timeout=120
    )
    assert third.returncode == 0, third.stderr
    done = json.loads(third.stdout)
    heavy = done["lim.heavy"]
    assert heavy["id"] == heavy_id
    assert heavy["status"] == "failed"
    assert heavy["error"]["message"].startswith("quarantined: the engine stopped")
    assert done["lim.ask"] == {
        "id": ask_id,
        "status": "succeeded",
        "error": None,
        "output": {"go": True},
        "tasks": [["ask", "succeeded", None], ["after", "succeeded", None]],
    }
    quarantine_lines = [line for line in third.stderr.splitlines() if heavy_id in line and "ERROR" in line]
    assert len(quarantine_lines) == 1, third.stderr
    assert "Traceback" not in third.stderr
    assert not marker.exists()
