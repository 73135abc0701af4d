"""StackStorm's Orquesta: its `WorkflowConductor` driven the way its own unit tests drive it.

No StackStorm around it: no database, no message bus, no action runners. For each task the
conductor hands out (`get_next_tasks()`), the driver feeds a `running` then a `succeeded` action
execution event (`update_task_state`), then asks for the next tasks, until the workflow ends; a
with_items task gets one `running` and one `succeeded` item event per item (the result so far as
`accumulated_result`, as st2 passes it). Results are `None`. This is pure engine overhead, and
favourable to Orquesta: st2 also serialises the conductor to MongoDB after every event and calls
`get_next_tasks()` after every item, both left out here.

Per execution, what st2 does per execution is timed: a `WorkflowConductor` built from a
`WorkflowSpec` (the spec is parsed once, like a definition attune_actors loaded at start-up; the
conductor composes its graph from it), the workflow status set to `running`, tasks driven, the
output rendered. Concurrent workflows are interleaved in this one thread, one step of each in turn:
a library with no I/O has nothing else to overlap.
"""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

from bench.peers import orquesta_shim
from bench.peers.shapes import Shape

orquesta_shim.install()

from orquesta import conducting, events, statuses  # noqa: E402 - after the shim
from orquesta.specs import native as native_specs  # noqa: E402


def chain_def(n: int) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for i in range(n):
        tasks[f"t{i}"] = {"action": "core.noop"}
        if i < n - 1:
            tasks[f"t{i}"]["next"] = [{"do": f"t{i + 1}"}]
    return {"version": 1.0, "tasks": tasks}


def fanout_def(width: int) -> dict[str, Any]:
    branches = [f"b{i}" for i in range(width)]
    tasks: dict[str, Any] = {"start": {"action": "core.noop", "next": [{"do": branches}]}}
    for b in branches:
        tasks[b] = {"action": "core.noop", "next": [{"do": "join"}]}
    tasks["join"] = {"join": "all", "action": "core.noop"}
    return {"version": 1.0, "tasks": tasks}


ITEMS_DEF = {
    "version": 1.0,
    "input": ["xs"],
    "tasks": {"each": {"with": {"items": "<% ctx(xs) %>"}, "action": "core.noop"}},
}


class Run:
    """One workflow execution being driven: its conductor and the tasks it handed out."""

    __slots__ = ("conductor", "cut", "done", "pending")

    def __init__(self, spec: Any, inputs: dict[str, Any] | None = None) -> None:
        self.conductor = conducting.WorkflowConductor(spec, inputs=inputs)
        self.conductor.request_workflow_status(statuses.RUNNING)
        self.pending: list[dict[str, Any]] = self.conductor.get_next_tasks()
        self.done = 0
        self.cut = False

    def step(self, deadline: float) -> bool:
        """Complete every task handed out, ask for the next ones; False once the workflow ended
        (or, in a long with_items task, once `deadline` passed: then `cut` is set)."""
        c = self.conductor
        for task in self.pending:
            tid, route = task["id"], task["route"]
            if "items_count" in task:
                actions = task["actions"]
                acc: list[Any] = [None] * task["items_count"]
                for n, action in enumerate(actions, 1):
                    c.update_task_state(
                        tid, route, events.TaskItemActionExecutionEvent(action["item_id"], statuses.RUNNING)
                    )
                    if n % 64 == 0 and time.perf_counter() > deadline:
                        self.cut = True
                        return False
                for n, action in enumerate(actions, 1):
                    i = action["item_id"]
                    event = events.TaskItemActionExecutionEvent(
                        i, statuses.SUCCEEDED, None, accumulated_result=acc
                    )
                    c.update_task_state(tid, route, event)
                    self.done += 1
                    if n % 64 == 0 and time.perf_counter() > deadline:
                        self.cut = True
                        return False
            else:
                c.update_task_state(tid, route, events.ActionExecutionEvent(statuses.RUNNING))
                c.update_task_state(tid, route, events.ActionExecutionEvent(statuses.SUCCEEDED, result=None))
                self.done += 1
        self.pending = c.get_next_tasks()
        if self.pending:
            return True
        status = c.get_workflow_status()
        if status in statuses.COMPLETED_STATUSES:
            c.render_workflow_output()
            if status != statuses.SUCCEEDED:
                raise RuntimeError(f"orquesta workflow ended {status}: {c.errors}")
            return False
        raise RuntimeError(f"orquesta workflow stuck in {status} with nothing to run")


class Adapter:
    name = "orquesta"
    label = "Orquesta (conductor only)"

    def __init__(self) -> None:
        self.specs: dict[str, Any] = {}

    def versions(self) -> dict[str, str]:
        return {"orquesta": version("orquesta"), "networkx": version("networkx"), "yaql": version("yaql")}

    def spec(self, shape: Shape) -> Any:
        key = {"chain": f"chain-{shape.size}", "fanout": f"fanout-{shape.size}", "items": "items"}.get(
            shape.kind, f"chain-{shape.wf_tasks}"
        )
        if key not in self.specs:
            if shape.kind == "items":
                wf_def = ITEMS_DEF
            elif shape.kind == "fanout":
                wf_def = fanout_def(shape.size)
            else:
                wf_def = chain_def(shape.size if shape.kind == "chain" else shape.wf_tasks)
            spec = native_specs.WorkflowSpec(wf_def)
            errors = spec.inspect()
            if errors:
                raise RuntimeError(f"orquesta rejects the {key} spec: {errors}")
            self.specs[key] = spec
        return self.specs[key]

    def warm_up(self) -> None:
        from bench.peers.shapes import Shape as S

        for shape in (
            S("c", "chain", 10, ""),
            S("f", "fanout", 4, ""),
            S("i", "items", 10, ""),
            S("k", "concurrent", 5, ""),
        ):
            self.prepare(shape)
            self.run(shape, time.perf_counter() + 60)

    def prepare(self, shape: Shape) -> None:
        self.spec(shape)
        self.inputs = {"xs": list(range(shape.size))} if shape.kind == "items" else None

    def run(self, shape: Shape, deadline: float) -> int:
        spec = self.spec(shape)
        if shape.kind == "concurrent":
            done = 0
            for _ in range(shape.reps):
                runs = [Run(spec) for _ in range(shape.size)]
                live = runs
                while live:
                    live = [r for r in live if r.step(deadline)]
                    if live and time.perf_counter() > deadline:
                        return done + sum(r.done for r in runs)
                done += sum(r.done for r in runs)
            return done
        done = 0
        for _ in range(shape.reps):
            run = Run(spec, self.inputs)
            while run.step(deadline):
                if time.perf_counter() > deadline:
                    return done + run.done
            if run.cut:
                return done + run.done
            done += run.done
        return done

    def cleanup(self) -> None:
        pass

    def close(self) -> None:
        pass
