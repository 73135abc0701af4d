"""Benchmarks against peers (issue #8): the same workflow shapes on attune_actors and its peers.

    .venv-bench/bin/python -m bench.peers              # full run (~10 min): tables, JSON, PNG plots
    .venv-bench/bin/python -m bench.peers --quick      # smoke run (< 1 min): 4 shapes, 1 round, 3 s cap
    .venv-bench/bin/python -m bench.peers --markdown   # tables as Markdown (docs/perf/peers.md)
    .venv-bench/bin/python -m bench.peers --no-nats    # leave out attune_actors on NATS
    .venv-bench/bin/python -m bench.peers --from-json FILE   # tables and plots again from a saved run
    .venv-bench/bin/python -m bench.peers --profile DIR      # + one pyinstrument profile per attune run

Systems, each in its own worker process (bench/peers/worker.py) started once and warmed up (the
peers' on this interpreter, attune_actors' on `--attune-python`, .venv's by default):
attune_actors embedded with the in-memory store and with the durable SQLite store, and on NATS
(when `attune_actors.nats.transport` imports and a nats-server binary is found; otherwise its row
says "not yet"); Orquesta 1.2.0's `WorkflowConductor` alone, fed immediate successes
(bench/peers/sys_orquesta.py; on Python 3.11 through bench/peers/orquesta_shim.py); Prefect 3, local
flows on its ephemeral API (bench/peers/sys_prefect.py). A system that cannot be installed or
imported gets a row that says why.

Shapes (bench/peers/shapes.py): chains of 100 and 1,000 tasks; a fan-out to 4 branches joined with
`join: all` (20 in a row per round); with_items over 1,000 and 10,000 items; 200 concurrent
workflows of 10 tasks. For the plots, also 1, 10 and 50 concurrent workflows (2,000 transitions per
round in waves) and with_items over 100 items. Rounds alternate: in each round every shape runs on
every system, the order of systems rotating, one system at a time. Figures are medians of the
rounds, on wall time. A run still going after `--cap` seconds is cut: its figure is then a bound
(the time is at least the cap) and it is not repeated; nor is a run longer than `--slow` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import _common as common
from bench.peers.shapes import ALL, CONCURRENCY_POINTS, GOAL_SHAPES, ITEMS_POINTS, SWEEP, Shape

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ATTUNE_PYTHON = ROOT / ".venv" / "bin" / "python"
ATTUNE = ("attune-memory", "attune-sqlite", "attune-nats")
PEERS = ("orquesta", "prefect")
GOAL_RATIO = 20.0
QUICK_SHAPES = ["chain-100", "fanout-4", "items-1000", "concurrent-200"]
FLAT = 1.1  # per-task cost at the big size / at the small size, to count as flat (as bench/engine.py)
LABELS = {
    "attune-memory": "attune_actors, memory store",
    "attune-sqlite": "attune_actors, SQLite store",
    "attune-nats": "attune_actors on NATS",
    "orquesta": "Orquesta (conductor only)",
    "prefect": "Prefect 3 (local)",
}
SHORT = {
    "attune-memory": "attune memory",
    "attune-sqlite": "attune sqlite",
    "attune-nats": "attune NATS",
    "orquesta": "Orquesta",
    "prefect": "Prefect",
}


# -- workers ---------------------------------------------------------------------------------------


class Worker:
    """A system's worker process and its JSON-lines channel."""

    def __init__(
        self, system: str, logdir: Path, env: dict[str, str] | None = None, python: str | None = None
    ) -> None:
        self.system = system
        self.python = python or sys.executable
        self.env = env
        self.log = logdir / f"{system}.log"
        self.info: dict[str, Any] = {}
        self.proc: subprocess.Popen[str] | None = None

    def spawn(self) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "bench.peers.worker", self.system],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # its own process group: a kill takes its children too
                env=self.env,
            )

    def read(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"worker exited with status {self.proc.wait()} (log: {self.log})"}
        message: dict[str, Any] = json.loads(line)
        return message

    def ready(self, timeout: float) -> dict[str, Any]:
        got = self.read(timeout)
        if got is None:
            self.kill()
            got = {"unavailable": f"no answer after {timeout:.0f} s of start-up (log: {self.log})"}
        elif "error" in got:
            got = {"unavailable": got["error"]}
        self.info = got
        return got

    @property
    def alive(self) -> bool:
        return "ready" in self.info and self.proc is not None and self.proc.poll() is None

    def run(self, shape: Shape, cap: float, profile: str | None = None) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        command = {"shape": shape.key, "cap": cap, "profile": profile}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        got = self.read(cap + 180)
        if got is None:  # stuck past its cap: kill it, start it again for the next shapes
            self.kill()
            got = {"error": f"no answer {cap + 180:.0f} s after a {cap:.0f} s cap: killed and restarted"}
            self.spawn()
            self.ready(600)
        return got

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def quit(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


# -- the run ---------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    systems = [s for s in args.systems if s != "attune-nats" or args.nats]
    shapes = [ALL[k] for k in args.shapes]
    logdir = Path(tempfile.mkdtemp(prefix="bench-peers-logs-"))
    began = time.perf_counter()
    load_before = os.getloadavg()
    common.progress(f"starting {len(systems)} workers (logs in {logdir}) ...")
    env = {**os.environ, "BENCH_PEERS_PREFECT_SERVICES": args.prefect_services}
    # attune_actors and Prefect cannot share a venv (their fastapi ranges do not meet): attune's
    # workers run on its own interpreter, the peers' on this one.
    workers = {s: Worker(s, logdir, env, args.attune_python if s in ATTUNE else None) for s in systems}
    for w in workers.values():
        w.spawn()
    status: dict[str, Any] = {}
    for s, w in workers.items():
        got = w.ready(600)
        status[s] = got
        what = ", ".join(f"{k} {v}" for k, v in got.get("versions", {}).items()) or got.get("unavailable")
        common.progress(f"  {s}: {'ready' if w.alive else 'UNAVAILABLE'} ({what})")
    if not args.nats:
        status["attune-nats"] = {"unavailable": "not measured (--no-nats)"}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {k.key: [] for k in shapes} for s in systems}
    stop: set[tuple[str, str]] = set()
    loads: list[float] = []
    try:
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            common.progress(
                f"[{time.perf_counter() - began:4.0f} s] round {r + 1}/{args.rounds}, "
                f"load average {loads[-1]:.2f}"
            )
            for i, shape in enumerate(shapes):
                live = [s for s in systems if workers[s].alive]
                k = (r + i) % len(live) if live else 0
                for s in live[k:] + live[:k]:  # the order rotates: drift hits every system alike
                    if (s, shape.key) in stop:
                        continue
                    got = workers[s].run(shape, args.cap)
                    runs[s][shape.key].append(got)
                    common.progress(f"    {shape.key:15} {s:14} {describe_run(got)}")
                    if "error" in got or not got["complete"] or got["wall"] > args.slow:
                        stop.add((s, shape.key))
        profiles: dict[str, dict[str, str]] = {}
        if args.profile:
            pdir = Path(args.profile)
            pdir.mkdir(parents=True, exist_ok=True)
            for s in systems:
                if not s.startswith("attune-") or not workers[s].alive:
                    continue
                for shape in shapes:
                    path = pdir / f"{s}-{shape.key}.txt"
                    got = workers[s].run(shape, args.cap, profile=str(path))
                    common.progress(f"    profile {shape.key:15} {s:14} {describe_run(got)} -> {path}")
                    profiles.setdefault(s, {})[shape.key] = str(path)
    finally:
        for w in workers.values():
            w.quit()
    return {
        "benchmark": "peers",
        "quick": args.quick,
        "config": {
            "rounds": args.rounds,
            "cap_s": args.cap,
            "slow_s": args.slow,
            "prefect_services": args.prefect_services,
            "systems": systems,
            "shapes": [s.key for s in shapes],
        },
        "meta": {
            "machine": common.machine(),
            "source": common.source_state(),
            "elapsed_s": time.perf_counter() - began,
            "load_average": {
                "before": list(load_before),
                "after": list(os.getloadavg()),
                "per_round_1min": loads,
            },
            "python": sys.version.split()[0],
        },
        "systems": status,
        "runs": runs,
    }


