"""Whole-definition checks: the rules of SPEC sections 2-3 that need the graph or the other packs.

`workflow.py` already checked each document on its own; here a workflow is checked against the task
graph (start tasks, joins), the catalog (action refs, literal inputs against parameter schemas,
nested-workflow cycles) and the template language (syntax, `task.<name>` references).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from attune_actors.errors import AttuneError, Location
from attune_actors.spec.graph import TaskGraph
from attune_actors.spec.model import ActionSpec, TaskSpec, WorkflowSpec
from attune_actors.spec.packs import (
    Catalog,
    load_packs,
    load_workflow_text,
    read_yaml_text,
    workflow_action,
)
from attune_actors.spec.params import check_value
from attune_actors.spec.rules import validate_rules
from attune_actors.spec.suggest import closest
from attune_actors.spec.yamlsrc import load_yaml
from attune_actors.templates import Renderer


def validate_catalog(catalog: Catalog, renderer: Renderer) -> list[AttuneError]:
    """Every problem in every workflow and rule of the catalog."""
    problems: list[AttuneError] = []
    for action in catalog.workflows():
        assert action.workflow is not None
        problems.extend(validate_workflow(action.workflow, catalog, renderer))
    problems.extend(validate_rules(catalog, renderer))
    return problems


def validate_workflow(spec: WorkflowSpec, catalog: Catalog, renderer: Renderer) -> list[AttuneError]:
    """Every problem of one workflow that needs the graph, the catalog or the template language."""
    problems: list[AttuneError] = []
    top = Location(spec.file, 1, 1)
    problems.extend(_check_graph(spec, top))

    names = {t.name for t in _all_tasks(spec)}
    variables = set(spec.vars) | {
        name
        for task in _all_tasks(spec)
        for name, _ in (*task.publish, *(p for tr in task.next for p in tr.publish))
    }
    for task in _all_tasks(spec):
        where = task.location or top
        if task.action is not None:
            action = catalog.actions.get(task.action)
            if action is None:
                guess = closest(task.action, catalog.actions)
                hint = f" (did you mean '{guess}'?)" if guess else ""
                problems.append(
                    AttuneError(
                        f"task '{task.name}': unknown action '{task.action}'{hint}",
                        location=_at(task.locations, "action", where),
                    )
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
                    _at(task.locations, label, where),
                    condition=label.endswith("when"),
                    variables=variables,
                )
            )
    for label, source in (*_walk(spec.vars, "vars"), *_walk(spec.output_map, "output_map")):
        problems.extend(_check_template(renderer, source, names, label, _at(spec.locations, label, top),
                                        variables=variables))
    problems.extend(_check_nesting(spec, catalog))
    return problems


def _check_graph(spec: WorkflowSpec, top: Location) -> list[AttuneError]:
    """Start tasks, tasks no start task leads to, and joins the graph can never satisfy."""
    problems: list[AttuneError] = []
    graph = TaskGraph.build(spec)
    if not spec.tasks:
        return problems
    if not graph.start:
        problems.append(
            AttuneError(
                "no start task: every task is the target of a transition",
                location=_at(spec.locations, "tasks", top),
            )
        )
        return problems
    out: dict[str, set[str]] = {name: set() for name in graph.tasks}
    for source, targets in _edges(graph):
        out[source].update(targets)

    def reachable(without: str | None) -> set[str]:
        seen: set[str] = set()
        stack = [name for name in graph.start if name != without]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            stack.extend(t for t in out[name] if t != without)
        return seen

    everywhere = reachable(None)
    for name, task in graph.tasks.items():
        if name not in everywhere:
            problems.append(
                AttuneError(
                    f"task '{name}' can never run: no start task leads to it",
                    location=_at(task.locations, "name", task.location or top),
                )
            )
    for name, needed in graph.barrier.items():
        task = graph.tasks[name]
        sources = graph.inbound[name]
        where = _at(task.locations, "join", task.location or top)
        if not sources:
            problems.append(
                AttuneError(f"task '{name}': 'join' on a task that no transition targets", location=where)
            )
        elif needed > len(sources):
            problems.append(
                AttuneError(
                    f"task '{name}': join {needed} can never be satisfied: only {len(sources)} task(s) "
                    f"transition to it ({', '.join(sorted(sources))})",
                    location=where,
                )
            )
        elif name in everywhere:
            before = reachable(name)
            stuck = sorted(s for s in sources if s not in before)
            if needed > len(sources) - len(stuck):
                problems.append(
                    AttuneError(
                        f"task '{name}': join {'all' if task.join == 'all' else needed} can never be "
                        f"satisfied: {', '.join(repr(s) for s in stuck)} cannot run before it",
                        location=where,
                    )
                )
    return problems


def _edges(graph: TaskGraph) -> Iterator[tuple[str, frozenset[str]]]:
    """(source, targets) for every top-level task (inverting `graph.inbound`)."""
    targets: dict[str, set[str]] = {name: set() for name in graph.tasks}
    for target, sources in graph.inbound.items():
        for source in sources:
            targets[source].add(target)
    for source, found in targets.items():
        yield source, frozenset(found)


def _at(locations: Mapping[str, Location], label: str, fallback: Location) -> Location:
    """Where the key path `label` (or the nearest enclosing one that was recorded) was written."""
    while label:
        found = locations.get(label)
        if found is not None:
            return found
        cut = max(label.rfind("."), label.rfind("["))
        if cut <= 0:
            break
        label = label[:cut]
    return fallback


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
        # Sugar builds its own conditions: what is checked is what the user wrote (a decision's).
        when = tr.written_when if tr.derived else tr.when
        if when is not None:
            yield f"next[{i}].when", when
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
    variables: set[str] | None = None,
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
    if variables is not None:
        for ref in sorted(renderer.references(source, "vars", condition=condition, calls=False) - variables):
            guess = closest(ref, variables)
            hint = f" (did you mean '{guess}'?)" if guess else ""
            problems.append(AttuneError(
                f"{label}: reference to undefined variable 'vars.{ref}': not in 'vars' and no task "
                f"publishes it{hint}",
                location=where,
            ))
    return problems


def _check_inputs(task: TaskSpec, action: ActionSpec, where: Location) -> list[AttuneError]:
    """Literal inputs against the action's parameter schema; templates are checked at run time."""
    problems: list[AttuneError] = []
    declared = {p.name: p for p in action.parameters}
    what = f"task '{task.name}' (action {action.ref})"
    for key, value in task.input.items():
        at = _at(task.locations, f"input.{key}", where)
        spec = declared.get(key)
        if spec is None:
            if not action.additional_parameters:
                guess = closest(key, declared)
                hint = f" (did you mean '{guess}'?)" if guess else ""
                problems.append(AttuneError(f"{what}: unknown input '{key}'{hint}", location=at))
            continue
        if _has_template(value) or (value is None and not spec.required):
            continue
        err = check_value(spec, value)
        if err:
            problems.append(AttuneError(f"{what}: input '{key}' {err}", location=at))
    for spec in action.parameters:
        if spec.required and not spec.has_default and spec.name not in task.input:
            problems.append(
                AttuneError(
                    f"{what}: missing required input '{spec.name}'",
                    location=_at(task.locations, "input", where),
                )
            )
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
        top = Location(spec.file, 1, 1)
        caller = next((t for t in _all_tasks(spec) if t.action == cycle[1]), None)
        where = top if caller is None else _at(caller.locations, "action", caller.location or top)
        return [AttuneError(f"workflow calls itself: {' -> '.join(cycle)}", location=where)]
    return []


