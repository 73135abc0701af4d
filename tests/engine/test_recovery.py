"""Durable executions: restart resumes, history survives, rerun keeps what completed (SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import execution_reaches

from attune_actors import Engine, ParameterError


async def test_restart_resumes_running_paused_and_pending_executions(workflow, packs_dir, tmp_path) -> None:
    log = tmp_path / "attempts.log"
    slow = workflow(
        "slowseq",
        f"""
        tasks:
          - {{name: a, action: testpack.flaky, input: {{succeed_on: 1, log_file: "{log}"}}, on_success: b}}
          - {{name: b, action: testpack.wait, input: {{seconds: 30}}, on_success: c}}
          - {{name: c, action: core.echo, input: {{done: true}}}}
    """,
    )
    paused = workflow(
        "topause",
        """
        tasks:
          - {name: x, action: testpack.wait, input: {seconds: 0.01}, on_success: y}
          - {name: y, action: core.noop}
    """,
    )
    asking = workflow(
        "asking",
        """
        tasks:
          - {name: q, action: core.inquiry, input: {prompt: "ok?", schema: {type: boolean}}}
    """,
    )
    data = tmp_path / "data"
    first = Engine(packs=[packs_dir], data_dir=data)
    await first.start()
    e1 = await first.execute(slow)
    e2 = await first.execute(paused)
    await first.pause(e2.id)
    e3 = await first.execute(asking)
    await execution_reaches(
        first, e1.id, lambda e: any(t.name == "b" and t.status == "running" for t in e.tasks)
    )
    await execution_reaches(first, e2.id, lambda e: e.status == "paused")
    await execution_reaches(first, e3.id, lambda e: e.tasks and e.tasks[0].status == "pending")
    inquiry_id = (await first.get(e3.id)).tasks[0].inquiry_id
    await first.close()  # as if the process ended: nothing is finished

    second = Engine(packs=[packs_dir], data_dir=data)
    await second.start()
    try:
        assert (await second.get(e2.id)).status == "paused"
        [pending] = await second.inquiries()
        assert pending["id"] == inquiry_id
        await second.respond(inquiry_id, True)
        await second.resume(e2.id)
        assert (await second.wait(e3.id, timeout=10)).task("q").result is True
        assert (await second.wait(e2.id, timeout=10)).status == "succeeded"
        running = await second.get(e1.id)
        assert running.status == "running"
        # `a` finished before the restart: it is never dispatched again.
        assert [json.loads(line)["attempt"] for line in log.read_text().splitlines()] == [1]
        assert running.task("a").status == "succeeded"
        assert running.task("b").status == "running"
        await second.cancel(e1.id, force=True)
        assert (await second.wait(e1.id, timeout=10)).status == "canceled"
        history = {e.id: e.status for e in await second.list()}
        assert history == {e1.id: "canceled", e2.id: "succeeded", e3.id: "succeeded"}
    finally:
        await second.close()


async def test_timers_keep_their_original_deadlines(workflow, packs_dir, tmp_path) -> None:
    ref = workflow(
        "deadline",
        """
        timeout: 1.0
        tasks:
          - {name: forever, action: testpack.wait, input: {seconds: 30}}
    """,
    )
    data = tmp_path / "data"
    first = Engine(packs=[packs_dir], data_dir=data)
    await first.start()
    execution = await first.execute(ref)
    await execution_reaches(first, execution.id, lambda e: e.tasks and e.tasks[0].status == "running")
    await first.close()
    second = Engine(packs=[packs_dir], data_dir=data)
    await second.start()
    try:
        final = await second.wait(execution.id, timeout=10)
    finally:
        await second.close()
    assert final.status == "timeout"
    from datetime import datetime

    def ts(s: str) -> float:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    # The workflow timeout counted from the original start, not from the restart.
    assert ts(final.ended_at) - ts(final.started_at) < 5


async def test_rerun_from_the_failed_task_keeps_completed_results(workflow, engine_factory, tmp_path) -> None:
    flag = tmp_path / "broken"
    flag.write_text("yes")
    ref = workflow(
        "rerunme",
        f"""
        tasks:
          - {{name: first, action: core.echo, input: {{n: 1}}, on_success: risky}}
          - name: risky
            action: core.local
            input: {{cmd: "test ! -e {flag}"}}
            on_success: last
          - {{name: last, action: core.echo, input: {{n: "{{{{ task.first.result.n + 1 }}}}"}}}}
        output_map: {{n: "{{{{ task.last.result.n }}}}"}}
    """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    failed = await engine.wait(execution.id, timeout=10)
    assert failed.status == "failed"
    with pytest.raises(ParameterError, match="no task 'nope'"):
        await engine.rerun(execution.id, tasks=["nope"])
    flag.unlink()
    rerun = await engine.rerun(execution.id)
    assert rerun.id != execution.id
    assert rerun.rerun_of == execution.id
    final = await engine.wait(rerun.id, timeout=10)
    assert final.status == "succeeded"
    assert final.output == {"n": 2}
    assert [(t.name, t.status) for t in final.tasks] == [
        ("first", "succeeded"),
        ("risky", "failed"),
        ("risky", "succeeded"),
        ("last", "succeeded"),
    ]
    original = await engine.get(execution.id)  # history is never overwritten
    assert original.status == "failed"
    assert [t.name for t in original.tasks] == ["first", "risky"]
    with pytest.raises(ParameterError, match="succeeded"):
        await engine.rerun(rerun.id)


async def test_rerun_with_items_runs_only_failed_items(workflow, engine_factory, tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    ref = workflow(
        "rerunitems",
        f"""
        parameters:
          limit: {{type: integer, default: 2}}
        tasks:
          - name: items
            action: testpack.flaky
            with_items: "{{{{ range(4) | list }}}}"
            input: {{succeed_on: "{{{{ 1 if item < parameters.limit else 2 }}}}", log_file: "{log}"}}
    """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    failed = await engine.wait(execution.id, timeout=10)
    assert failed.status == "failed"
    assert [it["status"] for it in failed.task("items").items] == [
        "succeeded",
        "succeeded",
        "failed",
        "failed",
    ]
    before = len(log.read_text().splitlines())
    rerun = await engine.rerun(execution.id)
    final = await engine.wait(rerun.id, timeout=10)
    after = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    assert final.status == "failed"  # attempt 1 of the new run fails again for items 2 and 3
    assert sorted(e["item"] for e in after) == [2, 3]
    latest = final.tasks[-1]
    assert [it["status"] for it in latest.items] == ["succeeded", "succeeded", "failed", "failed"]


async def test_an_execution_accepted_but_never_started_starts_after_a_restart(workflow, packs_dir,
                                                                              tmp_path) -> None:
    from attune_actors.engine.runtime import Runtime

    ref = workflow("neverstarted", """
        tasks:
          - {name: only, action: core.echo, input: {ok: true}}
    """)
    data = tmp_path / "data"
    first = Engine(packs=[packs_dir], data_dir=data)
    await first.start()
    # What execute() makes durable before it returns, with the process gone before the first step.
    rt: Runtime = first._runtime()
    conductor = rt.new_conductor(first.catalog.action(ref), {})
    rt.save_step(conductor, [], [])
    await rt.store.flush()
    await first.close()
    second = Engine(packs=[packs_dir], data_dir=data)
    await second.start()
    try:
        final = await second.wait(conductor.id, timeout=10)
    finally:
        await second.close()
    assert final.status == "succeeded"
    assert final.task("only").result == {"ok": True}
