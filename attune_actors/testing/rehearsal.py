"""Rehearsal files: workflow tests in YAML, run by `attune-actors test PATH...` or `rehearse`.

A rehearsal file lives in a pack's `rehearsals/` folder (beside `workflows/`; the pack loader
does not read it) and rehearses one workflow:

    workflow: examples.deploy          # default for every rehearsal below
    mocks:                             # shared by every rehearsal below
      examples.docker_build: {result: {image: registry.example.test/shop:1.0.0}}
    rehearsals:
      - name: health check never passes
        parameters: {app_name: shop}
        mocks:                         # action ref -> outcome | [outcomes] | rules
          examples.health_check: {error: "503", result: {status: unhealthy}}
        answers: {}                    # inquiry task name -> response
        expect:
          status: succeeded
          route: [create_deployment, build_image, deploy, health_check, rollback, notify_failure]
          tasks: {health_check: {status: failed, attempts: 6}}
          vars: {outcome: failed}
          min_seconds: 50

An outcome is a mapping of `result`, `error`, `timeout: true`, `delay` (seconds of engine time)
or `real: true`; a list of outcomes is a sequence (the last repeats). Rules: `calls` (the
default outcome or sequence), `items` (item index -> outcome or sequence) and `when` (a list of
`{input: {...}, task: NAME, then: outcome or sequence}`, the first that matches wins). `expect`
takes the fields of `Expect`, plus `rejected: TEXT`: the engine refuses the parameters with an
error containing TEXT.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from attune_actors.config import Settings
from attune_actors.errors import AttuneError, Location, ValidationError
from attune_actors.spec.suggest import printable, unknown_key
from attune_actors.spec.yamlsrc import YList, YMap, load_yaml, location_of, plain
from attune_actors.testing._expect import TASK_KEYS, Expect
from attune_actors.testing._harness import WorkflowTest
from attune_actors.testing._script import Outcome, subset_predicate

__all__ = ["Rehearsal", "find_rehearsals", "load_rehearsals", "main", "rehearse", "rehearse_on"]

FOLDER = "rehearsals"
FILE_KEYS = ("workflow", "mocks", "rehearsals")
REHEARSAL_KEYS = ("name", "workflow", "parameters", "mocks", "answers", "expect")
OUTCOME_KEYS = ("result", "error", "timeout", "delay", "real")
RULE_KEYS = ("calls", "items", "when")
WHEN_KEYS = ("input", "task", "then")
EXPECT_KEYS = (
    "status", "route", "output", "tasks", "vars", "calls", "error", "min_seconds", "max_seconds",
    "rejected",
)


@dataclass(frozen=True)
class MockRule:
    """One rule of a mocked action, as `WorkflowTest.mock` takes it."""

    action: str
    outcomes: tuple[Outcome, ...]
    item: int | None = None
    task: str | None = None
    input: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rehearsal:
    """One rehearsal of a rehearsal file."""

    name: str
    workflow: str
    parameters: dict[str, Any] = field(default_factory=dict)
    mocks: tuple[MockRule, ...] = ()
    answers: dict[str, Any] = field(default_factory=dict)
    expect: Expect = field(default_factory=Expect)
    rejected: str | None = None  # the engine must refuse the parameters, saying this
    location: Location | None = None  # where it is written


# ----------------------------------------------------------------------------------- loading


class _Problems:
    def __init__(self) -> None:
        self.found: list[AttuneError] = []

    def add(self, message: str, where: Location) -> None:
        self.found.append(AttuneError(message, location=where))


def load_rehearsals(file: str | Path) -> list[Rehearsal]:
    """The rehearsals of one file; ValidationError listing every problem (each located)."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        where = Location(str(path), 1, 1)
        raise ValidationError([AttuneError(f"cannot read: {exc}", location=where)]) from None
    doc, problems = load_yaml(text, str(path))
    if problems:
        raise ValidationError(problems)
    top = Location(str(path), 1, 1)
    bad = _Problems()
    rehearsals: list[Rehearsal] = []
    if not isinstance(doc, YMap):
        bad.add("a rehearsal file is a mapping with 'workflow', 'mocks' and 'rehearsals'", top)
    else:
        _keys(doc, FILE_KEYS, "a rehearsal file", bad)
        shared = _mocks(doc.get("mocks"), doc.loc("mocks"), bad)
        items = doc.get("rehearsals")
        if not isinstance(items, YList) or not items:
            bad.add("'rehearsals' must be a list of rehearsals", doc.loc("rehearsals"))
        else:
            for i, entry in enumerate(items):
                found = _rehearsal(entry, items.loc(i), doc.get("workflow"), shared, bad)
                if found is not None:
                    rehearsals.append(found)
            names = [r.name for r in rehearsals]
            for r in rehearsals:
                if names.count(r.name) > 1:
                    bad.add(f"two rehearsals are named '{r.name}'", r.location or top)
    if bad.found:
        raise ValidationError(bad.found)
    return rehearsals


