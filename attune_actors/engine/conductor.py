"""The conductor: the pure state machine of one workflow execution (SPEC section 3).

It consumes events (an action attempt ended, a timer fired, a nested workflow finished, pause,
resume, cancel, an inquiry was answered) and answers with `commands` for its supervisor actor to carry
out. It performs no I/O and reads no clock: every event carries `now` (epoch seconds), so its tests
feed events and assert the commands, and a supervisor can be rebuilt from its records after a crash.

Vocabulary: a *run* is one run of one task (`TaskRun`); an *attempt* is one try of a run (or of one
item of a with_items run); retries are further attempts of the same run; an *arrival* is one run's
transitions reaching a join task (several entries of one run that name the join arrive once).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import Enum, StrEnum
from math import isnan
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

from attune_actors.config import LimitSettings
from attune_actors.engine.commands import (
    CloseInquiry,
    Command,
    ControlChild,
    Dispatch,
    Finished,
    OpenInquiry,
    RunEnded,
    SetTimer,
    StartChild,
    StopRun,
    TimerKey,
    TimerKind,
)
from attune_actors.engine.graphdoc import RunMark
from attune_actors.engine.state import NO_TIME, ItemRun, Items, TaskRun, iso
from attune_actors.errors import AttuneError, ParameterError, TemplateError
from attune_actors.spec.graph import TaskGraph
from attune_actors.spec.model import (
    ENGINE_COMMANDS,
    ActionSpec,
    RetryPolicy,
    TaskSpec,
    Transition,
    WorkflowSpec,
)
from attune_actors.spec.params import apply_params
from attune_actors.statuses import (
    ABANDONED,
    CANCELED,
    CANCELING,
    DELAYED,
    FAILED,
    PAUSED,
    PAUSING,
    PENDING,
    REQUESTED,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    TERMINAL,
    TIMEOUT,
)
from attune_actors.templates import FAILED_STATUSES, LAST_RUN, LAST_RUN_FUNCTIONS, Renderer, Scope, TaskViews

log = logging.getLogger("attune_actors.engine")

T = TypeVar("T")

_COMMAND_RETRY_COUNT = 3  # `do: retry` without a retry policy (SPEC section 3)
# The conditions of `on_success`/`on_failure`/`on_timeout` (spec.workflow's sugar), written the same
# way by hand or not: the statuses that make each true. Read off the ended run instead of rendered,
# since nearly every transition has one (a render is most of a chain step's template cost).
_STATUS_CONDITIONS: dict[str, frozenset[str]] = {
    "{{ succeeded() }}": frozenset({SUCCEEDED}),
    "{{ failed() }}": frozenset(FAILED_STATUSES),
    "{{ timed_out() }}": frozenset({TIMEOUT}),
}
_DEFAULT_LIMITS = LimitSettings()
_by_seq = attrgetter("seq")
_ITEM_FAILED = (FAILED, TIMEOUT, CANCELED, ABANDONED)  # an item ended so: no new item starts


class Work(StrEnum):
    """Work that waits for the gate: a run to begin, items to fill, a retry to dispatch."""

    BEGIN = "begin"
    ITEMS = "items"
    RETRY = "retry"


class Staged(NamedTuple):
    """Work held while the execution is paused, done on resume (`item`: a with_items item)."""

    kind: Work
    run_id: str
    item: int | None


class Gate(Enum):
    """Whether new work may start now."""

    OPEN = "open"  # dispatch now
    STAGE = "stage"  # hold until resume (pausing, paused, not started)
    CLOSED = "closed"  # nothing new will start (failing, canceling, timed out)


# Members as module globals: an enum member read through its class costs several times more, and
# these are read on every transition.
_BEGIN, _ITEMS, _RETRY = Work.BEGIN, Work.ITEMS, Work.RETRY
_OPEN, _STAGE, _CLOSED = Gate.OPEN, Gate.STAGE, Gate.CLOSED
_STAGING = frozenset((PAUSING, PAUSED, REQUESTED))  # statuses in which new work waits for resume


class Barrier:
    """Arrivals at one join task not consumed yet: source task -> how many.

    `join: all` runs each time every source has one, consuming one from each. `join: N` counts
    distinct sources (values stay 1): it runs once, on the N-th; once every source has arrived the
    barrier is reset, so a join inside a loop can run again on the next round.
    """

    __slots__ = ("arrivals", "fired")

    def __init__(self, arrivals: dict[str, int] | None = None, fired: bool = False) -> None:
        self.arrivals: dict[str, int] = arrivals if arrivals is not None else {}
        self.fired = fired  # join: N only: ran in this round

    def to_record(self) -> list[Any]:
        return [dict(self.arrivals), self.fired]

    @classmethod
    def from_record(cls, rec: list[Any]) -> Barrier:
        arrivals = rec[0]
        if isinstance(arrivals, list):  # snapshots before arrival counts: a set of sources
            arrivals = dict.fromkeys(arrivals, 1)
        return cls(dict(arrivals), bool(rec[1]))


class _SystemScope(dict[str, Any]):
    """`system.*`: the execution's fixed values, and `timestamp`, the time of the current event."""

    # A weak reference: a strong one made every conductor a reference cycle, so each ended
    # execution (~46 objects) waited for a full collection instead of being freed at once.
    __slots__ = ("conductor",)
    conductor: weakref.ReferenceType[Conductor]

    def __missing__(self, key: str) -> Any:
        conductor = self.conductor() if key == "timestamp" else None
        if conductor is not None:
            return iso(conductor.now)
        raise KeyError(key)


_NO_SECRETS: frozenset[str] = frozenset()
_pack_scopes: dict[int, tuple[object, Any]] = {}  # id(pack config) -> it, its `pack` scope
_spec_plans: dict[int, tuple[object, Any]] = {}  # id(workflow spec) -> it, its `_SpecPlan`


def _shared(cache: dict[int, tuple[object, Any]], owner: object, make: Callable[[], T]) -> T:
    """What `make` builds for `owner`, built once per owner rather than once per execution."""
    found = cache.get(id(owner))
    if found is None or found[0] is not owner:
        if len(cache) >= 256:  # owners replaced over a long life (packs reloaded): forget the old
            cache.clear()
        found = cache[id(owner)] = (owner, make())
    value: T = found[1]
    return value


class _Edge:
    """One `next` entry of a task, with what following it needs worked out once per definition."""

    __slots__ = ("do", "handles", "index", "publish", "retry", "statuses", "when", "where")

    def __init__(self, where: str, index: int, tr: Transition) -> None:
        self.index = index
        self.when = tr.when
        # The statuses that make an `on_success`-like condition true (None: render `when`).
        self.statuses = _STATUS_CONDITIONS.get(tr.when) if tr.when is not None else None
        self.where = f"{where} next[{index}].when"
        self.publish = tuple(
            (name, value, f"{where} next[{index}].publish.{name}") for name, value in tr.publish
        )
        self.do = tr.do
        self.retry = "retry" in tr.do
        # Any entry that fires handles a failure, except one that only asks for a retry that will
        # not happen (attempts exhausted).
        self.handles = not self.retry or any(t != "retry" for t in tr.do)


