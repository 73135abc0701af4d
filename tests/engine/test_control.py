"""Pause, resume, cancel, inquiries and the event stream (SPEC section 3; issue: control messages)."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually

from attune_actors import Engine, InquiryResponseError
from attune_actors.config import load_settings
from attune_actors.engine.events import Subscription

Predicate = Callable[[dict[str, Any]], bool]


async def next_event(sub: Subscription, predicate: Predicate, timeout: float = 10) -> dict[str, Any]:
    """The first event (from now on) that matches; fails the test after `timeout` seconds."""

    async def scan() -> dict[str, Any]:
        async for event in sub:
            if predicate(event):
                return event
        raise AssertionError("event stream closed")

    return await asyncio.wait_for(scan(), timeout)


def is_task(name: str, status: str) -> Predicate:
    return lambda e: e["type"] == "task" and e["name"] == name and e["status"] == status


def is_execution(status: str, execution_id: str | None = None) -> Predicate:
    return lambda e: (
        e["type"] == "execution"
        and e["status"] == status
        and (execution_id is None or e["id"] == execution_id)
    )


def now_ms() -> float:
    """Now, truncated to the milliseconds documents show times with."""
    return math.floor(time.time() * 1000) / 1000


def ts(iso: str | None) -> float:
    from datetime import datetime

    assert iso is not None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def test_pause_around_a_join(workflow, engine_factory) -> None:
    ref = workflow(
        "pjoin",
        """
        tasks:
          - {name: start, action: core.noop, on_success: [left, right]}
          - {name: left, action: testpack.wait, input: {seconds: 0.1}, on_success: merge}
          - {name: right, action: testpack.wait, input: {seconds: 0.2}, on_success: merge}
          - {name: merge, action: core.noop, join: all}
    """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    await next_event(events, is_task("right", "running"))
    paused = await engine.pause(execution.id)
    assert paused.status in ("pausing", "paused")
    await next_event(events, is_execution("paused"))
    now = await engine.get(execution.id)
    assert now.status == "paused"
    # Both branches ended before `paused`; the join is staged, not dispatched.
    assert {t.name: t.status for t in now.tasks} == {
        "start": "succeeded",
        "left": "succeeded",
        "right": "succeeded",
        "merge": "scheduled",
    }
    assert now.task("merge").started_at is None
    resumed_at = now_ms()
    await engine.resume(execution.id)
    final = await engine.wait(execution.id, timeout=10)
    events.close()
    assert final.status == "succeeded"
    assert final.task("merge").status == "succeeded"
    assert ts(final.task("merge").started_at) >= resumed_at


async def test_no_new_item_while_paused(workflow, engine_factory) -> None:
    ref = workflow(
        "pitems",
        """
        tasks:
          - name: waits
            action: testpack.wait
            with_items: "{{ range(6) | list }}"
            batch_size: 2
            input: {seconds: 0.05, value: "{{ item }}"}
    """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    await next_event(events, is_task("waits", "running"))
    await engine.pause(execution.id)
    await next_event(events, is_execution("paused"))
    paused_at = now_ms()
    at_pause = (await engine.get(execution.id)).task("waits")
    started = [it for it in at_pause.items if it["started_at"] is not None]
    assert len(started) in (1, 2)
    assert all(it["status"] == "succeeded" for it in started)
    # Nothing is dispatched while paused, however long we look.
    await engine.get(execution.id)
    resumed_at = now_ms()
    await engine.resume(execution.id)
    final = await engine.wait(execution.id, timeout=10)
    events.close()
    assert final.status == "succeeded"
    items = final.task("waits").items
    assert [it["result"] for it in items] == [0, 1, 2, 3, 4, 5]
    for it in items[len(started) :]:
        assert ts(it["started_at"]) >= resumed_at >= paused_at


async def test_pause_and_resume_are_idempotent_and_accepted_before_start(workflow, engine_factory) -> None:
    ref = workflow(
        "pidem",
        """
        tasks:
          - {name: a, action: core.noop, on_success: b}
          - {name: b, action: core.noop}
    """,
    )
    engine: Engine = await engine_factory()
    events = engine.events()
    execution = await engine.execute(ref)
    await engine.pause(execution.id)
    await engine.pause(execution.id)
    await next_event(events, is_execution("paused", execution.id))
    paused = await engine.get(execution.id)
    assert paused.status == "paused"
    assert [t.name for t in paused.tasks if t.started_at] in ([], ["a"])
    await engine.resume(execution.id)
    await engine.resume(execution.id)
    final = await engine.wait(execution.id, timeout=10)
    events.close()
    assert final.status == "succeeded"
    assert [t.name for t in final.tasks] == ["a", "b"]


async def test_cancel_allow_finish_lets_running_runs_end(workflow, engine_factory) -> None:
    ref = workflow(
        "callow",
        """
        tasks:
          - {name: slow, action: testpack.wait, input: {seconds: 0.2, value: done}, on_success: next}
          - {name: next, action: core.noop}
    """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    await next_event(events, is_task("slow", "running"))
    assert (await engine.cancel(execution.id)).status in ("canceling", "canceled")
    final = await engine.wait(execution.id, timeout=10)
    events.close()
    assert final.status == "canceled"
    assert final.task("slow").status == "succeeded"
    assert final.task("slow").result == "done"
    assert [t.name for t in final.tasks] == ["slow"]


@pytest.mark.parametrize("how", ["policy", "force"])
async def test_cancel_running_kills_the_subprocess(
    how: str, workflow, engine_factory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    policy = "cancel_running" if how == "policy" else "allow_finish"
    ref = workflow(
        f"ckill{how}",
        f"""
        cancellation_policy: {policy}
        tasks:
          - name: long
            action: core.local
            input: {{cmd: "echo $$ > {pidfile}; exec sleep 30"}}
    """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    await eventually(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    pid = int(pidfile.read_text())
    await engine.cancel(execution.id, force=how == "force")
    final = await engine.wait(execution.id, timeout=15)
    assert final.status == "canceled"
    assert final.task("long").status == "canceled"

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(gone, timeout=15)


async def test_cancel_right_after_execute_does_not_hang(workflow, engine_factory) -> None:
    ref = workflow(
        "cfast",
        """
        tasks:
          - {name: a, action: testpack.wait, input: {seconds: 5}}
    """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    await engine.cancel(execution.id)
    await engine.cancel(execution.id)
    final = await engine.wait(execution.id, timeout=10)
    assert final.status == "canceled"
    assert all(t.status in ("canceled", "succeeded") for t in final.tasks)
    # Control messages on an ended execution are accepted and change nothing.
    assert (await engine.pause(execution.id)).status == "canceled"
    assert (await engine.resume(execution.id)).status == "canceled"


async def test_pause_resume_cancel_cascade_into_nested_workflows(workflow, engine_factory) -> None:
    workflow(
        "slowchild",
        """
        tasks:
          - {name: step1, action: testpack.wait, input: {seconds: 0.1}, on_success: step2}
          - {name: step2, action: testpack.wait, input: {seconds: 0.1}}
    """,
    )
    ref = workflow(
        "cascade",
        """
        tasks:
          - {name: call, action: testpack.slowchild, on_success: after}
          - {name: after, action: core.noop}
    """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    await next_event(events, is_task("step1", "running"))
    await engine.pause(execution.id)
    child_paused = await next_event(
        events,
        lambda e: e["type"] == "execution" and e["status"] == "paused" and e["parent_id"] == execution.id,
    )
    await next_event(events, is_execution("paused", execution.id))
    child = await engine.get(child_paused["id"])
    assert child.status == "paused"
    assert [(t.name, t.status) for t in child.tasks if t.started_at] == [("step1", "succeeded")]
    await engine.resume(execution.id)
    final = await engine.wait(execution.id, timeout=10)
    assert final.status == "succeeded"
    assert [t.name for t in (await engine.get(child.id)).tasks] == ["step1", "step2"]

    second = await engine.execute(ref)
    events2 = engine.events(second.id)
    await next_event(events2, is_task("step1", "running"))
    await engine.cancel(second.id)
    final = await engine.wait(second.id, timeout=10)
    events.close()
    events2.close()
    assert final.status == "canceled"
    nested = await engine.get(final.task("call").id + "-1")
    assert nested.status == "canceled"


INQUIRY = """
    tasks:
      - name: ask
        action: core.inquiry
        input:
          prompt: Ship it?
          schema:
            type: object
            properties: {approved: {type: boolean}}
            required: [approved]
        on_success: done
      - {name: done, action: core.echo, input: {answer: "{{ task.ask.result.approved }}"}}
