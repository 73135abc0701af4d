"""Helpers shared by the benchmarks: event loops, CPU pinning, RSS, child processes, tables.

Nothing here imports attune_actors, so any benchmark can use it before choosing what to import.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
PAGE = os.sysconf("SC_PAGE_SIZE")
LOOPS = ("asyncio", "uvloop")


# -- event loops ---------------------------------------------------------------------------------


def loop_available(name: str) -> bool:
    if name == "asyncio":
        return True
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def run_on_loop(name: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` on a fresh event loop of the named kind ("asyncio" or "uvloop")."""
    if name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    if name != "asyncio":
        raise ValueError(f"unknown loop {name!r}")
    with asyncio.Runner() as runner:
        return runner.run(main())


# -- process ---------------------------------------------------------------------------------------


def pin_to_cpu(cpu: int | None) -> int | None:
    """Pin this process (and the threads it starts later) to one CPU; returns it, or None if not pinned."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    os.sched_setaffinity(0, {cpu})
    return cpu


def default_cpu() -> int | None:
    """The CPU children are pinned to by default: the last one this process may run on."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return max(os.sched_getaffinity(0))


def rss_bytes() -> int:
    """Resident set size of this process now (from /proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def run_child(command: Sequence[str], *, timeout: float | None = None) -> dict[str, Any]:
    """Run a benchmark child; it prints one JSON document as its last stdout line. stderr passes through."""
    try:
        done = subprocess.run(list(command), stdout=subprocess.PIPE, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"child timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"child exited with status {done.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def emit(result: dict[str, Any]) -> None:
    """A child's answer: one JSON line on stdout."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- figures ---------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(start: float) -> float:
    return time.perf_counter() - start


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in ("attune-actors", "pykka", "uvloop", "msgpack", "jinja2"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    markdown: bool = False,
    right: Sequence[bool] | None = None,
) -> str:
    """A plain-text (aligned) or Markdown table."""
    right = list(right) if right is not None else [False] * len(headers)
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def source_state(path: str = "attune_actors") -> dict[str, Any]:
    """The commit measured and whether `path` differs from it (read-only git commands)."""

    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "--no-optional-locks", *argv],
                cwd=repo_root(),
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = (git("rev-parse", "--short", "HEAD") or "").strip() or None
    changed = git("status", "--porcelain", "--", path)
    return {
        "commit": commit,
        "dirty": None if changed is None else bool(changed),
        "changed_files": [] if not changed else [ln[3:] for ln in changed.splitlines()],
    }


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# -- workloads and processes -------------------------------------------------------------------


def chain_yaml(n: int, *, on: str = "on_success") -> str:
    """A workflow of `n` core.noop tasks, each `on` (`on_success`, `on_complete`) of the one before."""
    lines = [f"description: {n} sequential core.noop tasks", "tasks:"]
    for i in range(n):
        nxt = f", {on}: t{i + 1}" if i < n - 1 else ""
        lines.append(f"  - {{name: t{i}, action: core.noop{nxt}}}")
    return "\n".join(lines) + "\n"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/PID/stat), 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_nats_server(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A nats-server with JetStream in `store` on a free loopback port, once it answers; its URL."""
    import shutil
    import socket

    binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                if conn.recv(4).startswith(b"INFO"):
                    return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("nats-server did not start")
        time.sleep(0.02)  # deliberate: waiting for the server's first INFO line
