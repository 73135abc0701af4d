"""Python actions: the process pool (killable workers) vs the former thread-pool path.

Run: .venv/bin/python bench/python_actions.py [--runs N] [--repeat R]

The baseline (`ThreadPath`) is what the python runner did before the pool: the module loaded once
in the engine, a sync `run` called through a bounded `ThreadPoolExecutor`, an async one awaited on
the loop. The pool is `PythonRunner` as shipped. Figures (best of R):

1. one run at a time, a trivial sync action: µs per run (the round-trip cost);
2. 8 runs at a time, same action: runs/s;
3. one run at a time, a trivial async action;
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


async def best(make: Callable[[], Awaitable[float]], repeat: int) -> float:
    return min([await make() for _ in range(repeat)])


async def sequential(runner: Any, action: ActionSpec, runs: int) -> float:
    start = time.perf_counter()
    for i in range(runs):
        await runner.run(action, {"a": i}, CTX)
    return (time.perf_counter() - start) / runs * 1e6


async def concurrent_rate(runner: Any, action: ActionSpec, runs: int, width: int = 8) -> float:
    slots = asyncio.Semaphore(width)

    async def one(i: int) -> None:
        async with slots:
            await runner.run(action, {"a": i}, CTX)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(runs)))
    return runs / (time.perf_counter() - start)


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

        rows: list[tuple[str, float, float, str]] = []
        for name, action in (("sync", add), ("async", aadd)):
            t = await best(lambda a=action: sequential(threads, a, args.runs), args.repeat)
            p = await best(lambda a=action: sequential(pool, a, args.runs), args.repeat)
            rows.append((f"{name} action, one at a time (µs/run)", t, p, f"{p / t:.1f}x time"))
        t = await best(lambda: concurrent_rate(threads, add, args.runs), args.repeat)
        p = await best(lambda: concurrent_rate(pool, add, args.runs), args.repeat)
        rows.append(("sync action, 8 at a time (runs/s)", t, p, f"{t / p:.1f}x slower"))
        t = await engine_items(root, Path(tmp) / "d1", threads)
        p = await engine_items(root, Path(tmp) / "d2", None)
        rows.append(("engine: with_items 1,000 python items (s)", t, p, f"{p / t:.2f}x time"))

        print("\n| figure | thread path (before) | process pool | ratio |\n|---|---:|---:|---|")
        for label, t, p, ratio in rows:
            print(f"| {label} | {t:,.3g} | {p:,.3g} | {ratio} |")

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
