"""The conductor alone, this tree against a baseline commit: CPU µs per transition, no actors, no store.

    .venv/bin/python bench/conductor.py                     # against main, 3 alternations
    .venv/bin/python bench/conductor.py --baseline 16f743e --alternations 5 --markdown

A `Conductor` is built per execution as the runtime builds it (its graph and renderer shared, the
core pack's actions), started, and fed `on_attempt_ended(..., "succeeded")` for every `Dispatch`
it answers, first in first out, until it finishes; after every event `take_changes()` and
`header_step()` are called, as the supervisor and the snapshot do after each step. Executions of
one round are interleaved (their dispatches share one queue), as the engine's concurrent shapes
interleave them. A transition is one attempt ended. Shapes:

- `chain-10`: 200 executions of a 10-task `core.noop` chain (`on_complete`, bench/peers' chain);
- `chain-io`: 200 executions of a 10-task `core.echo` chain with a templated input, a constant
  input and a `publish` on `on_success` (what a user's workflow does besides `core.noop`);
- `fanout-4`: 20 executions of a fan-out to 4 branches and a `join: all` (bench/peers' fan-out);
- `items-1000`: one `with_items` task over 1,000 items, all at once (bench/peers' items);
- `build`: 1,000 conductors built (per-execution cost, µs per conductor, not per transition).

As bench/ab.py: the baseline's `attune_actors` comes from `git archive`, each measurement is a
fresh child pinned to one CPU, baseline and this tree alternating; the median of the children's
medians (`--rounds` each).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import _common as common  # noqa: E402

CHAIN_IO = "\n".join(
    ["description: a 10-task chain with inputs and a publish", "vars: {n: 0}", "tasks:"]
    + [
        f"  - name: t{i}\n"
        f"    action: core.echo\n"
        f"    input: {{message: 'step {{{{ vars.n }}}}', size: 3, tags: [a, b]}}\n"
        + (
            f"    next:\n      - when: '{{{{ succeeded() }}}}'\n"
            f"        publish: {{n: '{{{{ vars.n + 1 }}}}'}}\n        do: t{i + 1}\n"
            if i < 9
            else ""
        )
        for i in range(10)
    ]
) + "\n"
SHAPES = {  # name: (executions per round, transitions per execution)
    "chain-10": (200, 10),
    "chain-io": (200, 10),
    "fanout-4": (20, 6),
    "items-1000": (1, 1000),
    "build": (1000, 1),
}


# -- child -----------------------------------------------------------------------------------------


def child(shapes: list[str], rounds: int) -> None:
    common.pin_to_cpu(common.default_cpu())
    sys.path.append(str(ROOT))  # for `bench.peers`; last, so a baseline on PYTHONPATH comes first
    import attune_actors
    from attune_actors.engine.commands import Dispatch
    from attune_actors.engine.conductor import Conductor
    from attune_actors.spec.graph import TaskGraph
    from attune_actors.spec.packs import load_packs, load_workflow_text
    from attune_actors.templates import Renderer
    from bench.peers.sys_attune import ITEMS_YAML, fanout_yaml

    catalog, _ = load_packs([])
    renderer = Renderer()
    texts = {
        "chain-10": common.chain_yaml(10, on="on_complete"),
        "chain-io": CHAIN_IO,
        "fanout-4": fanout_yaml(4),
        "items-1000": ITEMS_YAML,
        "build": common.chain_yaml(10, on="on_complete"),
    }
    params = {"items-1000": {"items": list(range(1000))}}
    counter = 0

    def build(shape: str, spec: Any, graph: Any) -> Any:
        nonlocal counter
        counter += 1
        eid = f"e{counter}"
        return Conductor(
            execution_id=eid,
            spec=spec,
            graph=graph,
            actions=catalog.action,
            renderer=renderer,
            parameters=dict(params.get(shape, {})),
            pack_config={},
            system={"execution_id": eid, "workflow_ref": spec.ref, "timestamp": None},
        )

    def one(shape: str, spec: Any, graph: Any) -> int:
        executions, _ = SHAPES[shape]
        if shape == "build":
            for _ in range(executions):
                build(shape, spec, graph)
            return executions
        queue: deque[tuple[Any, Any]] = deque()
        now = 1000.0
        ended = 0
        for _ in range(executions):
            c = build(shape, spec, graph)
            queue.extend((c, d) for d in c.start(now) if type(d) is Dispatch)
            c.take_changes()
            c.header_step()
        while queue:
            c, d = queue.popleft()
            now += 0.001
            out = c.on_attempt_ended(d.run_id, d.item, d.attempt, "succeeded", d.input, None, now)
            c.take_changes()
            c.header_step()
            ended += 1
            queue.extend((c, x) for x in out if type(x) is Dispatch)
            if c.status != "running" and c.status != "succeeded":
                raise SystemExit(f"{shape}: the execution is {c.status}: {c.error}")
        return ended

    result: dict[str, Any] = {"source": str(Path(attune_actors.__file__).parent)}
    for shape in shapes:
        problems: list[Any] = []
        spec = load_workflow_text(texts[shape], pack="peers", file=f"{shape}.yaml",
                                  default_ref=f"peers.{shape}", problems=problems)
        if spec is None or problems:
            raise SystemExit(f"{shape}: {problems}")
        graph = TaskGraph.build(spec)
        one(shape, spec, graph)  # warm-up
        per: list[float] = []
        for _ in range(rounds):
            gc.collect()
            began = time.process_time()
            n = one(shape, spec, graph)
            per.append((time.process_time() - began) / n)
        result[shape] = common.median(per)
    common.emit(result)


# -- parent ----------------------------------------------------------------------------------------


def run_side(tree: Path | None, shapes: list[str], rounds: int) -> dict[str, float]:
    saved = dict(os.environ)
    if tree is not None:  # the baseline first on the path, before the editable install of this tree
        os.environ["PYTHONPATH"] = str(tree)
        os.environ["ATTUNE_AB_BASELINE"] = "1"
    try:
        got = common.run_child(
            [sys.executable, __file__, "--child", ",".join(shapes), "--rounds", str(rounds)], timeout=600
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if "error" in got:
        raise SystemExit(f"{'baseline' if tree else 'this tree'}: {got['error']}")
    expected = str(tree / "attune_actors") if tree is not None else str(ROOT / "attune_actors")
    if got.pop("source") != expected:
        raise SystemExit(f"the child did not import {expected}")
    return {k: float(v) for k, v in got.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="the commit to compare with (default: main)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated of {', '.join(SHAPES)}")
    parser.add_argument("--alternations", type=int, default=3, help="baseline/tree pairs")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds in each child")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    if args.child:
        child(args.child.split(","), args.rounds)
        return
    from ab import baseline_tree

    tree = baseline_tree(args.baseline)
    base: dict[str, list[float]] = {s: [] for s in shapes}
    mine: dict[str, list[float]] = {s: [] for s in shapes}
    try:
        for _ in range(args.alternations):
            for side, into in ((tree, base), (None, mine)):
                for shape, value in run_side(side, shapes, args.rounds).items():
                    into[shape].append(value)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    rows = []
    for shape in shapes:
        b, m = common.median(base[shape]) * 1e6, common.median(mine[shape]) * 1e6
        unit = "µs/conductor" if shape == "build" else "µs/transition"
        rows.append([shape, f"{b:.2f} {unit}", f"{m:.2f} {unit}", f"{b / m:.2f}x"])
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    print(f"The conductor alone: CPU µs, median of {args.alternations} alternated children x {args.rounds} "
          f"rounds; baseline {args.baseline}, this tree at {head}; "
          f"load average {common.load_average() or 0:.1f}\n")
    print(common.table(["shape", "baseline", "this tree", "speed-up"], rows, markdown=args.markdown,
                       right=[False, True, True, True]))


if __name__ == "__main__":
    if os.environ.get("ATTUNE_AB_BASELINE"):
        # An editable install puts its finder ahead of PYTHONPATH: drop it, so the baseline imports.
        sys.meta_path[:] = [f for f in sys.meta_path if "_EditableFinder" not in str(f)]
    main()
