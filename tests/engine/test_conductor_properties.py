"""Properties of the pure conductor over random workflows and random outcome orders (issue #11).

Hypothesis draws a workflow (random DAGs and cycles, joins, decisions, retries, with_items), then
plays it: at each step it picks one attempt in flight and an outcome for it (succeeded, failed,
timeout or abandoned, with a small result), until nothing is in flight. Cycles end because the
outcomes change or because `limits.max_task_runs` (lowered here) stops them. After every step and at
the end it checks:

- the execution terminates: nothing in flight and no timer set means it has finished;
- a `join: all` task ran exactly as many times as the fewest arrivals from one of its sources
  (arrivals are worked out here from the outcomes and the transitions, independently of the
  conductor's bookkeeping);
- nothing is dispatched after a run or the execution reached a terminal status, and every event
  after the end is ignored;
- events are ordered: a run's status never leaves a terminal status, attempts only grow, each
  attempt is dispatched once, `RunEnded` comes once per run, `Finished` once and last.

Profiles: `conductor` (the default, a few seconds) and `conductor-long` (thorough, for a soak):
`ATTUNE_CONDUCTOR_PROFILE=conductor-long pytest tests/engine/test_conductor_properties.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from attune_actors.config import LimitSettings
from attune_actors.engine.commands import Dispatch, Finished, RunEnded, SetTimer, StopRun
from attune_actors.engine.conductor import Conductor
from attune_actors.spec.graph import TaskGraph
from attune_actors.spec.packs import load_packs, load_workflow_text
from attune_actors.templates import Renderer

settings.register_profile(
    "conductor",
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("conductor-long", parent=settings.get_profile("conductor"), max_examples=20_000)
PROFILE = settings.get_profile(os.environ.get("ATTUNE_CONDUCTOR_PROFILE", "conductor"))

CATALOG, _ = load_packs([])
RENDERER = Renderer()
MAX_RUNS = 40
TERMINAL = {"succeeded", "failed", "timeout", "canceled", "abandoned"}
FAILED = {"failed", "timeout", "abandoned"}

# `when` conditions the model below can evaluate from a run's status and result.
CONDITIONS: dict[str | None, Any] = {
    None: lambda status, result: True,
    "{{ succeeded() }}": lambda status, result: status == "succeeded",
    "{{ failed() }}": lambda status, result: status in FAILED,
    "{{ timed_out() }}": lambda status, result: status == "timeout",
    "{{ not succeeded() }}": lambda status, result: status != "succeeded",
    "{{ result() == 1 }}": lambda status, result: result == 1,
}
WHEN_CHOICES = [*CONDITIONS, None, None, "{{ succeeded() }}", "{{ succeeded() }}"]  # mostly onward
DECISIONS = {"{{ result() == 0 }}": 0, "{{ result() == 1 }}": 1}  # decision branch -> the result it takes
RETRY_WHEN = (None, "{{ failed() }}", "{{ result() == 2 }}")
OUTCOMES = ("succeeded",) * 5 + ("failed", "timeout", "abandoned")


# -- random workflows ----------------------------------------------------------------------------


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(2, 6))
    names = [f"t{i}" for i in range(n)]
    targets = st.sampled_from([*names[1:], "noop", "retry"])  # t0 is always a start task
    forward = [st.sampled_from(names[i + 1 :]) for i in range(n - 1)]
    # Often a split and a join to start from (t0 -> t1, t2 -> t3), which random edges then extend.
    skeleton: dict[str, list[dict[str, Any]]] = {}
    if n >= 4 and draw(st.booleans()):
        skeleton = {"t0": [{"do": ["t1", "t2"]}], "t1": [{"do": ["t3"]}], "t2": [{"do": ["t3"]}]}
    tasks: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        task: dict[str, Any] = {"name": name, "action": "core.noop"}
        if draw(st.integers(0, 4)) == 0:
            task["with_items"] = draw(st.lists(st.integers(0, 2), max_size=3))
            if draw(st.booleans()):
                task["batch_size"] = 1
        if draw(st.integers(0, 3)) == 0:
            task["retry"] = {"count": draw(st.integers(0, 2))}
            when = draw(st.sampled_from(RETRY_WHEN))
            if when is not None:
                task["retry"]["when"] = when
        entries = list(skeleton.get(name, ()))
        for _ in range(draw(st.integers(0, 3))):
            # Mostly forward edges (splits and joins), sometimes anything (cycles, commands).
            pick = targets if i == n - 1 or draw(st.integers(0, 2)) == 0 else forward[i]
            entry: dict[str, Any] = {"do": draw(st.lists(pick, min_size=1, max_size=3))}
            when = draw(st.sampled_from(WHEN_CHOICES))
            if when is not None:
                entry["when"] = when
            entries.append(entry)
        if entries:
            task["next"] = entries
        if draw(st.integers(0, 4)) == 0:
            branches: list[dict[str, Any]] = [
                {"when": cond, "next": draw(st.sampled_from(names[1:]))}
                for cond in draw(
                    st.lists(st.sampled_from(list(DECISIONS)), min_size=1, max_size=2, unique=True)
                )
            ]
            branches.append({"default": draw(st.sampled_from(names[1:]))})
            task["decision"] = branches
        tasks.append(task)
    inbound: dict[str, set[str]] = {name: set() for name in names}
    for task in tasks:
        for target in sent_to(task, None, None, every=True):
            inbound[target].add(task["name"])
    for task in tasks:
        sources = inbound[task["name"]]
        if task["name"] == "t3" and skeleton:
            task["join"] = "all"
        elif sources and draw(st.booleans()):
            task["join"] = draw(st.sampled_from(["all", "all", *range(1, len(sources) + 1)]))
    return {"tasks": tasks}


def sent_to(task: dict[str, Any], status: str | None, result: Any, *, every: bool = False) -> list[str]:
    """Tasks a run of `task` that ended so sends a transition to (all of them with `every`)."""
    out: list[str] = []
    for entry in task.get("next", ()):
        if every or CONDITIONS[entry.get("when")](status, result):
            out.extend(t for t in entry["do"] if t not in ("noop", "retry"))
    decision = task.get("decision")
    if decision and (every or status == "succeeded"):
        for branch in decision:
            if every:
                out.append(branch.get("next") or branch["default"])
            elif "default" in branch or result == DECISIONS[branch["when"]]:
                out.append(branch.get("next") or branch["default"])
                break
    return out


# -- the player ----------------------------------------------------------------------------------


@dataclass
class Play:
    doc: dict[str, Any]
    conductor: Conductor
    in_flight: list[Dispatch] = field(default_factory=list)
    timers: dict[Any, float] = field(default_factory=dict)
    dispatched: set[tuple[str, int | None, int]] = field(default_factory=set)
    ended_runs: set[str] = field(default_factory=set)
    finished: int = 0
    seen: dict[str, tuple[str, int]] = field(default_factory=dict)  # run id -> (status, attempts)
    arrivals: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, join) -> count
    now: float = 0.0

    def apply(self, cmds: list[Any]) -> None:
        """Carry out one step's commands, checking their order."""
        assert self.finished == 0, f"commands after Finished: {cmds}"
        for i, cmd in enumerate(cmds):
            if isinstance(cmd, Dispatch):
                key = (cmd.run_id, cmd.item, cmd.attempt)
                assert key not in self.dispatched, f"attempt dispatched twice: {key}"
                assert cmd.run_id not in self.ended_runs, f"{cmd.run_id} dispatched after it ended"
                assert cmd.attempt == 1 or (cmd.run_id, cmd.item, cmd.attempt - 1) in self.dispatched
                self.dispatched.add(key)
                self.in_flight.append(cmd)
            elif isinstance(cmd, RunEnded):
                assert cmd.run_id not in self.ended_runs, f"{cmd.run_id} ended twice"
                self.ended_runs.add(cmd.run_id)
            elif isinstance(cmd, StopRun):
                self.in_flight = [
                    d
                    for d in self.in_flight
                    if (d.run_id, d.item, d.attempt) != (cmd.run_id, cmd.item, cmd.attempt)
                ]
            elif isinstance(cmd, SetTimer):
                self.timers[cmd.key] = cmd.at
            elif isinstance(cmd, Finished):
                assert i == len(cmds) - 1, "Finished is not the last command"
                self.finished += 1

    def observe(self, error_before: Any) -> None:
        """After a step: statuses only move forward; count the arrivals of runs that just ended."""
        c = self.conductor
        tasks = {t["name"]: t for t in self.doc["tasks"]}
        for run in c.runs.values():
            before = self.seen.get(run.id)
            now = (run.status, run.attempts)
            if before is not None:
                assert before[0] not in TERMINAL or before == now, f"{run.id}: {before} -> {now}"
                assert now[1] >= before[1]
            self.seen[run.id] = now
            just_ended = run.status in TERMINAL and (before is None or before[0] not in TERMINAL)
            if just_ended and error_before is None:
                for target in set(sent_to(tasks[run.task], run.status, run.result)):
                    if "join" in tasks[target]:
                        key = (run.task, target)
                        self.arrivals[key] = self.arrivals.get(key, 0) + 1


