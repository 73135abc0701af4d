"""Durability costs: transitions/s with the SQLite store vs in memory, and time to resume after a restart.

    .venv/bin/python bench/durability.py [--workflows 1000] [--parked 10000] [--only resume]

(1) N concurrent workflows of 10 `core.noop` tasks, in-memory store and then SQLite store (group
commit, synchronous=FULL) in the same run: task transitions/s and the ratio (issue #19's goals:
>= 20,000/s durable, >= 0.8x the memory store).
(2) `--parked` executions each parked in a `core.sleep` are left running when the engine closes;
a new engine on the same data dir resumes them: seconds from `Engine.start()` until every one of
them has its sleep dispatched again (goal <= 10 s for 10,000).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from attune_actors import Engine
from attune_actors.config import load_settings

CHAIN = "tasks:\n" + "".join(
    f"  - name: t{i}\n    action: core.noop\n" + (f"    on_success: t{i + 1}\n" if i < 9 else "")
    for i in range(10)
)
PARK = "tasks:\n  - {name: park, action: core.sleep, input: {seconds: 3600}}\n"


def write_pack(root: Path) -> Path:
    pack = root / "packs" / "bench"
    (pack / "workflows").mkdir(parents=True)
    (pack / "pack.yaml").write_text("ref: bench\n")
    (pack / "workflows" / "ten.yaml").write_text(CHAIN)
    (pack / "workflows" / "park.yaml").write_text(PARK)
    return root / "packs"


def engine(packs: Path, data: Path, store: str) -> Engine:
    settings = load_settings(overrides={"packs": [str(packs)], "data_dir": str(data), "store": store,
                                        "logging": {"level": "WARNING"}}, environ={})
    return Engine(settings=settings)


async def transitions(packs: Path, data: Path, store: str, n: int) -> float:
    async with engine(packs, data, store) as e:
        started = time.perf_counter()
        executions = await asyncio.gather(*(e.execute("bench.ten") for _ in range(n)))
        await asyncio.gather(*(e.wait(x.id) for x in executions))
        return n * 10 / (time.perf_counter() - started)


def attempts_out(transport: Any) -> int:
    """Attempts the in-process transport has out (`_running` in versions before sleeps were timers,
    for a baseline run of older code)."""
    if hasattr(transport, "in_flight"):
        return int(transport.in_flight)
    return len(transport._running)


async def resume_time(packs: Path, data: Path, n: int) -> tuple[float, float, float]:
    first = engine(packs, data, "sqlite")
    await first.start()
    await asyncio.gather(*(first.execute("bench.park") for _ in range(n)))
    await first.close()
    second = engine(packs, data, "sqlite")
    started, cpu = time.perf_counter(), time.process_time()
    await second.start()
    start_done = time.perf_counter() - started
    transport = second._runtime().transport
    while attempts_out(transport) < n:  # noqa: ASYNC110 - measuring, not syncing
        await asyncio.sleep(0.01)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    for x in await second.list():
        await second.cancel(x.id, force=True)
    await second.close()
    return start_done, total, cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parked", type=int, default=10000)
    parser.add_argument("--only", choices=["resume"], help="only the resume figure (2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        packs = write_pack(root)
        if args.only != "resume":
            await transitions_figure(packs, root, args.workflows, args.rounds)
        start_done, total, cpu = await resume_time(packs, root / "resume", args.parked)
        print(f"resume {args.parked} parked executions: Engine.start() {start_done:.2f} s, "
              f"all re-dispatched after {total:.2f} s, {cpu:.2f} s CPU (goal <= 10 s)")


async def transitions_figure(packs: Path, root: Path, workflows: int, rounds: int) -> None:
    mem, sql = [], []
    for r in range(rounds):  # alternate, so drift hits both alike
        mem.append(await transitions(packs, root / f"m{r}", "memory", workflows))
        sql.append(await transitions(packs, root / f"s{r}", "sqlite", workflows))
    m, s = statistics.median(mem), statistics.median(sql)
    print(f"{workflows} concurrent workflows x 10 noop tasks, median of {rounds} rounds:")
    print(f"  memory store : {m:9.0f} transitions/s")
    print(f"  sqlite store : {s:9.0f} transitions/s   ratio {s / m:.2f}x (goals >= 20,000/s, >= 0.80x)")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