class _TaskPlan:
    """What a transition of one task needs, worked out once per workflow definition."""

    __slots__ = ("checked", "edges", "input", "input_where", "items_where", "publish", "retry_where", "task")

    def __init__(self, ref: str, task: TaskSpec) -> None:
        where = f"{ref} task {task.name}"
        self.task = task
        # The input when it holds no template at all: each attempt gets a copy, nothing rendered.
        self.input = task.input if all(_constant(v) for v in task.input.values()) else None
        self.input_where = f"{where} input"
        self.items_where = f"{where} with_items"
        self.retry_where = f"{where} retry.when"
        self.publish = tuple((name, value, f"{where} publish.{name}") for name, value in task.publish)
        self.edges = tuple(_Edge(where, i, tr) for i, tr in enumerate(task.next))
        # A constant input checked against an action's declarations: id(action) -> the action,
        # the input with its defaults, or why it does not fit (the same on every attempt).
        self.checked: dict[int, tuple[ActionSpec, dict[str, Any] | None, str | None]] = {}

    def check(self, action: ActionSpec) -> tuple[dict[str, Any] | None, str | None]:
        """The constant input as `action` takes it (`apply_params`), or the error it gives."""
        found = self.checked.get(id(action))
        if found is None or found[0] is not action:
            if len(self.checked) >= 8:  # actions replaced (packs reloaded): forget the old
                self.checked.clear()
            try:
                found = (action, self.apply(action, self.input), None)
            except ParameterError as exc:
                found = (action, None, exc.message)
            self.checked[id(action)] = found
        return found[1], found[2]

    def apply(self, action: ActionSpec, inp: dict[str, Any] | None) -> dict[str, Any]:
        """The action's own declarations: defaults filled in, types and enums checked."""
        return apply_params(
            action.parameters,
            inp,
            owner=f"task '{self.task.name}' (action {action.ref})",
            allow_extra=action.additional_parameters,
        )


class _SpecPlan:
    """A workflow definition's task plans and fixed strings, shared by all its executions."""

    __slots__ = ("find", "output_where", "secrets", "tasks", "vars_where")

    def __init__(self, spec: WorkflowSpec) -> None:
        self.tasks: dict[str, _TaskPlan] = {}
        for top in spec.tasks:  # what `spec.task` finds first: a top-level task, then sub-tasks
            self.tasks.setdefault(top.name, _TaskPlan(spec.ref, top))
        for top in spec.tasks:
            for sub in top.tasks:
                self.tasks.setdefault(sub.name, _TaskPlan(spec.ref, sub))
        self.find = spec.task
        self.secrets = frozenset(p.name for p in spec.parameters if p.secret) or _NO_SECRETS
        self.vars_where = f"{spec.ref} vars"
        self.output_where = f"{spec.ref} output_map"


def _constant(value: Any) -> bool:
    """A scalar that renders to itself (containers are rendered, which copies them)."""
    tp = type(value)
    if tp is str:
        return not ("{{" in value or "{%" in value or "{#" in value)
    return tp is int or tp is float or tp is bool or value is None