def _keys(data: YMap, valid: Sequence[str], where: str, bad: _Problems) -> None:
    for key in data:
        if key not in valid:
            bad.add(unknown_key(key, valid, where), data.loc(key))


def _rehearsal(
    entry: Any, where: Location, workflow: Any, shared: tuple[MockRule, ...], bad: _Problems
) -> Rehearsal | None:
    if not isinstance(entry, YMap):
        bad.add("a rehearsal is a mapping (name, parameters, mocks, answers, expect)", where)
        return None
    before = len(bad.found)
    _keys(entry, REHEARSAL_KEYS, "a rehearsal", bad)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        bad.add("a rehearsal needs a 'name'", entry.loc("name"))
        return None
    workflow = entry.get("workflow", workflow)
    if not isinstance(workflow, str):
        bad.add(f"rehearsal '{name}': no 'workflow' (in the rehearsal or the file)", entry.loc())
        return None
    parameters = entry.get("parameters") or {}
    answers = entry.get("answers") or {}
    for key in ("parameters", "answers"):
        if not isinstance(entry.get(key) or {}, dict):
            bad.add(f"rehearsal '{name}': '{key}' must be a mapping", entry.loc(key))
            return None
    own = _mocks(entry.get("mocks"), entry.loc("mocks"), bad)
    overridden = {rule.action for rule in own}
    mocks = tuple(r for r in shared if r.action not in overridden) + own
    expect_doc = entry.get("expect")
    if not isinstance(expect_doc, YMap):
        bad.add(f"rehearsal '{name}': 'expect' must be a mapping (status, route, output, ...)",
                entry.loc("expect"))
        return None
    _keys(expect_doc, EXPECT_KEYS, "'expect'", bad)
    _expect_types(expect_doc, bad)
    tasks = expect_doc.get("tasks")
    for task, checks in (tasks.items() if isinstance(tasks, dict) else ()):
        if not isinstance(checks, YMap):
            bad.add(f"expected task '{task}': a mapping of {', '.join(TASK_KEYS)}",
                    location_of(checks, expect_doc.loc("tasks")))
        else:
            _keys(checks, TASK_KEYS, f"the expectation of task '{task}'", bad)
    rejected = expect_doc.get("rejected")
    if len(bad.found) > before:
        return None
    fields = {k: plain(v) for k, v in expect_doc.items() if k in EXPECT_KEYS and k != "rejected"}
    try:
        expect = Expect(**fields)
    except (TypeError, ValueError) as exc:
        bad.add(f"rehearsal '{name}': {exc}", expect_doc.loc())
        return None
    return Rehearsal(
        name=name,
        location=entry.loc(),
        workflow=workflow,
        parameters=plain(parameters),
        mocks=mocks,
        answers=plain(answers),
        expect=expect,
        rejected=None if rejected is None else str(rejected),
    )


def _expect_types(doc: YMap, bad: _Problems) -> None:
    """Each expectation has the shape `Expect` needs (a mistake here is a located problem)."""

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    def step(v: Any) -> bool:
        return isinstance(v, str) or (isinstance(v, list) and all(isinstance(n, str) for n in v))

    shapes: dict[str, tuple[str, Any]] = {
        "status": ("a status", lambda v: isinstance(v, str)),
        "route": ("a list of task names (a list inside it: tasks starting together)",
                  lambda v: isinstance(v, list) and all(step(e) for e in v)),
        "tasks": ("a mapping of task name -> checks", lambda v: isinstance(v, dict)),
        "vars": ("a mapping of var -> value", lambda v: isinstance(v, dict)),
        "calls": ("a mapping of action ref -> number of calls",
                  lambda v: isinstance(v, dict) and all(isinstance(n, int) for n in v.values())),
        "error": ("a text", lambda v: isinstance(v, str)),
        "min_seconds": ("a number", number),
        "max_seconds": ("a number", number),
        "rejected": ("a text", lambda v: isinstance(v, str)),
    }
    for key, (what, ok) in shapes.items():
        if key in doc and not ok(doc[key]):
            bad.add(f"'{key}' must be {what}", doc.loc(key))


