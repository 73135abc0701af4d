"""SPEC section 7 through the public Engine API: Lookup, Nothing hangs, Handled failure, Joins, and
the per-execution limits (SPEC 12), one regression test per case of issue #11.

Where the order in which branches end matters, the branches are inquiries that the test answers in
a chosen order, so every order is exercised deterministically rather than left to timing.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import eventually, execution_reaches

from attune_actors import Engine, ValidationError
from attune_actors.config import load_settings
from attune_actors.engine.conductor import Conductor

pytestmark = pytest.mark.asyncio


def names(execution: Any) -> list[str]:
    return [t.name for t in execution.tasks]


async def run(engine: Engine, ref: str, params: dict[str, Any] | None = None) -> Any:
    execution = await engine.execute(ref, params or {})
    return await engine.wait(execution.id, timeout=30)


async def answer(engine: Engine, execution_id: str, task: str, response: Any = True) -> None:
    """Answer a pending inquiry of `task` (once one is open)."""

    async def pending() -> list[dict[str, Any]]:
        return [i for i in await engine.inquiries(execution_id=execution_id) if i["task"] == task]

    [first, *_] = await eventually(pending, f"an inquiry of task {task}")
    await engine.respond(first["id"], response)


async def open_inquiries(engine: Engine, execution_id: str, count: int) -> None:
    async def opened() -> bool:
        return len(await engine.inquiries(execution_id=execution_id)) >= count

    await eventually(opened, f"{count} inquiries to open")


def limited(**limits: int) -> Any:
    return load_settings(overrides={"limits": limits}, environ={})


# -- 1. Lookup: keys only on the context scopes -------------------------------------------------


async def test_a_missing_variable_named_like_a_dict_method_is_undefined(workflow, engine_factory) -> None:
    output = workflow(
        "lookup_output",
        """
        tasks: [{name: t, action: core.noop}]
        output_map: {items: "{{ vars.items }}"}
    """,
    )
    condition = workflow(
        "lookup_when",
        """
        vars: {path: none}
        tasks:
          - name: t
            action: core.noop
            next: [{when: "{{ vars.keys }}", do: u}]
          - {name: u, action: core.noop}
    """,
    )
    engine = await engine_factory()
    # Never declared nor published: known before running (issue #23), so refused before anything runs.
    with pytest.raises(ValidationError, match=r"undefined variable 'vars\.items'"):
        await engine.execute(output)
    with pytest.raises(ValidationError, match=r"undefined variable 'vars\.keys'"):
        await engine.execute(condition)


async def test_scope_keys_named_like_methods_are_the_data(workflow, engine_factory) -> None:
    ref = workflow(
        "lookup_keys",
        """
        parameters:
          items: {type: array, default: [1, 2]}
        vars: {keys: k}
        tasks:
          - {name: get, action: core.echo, input: {v: got}, on_success: use}
          - name: use
            action: core.echo
            input: {items: "{{ parameters.items }}", keys: "{{ vars.keys }}", get: "{{ task.get.result.v }}"}
        output_map: {use: "{{ task.use.result }}"}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded", final.error
    assert final.output == {"use": {"items": [1, 2], "keys": "k", "get": "got"}}


