"""The task graph of one workflow definition, computed once and shared by all its executions.

Orquesta re-ran graph algorithms on every event, so its cost per task grew with the workflow; here
everything the conductor asks of the graph (inbound sources, join barriers, reachability) is a dict
lookup into tables built when the definition is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from attune_actors.spec.model import ENGINE_COMMANDS, TaskSpec, WorkflowSpec


@dataclass(frozen=True, slots=True)
class TaskGraph:
    """Edges between the top-level tasks of a workflow, and the tables derived from them."""

    tasks: dict[str, TaskSpec]  # top-level tasks by name, in definition order
    inbound: dict[str, frozenset[str]]  # target -> distinct source tasks with a transition to it
    start: tuple[str, ...]  # tasks no transition targets
    barrier: dict[str, int]  # join tasks -> how many inbound sources must be satisfied
    reach: dict[str, frozenset[str]]  # task -> tasks reachable from it (itself excluded unless cyclic)

    @classmethod
    def build(cls, spec: WorkflowSpec) -> TaskGraph:
        tasks = {t.name: t for t in spec.tasks}
        inbound: dict[str, set[str]] = {name: set() for name in tasks}
        out: dict[str, set[str]] = {name: set() for name in tasks}
        for task in spec.tasks:
            for tr in task.next:
                for target in tr.do:
                    if target in tasks and target not in ENGINE_COMMANDS:
                        inbound[target].add(task.name)
                        out[task.name].add(target)
        barrier: dict[str, int] = {}
        for task in spec.tasks:
            if task.join is not None:
                barrier[task.name] = len(inbound[task.name]) if task.join == "all" else int(task.join)
        # Reachability is only needed for joins; a workflow without joins skips the closure.
        reach: dict[str, frozenset[str]] = {}
        if barrier:
            for name in tasks:
                seen: set[str] = set()
                stack = list(out[name])
                while stack:
                    n = stack.pop()
                    if n not in seen:
                        seen.add(n)
                        stack.extend(out[n])
                reach[name] = frozenset(seen)
        return cls(
            tasks=tasks,
            inbound={k: frozenset(v) for k, v in inbound.items()},
            start=tuple(name for name in tasks if not inbound[name]),
            barrier=barrier,
            reach=reach,
        )

    def can_reach(self, source: str, target: str) -> bool:
        """Whether a run of `source` may still lead to `target` (or is `target`)."""
        return source == target or target in self.reach.get(source, frozenset())
