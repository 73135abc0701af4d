"""The workflow shapes every system runs, and how a run is counted.

A *transition* is one task (or one with_items item) ending and the engine deciding what comes next;
every shape counts the tasks/items it runs, so transitions/s compare across systems.
"""

from __future__ import annotations

from dataclasses import dataclass

SWEEP_TRANSITIONS = 2000  # per round of every concurrency-sweep point: 200 workflows x 10 tasks


@dataclass(frozen=True)
class Shape:
    key: str  # "chain-100"
    kind: str  # chain | fanout | items | concurrent
    size: int  # chain length / fan-out width / items / concurrent workflows
    label: str
    goal: bool = True  # one of the goal shapes (the others feed the plots)
    reps: int = 1  # executions run one after another in a measured round (tiny shapes)
    wf_tasks: int = 10  # concurrent: tasks per workflow

    @property
    def transitions(self) -> int:
        """Task/item transitions in one measured round."""
        if self.kind == "chain":
            return self.size
        if self.kind == "fanout":
            return (self.size + 2) * self.reps  # start, the branches, the join
        if self.kind == "items":
            return self.size
        return self.size * self.wf_tasks * self.reps

    @property
    def waves(self) -> int:
        return self.reps


def chain(n: int) -> Shape:
    return Shape(f"chain-{n}", "chain", n, f"chain of {n:,} tasks")


def items(n: int) -> Shape:
    return Shape(f"items-{n}", "items", n, f"with_items over {n:,} items")


def concurrent(c: int, *, goal: bool) -> Shape:
    waves = max(1, SWEEP_TRANSITIONS // (10 * c))
    if c == 1:
        label = f"1 workflow of 10 tasks at a time ({waves} in a row)"
    else:
        label = f"{c} concurrent workflows of 10 tasks" + (f" ({waves} waves)" if waves > 1 else "")
    return Shape(f"concurrent-{c}", "concurrent", c, label, goal=goal, reps=waves)


FANOUT = Shape("fanout-4", "fanout", 4, "fan-out to 4 branches + join: all (x20 in a row)", reps=20)

GOAL_SHAPES = (chain(100), chain(1000), FANOUT, items(1000), items(10_000), concurrent(200, goal=True))
SWEEP = (
    concurrent(1, goal=False),
    concurrent(10, goal=False),
    concurrent(50, goal=False),
    Shape("items-100", "items", 100, "with_items over 100 items", goal=False),
)
ALL = {s.key: s for s in (*GOAL_SHAPES, *SWEEP)}
CONCURRENCY_POINTS = (1, 10, 50, 200)
ITEMS_POINTS = (100, 1000, 10_000)
