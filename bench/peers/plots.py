"""The two PNG plots of docs/perf/peers.md (matplotlib, from the `bench` extra).

- peers-concurrency.png: task transitions/s against the number of concurrent 10-task workflows;
- peers-items.png: time of one with_items task against the number of items.

Both axes are logarithmic. A hollow marker is a run cut at the cap: its transitions/s are over the
part it did, its time is a lower bound (the arrow points to where the real value lies).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

STYLE = {
    "attune-memory": ("#1b7837", "o", "-"),
    "attune-sqlite": ("#5aae61", "s", "-"),
    "attune-nats": ("#a6dba0", "D", "-"),
    "orquesta": ("#c51b7d", "^", "--"),
    "prefect": ("#2166ac", "v", "--"),
}


def draw(
    doc: dict[str, Any],
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
    outdir: Path,
    labels: Mapping[str, str],
    concurrency: Sequence[int],
    items: Sequence[int],
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    m = doc["meta"]["machine"]
    where = f"{m['cpus']} vCPU {m['cpu'].split(' Processor')[0]}, Python {doc['meta']['python']}"
    written = []

    def series(
        system: str, points: list[int], keys: list[str], value: str
    ) -> tuple[list[int], list[float], list[bool]]:
        xs, ys, cut = [], [], []
        for x, key in zip(points, keys, strict=True):
            e = summary.get(system, {}).get(key)
            if e and e.get(value):
                xs.append(x)
                ys.append(e[value])
                cut.append(bool(e.get("bound")))
        return xs, ys, cut

    for name, points, keys, value, ylabel, title in (
        (
            "peers-concurrency.png",
            list(concurrency),
            [f"concurrent-{c}" for c in concurrency],
            "rate",
            "task transitions / s (higher is better)",
            "Throughput vs concurrent workflows (10 noop tasks each)",
        ),
        (
            "peers-items.png",
            list(items),
            [f"items-{n}" for n in items],
            "seconds",
            "seconds for the whole with_items task (lower is better)",
            "with_items: time vs number of items",
        ),
    ):
        fig, ax = plt.subplots(figsize=(10, 5.4), dpi=110)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ends: list[tuple[float, str, str]] = []  # (y, text, color) of each series' last point
        for system, (color, marker, line) in STYLE.items():
            if "unavailable" in doc["systems"].get(system, {"unavailable": True}):
                continue
            xs, ys, cut = series(system, points, keys, value)
            if not xs:
                continue
            ax.plot(xs, ys, line, color=color, linewidth=1.8, label=labels[system])
            for x, y, c in zip(xs, ys, cut, strict=True):
                ax.plot(
                    [x],
                    [y],
                    marker,
                    color=color,
                    markersize=8,
                    markerfacecolor="white" if c else color,
                    markeredgewidth=1.6,
                )
                if c and value == "seconds":
                    ax.annotate(
                        "",
                        xy=(x * 1.25, y * 2.2),
                        xytext=(x * 1.25, y),
                        arrowprops={"arrowstyle": "->", "color": color, "lw": 1.4},
                    )
            y, c = ys[-1], cut[-1]
            if value == "rate":
                text = f"{y:,.0f}/s"
            else:
                text = ("> " if c else "") + (f"{y:.3g} s" if y >= 0.01 else f"{y * 1e3:.2g} ms")
            if xs[-1] == points[-1]:
                ends.append((y, text, color))
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 1.8)  # room for the top label
        # label the last points at the right edge, nudged apart so they do not overlap (log scale)
        low, high = (math.log10(v) for v in ax.get_ylim())
        gap = 0.045 * (high - low)  # about one line of text
        placed: list[float] = []
        for y, text, color in sorted(ends):
            ly = math.log10(y)
            if placed and ly - placed[-1] < gap:
                ly = placed[-1] + gap
            placed.append(ly)
            ax.annotate(
                text,
                (points[-1], y),
                xytext=(points[-1] * 1.45, 10**ly),
                textcoords="data",
                fontsize=8,
                color=color,
                va="center",
                arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6, "alpha": 0.6},
            )
        ax.set_xlim(points[0] / 1.5, points[-1] * 3.2)
        ax.set_xticks(points)
        ax.set_xticklabels([f"{p:,}" for p in points])
        ax.set_xlabel("concurrent workflows" if value == "rate" else "items")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
        ax.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        cap = doc["config"]["cap_s"]
        note = f"{where}; medians of alternating rounds; hollow marker: run cut at {cap:g} s"
        fig.text(0.01, 0.005, note, fontsize=7, color="#555555")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = outdir / name
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
