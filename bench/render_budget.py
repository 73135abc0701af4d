"""What the render budget (SPEC 12: loop steps, output bytes) costs per render, A/B in one process.

Run: .venv/bin/python bench/render_budget.py [--number N] [--rounds R]

The baseline is the same renderer compiled without the budget's hooks (no loop-budget filter
around `{% for %}` iterables, no check of printed built values); the output-length and
built-value checks of native results stay in both, being a few comparisons. Rounds alternate
budgeted and baseline runs, so machine noise hits both alike; the figure is the median ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jinja2 import nodes

from attune_actors.templates import Renderer, renderer
from bench.templates import INPUT, NATIVE, STRING, TERNARY, WHEN, context

LOOP = "{% for r in vars.regions %}{{ r }},{% endfor %}"
BUILT = "{{ vars.regions | map('upper') | list }}"


def _loops_only(ast: nodes.Template, *, printed: bool) -> bool:
    return any(True for _ in ast.find_all(nodes.For))


def unbudgeted() -> Renderer:
    """A renderer whose templates compile without the budget hooks (see the module doc)."""
    plain = Renderer()
    add_budget = renderer._add_budget
    renderer._add_budget = _loops_only  # type: ignore[assignment]
    sources = [NATIVE, STRING, WHEN, TERNARY, LOOP, BUILT, *(v for v in INPUT.values() if isinstance(v, str))]
    try:
        for source in sources:
            plain.check(source)  # compiled (and cached) now, without the hooks
    finally:
        renderer._add_budget = add_budget
    return plain


def per_op_us(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(number):
        fn()
    return (time.perf_counter_ns() - start) / number / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5000, help="renders per run")
    parser.add_argument("--rounds", type=int, default=15, help="alternating A/B rounds")
    args = parser.parse_args(argv)
    ctx: dict[str, Any] = context()
    ctx["vars"] = {**ctx["vars"], "regions": [f"region-{i}" for i in range(20)]}
    budgeted, baseline = Renderer(), unbudgeted()
    cases: list[tuple[str, Callable[[Renderer], object]]] = [
        ("native  {{ parameters.x }}", lambda r: r.render(NATIVE, ctx)),
        ("string template", lambda r: r.render(STRING, ctx)),
        ("ternary", lambda r: r.render(TERNARY, ctx)),
        ("when (truthy)", lambda r: r.truthy(WHEN, ctx)),
        ("input dict (3 templates)", lambda r: r.render(INPUT, ctx)),
        ("loop over 20 items", lambda r: r.render(LOOP, ctx)),
        ("built list (map)", lambda r: r.render(BUILT, ctx)),
    ]
    for _, case in cases:
        assert case(budgeted) == case(baseline)
    print(f"median of {args.rounds} alternating rounds x {args.number} renders")
    print(f"  {'template':<28} {'budget µs':>10} {'none µs':>10} {'cost':>8}")
    for name, case in cases:
        ratios, with_budget, without = [], [], []
        for _ in range(args.rounds):
            a = per_op_us(lambda: case(budgeted), args.number)  # noqa: B023 - called at once
            b = per_op_us(lambda: case(baseline), args.number)  # noqa: B023
            with_budget.append(a)
            without.append(b)
            ratios.append(a / b)
        cost = (statistics.median(ratios) - 1) * 100
        print(
            f"  {name:<28} {statistics.median(with_budget):10.2f} {statistics.median(without):10.2f}"
            f" {cost:+7.1f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