class Conductor:
    """State and rules of one workflow execution. Not thread-safe: its supervisor owns it."""

    # Slots: 10,000 parked executions each keep one, and an instance dict of this many attributes
    # (more than CPython shares keys for) costs about 1.3 KiB more than the slots.
    __slots__ = (
        "__weakref__",
        "_actions",
        "_carried",
        "_ctx",
        "_dirty_items",
        "_dirty_runs",
        "_out",
        "_plan",
        "_plans",
        "_renderer",
        "active",
        "barriers",
        "children",
        "created_at",
        "definition",
        "ended_at",
        "ending",
        "error",
        "failing",
        "graph",
        "id",
        "in_flight",
        "latest",
        "limits",
        "now",
        "open_inquiries",
        "output",
        "parameters",
        "parent_id",
        "parent_run",
        "rerun_of",
        "runs",
        "secret_parameters",
        "seq",
        "spec",
        "staged",
        "started_at",
        "status",
        "system",
        "timers",
        "vars",
    )

    def __init__(
        self,
        *,
        execution_id: str,
        spec: WorkflowSpec,
        graph: TaskGraph,
        actions: Callable[[str], ActionSpec],
        renderer: Renderer,
        parameters: dict[str, Any],
        pack_config: Mapping[str, Any],
        system: dict[str, Any],
        kv: Any = None,
        parent_id: str | None = None,
        parent_run: tuple[str, int] | None = None,
        definition: str = "",
        created_at: float = 0.0,
        limits: LimitSettings = _DEFAULT_LIMITS,
    ) -> None:
        self.id = execution_id
        self.parent_run = parent_run  # (run id, attempt) of the parent's task this execution serves
        self.definition = definition  # digest of the workflow source this execution runs
        self.created_at = created_at
        self.rerun_of: str | None = None  # the execution this one re-runs
        self.spec = spec
        self.graph = graph
        self._actions = actions
        self._renderer = renderer
        self.limits = limits  # max_task_runs and max_items are enforced here
        self.parameters = parameters
        self.parent_id = parent_id
        self.status = REQUESTED
        self.vars: dict[str, Any] = {}
        self.output: Any = None
        self.error: dict[str, Any] | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.runs: dict[str, TaskRun] = {}  # every run, in the order created (= seq order)
        plan: _SpecPlan = _shared(_spec_plans, spec, lambda: _SpecPlan(spec))
        self._plan = plan
        self._plans = plan.tasks  # task name -> its _TaskPlan, read on every transition
        # task name -> its latest run (`task.<name>`; a task that has not run reads as nulls)
        self.latest = TaskViews(plan.find)
        # Dicts as ordered sets: an emptied dict drops its table, an emptied set keeps ~200 bytes.
        self.active: dict[str, None] = {}  # runs not terminal
        self.in_flight = 0  # attempts dispatched (actions, nested workflows) and not ended
        # runs whose nested workflow is PAUSED, or PENDING (waits on an inquiry), as it reported
        self.children: dict[str, str] = {}
        self.open_inquiries = 0  # runs `pending`: waiting for an inquiry's answer
        self._carried: dict[str, TaskRun] = {}  # task -> the run a rerun replaces (with_items)
        self.barriers: dict[str, Barrier] = {}  # join task -> arrivals not consumed
        self.timers: dict[TimerKey, float] = {}
        self.staged: list[Staged] = []
        self.failing = False  # an unhandled failure or `fail`: nothing new starts
        self.ending: str | None = None  # CANCELED or TIMEOUT once a cancel or the workflow timeout began
        self.seq = 0
        self.now = 0.0
        self._out: list[Command] = []
        self._dirty_runs: dict[str, TaskRun] = {}  # run id -> the run
        # run id -> indices of its changed items: dicts of ints, which the collector does not track
        self._dirty_items: dict[str, dict[int, None]] = {}
        # `system.timestamp` is formatted when a template reads it, not on every event.
        self.system = _SystemScope(system)
        self.system.pop("timestamp", None)
        self.system.conductor = weakref.ref(self)
        self.secret_parameters = plan.secrets
        # Scopes show keys only: `vars.items` is a variable or undefined, never a method (SPEC 7).
        self._ctx: dict[str, Any] = {
            "task": Scope(self.latest),
            "vars": Scope(self.vars),
            "parameters": Scope(parameters),
            "pack": _shared(_pack_scopes, pack_config, lambda: Scope({"config": pack_config})),
            "system": Scope(self.system),
            "kv": kv,
            # `succeeded()` & co. (shared by all executions) read the run or item whose attempt
            # just ended from LAST_RUN.
            **LAST_RUN_FUNCTIONS,
            LAST_RUN: None,
        }

    # ------------------------------------------------------------------ events (public)

    def start(self, now: float) -> list[Command]:
        """Begin the execution: render `vars`, arm the workflow timeout, launch the start tasks."""
        self.now = now
        if self.started_at is not None or self.status in TERMINAL or self.ending is not None:
            return self._flush()
        if self.status == REQUESTED:
            self.status = RUNNING  # paused before it started: it starts paused, all staged
        self.started_at = now
        try:
            self.vars.update(self._render(self.spec.vars, self._plan.vars_where))
        except TemplateError as exc:
            self._fail(str(exc), None)
        if self.spec.timeout is not None:
            self._set_timer(TimerKey(TimerKind.TIMEOUT), now + self.spec.timeout)
        if not self.failing:
            for name in self.graph.start:
                self._new_run(name)
        self._progress()
        return self._flush()

    def on_attempt_ended(
        self,
        run_id: str,
        item: int | None,
        attempt: int,
        status: str,
        result: Any,
        error: str | None,
        now: float,
    ) -> list[Command]:
        """An action attempt, nested workflow or inquiry ended. Stale or duplicate reports are ignored."""
        self.now = now
        run = self.runs.get(run_id)
        if run is None or run.status in TERMINAL:
            return self._flush()
        if item is None:
            current, attempts = run.status, run.attempts
        elif run.item_state is not None and 0 <= item < len(run.item_state.status):
            current, attempts = run.item_state.status[item], run.item_state.attempts[item]
        else:
            return self._flush()
        if attempts != attempt or current not in (RUNNING, PENDING):
            return self._flush()
        if current == RUNNING:
            self.in_flight -= 1
        if self.children:
            self.children.pop(run_id, None)
        self._attempt_ended(run, item, status, result, error)
        self._progress()
        return self._flush()

    def on_timer(self, key: TimerKey, now: float) -> list[Command]:
        """A timer set by a SetTimer command fired; timers that became moot are ignored."""
        self.now = now
        if self.timers.pop(key, None) is None or self.status in TERMINAL:
            return self._flush()
        kind = key.kind
        run = self.runs.get(key.run_id) if key.run_id is not None else None
        if kind is TimerKind.TIMEOUT:
            self._end_with(TIMEOUT, stop_running=True)
        elif run is None or run.terminal:
            pass
        elif kind is TimerKind.DELAY:
            if run.status == DELAYED:
                self._gated(run, None, _BEGIN)
        elif kind is TimerKind.RETRY:
            idx = key.item
            if idx is None:
                waiting = run.status == DELAYED
            else:
                waiting = run.item_state is not None and run.item_state.status[idx] == DELAYED
            if waiting:
                self._gated(run, idx, _RETRY)
        elif kind is TimerKind.INQUIRY:
            inquiry = run.inquiry_id
            if run.status == PENDING and inquiry is not None and inquiry == key.inquiry_id:
                self._out.append(CloseInquiry(inquiry, TIMEOUT))
                self._attempt_ended(run, None, TIMEOUT, None, "the inquiry expired unanswered")
        self._progress()
        return self._flush()

    def on_child_status(self, run_id: str, attempt: int, status: str, now: float) -> list[Command]:
        """A nested workflow paused, resumed or waits on an inquiry (`pending`), as its parent shows.

        A paused child no longer keeps its parent `pausing`; a parent whose only work in flight
        is children waiting on inquiries is `pending` itself.
        """
        self.now = now
        run = self.runs.get(run_id)
        if run is not None and run.child_id is not None and run.attempts == attempt and not run.terminal:
            if status in (PAUSED, PENDING):
                self.children[run_id] = status
            else:
                self.children.pop(run_id, None)
        self._progress()
        return self._flush()

    def answer_inquiry(self, run_id: str, inquiry_id: str, response: Any, now: float) -> list[Command]:
        """A validated response arrived: it becomes the run's result."""
        self.now = now
        run = self.runs.get(run_id)
        if run is not None and run.status == PENDING and run.inquiry_id == inquiry_id:
            self.timers.pop(TimerKey(TimerKind.INQUIRY, run_id, None, inquiry_id), None)
            self._attempt_ended(run, None, SUCCEEDED, response, None)
        self._progress()
        return self._flush()

    def pause(self, now: float) -> list[Command]:
        """Stop dispatching; `paused` once in-flight attempts end. Idempotent."""
        self.now = now
        if self.status in (RUNNING, PENDING, REQUESTED) and self.ending is None:
            self.status = PAUSING
            for child in self._children():
                self._out.append(ControlChild(child, "pause"))
        self._progress()
        return self._flush()

    def resume(self, now: float) -> list[Command]:
        """Dispatch what was staged while paused. Idempotent."""
        self.now = now
        if self.status in (PAUSING, PAUSED):
            self.status = RUNNING if self.started_at is not None else REQUESTED
            # Resumed children report again; one waiting on an inquiry stays so.
            self.children = {k: v for k, v in self.children.items() if v == PENDING}
            for child in self._children():
                self._out.append(ControlChild(child, "resume"))
            staged, self.staged = self.staged, []
            for work in staged:
                run = self.runs.get(work.run_id)
                if run is not None and not run.terminal:
                    self._gated(run, work.item, work.kind)
        self._progress()
        return self._flush()

    def cancel(self, now: float, *, force: bool = False) -> list[Command]:
        """Cancel: nothing new starts; under `cancel_running` (or `force`) running runs are stopped."""
        self.now = now
        if self.status not in TERMINAL and self.ending is None:
            stop = force or self.spec.cancellation_policy == "cancel_running"
            self._end_with(CANCELED, stop_running=stop, force=force)
        self._progress()
        return self._flush()

    def fail(self, message: str, now: float) -> list[Command]:
        """Fail from outside the workflow (its store cannot keep it): nothing new starts, and the
        execution ends failed with `message` once the attempts already running have ended."""
        self.now = now
        if self.status not in TERMINAL:
            if self.status == REQUESTED:
                self.status = RUNNING  # never started: it ends at once
            self._fail(message, None)
            self._progress()
        return self._flush()

    def abort(self, message: str, now: float) -> list[Command]:
        """End the execution `failed` at once, after an error outside the workflow's rules (a bug).

        What the interrupted step asked for is dropped; attempts in flight are told to stop, nested
        workflows are canceled, inquiries closed; every run not ended ends `canceled`. Values that
        are not plain data are replaced by a description (one of them may be what failed: a
        snapshot that could not be encoded), and every run is marked changed, since the
        interrupted step's changes may not have been saved.
        """
        self.now = now
        self._out = []
        if self.status in TERMINAL:
            return []
        self.error = {"message": message, "task": None}
        self.failing = True
        for run in self.runs.values():
            if not run.terminal:
                self._abort_run(run)
            run.result, run.error = _plain(run.result), _plain(run.error)
            self._touch(run)
            items = run.item_state
            for idx, item_status in enumerate(items.status if items is not None else ()):
                if item_status != SCHEDULED:
                    assert items is not None
                    items.result[idx], items.error[idx] = _plain(items.result[idx]), _plain(items.error[idx])
                    self._touch(run, idx)
        for name, value in self.vars.items():
            self.vars[name] = _plain(value)
        self.active.clear()
        self.open_inquiries = 0
        self.staged.clear()
        self.children.clear()
        self.in_flight = 0
        self.output = _plain(self.output)
        self.status = FAILED
        self.ended_at = now
        self.timers.clear()
        self._out.append(Finished(FAILED))
        return self._flush()

    def _abort_run(self, run: TaskRun) -> None:
        if run.status == PENDING and run.inquiry_id is not None:
            self._out.append(CloseInquiry(run.inquiry_id, CANCELED))
        elif run.status == RUNNING and run.child_id is not None:
            self._out.append(ControlChild(run.child_id, "cancel", force=True))
        elif run.status == RUNNING and run.item_state is None:
            self._out.append(StopRun(run.id, None, run.attempts))
        items = run.item_state
        for idx, item_status in enumerate(items.status if items is not None else ()):
            assert items is not None
            if item_status == RUNNING:
                self._out.append(StopRun(run.id, idx, items.attempts[idx]))
            if item_status not in TERMINAL:
                items.status[idx], items.ended_at[idx] = CANCELED, self.now
                items.input.pop(idx, None)
        run.status, run.ended_at, run.input = CANCELED, self.now, None
        self._out.append(RunEnded(run.id))

    def rerun(self, tasks: list[str] | None, now: float, *, reset_items: bool = False) -> list[Command]:
        """Run a failed, timed-out or canceled execution again from its failed tasks (or `tasks`).

        Each rerun task gets a new run (new run id: no attempt key is ever reused); completed runs
        and their results stay. A with_items task keeps its succeeded items and runs only the
        others, unless `reset_items`. The workflow then carries on through the transitions.
        """
        self.now = now
        if tasks is None:
            tasks = [
                name
                for name, run in self.latest.items()
                if run.group is None
                and run.status in (FAILED, TIMEOUT, CANCELED, ABANDONED)
                and not run.handled
            ]
        self.status, self.error, self.output, self.ended_at = RUNNING, None, None, None
        self.failing, self.ending = False, None
        self.staged.clear()
        if self.spec.timeout is not None:
            self._set_timer(TimerKey(TimerKind.TIMEOUT), now + self.spec.timeout)
        for name in tasks:
            old = self.latest.get(name)
            if old is not None and old.group is not None:
                name = self.runs[old.group].task  # a sub-task reruns with its group
                old = self.latest.get(name)
            if old is not None and old.item_state is not None and not reset_items:
                self._carried[name] = old
            self._new_run(name)
        self._progress()
        return self._flush()

    def _cause(self, run: TaskRun) -> str:
        """`, after task 'x' failed: why`: the failure that led to a `fail` command (the run's own,
        else the latest handled failure before it), or nothing when none did."""
        failed = (FAILED, TIMEOUT, ABANDONED)
        cause = run if run.status in failed else None
        if cause is None:
            earlier = [r for r in self.runs.values() if r.seq < run.seq and r.status in failed and r.handled]
            cause = earlier[-1] if earlier else None
        if cause is None:
            return ""
        return f", after task '{cause.task}' {cause.status}: {cause.error or 'no error message'}"

    def _carry_items(self, run: TaskRun) -> None:
        """A rerun with_items run keeps the items its predecessor completed."""
        old = self._carried.pop(run.task, None)
        if old is None or old.item_state is None or run.item_state is None:
            return
        prev, new = old.item_state, run.item_state
        for idx, prev_status in enumerate(prev.status[: len(new)]):
            if prev_status == SUCCEEDED:
                new.status[idx], new.result[idx] = SUCCEEDED, prev.result[idx]
                new.attempts[idx] = prev.attempts[idx]
                new.started_at[idx], new.ended_at[idx] = prev.started_at[idx], prev.ended_at[idx]
                self._touch(run, idx)

    # ------------------------------------------------------------------ snapshot support

    def take_dirty(self) -> tuple[list[TaskRun], list[tuple[str, int, ItemRun]]]:
        """Runs and items changed since the last call (the snapshot delta besides the header)."""
        runs, items = self.take_changes()
        return runs, list(self.item_views(items))

    def take_changes(self) -> tuple[list[TaskRun], dict[str, dict[int, None]]]:
        """Runs changed since the last call, in start order, and the indices of changed items by
        run id (`item_views` makes them what a snapshot step saves)."""
        dirty = self._dirty_runs
        if not dirty:
            runs: list[TaskRun] = []
        else:
            runs = list(dirty.values())
            if len(runs) > 1:
                runs.sort(key=_by_seq)
            dirty.clear()
        items, self._dirty_items = self._dirty_items, {}
        return runs, items

    def item_views(self, items: Mapping[str, Iterable[int]]) -> Iterator[tuple[str, int, ItemRun]]:
        """A view of each item in `items`, one at a time: a list of a burst's thousand views
        would outlive young garbage collections, and a full collection follows every few."""
        for run_id, indices in items.items():
            state = self.runs[run_id].item_state
            if state is not None:
                for idx in indices:
                    yield run_id, idx, ItemRun(state, idx)

    def header(self) -> dict[str, Any]:
        """The execution-level record: everything but runs and items."""
        return {**self.header_base(), **self.header_step()}

    def header_base(self) -> dict[str, Any]:
        """The header's fields that no step changes (the runtime encodes them once)."""
        return {
            "id": self.id,
            "ref": self.spec.ref,
            "parent_id": self.parent_id,
            "parent_run": list(self.parent_run) if self.parent_run else None,
            "rerun_of": self.rerun_of,
            "definition": self.definition,
            "created_at": self.created_at,
            "system": self.system,  # read-only once built
        }

    def header_step(self) -> dict[str, Any]:
        """The header's fields a step may change (a new dict: the snapshot masks some of its values)."""
        # The collections are mostly empty: no comprehension (a function call each) for those.
        children, barriers, timers, staged = self.children, self.barriers, self.timers, self.staged
        return {
            "status": self.status,
            "vars": self.vars,
            "output": self.output,
            "error": self.error,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "seq": self.seq,
            "inflight": self.in_flight,
            "paused_children": self._child_ids(PAUSED) if children else [],
            "waiting_children": self._child_ids(PENDING) if children else [],
            "failing": self.failing,
            "ending": self.ending,
            "barriers": {k: b.to_record() for k, b in barriers.items()} if barriers else {},
            "timers": [[k.to_record(), at] for k, at in timers.items()] if timers else [],
            "staged": [[w.kind.value, w.run_id, w.item] for w in staged] if staged else [],
        }

    def _child_ids(self, status: str) -> list[str]:
        return sorted(k for k, v in self.children.items() if v == status)

    def restore(
        self,
        header: dict[str, Any],
        runs: list[dict[str, Any]],
        items: list[tuple[str, int, list[Any]]],
    ) -> None:
        """Rebuild state from snapshot records (the inverse of header/take_dirty)."""
        self.status = header["status"]
        self.rerun_of = header.get("rerun_of")
        self.vars.update(header["vars"])
        self.output, self.error = header["output"], header["error"]
        self.started_at, self.ended_at = header["started_at"], header["ended_at"]
        self.seq, self.in_flight = header["seq"], header["inflight"]
        self.children = dict.fromkeys(header["paused_children"], PAUSED)
        self.children.update(dict.fromkeys(header.get("waiting_children", ()), PENDING))
        self.failing, self.ending = header["failing"], header["ending"]
        self.barriers = {k: Barrier.from_record(v) for k, v in header["barriers"].items()}
        self.timers = {TimerKey.from_record(k): at for k, at in header["timers"]}
        self.staged = [Staged(Work(w[0]), w[1], w[2]) for w in header["staged"]]
        for rec in sorted(runs, key=lambda r: r["seq"]):
            run = TaskRun.from_record(rec)
            self.runs[run.id] = run
            self.latest[run.task] = run
            if not run.terminal:
                self.active[run.id] = None
                if run.status == PENDING:
                    self.open_inquiries += 1
        for run_id, idx, item in items:
            owner = self.runs[run_id].item_state
            if owner is not None:
                owner.load(idx, item)
        for run in self.runs.values():
            state = run.item_state
            if state is not None and not run.terminal:
                started = [i for i, st in enumerate(state.status) if st != SCHEDULED]
                run.next_item = max(started) + 1 if started else 0
                run.inflight = sum(1 for st in state.status if st in (RUNNING, DELAYED))
                if run.error is None:
                    bad = next(
                        (i for i, st in enumerate(state.status) if st in _ITEM_FAILED),
                        None,
                    )
                    if bad is not None:
                        run.error = f"item {bad}: {state.error[bad]}"
                        run.next_item = len(state)

    def recovery_commands(self, now: float, *, new_attempts: bool = False) -> list[Command]:
        """After `restore`: re-arm timers and re-issue what was in flight when the engine stopped.

        Attempts whose outcome was not recorded go out again with the same run id and attempt, so
        actions and workers can deduplicate, or, with `new_attempts` (the attempts died with the
        engine that ran them), as the next attempt, counted in `attempts`. An attempt whose
        outcome was recorded is terminal in the records and is never dispatched again. Nested
        workflows are resumed (or started, if the child had not saved anything yet) and pending
        inquiries are opened again.
        """
        if self.started_at is None:
            return self.start(now)  # accepted, then stopped before its first step: start it now
        self.now = now
        for key, at in self.timers.items():
            self._out.append(SetTimer(key, at))
        for run_id in sorted(self.active, key=lambda r: self.runs[r].seq):
            run = self.runs[run_id]
            task = self._task_spec(run.task)
            if task.is_parallel or task.action is None:
                continue
            state = run.item_state
            if state is not None:
                for idx in sorted(state.input):
                    if state.status[idx] == RUNNING:
                        if new_attempts:
                            state.attempts[idx] += 1
                            self._touch(run, idx)
                        self._out.append(
                            Dispatch(
                                run.id,
                                run.task,
                                idx,
                                state.attempts[idx],
                                self._actions(task.action),
                                state.input[idx],
                                ItemRun(state, idx).deadline,
                            )
                        )
                continue
            if run.input is None:
                continue
            action = self._actions(task.action)
            if run.status == RUNNING and run.child_id is not None:
                self._out.append(StartChild(run.id, run.task, run.attempts, run.child_id, action, run.input))
            elif run.status == RUNNING:
                if new_attempts:
                    run.attempts += 1
                    self._touch(run)
                self._out.append(
                    Dispatch(run.id, run.task, None, run.attempts, action, run.input, run.deadline)
                )
            elif run.status == PENDING and run.inquiry_id is not None:
                expires = self.timers.get(TimerKey(TimerKind.INQUIRY, run.id, None, run.inquiry_id))
                self._out.append(OpenInquiry(run.id, run.task, run.inquiry_id, run.input, expires))
        self._progress()
        return self._flush()

    # ------------------------------------------------------------------ documents

    def document(self, mask: Callable[[Any], Any] | None = None) -> dict[str, Any]:
        """The execution document (SPEC section 6) as it is now."""
        doc = {
            "id": self.id,
            "ref": self.spec.ref,
            "status": self.status,
            "parameters": self.parameters,
            "output": self.output,
            "error": self.error,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "parent_id": self.parent_id,
            "rerun_of": self.rerun_of,
            "tasks": [run.document() for run in self.runs.values()],
        }
        return mask(doc) if mask is not None else doc

    def run_marks(self) -> list[RunMark]:
        """Each run's task, status and fired transitions, in start order (for the graph document)."""
        return [RunMark(run.task, run.status, run.fired) for run in self.runs.values()]

    # ------------------------------------------------------------------ internals

    def _flush(self) -> list[Command]:
        # A copy, and the list kept: a new list kept per event until the next one outlives the
        # young collections meanwhile (1,000 executions interleave) and the collector promotes it.
        out = self._out
        if not out:
            return []
        commands = out.copy()
        out.clear()
        return commands

    def _children(self) -> list[str]:
        return [
            r.child_id
            for r in (self.runs[i] for i in self.active)
            if r.child_id is not None and r.status == RUNNING
        ]

    def _task_spec(self, name: str) -> TaskSpec:
        plan = self._plans.get(name)
        assert plan is not None, name
        return plan.task

    def _render(self, value: Any, where: str, *, item: Any = None, index: int | None = None) -> Any:
        """Render `value`; `where` names it in errors, the workflow's ref first (the plans' strings)."""
        if index is None:
            return self._renderer.render(value, self._ctx, where=where)
        ctx = self._ctx
        ctx["item"] = item
        ctx["index"] = index
        try:
            return self._renderer.render(value, ctx, where=where)
        finally:
            del ctx["item"], ctx["index"]

    def _truthy(self, source: str | None, where: str) -> bool:
        if source is None:
            return True
        statuses = _STATUS_CONDITIONS.get(source)
        if statuses is not None:  # what `succeeded()` & co. answer from the context, without a render
            return getattr(self._ctx[LAST_RUN], "status", None) in statuses
        return self._renderer.truthy(source, self._ctx, where=where)

    def _gate(self) -> Gate:
        if self.failing or self.ending is not None:
            return _CLOSED
        if self.status in _STAGING:
            return _STAGE
        return _OPEN

    def _set_timer(self, key: TimerKey, at: float) -> None:
        self.timers[key] = at
        self._out.append(SetTimer(key, at))

    def _touch(self, run: TaskRun, idx: int | None = None) -> None:
        # An item's change dirties only the item: rewriting a with_items run's record (its item
        # list included) per item would make big item lists quadratic. The run's counters are
        # derived from its items again on restore.
        if idx is None:
            self._dirty_runs[run.id] = run
        else:
            dirty = self._dirty_items.get(run.id)
            if dirty is None:
                dirty = self._dirty_items[run.id] = {}
            dirty[idx] = None

    # -- creating and starting runs ------------------------------------------------------------

    def _new_run(self, name: str, group: str | None = None) -> None:
        task = self._plans[name].task
        if group is None:  # a parallel group's runs are counted when the group is created
            limit = self.limits.max_task_runs
            total = len(self.runs) + 1 + len(task.tasks)
            if total > limit:
                self._fail(
                    f"task '{name}' would be task run {total} of this execution, which exceeds "
                    f"limits.max_task_runs ({limit})",
                    name,
                )
                return
        seq = self.seq = self.seq + 1
        run_id = f"{self.id}.{seq}"
        run = TaskRun(run_id, name, seq, group)
        self.runs[run_id] = run
        self.latest[name] = run
        self.active[run_id] = None
        self._dirty_runs[run_id] = run
        if task.delay:
            run.status = DELAYED
            self._set_timer(TimerKey(TimerKind.DELAY, run.id), self.now + task.delay)
        else:
            self._gated(run, None, _BEGIN)

    def _gated(self, run: TaskRun, idx: int | None, kind: Work) -> None:
        """Do `kind` for the run now, stage it for resume, or drop it, as the gate says."""
        if self.failing or self.ending is not None or self.status in _STAGING:
            if self._gate() is _STAGE:
                work = Staged(kind, run.id, idx)
                if work not in self.staged:
                    self.staged.append(work)
            else:
                self._abort(run, idx, kind)
            return
        if kind is _BEGIN:
            self._begin(run)
        elif kind is _ITEMS:
            self._fill_items(run)
        else:
            self._attempt(run, idx)

    def _abort(self, run: TaskRun, idx: int | None, kind: Work) -> None:
        """Work that will never start: a run that never began ends canceled; a retry ends as it failed."""
        if kind is _BEGIN:
            self._close_run(run, CANCELED if run.started_at is None else FAILED)
        elif kind is _RETRY:
            if idx is None:
                result, error = run.result, run.error
            else:
                assert run.item_state is not None
                result, error = run.item_state.result[idx], run.item_state.error[idx]
            self._attempt_ended(run, idx, FAILED, result, error, retry=False)
        else:
            self._maybe_finish_items(run)

    def _begin(self, run: TaskRun) -> None:
        task = self._plans[run.task].task
        run.status = RUNNING
        run.started_at = self.now
        self._dirty_runs[run.id] = run
        if task.type == "parallel":
            run.pending_subs = len(task.tasks)
            for sub in task.tasks:
                self._new_run(sub.name, group=run.id)
            return
        if task.with_items is not None:
            try:
                items = self._render(task.with_items, self._plans[task.name].items_where)
            except TemplateError as exc:
                self._template_failure(run, exc)
                return
            if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):
                self._template_failure(
                    run,
                    TemplateError(
                        f"{self.spec.ref} task {task.name} with_items must render to a list, "
                        f"got {type(items).__name__}"
                    ),
                )
                return
            limit = self.limits.max_items
            if len(items) > limit:  # checked before any per-item state exists
                self._template_failure(
                    run,
                    AttuneError(
                        f"task '{task.name}': with_items has {len(items)} items, which exceeds "
                        f"limits.max_items ({limit})"
                    ),
                )
                return
            run.item_state = Items(len(items))
            run.input = {"items": list(items)}  # kept until the run ends, to render items after a crash
            self._carry_items(run)
            if not items:
                self._close_run(run, SUCCEEDED, result=[])
                return
            self._fill_items(run)
            return
        self._attempt(run, None)

    def _fill_items(self, run: TaskRun) -> None:
        task = self._task_spec(run.task)
        state = run.item_state
        assert state is not None
        count = len(state.status)
        limit = task.batch_size or count
        while run.next_item < count and run.inflight < limit:
            gate = self._gate()
            if gate is not _OPEN:
                work = Staged(_ITEMS, run.id, None)
                if gate is _STAGE and work not in self.staged:
                    self.staged.append(work)
                break
            idx = run.next_item
            run.next_item += 1
            if state.status[idx] != SCHEDULED:
                continue  # kept from the run a rerun replaces
            run.inflight += 1
            self._attempt(run, idx)
            if run.terminal:
                return
        self._maybe_finish_items(run)

    def _attempt(self, run: TaskRun, idx: int | None) -> None:
        """Dispatch the next attempt of the run (or of one of its items)."""
        plan = self._plans[run.task]
        task = plan.task
        assert task.action is not None
        try:
            action = self._actions(task.action)
        except AttuneError as exc:
            self._template_failure(run, exc)
            return
        constant = plan.input
        if constant is not None:
            inp = constant.copy()  # no template in it: what rendering would give
        else:
            try:
                if idx is None:
                    inp = self._renderer.render(task.input, self._ctx, where=plan.input_where)
                else:
                    assert run.input is not None
                    inp = self._render(task.input, plan.input_where, item=run.input["items"][idx], index=idx)
            except TemplateError as exc:
                if idx is None:
                    self._template_failure(run, exc)
                else:
                    self._item_failure(run, idx, exc)
                return
        state = run.item_state
        if idx is None:
            run.attempts += 1
            run.status = RUNNING
            if run.started_at is None:
                run.started_at = self.now
            attempt = run.attempts
        else:
            assert state is not None
            attempt = state.attempts[idx] = state.attempts[idx] + 1
            state.status[idx] = RUNNING
            if isnan(state.started_at[idx]):
                state.started_at[idx] = self.now
        self._touch(run, idx)
        # The action's own declarations: defaults filled in, types and enums checked. An action
        # that declares nothing and takes anything takes the input as it is (a new dict already).
        if action.runner_type != "workflow" and (action.parameters or not action.additional_parameters):
            if constant is not None:  # checked once per action: the same answer every attempt
                checked, problem = plan.check(action)
                if checked is not None:
                    inp = checked.copy()
            else:
                try:
                    inp, problem = plan.apply(action, inp), None
                except ParameterError as exc:
                    problem = exc.message
            if problem is not None:
                self._attempt_ended(run, idx, FAILED, None, problem, retry=False)
                return
        if idx is None:
            run.input = inp
        else:
            state.input[idx] = inp  # type: ignore[union-attr]
        if action.runner_type == "workflow":
            run.child_id = f"{run.id}-{run.attempts}"
            self.in_flight += 1
            self._out.append(StartChild(run.id, run.task, run.attempts, run.child_id, action, inp))
        elif action.runner_type == "inquiry" and idx is None:
            run.status = PENDING
            run.inquiry_id = f"{run.id}-q{run.attempts}"
            self.open_inquiries += 1
            # The task's `timeout` bounds an inquiry as it bounds any attempt; the earlier wins.
            limits = [
                float(t) for t in (inp.get("timeout"), task.timeout)
                if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0
            ]
            expires = self.now + min(limits) if limits else None
            if expires is not None:
                self._set_timer(TimerKey(TimerKind.INQUIRY, run.id, None, run.inquiry_id), expires)
            self._out.append(OpenInquiry(run.id, run.task, run.inquiry_id, inp, expires))
        else:
            timeout = task.timeout if task.timeout is not None else action.timeout
            deadline = self.now + timeout if timeout else None
            if idx is None:
                run.deadline = deadline
            else:
                state.deadline[idx] = NO_TIME if deadline is None else deadline  # type: ignore[union-attr]
            self.in_flight += 1
            self._out.append(Dispatch(run.id, run.task, idx, attempt, action, inp, deadline))

    def _template_failure(self, run: TaskRun, exc: AttuneError) -> None:
        """A template (or action lookup) failed: the run fails and so does the workflow."""
        self._fail(exc.message, run.task)
        run.error = exc.message
        self._close_run(run, FAILED, result=None, keep_error=True)

    def _item_failure(self, run: TaskRun, idx: int, exc: AttuneError) -> None:
        """An item's input failed to render: the item fails before dispatch, and the workflow fails."""
        state = run.item_state
        assert state is not None
        self._fail(exc.message, run.task)
        state.status[idx], state.error[idx], state.ended_at[idx] = FAILED, exc.message, self.now
        run.inflight -= 1
        if run.error is None:
            run.error = f"item {idx}: {exc.message}"
        run.next_item = len(state)
        self._touch(run, idx)
        self._maybe_finish_items(run)

    # -- ending attempts and runs --------------------------------------------------------------

    def _attempt_ended(
        self,
        run: TaskRun,
        idx: int | None,
        status: str,
        result: Any,
        error: str | None,
        *,
        retry: bool = True,
    ) -> None:
        """An attempt of the run (`idx` None) or of its item `idx` ended: retry, or end it."""
        if idx is not None:
            self._item_ended(run, idx, status, result, error, retry)
            return
        run.result = result
        run.error = error
        if run.status == PENDING:
            self.open_inquiries -= 1
        run.status = status  # `retry.when` sees the attempt as it ended (SPEC 7)
        self._ctx[LAST_RUN] = run
        # A vanished worker (`abandoned`) is retried like a failure; with no retry left it stays abandoned.
        if retry and status in FAILED_STATUSES and self._should_retry(run, run.attempts):
            run.status = DELAYED
            self._retry_later(run, None, run.attempts)
            return
        run.ended_at = self.now
        run.input = None
        self._dirty_runs[run.id] = run
        self._run_ended(run)

    def _item_ended(
        self, run: TaskRun, idx: int, status: str, result: Any, error: str | None, retry: bool
    ) -> None:
        state = run.item_state
        assert state is not None
        state.result[idx] = result
        state.error[idx] = error
        state.status[idx] = status
        self._ctx[LAST_RUN] = ItemRun(state, idx)
        if retry and status in FAILED_STATUSES and self._should_retry(run, state.attempts[idx]):
            state.status[idx] = DELAYED
            self._retry_later(run, idx, state.attempts[idx])
            return
        state.ended_at[idx] = self.now
        state.input.pop(idx, None)
        self._touch(run, idx)
        run.inflight -= 1
        if status != SUCCEEDED and run.error is None:
            run.error = f"item {idx}: {error or status}"
            run.next_item = len(state)  # no new item starts after a failure
        self._fill_items(run)

    def _retry_later(self, run: TaskRun, idx: int | None, attempts: int) -> None:
        task = self._task_spec(run.task)
        policy = task.retry or RetryPolicy(count=_COMMAND_RETRY_COUNT)
        delay = policy.delay_before(attempts)
        self._touch(run, idx)
        if delay > 0:
            self._set_timer(TimerKey(TimerKind.RETRY, run.id, idx), self.now + delay)
        else:
            self._gated(run, idx, _RETRY)

    def _should_retry(self, run: TaskRun, attempts: int) -> bool:
        task = self._task_spec(run.task)
        policy = task.retry
        if policy is None or self.failing or self.ending is not None:
            return False
        if attempts > policy.count:
            return False
        if policy.when is not None:
            try:
                return self._truthy(policy.when, self._plans[task.name].retry_where)
            except TemplateError as exc:
                self._fail(str(exc), task.name)
                return False
        return True

    def _maybe_finish_items(self, run: TaskRun) -> None:
        state = run.item_state
        if run.terminal or state is None or run.inflight > 0:
            return
        remaining = run.next_item < len(state)
        if remaining and run.error is None and not self.failing and self.ending is None:
            return  # staged: more items run on resume
        statuses = state.status
        if SCHEDULED in statuses:
            for idx, item_status in enumerate(statuses):
                if item_status == SCHEDULED:  # never started: its result stays null
                    statuses[idx] = CANCELED
                    self._touch(run, idx)
        failed = statuses.count(SUCCEEDED) + statuses.count(CANCELED) != len(statuses)
        # Items left unrun without a failure: the run was canceled (cancel or workflow timeout).
        status = FAILED if failed else CANCELED if remaining else SUCCEEDED
        self._close_run(run, status, result=list(state.result), keep_error=True)

    def _close_run(self, run: TaskRun, status: str, *, result: Any = None, keep_error: bool = False) -> None:
        run.status = status
        run.result = result
        if not keep_error:
            run.error = None
        run.ended_at = self.now
        self._touch(run)
        self._run_ended(run)

    def _run_ended(self, run: TaskRun) -> None:
        self.active.pop(run.id, None)
        run.input = None
        if run.group is not None:
            self._out.append(RunEnded(run.id))
            group = self.runs[run.group]
            group.pending_subs -= 1
            self._touch(group)
            if group.pending_subs == 0 and not group.terminal:
                subs = [self.latest[s.name] for s in self._task_spec(group.task).tasks]
                bad = next((s for s in subs if s.status != SUCCEEDED), None)
                group.status = SUCCEEDED if bad is None else FAILED
                group.result = {s.task: s.result for s in subs}
                group.error = None if bad is None else f"{bad.task} {bad.status}: {bad.error}"
                group.ended_at = self.now
                self._run_ended(group)
            return
        if self.ending is None:
            self._transitions(run)
        if run.status in TERMINAL:  # not reopened by `do: retry`
            self._out.append(RunEnded(run.id))

    def _transitions(self, run: TaskRun) -> None:
        """Publish and follow the run's `next` entries (SPEC sections 3 and 7)."""
        plan = self._plans[run.task]
        task = plan.task
        ctx = self._ctx
        ctx[LAST_RUN] = run
        status = run.status
        failed = status != SUCCEEDED
        run.handled = False  # for a failed run: whether a transition handled it
        targets: list[str] = []
        taken: list[int] = []
        try:
            if not failed and plan.publish:
                self._publish(plan.publish)
            # In order: each entry's `when` sees what the entries before it published.
            for edge in plan.edges:
                if edge.when is not None:
                    statuses = edge.statuses
                    if statuses is not None:  # `succeeded()` & co.: the ended run's status, no render
                        if status not in statuses:
                            continue
                    elif not self._renderer.truthy(edge.when, ctx, where=edge.where):
                        continue
                if failed and edge.retry and run.item_state is None and not self.failing:
                    limit = task.retry.count if task.retry else _COMMAND_RETRY_COUNT
                    if run.attempts <= limit:
                        self._reopen(run)
                        return
                if edge.publish:
                    self._publish(edge.publish)
                taken.append(edge.index)
                if failed and edge.handles:
                    run.handled = True
                targets += edge.do
        except TemplateError as exc:
            self._fail(exc.message, task.name)
            return
        run.fired = tuple(taken)  # what the execution graph shows as taken edges
        joins = self.graph.barrier
        joined: set[str] = set()
        for target in targets:
            if self.failing or self.ending is not None:
                break
            if target in ENGINE_COMMANDS:
                continue
            if target not in joins:
                self._new_run(target)  # each satisfied transition starts its own run
            elif target not in joined:  # several entries of one run arrive at a join once
                joined.add(target)
                self._arrive(task.name, target)
        # `fail` last, as Orquesta does: the tasks it is sent with (a cleanup) run all the same.
        if "fail" in targets:
            self._fail(f"task '{task.name}' ran the fail command{self._cause(run)}", task.name)
        if failed and not run.handled:
            self._fail(f"task '{task.name}' {run.status}: {run.error or 'no error message'}", task.name)

    def _reopen(self, run: TaskRun) -> None:
        """`do: retry`: the ended run becomes active again for another attempt."""
        task = self._task_spec(run.task)
        policy = task.retry or RetryPolicy(count=_COMMAND_RETRY_COUNT)
        self.active[run.id] = None
        run.status = DELAYED
        run.ended_at = None
        self._touch(run)
        delay = policy.delay_before(run.attempts)
        if delay > 0:
            self._set_timer(TimerKey(TimerKind.RETRY, run.id), self.now + delay)
        else:
            self._gated(run, None, _RETRY)

    def _publish(self, pairs: tuple[tuple[str, Any, str], ...]) -> None:
        """Render each (name, value, where) into `vars`, in order: later ones see earlier ones."""
        render, ctx, variables = self._renderer.render, self._ctx, self.vars
        for name, value, where in pairs:
            variables[name] = render(value, ctx, where=where)

    def _arrive(self, source: str, target: str) -> None:
        """A run of `source` arrives at the join task `target`: run it when its barrier is met."""
        need = self.graph.barrier[target]
        barrier = self.barriers.get(target)
        if barrier is None:
            barrier = self.barriers[target] = Barrier()
        arrivals = barrier.arrivals
        inbound = self.graph.inbound[target]
        run = False
        if self._task_spec(target).join == "all":
            arrivals[source] = arrivals.get(source, 0) + 1
            if len(arrivals) == len(inbound):  # every source has an arrival: consume one each
                for name in inbound:
                    if arrivals[name] > 1:
                        arrivals[name] -= 1
                    else:
                        del arrivals[name]
                run = True
        else:
            arrivals[source] = 1
            if not barrier.fired and len(arrivals) >= need:
                barrier.fired = run = True
            if barrier.fired and len(arrivals) >= len(inbound):
                arrivals.clear()  # every source arrived: a loop may join again
                barrier.fired = False
        if not arrivals and not barrier.fired:
            del self.barriers[target]
        # Last: the new run may end at once (no items, a template error) and arrive here again.
        if run:
            self._new_run(target)

    def _fail(self, message: str, task: str | None) -> None:
        """An unhandled failure: remember the first, stop starting anything new."""
        if self.error is None:
            self.error = {"message": message, "task": task}
        if not self.failing:
            self.failing = True
            log.info("execution %s failing: %s", self.id, message, extra={"task": task or "-"})
            self._drop_staged()

    def _drop_staged(self) -> None:
        staged, self.staged = self.staged, []
        for work in staged:
            run = self.runs.get(work.run_id)
            if run is not None and not run.terminal:
                self._abort(run, work.item, work.kind)
        for run_id in list(self.active):
            run = self.runs[run_id]
            if run.status == DELAYED and run.started_at is None:
                self._close_run(run, CANCELED)

    def _end_with(self, status: str, *, stop_running: bool, force: bool = False) -> None:
        """Cancel or workflow timeout: nothing new starts; running attempts stop when asked to."""
        self.ending = status
        if status == CANCELED:
            self.status = CANCELING
        self._drop_staged()
        for run_id in sorted(self.active, key=lambda r: self.runs[r].seq):
            run = self.runs[run_id]
            if run.terminal or (run.group is not None and stop_running):
                continue  # sub-task runs are stopped with their group below
            if run.status == PENDING and run.inquiry_id is not None:
                self._out.append(CloseInquiry(run.inquiry_id, CANCELED))
                self._attempt_ended(run, None, CANCELED, None, "canceled", retry=False)
            elif run.child_id is not None and run.status == RUNNING:
                # The child is canceled with the same policy and reports back when it ends.
                self._out.append(ControlChild(run.child_id, "cancel", force=stop_running or force))
            elif stop_running:
                self._stop_run(run)
            else:
                self._drop_waits(run)

    def _drop_waits(self, run: TaskRun) -> None:
        """Attempts waiting for a retry will not get it: they end as their last attempt did."""
        state = run.item_state
        if state is not None:
            for idx, item_status in enumerate(state.status):
                if item_status == DELAYED:
                    self._attempt_ended(run, idx, FAILED, state.result[idx], state.error[idx], retry=False)
            self._maybe_finish_items(run)
        elif run.status == DELAYED:
            self._abort(run, None, _RETRY if run.started_at is not None else _BEGIN)

    def _stop_run(self, run: TaskRun) -> None:
        task = self._task_spec(run.task)
        if task.is_parallel:
            for sub in [r for r in self.runs.values() if r.group == run.id and not r.terminal]:
                if sub.child_id is not None and sub.status == RUNNING:
                    self._out.append(ControlChild(sub.child_id, "cancel", force=True))
                else:
                    self._stop_run(sub)
            return
        state = run.item_state
        if state is not None:
            for idx, item_status in enumerate(state.status):
                if item_status == RUNNING:
                    self.in_flight -= 1
                    self._out.append(StopRun(run.id, idx, state.attempts[idx]))
                    self._attempt_ended(run, idx, CANCELED, None, "canceled", retry=False)
                elif item_status == DELAYED:
                    self._attempt_ended(run, idx, CANCELED, state.result[idx], state.error[idx], retry=False)
            self._maybe_finish_items(run)
        elif run.status == RUNNING:
            self.in_flight -= 1
            self._out.append(StopRun(run.id, None, run.attempts))
            self._attempt_ended(run, None, CANCELED, None, "canceled", retry=False)
        elif run.status == DELAYED:
            self._abort(run, None, _RETRY if run.started_at is not None else _BEGIN)
        elif run.status == SCHEDULED:
            self._close_run(run, CANCELED)

    def _progress(self) -> None:
        """Settle the workflow status after an event: paused, pending, finished, or still going."""
        if self.status in TERMINAL or self.status == REQUESTED:
            return
        if self.status == PAUSING and self.in_flight - self._children_in(PAUSED) <= 0:
            self.status = PAUSED
        if self.barriers:
            self._check_joins()
        if self.active:
            # `pending`: all that is in flight waits for people (inquiries, here or nested).
            if self.open_inquiries or self.children:
                if self.status == RUNNING or self.status == PENDING:
                    waiting = self.in_flight <= self._children_in(PENDING)
                    self.status = PENDING if waiting else RUNNING
            elif self.status == PENDING:
                self.status = RUNNING
            return
        if self.status == PAUSED and self.staged:
            return
        self._finish()

    def _children_in(self, status: str) -> int:
        return sum(1 for s in self.children.values() if s == status) if self.children else 0

    def _check_joins(self) -> None:
        """Fail on a join that is partly satisfied and that the active runs can no longer satisfy.

        Checked after every event, also when nothing else is left running (SPEC 7, Joins).
        """
        if self.failing or self.ending is not None:
            return
        graph = self.graph
        live: set[str] | None = None  # the tasks that may still run: the active ones and what they reach
        for target, barrier in self.barriers.items():
            if barrier.fired or not barrier.arrivals:
                continue
            if live is None:
                live = self._live_tasks()
            missing = graph.inbound[target] - barrier.arrivals.keys()
            lost = sorted(missing - live)
            if self._task_spec(target).join == "all":
                need = len(missing)
            else:
                need = graph.barrier[target] - len(barrier.arrivals)
            if len(missing) - len(lost) < need:
                self._fail(
                    f"unreachable join: task '{target}' waits for {', '.join(lost)}, "
                    "which can no longer run",
                    target,
                )
                return

    def _live_tasks(self) -> set[str]:
        """The top-level tasks of active runs (a sub-task run counts as its group: the group's
        transitions are what reach on), and every task those can reach (`graph.can_reach`)."""
        runs, reach = self.runs, self.graph.reach
        live = set()
        for run_id in self.active:
            run = runs[run_id]
            live.add(run.task if run.group is None else runs[run.group].task)
        for name in list(live):
            live |= reach.get(name, frozenset())
        return live

    def _finish(self) -> None:
        status = self.ending or (FAILED if self.failing else SUCCEEDED)
        self._ctx[LAST_RUN] = None
        if self.spec.output_map is not None:
            try:
                self.output = self._render(self.spec.output_map, self._plan.output_where)
            except TemplateError as exc:
                if self.error is None:
                    self.error = {"message": exc.message, "task": None}
                if status == SUCCEEDED:
                    status = FAILED
        self.status = status
        self.ended_at = self.now
        self.timers.clear()
        self._out.append(Finished(status))


def _plain(value: Any) -> Any:
    """`value` as plain data: what is not JSON-like becomes a short description of it."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, (str, int)) else str(k): _plain(v) for k, v in value.items()}
    return f"<{type(value).__name__} value>"


__all__ = ["Barrier", "Conductor", "Gate", "Staged", "Work"]
