"""Python actions: the process pool (killable workers) vs the former thread-pool path.

Run: .venv/bin/python bench/python_actions.py [--runs N] [--repeat R]

The baseline (`ThreadPath`) is what the python runner did before the pool: the module loaded once
in the engine, a sync `run` called through a bounded `ThreadPoolExecutor`, an async one awaited on
the loop. The pool is `PythonRunner` as shipped. Figures (best of R), wall time and CPU time (this
process plus the pool's worker processes, from /proc: steadier than wall time on a shared machine):

1. one run at a time, a trivial sync action: µs per run (the round-trip cost);
2. 8 runs at a time, same action: µs per run;
3. one run at a time, and 100 at a time, a trivial async action (async runs share workers);
4. an engine workflow: with_items over 1,000 python items (concurrency 8), both paths;
5. pool costs that the thread path does not have: first run (spawns a worker), a timed-out
   run (SIGTERM, reap, replace), RSS of one idle worker.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib.util
import inspect
import os
import platform
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attune_actors import Engine
from attune_actors.config import load_settings
from attune_actors.runners import PythonRunner, RunContext, RunnerSet, default_runners, json_result
from attune_actors.spec.model import ActionSpec
from attune_actors.transport.inprocess import InProcessTransport

CTX = RunContext("ex", "run", 1, "t", None, "bench.act")


class ThreadPath:
    """The former python runner's hot path (module cache by stamp, executor, JSON check)."""

    def __init__(self, workers: int = 8) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="bench")
        self._modules: dict[Path, tuple[tuple[int, int], Any]] = {}

    async def run(self, action: ActionSpec, parameters: dict[str, Any], context: RunContext) -> Any:
        assert action.entry_point is not None
        # As the former runner did, on the loop (a stat per run, to notice edited files).
        path = Path(action.pack_path).resolve() / "actions" / action.entry_point  # noqa: ASYNC240
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._modules.get(path)
        if cached is None or cached[0] != stamp:
            spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            cached = self._modules[path] = (stamp, module.run)
        function = cached[1]
        if inspect.iscoroutinefunction(function):
            result = await function(**parameters)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, lambda: function(**parameters))
        return json_result(result, action=action.ref)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False)


def make_pack(root: Path) -> Path:
    pack = root / "bench"
    (pack / "actions").mkdir(parents=True)
    (pack / "workflows").mkdir()
    (pack / "pack.yaml").write_text("ref: bench\n")
    (pack / "actions" / "add.py").write_text("def run(a, b=None):\n    return {'sum': a + (b or 1)}\n")
    (pack / "actions" / "add.yaml").write_text(textwrap.dedent("""
        name: add
        runner_type: python
        entry_point: add.py
        parameters:
          a: {type: integer, required: true}
          b: {type: integer}
    """))
    (pack / "actions" / "aadd.py").write_text(
        "async def run(a, b=None):\n    return {'sum': a + (b or 1)}\n"
    )
    (pack / "actions" / "sleepy.py").write_text("import time\ndef run():\n    time.sleep(30)\n")
    (pack / "workflows" / "items.yaml").write_text(textwrap.dedent("""
        ref: bench.items
        tasks:
          - name: each
            action: bench.add
            with_items: "{{ range(1000) | list }}"
            concurrency: 8
            input: {a: "{{ item }}"}
    """))
    return pack


def act(pack: Path, entry: str) -> ActionSpec:
    return ActionSpec(ref="bench.act", pack="bench", name="act", runner_type="python",
                      entry_point=entry, pack_path=str(pack))


TICK = os.sysconf("SC_CLK_TCK")


def children_cpu(runner: Any) -> float:
    """CPU seconds used so far by the pool's (idle) worker processes; 0 for the thread path."""
    pool = getattr(runner, "pool", None)
    total = 0.0
    for pid in pool.processes if pool is not None else ():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


