"""Micro-benchmark of the template renderer: cached renders vs compile + render.

Run: .venv/bin/python bench/templates.py [--number N] [--repeat R]

Prints µs per operation (best of R runs of N operations each) and the ratio of an uncached
render (parse + compile + render, `Renderer(cache_size=0)`) to a cached one.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from attune_actors.templates import Renderer, build_context, run_functions

NATIVE = "{{ parameters.x }}"
STRING = "deploy {{ parameters.app_name }} v{{ parameters.version }} to {{ vars.region | upper }}"
WHEN = "{{ succeeded() and vars.replicas > 2 }}"
TERNARY = "{{ vars.ok ? 'deployed' : 'failed' }}"
INPUT = {
    "app": "{{ parameters.app_name }}",
    "tag": "{{ parameters.version }}",
    "url": "https://{{ vars.region }}.example.com/{{ parameters.app_name }}",
    "replicas": 3,
    "note": "plain text, not a template",
}


def context() -> dict[str, Any]:
    ctx = build_context(
        parameters={"x": "12345", "app_name": "shop", "version": "1.2.3"},
        vars={"region": "eu-west-1", "replicas": 3, "ok": True},
        task={"build": {"status": "succeeded", "result": {"image": "shop:1.2.3"}}},
        system={"execution_id": "e-1"},
    )
    ctx.update(run_functions("succeeded", {"image": "shop:1.2.3"}))
    return ctx


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best µs per call over `repeat` runs of `number` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / number / 1000)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="operations per run (cached)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best one is reported")
    args = parser.parse_args(argv)
    n, r = args.number, args.repeat
    n_uncached = max(n // 50, 20)

    ctx = context()
    cached = Renderer()
    uncached = Renderer(cache_size=0)
    for source in (NATIVE, STRING, WHEN, TERNARY):
        cached.render(source, ctx)  # warm the cache

    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    jinja_template = env.from_string(STRING)

    rows: list[tuple[str, float]] = [
        ("plain string (fast path)", best_us(lambda: cached.render("no braces here", ctx), n, r)),
        ("cached native  {{ parameters.x }}", best_us(lambda: cached.render(NATIVE, ctx), n, r)),
        ("cached string template", best_us(lambda: cached.render(STRING, ctx), n, r)),
        ("cached ternary", best_us(lambda: cached.render(TERNARY, ctx), n, r)),
        ("cached when (truthy)", best_us(lambda: cached.truthy(WHEN, ctx), n, r)),
        ("cached input dict (3 templates)", best_us(lambda: cached.render(INPUT, ctx), n, r)),
        ("jinja2 Template.render (reference)", best_us(lambda: jinja_template.render(ctx), n, r)),
        ("uncached native", best_us(lambda: uncached.render(NATIVE, ctx), n_uncached, r)),
        ("uncached string template", best_us(lambda: uncached.render(STRING, ctx), n_uncached, r)),
    ]
    figures = dict(rows)
    print(
        f"python {platform.python_version()}, jinja2 {jinja2.__version__}, {platform.machine()}"
        f" | best of {r} runs x {n} ops (uncached: {n_uncached} ops)"
    )
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"  {name:<{width}}  {us:9.2f} µs/op")
    ratio_native = figures["uncached native"] / figures["cached native  {{ parameters.x }}"]
    ratio_string = figures["uncached string template"] / figures["cached string template"]
    print(f"  uncached / cached: native {ratio_native:.0f}x, string {ratio_string:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
