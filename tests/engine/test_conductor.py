"""The conductor alone: events in, commands out, no actors, transports or clocks (time is an argument)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from attune_actors.engine.commands import Dispatch, Finished, SetTimer, StopRun, TimerKey, TimerKind
from attune_actors.engine.conductor import Conductor
from attune_actors.spec.graph import TaskGraph
from attune_actors.spec.model import ActionSpec, ParamSpec
from attune_actors.spec.packs import load_packs, load_workflow_text
from attune_actors.templates import Renderer

CATALOG, _ = load_packs([])


def conductor(
    yaml_text: str,
    parameters: dict[str, Any] | None = None,
    *,
    actions: Callable[[str], ActionSpec] = CATALOG.action,
) -> Conductor:
    problems: list[Any] = []
    spec = load_workflow_text(
        textwrap.dedent(yaml_text), pack="t", file="t.yaml", default_ref="t.wf", problems=problems
    )
    assert spec is not None
    assert not problems, problems
    return Conductor(
        execution_id="e1",
        spec=spec,
        graph=TaskGraph.build(spec),
        actions=actions,
        renderer=Renderer(),
        parameters=parameters or {},
        pack_config={},
        system={"execution_id": "e1"},
    )


def dispatches(cmds: list[Any]) -> list[tuple[str, str, int | None, int]]:
    return [(c.run_id, c.task, c.item, c.attempt) for c in cmds if isinstance(c, Dispatch)]


def timers(cmds: list[Any]) -> list[tuple[tuple[Any, ...], float]]:
    return [(c.key, c.at) for c in cmds if isinstance(c, SetTimer)]


def test_start_dispatches_start_tasks_and_arms_the_workflow_timeout() -> None:
    c = conductor("""
        timeout: 30
        tasks:
          - {name: a, action: core.noop, on_success: c}
          - {name: b, action: core.noop}
          - {name: c, action: core.noop}
    """)
    cmds = c.start(now=100.0)
    assert dispatches(cmds) == [("e1.1", "a", None, 1), ("e1.2", "b", None, 1)]
    assert timers(cmds) == [(TimerKey(TimerKind.TIMEOUT), 130.0)]
    assert c.status == "running"


def test_a_result_schedules_the_next_task_and_the_last_finishes() -> None:
    c = conductor("""
        tasks:
          - {name: a, action: core.echo, input: {x: 1}, on_success: b}
          - {name: b, action: core.echo, input: {y: "{{ task.a.result.x + 1 }}"}}
    """)
    c.start(now=1.0)
    cmds = c.on_attempt_ended("e1.1", None, 1, "succeeded", {"x": 1}, None, now=2.0)
    [d] = [x for x in cmds if isinstance(x, Dispatch)]
    assert (d.task, d.input) == ("b", {"y": 2})
    cmds = c.on_attempt_ended("e1.2", None, 1, "succeeded", {"y": 2}, None, now=3.0)
    assert [x for x in cmds if isinstance(x, Finished)] == [Finished("succeeded")]
    assert c.ended_at == 3.0


def test_stale_and_duplicate_outcomes_are_ignored() -> None:
    c = conductor("""
        tasks:
          - {name: a, action: core.noop, on_success: b}
          - {name: b, action: core.noop}
    """)
    c.start(now=1.0)
    assert dispatches(c.on_attempt_ended("e1.1", None, 1, "succeeded", None, None, now=2.0))
    assert c.on_attempt_ended("e1.1", None, 1, "succeeded", None, None, now=2.1) == []
    assert c.on_attempt_ended("e1.1", None, 7, "failed", None, "x", now=2.2) == []
    assert c.on_attempt_ended("nope", None, 1, "failed", None, "x", now=2.3) == []


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("constant", [2.0, 2.0, 2.0, 2.0]),
        ("linear", [2.0, 4.0, 5.0, 5.0]),
        ("exponential", [2.0, 4.0, 5.0, 5.0]),
    ],
)
def test_retry_backoff_deadlines(backoff: str, expected: list[float]) -> None:
    c = conductor(f"""
        tasks:
          - name: a
            action: core.noop
            retry: {{count: 4, delay: 2, backoff: {backoff}, max_delay: 5}}
    """)
    c.start(now=0.0)
    now = 10.0
    delays = []
    for attempt in range(1, 5):
        cmds = c.on_attempt_ended("e1.1", None, attempt, "failed", None, "boom", now=now)
        [(key, at)] = timers(cmds)
        assert key == TimerKey(TimerKind.RETRY, "e1.1")
        delays.append(at - now)
        cmds = c.on_timer(key, now=at)
        assert dispatches(cmds) == [("e1.1", "a", None, attempt + 1)]
        now = at + 1
    assert delays == expected
    cmds = c.on_attempt_ended("e1.1", None, 5, "failed", None, "boom", now=now)
    assert [x for x in cmds if isinstance(x, Finished)] == [Finished("failed")]
    assert c.runs["e1.1"].attempts == 5


def test_with_items_keeps_batch_size_in_flight() -> None:
    c = conductor("""
        tasks:
          - {name: m, action: core.echo, with_items: [a, b, c, d, e], batch_size: 2, input: {v: "{{ item }}"}}
    """)
    cmds = c.start(now=0.0)
    assert dispatches(cmds) == [("e1.1", "m", 0, 1), ("e1.1", "m", 1, 1)]
    cmds = c.on_attempt_ended("e1.1", 1, 1, "succeeded", "B", None, now=1.0)
    assert dispatches(cmds) == [("e1.1", "m", 2, 1)]
    for idx, now in ((0, 2.0), (2, 3.0), (3, 4.0)):
        c.on_attempt_ended("e1.1", idx, 1, "succeeded", idx, None, now=now)
    cmds = c.on_attempt_ended("e1.1", 4, 1, "succeeded", "E", None, now=5.0)
    assert [x for x in cmds if isinstance(x, Finished)] == [Finished("succeeded")]
    assert c.runs["e1.1"].result == [0, "B", 2, 3, "E"]


def test_cancel_running_stops_in_flight_attempts_and_finishes_canceled() -> None:
    c = conductor("""
        cancellation_policy: cancel_running
        tasks:
          - {name: a, action: core.noop}
    """)
    c.start(now=0.0)
    cmds = c.cancel(now=1.0)
    assert [x for x in cmds if isinstance(x, StopRun)] == [StopRun("e1.1", None, 1)]
    assert c.status == "canceled"
    assert c.runs["e1.1"].status == "canceled"


def test_restore_and_recovery_redispatch_the_same_attempt_with_its_deadline() -> None:
    yaml_text = """
        tasks:
          - {name: a, action: core.noop, timeout: 60, on_success: b}
          - {name: b, action: core.noop}
    """
    first = conductor(yaml_text)
    first.start(now=0.0)
    runs, items = first.take_dirty()
    header = first.header()
    second = conductor(yaml_text)
    second.restore(header, [r.to_record() for r in runs], [(r, i, it.to_record()) for r, i, it in items])
    cmds = second.recovery_commands(now=30.0)
    [d] = [x for x in cmds if isinstance(x, Dispatch)]
    assert (d.run_id, d.attempt, d.deadline) == ("e1.1", 1, 60.0)
    # Its outcome then carries the workflow on as if nothing happened.
    assert dispatches(second.on_attempt_ended("e1.1", None, 1, "succeeded", None, None, now=31.0)) == [
        ("e1.2", "b", None, 1)
    ]


def test_system_timestamp_is_the_time_of_the_event_being_handled() -> None:
    c = conductor("""
        tasks:
          - {name: a, action: core.echo, input: {at: "{{ system.timestamp }}"}, on_success: b}
          - {name: b, action: core.echo, input: {at: "{{ system.timestamp }}"}}
    """)
    [first] = [x for x in c.start(now=0.5) if isinstance(x, Dispatch)]
    [second] = [
        x
        for x in c.on_attempt_ended("e1.1", None, 1, "succeeded", None, None, now=60.25)
        if isinstance(x, Dispatch)
    ]
    assert first.input == {"at": "1970-01-01T00:00:00.500Z"}
    assert second.input == {"at": "1970-01-01T00:01:00.250Z"}
    assert "timestamp" not in c.header()["system"]


def finished(cmds: list[Any]) -> list[Finished]:
    return [x for x in cmds if isinstance(x, Finished)]


def test_an_abandoned_run_counts_as_failed_for_transitions_and_retries() -> None:
    c = conductor("""
        tasks:
          - name: a
            action: core.noop
            retry: {count: 1, when: "{{ failed() }}"}
            on_failure: cleanup
          - {name: cleanup, action: core.echo, input: {why: "{{ task.a.status }}"}}
    """)
    c.start(now=0.0)
    retried = c.on_attempt_ended("e1.1", None, 1, "abandoned", None, "worker w1 vanished", now=1.0)
    assert dispatches(retried) == [("e1.1", "a", None, 2)]
    cmds = c.on_attempt_ended("e1.1", None, 2, "abandoned", None, "worker w2 vanished", now=2.0)
    [d] = [x for x in cmds if isinstance(x, Dispatch)]
    assert (d.task, d.input) == ("cleanup", {"why": "abandoned"})
    assert finished(c.on_attempt_ended("e1.2", None, 1, "succeeded", None, None, now=3.0)) == [
        Finished("succeeded")
    ]
    assert c.runs["e1.1"].status == "abandoned"


def test_do_retry_is_never_applied_to_a_succeeded_run() -> None:
    c = conductor("""
        tasks:
          - {name: a, action: core.noop, next: [{do: [retry, b]}]}
          - {name: b, action: core.noop}
    """)
    c.start(now=0.0)
    assert dispatches(c.on_attempt_ended("e1.1", None, 1, "succeeded", None, None, now=1.0)) == [
        ("e1.2", "b", None, 1)
    ]
    assert c.runs["e1.1"].attempts == 1


def test_a_run_reopened_by_do_retry_ends_once() -> None:
    c = conductor("""
        tasks:
          - {name: a, action: core.noop, next: [{when: "{{ failed() }}", do: retry}]}
    """)
    c.start(now=0.0)
    cmds = c.on_attempt_ended("e1.1", None, 1, "failed", None, "x", now=1.0)
    assert [type(x).__name__ for x in cmds] == ["Dispatch"]  # no RunEnded before the next attempt
    cmds = c.on_attempt_ended("e1.1", None, 2, "succeeded", None, None, now=2.0)
    assert [type(x).__name__ for x in cmds] == ["RunEnded", "Finished"]


def test_waiting_on_an_inquiry_is_pending_and_answering_it_runs_again() -> None:
    c = conductor("""
        tasks:
          - {name: ask, action: core.inquiry, input: {prompt: "ok?", schema: {type: boolean}}, on_success: b}
          - {name: slow, action: core.noop}
          - {name: b, action: core.noop}
    """)
    c.start(now=0.0)
    assert c.status == "running"  # `slow` is in flight
    c.on_attempt_ended("e1.2", None, 1, "succeeded", None, None, now=1.0)
    assert (c.status, c.runs["e1.1"].status) == ("pending", "pending")
    assert dispatches(c.answer_inquiry("e1.1", "e1.1-q1", True, now=2.0)) == [("e1.3", "b", None, 1)]
    assert c.status == "running"
    c.pause(now=3.0)
    assert c.status == "pausing"


def test_abort_ends_the_execution_failed_and_stops_what_is_in_flight() -> None:
    c = conductor("""
        tasks:
          - {name: a, action: core.noop, on_success: b}
          - {name: b, action: core.noop}
          - {name: ask, action: core.inquiry, input: {prompt: "ok?", schema: {type: boolean}}}
    """)
    c.start(now=0.0)
    c.vars["odd"] = {1, 2}  # not plain data: what made the store fail
    cmds = c.abort("internal error: RuntimeError: boom", now=5.0)
    assert [type(x).__name__ for x in cmds] == [
        "StopRun",
        "RunEnded",
        "CloseInquiry",
        "RunEnded",
        "Finished",
    ]
    assert (c.status, c.error) == ("failed", {"message": "internal error: RuntimeError: boom", "task": None})
    assert [r.status for r in c.runs.values()] == ["canceled", "canceled"]
    assert c.vars["odd"] == "<set value>"
    runs, _ = c.take_dirty()
    assert {r.id for r in runs} == set(c.runs)  # everything is saved again
    assert c.abort("again", now=6.0) == []
    assert c.on_attempt_ended("e1.1", None, 1, "succeeded", None, None, now=7.0) == []


def test_snapshots_from_before_typed_keys_and_counted_joins_restore() -> None:
    yaml_text = """
        tasks:
          - {name: s, action: core.noop, on_success: [a, b]}
          - {name: a, action: core.noop, on_success: j}
          - name: b
            action: core.noop
            retry: {count: 1, delay: 5}
            on_success: j
          - {name: j, action: core.noop, join: all}
    """
    first = conductor(yaml_text)
    first.start(now=0.0)
    first.on_attempt_ended("e1.1", None, 1, "succeeded", None, None, now=1.0)
    first.on_attempt_ended("e1.2", None, 1, "succeeded", None, None, now=2.0)
    first.on_attempt_ended("e1.3", None, 1, "failed", None, "x", now=3.0)
    runs, items = first.take_dirty()
    header = first.header()
    assert header["barriers"] == {"j": [{"a": 1}, False]}
    assert header["timers"] == [[["retry", "e1.3", None], 8.0]]
    header["barriers"] = {"j": [["a"], False]}  # the form older snapshots hold
    second = conductor(yaml_text)
    second.restore(header, [r.to_record() for r in runs], [(r, i, it.to_record()) for r, i, it in items])
    [timer] = [x for x in second.recovery_commands(now=4.0) if isinstance(x, SetTimer)]
    assert timer == SetTimer(TimerKey(TimerKind.RETRY, "e1.3"), 8.0)
    assert dispatches(second.on_timer(timer.key, now=8.0)) == [("e1.3", "b", None, 2)]
    assert dispatches(second.on_attempt_ended("e1.3", None, 2, "succeeded", None, None, now=9.0)) == [
        ("e1.4", "j", None, 1)
    ]


def typed_action(ref: str, **types: str) -> ActionSpec:
    """An action declaring `types` (name -> parameter type), `m` with a default besides."""
    declared = tuple(ParamSpec(name, type=tp) for name, tp in types.items())
    defaulted = ParamSpec("m", default=[1])
    return ActionSpec(ref, "x", ref.split(".")[1], "python", parameters=(*declared, defaulted))


def test_a_constant_input_is_checked_against_the_action_as_a_rendered_one_is() -> None:
    # A constant input is not rendered: the action's declarations still check it on every
    # attempt, with the same error, and the action as it is at that attempt (packs reloaded).
    actions = {"x.typed": typed_action("x.typed", n="string")}
    c = conductor(
        """
        tasks:
          - name: a
            action: x.typed
            input: {n: "3"}
            retry: {count: 1}
    """,
        actions=actions.__getitem__,
    )
    [first] = [x for x in c.start(now=1.0) if isinstance(x, Dispatch)]
    assert first.input == {"n": "3", "m": [1]}
    first.input["n"] = "changed by the action"
    actions["x.typed"] = typed_action("x.typed", n="integer")
    cmds = c.on_attempt_ended("e1.1", None, 1, "failed", None, "boom", now=2.0)
    assert dispatches(cmds) == []
    assert [x for x in cmds if isinstance(x, Finished)] == [Finished("failed")]
    [run] = c.runs.values()
    assert (run.status, run.attempts) == ("failed", 2)
    assert run.error == "task 'a' (action x.typed): parameter 'n' must be of type integer, got string '3'"
    assert c.error == {"message": f"task 'a' failed: {run.error}", "task": "a"}


def test_constant_item_inputs_are_new_dicts_and_a_wrong_one_fails_the_item() -> None:
    actions = {"x.typed": typed_action("x.typed", n="string")}
    source = """
        tasks:
          - name: a
            action: x.typed
            with_items: "{{ [1, 2] }}"
            batch_size: 1
            input: {n: "3"}
    """
    c = conductor(source, actions=actions.__getitem__)
    [first] = [x for x in c.start(now=1.0) if isinstance(x, Dispatch)]
    first.input["n"] = "changed by the action"
    cmds = c.on_attempt_ended("e1.1", 0, 1, "succeeded", 1, None, now=2.0)
    [second] = [x for x in cmds if isinstance(x, Dispatch)]
    assert (second.item, second.input) == (1, {"n": "3", "m": [1]})

    actions["x.typed"] = typed_action("x.typed", n="integer")
    c = conductor(source, actions=actions.__getitem__)
    cmds = c.start(now=1.0)
    assert dispatches(cmds) == []
    [run] = c.runs.values()
    assert run.status == "failed"
    assert run.error == (
        "item 0: task 'a' (action x.typed): parameter 'n' must be of type integer, got string '3'"
    )
    assert run.item_state is not None
    assert run.item_state.status == ["failed", "canceled"]