def joins_all(doc: dict[str, Any]) -> set[str]:
    return {t["name"] for t in doc["tasks"] if t.get("join") == "all"}


def conductor_for(doc: dict[str, Any]) -> Conductor:
    problems: list[Any] = []
    spec = load_workflow_text(
        yaml.safe_dump(doc), pack="t", file="t.yaml", default_ref="t.wf", problems=problems
    )
    assert not problems, problems
    assert spec is not None
    return Conductor(
        execution_id="e",
        spec=spec,
        graph=TaskGraph.build(spec),
        actions=CATALOG.action,
        renderer=RENDERER,
        parameters={},
        pack_config={},
        system={"execution_id": "e"},
        limits=LimitSettings(max_task_runs=MAX_RUNS),
    )


@PROFILE
@given(doc=workflows(), data=st.data())
def test_random_workflows_terminate_join_exactly_and_keep_order(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    c = conductor_for(doc)
    play = Play(doc, c)
    play.apply(c.start(now=0.0))
    play.observe(None)
    for _ in range(5000):
        if play.finished or not (play.in_flight or play.timers):
            break
        play.now += 1.0
        error_before = c.error
        if play.in_flight and not (play.timers and data.draw(st.integers(0, 9)) == 0):
            attempt = play.in_flight.pop(data.draw(st.integers(0, len(play.in_flight) - 1)))
            status = data.draw(st.sampled_from(OUTCOMES))
            result = data.draw(st.integers(0, 2))
            error = None if status == "succeeded" else f"{status} on purpose"
            cmds = c.on_attempt_ended(
                attempt.run_id, attempt.item, attempt.attempt, status, result, error, now=play.now
            )
        else:
            key = min(play.timers, key=play.timers.__getitem__)
            play.now = max(play.now, play.timers.pop(key))
            cmds = c.on_timer(key, now=play.now)
        play.apply(cmds)
        play.observe(error_before)

    event(f"status {c.status}")
    event("a join: all ran" if any(r.task in joins_all(doc) for r in c.runs.values()) else "no join: all ran")
    if c.error is not None:
        event(c.error["message"].split(":")[0] if "join" in c.error["message"] else "other error")

    # It terminates: nothing left in flight means it has finished, exactly once.
    assert play.finished == 1, f"stuck in {c.status} with nothing in flight"
    assert c.status in TERMINAL
    assert all(run.status in TERMINAL for run in c.runs.values())
    assert play.ended_runs == set(c.runs)
    assert len(c.runs) <= MAX_RUNS
    # Nothing is dispatched after the end, and late or duplicate outcomes are ignored.
    for run_id, item, attempt in sorted(play.dispatched, key=str)[:3]:
        assert c.on_attempt_ended(run_id, item, attempt, "succeeded", 0, None, now=play.now + 1) == []

    # A `join: all` ran once per complete set of arrivals (unless the run limit cut the play short);
    # arrivals left over (a partly satisfied join) fail the execution as an unreachable join.
    if "max_task_runs" not in str(c.error):
        for name in joins_all(doc):
            counts = [play.arrivals.get((s, name), 0) for s in c.graph.inbound[name]]
            ran = sum(1 for run in c.runs.values() if run.task == name)
            assert ran == min(counts), (name, ran, play.arrivals)
            if c.status == "succeeded":
                assert max(counts) == ran, f"join {name} left partly satisfied: {play.arrivals}"
    if c.error is not None and c.error["message"].startswith("unreachable join"):
        name = c.error["task"]
        counts = [play.arrivals.get((s, name), 0) for s in c.graph.inbound[name]]
        assert max(counts) > 0, f"{name} reported unreachable with no arrival"
        if name in joins_all(doc):
            assert min(counts) < max(counts), f"{name} reported unreachable but not partly satisfied"

    # The document lists runs in order, each within the execution's time.
    doc_tasks = c.document()["tasks"]
    assert [t["id"] for t in doc_tasks] == sorted(
        (t["id"] for t in doc_tasks), key=lambda i: int(i.split(".")[1])
    )
    assert c.ended_at is not None
    assert all(run.ended_at is not None and run.ended_at <= c.ended_at for run in c.runs.values())
    assert all(run.started_at is None or run.started_at <= run.ended_at for run in c.runs.values())  # type: ignore[operator]
