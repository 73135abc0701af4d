"""An execution whose recovery wedges the engine is quarantined on the next start (SPEC 12), as is
one whose recovery kills the engine again and again; one whose recovery was merely interrupted (a
kill from outside) is resumed again.

Real engine processes on one data dir (see recovery_driver.py): the first is killed while a heavy
render keeps its loop busy, the next are killed while resuming that execution, the last either
fails it with a reason or resumes it, and resumes the other execution as usual.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from attune_actors.engine.quarantine import RecoveryGuard

DRIVER = Path(__file__).parent / "recovery_driver.py"


def start(data_dir: Path, phase: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(data_dir), phase, *args],
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


def marker(data: Path) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads((data / "recovering.json").read_text())
    except (FileNotFoundError, ValueError):  # absent, or being replaced
        return None
    return found


def accept(data: Path) -> tuple[str, str]:
    """The first engine: lim.ask waits for its inquiry, lim.heavy is accepted; then it is killed.
    Returns the ids of lim.ask and lim.heavy."""
    first = start(data, "start")
    try:
        line = read_line(first.stdout)
        assert line.startswith("accepted "), (line, first.stderr.read() if first.stderr else "")
        _, ask_id, heavy_id = line.split()
    finally:
        kill(first)
    return ask_id, heavy_id


def kill_while_resuming(
    data: Path, ask_id: str, heavy_id: str, stall: float, *, stuck: bool, deaths: int = 0
) -> None:
    """An engine killed while resuming lim.heavy (after `deaths` earlier engines died doing so):
    once it counts as stuck, or at once."""
    engine = start(data, "recover", str(stall))
    try:
        deadline = time.monotonic() + 60
        while True:  # the marker names the executions being resumed (a batch of them)
            found = marker(data)
            # Stuck or after a death, the marker names it alone; else with the other one.
            ids = [heavy_id] if stuck or deaths else [ask_id, heavy_id]  # in the order they began
            if found == {"ids": ids, "deaths": deaths, "stuck": stuck}:
                break
            assert engine.poll() is None, engine.stderr.read() if engine.stderr else ""
            assert time.monotonic() < deadline, f"the engine never got there: {found}"
            time.sleep(0.02)  # deliberate: polling a file with a deadline
    finally:
        kill(engine)  # as a watchdog, an operator or a deploy would


def final(data: Path) -> tuple[dict[str, Any], str]:
    third = subprocess.run(
        [sys.executable, str(DRIVER), str(data), "final"], capture_output=True, text=True, timeout=120
    )
    assert third.returncode == 0, third.stderr
    assert "Traceback" not in third.stderr
    assert not (data / "recovering.json").exists()
    done: dict[str, Any] = json.loads(third.stdout)
    return done, third.stderr


def resumed_ask(ask_id: str) -> dict[str, Any]:
    return {
        "id": ask_id,
        "status": "succeeded",
        "error": None,
        "output": {"go": True},
        "tasks": [["ask", "succeeded", None], ["after", "succeeded", None]],
    }


def test_an_execution_whose_recovery_got_stuck_is_failed_and_the_others_resume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ask_id, heavy_id = accept(data)
    kill_while_resuming(data, ask_id, heavy_id, 0.5, stuck=True)
    done, log = final(data)
    heavy = done["lim.heavy"]
    assert heavy["id"] == heavy_id
    assert heavy["status"] == "failed"
    assert heavy["error"]["message"] == (
        "quarantined: the engine got stuck resuming this execution (its recovery step ran until "
        "the engine was stopped), so it was not resumed again"
    )
    assert done["lim.ask"] == resumed_ask(ask_id)
    quarantine_lines = [line for line in log.splitlines() if heavy_id in line and "ERROR" in line]
    assert len(quarantine_lines) == 1, log


def test_a_recovery_interrupted_by_a_kill_is_resumed_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ask_id, heavy_id = accept(data)
    kill_while_resuming(data, ask_id, heavy_id, 600, stuck=False)
    done, _ = final(data)
    heavy = done["lim.heavy"]
    assert heavy["id"] == heavy_id
    # Resumed, under the default budget this time, which refuses the render.
    assert heavy["status"] == "failed"
    assert "exceeds limits.template_loop_steps (100000)" in heavy["error"]["message"]
    assert done["lim.ask"] == resumed_ask(ask_id)


def test_an_execution_whose_recovery_kills_the_engine_again_and_again_is_failed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ask_id, heavy_id = accept(data)
    for deaths in range(3):  # MAX_DEATHS
        kill_while_resuming(data, ask_id, heavy_id, 600, stuck=False, deaths=deaths)
    done, _ = final(data)
    assert done["lim.heavy"]["status"] == "failed"
    assert done["lim.heavy"]["error"]["message"] == (
        "quarantined: the engine stopped 3 times in a row while resuming this execution, so it was "
        "not resumed again"
    )
    assert done["lim.ask"] == resumed_ask(ask_id)


def test_after_a_death_each_execution_of_its_batch_is_resumed_under_a_marker_alone(tmp_path: Path) -> None:
    order = [f"x{i}" for i in range(7)]
    first = RecoveryGuard(tmp_path, stall=600, order=order, batch=3)
    assert first.left_over() is None
    for eid in order[:4]:  # the engine dies while resuming x3, in the second batch
        first.mark(eid)
    assert marker(tmp_path) == {"ids": ["x3", "x4", "x5"], "deaths": 0, "stuck": False}

    second = RecoveryGuard(tmp_path, stall=600, order=order, batch=3)
    left = second.left_over()
    assert left is not None
    assert (left.quarantine, left.deaths) == (False, 1)
    named = []
    for eid in order:
        second.mark(eid)
        named.append(marker(tmp_path))
    assert named[0] == named[2] == {"ids": ["x0", "x1", "x2"], "deaths": 0, "stuck": False}
    assert named[3:6] == [{"ids": [eid], "deaths": 1, "stuck": False} for eid in ("x3", "x4", "x5")]
    assert named[6] == {"ids": ["x6"], "deaths": 0, "stuck": False}
    second.clear()
    assert marker(tmp_path) is None
