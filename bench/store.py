"""Store benchmark: one commit per step vs the group-committed SQLiteStore, and MemoryStore.

The workload is what supervisors do: `--executions` executions (default 10,000) advance
`--steps` steps each (default 10), round robin; every step saves the execution's header and one or
two task run records (the run it starts, and the one it ends); a loop turn holds `--per-turn` steps
(default 100, each of a different execution). Rows saved = headers + run records.

Rows:

- `one commit per step`: plain sqlite3 on the same schema, one transaction per step (header and its
  runs), the design group commit replaces; run on the first `--baseline-steps` steps only (it is
  slow), its rate is what matters;
- `SQLiteStore, background`: saves, then `await asyncio.sleep(0)` per turn; the writer thread commits
  behind; the clock stops when a final `flush()` returns (everything durable);
- `SQLiteStore, flush per turn`: saves, then `await store.flush()` per turn (each turn waits for its
  own commit: the latency-bound case);
- `MemoryStore`: the same saves into the reference store (nothing durable), the upper bound.

Each figure is the median of `--repeat` runs on fresh files, for synchronous=FULL and NORMAL. Then
a few reads on the file the last run left (executions committed, one turn pending).

    .venv/bin/python bench/store.py              # the recorded run (about 40 s on 2 cores)
    .venv/bin/python bench/store.py --quick      # a smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attune_actors.codec import encode
from attune_actors.store import migrations
from attune_actors.store.base import MemoryStore, Store
from attune_actors.store.sqlite import BUSY_TIMEOUT, UPSERT_EXECUTION, UPSERT_RUN, SQLiteStore

Step = tuple[str, dict[str, Any], list[dict[str, Any]]]


def header(eid: str, step: int, steps: int) -> dict[str, Any]:
    """A header as Conductor.header() makes it, mid-way through a small workflow."""
    done = step == steps - 1
    return {
        "id": eid, "ref": "examples.deploy", "status": "succeeded" if done else "running",
        "vars": {"deployment_id": f"dep-{eid}", "health_url": "https://shop.example.com/health",
                 "attempt": step},
        "output": {"url": "https://shop.example.com"} if done else None, "error": None,
        "started_at": 1_700_000_000.0 + int(eid[1:]), "ended_at": 1_700_000_100.0 if done else None,
        "parent_id": None, "seq": step + 1, "inflight": 0 if done else 1, "paused_children": [],
        "failing": False, "ending": done, "barriers": {}, "timers": [], "staged": [],
        "parameters": {"app_name": "shop", "version": "1.2.3", "environment": "staging"},
    }


def run_record(eid: str, seq: int, status: str) -> dict[str, Any]:
    """A task run record as TaskRun.to_record() makes it."""
    ended = status != "running"
    return {
        "id": f"{eid}-r{seq}", "task": f"task_{seq}", "seq": seq, "status": status,
        "result": {"stdout": f"step {seq} ok", "code": 0} if ended else None, "error": None,
        "attempts": 1, "started_at": 1_700_000_000.0 + seq, "ended_at": 1_700_000_001.0 + seq
        if ended else None, "group": None,
        "input": None if ended else {"app": "shop", "tag": "1.2.3", "replicas": 3},
        "deadline": None, "inquiry_id": None, "child_id": None, "item_count": None,
        "next_item": 0, "pending_subs": 0,
    }


def workload(executions: int, steps: int) -> Iterator[Step]:
    """Step s of every execution, then step s+1: each step starts run s and ends run s-1."""
    for s in range(steps):
        for e in range(executions):
            eid = f"e{e}"
            runs = [run_record(eid, s, "running")] if s < steps - 1 else []
            if s > 0:
                runs.append(run_record(eid, s - 1, "succeeded"))
            yield eid, header(eid, s, steps), runs


@dataclass
class Result:
    rows: int  # rows saved (headers + runs)
    seconds: float  # until everything is durable
    loop_seconds: float  # until the loop made its last save (the loop's own cost)
    commits: int = 0
    rows_written: int = 0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def one_commit_per_step(path: Path, steps: list[Step], synchronous: str) -> Result:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    migrations.migrate(conn, path)
    rows = 0
    nums: dict[str, int] = {}  # runs are keyed by their execution's num, as the store keeps them
    start = time.perf_counter()
    for eid, hdr, runs in steps:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(UPSERT_EXECUTION.sql(1), (eid, hdr["status"], hdr["started_at"], hdr["ended_at"],
                                               hdr["parent_id"], hdr["ref"], encode(hdr)))
        num = nums.get(eid)
        if num is None:
            found = conn.execute("SELECT num FROM workflow_execution WHERE id = ?", (eid,)).fetchone()
            num = nums[eid] = found[0]
        conn.executemany(UPSERT_RUN.sql(1), [(num, r["id"], r["seq"], r["task"], r["status"], encode(r))
                                       for r in runs])
        conn.execute("COMMIT")
        rows += 1 + len(runs)
    seconds = time.perf_counter() - start
    conn.close()
    return Result(rows, seconds, seconds, commits=len(steps), rows_written=rows)


async def through_store(store: Store, steps: list[Step], per_turn: int, flush_each_turn: bool
                        ) -> Result:
    rows = 0
    start = time.perf_counter()
    for i in range(0, len(steps), per_turn):
        for eid, hdr, runs in steps[i:i + per_turn]:
            store.save(eid, hdr, runs, [])
            rows += 1 + len(runs)
        if flush_each_turn:
            await store.flush()
        else:
            await asyncio.sleep(0)
    loop_seconds = time.perf_counter() - start
    await store.flush()
    seconds = time.perf_counter() - start
    if isinstance(store, SQLiteStore):
        stats = store.stats()
        return Result(rows, seconds, loop_seconds, stats.commits, stats.rows_written)
    return Result(rows, seconds, loop_seconds)


async def paced(store: SQLiteStore, steps: list[Step], per_turn: int, rate: float
                ) -> tuple[float, int, int]:
    """Save `rate` steps/s (a turn of `per_turn` steps at a time); (seconds, commits, rows)."""
    start = time.perf_counter()
    for n, i in enumerate(range(0, len(steps), per_turn)):
        for eid, hdr, runs in steps[i:i + per_turn]:
            store.save(eid, hdr, runs, [])
        await asyncio.sleep(max(0.0, start + (n + 1) * per_turn / rate - time.perf_counter()))
    seconds = time.perf_counter() - start
    stats = store.stats()
    return seconds, stats.commits, stats.rows_written


def median(results: list[Result]) -> Result:
    results = sorted(results, key=lambda r: r.rate)
    return results[len(results) // 2]


def time_us(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number * 1e6


async def reads(folder: Path, steps: list[Step], per_turn: int, executions: int
                ) -> list[tuple[str, float, float]]:
    """µs per read, SQLiteStore (all committed but one pending turn) vs MemoryStore."""
    sql = SQLiteStore(folder / "reads.db", synchronous="NORMAL")
    mem = MemoryStore()
    for store in (sql, mem):
        for eid, hdr, runs in steps:
            store.save(eid, hdr, runs, [])
        await store.flush()
        for eid, hdr, runs in steps[-per_turn:]:  # one turn pending, on top of the file
            store.save(eid, hdr, runs, [])
    ids = [f"e{i * 7919 % executions}" for i in range(200)]
    pending_id = steps[-1][0]
    out = []
    for name, op, n in (
        ("load (10 runs, committed)", lambda s: [s.load(i) for i in ids], 200),
        ("load (pending on top)", lambda s: s.load(pending_id), 1),
        ("headers(limit=20)", lambda s: s.headers(limit=20), 1),
        ("headers(status='running', limit=20)",
         lambda s: s.headers(status="running", limit=20), 1),
        (f"unfinished() ({executions} executions)", lambda s: s.unfinished(), 1),
    ):
        number = 5 if n == 200 else 50
        us_sql = time_us(lambda op=op: op(sql), number) / n  # type: ignore[misc]
        us_mem = time_us(lambda op=op: op(mem), number) / n  # type: ignore[misc]
        out.append((name, us_sql, us_mem))
    await sql.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--per-turn", type=int, default=100, help="steps per loop turn")
    parser.add_argument("--baseline-steps", type=int, default=3_000,
                        help="steps run through the one-commit-per-step baseline")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--paced-rate", type=float, default=10_000,
                        help="steps/s of the paced run (what an engine under load saves)")
    parser.add_argument("--paced-steps", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, 1 repeat")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files (a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.executions, args.baseline_steps, args.repeat, args.paced_steps = 1000, 1000, 1, 5000

    steps = list(workload(args.executions, args.steps))
    base_steps = steps[: args.baseline_steps]
    folder = Path(tempfile.mkdtemp(prefix="attune-bench-store-", dir=args.dir))
    n = 0

    def fresh() -> Path:
        nonlocal n
        n += 1
        return folder / f"run{n}" / "attune.db"

    table: list[tuple[str, str, Result]] = []
    try:
        for sync in ("FULL", "NORMAL"):
            results = []
            for _ in range(args.repeat):
                path = fresh()
                path.parent.mkdir()
                results.append(one_commit_per_step(path, base_steps, sync))
            table.append(("one commit per step", sync, median(results)))
            for flush_each_turn in (False, True):
                results = []
                for _ in range(args.repeat):
                    async def once(each: bool = flush_each_turn, mode: str = sync) -> Result:
                        store = SQLiteStore(fresh(), synchronous=mode)
                        try:
                            return await through_store(store, steps, args.per_turn, each)
                        finally:
                            await store.close()
                    results.append(asyncio.run(once()))
                label = "flush per turn" if flush_each_turn else "background"
                table.append((f"SQLiteStore, {label}", sync, median(results)))
        results = [asyncio.run(through_store(MemoryStore(), steps, args.per_turn, False))
                   for _ in range(args.repeat)]
        table.append(("MemoryStore", "-", median(results)))
        paced_rows = []
        for sync in ("FULL", "NORMAL"):
            async def pace(mode: str = sync) -> tuple[float, int, int]:
                store = SQLiteStore(fresh(), synchronous=mode)
                try:
                    return await paced(store, steps[: args.paced_steps], args.per_turn,
                                       args.paced_rate)
                finally:
                    await store.close()
            paced_rows.append((sync, *asyncio.run(pace())))
        read_rows = asyncio.run(reads(folder, steps, args.per_turn, args.executions))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
          f"{platform.machine()} | {args.executions} executions x {args.steps} steps, "
          f"{args.per_turn} steps per turn, {len(steps)} steps / {table[1][2].rows} rows saved; "
          f"baseline on {len(base_steps)} steps; median of {args.repeat}")
    print()
    print("| store | synchronous | rows saved/s | vs one commit per step (same sync) | commits "
          "| rows written | seconds | loop seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    baseline = {sync: r.rate for name, sync, r in table if name == "one commit per step"}
    for name, sync, r in table:
        ratio = r.rate / baseline[sync] if sync in baseline else r.rate / baseline["FULL"]
        note = "" if sync in baseline else " (vs FULL)"
        print(f"| {name} | {sync} | {r.rate:,.0f} | {ratio:.1f}x{note} | {r.commits:,} "
              f"| {r.rows_written:,} | {r.seconds:.2f} | {r.loop_seconds:.2f} |")
    print()
    print(f"Paced: {args.paced_steps:,} steps at {args.paced_rate:,.0f} steps/s "
          f"({args.per_turn} per turn, one turn every {args.per_turn / args.paced_rate * 1e3:.0f} ms)")
    print()
    print("| synchronous | commits | commits/s | mean interval ms | saved rows per commit "
          "| written rows per commit |")
    print("|---|---:|---:|---:|---:|---:|")
    saved_rows = sum(1 + len(runs) for _, _, runs in steps[: args.paced_steps])
    for sync, seconds, commits, written in paced_rows:
        print(f"| {sync} | {commits:,} | {commits / seconds:,.0f} | {seconds / commits * 1e3:.1f} "
              f"| {saved_rows / commits:,.0f} | {written / commits:,.0f} |")
    print()
    print("| read | SQLiteStore µs | MemoryStore µs |")
    print("|---|---:|---:|")
    for name, us_sql, us_mem in read_rows:
        print(f"| {name} | {us_sql:,.1f} | {us_mem:,.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