def describe_run(got: dict[str, Any]) -> str:
    if "error" in got:
        return f"ERROR {got['error']}"
    cut = "" if got["complete"] else f"  CUT at {got['done']:,}/{got['transitions']:,}"
    after = ""
    if got.get("settle_cpu"):
        after = f"  then {got['settle_cpu']:.2f} s CPU in {got['settle_s']:.1f} s"
    return (
        f"{got['wall']:8.3f} s  {got['done'] / got['wall']:10,.0f}/s  cpu {got['cpu']:.2f}"
        f" + children {got['children_cpu']:.2f}{cut}{after}"
    )


# -- figures ---------------------------------------------------------------------------------------


def summarise(doc: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per system and shape: median seconds (or a lower bound), transitions/s, rounds, CPU."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for s, by_shape in doc["runs"].items():
        for key, runs in by_shape.items():
            ok = [r for r in runs if "error" not in r]
            errors = [r["error"] for r in runs if "error" in r]
            entry: dict[str, Any] = {"rounds": len(ok), "errors": errors}
            complete = [r for r in ok if r["complete"]]
            if complete:
                secs = common.median([r["wall"] for r in complete])
                entry.update(
                    seconds=secs,
                    bound=None,
                    rate=complete[0]["transitions"] / secs,
                    walls=[r["wall"] for r in complete],
                    cpu=common.median([r["cpu"] + r["children_cpu"] for r in complete]),
                    transitions=complete[0]["transitions"],
                )
            elif ok:  # cut at the cap: at least this long; the rate is over what was done
                r = ok[0]
                entry.update(
                    seconds=r["wall"],
                    bound=">=",
                    rate=r["done"] / r["wall"] if r["done"] else 0.0,
                    walls=[r["wall"]],
                    cpu=r["cpu"] + r["children_cpu"],
                    done=r["done"],
                    transitions=r["transitions"],
                )
            out.setdefault(s, {})[key] = entry
    return out


def ratio(peer: dict[str, Any] | None, ours: dict[str, Any] | None) -> tuple[float, str] | None:
    """peer time / our time for the same shape, and "" (exact), ">=" or "<=" (a bound), or None."""
    if not peer or not ours or "seconds" not in peer or "seconds" not in ours:
        return None
    if peer["bound"] and ours["bound"]:
        return None
    kind = ">=" if peer["bound"] else "<=" if ours["bound"] else ""
    return peer["seconds"] / ours["seconds"], kind


def fmt_time(s: float) -> str:
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 0.01:
        return f"{s * 1e3:.0f} ms"
    return f"{s * 1e3:.1f} ms"


def fmt_rate(v: float) -> str:
    if v >= 10_000:
        return f"{v / 1000:.0f}k/s"
    if v >= 1000:
        return f"{v / 1000:.1f}k/s"
    if v >= 10:
        return f"{v:.0f}/s"
    return f"{v:.1f}/s"


def cell(e: dict[str, Any] | None, status: dict[str, Any]) -> str:
    if "unavailable" in status:
        return "n/a"
    if not e or "seconds" not in e:
        return "error" if e and e.get("errors") else "-"
    if e["bound"]:
        cut = f"cut at {e['done']:,}/{e['transitions']:,}"
        return f"> {fmt_time(e['seconds'])} ({cut}; {fmt_rate(e['rate'])})"
    return f"{fmt_time(e['seconds'])} ({fmt_rate(e['rate'])})"


def fmt_ratio(r: tuple[float, str] | None) -> str:
    if r is None:
        return "-"
    value, kind = r
    text = f"{value:,.0f}x" if value >= 10 else f"{value:.1f}x"
    return {"": text, ">=": f">= {text}", "<=": f"<= {text}"}[kind]


def verdict(r: tuple[float, str] | None) -> str:
    if r is None:
        return "unknown"
    value, kind = r
    if value >= GOAL_RATIO and kind in ("", ">="):
        return "met"
    if value < GOAL_RATIO and kind in ("", "<="):
        short = GOAL_RATIO / value
        return f"MISSED by {short:.2f}x" if short < 1.1 else f"MISSED by {short:.1f}x"
    return "unknown"


def report(doc: dict[str, Any], markdown: bool) -> str:
    summary = summarise(doc)
    status = doc["systems"]
    systems = [s for s in (*ATTUNE, *PEERS) if s in status]
    measured = [s for s in systems if s in summary]
    ours = [s for s in ATTUNE if s in summary and "unavailable" not in status[s]]
    peers = [s for s in PEERS if s in summary and "unavailable" not in status[s]]
    shapes = [ALL[k] for k in doc["config"]["shapes"]]
    m, load = doc["meta"]["machine"], doc["meta"]["load_average"]
    lines = [
        f"Peers benchmark{' (--quick)' if doc['quick'] else ''}: Python {doc['meta']['python']}, {m['cpu']} "
        f"x{m['cpus']}; load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after "
        f"(per round: {', '.join(f'{x:.2f}' for x in load['per_round_1min'])}); "
        f"total {doc['meta']['elapsed_s']:.0f} s",
        f"medians of up to {doc['config']['rounds']} alternating rounds, wall time; runs cut at "
        f"{doc['config']['cap_s']:g} s, not repeated past {doc['config']['slow_s']:g} s",
        "",
    ]
    rows = []
    for s in systems:
        st = status[s]
        versions = ", ".join(f"{k} {v}" for k, v in st.get("versions", {}).items())
        rows.append([LABELS[s], versions if "ready" in st else f"unavailable: {st.get('unavailable')}"])
    lines += [common.table(["system", "versions / status"], rows, markdown=markdown), ""]

    headers = ["shape", "transitions", *(SHORT[s] for s in measured)]
    rows = []
    for shape in shapes:
        rows.append(
            [
                shape.label,
                f"{shape.transitions:,}",
                *(cell(summary[s].get(shape.key), status[s]) for s in measured),
            ]
        )
    lines += [
        "Median time per round (transitions/s):",
        "",
        common.table(headers, rows, markdown=markdown, right=[False, *[True] * (len(headers) - 1)]),
        "",
    ]

    headers = ["shape", "attune_actors", *(f"vs {SHORT[p]}" for p in peers), "goal >= 20x"]
    rows = []
    for shape in (s for s in shapes if s.goal and peers):
        for o in ours:
            pairs = [ratio(summary[p].get(shape.key), summary[o].get(shape.key)) for p in peers]
            verdicts = [verdict(r) for r in pairs]
            if all(v == "met" for v in verdicts):
                judged = "met"
            else:
                judged = "; ".join(
                    f"{v} vs {SHORT[p]}" for p, v in zip(peers, verdicts, strict=True) if v != "met"
                )
            rows.append(
                [shape.label, SHORT[o].removeprefix("attune "), *(fmt_ratio(r) for r in pairs), judged]
            )
    lines += [
        "Speed-up per task transition (peer time / attune_actors time, same shape):",
        "",
        common.table(
            headers, rows, markdown=markdown, right=[False, False, *[True] * (len(headers) - 3), False]
        ),
        "",
    ]

    headers = [
        "system",
        "µs/task, chain 100",
        "chain 1,000",
        "ratio",
        "µs/item, 1,000 items",
        "10,000 items",
        "ratio",
    ]
    rows = []
    for s in measured:
        row = [SHORT[s]]
        for small, big in (("chain-100", "chain-1000"), ("items-1000", "items-10000")):
            a, b = summary[s].get(small), summary[s].get(big)
            per = [None if not e or not e.get("rate") else 1e6 / e["rate"] for e in (a, b)]
            row += [
                ("-" if p is None else f"{p:,.0f}") + (" (cut)" if e and e.get("bound") else "")
                for p, e in zip(per, (a, b), strict=True)
            ]
            if per[0] and per[1]:
                flat = per[1] / per[0]
                mark = "" if s not in ATTUNE else ("  flat" if flat <= FLAT else "  NOT flat")
                row.append(f"{flat:.2f}x{mark}")
            else:
                row.append("-")
        rows.append(row)
    lines += [
        f"Cost per task as chains and item lists grow (flat: ratio <= {FLAT}; a cut run's cost is over "
        "the tasks it did):",
        "",
        common.table(headers, rows, markdown=markdown, right=[False, *[True] * 6]),
    ]
    for s in systems:
        for key, e in summary.get(s, {}).items():
            for err in e.get("errors", []):
                lines.append(f"error: {s} {key}: {err}")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(__doc__ or "").split("\n\n", 2)[2],
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{', '.join(QUICK_SHAPES)}; 1 round, 3 s cap (< 1 min)"
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1)")
    parser.add_argument("--cap", type=float, help="cut a run after this many seconds (default 40; quick 3)")
    parser.add_argument("--slow", type=float, help="do not repeat a run longer than this (default 8 s)")
    parser.add_argument("--systems", help=f"comma-separated, default all of: {', '.join((*ATTUNE, *PEERS))}")
    parser.add_argument("--shapes", help=f"comma-separated, default all of: {', '.join(ALL)}")
    parser.add_argument(
        "--no-nats", dest="nats", action="store_false", help="leave out attune_actors on NATS (2 workers)"
    )
    parser.add_argument(
        "--prefect-services",
        choices=("lean", "default"),
        default="lean",
        help="Prefect server's event persister and task-run recorder off (lean, default) "
        "or on (Prefect's default)",
    )
    parser.add_argument(
        "--attune-python",
        default=str(DEFAULT_ATTUNE_PYTHON) if DEFAULT_ATTUNE_PYTHON.exists() else sys.executable,
        help="the interpreter of attune_actors' workers (default: .venv/bin/python when it exists)",
    )
    parser.add_argument("--markdown", action="store_true", help="tables as Markdown")
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="save the raw figures (default: bench/peers/results/full.json; --quick: the temp dir)",
    )
    parser.add_argument(
        "--plots",
        metavar="DIR",
        help="write the PNG plots here (default: docs/perf/img for a full run, none for --quick)",
    )
    parser.add_argument("--from-json", metavar="FILE", help="no run: tables and plots from a saved run")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="after the rounds, one pyinstrument profile of every attune_actors run, as text files in DIR",
    )
    args = parser.parse_args()

    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
    else:
        q = args.quick
        args.rounds = args.rounds or (1 if q else 3)
        args.cap = args.cap or (3.0 if q else 40.0)
        args.slow = args.slow or (2.0 if q else 8.0)
        args.systems = args.systems.split(",") if args.systems else [*ATTUNE, *PEERS]
        default_shapes = QUICK_SHAPES if q else [s.key for s in (*GOAL_SHAPES, *SWEEP)]
        args.shapes = args.shapes.split(",") if args.shapes else default_shapes
        for s in args.systems:
            if s not in (*ATTUNE, *PEERS):
                parser.error(f"unknown system {s!r}")
        for k in args.shapes:
            if k not in ALL:
                parser.error(f"unknown shape {k!r}; choose from {', '.join(ALL)}")
        doc = measure(args)
        if args.json:
            path = Path(args.json)
        elif q:  # a smoke run leaves the recorded figures alone
            path = Path(tempfile.gettempdir()) / "bench-peers-quick.json"
        else:
            path = ROOT / "bench" / "peers" / "results" / "full.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        common.progress(f"raw figures: {path}")
    print(report(doc, args.markdown))
    plots = args.plots or (None if doc["quick"] else str(ROOT / "docs" / "perf" / "img"))
    if plots:
        from bench.peers.plots import draw

        for path in draw(doc, summarise(doc), Path(plots), LABELS, CONCURRENCY_POINTS, ITEMS_POINTS):
            common.progress(f"plot: {path}")


if __name__ == "__main__":
    main()