async def measure(runner: Any, action: ActionSpec, runs: int, width: int) -> tuple[float, float]:
    """(wall µs, CPU µs) per run, `width` runs at a time."""
    slots = asyncio.Semaphore(width)

    async def one(i: int) -> None:
        async with slots:
            await runner.run(action, {"a": i}, CTX)

    wall, cpu, kids = time.perf_counter(), time.process_time(), children_cpu(runner)
    if width == 1:
        for i in range(runs):
            await runner.run(action, {"a": i}, CTX)
    else:
        await asyncio.gather(*(one(i) for i in range(runs)))
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu + children_cpu(runner) - kids
    return wall / runs * 1e6, cpu / runs * 1e6


async def best(
    make: Callable[[], Awaitable[tuple[float, float]]], repeat: int
) -> tuple[float, float]:
    results = [await make() for _ in range(repeat)]
    return min(r[0] for r in results), min(r[1] for r in results)


async def engine_items(packs: Path, data: Path, python: Any | None) -> float:
    settings = load_settings(overrides={"packs": [str(packs)], "data_dir": str(data), "store": "memory"},
                             environ={})
    engine: Engine
    transport = None
    if python is not None:
        runners = default_runners()
        runners["python"] = python
        transport = InProcessTransport(lambda ref: engine.catalog.action(ref), RunnerSet(runners))
    engine = Engine(settings=settings, transport=transport)
    await engine.start()
    try:
        await engine.wait((await engine.execute("bench.items")).id, timeout=120)  # warm the workers
        start = time.perf_counter()
        done = await engine.wait((await engine.execute("bench.items")).id, timeout=120)
        elapsed = time.perf_counter() - start
        assert done.status == "succeeded", done.error
        return elapsed
    finally:
        await engine.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.2f}, runs {args.runs}, best of {args.repeat}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "packs"
        pack = make_pack(root)
        add, aadd, sleepy = act(pack, "add.py"), act(pack, "aadd.py"), act(pack, "sleepy.py")
        threads, pool = ThreadPath(), PythonRunner(workers=8, kill_grace=1.0)

        start = time.perf_counter()
        await pool.run(add, {"a": 1}, CTX)
        first = time.perf_counter() - start
        await asyncio.gather(*(pool.run(add, {"a": i}, CTX) for i in range(8)))  # all 8 started

        print("\n| figure (per run) | thread path (before): wall / CPU | process pool: wall / CPU "
              "| ratio wall / CPU |\n|---|---:|---:|---|")
        for label, action, width in (("sync action, one at a time", add, 1),
                                     ("async action, one at a time", aadd, 1),
                                     ("sync action, 8 at a time", add, 8),
                                     ("async action, 100 at a time", aadd, 100)):
            t = await best(lambda a=action, w=width: measure(threads, a, args.runs, w), args.repeat)
            p = await best(lambda a=action, w=width: measure(pool, a, args.runs, w), args.repeat)
            print(f"| {label} | {t[0]:.0f} / {t[1]:.0f} µs | {p[0]:.0f} / {p[1]:.0f} µs "
                  f"| {p[0] / t[0]:.1f}x / {p[1] / t[1]:.1f}x |")
        t1 = await engine_items(root, Path(tmp) / "d1", threads)
        p1 = await engine_items(root, Path(tmp) / "d2", None)
        print(f"| engine: with_items 1,000 python items (batch 8), whole task | {t1:.2f} s "
              f"| {p1:.2f} s | {p1 / t1:.2f}x |")

        rss = [rss_kib(pid) for pid in pool.pool.processes]
        await pool.aclose()
        single = PythonRunner(workers=1, kill_grace=1.0)
        await single.run(add, {"a": 1}, CTX)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(0.5):
                await single.run(sleepy, {}, CTX)
        except TimeoutError:
            pass
        stop = time.perf_counter() - start - 0.5
        start = time.perf_counter()
        await single.run(add, {"a": 1}, CTX)
        replace = time.perf_counter() - start
        await single.aclose()
        print(f"\npool: first run (spawns a worker) {first * 1000:.0f} ms; stopping a timed-out "
              f"sync run {stop * 1000:.0f} ms; next run (spawns its replacement) {replace * 1000:.0f} ms; "
              f"idle worker RSS {sum(rss) / max(1, len(rss)) / 1024:.1f} MiB ({len(rss)} workers)")
        await threads.aclose()


if __name__ == "__main__":
    asyncio.run(main())