async def test_a_task_that_did_not_run_reads_as_nulls(workflow, engine_factory) -> None:
    ref = workflow(
        "lookup_not_run",
        """
        tasks:
          - {name: a, action: core.noop, on_failure: b}
          - {name: b, action: core.echo, input: {x: 1}}
        output_map:
          status: "{{ task.b.status }}"
          result: "{{ task.b.result }}"
          attempts: "{{ task.b.attempts }}"
          ran: "{{ task.b.status is not none }}"
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded", final.error
    assert final.output == {"status": None, "result": None, "attempts": 0, "ran": False}


async def test_a_canceled_execution_keeps_its_output_map_of_branches_that_did_not_run(
    workflow, engine_factory
) -> None:
    ref = workflow(
        "cancel_output",
        """
        tasks:
          - name: ask
            action: core.inquiry
            input: {prompt: "go?", schema: {type: boolean}}
            on_success: later
          - {name: later, action: core.echo, input: {x: 1}}
        output_map: {later: "{{ task.later.result }}", ask: "{{ task.ask.status }}"}
    """,
    )
    engine = await engine_factory()
    execution = await engine.execute(ref)
    await open_inquiries(engine, execution.id, 1)
    await engine.cancel(execution.id)
    final = await engine.wait(execution.id, timeout=10)
    assert final.status == "canceled"
    assert final.error is None
    assert final.output == {"later": None, "ask": "canceled"}


# -- 2-4. Joins ------------------------------------------------------------------------------


async def test_a_partly_satisfied_join_fails_when_nothing_else_runs(workflow, engine_factory) -> None:
    ref = workflow(
        "join_partial",
        """
        tasks:
          - {name: a, action: core.noop, on_success: j}
          - {name: b, action: core.noop, on_failure: j}
          - {name: j, action: core.noop, join: all}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "failed"
    assert final.error["task"] == "j"
    assert final.error["message"] == "unreachable join: task 'j' waits for b, which can no longer run"
    assert sorted(names(final)) == ["a", "b"]


async def test_several_entries_of_one_run_arrive_at_a_join_once(workflow, engine_factory) -> None:
    ref = workflow(
        "join_entries",
        """
        tasks:
          - name: b
            action: core.noop
            next: [{do: [j, a]}]
          - name: a
            action: core.noop
            next:
              - {when: "{{ succeeded() }}", do: j}
              - {do: j}
          - {name: j, action: core.noop, join: all}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded", final.error
    assert names(final) == ["b", "a", "j"]


SPLIT = """
tasks:
  - {name: s, action: core.noop, on_success: [a, b]}
  - {name: a, action: core.noop, on_success: m}
  - {name: b, action: core.noop, on_success: m}
  - {name: m, action: core.noop, on_success: [x, y]}
  - {name: x, action: core.inquiry, input: {prompt: x, schema: {type: boolean}}, on_success: j}
  - {name: y, action: core.inquiry, input: {prompt: y, schema: {type: boolean}}, on_success: j}
  - {name: j, action: core.noop, join: all}
"""


@pytest.mark.parametrize(
    "order",
    [("x", "x", "y", "y"), ("y", "y", "x", "x"), ("x", "y", "y", "x"), ("y", "x", "x", "y")],
    ids="".join,
)
async def test_after_a_split_a_join_all_runs_once_per_arrival_from_each_source(
    workflow, engine_factory, order: tuple[str, ...]
) -> None:
    ref = workflow("split", SPLIT)
    engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    await open_inquiries(engine, execution.id, 4)  # m ran twice: two x and two y wait
    for task in order:
        await answer(engine, execution.id, task)
    final = await engine.wait(execution.id, timeout=10)
    assert final.status == "succeeded", final.error
    assert names(final).count("m") == 2
    assert names(final).count("j") == 2
    # j starts right on the answer that completes a pair of arrivals, whatever the order.
    seen = []
    async for event in events:
        if event["type"] == "execution" and event["status"] == "succeeded":
            break
        if event["type"] == "task" and (event["name"], event["status"]) in SPLIT_STEPS:
            seen.append(event["name"])
    events.close()
    expected: list[str] = []
    for n, task in enumerate(order, 1):
        expected.append(task)
        if min(order[:n].count("x"), order[:n].count("y")) > expected.count("j"):
            expected.append("j")
    assert seen == expected


SPLIT_STEPS = {("x", "succeeded"), ("y", "succeeded"), ("j", "running")}


async def test_join_n_runs_once_and_later_arrivals_do_not_fail(workflow, engine_factory) -> None:
    ref = workflow(
        "join_n",
        """
        tasks:
          - {name: s, action: core.noop, on_success: [x, y, z]}
          - {name: x, action: core.inquiry, input: {prompt: x, schema: {type: boolean}}, on_success: j}
          - {name: y, action: core.inquiry, input: {prompt: y, schema: {type: boolean}}, on_success: j}
          - {name: z, action: core.inquiry, input: {prompt: z, schema: {type: boolean}}, on_failure: j}
          - {name: j, action: core.noop, join: 2}
    """,
    )
    engine = await engine_factory()
    execution = await engine.execute(ref)
    await open_inquiries(engine, execution.id, 3)
    for task in ("y", "z", "x"):
        await answer(engine, execution.id, task)
    final = await engine.wait(execution.id, timeout=10)
    assert final.status == "succeeded", final.error
    assert names(final).count("j") == 1
    assert names(final).index("j") > names(final).index("x")


# -- 5-6. Retries and handled failure ------------------------------------------------------------


async def test_retry_when_sees_the_attempt_that_just_failed(workflow, engine_factory) -> None:
    ref = workflow(
        "retry_when_failed",
        """
        tasks:
          - name: t
            action: core.local
            input: {cmd: "exit 1"}
            retry: {count: 2, when: "{{ failed() and task.t.status == 'failed' }}"}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "failed"
    assert final.task("t").attempts == 3
    assert len(final.tasks) == 1


async def test_an_exhausted_retry_command_does_not_handle_the_failure(workflow, engine_factory) -> None:
    ref = workflow(
        "retry_exhausted",
        """
        tasks:
          - name: t
            action: testpack.fail
            input: {message: still broken}
            next: [{when: "{{ failed() }}", do: retry}]
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "failed"
    assert final.task("t").attempts == 4
    assert final.error["task"] == "t"
    assert "still broken" in final.error["message"]


async def test_the_fail_command_lets_the_tasks_sent_with_it_run(workflow, engine_factory) -> None:
    ref = workflow(
        "fail_with_cleanup",
        """
        tasks:
          - name: check
            action: testpack.fail
            next: [{when: "{{ failed() }}", do: [fail, cleanup]}]
          - {name: cleanup, action: core.noop, on_success: after}
          - {name: after, action: core.noop}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "failed"
    # The error carries the failure that led to the fail command (issue #23).
    assert final.error == {"message": "task 'check' ran the fail command, after task 'check' failed: boom",
                           "task": "check"}
    assert names(final) == ["check", "cleanup"]
    assert final.task("cleanup").status == "succeeded"


# -- Nothing hangs ---------------------------------------------------------------------------


async def test_an_exception_inside_a_supervisor_fails_its_execution(
    workflow, engine_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = workflow(
        "bug",
        """
        tasks:
          - {name: first, action: core.noop, on_success: second}
          - {name: second, action: core.noop}
    """,
    )
    engine = await engine_factory()

    def broken(self: Conductor, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected fault\nsecond line")

    with monkeypatch.context() as patch:
        patch.setattr(Conductor, "on_attempt_ended", broken)
        final = await run(engine, ref)
    assert final.status == "failed"
    assert final.error == {"message": "internal error: RuntimeError: injected fault", "task": None}
    assert [(t.name, t.status) for t in final.tasks] == [("first", "canceled")]
    assert (await run(engine, ref)).status == "succeeded"  # the engine carries on


# -- pending: waiting on an inquiry ------------------------------------------------------------


async def test_an_execution_waiting_on_an_inquiry_is_pending_until_answered(workflow, engine_factory) -> None:
    workflow(
        "asks",
        """
        tasks:
          - {name: ask, action: core.inquiry, input: {prompt: "go?", schema: {type: boolean}}}
    """,
    )
    ref = workflow(
        "waits",
        """
        tasks:
          - {name: call, action: testpack.asks, on_success: work}
          - {name: work, action: testpack.wait, input: {seconds: 0.01}}
    """,
    )
    engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    await open_inquiries(engine, execution.id, 1)
    # the parent hears from its child
    await execution_reaches(engine, execution.id, lambda e: e.status == "pending")
    live = await engine.get(execution.id)
    assert live.task("call").status == "running"
    await answer(engine, execution.id, "ask")
    final = await engine.wait(execution.id, timeout=10)
    statuses = []
    async for event in events:
        if event["type"] == "execution" and event["id"] == execution.id:
            statuses.append(event["status"])
            if event["status"] == "succeeded":
                break
    events.close()
    assert final.status == "succeeded"
    assert statuses[-3:] == ["pending", "running", "succeeded"]


# -- limits.max_task_runs and limits.max_items ---------------------------------------------------


async def test_a_cycle_with_no_exit_stops_at_max_task_runs(workflow, engine_factory) -> None:
    ref = workflow(
        "forever",
        """
        tasks:
          - {name: init, action: core.noop, on_success: spin}
          - {name: spin, action: core.noop, on_complete: spin}
    """,
    )
    engine = await engine_factory(settings=limited(max_task_runs=25))
    final = await run(engine, ref)
    assert final.status == "failed"
    assert final.error == {
        "message": "task 'spin' would be task run 26 of this execution, which exceeds "
        "limits.max_task_runs (25)",
        "task": "spin",
    }
    assert len(final.tasks) == 25


async def test_with_items_over_max_items_fails_before_any_item(workflow, engine_factory) -> None:
    ref = workflow(
        "many",
        """
        parameters:
          n: {type: integer}
        tasks:
          - name: each
            action: core.echo
            with_items: "{{ range(parameters.n) | list }}"
            input: {i: "{{ item }}"}
    """,
    )
    engine = await engine_factory(settings=limited(max_items=10))
    assert (await run(engine, ref, {"n": 10})).status == "succeeded"
    final = await run(engine, ref, {"n": 11})
    assert final.status == "failed"
    assert final.error["task"] == "each"
    assert (
        final.error["message"] == "task 'each': with_items has 11 items, which exceeds limits.max_items (10)"
    )
    assert final.task("each").items is None