# -- files and folders, as `attune-actors validate` names them ---------------------------------------

_PACK_FILES = ("pack.yaml", "config.yaml")
_PACK_FOLDERS = ("actions", "workflows", "rules", "sensors")


def validate_paths(paths: Iterable[str | Path], renderer: Renderer | None = None) -> list[AttuneError]:
    """Every problem in the named packs, folders of packs and files, sorted by file and position.

    A folder is a pack or a folder of packs. A file inside a pack is checked with its whole pack
    loaded, and only its own problems are reported. A workflow file that is in no pack (or in no
    folder a pack loads from) is checked on its own, against the packs named alongside it and `core`.
    """
    renderer = renderer or Renderer()
    roots: list[Path] = []
    folders: list[Path] = []
    files: set[Path] = set()
    loose: list[tuple[Path, Path | None]] = []  # (file, the pack folder it sits in, if any)
    problems: list[AttuneError] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            pack = _pack_of(path)
            if pack is not None:
                roots.append(pack)
                if _loaded_by_pack(path, pack):
                    files.add(path.resolve())
                    continue
            loose.append((path, pack))
        elif path.is_dir():
            holder = None if _holds_packs(path) else _pack_of(path)
            roots.append(holder or path)  # a folder inside a pack (`workflows/`): check its pack
            folders.append(path.resolve())
        else:
            problems.append(AttuneError("no such file or folder", location=Location(str(path), 1, 1)))
    if roots or loose:
        catalog, found = load_packs(roots)
        found.extend(validate_catalog(catalog, renderer))
        problems.extend(e for e in found if _reported(e, files, folders))
        for file, pack_dir in loose:
            problems.extend(_validate_loose(file, pack_dir, catalog, renderer))
    return sorted(problems, key=_position)


