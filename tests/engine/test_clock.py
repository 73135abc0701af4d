"""The clock seam: a VirtualClock skips retry delays, `delay:` and expiries, never a running action."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from attune_actors import Engine
from attune_actors.clock import RealClock, VirtualClock


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def run(engine: Engine, ref: str, params: dict[str, Any] | None = None) -> Any:
    execution = await engine.execute(ref, params or {})
    return await engine.wait(execution.id, timeout=30)


def test_advance_runs_due_callbacks_in_time_order_at_their_time() -> None:
    clock = VirtualClock(start=1000.0, auto_advance=False)
    seen: list[tuple[str, float]] = []
    clock.call_at(1005.0, lambda: seen.append(("b", clock.now())))
    clock.call_later(2.0, lambda: seen.append(("a", clock.now())))
    late = clock.call_at(1020.0, lambda: seen.append(("late", clock.now())))
    canceled = clock.call_at(1001.0, lambda: seen.append(("canceled", clock.now())))
    canceled.cancel()
    # A callback that schedules another inside the step sees it run in the same advance.
    clock.call_at(1006.0, lambda: clock.call_later(1.0, lambda: seen.append(("chained", clock.now()))))

    assert clock.advance(10.0) == 4
    assert seen == [("a", 1002.0), ("b", 1005.0), ("chained", 1007.0)]
    assert clock.now() == 1010.0
    assert clock.next_due() == 1020.0
    late.cancel()
    assert clock.next_due() is None
    assert clock.advance_to(900.0) == 0
    assert clock.now() == 1010.0  # time never goes back


async def test_real_clock_timers_run_on_the_loop() -> None:
    clock = RealClock()
    fired = asyncio.Event()
    clock.call_at(clock.now() - 5, fired.set)  # already due: runs on the next turn
    await asyncio.wait_for(fired.wait(), 5)


async def test_retry_delays_and_task_delay_pass_in_virtual_time(workflow, engine_factory) -> None:
    ref = workflow(
        "slowretry",
        """
        tasks:
          - name: flaky
            action: testpack.flaky
            input: {succeed_on: 3}
            retry: {count: 3, delay: 3600}
            on_success: tomorrow
          - {name: tomorrow, action: core.noop, delay: 86400}
        """,
    )
    clock = VirtualClock()
    started = clock.now()
    final = await run(await engine_factory(clock=clock), ref)
    assert final.status == "succeeded"
    assert final.task("flaky").attempts == 3
    # Two retry delays of an hour, then a day's delay: all honoured, in the engine's time.
    assert ts(final.task("tomorrow").started_at) - ts(final.task("flaky").ended_at) >= 86400 - 0.001
    assert clock.now() - started >= 2 * 3600 + 86400


async def test_virtual_time_waits_for_a_running_action(workflow, engine_factory) -> None:
    ref = workflow(
        "slowaction",
        """
        timeout: 60
        tasks:
          - {name: slow, action: testpack.wait, input: {seconds: 0.3, value: done}}
        output_map: {value: "{{ task.slow.result }}"}
        """,
    )
    # The workflow timeout is the only timer while the action sleeps (in real time): it must not
    # be skipped to while the action is in flight.
    final = await run(await engine_factory(clock=VirtualClock()), ref)
    assert final.status == "succeeded"
    assert final.output == {"value": "done"}


async def test_an_unanswered_inquiry_expires_in_virtual_time(workflow, engine_factory) -> None:
    ref = workflow(
        "ask",
        """
        tasks:
          - name: approve
            action: core.inquiry
            input: {prompt: "ok?", timeout: 3600}
            on_timeout: expired
          - {name: expired, action: core.noop}
        """,
    )
    clock = VirtualClock()
    final = await run(await engine_factory(clock=clock), ref)
    assert final.task("approve").status == "timeout"
    assert [t.name for t in final.tasks] == ["approve", "expired"]
    assert ts(final.task("approve").ended_at) - ts(final.task("approve").started_at) >= 3600 - 0.001


async def test_the_tasks_timeout_bounds_an_inquiry_too(workflow, engine_factory) -> None:
    ref = workflow(
        "ask_briefly",
        """
        tasks:
          - name: approve
            action: core.inquiry
            timeout: 60
            input: {prompt: "ok?", timeout: 3600}
            next:
              - {when: "{{ succeeded() }}", do: approved}
            on_timeout: expired
          - {name: approved, action: core.noop}
          - {name: expired, action: core.noop}
        """,
    )
    final = await run(await engine_factory(clock=VirtualClock()), ref)
    assert [(t.name, t.status) for t in final.tasks] == [("approve", "timeout"), ("expired", "succeeded")]
    waited = ts(final.task("approve").ended_at) - ts(final.task("approve").started_at)
    assert 60 - 0.001 <= waited < 3600
