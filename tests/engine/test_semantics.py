"""One test per scheduling rule of SPEC section 3, through the public Engine API.

Where branches run concurrently the tests compare the set of tasks per wave, never a total order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import execution_reaches

from attune_actors import Engine, ParameterError

pytestmark = pytest.mark.asyncio


def names(execution: Any) -> list[str]:
    return [t.name for t in execution.tasks]


async def run(engine: Engine, ref: str, params: dict[str, Any] | None = None) -> Any:
    execution = await engine.execute(ref, params or {})
    return await engine.wait(execution.id, timeout=30)


async def test_sequential_chain_runs_in_order_and_passes_results(workflow, engine_factory) -> None:
    ref = workflow(
        "seq",
        """
        parameters:
          n: {type: integer, default: 3}
        tasks:
          - name: a
            action: testpack.square
            input: {n: "{{ parameters.n }}"}
            on_success: b
          - name: b
            action: testpack.square
            input: {n: "{{ task.a.result }}"}
            on_success: c
          - name: c
            action: core.echo
            input: {value: "{{ task.b.result + 1 }}"}
        output_map:
          final: "{{ task.c.result.value }}"
    """,
    )
    engine = await engine_factory()
    final = await run(engine, ref)
    assert final.status == "succeeded"
    assert names(final) == ["a", "b", "c"]
    assert final.task("b").result == 81
    assert final.output == {"final": 82}
    assert final.error is None


async def test_start_tasks_run_together_then_their_successors(workflow, engine_factory) -> None:
    ref = workflow(
        "starts",
        """
        tasks:
          - {name: a, action: core.noop, on_success: c}
          - {name: b, action: core.noop}
          - {name: c, action: core.noop}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert set(names(final)[:2]) == {"a", "b"}
    assert names(final)[2] == "c"


