"""Whole-definition checks: the rules of SPEC sections 2-3 that need the graph or the other packs.

`workflow.py` already checked each document on its own; here a workflow is checked against the task
graph (start tasks, joins), the catalog (action refs, literal inputs against parameter schemas,
nested-workflow cycles) and the template language (syntax, `task.<name>` references).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from attune_actors.engine.graph import TaskGraph
from attune_actors.errors import AttuneError, Location
from attune_actors.spec.model import ActionSpec, TaskSpec, WorkflowSpec
from attune_actors.spec.packs import Catalog
from attune_actors.spec.params import check_value
from attune_actors.spec.suggest import closest
from attune_actors.templates import Renderer


def validate_catalog(catalog: Catalog, renderer: Renderer) -> list[AttuneError]:
    """Every problem in every workflow of the catalog."""
    problems: list[AttuneError] = []
    for action in catalog.workflows():
        assert action.workflow is not None
        problems.extend(validate_workflow(action.workflow, catalog, renderer))
    return problems


def validate_workflow(spec: WorkflowSpec, catalog: Catalog, renderer: Renderer) -> list[AttuneError]:
    """Every problem of one workflow that needs the graph, the catalog or the template language."""
    problems: list[AttuneError] = []
    top = Location(spec.file, 1, 1)
    graph = TaskGraph.build(spec)
    if spec.tasks and not graph.start:
        problems.append(AttuneError("no start task: every task is the target of a transition", location=top))
    for name, needed in graph.barrier.items():
        task = graph.tasks[name]
        inbound = len(graph.inbound[name])
        where = task.location or top
        if inbound == 0:
            problems.append(
                AttuneError(f"task '{name}': 'join' on a task that no transition targets", location=where)
            )
        elif needed > inbound:
            problems.append(
                AttuneError(
                    f"task '{name}': join {needed} can never be satisfied: only {inbound} task(s) "
                    f"transition to it ({', '.join(sorted(graph.inbound[name]))})",
                    location=where,
                )
            )

    names = {t.name for t in _all_tasks(spec)}
    for task in _all_tasks(spec):
        where = task.location or top
        if task.action is not None:
            action = catalog.actions.get(task.action)
            if action is None:
                guess = closest(task.action, catalog.actions)
                hint = f" (did you mean '{guess}'?)" if guess else ""
                problems.append(
                    AttuneError(f"task '{task.name}': unknown action '{task.action}'{hint}", location=where)
                )
            else:
                problems.extend(_check_inputs(task, action, where))
        for label, source in _templates_of(task):
            problems.extend(
                _check_template(
                    renderer,
                    source,
                    names,
                    f"task '{task.name}' {label}",
                    where,
                    condition=label.endswith("when"),
                )
            )
    for label, source in _walk(spec.vars, "vars"):
        problems.extend(_check_template(renderer, source, names, label, top))
    for label, source in _walk(spec.output_map, "output_map"):
        problems.extend(_check_template(renderer, source, names, label, top))
    problems.extend(_check_nesting(spec, catalog))
    return problems


def _all_tasks(spec: WorkflowSpec) -> Iterator[TaskSpec]:
    for task in spec.tasks:
        yield task
        yield from task.tasks


def _templates_of(task: TaskSpec) -> Iterator[tuple[str, str]]:
    yield from _walk(task.input, "input")
    yield from _walk(task.with_items, "with_items")
    for name, value in task.publish:
        yield from _walk(value, f"publish.{name}")
    if task.retry is not None and task.retry.when is not None:
        yield "retry.when", task.retry.when
    for i, tr in enumerate(task.next):
        if tr.when is not None:
            yield f"next[{i}].when", tr.when
        for name, value in tr.publish:
            yield from _walk(value, f"next[{i}].publish.{name}")


def _walk(value: Any, label: str) -> Iterator[tuple[str, str]]:
    """Every string that is a template inside a value, with its path."""
    if isinstance(value, str):
        if Renderer.is_template(value):
            yield label, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{label}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{label}[{i}]")


def _check_template(
    renderer: Renderer,
    source: str,
    names: set[str],
    label: str,
    where: Location,
    *,
    condition: bool = False,
) -> list[AttuneError]:
    err = renderer.check(source, condition=condition)
    if err is not None:
        return [AttuneError(f"{label}: {err.message}", location=where)]
    problems = []
    for ref in sorted(renderer.task_references(source, condition=condition) - names):
        guess = closest(ref, names)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        problems.append(
            AttuneError(f"{label}: reference to undefined task 'task.{ref}'{hint}", location=where)
        )
    return problems


def _check_inputs(task: TaskSpec, action: ActionSpec, where: Location) -> list[AttuneError]:
    """Literal inputs against the action's parameter schema; templates are checked at run time."""
    problems: list[AttuneError] = []
    declared = {p.name: p for p in action.parameters}
    what = f"task '{task.name}' (action {action.ref})"
    for key, value in task.input.items():
        spec = declared.get(key)
        if spec is None:
            if not action.additional_parameters:
                guess = closest(key, declared)
                hint = f" (did you mean '{guess}'?)" if guess else ""
                problems.append(AttuneError(f"{what}: unknown input '{key}'{hint}", location=where))
            continue
        if _has_template(value) or (value is None and not spec.required):
            continue
        err = check_value(spec, value)
        if err:
            problems.append(AttuneError(f"{what}: input '{key}' {err}", location=where))
    for spec in action.parameters:
        if spec.required and not spec.has_default and spec.name not in task.input:
            problems.append(AttuneError(f"{what}: missing required input '{spec.name}'", location=where))
    return problems


def _has_template(value: Any) -> bool:
    return any(True for _ in _walk(value, ""))


def _check_nesting(spec: WorkflowSpec, catalog: Catalog) -> list[AttuneError]:
    """A workflow that (through nested workflows) calls itself would never end."""
    path: list[str] = []

    def visit(ref: str) -> list[str] | None:
        if ref in path:
            return [*path[path.index(ref) :], ref]
        action = catalog.actions.get(ref)
        if action is None or action.workflow is None:
            return None
        path.append(ref)
        for task in _all_tasks(action.workflow):
            if task.action is not None and (cycle := visit(task.action)) is not None:
                return cycle
        path.pop()
        return None

    cycle = visit(spec.ref)
    if cycle is not None and cycle[0] == spec.ref:
        return [
            AttuneError(f"workflow calls itself: {' -> '.join(cycle)}", location=Location(spec.file, 1, 1))
        ]
    return []