def _mocks(doc: Any, where: Location, bad: _Problems) -> tuple[MockRule, ...]:
    if doc is None:
        return ()
    if not isinstance(doc, YMap):
        bad.add("'mocks' maps action refs to outcomes", where)
        return ()
    rules: list[MockRule] = []
    for action, spec in doc.items():
        at = doc.loc(action)
        if isinstance(spec, YMap) and any(k in RULE_KEYS for k in spec):
            _keys(spec, RULE_KEYS, f"the mock of {action}", bad)
            if "calls" in spec:
                rules.append(MockRule(action, _outcomes(spec["calls"], spec.loc("calls"), bad)))
            items, when = spec.get("items") or {}, spec.get("when") or []
            if not isinstance(items, dict):
                bad.add(f"mock of {action}: 'items' maps item indexes to outcomes", spec.loc("items"))
                items = {}
            if not isinstance(when, list):
                bad.add(f"mock of {action}: 'when' is a list of {{input: ..., then: ...}}", spec.loc("when"))
                when = []
            for index, outcomes in items.items():
                if not str(index).isdigit():
                    bad.add(f"mock of {action}: item keys are item indexes (0, 1, ...), not {index!r}",
                            spec.loc("items"))
                    continue
                rules.append(MockRule(action, _outcomes(outcomes, spec.loc("items"), bad), item=int(index)))
            for cond in when:
                if (
                    not isinstance(cond, YMap)
                    or "then" not in cond
                    or not isinstance(cond.get("input") or {}, dict)
                    or not isinstance(cond.get("task", ""), str)
                ):
                    bad.add(f"mock of {action}: each 'when' entry is {{input: ..., task: ..., then: ...}}",
                            location_of(cond, spec.loc("when")))
                    continue
                _keys(cond, WHEN_KEYS, f"a 'when' of the mock of {action}", bad)
                rules.append(
                    MockRule(
                        action,
                        _outcomes(cond["then"], cond.loc("then"), bad),
                        task=cond.get("task"),
                        input=plain(cond.get("input")) if cond.get("input") is not None else None,
                    )
                )
        else:
            rules.append(MockRule(action, _outcomes(spec, at, bad)))
    return tuple(rules)


def _outcomes(doc: Any, where: Location, bad: _Problems) -> tuple[Outcome, ...]:
    entries = list(doc) if isinstance(doc, list) else [doc]
    outcomes: list[Outcome] = []
    for i, entry in enumerate(entries):
        at = location_of(entry, doc.loc(i) if isinstance(doc, YList) else where)
        if not isinstance(entry, YMap):
            bad.add("an outcome is a mapping of result, error, timeout, delay or real", at)
            continue
        _keys(entry, OUTCOME_KEYS, "an outcome", bad)
        try:
            error = entry.get("error")
            outcomes.append(
                Outcome(
                    result=plain(entry.get("result")),
                    error=None if error is None else str(error),
                    timeout=bool(entry.get("timeout", False)),
                    delay=float(entry.get("delay", 0)),
                    real=bool(entry.get("real", False)),
                )
            )
        except (TypeError, ValueError) as exc:
            bad.add(f"invalid outcome: {exc}", at)
    if not outcomes and not bad.found:
        bad.add("give at least one outcome", where)
    return tuple(outcomes)


# ----------------------------------------------------------------------------------- finding


def find_rehearsals(paths: Iterable[str | Path]) -> tuple[list[Path], list[AttuneError]]:
    """Rehearsal files named by `paths`: files themselves, or every `rehearsals/*.yaml` below."""
    files: list[Path] = []
    problems: list[AttuneError] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(
                f
                for pattern in ("*.yaml", "*.yml")
                for f in path.rglob(pattern)
                if f.parent.name == FOLDER and not any(p.startswith(".") for p in f.relative_to(path).parts)
            )
            if not found:
                problems.append(AttuneError(f"no rehearsals here (no {FOLDER}/*.yaml below it)",
                                            location=Location(str(path))))
            files.extend(found)
        else:
            problems.append(AttuneError("no such file or folder", location=Location(str(path))))
    return list(dict.fromkeys(files)), problems


