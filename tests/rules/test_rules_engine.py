"""Rules on a real engine (SQLite data dir): emit, webhooks, enforcement records, timers, sensors.

Timers and sensor backoff run on the engine's clock, here a `VirtualClock` the test moves by hand.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually as until

from attune_actors import Engine
from attune_actors.clock import VirtualClock
from attune_actors.errors import NotFoundError
from attune_actors.rules import post_webhook

PACKS = Path(__file__).parent / "packs"


async def ended(e: Engine, execution_id: str) -> Any:
    """The execution once terminal (polled: it may be stored a moment before `wait` can see it)."""

    async def done() -> Any:
        x = await e.get(execution_id)
        return x if x.status in ("succeeded", "failed", "timeout", "canceled") else None

    return await until(done)



def engine(tmp_path: Path, *packs: str, clock: VirtualClock | None = None) -> Engine:
    return Engine(packs=[PACKS / p for p in packs], data_dir=tmp_path / "data", clock=clock)


async def timer_in(clock: VirtualClock, seconds: float) -> None:
    """Wait until something sleeps on `clock` until `seconds` from now."""
    await until(lambda: clock.next_due() == clock.now() + seconds)


async def tags(e: Engine, count: int = 1) -> list[str]:
    """The `tag` outputs of the executions the rules started (at least `count`), oldest first, ended."""

    async def listed() -> Any:
        found = await e.list(limit=1000)
        return found if len(found) >= count else None

    found = []
    for execution in reversed(await until(listed)):
        final = await ended(e, execution.id)
        found.append(final.output["tag"])
    return found


async def test_webhook_starts_the_matching_rule_once_and_records_every_evaluation(tmp_path: Path) -> None:
    async with engine(tmp_path, "rt") as e:
        first = await post_webhook(e, "hook", {"n": 2})
        skipped = await e.emit("core.webhook", {"n": 1}, name="hook")
        assert await tags(e) == ["hook 2"]
        (record,) = await e.enforcements(trigger_instance_id=first)
        assert (record["rule"], record["matched"], record["error"]) == ("rt.on_hook", True, None)
        execution = await e.get(record["execution_id"])
        assert execution.status == "succeeded"
        (miss,) = await e.enforcements(trigger_instance_id=skipped)
        assert (miss["matched"], miss["execution_id"]) == (False, None)


async def test_the_same_instance_id_enforces_once(tmp_path: Path) -> None:
    async with engine(tmp_path, "rt") as e:
        for _ in range(3):
            await e.emit("core.webhook", {"n": 5}, name="hook", instance_id="delivery-1")
        assert await tags(e) == ["hook 5"]
        assert len(await e.enforcements(rule="rt.on_hook")) == 1
    async with engine(tmp_path, "rt") as e:  # and across a restart
        await e.emit("core.webhook", {"n": 5}, name="hook", instance_id="delivery-1")
        assert len(await e.list()) == 1


async def test_unknown_webhooks_and_trigger_types_are_refused(tmp_path: Path) -> None:
    async with engine(tmp_path, "rt") as e:
        with pytest.raises(NotFoundError, match="no rule listens on webhook 'nope'"):
            await post_webhook(e, "nope", {})
        with pytest.raises(NotFoundError, match=r"unknown trigger type 'rt\.nothing'"):
            await e.emit("rt.nothing", {})
        assert await e.list() == []


async def test_a_disabled_rule_does_not_fire_and_stays_disabled_after_a_restart(tmp_path: Path) -> None:
    async with engine(tmp_path, "rt") as e:
        assert (await e.disable_rule("rt.on_hook"))["enabled"] is False
        await e.emit("core.webhook", {"n": 9}, name="hook")
        assert await e.list() == []
        assert await e.enforcements() == []
    async with engine(tmp_path, "rt") as e:
        assert (await e.get_rule("rt.on_hook"))["enabled"] is False
        await e.enable_rule("rt.on_hook")
        await e.emit("core.webhook", {"n": 9}, name="hook")
        assert await tags(e) == ["hook 9"]


async def test_a_parameter_that_does_not_fit_is_recorded_as_the_reason(tmp_path: Path) -> None:
    async with engine(tmp_path, "rt") as e:
        # `n` is a list here: "hook [2, 3]" renders, but gt fails -> not matched, nothing started.
        await e.emit("core.webhook", {"n": [2, 3]}, name="hook")
        (record,) = await e.enforcements()
        assert record["matched"] is False
        assert await e.list() == []


async def test_an_interval_rule_fires_once_per_period_and_survives_a_restart(tmp_path: Path) -> None:
    clock = VirtualClock(1_700_000_000.0, auto_advance=False)
    async with engine(tmp_path, "rt", clock=clock) as e:
        await e.enable_rule("rt.every")
        for fired in (1, 2, 3):
            await timer_in(clock, 10)
            clock.advance(10)
            await until(lambda: _count(e, fired))  # noqa: B023 - awaited before the loop moves on
        assert len(await tags(e, 3)) == 3
        # 5 s into the next period: nothing fires
        await timer_in(clock, 10)
        clock.advance(5)
        await asyncio.sleep(0.05)  # deliberate: giving a wrongly woken timer time to fire
        assert len(await e.enforcements()) == 3
    # Restarted 30 s later (within catchup): the one missed fire is made up once, the rest skipped.
    clock.advance(30)
    async with engine(tmp_path, "rt", clock=clock) as e:
        await until(lambda: _count(e, 4))
        assert (await e.get_rule("rt.every"))["timer"]["missed"] == 2
        fired = [r["trigger_instance_id"] for r in await e.enforcements()]
        assert len(set(fired)) == 4
        await timer_in(clock, 5)  # restarted at +65 s: the next period is +70 s
        await e.disable_rule("rt.every")  # stops at once: the next period fires nothing
        clock.advance(10)
        await asyncio.sleep(0.05)  # deliberate: giving a stopped timer time to misfire
        assert len(await e.enforcements()) == 4
        assert len(await tags(e, 4)) == 4


async def _count(e: Engine, n: int) -> bool:
    return len(await e.enforcements()) >= n


async def test_a_crashing_sensor_is_restarted_with_backoff(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(PACKS / "sensing", packs / "sensing")
    (packs / "sensing" / "config.yaml").write_text(f"counter_file: {tmp_path / 'polls'}\n")
    clock = VirtualClock(1_700_000_000.0, auto_advance=False)
    async with Engine(packs=[packs], data_dir=tmp_path / "data", clock=clock) as e:

        async def sensor() -> dict[str, Any]:
            (trigger,) = [t for t in await e.list_triggers() if t["type"] == "sensing.tick"]
            return trigger["sensor"]  # type: ignore[no-any-return]

        await until(lambda: (tmp_path / "polls").exists())
        await timer_in(clock, 1)  # the restarted sensor waits out its first backoff (1 s)
        state = await sensor()
        assert (state["status"], state["restarts"]) == ("backoff", 1)
        assert "flaky sensor fails poll 1" in state["last_error"]
        clock.advance(0.9)
        await asyncio.sleep(0.05)  # deliberate: a sensor polled before its backoff would show here
        assert (tmp_path / "polls").read_text() == "1"
        clock.advance(0.1)
        await until(lambda: (tmp_path / "polls").read_text() == "2")
        await timer_in(clock, 2)  # second backoff: 2 s
        assert (await sensor())["restarts"] == 2
        clock.advance(2)
        assert await tags(e) == ["tick 3"]
        assert (await sensor())["status"] == "running"


async def test_enforcements_list_on_the_command_line_shows_what_each_rule_did(tmp_path: Path) -> None:
    async with engine(tmp_path, "rt") as e:
        started = await post_webhook(e, "hook", {"n": 2})
        skipped = await e.emit("core.webhook", {"n": 1}, name="hook")
        await tags(e)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "attune_actors.cli", "enforcements", "list", "--json",
        "--data-dir", str(tmp_path / "data"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    records = {r["trigger_instance_id"]: r for r in json.loads(out)}
    assert records[started]["rule"] == "rt.on_hook"
    assert records[started]["matched"] is True
    assert records[started]["execution_id"]
    assert (records[skipped]["matched"], records[skipped]["execution_id"]) == (False, None)
