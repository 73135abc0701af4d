"""Executions owned by the live process that runs them: several engines on one data dir (SPEC 8)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import eventually

from attune_actors import ConflictError, Engine

GATE = """
tasks:
  - {name: wait, action: core.local, input: {cmd: "while [ ! -e {go} ]; do sleep 0.02; done"}}
"""


@pytest.fixture
def gate(workflow, tmp_path: Path) -> str:
    ref: str = workflow("gate", GATE.replace("{go}", str(tmp_path / "go")))
    return ref


async def running(engine: Engine, execution_id: str) -> None:
    async def started() -> bool:
        return any(t.status == "running" for t in (await engine.get(execution_id)).tasks)

    await eventually(started, "the gate task to run", timeout=30)


async def test_an_engine_never_adopts_what_a_live_engine_runs(gate, packs_dir, tmp_path) -> None:
    data = tmp_path / "data"
    async with Engine(packs=[packs_dir], data_dir=data) as first:
        execution = await first.execute(gate)
        await running(first, execution.id)
        async with Engine(packs=[packs_dir], data_dir=data) as second:  # recover=True: adopts orphans
            assert not second.running_here(execution.id)
            assert second.owner(execution.id) is not None
            assert await second.interrupted() == []
            with pytest.raises(ConflictError, match="is run by process"):
                await second.adopt(execution.id)
        (tmp_path / "go").touch()
        final = await first.wait(execution.id, timeout=30)
    assert final.status == "succeeded"
    assert final.tasks[0].attempts == 1


async def test_what_a_closed_engine_left_is_interrupted_until_adopted(gate, packs_dir, tmp_path) -> None:
    data = tmp_path / "data"
    async with Engine(packs=[packs_dir], data_dir=data) as first:
        execution = await first.execute(gate)
        await running(first, execution.id)
    async with (Engine(packs=[packs_dir], data_dir=data, recover=False) as second,
                Engine(packs=[packs_dir], data_dir=data, recover=False) as third):
        assert [e.id for e in await second.interrupted()] == [execution.id]
        adopted = await asyncio.gather(second.adopt(execution.id), third.adopt(execution.id),
                                       return_exceptions=True)
        assert sorted(type(a).__name__ for a in adopted) == ["ConflictError", "Execution"]
        winner = second if second.running_here(execution.id) else third
        assert await third.interrupted() == []
        (tmp_path / "go").touch()
        final = await winner.wait(execution.id, timeout=30)
    assert final.status == "succeeded"
    assert final.tasks[0].attempts == 2  # the attempt that died with the first engine is counted