async def test_handled_failure_takes_the_failure_branch_and_succeeds(workflow, engine_factory) -> None:
    ref = workflow(
        "handled",
        """
        tasks:
          - name: risky
            action: testpack.fail
            input: {message: disk full}
            on_success: never
            on_failure: cleanup
          - {name: never, action: core.noop}
          - name: cleanup
            action: core.echo
            input: {why: "{{ task.risky.error }}"}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert names(final) == ["risky", "cleanup"]
    assert final.task("risky").status == "failed"
    assert final.task("risky").result == {"partial": True}
    assert final.task("cleanup").result == {"why": "disk full"}


async def test_unhandled_failure_fails_fast(workflow, engine_factory) -> None:
    # `slow` lasts long enough for `bad` to fail first even when its worker process starts slowly
    # on a busy machine (at 0.2 s it once did not).
    ref = workflow(
        "failfast",
        """
        tasks:
          - {name: bad, action: testpack.fail, on_success: after_bad}
          - {name: slow, action: testpack.wait, input: {seconds: 1.0}, on_success: after_slow}
          - {name: after_bad, action: core.noop}
          - {name: after_slow, action: core.noop}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "failed"
    assert final.error["task"] == "bad"
    assert "boom" in final.error["message"]
    # The running branch ends, but nothing new is scheduled after the failure.
    assert sorted(names(final)) == ["bad", "slow"]
    assert final.task("slow").status == "succeeded"


async def test_on_complete_fires_on_failure_and_handles_it(workflow, engine_factory) -> None:
    ref = workflow(
        "complete",
        """
        tasks:
          - {name: bad, action: testpack.fail, on_complete: report}
          - {name: report, action: core.echo, input: {status: "{{ task.bad.status }}"}}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert final.task("report").result == {"status": "failed"}


async def test_task_timeout_ends_the_attempt_timeout_and_fires_on_timeout(workflow, engine_factory) -> None:
    ref = workflow(
        "tmo",
        """
        tasks:
          - name: slow
            action: testpack.wait
            input: {seconds: 5}
            timeout: 0.1
            on_timeout: late
            on_failure: also_failure
          - {name: late, action: core.noop}
          - {name: also_failure, action: core.noop}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert final.task("slow").status == "timeout"
    # failed() is true for timeouts too, so both branches fire.
    assert set(names(final)[1:]) == {"late", "also_failure"}


async def test_decision_first_match_wins_and_default(workflow, engine_factory) -> None:
    ref = workflow(
        "decide",
        """
        parameters:
          environment: {type: string, enum: [dev, staging, production]}
        tasks:
          - name: check
            action: core.noop
            decision:
              - when: "{{ parameters.environment == 'production' }}"
                next: approve
              - when: "{{ parameters.environment in ['production', 'staging'] }}"
                next: tests
              - default: direct
          - {name: approve, action: core.noop}
          - {name: tests, action: core.noop}
          - {name: direct, action: core.noop}
    """,
    )
    engine = await engine_factory()
    assert names(await run(engine, ref, {"environment": "production"})) == ["check", "approve"]
    assert names(await run(engine, ref, {"environment": "staging"})) == ["check", "tests"]
    assert names(await run(engine, ref, {"environment": "dev"})) == ["check", "direct"]


async def test_publish_sets_vars_in_order_and_only_on_success(workflow, engine_factory) -> None:
    ref = workflow(
        "pub",
        """
        vars:
          count: 0
          label: "{{ parameters.prefix }}-x"
        parameters:
          prefix: {type: string, default: p}
        tasks:
          - name: make
            action: core.echo
            input: {id: 42}
            publish:
              - made: "{{ task.make.result.id }}"
              - doubled: "{{ vars.made * 2 }}"
            next:
              - when: "{{ succeeded() }}"
                publish: {count: "{{ vars.count + 1 }}"}
                do: bad
          - name: bad
            action: testpack.fail
            publish:
              - never: "{{ 1 }}"
            on_failure: noop
        output_map:
          made: "{{ vars.made }}"
          doubled: "{{ vars.doubled }}"
          count: "{{ vars.count }}"
          label: "{{ vars.label }}"
          never: "{{ vars.never | default('unset') }}"
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert final.output == {"made": 42, "doubled": 84, "count": 1, "label": "p-x", "never": "unset"}


async def test_fail_command_fails_the_workflow(workflow, engine_factory) -> None:
    ref = workflow(
        "failcmd",
        """
        tasks:
          - name: check
            action: core.noop
            next:
              - when: "{{ succeeded() }}"
                do: [fail]
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "failed"
    assert final.error["task"] == "check"
    assert final.task("check").status == "succeeded"


async def test_noop_command_handles_a_failure(workflow, engine_factory) -> None:
    ref = workflow(
        "noopcmd",
        """
        tasks:
          - {name: bad, action: testpack.fail, on_failure: noop}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert names(final) == ["bad"]


async def test_retry_command_retries_the_same_run(workflow, engine_factory, tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    ref = workflow(
        "retrycmd",
        f"""
        tasks:
          - name: flaky
            action: testpack.flaky
            input: {{succeed_on: 3, log_file: "{log}"}}
            next:
              - when: "{{{{ failed() }}}}"
                do: retry
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert len(final.tasks) == 1
    assert final.task("flaky").attempts == 3
    attempts = [json.loads(line) for line in log.read_text().splitlines()]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert len({a["run_id"] for a in attempts}) == 1


async def test_join_all_waits_for_every_branch_and_runs_once(workflow, engine_factory) -> None:
    ref = workflow(
        "joinall",
        """
        tasks:
          - {name: start, action: core.noop, on_success: [fast, slow]}
          - {name: fast, action: core.noop, on_success: merge}
          - {name: slow, action: testpack.wait, input: {seconds: 0.1}, on_success: merge}
          - {name: merge, action: core.noop, join: all}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert names(final).count("merge") == 1
    assert names(final)[-1] == "merge"
    assert final.task("merge").started_at >= final.task("slow").ended_at


async def test_join_n_runs_once_on_the_nth_arrival(workflow, engine_factory) -> None:
    ref = workflow(
        "join1",
        """
        tasks:
          - {name: start, action: core.noop, on_success: [fast, gate]}
          - {name: fast, action: core.noop, on_success: first}
          - name: gate
            action: core.inquiry
            input: {prompt: "go?", schema: {type: boolean}}
            on_success: first
          - {name: first, action: core.noop, join: 1}
    """,
    )
    engine = await engine_factory()
    execution = await engine.execute(ref)
    # `first` runs on the first arrival, while the other branch still waits for its answer.
    await execution_reaches(
        engine, execution.id, lambda e: any(t.name == "first" and t.status == "succeeded" for t in e.tasks)
    )
    [inquiry] = await engine.inquiries(execution_id=execution.id)
    await engine.respond(inquiry["id"], True)
    final = await engine.wait(execution.id, timeout=10)
    assert final.status == "succeeded"
    assert names(final).count("first") == 1
    assert final.task("first").started_at <= final.task("gate").ended_at


async def test_without_join_each_transition_starts_its_own_run(workflow, engine_factory) -> None:
    ref = workflow(
        "nojoin",
        """
        tasks:
          - {name: start, action: core.noop, on_success: [a, b]}
          - {name: a, action: core.noop, on_success: after}
          - {name: b, action: core.noop, on_success: after}
          - {name: after, action: core.noop}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert names(final).count("after") == 2


async def test_unreachable_join_fails_the_workflow(workflow, engine_factory) -> None:
    ref = workflow(
        "unreach",
        """
        tasks:
          - {name: start, action: core.noop, on_success: [good, bad]}
          - {name: good, action: core.noop, on_success: merge}
          - name: bad
            action: testpack.fail
            on_success: merge
            on_failure: recover
          - {name: recover, action: core.noop}
          - {name: merge, action: core.noop, join: all}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "failed"
    assert "unreachable join" in final.error["message"]
    assert final.error["task"] == "merge"
    assert "merge" not in names(final)


async def test_join_none_of_whose_edges_fired_is_simply_not_run(workflow, engine_factory) -> None:
    ref = workflow(
        "joinnone",
        """
        tasks:
          - {name: start, action: core.noop, on_success: [a, b]}
          - {name: a, action: core.noop, on_failure: merge}
          - {name: b, action: core.noop, on_failure: merge}
          - {name: merge, action: core.noop, join: all}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert "merge" not in names(final)


async def test_loops_run_until_their_condition_changes(workflow, engine_factory) -> None:
    ref = workflow(
        "loop",
        """
        vars: {i: 0}
        tasks:
          - {name: init, action: core.noop, on_success: step}
          - name: step
            action: core.noop
            next:
              - when: "{{ succeeded() }}"
                publish: {i: "{{ vars.i + 1 }}"}
              - when: "{{ vars.i < 4 }}"
                do: step
        output_map: {i: "{{ vars.i }}"}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert names(final) == ["init"] + ["step"] * 4
    assert final.output == {"i": 4}


async def test_parallel_group_runs_subtasks_together_and_collects_results(workflow, engine_factory) -> None:
    ref = workflow(
        "par",
        """
        tasks:
          - name: checks
            type: parallel
            tasks:
              - {name: db, action: core.echo, input: {ok: db}}
              - {name: cache, action: testpack.wait, input: {seconds: 0.05, value: cache}}
            on_success: deploy
          - name: deploy
            action: core.echo
            input: {checks: "{{ task.checks.result }}"}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert names(final)[0] == "checks"
    assert set(names(final)[1:3]) == {"db", "cache"}
    assert names(final)[3] == "deploy"
    assert final.task("deploy").result == {"checks": {"db": {"ok": "db"}, "cache": "cache"}}


async def test_parallel_group_fails_after_the_others_end(workflow, engine_factory) -> None:
    ref = workflow(
        "parfail",
        """
        tasks:
          - name: checks
            type: parallel
            tasks:
              - {name: bad, action: testpack.fail}
              - {name: slow, action: testpack.wait, input: {seconds: 0.1, value: done}}
            on_failure: handle
          - {name: handle, action: core.noop}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    group = final.task("checks")
    assert group.status == "failed"
    assert final.task("slow").status == "succeeded"
    assert group.ended_at >= final.task("slow").ended_at
    assert group.result == {"bad": {"partial": True}, "slow": "done"}
    assert names(final)[-1] == "handle"


async def test_with_items_results_in_item_order(workflow, engine_factory) -> None:
    ref = workflow(
        "items",
        """
        parameters:
          numbers: {type: array}
        tasks:
          - name: squares
            action: testpack.square
            with_items: "{{ parameters.numbers }}"
            input: {n: "{{ item }}"}
        output_map:
          squares: "{{ task.squares.result }}"
    """,
    )
    final = await run(await engine_factory(), ref, {"numbers": [3, 1, 2]})
    assert final.status == "succeeded"
    assert final.output == {"squares": [9, 1, 4]}
    assert [it["index"] for it in final.task("squares").items] == [0, 1, 2]


async def test_with_items_batch_size_bounds_items_in_flight(workflow, engine_factory) -> None:
    ref = workflow(
        "batch",
        """
        tasks:
          - name: waits
            action: testpack.wait
            with_items: "{{ range(6) | list }}"
            batch_size: 2
            input: {seconds: 0.03, value: "{{ index }}"}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    items = final.task("waits").items
    assert [it["result"] for it in items] == [0, 1, 2, 3, 4, 5]
    events = sorted(
        [(it["started_at"], 1) for it in items] + [(it["ended_at"], -1) for it in items],
        key=lambda e: (e[0], e[1]),
    )
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak <= 2


async def test_with_items_failure_stops_new_items(workflow, engine_factory) -> None:
    ref = workflow(
        "itemfail",
        """
        tasks:
          - name: squares
            action: testpack.square
            with_items: [1, -1, 2, 3]
            batch_size: 1
            input: {n: "{{ item }}"}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "failed"
    run_ = final.task("squares")
    assert run_.status == "failed"
    assert run_.result == [1, None, None, None]
    assert [it["status"] for it in run_.items] == ["succeeded", "failed", "canceled", "canceled"]
    assert "negative: -1" in final.error["message"]


async def test_with_items_over_an_empty_list_succeeds(workflow, engine_factory) -> None:
    ref = workflow(
        "noitems",
        """
        tasks:
          - {name: none, action: core.noop, with_items: [], on_success: after}
          - {name: after, action: core.noop}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert final.task("none").result == []
    assert names(final) == ["none", "after"]


async def test_retry_policy_counts_attempts_on_one_run(workflow, engine_factory, tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    ref = workflow(
        "retry",
        f"""
        tasks:
          - name: flaky
            action: testpack.flaky
            input: {{succeed_on: 3, log_file: "{log}"}}
            retry: {{count: 5, delay: 0.01, backoff: exponential, max_delay: 0.02}}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert len(final.tasks) == 1
    assert final.task("flaky").attempts == 3
    assert final.task("flaky").result == {"attempt": 3}


async def test_retry_gives_up_after_count_and_when_decides(workflow, engine_factory) -> None:
    ref = workflow(
        "retrylimit",
        """
        tasks:
          - name: exhausted
            action: testpack.flaky
            input: {succeed_on: 10}
            retry: {count: 2}
            on_failure: picky
          - name: picky
            action: testpack.fail
            input: {message: permanent}
            retry:
              count: 5
              when: "{{ 'transient' in error() }}"
            on_failure: noop
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert final.task("exhausted").attempts == 3
    assert final.task("exhausted").status == "failed"
    assert final.task("picky").attempts == 1


async def test_task_delay_postpones_the_first_dispatch(workflow, engine_factory) -> None:
    ref = workflow(
        "delay",
        """
        tasks:
          - {name: first, action: core.noop, on_success: later}
          - {name: later, action: core.noop, delay: 0.2}
    """,
    )
    final = await run(await engine_factory(), ref)
    from datetime import datetime

    def ts(s: str) -> float:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    assert final.status == "succeeded"
    assert ts(final.task("later").started_at) - ts(final.task("first").ended_at) >= 0.19


async def test_workflow_timeout_stops_running_runs(workflow, engine_factory) -> None:
    ref = workflow(
        "wftimeout",
        """
        timeout: 0.2
        tasks:
          - {name: forever, action: testpack.wait, input: {seconds: 30}, on_success: never}
          - {name: never, action: core.noop}
        output_map: {status: "{{ task.forever.status }}"}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "timeout"
    assert final.task("forever").status == "canceled"
    assert final.output == {"status": "canceled"}


async def test_output_map_renders_on_failure_and_its_error_fails_success(workflow, engine_factory) -> None:
    failing = workflow(
        "outfail",
        """
        tasks:
          - {name: bad, action: testpack.fail}
        output_map: {bad_status: "{{ task.bad.status }}"}
    """,
    )
    broken = workflow(
        "outbroken",
        """
        tasks:
          - {name: ok, action: core.noop}
        output_map: {x: "{{ task.ok.result.missing }}"}
    """,
    )
    engine = await engine_factory()
    final = await run(engine, failing)
    assert final.status == "failed"
    assert final.output == {"bad_status": "failed"}
    final = await run(engine, broken)
    assert final.status == "failed"
    assert "missing" in final.error["message"]


async def test_nested_workflow_result_is_the_child_output(workflow, engine_factory) -> None:
    workflow(
        "child",
        """
        parameters:
          x: {type: integer, required: true}
        tasks:
          - {name: sq, action: testpack.square, input: {n: "{{ parameters.x }}"}}
        output_map: {squared: "{{ task.sq.result }}"}
    """,
    )
    ref = workflow(
        "parent",
        """
        tasks:
          - name: call
            action: testpack.child
            input: {x: 7}
            on_success: use
          - {name: use, action: core.echo, input: {got: "{{ task.call.result.squared }}"}}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert final.task("use").result == {"got": 49}


async def test_nested_workflow_failure_is_the_task_failure(workflow, engine_factory) -> None:
    workflow(
        "badchild",
        """
        tasks:
          - {name: boom, action: testpack.fail, input: {message: child broke}}
    """,
    )
    ref = workflow(
        "badparent",
        """
        tasks:
          - {name: call, action: testpack.badchild, on_failure: handle}
          - {name: handle, action: core.echo, input: {e: "{{ task.call.error }}"}}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded"
    assert final.task("call").status == "failed"
    assert "child broke" in final.task("handle").result["e"]


async def test_template_error_fails_the_workflow_naming_task_and_variable(workflow, engine_factory) -> None:
    ref = workflow(
        "tplerr",
        """
        tasks:
          - {name: use, action: core.echo, input: {v: "{{ parameters.nope }}"}}
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "failed"
    assert final.error["task"] == "use"
    assert "nope" in final.error["message"]
    assert "use" in final.error["message"]


async def test_parameters_are_validated_before_anything_runs(workflow, engine_factory) -> None:
    ref = workflow(
        "params",
        """
        parameters:
          name: {type: string, required: true}
          size: {type: integer, default: 3}
          env: {type: string, enum: [dev, prod], default: dev}
        tasks:
          - name: t
            action: core.echo
            input: {name: "{{ parameters.name }}", size: "{{ parameters.size }}"}
    """,
    )
    engine = await engine_factory()
    with pytest.raises(ParameterError, match="missing required parameter 'name'"):
        await engine.execute(ref, {})
    with pytest.raises(ParameterError, match="'size' must be of type integer"):
        await engine.execute(ref, {"name": "x", "size": "big"})
    with pytest.raises(ParameterError, match="'env' must be one of"):
        await engine.execute(ref, {"name": "x", "env": "qa"})
    with pytest.raises(ParameterError, match=r"unknown parameter 'nmae'.*did you mean 'name'"):
        await engine.execute(ref, {"nmae": "x"})
    assert await engine.list() == []
    final = await run(engine, ref, {"name": "x"})
    assert final.parameters == {"name": "x", "size": 3, "env": "dev"}
    assert final.task("t").result == {"name": "x", "size": 3}


async def test_parameter_values_are_data_never_templates(workflow, engine_factory) -> None:
    ref = workflow(
        "data",
        """
        parameters:
          text: {type: string}
          code: {type: string}
        tasks:
          - name: t
            action: core.echo
            input: {text: "{{ parameters.text }}", code: "{{ parameters.code }}"}
    """,
    )
    final = await run(await engine_factory(), ref, {"text": "{{ 7*7 }}", "code": "12345"})
    assert final.task("t").result == {"text": "{{ 7*7 }}", "code": "12345"}


async def test_context_scopes_system_pack_config_and_kv(workflow, engine_factory, tmp_path: Path) -> None:
    ref = workflow(
        "scopes",
        """
        tasks:
          - name: t
            action: core.echo
            input:
              id: "{{ system.execution_id }}"
              ref: "{{ system.workflow_ref }}"
              who: "{{ system.identity.login }}"
              greeting: "{{ pack.config.greeting }}"
              flag: "{{ kv.get('flags.new', default=false) }}"
              missing: "{{ kv.get('nothing') }}"
    """,
    )
    engine = await engine_factory()
    from attune_actors.kv import KVStore

    store = KVStore(tmp_path / "data" / "attune.db")
    store.set("flags.new", True)
    store.close()
    execution = await engine.execute(ref, {}, identity="alice")
    final = await engine.wait(execution.id, timeout=30)
    assert final.task("t").result == {
        "id": execution.id,
        "ref": ref,
        "who": "alice",
        "greeting": "hi",
        "flag": True,
        "missing": None,
    }


async def test_execution_document_has_the_spec_shape(workflow, engine_factory) -> None:
    ref = workflow(
        "doc",
        """
        tasks:
          - {name: t, action: core.echo, input: {a: 1}}
        output_map: {a: "{{ task.t.result.a }}"}
    """,
    )
    engine = await engine_factory()
    final = await run(engine, ref)
    doc = json.loads(json.dumps(final.to_dict()))
    assert set(doc) == {
        "id",
        "ref",
        "status",
        "parameters",
        "output",
        "error",
        "started_at",
        "ended_at",
        "parent_id",
        "rerun_of",
        "tasks",
    }
    assert set(doc["tasks"][0]) == {
        "id",
        "name",
        "status",
        "result",
        "error",
        "attempts",
        "started_at",
        "ended_at",
        "items",
        "inquiry_id",
    }
    assert doc["status"] == "succeeded"
    assert doc["parent_id"] is None
    assert (await engine.get(final.id)).to_dict() == final.to_dict()
    assert [e.id for e in await engine.list()] == [final.id]


async def test_core_sleep_waits_times_out_and_refuses_bad_seconds(workflow, engine_factory) -> None:
    # In-process, a sleep is a timer rather than a running task: the same outcomes as the runner.
    ref = workflow(
        "sleeps",
        """
        parameters:
          seconds: {type: number}
        tasks:
          - {name: nap, action: core.sleep, input: {seconds: 0.05}, on_success: long}
          - name: long
            action: core.sleep
            input: {seconds: "{{ parameters.seconds }}"}
            timeout: 0.2
            on_timeout: after
          - {name: after, action: core.noop}
    """,
    )
    engine = await engine_factory()
    final = await run(engine, ref, {"seconds": 30})
    assert final.status == "succeeded"
    assert [(t.name, t.status.value) for t in final.tasks] == [
        ("nap", "succeeded"), ("long", "timeout"), ("after", "succeeded"),
    ]
    assert final.task("long").error == "core.sleep timed out"
    bad = await run(engine, ref, {"seconds": -1})
    assert bad.status == "failed"
    assert bad.task("long").error == "parameter 'seconds' must be a number >= 0, not -1"


async def test_a_forced_cancel_stops_a_sleep_at_once(workflow, engine_factory) -> None:
    ref = workflow("park", "tasks:\n  - {name: nap, action: core.sleep, input: {seconds: 3600}}\n")
    engine = await engine_factory()
    execution = await engine.execute(ref)
    await execution_reaches(engine, execution.id, lambda x: bool(x.tasks) and x.tasks[0].status == "running")
    await engine.cancel(execution.id, force=True)
    final = await engine.wait(execution.id, timeout=30)
    assert final.status == "canceled"
    assert final.task("nap").status == "canceled"


async def test_run_functions_work_in_loops_and_see_the_run_that_just_ended(workflow, engine_factory) -> None:
    ref = workflow(
        "runfns",
        """
        tasks:
          - name: make
            action: core.echo
            input: {a: 1, b: 2}
            next:
              - when: "{% for k in result() %}{% if succeeded() and not failed() %}x{% endif %}{% endfor %}"
                publish: {keys: "{% for k in result() | sort %}{{ k }}{{ timed_out() }}{% endfor %}"}
                do: bad
          - name: bad
            action: testpack.fail
            next:
              - when: "{{ failed() and error() == 'boom' }}"
                publish: {after: "{{ succeeded() }}"}
        output_map:
          keys: "{{ vars.keys }}"
          after: "{{ vars.after }}"
    """,
    )
    final = await run(await engine_factory(), ref)
    assert final.status == "succeeded", (final.error, [(t.name, t.status, t.error) for t in final.tasks])
    assert final.output == {"keys": "aFalsebFalse", "after": False}
