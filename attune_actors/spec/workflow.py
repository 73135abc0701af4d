"""Workflow documents: YAML mapping -> `WorkflowSpec`, with every sugar normalised into `next`.

This module checks what one document can tell on its own (keys, types, ranges, names, sugar); the
checks that need the other loaded packs (action refs, input schemas, templates) are in `validate`.
Problems are collected, never raised one at a time, so a user sees them all at once.
"""

from __future__ import annotations

import re
from typing import Any

from attune_actors.errors import AttuneError, Location
from attune_actors.spec.model import (
    BACKOFFS,
    CANCELLATION_POLICIES,
    ENGINE_COMMANDS,
    RESERVED_NAMES,
    RetryPolicy,
    TaskSpec,
    Transition,
    WorkflowSpec,
)
from attune_actors.spec.params import parse_params
from attune_actors.spec.suggest import closest, unknown_key
from attune_actors.spec.yamlsrc import YList, YMap, location_of, plain

WORKFLOW_KEYS = (
    "ref",
    "label",
    "description",
    "version",
    "parameters",
    "vars",
    "tasks",
    "output_map",
    "timeout",
    "cancellation_policy",
)
SUGAR_KEYS = ("on_success", "on_failure", "on_complete", "on_timeout", "decision")
TASK_KEYS = (
    "name",
    "description",
    "action",
    "input",
    "type",
    "tasks",
    "with_items",
    "batch_size",
    "concurrency",
    "retry",
    "timeout",
    "delay",
    "join",
    "publish",
    "next",
    *SUGAR_KEYS,
)
TRANSITION_KEYS = ("when", "publish", "do")
RETRY_KEYS = ("count", "delay", "backoff", "max_delay", "when")
_SUGAR_WHEN = {
    "on_success": "{{ succeeded() }}",
    "on_failure": "{{ failed() }}",
    "on_timeout": "{{ timed_out() }}",
    "on_complete": None,
}
_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
_MARKERS = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class _Parser:
    """Parses one workflow document; `problems` collects every error found."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[AttuneError] = []

    def error(self, message: str, where: Location) -> None:
        self.problems.append(AttuneError(message, location=where))

    def check_keys(self, data: dict[str, Any], valid: tuple[str, ...], what: str) -> None:
        for key in data:
            if key not in valid:
                where = data.loc(key) if isinstance(data, YMap) else Location(self.file)
                self.error(unknown_key(key, valid, what), where)

    # -- numbers -------------------------------------------------------------------------------

    def number(
        self,
        data: dict[str, Any],
        key: str,
        what: str,
        *,
        integer: bool = False,
        minimum: float = 0,
        fallback: Location | None = None,
    ) -> Any:
        if key not in data or data[key] is None:
            return None
        value = data[key]
        where = _loc(data, key, fallback or Location(self.file, 1, 1))
        kind = "an integer" if integer else "a number"
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (integer and not isinstance(value, int))
        ):
            self.error(f"{what}: '{key}' must be {kind}, got {value!r}", where)
            return None
        if value < minimum or value != value:
            bound = "at least 1" if minimum == 1 else "zero or more"
            self.error(f"{what}: '{key}' must be {bound}, got {value!r}", where)
            return None
        return value

    # -- document ------------------------------------------------------------------------------

    def workflow(self, data: Any, *, pack: str, default_ref: str, source: str) -> WorkflowSpec | None:
        top = Location(self.file, 1, 1)
        if not isinstance(data, dict):
            self.error("a workflow must be a YAML mapping with a 'tasks' list", top)
            return None
        self.check_keys(data, WORKFLOW_KEYS, "workflow")
        ref = data.get("ref", default_ref)
        if not isinstance(ref, str) or not ref.startswith(f"{pack}.") or ref == f"{pack}.":
            self.error(
                f"workflow ref '{ref}' must be '<pack>.<name>' in pack '{pack}'",
                _loc(data, "ref", top),
            )
            ref = default_ref
        parameters = parse_params(data.get("parameters"), _loc(data, "parameters", top), self.problems)
        variables = data.get("vars") or {}
        if not isinstance(variables, dict):
            self.error("'vars' must be a mapping", _loc(data, "vars", top))
            variables = {}
        output_map = data.get("output_map")
        if output_map is not None and not isinstance(output_map, dict):
            self.error("'output_map' must be a mapping", _loc(data, "output_map", top))
            output_map = None
        policy = data.get("cancellation_policy", "allow_finish")
        if policy not in CANCELLATION_POLICIES:
            self.error(
                f"'cancellation_policy' must be one of {', '.join(CANCELLATION_POLICIES)}",
                _loc(data, "cancellation_policy", top),
            )
            policy = "allow_finish"
        for key in ("label", "description", "version"):
            if key in data and data[key] is not None and not isinstance(data[key], (str, int, float)):
                self.error(f"'{key}' must be a string", _loc(data, key, top))
        tasks_data = data.get("tasks")
        if not isinstance(tasks_data, list) or not tasks_data:
            self.error("a workflow needs a non-empty 'tasks' list", _loc(data, "tasks", top))
            tasks_data = []
        tasks = tuple(
            t
            for t in (self.task(item, i, tasks_data, group=None) for i, item in enumerate(tasks_data))
            if t is not None
        )
        locations = {str(k): _loc(data, str(k), top) for k in data}
        record_paths(variables, "vars", locations)
        record_paths(output_map, "output_map", locations)
        return WorkflowSpec(
            ref=ref,
            pack=pack,
            tasks=tasks,
            label=str(data.get("label") or ""),
            description=str(data.get("description") or ""),
            version=str(data.get("version") or ""),
            parameters=parameters,
            vars=plain(variables),
            output_map=plain(output_map) if output_map is not None else None,
            timeout=self.number(data, "timeout", "workflow"),
            cancellation_policy=policy,
            file=self.file,
            source=source,
            locations=locations,
        )

    # -- tasks ---------------------------------------------------------------------------------

    def task(self, data: Any, index: int, parent: list[Any], *, group: str | None) -> TaskSpec | None:
        where = parent.loc(index) if isinstance(parent, YList) else Location(self.file)
        if not isinstance(data, dict):
            self.error("each task must be a mapping with at least 'name'", where)
            return None
        where = location_of(data, where)
        name = data.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            self.error(
                f"task #{index + 1}: 'name' must be a name (letters, digits, _ and -), got {name!r}",
                _loc(data, "name", where),
            )
            return None
        what = f"task '{name}'"
        self.check_keys(data, TASK_KEYS, what)
        if name in RESERVED_NAMES:
            self.error(f"{what}: '{name}' is a reserved word", _loc(data, "name", where))
        task_type = data.get("type", "action")
        if task_type not in ("action", "parallel"):
            self.error(f"{what}: 'type' must be 'action' or 'parallel'", _loc(data, "type", where))
            task_type = "action"
        if "tasks" in data and task_type != "parallel":
            self.error(f"{what}: 'tasks' is only allowed with 'type: parallel'", _loc(data, "tasks", where))

        subtasks: tuple[TaskSpec, ...] = ()
        action = data.get("action")
        if task_type == "parallel":
            if group is not None:
                self.error(f"{what}: parallel groups cannot be nested", _loc(data, "type", where))
            for key in (
                "action",
                "input",
                "with_items",
                "batch_size",
                "concurrency",
                "retry",
                "timeout",
            ):
                if key in data:
                    self.error(
                        f"{what}: '{key}' is not allowed on a parallel group",
                        _loc(data, key, where),
                    )
            sub = data.get("tasks")
            if not isinstance(sub, list) or not sub:
                self.error(
                    f"{what}: a parallel group needs a non-empty 'tasks' list",
                    _loc(data, "tasks", where),
                )
                sub = []
            subtasks = tuple(
                t for t in (self.task(s, i, sub, group=name) for i, s in enumerate(sub)) if t is not None
            )
            action = None
        elif not isinstance(action, str) or "." not in action:
            self.error(
                f"{what}: 'action' must be '<pack>.<action>', got {action!r}",
                _loc(data, "action", where),
            )
            action = None

        if group is not None:
            for key in ("next", "join", *SUGAR_KEYS):
                if key in data:
                    self.error(
                        f"{what}: sub-tasks of parallel group '{group}' may not have '{key}' "
                        "(put transitions on the group)",
                        _loc(data, key, where),
                    )

        task_input = data.get("input") or {}
        if not isinstance(task_input, dict):
            self.error(f"{what}: 'input' must be a mapping", _loc(data, "input", where))
            task_input = {}

        with_items = data.get("with_items")
        if with_items is not None and not isinstance(with_items, (str, list)):
            self.error(
                f"{what}: 'with_items' must be a template or a list",
                _loc(data, "with_items", where),
            )
            with_items = None
        batch_key = "batch_size" if "batch_size" in data else "concurrency"
        if "batch_size" in data and "concurrency" in data:
            self.error(
                f"{what}: use 'batch_size' or its alias 'concurrency', not both",
                _loc(data, "concurrency", where),
            )
        batch_size = self.number(data, batch_key, what, integer=True, minimum=1)
        if batch_size is not None and with_items is None:
            self.error(f"{what}: '{batch_key}' needs 'with_items'", _loc(data, batch_key, where))

        join = data.get("join")
        if (
            join is not None
            and join != "all"
            and (isinstance(join, bool) or not isinstance(join, int) or join < 1)
        ):
            self.error(
                f"{what}: 'join' must be 'all' or a whole number of at least 1, got {join!r}",
                _loc(data, "join", where),
            )
            join = None

        locs: dict[str, Location] = {str(k): _loc(data, str(k), where) for k in data}
        record_paths(task_input, "input", locs)
        record_paths(with_items, "with_items", locs)
        if isinstance(data.get("retry"), dict):
            record_paths(data["retry"], "retry", locs)
        return TaskSpec(
            name=name,
            action=action,
            input=plain(task_input),
            type=task_type,
            tasks=subtasks,
            with_items=plain(with_items),
            batch_size=batch_size,
            retry=self.retry(data, what, where),
            timeout=self.number(data, "timeout", what),
            delay=self.number(data, "delay", what),
            join=join,
            publish=self.publish(data.get("publish"), what, _loc(data, "publish", where), locs, "publish"),
            next=self.transitions(data, what, where, locs),
            location=where,
            locations=locs,
        )

    def retry(self, data: dict[str, Any], what: str, where: Location) -> RetryPolicy | None:
        if "retry" not in data or data["retry"] is None:
            return None
        spec = data["retry"]
        rwhere = _loc(data, "retry", where)
        if isinstance(spec, int) and not isinstance(spec, bool):
            spec = {"count": spec}
        if not isinstance(spec, dict):
            self.error(
                f"{what}: 'retry' must be a mapping (count, delay, backoff, max_delay, when)",
                rwhere,
            )
            return None
        self.check_keys(spec, RETRY_KEYS, f"{what} retry")
        backoff = spec.get("backoff", "constant")
        if backoff not in BACKOFFS:
            self.error(
                f"{what}: retry 'backoff' must be one of {', '.join(BACKOFFS)}, got {backoff!r}",
                _loc(spec, "backoff", rwhere),
            )
            backoff = "constant"
        when = spec.get("when")
        if when is not None and not isinstance(when, str):
            when = "{{ true }}" if when else "{{ false }}"
        count = self.number(spec, "count", f"{what} retry", integer=True, fallback=rwhere)
        return RetryPolicy(
            count=3 if count is None else count,
            delay=self.number(spec, "delay", f"{what} retry", fallback=rwhere) or 0.0,
            backoff=backoff,
            max_delay=self.number(spec, "max_delay", f"{what} retry", fallback=rwhere),
            when=when,
        )

    def publish(
        self,
        data: Any,
        what: str,
        where: Location,
        locs: dict[str, Location] | None = None,
        prefix: str = "publish",
    ) -> tuple[tuple[str, Any], ...]:
        """`publish` as a mapping or a list of single-key mappings -> ordered pairs.

        The location of each published name (and of what is inside its value) goes into `locs`
        as `<prefix>.<name>...`.
        """
        if data is None:
            return ()
        pairs: list[tuple[str, Any]] = []
        entries = [data] if isinstance(data, dict) else data if isinstance(data, list) else None
        if entries is None:
            self.error(f"{what}: 'publish' must be a mapping or a list of mappings", where)
            return ()
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                at = data.loc(i) if isinstance(data, YList) else where
                self.error(f"{what}: each 'publish' entry must be a mapping of name to template", at)
                continue
            for name, value in entry.items():
                if not isinstance(name, str) or not name.isidentifier():
                    self.error(
                        f"{what}: published name {name!r} must be an identifier",
                        entry.loc(name) if isinstance(entry, YMap) else where,
                    )
                    continue
                if locs is not None:
                    locs[f"{prefix}.{name}"] = entry.loc(name) if isinstance(entry, YMap) else where
                    record_paths(value, f"{prefix}.{name}", locs)
                pairs.append((name, plain(value)))
        return tuple(pairs)

    def targets(self, value: Any, what: str, where: Location) -> tuple[str, ...]:
        """`do`/sugar targets: a name, a comma-separated string, or a list of names."""
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else None
        if items is None or not all(isinstance(i, str) and i.strip() for i in items):
            self.error(f"{what}: targets must be a task name or a list of task names, got {value!r}", where)
            return ()
        return tuple(i.strip() for i in items)

    def transitions(
        self, data: dict[str, Any], what: str, where: Location, locs: dict[str, Location]
    ) -> tuple[Transition, ...]:
        result: list[Transition] = []
        nxt = data.get("next")
        if nxt is not None:
            nwhere = _loc(data, "next", where)
            if not isinstance(nxt, list):
                self.error(f"{what}: 'next' must be a list of {{when, publish, do}}", nwhere)
                nxt = []
            for i, entry in enumerate(nxt):
                ewhere = nxt.loc(i) if isinstance(nxt, YList) else nwhere
                if not isinstance(entry, dict):
                    self.error(f"{what}: each 'next' entry must be a mapping", ewhere)
                    continue
                self.check_keys(entry, TRANSITION_KEYS, f"{what} next")
                when = entry.get("when")
                if when is not None and not isinstance(when, str):
                    when = "{{ true }}" if when else "{{ false }}"
                label = f"next[{len(result)}]"
                locs[label] = ewhere
                for key in entry:
                    locs[f"{label}.{key}"] = _loc(entry, str(key), ewhere)
                result.append(
                    Transition(
                        when=when,
                        publish=self.publish(
                            entry.get("publish"),
                            what,
                            _loc(entry, "publish", ewhere),
                            locs,
                            f"{label}.publish",
                        ),
                        do=self.targets(entry.get("do"), what, _loc(entry, "do", ewhere)),
                        location=ewhere,
                    )
                )
        # Sugar, in the order SPEC section 2 fixes.
        if "decision" in data:
            for transition, when_at, do_at in self.decision(
                data["decision"], what, _loc(data, "decision", where)
            ):
                label = f"next[{len(result)}]"
                locs[label], locs[f"{label}.when"], locs[f"{label}.do"] = (
                    transition.location or where,
                    when_at,
                    do_at,
                )
                result.append(transition)
        for key in ("on_success", "on_failure", "on_timeout", "on_complete"):
            if key in data:
                kwhere = _loc(data, key, where)
                label = f"next[{len(result)}]"
                locs[label] = locs[f"{label}.when"] = locs[f"{label}.do"] = kwhere
                result.append(
                    Transition(
                        when=_SUGAR_WHEN[key],
                        do=self.targets(data[key], what, kwhere),
                        location=kwhere,
                        derived=True,
                    )
                )
        return tuple(result)

    def decision(self, data: Any, what: str, where: Location) -> list[tuple[Transition, Location, Location]]:
        """`decision` -> transitions; first match wins, so each carries the negation of the earlier.

        Each comes with where its condition and its targets were written.
        """
        if not isinstance(data, list):
            self.error(f"{what}: 'decision' must be a list of {{when, next}} and one {{default}}", where)
            return []
        # (expression, as written, targets, entry location, `when` location, `next` location)
        branches: list[tuple[str, str, tuple[str, ...], Location, Location, Location]] = []
        default: tuple[tuple[str, ...], Location, Location] | None = None
        for i, entry in enumerate(data):
            ewhere = data.loc(i) if isinstance(data, YList) else where
            if not isinstance(entry, dict):
                self.error(f"{what}: each decision entry must be a mapping", ewhere)
                continue
            if "default" in entry:
                self.check_keys(entry, ("default",), f"{what} decision")
                dwhere = _loc(entry, "default", ewhere)
                if default is not None:
                    self.error(f"{what}: a decision has at most one 'default'", dwhere)
                elif i != len(data) - 1:
                    self.error(f"{what}: the decision 'default' must come last", dwhere)
                if default is None:
                    default = (self.targets(entry["default"], what, dwhere), ewhere, dwhere)
                continue
            self.check_keys(entry, ("when", "next"), f"{what} decision")
            wwhere = _loc(entry, "when", ewhere)
            nwhere = _loc(entry, "next", ewhere)
            cond = entry.get("when")
            if "when" not in entry:
                self.error(f"{what}: decision entry needs 'when' (or use 'default')", ewhere)
                continue
            if isinstance(cond, bool):
                expr = "true" if cond else "false"
            elif isinstance(cond, str) and (m := _SINGLE_EXPR.match(cond)) and not _MARKERS.search(m["expr"]):
                expr = m["expr"].strip()
            elif isinstance(cond, str) and cond.strip() and not _MARKERS.search(cond):
                expr = cond.strip()  # a bare expression, as `when` in `next` accepts
            else:
                self.error(
                    f"{what}: a decision 'when' must be one {{{{ expression }}}}, got {cond!r}",
                    wwhere,
                )
                continue
            if "next" not in entry:
                self.error(f"{what}: decision entry needs 'next'", ewhere)
            written = f"{{{{ {expr} }}}}"
            branches.append(
                (expr, written, self.targets(entry.get("next"), what, nwhere), ewhere, wwhere, nwhere)
            )
        result: list[tuple[Transition, Location, Location]] = []
        earlier: list[str] = []
        for expr, written, targets, ewhere, wwhere, nwhere in branches:
            guard = "".join(f" and not ({e})" for e in earlier)
            transition = Transition(
                when=f"{{{{ succeeded() and ({expr}){guard} }}}}",
                do=targets,
                location=ewhere,
                derived=True,
                written_when=written,
            )
            result.append((transition, wwhere, nwhere))
            earlier.append(expr)
        if default is not None:
            guard = "".join(f" and not ({e})" for e in earlier)
            targets, ewhere, dwhere = default
            transition = Transition(
                when=f"{{{{ succeeded(){guard} }}}}", do=targets, location=ewhere, derived=True
            )
            result.append((transition, dwhere, dwhere))
        return result


def _loc(data: Any, key: str, fallback: Location) -> Location:
    if isinstance(data, YMap) and key in data.key_locations:
        return data.key_locations[key]
    return fallback


def record_paths(value: Any, label: str, out: dict[str, Location]) -> None:
    """Record where everything inside `value` was written, by path (`label.key`, `label[i]`)."""
    if isinstance(value, YMap):
        for key, item in value.items():
            path = f"{label}.{key}"
            out[path] = value.loc(key)
            record_paths(item, path, out)
    elif isinstance(value, YList):
        for i, item in enumerate(value):
            path = f"{label}[{i}]"
            out[path] = value.loc(i)
            record_paths(item, path, out)


def parse_workflow(
    data: Any, *, file: str, pack: str, default_ref: str, source: str = ""
) -> tuple[WorkflowSpec | None, list[AttuneError]]:
    """Build a WorkflowSpec from parsed YAML; returns (spec or None, problems)."""
    parser = _Parser(file)
    spec = parser.workflow(data, pack=pack, default_ref=default_ref, source=source)
    if spec is not None:
        _check_names(spec, parser)
    return spec, parser.problems


def _check_names(spec: WorkflowSpec, parser: _Parser) -> None:
    top = Location(parser.file, 1, 1)
    seen: dict[str, Location | None] = {}
    for task in spec.tasks:
        for t in (task, *task.tasks):
            if t.name in seen:
                first = seen[t.name]
                line = f" (first defined on line {first.line})" if first is not None and first.line else ""
                parser.error(
                    f"duplicate task name '{t.name}'{line}", t.locations.get("name", t.location or top)
                )
            else:
                seen[t.name] = t.locations.get("name", t.location)
    top_level = {t.name for t in spec.tasks}
    for task in spec.tasks:
        for i, tr in enumerate(task.next):
            where = task.locations.get(f"next[{i}].do", tr.location or task.location or top)
            for target in tr.do:
                if target in ENGINE_COMMANDS:
                    continue
                if target not in seen:
                    guess = closest(target, seen)
                    hint = f" (did you mean '{guess}'?)" if guess else ""
                    parser.error(f"task '{task.name}': transition to unknown task '{target}'{hint}", where)
                elif target not in top_level:
                    parser.error(
                        f"task '{task.name}': cannot transition to '{target}', a sub-task of a "
                        "parallel group (transition to the group instead)",
                        where,
                    )
