"""This tree against a baseline commit, side by side: the shapes of issue #19 on attune_actors alone.

    .venv/bin/python bench/ab.py                      # against main, both stores, 3 alternations
    .venv/bin/python bench/ab.py --baseline beaeed3 --stores sqlite --rounds 5
    .venv/bin/python bench/ab.py --markdown           # the table as Markdown
    .venv/bin/python bench/ab.py --instructions       # instructions per transition (valgrind)
    .venv/bin/python bench/ab.py --unpinned --stores sqlite   # children on every CPU

The baseline's `attune_actors` is taken with `git archive` into a temporary directory; every
(shape, store, side) measurement runs in a fresh child process pinned to one CPU (`--unpinned`:
not pinned, so the SQLite writer thread runs beside the loop as it does in production), baseline and
this tree alternating, so load that comes and goes hits both alike. Figures are CPU time
(`process_time`: the SQLite writer thread included), the median of the children's medians.

`--instructions` counts instead the instructions one measured round executes, under valgrind's
callgrind (counting only from the round's start to its end): the same count on a busy machine as on a
quiet one, within ~0.5 %, so small changes show while other jobs run. It is no timing: cache misses,
system calls and waiting for the disk do not count, and the process runs ~50 times slower.

Shapes, each through `Engine.execute` / `Engine.wait` with `core.noop` tasks, as bench/peers runs
them (its pack, bench/peers/sys_attune.py):

- `concurrent-1000`: 1,000 workflows of 10 tasks started at once (issue #19's durable goal);
- `concurrent-200`: 200 workflows of 10 tasks started at once;
- `fanout-4`: 20 executions in a row of a fan-out to 4 branches and a `join: all`;
- `items-1000`: one task `with_items` over 1,000 items, all at once.

The store is the default of `Engine(data_dir=...)` (`sqlite`) or `memory`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import _common as common  # noqa: E402

SHAPES = {  # name: (kind, size, executions in a row)
    "concurrent-1000": ("concurrent", 1000, 1),
    "concurrent-200": ("concurrent", 200, 1),
    "fanout-4": ("fanout", 4, 20),
    "items-1000": ("items", 1000, 1),
}
TRANSITIONS = {"concurrent-1000": 10_000, "concurrent-200": 2_000, "fanout-4": 120, "items-1000": 1_000}


# -- child -----------------------------------------------------------------------------------------


def callgrind(on: bool) -> None:
    """Start or stop counting instructions in this process (it runs under callgrind)."""
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
                   capture_output=True, check=True)


def child(shape: str, store: str, rounds: int, counting: bool = False, pinned: bool = True) -> None:
    if pinned:
        common.pin_to_cpu(common.default_cpu())
    sys.path.append(str(ROOT))  # for `bench.peers`; last, so a baseline on PYTHONPATH comes first
    from bench.peers.sys_attune import PACK, write_pack

    kind, size, reps = SHAPES[shape]

    async def main() -> dict[str, Any]:
        from attune_actors import Engine
        from attune_actors.config import load_settings

        tmp = Path(tempfile.mkdtemp(prefix="attune-ab-"))
        settings = load_settings(
            overrides={"packs": [str(write_pack(tmp))], "data_dir": str(tmp / "data"), "store": store,
                       "logging": {"level": "WARNING"}},
            environ={},
        )
        engine = Engine(settings=settings)
        await engine.start()

        async def one() -> None:
            for _ in range(reps):
                if kind == "fanout":
                    started = [await engine.execute(f"{PACK}.fanout_{size}", {})]
                elif kind == "items":
                    started = [await engine.execute(f"{PACK}.items", {"items": list(range(size))})]
                else:
                    ref = f"{PACK}.chain_10"
                    started = await asyncio.gather(*(engine.execute(ref, {}) for _ in range(size)))
                finals = await asyncio.gather(*(engine.wait(x.id) for x in started))
                if any(f.status != "succeeded" for f in finals):
                    raise SystemExit(f"{shape}: an execution did not succeed")

        await one()  # warm-up
        if counting:
            gc.collect()
            callgrind(True)
            await one()
            callgrind(False)
        cpu = []
        for _ in range(0 if counting else rounds):
            gc.collect()
            began = time.process_time()
            await one()
            cpu.append(time.process_time() - began)
        await engine.close()
        shutil.rmtree(tmp, ignore_errors=True)
        import attune_actors

        source = str(Path(attune_actors.__file__).parent)
        return {"cpu_s": common.median(cpu) if cpu else 0.0, "source": source}

    common.emit(asyncio.run(main()))


# -- parent ----------------------------------------------------------------------------------------


def baseline_tree(ref: str) -> Path:
    """`ref`'s attune_actors, extracted into a temporary directory."""
    out = Path(tempfile.mkdtemp(prefix="attune-ab-base-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "attune_actors"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def run_side(
    tree: Path | None, shape: str, store: str, rounds: int, counting: bool = False, pinned: bool = True
) -> float:
    """CPU seconds of a round, or (`counting`) the instructions it executed."""
    saved = dict(os.environ)
    if tree is not None:  # the baseline first on the path, before the editable install of this tree
        os.environ["PYTHONPATH"] = str(tree)
        os.environ["ATTUNE_AB_BASELINE"] = "1"
    command = [sys.executable, __file__, "--child", shape, "--store", store, "--rounds", str(rounds)]
    if not pinned:
        command.append("--unpinned")
    counts = Path(tempfile.mkdtemp(prefix="attune-ab-callgrind-")) / "out"
    if counting:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={counts}",
                   *command, "--count"]
    try:
        got = common.run_child(command, timeout=3600)
        if counting and "error" not in got:
            got["instructions"] = instructions(counts)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(counts.parent, ignore_errors=True)
    if "error" in got:
        raise SystemExit(f"{shape} on {store} ({'baseline' if tree else 'this tree'}): {got['error']}")
    expected = str(tree / "attune_actors") if tree is not None else str(ROOT / "attune_actors")
    if got["source"] != expected:
        raise SystemExit(f"the child imported {got['source']}, not {expected}")
    return float(got["instructions"] if counting else got["cpu_s"])


