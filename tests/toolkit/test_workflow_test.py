"""attune_actors.testing.WorkflowTest: mocked actions on the real engine, in virtual time."""

from __future__ import annotations

import pytest

from attune_actors import NotFoundError, ParameterError
from attune_actors.clock import VirtualClock
from attune_actors.testing import WorkflowTest, error, real, result, timeout

CHAIN = """
    tasks:
      - name: fetch
        action: testpack.square
        input: {n: 3}
        retry: {count: 4, delay: 600}
        on_success: store
        on_failure: alert
      - {name: store, action: core.echo, input: {value: "{{ task.fetch.result }}"}}
      - {name: alert, action: core.echo, input: {msg: "fetch failed"}}
    output_map: {stored: "{{ task.fetch.result }}"}
"""


async def test_a_sequence_scripts_each_attempt_and_the_retry_delays_take_no_real_time(
    workflow, packs_dir
) -> None:
    ref = workflow("chain", CHAIN)
    async with WorkflowTest([packs_dir]) as t:
        t.mock("testpack.square", error("502"), error("502"), result({"value": 9}))
        run = await t.run(ref)
    assert run.status == "succeeded"
    assert run.route == ["fetch", "store"]
    assert run.task("fetch").attempts == 3
    assert run.output == {"stored": {"value": 9}}
    assert [(c.task, c.attempt, c.input) for c in run.calls if c.action == "testpack.square"] == [
        ("fetch", 1, {"n": 3}), ("fetch", 2, {"n": 3}), ("fetch", 3, {"n": 3})]
    assert run.elapsed >= 1200  # two retry delays of 10 minutes, in engine time


async def test_the_last_outcome_repeats_and_real_runs_the_action(workflow, packs_dir) -> None:
    ref = workflow("chain", CHAIN)
    async with WorkflowTest([packs_dir]) as t:
        t.mock("testpack.square", error("boom"))
        failed = await t.run(ref)
        t.mock("testpack.square", error("once"), real())  # replaces the plain rule above
        recovered = await t.run(ref)
    assert failed.route == ["fetch", "alert"]
    assert failed.task("fetch").attempts == 5
    assert failed.task("fetch").error == "boom"
    assert recovered.route == ["fetch", "store"]
    assert recovered.output == {"stored": 9}  # what testpack.square really returns for 3


ITEMS = """
    tasks:
      - name: each
        action: testpack.square
        with_items: "{{ parameters.xs }}"
        input: {n: "{{ item }}"}
    parameters: {xs: {type: array, default: [1, 2, 3, 4]}}
    output_map: {squares: "{{ task.each.result }}"}
"""


async def test_outcomes_per_item_and_by_input(workflow, packs_dir) -> None:
    ref = workflow("items", ITEMS)
    async with WorkflowTest([packs_dir]) as t:
        t.mock("testpack.square", result(-1), item=0)
        t.mock("testpack.square", result(100), when=lambda inp: inp["n"] == 3)
        run = await t.run(ref)
        t.mock("testpack.square", error("no four"), when=lambda inp: inp["n"] == 4)
        broken = await t.run(ref)
    assert run.output == {"squares": [-1, 4, 100, 16]}  # items 1 and 3 ran for real
    assert [it["status"] for it in broken.task("each").items or []] == [
        "succeeded", "succeeded", "succeeded", "failed"]
    assert broken.status == "failed"


async def test_a_slow_attempt_times_out_at_its_deadline_in_engine_time(workflow, packs_dir) -> None:
    ref = workflow(
        "slow",
        """
        tasks:
          - {name: call, action: testpack.square, input: {n: 2}, timeout: 60, on_timeout: give_up}
          - {name: later, action: core.noop, delay: 86400}
          - {name: give_up, action: core.noop, next: [{do: [later]}]}
        """,
    )
    async with WorkflowTest([packs_dir]) as t:
        t.mock("testpack.square", result(4, delay=3600))
        run = await t.run(ref)
        t.mock("testpack.square", timeout())
        timed_out = await t.run(ref)
    assert run.route == ["call", "give_up", "later"]
    assert run.task("call").status == "timeout"
    assert run.elapsed == pytest.approx(60 + 86400, abs=1)  # the deadline, then the day's delay
    assert timed_out.task("call").status == "timeout"
    assert timed_out.elapsed == pytest.approx(60 + 86400, abs=1)