def _holds_packs(folder: Path) -> bool:
    """Whether a folder is a pack or a folder of packs."""
    if (folder / "pack.yaml").is_file():
        return True
    return any((sub / "pack.yaml").is_file() for sub in folder.iterdir())


def _pack_of(file: Path) -> Path | None:
    """The pack folder a file (or folder) is in: the nearest folder above it holding pack.yaml."""
    for parents in (file.parents, file.resolve().parents):
        for folder in parents:
            if (folder / "pack.yaml").is_file():
                return folder
    return None


def _loaded_by_pack(file: Path, pack: Path) -> bool:
    try:
        parts = file.resolve().relative_to(pack.resolve()).parts
    except ValueError:
        return False
    if len(parts) == 1:
        return parts[0] in _PACK_FILES
    return (
        len(parts) == 2
        and parts[0] in _PACK_FOLDERS
        and (parts[1].endswith(".yaml") or parts[0] == "actions")
    )


def _reported(err: AttuneError, files: set[Path], folders: list[Path]) -> bool:
    """Whether a problem concerns what was named: a named file, or anything in a named folder."""
    if err.location is None:
        return True
    where = Path(err.location.file).resolve()
    return where in files or any(f == where or f in where.parents for f in folders)


def _validate_loose(
    file: Path, pack_dir: Path | None, catalog: Catalog, renderer: Renderer
) -> list[AttuneError]:
    """A workflow file checked on its own: in pack `<ref prefix>` (or the pack it sits in)."""
    problems: list[AttuneError] = []
    text = read_yaml_text(file, problems)
    if text is None:
        return problems
    pack = next(
        (p.ref for p in catalog.packs.values() if pack_dir and Path(p.path).resolve() == pack_dir.resolve()),
        None,
    )
    data, _ = load_yaml(text, str(file))
    if isinstance(data, dict) and "runner_type" in data and "tasks" not in data:
        return [
            AttuneError(
                "action metadata is checked in its pack: put it in <pack>/actions/ and validate the pack",
                location=Location(str(file), 1, 1),
            )
        ]
    if pack is None:
        ref = data.get("ref") if isinstance(data, dict) else None
        pack = ref.split(".", 1)[0] if isinstance(ref, str) and "." in ref else "default"
    spec = load_workflow_text(
        text, pack=pack, file=str(file), default_ref=f"{pack}.{file.stem}", problems=problems
    )
    if spec is not None:
        scoped = Catalog(packs=dict(catalog.packs), actions=dict(catalog.actions))
        scoped.put(workflow_action(spec, pack_dir or file.parent))
        problems.extend(validate_workflow(spec, scoped, renderer))
    return problems


def _position(err: AttuneError) -> tuple[str, int, int]:
    loc = err.location
    return ("", 0, 0) if loc is None else (loc.file, loc.line, loc.column)
