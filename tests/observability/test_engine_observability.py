"""What an operator sees of an embedded engine: its Prometheus series and its finer events."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from attune_actors import Engine


def scrape(engine: Engine) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The engine's exposition, parsed: (sample name, sorted labels) -> value."""
    samples = {}
    for family in text_string_to_metric_families(engine.metrics.exposition().decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def collect(engine: Engine, execution_id: str, timeout: float = 20) -> list[dict[str, Any]]:
    """Every event of one execution until its terminal status."""
    events = []
    sub = engine.events(execution_id)
    try:
        async with asyncio.timeout(timeout):
            async for event in sub:
                events.append(event)
                if event["type"] == "execution" and event["execution_id"] == execution_id and \
                        event["status"] in ("succeeded", "failed", "canceled", "timeout"):
                    return events
    finally:
        sub.close()
    return events


async def test_metrics_count_executions_runs_attempts_and_retries(workflow, engine_factory) -> None:
    ok = workflow(
        "counted",
        """
        tasks:
          - {name: first, action: core.noop, next: [{do: second}]}
          - name: second
            action: testpack.flaky
            input: {succeed_on: 3}
            retry: {count: 3}
            next: [{do: third}]
          - {name: third, action: testpack.square, input: {n: 4}}
        """,
    )
    bad = workflow("broken", "tasks:\n  - {name: boom, action: testpack.fail, input: {message: nope}}\n")
    engine: Engine = await engine_factory()
    other: Engine = await engine_factory(data_dir=engine.settings.data_path.parent / "other")
    for _ in range(2):
        assert (await engine.wait((await engine.execute(ok)).id, timeout=20)).status == "succeeded"
    assert (await engine.wait((await engine.execute(bad)).id, timeout=20)).status == "failed"

    m = scrape(engine)
    assert m[("attune_executions_total", (("ref", ok), ("status", "succeeded")))] == 2
    assert m[("attune_executions_total", (("ref", bad), ("status", "failed")))] == 1
    assert m[("attune_executions_started_total", (("ref", ok),))] == 2
    assert m[("attune_task_runs_total", (("action", "core.noop"), ("status", "succeeded")))] == 2
    assert m[("attune_task_runs_total", (("action", "testpack.flaky"), ("status", "succeeded")))] == 2
    assert m[("attune_task_runs_total", (("action", "testpack.fail"), ("status", "failed")))] == 1
    # two failed attempts before the third succeeds, in each execution
    assert m[("attune_attempts_total", (("action", "testpack.flaky"), ("status", "failed")))] == 4
    assert m[("attune_attempts_total", (("action", "testpack.flaky"), ("status", "succeeded")))] == 2
    assert m[("attune_retries_total", (("action", "testpack.flaky"),))] == 4
    assert m[("attune_task_run_seconds_count", (("action", "testpack.square"),))] == 2
    assert m[("attune_task_run_seconds_bucket", (("action", "testpack.square"), ("le", "+Inf")))] == 2
    assert m[("attune_executions_running", ())] == 0
    assert m[("attune_runs_inflight", ())] == 0
    # the SQLite store's group commits: at least one per execution accepted (execute flushes)
    assert m[("attune_store_commit_seconds_count", ())] >= 3
    assert m[("attune_store_commit_rows_sum", ())] >= 3
    # another engine of the same process has its own registry
    assert ("attune_executions_total", (("ref", ok), ("status", "succeeded"))) not in scrape(other)


async def test_running_gauges_while_an_action_runs(workflow, engine_factory) -> None:
    ref = workflow("slow", "tasks:\n  - {name: nap, action: testpack.wait, input: {seconds: 30}}\n")
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    async with asyncio.timeout(10):
        async for event in events:
            if event["type"] == "task" and event["status"] == "running":
                break
    events.close()
    m = scrape(engine)
    assert m[("attune_executions_running", ())] == 1
    assert m[("attune_runs_inflight", ())] == 1
    assert m[("attune_event_subscribers", ())] == 0
    await engine.cancel(execution.id)


async def test_retry_events_come_in_order(workflow, engine_factory) -> None:
    ref = workflow(
        "retrying",
        """
        tasks:
          - name: shaky
            action: testpack.flaky
            input: {succeed_on: 3}
            retry: {count: 3, delay: 0.05}
        """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    events = await collect(engine, execution.id)
    story = [(e["type"], e.get("attempt" if e["type"] == "retry" else "attempts"), e["status"])
             for e in events if e["type"] in ("retry", "task")]
    assert story[-1] == ("task", 3, "succeeded")
    retries = [e for e in events if e["type"] == "retry"]
    told = [(r["attempt"], r["next_attempt"], r["status"]) for r in retries]
    assert told == [(1, 2, "failed"), (2, 3, "failed")]
    assert retries[0]["error"] == "attempt 1 failed"
    assert retries[0]["task"] == "shaky"
    # each retry is announced before the attempt it schedules shows up as running
    first_retry = story.index(("retry", 1, "failed"))
    assert ("task", 2, "running") in story[first_retry:]
    assert story.index(("retry", 2, "failed")) > story.index(("task", 2, "running"))
    assert retries[0]["at"] is not None


async def test_item_progress_is_batched_and_in_order(workflow, engine_factory) -> None:
    ref = workflow(
        "many",
        """
        parameters:
          n: {type: integer}
        tasks:
          - name: each
            action: testpack.wait
            with_items: "{{ range(parameters.n) | list }}"
            concurrency: 5
            input: {seconds: 0.02, value: "{{ item }}"}
        """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref, {"n": 60})
    events = await collect(engine, execution.id)
    progress = [e for e in events if e["type"] == "progress"]
    done = [p["items_done"] for p in progress]
    assert done == sorted(set(done)), done  # strictly increasing
    assert done[-1] == 60
    assert progress[-1]["items_total"] == 60
    assert progress[-1]["items_failed"] == 0
    # about 12 waves of 5 items, 20 ms each: several events, but fewer than one per item
    assert 2 < len(progress) < 60
    last_task = max(i for i, e in enumerate(events) if e["type"] == "task")
    assert events.index(progress[-1]) < last_task  # the final count comes before the run's end
    assert events[last_task]["status"] == "succeeded"


async def test_spans_of_an_execution_its_tasks_attempts_and_nested_workflow(workflow, engine_factory) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    workflow("inner", "tasks:\n  - {name: sq, action: testpack.square, input: {n: 3}}\n")
    outer = workflow(
        "outer",
        """
        tasks:
          - name: shaky
            action: testpack.flaky
            input: {succeed_on: 2}
            retry: {count: 1}
            next: [{do: nested}]
          - {name: nested, action: testpack.inner}
        """,
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine: Engine = await engine_factory(tracer_provider=provider)
    final = await engine.wait((await engine.execute(outer)).id, timeout=20)
    assert final.status == "succeeded"
    spans = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [root] = by_name["execution testpack.outer"]
    assert root.parent is None
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}  # one trace
    [shaky] = by_name["task shaky"]
    assert shaky.parent.span_id == root.context.span_id
    assert shaky.attributes["attune.attempt"] == 2
    attempts = sorted(by_name["attempt shaky"], key=lambda s: s.attributes["attune.attempt"])
    assert [(a.attributes["attune.attempt"], a.attributes["attune.status"]) for a in attempts] == [
        (1, "failed"), (2, "succeeded")]
    assert all(a.parent.span_id == shaky.context.span_id for a in attempts)
    assert attempts[0].status.status_code.name == "ERROR"
    [nested_task] = by_name["task nested"]
    [inner] = by_name["execution testpack.inner"]
    assert inner.parent.span_id == nested_task.context.span_id
    [sq] = by_name["task sq"]
    assert sq.parent.span_id == inner.context.span_id
    assert root.attributes["attune.status"] == "succeeded"