APPROVAL = """
    tasks:
      - name: approve
        action: core.inquiry
        input:
          prompt: ship it?
          schema: {type: object, properties: {ok: {type: boolean}}, required: [ok]}
          timeout: 7200
        on_success: ship
        on_timeout: expired
      - {name: ship, action: core.echo, input: {shipped: true}}
      - {name: expired, action: core.noop}
"""


async def test_inquiries_answered_by_task_name_from_the_test_or_left_to_expire(
    workflow, packs_dir
) -> None:
    ref = workflow("approval", APPROVAL)
    async with WorkflowTest([packs_dir]) as t:
        answered = await t.run(ref, answers={"approve": {"ok": True}})
        execution_id = await t.start(ref)
        inquiry = await t.answer("approve", {"ok": True}, execution_id=execution_id)
        by_hand = await t.finish(execution_id)
        expired = await t.run(ref)
    assert answered.route == ["approve", "ship"]
    assert (inquiry["task"], inquiry["response"]) == ("approve", {"ok": True})
    assert by_hand.route == ["approve", "ship"]
    assert expired.route == ["approve", "expired"]
    assert expired.elapsed >= 7200
    kinds = {(e["type"], e.get("status")) for e in answered.events}
    assert ("inquiry", "pending") in kinds
    assert ("execution", "succeeded") in kinds


async def test_an_answer_the_schema_refuses_fails_the_run_naming_the_task(workflow, packs_dir) -> None:
    ref = workflow("approval", APPROVAL)
    async with WorkflowTest([packs_dir]) as t:
        with pytest.raises(AssertionError, match="inquiry of task 'approve' refused"):
            await t.run(ref, answers={"approve": {"ok": "yes"}})


async def test_published_vars_and_expect(workflow, packs_dir) -> None:
    ref = workflow(
        "vars",
        """
        vars: {total: 0}
        tasks:
          - name: add
            action: testpack.square
            input: {n: 5}
            publish: [{total: "{{ task.add.result }}"}]
        """,
    )
    async with WorkflowTest([packs_dir]) as t:
        run = await t.run(ref)
    assert run.vars == {"total": 25}
    run.expect(status="succeeded", route=["add"], vars={"total": 25}, tasks={"add": {"attempts": 1}})
    with pytest.raises(AssertionError) as caught:
        run.expect(route=["add", "notify"], tasks={"add": {"result": 24, "attempts": 2}})
    message = str(caught.value)
    assert "route: differs at step 2: expected task 'notify' next, but the route ended after 'add'" in message
    assert "task 'add': attempts: expected 2, got 1" in message
    assert "task 'add': result: expected 24, got 25" in message


async def test_only_actions_workers_run_can_be_mocked(workflow, packs_dir) -> None:
    workflow("approval", APPROVAL)
    async with WorkflowTest([packs_dir]) as t:
        with pytest.raises(NotFoundError, match=r"testpack\.sqare"):
            t.mock("testpack.sqare", result(1))
        with pytest.raises(ParameterError, match="cannot be mocked"):
            t.mock("core.inquiry", result(1))
        with pytest.raises(ParameterError, match="cannot be mocked"):
            t.mock("testpack.approval", result(1))
        with pytest.raises(TypeError, match="result\\(\\), error\\(\\)"):
            t.mock("testpack.square", {"result": 1})  # type: ignore[arg-type]


async def test_a_real_actions_timeout_counts_in_engine_time(workflow, packs_dir) -> None:
    ref = workflow(
        "realwait",
        """
        tasks:
          - {name: pause, action: testpack.wait, input: {seconds: 0.05, value: done}, timeout: 30}
        output_map: {value: "{{ task.pause.result }}"}
        """,
    )
    # Engine time far from wall time: the action's 30 s are counted on the engine's clock.
    async with WorkflowTest([packs_dir], clock=VirtualClock(start=1_000_000.0)) as t:
        run = await t.run(ref)
    assert run.status == "succeeded", run.task("pause").error
    assert run.output == {"value": "done"}
