"""Executions one after another (`execute` then `wait`), where each one's time goes, per thread.

The peers' fan-out shape runs 20 small executions in a row; with SQLite each `execute()` waits for
the commit that makes its execution durable ("accepted means durable"). This prints, per
execution, the wall time and the CPU time of the loop thread and of the store's writer thread
(from /proc, user and system apart), for the memory store and SQLite at each `synchronous` level:
what the commit costs, what its fsync costs, and what the loop pays around them.

    .venv/bin/python bench/sequential.py                      # fan-out to 4 + join, ~30 s
    .venv/bin/python bench/sequential.py --workflow chain_1 --executions 1000

Linux only (per-thread CPU from /proc/self/task). The loop is asyncio's; each configuration runs
in a fresh process, alternated `--alternations` times; the table shows each one's median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORES = ("memory", "sqlite-OFF", "sqlite-NORMAL", "sqlite-FULL")


def _thread_cpu(native_id: int) -> tuple[float, float]:
    """(user, system) seconds of one thread of this process."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def _measure(store_name: str, workflow: str, executions: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from attune_actors import Engine
    from attune_actors.store.base import MemoryStore
    from attune_actors.store.sqlite import SQLiteStore
    from bench.peers.sys_attune import PACK, write_pack

    tmp = Path(tempfile.mkdtemp(prefix="bench-sequential-"))
    packs = write_pack(tmp)
    data = tmp / "data"
    data.mkdir()
    store = (MemoryStore() if store_name == "memory"
             else SQLiteStore(data / "attune.db", synchronous=store_name.split("-")[1]))
    ref = f"{PACK}.{workflow}"
    async with Engine(packs=[str(packs)], data_dir=data, store=store, rules=False) as engine:
        for _ in range(100):  # warm-up: caches, the first commits
            await engine.wait((await engine.execute(ref, {})).id)
        threads = {t.name: t.native_id for t in threading.enumerate() if t.native_id is not None}
        loop_id = threading.get_native_id()
        writer_id = next((i for n, i in threads.items() if n.startswith("attune-store-writer")), None)
        before = {i: _thread_cpu(i) for i in (loop_id, writer_id) if i is not None}
        began = time.perf_counter()
        for _ in range(executions):
            await engine.wait((await engine.execute(ref, {})).id)
        wall = time.perf_counter() - began
        after = {i: _thread_cpu(i) for i in before}
    per = 1e6 / executions

    def part(i: int | None, k: int) -> float:
        return 0.0 if i is None else (after[i][k] - before[i][k]) * per

    return {
        "wall": wall * per,
        "loop_user": part(loop_id, 0), "loop_sys": part(loop_id, 1),
        "writer_user": part(writer_id, 0), "writer_sys": part(writer_id, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workflow", default="fanout_4", help="a workflow of bench/peers' pack")
    ap.add_argument("--executions", type=int, default=2000)
    ap.add_argument("--alternations", type=int, default=3)
    ap.add_argument("--stores", default=",".join(STORES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.child, args.workflow, args.executions))))
        return
    stores = args.stores.split(",")
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in stores}
    for a in range(args.alternations):
        for s in stores:
            out = subprocess.run(
                [sys.executable, __file__, "--child", s, "--workflow", args.workflow,
                 "--executions", str(args.executions)],
                check=True, capture_output=True, text=True,
            ).stdout
            runs[s].append(json.loads(out.splitlines()[-1]))
            print(f"  [{a + 1}/{args.alternations}] {s}: {runs[s][-1]['wall']:.0f} µs", file=sys.stderr)
    print(f"\n{args.workflow}, {args.executions} executions in a row, µs per execution "
          f"(median of {args.alternations} processes)\n")
    cols = ("wall", "loop_user", "loop_sys", "writer_user", "writer_sys")
    print(f"{'store':<15}" + "".join(f"{c:>13}" for c in cols) + f"{'vs memory':>11}")
    base = statistics.median(r["wall"] for r in runs[stores[0]])
    for s in stores:
        med = {c: statistics.median(r[c] for r in runs[s]) for c in cols}
        print(f"{s:<15}" + "".join(f"{med[c]:>13.0f}" for c in cols) + f"{med['wall'] / base:>10.2f}x")


if __name__ == "__main__":
    main()
