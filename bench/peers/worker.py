"""One system under test, in its own process: `python -m bench.peers.worker SYSTEM`.

The runner (bench/peers/run.py) starts one worker per system and talks to it in JSON lines: the
worker answers `{"ready": ...}` (after importing its system and a warm-up of every shape kind at a
small size) or `{"unavailable": reason}`; then, per command `{"shape": KEY, "cap": SECONDS}`, it
prepares the run (not timed), runs it and answers the wall time, the CPU time of the worker and of
every process it started (Prefect's local API server, NATS workers), and the transitions done. A
run still going after `cap` seconds is cut where the system allows it; `complete` says whether it
finished. Only one worker runs at a time, so idle systems do not disturb the measured one.

The protocol uses the worker's original stdout; fd 1 is pointed at stderr so nothing a system
prints can corrupt it.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from typing import Any

from bench.peers.shapes import ALL

SYSTEMS = ("attune-memory", "attune-sqlite", "attune-nats", "orquesta", "prefect")
TICK = os.sysconf("SC_CLK_TCK")


def make(system: str) -> Any:
    if system.startswith("attune-"):
        from bench.peers.sys_attune import Adapter as Attune

        return Attune(system.removeprefix("attune-"))
    if system == "orquesta":
        from bench.peers.sys_orquesta import Adapter as Orquesta

        return Orquesta()
    if system == "prefect":
        from bench.peers.sys_prefect import Adapter as Prefect

        return Prefect()
    raise ValueError(f"unknown system {system!r}")


def children_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by every live descendant of `root` (from /proc)."""
    parent: dict[int, list[tuple[int, float]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent.setdefault(int(fields[1]), []).append((int(entry), (int(fields[11]) + int(fields[12])) / TICK))
    total, stack = 0.0, [root]
    while stack:
        for pid, cpu in parent.get(stack.pop(), ()):
            total += cpu
            stack.append(pid)
    return total


def settle(me: int, limit: float) -> tuple[float, float]:
    """Wait until this worker's own threads and the processes it started are idle (less than 50 ms
    of CPU in 0.5 s), at most `limit` seconds, so work a system defers (a server recording runs
    after the flow returned, a client flushing its events) does not land in the next measurement;
    (seconds waited, CPU seconds used meanwhile)."""
    t0 = time.perf_counter()
    first = last = time.process_time() + children_cpu(me)
    while time.perf_counter() - t0 < limit:
        time.sleep(0.25 if time.perf_counter() - t0 < 0.25 else 0.5)
        now = time.process_time() + children_cpu(me)
        if now - last < 0.05:
            break
        last = now
    return time.perf_counter() - t0, last - first


def main() -> None:
    system = sys.argv[1]
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        proto.write(json.dumps(message) + "\n")
        proto.flush()

    try:
        adapter = make(system)
        adapter.warm_up()
    except Exception as exc:
        traceback.print_exc()
        send({"unavailable": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
        return
    me = os.getpid()
    send({"ready": True, "label": adapter.label, "versions": adapter.versions(), "pid": me})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("op") == "quit":
                break
            shape = ALL[command["shape"]]
            try:
                adapter.prepare(shape)
                gc.collect()
                kids0, cpu0 = children_cpu(me), time.process_time()
                profiler = None
                if command.get("profile"):
                    from pyinstrument import Profiler

                    profiler = Profiler(interval=0.0005)
                    profiler.start()
                t0 = time.perf_counter()
                done = adapter.run(shape, t0 + command["cap"])
                wall = time.perf_counter() - t0
                if profiler is not None:
                    profiler.stop()
                    with open(command["profile"], "w") as out:
                        out.write(profiler.output_text(unicode=False, color=False))
                cpu, kids = time.process_time() - cpu0, children_cpu(me) - kids0
                adapter.cleanup()
                settle_s, settle_cpu = settle(me, command.get("settle", 60.0))
            except Exception as exc:
                traceback.print_exc()
                send({"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
                continue
            send(
                {
                    "wall": wall,
                    "cpu": cpu,
                    "children_cpu": kids,
                    "settle_s": settle_s,
                    "settle_cpu": settle_cpu,
                    "done": done,
                    "transitions": shape.transitions,
                    "complete": done >= shape.transitions,
                }
            )
    finally:
        adapter.close()


if __name__ == "__main__":
    main()
