"""Log records about an execution name its execution id and task (the action's own records too)."""

from __future__ import annotations

import logging

import pytest

from attune_actors import Engine
from attune_actors.logctx import ContextFilter


async def test_records_carry_execution_and_task(
    workflow, engine_factory, caplog: pytest.LogCaptureFixture
) -> None:
    ref = workflow(
        "talky",
        """
        tasks:
          - {name: speak, action: testpack.talk, input: {message: hi}, on_success: boom}
          - {name: boom, action: testpack.fail, input: {message: broken}}
    """,
    )
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO)
    engine: Engine = await engine_factory()
    execution = await engine.execute(ref)
    final = await engine.wait(execution.id, timeout=10)
    assert final.status == "failed"
    [spoken] = [r for r in caplog.records if r.name == "testpack.talk"]
    assert (spoken.execution_id, spoken.task) == (execution.id, "speak")  # type: ignore[attr-defined]
    [failing] = [r for r in caplog.records if "failing" in r.getMessage()]
    assert (failing.execution_id, failing.task) == (execution.id, "boom")  # type: ignore[attr-defined]
