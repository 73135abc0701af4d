"""Expectations on a finished run, and the readable differences when a run does not meet them.

Every difference is one line that names what differs: the route (and the first task where it
leaves the expected one), a task by name (`task 'health_check': attempts: expected 5, got 6`), a
key of the output or of the published vars, the number of calls of a mocked action.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attune_actors.testing._harness import Run

__all__ = ["TASK_KEYS", "Expect", "differences"]

TASK_KEYS = ("status", "attempts", "result", "error", "items", "ran")
_UNSET: Any = object()


@dataclass(frozen=True)
class Expect:
    """What a run should have done; fields left out are not checked.

    `route`: the task runs in start order; a list inside it is a group that starts together, in
    any order (parallel branches). `tasks`: task name -> `status`, `attempts`, `result`, `error`
    (a text the error contains), `items` (per-item statuses), `ran` (false: never started).
    `vars`: published vars (only the keys given). `calls`: action ref -> how many attempts it
    got. `error`: a text the execution's error contains. `min_seconds` / `max_seconds`: bounds
    on the run's duration in engine time.
    """

    status: str | None = None
    route: Sequence[str | Sequence[str]] | None = None
    output: Any = _UNSET
    tasks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    vars: Mapping[str, Any] = field(default_factory=dict)
    calls: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    min_seconds: float | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for name, checks in self.tasks.items():
            unknown = sorted(set(checks) - set(TASK_KEYS))
            if unknown:
                raise ValueError(
                    f"expectation of task {name!r}: unknown key {unknown[0]!r} "
                    f"(known: {', '.join(TASK_KEYS)})"
                )


def differences(run: Run, expect: Expect) -> list[str]:
    """One line per way `run` differs from `expect` (empty: it met every expectation)."""
    out: list[str] = []
    execution = run.execution
    if expect.status is not None and execution.status != expect.status:
        why = f" ({execution.error.get('message')})" if execution.error else ""
        out.append(f"status: expected {expect.status}, got {execution.status.value}{why}")
    if expect.route is not None:
        out.extend(_route(expect.route, run.route))
    if expect.output is not _UNSET:
        _diff("output", expect.output, execution.output, out)
    for name, checks in expect.tasks.items():
        out.extend(_task(run, name, checks))
    for key, value in expect.vars.items():
        if key not in run.vars:
            out.append(f"vars.{key}: expected {_show(value)}, but the workflow has no such var")
        else:
            _diff(f"vars.{key}", value, run.vars[key], out)
    for action, count in expect.calls.items():
        made = sum(1 for c in run.calls if c.action == action)
        if made != count:
            out.append(f"calls of {action}: expected {count}, got {made}")
    if expect.error is not None:
        message = (execution.error or {}).get("message") or ""
        if expect.error not in message:
            out.append(f"error: expected a message containing {expect.error!r}, got {message!r}")
    if expect.min_seconds is not None and run.elapsed < expect.min_seconds:
        out.append(f"duration: expected at least {expect.min_seconds:g} s, took {run.elapsed:g} s")
    if expect.max_seconds is not None and run.elapsed > expect.max_seconds:
        out.append(f"duration: expected at most {expect.max_seconds:g} s, took {run.elapsed:g} s")
    return out


def _route(expected: Sequence[str | Sequence[str]], actual: list[str]) -> list[str]:
    pos = 0
    for step, entry in enumerate(expected, 1):
        group = [entry] if isinstance(entry, str) else list(entry)
        got = actual[pos : pos + len(group)]
        if sorted(got) != sorted(group):
            if not got:
                after = f"after '{actual[-1]}'" if actual else "before any task"
                what = f"expected task {_names(group)} next, but the route ended {after}"
            else:
                what = f"expected {_names(group)}, got {_names(got)}"
            return [
                f"route: differs at step {step}: {what}",
                f"  expected route: {_render_route(expected)}",
                f"  actual route:   {' -> '.join(actual) or '(no task ran)'}",
            ]
        pos += len(group)
    if pos < len(actual):
        return [
            f"route: unexpected task '{actual[pos]}' after the expected route",
            f"  expected route: {_render_route(expected)}",
            f"  actual route:   {' -> '.join(actual)}",
        ]
    return []


def _names(names: Sequence[str]) -> str:
    if len(names) == 1:
        return f"'{names[0]}'"
    return "{" + ", ".join(f"'{n}'" for n in names) + "}"


def _render_route(route: Sequence[str | Sequence[str]]) -> str:
    return " -> ".join(e if isinstance(e, str) else "{" + ", ".join(e) + "}" for e in route) or "(none)"


def _task(run: Run, name: str, checks: Mapping[str, Any]) -> list[str]:
    runs = [t for t in run.execution.tasks if t.name == name]
    if "ran" in checks and bool(checks["ran"]) != bool(runs):
        return [f"task '{name}': expected it {'to run' if checks['ran'] else 'not to run'}, "
                f"but it {'ran' if runs else 'never ran'}"]
    if not runs:
        if set(checks) - {"ran"}:
            return [f"task '{name}': expected it to run, but it never ran (route: "
                    f"{' -> '.join(run.route) or 'none'})"]
        return []
    task = runs[-1]
    out: list[str] = []
    if "status" in checks and task.status != checks["status"]:
        why = f" ({task.error})" if task.error else ""
        out.append(f"task '{name}': status: expected {checks['status']}, got {task.status.value}{why}")
    if "attempts" in checks and task.attempts != checks["attempts"]:
        out.append(f"task '{name}': attempts: expected {checks['attempts']}, got {task.attempts}")
    if "result" in checks:
        _diff(f"task '{name}': result", checks["result"], task.result, out)
    if "error" in checks and str(checks["error"]) not in (task.error or ""):
        out.append(f"task '{name}': error: expected a message containing {checks['error']!r}, "
                   f"got {task.error!r}")
    if "items" in checks:
        statuses = [it["status"] for it in task.items or ()]
        if statuses != list(checks["items"]):
            want = _show(list(checks["items"]))
            out.append(f"task '{name}': items: expected {want}, got {_show(statuses)}")
    return out


def _diff(path: str, expected: Any, actual: Any, out: list[str]) -> None:
    """Append one line per leaf where `actual` differs from `expected`."""
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        for key in expected:
            if key not in actual:
                out.append(f"{path}.{key}: expected {_show(expected[key])}, but it is missing")
            else:
                _diff(f"{path}.{key}", expected[key], actual[key], out)
        for key in actual:
            if key not in expected:
                out.append(f"{path}.{key}: unexpected, got {_show(actual[key])}")
        return
    if (
        isinstance(expected, list)
        and isinstance(actual, list)
        and len(expected) == len(actual)
    ):
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _diff(f"{path}[{i}]", e, a, out)
        return
    if expected != actual or _kind(expected) != _kind(actual):  # True == 1, but not here
        out.append(f"{path}: expected {_show(expected)}, got {_show(actual)}")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else type(value).__name__


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
