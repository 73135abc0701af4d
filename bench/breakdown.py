"""Where a transition's time goes: a cProfile file from `bench/engine.py --profile-file`, by part.

    .venv/bin/python bench/engine.py --only concurrent --loops asyncio --rounds 1 --profile-file /tmp/p
    .venv/bin/python bench/breakdown.py /tmp/p.asyncio.concurrent --transitions 11000 --cpu-us 80

Each function's own time (`tottime`) goes to the part its module belongs to; the time of built-in
functions (`len`, `dict.get`, `msgpack`, `sqlite3`...) and of generated methods (a dataclass's
`__init__`) goes to the part of the function that called them, edge by edge. cProfile slows Python
code more than C code, so read the shares; with `--cpu-us` (the transition's cost measured without
the profiler) they are scaled to microseconds. The garbage collector runs outside any function:
its share is what bench/engine.py reports.
"""

from __future__ import annotations

import argparse
import pstats
from collections import defaultdict

# First match wins: (part, path fragments of the modules in it).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("templates: render", ("/templates/",)),
    ("conductor: the step", ("/engine/conductor.py", "/engine/state.py", "/engine/commands.py", "/spec/")),
    ("snapshot: records, mask, encode, store", (
        "/engine/runtime.py", "/codec.py", "/store/", "/kv/masking.py", "msgpack",
    )),
    ("supervisor: commands, events, metrics", (
        "/engine/supervisor.py", "/engine/observer.py", "/engine/index.py", "/engine/events.py",
        "/observability/", "/logctx.py",
    )),
    ("actor hops: tell, inbox, wake-up, task actor", (
        "/actors/", "/pykka/", "/engine/task.py", "/engine/messages.py",
        "asyncio/base_events.py", "asyncio/events.py", "asyncio/tasks.py", "asyncio/futures.py",
    )),
    ("transport: in-process attempt", ("/transport/", "/runners/")),
    ("per execution: execute(), documents, ids", (
        "/engine/engine.py", "/engine/execution.py", "uuid.py", "/engine/graphdoc.py",
    )),
]
OTHER = "other"
# Built-ins ("~") and generated code ("<string>": dataclass and namedtuple methods) count for the
# part of their caller, edge by edge.
_BY_CALLER = ("~", "<string>")


def part_of(filename: str) -> str:
    for part, fragments in PARTS:
        if any(fragment in filename for fragment in fragments):
            return part
    return OTHER


def breakdown(path: str) -> dict[str, float]:
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    seconds: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, callers) in stats.items():
        if filename not in _BY_CALLER:
            seconds[part_of(filename)] += tottime
            continue
        for (caller_file, _l, _n), edge in callers.items():
            seconds[part_of(caller_file) if caller_file not in _BY_CALLER else OTHER] += edge[2]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", help="a pstats file (bench/engine.py --profile-file)")
    parser.add_argument("--transitions", type=int, help="task transitions in the profiled run")
    parser.add_argument("--cpu-us", type=float, help="CPU µs per transition measured without the profiler")
    args = parser.parse_args()
    seconds = breakdown(args.profile)
    total = sum(seconds.values())
    print(f"{'part':<48} {'share':>6}" + (f" {'µs/transition':>14}" if args.cpu_us else ""))
    for part, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
        line = f"{part:<48} {value / total:>6.1%}"
        if args.cpu_us:
            line += f" {value / total * args.cpu_us:>14.1f}"
        print(line)
    if args.transitions:
        print(f"profiled: {total * 1e6 / args.transitions:.1f} µs per transition over {args.transitions:,}")


if __name__ == "__main__":
    main()