def packs_of(file: Path) -> list[Path]:
    """The packs a rehearsal file runs against: every pack beside the one it belongs to."""
    pack = file.resolve().parent.parent
    return [pack.parent if (pack / "pack.yaml").is_file() else pack]


# ----------------------------------------------------------------------------------- running


async def rehearse(
    rehearsal: Rehearsal,
    packs: Sequence[str | Path],
    *,
    settings: Settings | None = None,
) -> list[str]:
    """Run one rehearsal on a fresh engine; the differences from its expectations (empty: passed)."""
    async with WorkflowTest(packs, settings=settings) as t:
        return await rehearse_on(t, rehearsal)


async def rehearse_on(t: WorkflowTest, rehearsal: Rehearsal) -> list[str]:
    """Run one rehearsal on the engine of `t` (its mocks are replaced by the rehearsal's)."""
    t.reset_mocks()
    for rule in rehearsal.mocks:
        when = subset_predicate(rule.input) if rule.input is not None else None
        t.mock(rule.action, *rule.outcomes, item=rule.item, task=rule.task, when=when)
    try:
        execution_id = await t.start(rehearsal.workflow, rehearsal.parameters, answers=rehearsal.answers)
    except AttuneError as exc:
        if rehearsal.rejected is None:
            return [f"the engine refused to run it: {exc.message}"]
        if rehearsal.rejected not in exc.message:
            return [f"rejected: expected a message containing {rehearsal.rejected!r}, "
                    f"got {exc.message!r}"]
        return []
    if rehearsal.rejected is not None:
        return [f"rejected: expected the engine to refuse the parameters "
                f"({rehearsal.rejected!r}), but it ran"]
    run = await t.finish(execution_id)
    return run.differences(rehearsal.expect)


def main(
    paths: Sequence[str | Path],
    *,
    packs: Sequence[str | Path] | None = None,
    settings: Settings | None = None,
    out: TextIO | None = None,
) -> int:
    """Run every rehearsal under `paths`: one line each, then `N passed, M failed`.

    Exit status 0 when none failed, 1 when some did, 2 when `paths` hold no rehearsal.
    """
    stream = out or sys.stdout
    files, problems = find_rehearsals(paths)
    for err in problems:
        print(f"error: {printable(err)}", file=sys.stderr)
    if problems or not files:
        return 2
    passed, failed = asyncio.run(_run_files(files, packs, settings, stream))
    print(f"{passed} passed, {failed} failed", file=stream)
    return 0 if failed == 0 else 1


async def _run_files(
    files: list[Path], packs: Sequence[str | Path] | None, settings: Settings | None, out: TextIO
) -> tuple[int, int]:
    passed = failed = 0
    for file in files:
        try:
            rehearsals = load_rehearsals(file)
        except ValidationError as exc:
            failed += 1
            print(f"ERROR {file}", file=out)
            for err in exc.errors:
                print(f"    {printable(err)}", file=out)
            continue
        # One engine per file (loading and validating packs is most of a short rehearsal's time);
        # a rehearsal that raised may have left an execution running, so the next gets a new one.
        stack = contextlib.AsyncExitStack()
        t: WorkflowTest | None = None
        for rehearsal in rehearsals:
            started = time.perf_counter()
            try:
                if t is None:
                    t = await stack.enter_async_context(
                        WorkflowTest(packs or packs_of(file), settings=settings)
                    )
                found = await rehearse_on(t, rehearsal)
            except Exception as exc:  # one broken rehearsal must not hide the others' results
                known = isinstance(exc, AttuneError | AssertionError)
                found = [printable(exc) if known else f"{type(exc).__name__}: {printable(exc)}"]
                await stack.aclose()
                t = None
            took = time.perf_counter() - started
            where = rehearsal.location or Location(str(file))
            line = f"{where.file}:{where.line} {rehearsal.name} ({rehearsal.workflow}, {took * 1000:.0f} ms)"
            if found:
                failed += 1
                print(f"FAIL  {line}", file=out)
                for difference in found:
                    print(f"    {difference}", file=out)
            else:
                passed += 1
                print(f"PASS  {line}", file=out)
        await stack.aclose()
    return passed, failed