"""


async def test_invalid_inquiry_response_is_refused_and_stays_pending(workflow, engine_factory) -> None:
    ref = workflow("inq", INQUIRY)
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    if not await engine.inquiries(execution_id=execution.id):
        await next_event(events, lambda e: e["type"] == "inquiry" and e["status"] == "pending")
    [inquiry] = await engine.inquiries(execution_id=execution.id)
    assert inquiry["prompt"] == "Ship it?"
    assert (await engine.get(execution.id)).task("ask").status == "pending"
    assert (await engine.get(execution.id)).task("ask").inquiry_id == inquiry["id"]
    with pytest.raises(InquiryResponseError, match="approved"):
        await engine.respond(inquiry["id"], {"approved": "yes"})
    with pytest.raises(InquiryResponseError, match="required"):
        await engine.respond(inquiry["id"], {})
    assert [i["id"] for i in await engine.inquiries()] == [inquiry["id"]]
    await engine.respond(inquiry["id"], {"approved": True})
    with pytest.raises(InquiryResponseError, match="not pending"):
        await engine.respond(inquiry["id"], {"approved": False})
    final = await engine.wait(execution.id, timeout=10)
    events.close()
    assert final.status == "succeeded"
    assert final.task("ask").result == {"approved": True}
    assert final.task("done").result == {"answer": True}


async def test_inquiry_checks_the_identity_when_users_are_set(workflow, engine_factory) -> None:
    ref = workflow(
        "inqusers",
        """
        tasks:
          - name: ask
            action: core.inquiry
            input: {prompt: "ok?", schema: {type: boolean}, users: [alice]}
    """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    if not await engine.inquiries(execution_id=execution.id):
        await next_event(events, lambda e: e["type"] == "inquiry")
    [inquiry] = await engine.inquiries(execution_id=execution.id)
    with pytest.raises(InquiryResponseError, match="alice"):
        await engine.respond(inquiry["id"], True, identity="mallory")
    await engine.respond(inquiry["id"], True, identity="alice")
    assert (await engine.wait(execution.id, timeout=10)).task("ask").result is True
    events.close()


async def test_two_parallel_inquiries_each_resume_the_workflow(workflow, engine_factory) -> None:
    ref = workflow(
        "inq2",
        """
        tasks:
          - name: approvals
            type: parallel
            tasks:
              - {name: security, action: core.inquiry, input: {prompt: "sec?", schema: {type: string}}}
              - {name: finance, action: core.inquiry, input: {prompt: "fin?", schema: {type: string}}}
            on_success: ship
          - {name: ship, action: core.echo, input: {all: "{{ task.approvals.result }}"}}
    """,
    )
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    while len(await engine.inquiries(execution_id=execution.id)) < 2:
        await next_event(events, lambda e: e["type"] == "inquiry")
    by_task = {i["task"]: i["id"] for i in await engine.inquiries(execution_id=execution.id)}
    assert (await engine.get(execution.id)).status == "pending"
    await engine.respond(by_task["finance"], "ok-fin")
    assert (await engine.get(execution.id)).status == "pending"  # still waiting for security
    await engine.respond(by_task["security"], "ok-sec")
    final = await engine.wait(execution.id, timeout=10)
    events.close()
    assert final.status == "succeeded"
    assert final.task("ship").result == {"all": {"security": "ok-sec", "finance": "ok-fin"}}


async def test_cancel_closes_pending_inquiries(workflow, engine_factory) -> None:
    ref = workflow("inqcancel", INQUIRY)
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    events = engine.events(execution.id)
    await next_event(events, lambda e: e["type"] == "inquiry" and e["status"] == "pending")
    [inquiry] = await engine.inquiries(execution_id=execution.id)
    await engine.cancel(execution.id)
    final = await engine.wait(execution.id, timeout=10)
    events.close()
    assert final.status == "canceled"
    assert final.task("ask").status == "canceled"
    with pytest.raises(InquiryResponseError, match="not pending"):
        await engine.respond(inquiry["id"], {"approved": True})


async def test_events_arrive_in_order_per_execution(workflow, engine_factory) -> None:
    ref = workflow(
        "evorder",
        """
        tasks:
          - {name: a, action: core.noop, on_success: b}
          - {name: b, action: testpack.wait, input: {seconds: 0.01}, on_success: c}
          - {name: c, action: core.noop}
    """,
    )
    engine: Engine = await engine_factory()
    events = engine.events()
    execution = await engine.execute(ref)
    seen: list[tuple[str, str]] = []
    async for event in events:
        if event.get("execution_id") != execution.id:
            continue
        seen.append((event.get("name") or "workflow", event["status"]))
        if event["type"] == "execution" and event["status"] == "succeeded":
            break
    events.close()
    assert seen[0] == ("workflow", "running")
    assert seen[-1] == ("workflow", "succeeded")
    order = [s for s in seen if s[0] != "workflow"]
    assert order == [
        ("a", "running"),
        ("a", "succeeded"),
        ("b", "running"),
        ("b", "succeeded"),
        ("c", "running"),
        ("c", "succeeded"),
    ] or order == [("a", "succeeded"), ("b", "running"), ("b", "succeeded"), ("c", "succeeded")]


async def test_a_stalled_consumer_gets_a_gap_marker_not_unbounded_memory(
    workflow, packs_dir, tmp_path
) -> None:
    ref = workflow(
        "evmany",
        """
        tasks:
          - name: many
            action: core.noop
            with_items: "{{ range(50) | list }}"
            on_success: after
          - {name: after, action: core.noop}
    """,
    )
    settings = load_settings(
        overrides={
            "packs": [str(packs_dir)],
            "data_dir": str(tmp_path / "d"),
            "limits": {"event_buffer": 5},
        },
        environ={},
    )
    async with Engine(settings=settings) as engine:
        stalled = engine.events()
        for _ in range(20):
            execution = await engine.execute(ref)
            await engine.wait(execution.id, timeout=10)
        assert stalled.pending() <= 6  # the buffer plus one gap marker, however much happened
        received = []
        while stalled.pending():
            received.append(await stalled.__anext__())
        stalled.close()
    assert len(received) == 5
    gap = await _gap_after(received, stalled)
    assert gap["missed"] > 0


async def _gap_after(received: list[dict[str, Any]], sub: Subscription) -> dict[str, Any]:
    """The gap marker the subscription owes after its buffered events."""
    return (
        await sub.__anext__()
        if not any(e["type"] == "gap" for e in received)
        else next(e for e in received if e["type"] == "gap")
    )
