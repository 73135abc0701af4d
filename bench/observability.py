"""What metrics and tracing cost the engine (issue #18): bench/engine.py's scenarios, three ways.

    .venv/bin/python bench/observability.py            # the recorded run (~1-2 min)
    .venv/bin/python bench/observability.py --quick    # smoke run
    .venv/bin/python bench/observability.py --json     # one JSON document on stdout

Modes, each a fresh engine (memory store, in-process transport) in this one process, run in
turns (in a rotating order) round after round so drift on the machine hits every mode alike:

- `baseline`: observability switched off as far as it can be from outside: the supervisor's hooks
  (`ExecutionObserver`'s methods) replaced by functions that do nothing, metrics that count nothing
  (`EngineMetrics(counting=False)`), tracing off. What remains is the calls themselves (their cost
  is measured across versions, see docs/performance.md);
- `metrics`: the default engine: metrics counted, tracing off;
- `tracing`: metrics counted and every span recorded by the OpenTelemetry SDK (BatchSpanProcessor,
  an exporter that drops the spans: the cost of making spans, not of shipping them).

Scenarios (bench/engine.py's): a chain of `--chain` noop tasks (µs per task), `--workflows`
10-task noop workflows started at once (transitions/s), one with_items task over `--items` noop
items (µs per item). Figures are CPU time of this process, median of `--rounds`; ratios are
against `baseline`. The process is pinned to one CPU (as bench/engine.py does).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
from engine import chain_yaml, items_yaml, write_pack

MODES = ("baseline", "metrics", "tracing")


class _DropSpans:
    """A span exporter that keeps nothing."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def make_engine(mode: str, packs: Path, data: Path) -> Any:
    from attune_actors import Engine
    from attune_actors.observability.metrics import EngineMetrics
    from attune_actors.store.base import MemoryStore

    provider = None
    if mode == "tracing":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(_DropSpans(), max_queue_size=1_000_000))  # type: ignore[arg-type]
    engine = Engine(packs=[packs], data_dir=data, store=MemoryStore(), tracer_provider=provider)
    if mode == "baseline":
        engine.metrics = EngineMetrics(counting=False)
    return engine


HOOKS = ("attempt_ended", "run_ended", "trace_of", "after_step", "started", "finished")


@contextlib.contextmanager
def hooks_off(mode: str) -> Iterator[None]:
    from attune_actors.engine.observer import ExecutionObserver

    if mode != "baseline":
        yield
        return
    saved = {name: getattr(ExecutionObserver, name) for name in HOOKS}
    try:
        for name in HOOKS:
            setattr(ExecutionObserver, name, _nothing)
        yield
    finally:
        for name, method in saved.items():
            setattr(ExecutionObserver, name, method)


def _nothing(self: Any, *args: Any) -> None:
    return None


async def scenario(name: str, mode: str, packs: Path, data: Path, args: argparse.Namespace) -> float:
    """CPU seconds per unit (task, transition or item) of one scenario in one mode."""
    with hooks_off(mode):
        return await _scenario(name, mode, packs, data, args)


async def _scenario(name: str, mode: str, packs: Path, data: Path, args: argparse.Namespace) -> float:
    engine = make_engine(mode, packs, data)
    await engine.start()
    try:
        gc.collect()
        start = time.process_time()
        if name == "chain":
            final = await engine.wait((await engine.execute(f"bench.chain_{args.chain}")).id, timeout=600)
            units = args.chain
        elif name == "concurrent":
            ids = [(await engine.execute("bench.chain_10")).id for _ in range(args.workflows)]
            for execution_id in ids:
                final = await engine.wait(execution_id, timeout=600)
            units = args.workflows * 10
        else:
            execution = await engine.execute("bench.items", {"n": args.items})
            final = await engine.wait(execution.id, timeout=600)
            units = args.items
        spent = time.process_time() - start
        assert final.status == "succeeded", final.error
    finally:
        await engine.close()
    return spent / units


async def run(args: argparse.Namespace, root: Path) -> dict[str, dict[str, list[float]]]:
    packs = write_pack(root / "packs", {
        f"chain_{args.chain}": chain_yaml(args.chain),
        "chain_10": chain_yaml(10),
        "items": items_yaml(1000, "range"),
    })
    results: dict[str, dict[str, list[float]]] = {s: {m: [] for m in MODES} for s in args.scenarios}
    for round_no in range(args.rounds + 1):  # round 0 warms up
        for name in args.scenarios:
            # Rotated: a mode that runs right after another (tracing leaves much garbage) is not
            # always the same one.
            for mode in MODES[round_no % 3:] + MODES[:round_no % 3]:
                per_unit = await scenario(name, mode, packs, root / "data", args)
                if round_no:
                    results[name][mode].append(per_unit)
        common.progress(f"round {round_no}/{args.rounds}")
    return results


def report(results: dict[str, dict[str, list[float]]]) -> str:
    rows = []
    for name, modes in results.items():
        base = common.median(modes["baseline"])
        unit = {"chain": "task", "concurrent": "transition", "items": "item"}[name]
        cells = [f"{name} (µs/{unit})"]
        for mode in MODES:
            value = common.median(modes[mode])
            ratio = "" if mode == "baseline" else f" ({(value / base - 1) * 100:+.1f} %)"
            cells.append(f"{value * 1e6:.1f}{ratio}")
        rows.append(cells)
    return common.table(["scenario", *MODES], rows, markdown=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chain", type=int, default=1000)
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--scenarios", nargs="+", default=["chain", "concurrent", "items"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.chain, args.workflows, args.items = 2, 300, 100, 2000
    if not args.no_pin:
        common.pin_to_cpu(common.default_cpu())
    with tempfile.TemporaryDirectory() as tmp:
        results = common.run_on_loop("asyncio", lambda: run(args, Path(tmp)))
    if args.json:
        print(json.dumps({"results": results, "machine": common.machine()}, indent=2))
    else:
        print(report(results))


if __name__ == "__main__":
    main()
