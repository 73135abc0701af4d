"""The seed's examples (packs/examples) run to the outcomes packs/examples/expected.yaml records."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

import attune_actors
from attune_actors import Engine
from attune_actors.clock import VirtualClock

REPO = Path(__file__).resolve().parents[2]
CASES = yaml.safe_load((REPO / "packs" / "examples" / "expected.yaml").read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("examples")


async def answer_inquiries(engine: Engine, execution_id: str, responses: dict[str, Any]) -> None:
    """Answer each named task's inquiry once it is pending, as a person would."""
    events = engine.events(execution_id)
    try:
        remaining = dict(responses)
        pending = await engine.inquiries(execution_id=execution_id)
        async for _ in _with_initial(events, bool(pending)):
            for inquiry in await engine.inquiries(execution_id=execution_id):
                if inquiry["task"] in remaining:
                    await engine.respond(inquiry["id"], remaining.pop(inquiry["task"]))
            if not remaining:
                return
    finally:
        events.close()


async def _with_initial(events: Any, fire_now: bool) -> Any:
    if fire_now:
        yield None
    async for event in events:
        yield event


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_example(case: dict[str, Any], data_dir: Path) -> None:
    # Virtual time: retry delays (50 s in deploy-health-fails) pass as soon as the engine is idle.
    clock = VirtualClock()
    async with Engine(packs=[REPO / "packs"], data_dir=data_dir, clock=clock) as engine:
        if "raises" in case:
            error_class = getattr(attune_actors, case["raises"])
            with pytest.raises(error_class, match=case.get("error_contains", "")):
                await engine.execute(case["workflow"], case["parameters"])
            return
        started = clock.now()
        execution = await engine.execute(case["workflow"], case["parameters"])
        if case.get("responses"):
            await asyncio.wait_for(answer_inquiries(engine, execution.id, case["responses"]), 30)
        final = await engine.wait(execution.id, timeout=120)
        elapsed = clock.now() - started

    assert final.status == case["status"], final.error
    assert final.output == case["output"]
    # Waves: consecutive runs, each wave's set of task names started together.
    runs = [t.name for t in final.tasks]
    position = 0
    for wave in case["waves"]:
        assert set(runs[position : position + len(wave)]) == set(wave), runs
        position += len(wave)
    assert position == len(runs), runs
    for name, status in case.get("task_status", {}).items():
        assert final.task(name).status == status, name
    for name, attempts in case.get("attempts", {}).items():
        assert final.task(name).attempts == attempts, name
    for name, statuses in case.get("items", {}).items():
        assert [it["status"] for it in final.task(name).items] == statuses
    for name, result in case.get("task_results", {}).items():
        assert final.task(name).result == result, name
    if "min_seconds" in case:
        assert elapsed >= case["min_seconds"]