def instructions(out: Path) -> int:
    """The instruction count in a callgrind output file."""
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no instruction count in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="the commit to compare with (default: main)")
    parser.add_argument("--stores", default="memory,sqlite", help="comma-separated: memory, sqlite")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated of {', '.join(SHAPES)}")
    parser.add_argument("--alternations", type=int, default=3, help="baseline/tree pairs per figure")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds in each child")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per transition under valgrind instead of timing")
    parser.add_argument("--unpinned", action="store_true",
                        help="let each child use every CPU (the SQLite writer thread then runs beside the "
                             "loop, as in production, and its wake-ups and hand-overs show)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--count", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.store, args.rounds, args.count, not args.unpinned)
        return
    if args.instructions and shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt install valgrind)")
    counting = args.instructions
    alternations = 1 if counting else args.alternations  # a count does not vary with the load
    tree = baseline_tree(args.baseline)
    rows = []
    try:
        for shape in args.shapes.split(","):
            for store in args.stores.split(","):
                base: list[float] = []
                mine: list[float] = []
                for _ in range(alternations):
                    base.append(run_side(tree, shape, store, args.rounds, counting, not args.unpinned))
                    mine.append(run_side(None, shape, store, args.rounds, counting, not args.unpinned))
                b, m = common.median(base), common.median(mine)
                n = TRANSITIONS[shape]
                if counting:
                    b, m = b / n, m / n
                    common.progress(f"{shape} {store}: baseline {b:,.0f}, this tree {m:,.0f} instructions")
                    rows.append([shape, store, f"{b / 1e3:,.1f}k", f"{m / 1e3:,.1f}k", f"{b / m:.2f}x"])
                    continue
                common.progress(f"{shape} {store}: baseline {b * 1e3:.1f} ms, this tree {m * 1e3:.1f} ms")
                rows.append([shape, store, f"{b * 1e3:,.1f} ms ({n / b / 1e3:,.1f}k/s)",
                             f"{m * 1e3:,.1f} ms ({n / m / 1e3:,.1f}k/s)", f"{b / m:.2f}x"])
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    if counting:
        print(f"Instructions per transition (callgrind, one measured round after a warm-up); baseline "
              f"{args.baseline}, this tree at {head}\n")
    else:
        print(f"CPU time per round (transitions per CPU second), median of {args.alternations} alternated "
              f"children x {args.rounds} rounds{', unpinned' if args.unpinned else ''}; baseline "
              f"{args.baseline}, this tree at {head}; load average {common.load_average() or 0:.1f}\n")
    print(common.table(["shape", "store", "baseline", "this tree", "speed-up"], rows, markdown=args.markdown,
                       right=[False, False, True, True, True]))


if __name__ == "__main__":
    if os.environ.get("ATTUNE_AB_BASELINE"):
        # An editable install puts its finder ahead of PYTHONPATH: drop it, so the baseline imports.
        sys.meta_path[:] = [f for f in sys.meta_path if "_EditableFinder" not in str(f)]
    main()
