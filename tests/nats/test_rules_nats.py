"""core.nats rules on a real nats-server: once per event, nothing lost while down, dedup by message id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
from helpers import eventually

from attune_actors import Engine
from attune_actors.config import NatsSettings, Settings

NatsServer = Any  # the nats_server fixture (tests/nats/conftest.py)

PACKS = Path(__file__).parent.parent / "rules" / "packs"


async def ended(e: Engine, execution_id: str) -> Any:
    """The execution once terminal (polled: it may be stored a moment before `wait` can see it)."""

    async def done() -> Any:
        x = await e.get(execution_id)
        return x if x.status in ("succeeded", "failed", "timeout", "canceled") else None

    return await until(done)


async def until(check: Callable[[], Any]) -> Any:
    return await eventually(check, timeout=15.0)  # a NATS round trip or two per poll


def make_engine(server: NatsServer, tmp_path: Path) -> Engine:
    settings = Settings(
        packs=(str(PACKS / "rt"),),
        data_dir=str(tmp_path / "data"),
        nats=NatsSettings(url=server.url, subject_prefix="rt"),
    )
    return Engine(settings=settings)


async def reading(e: Engine) -> None:
    async def running() -> bool:
        (t,) = [t for t in await e.list_triggers() if t["type"] == "core.nats"]
        return bool(t["status"] == "running")

    await until(running)


async def outputs(e: Engine, count: int) -> list[str]:
    """The tags of the executions the rules started, once `count` of them exist and have ended."""
    found = await until(lambda: _at_least(e, count))
    finals = [await ended(e, x.id) for x in found]
    assert all(x.status == "succeeded" for x in finals), [(x.status, x.error) for x in finals]
    return sorted(x.output["tag"] for x in finals)


async def _at_least(e: Engine, count: int) -> Any:
    found = await e.list(limit=1000)
    return found if len(found) >= count else None


async def publish(url: str, *events: tuple[dict[str, Any], str | None]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for payload, msg_id in events:
        await js.publish(
            "t.push", json.dumps(payload).encode(), headers={"Nats-Msg-Id": msg_id} if msg_id else None
        )
    await nc.close()


async def test_an_event_starts_the_matching_rule_once_and_a_non_matching_one_nothing(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with make_engine(nats_server, tmp_path) as e:
        await reading(e)
        await publish(
            nats_server.url, ({"branch": "main", "sha": "a1"}, None), ({"branch": "dev", "sha": "b2"}, None)
        )
        assert await outputs(e, 1) == ["push a1"]
        await until(lambda: _records(e, 2))
        records = await e.enforcements(rule="rt.on_push")
        assert sorted((r["matched"], r["execution_id"] is not None) for r in records) == [
            (False, False),
            (True, True),
        ]
        await asyncio.sleep(0.2)  # deliberate: a second (wrong) start would show up here
        assert len(await e.list()) == 1


async def _records(e: Engine, n: int) -> bool:
    return len(await e.enforcements()) >= n


async def test_events_published_while_the_engine_is_down_start_once_it_is_back(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with make_engine(nats_server, tmp_path) as e:
        await reading(e)  # creates the stream and the durable consumer
    await publish(nats_server.url, *[({"branch": "main", "sha": f"s{i}"}, f"m{i}") for i in range(5)])
    async with make_engine(nats_server, tmp_path) as e:
        assert await outputs(e, 5) == [f"push s{i}" for i in range(5)]
    async with make_engine(nats_server, tmp_path) as e:  # acknowledged: not delivered again
        await reading(e)
        await asyncio.sleep(0.3)  # deliberate: a redelivery would start executions here
        assert len(await e.list()) == 5


async def test_a_duplicate_message_id_starts_nothing_new(nats_server: NatsServer, tmp_path: Path) -> None:
    async with make_engine(nats_server, tmp_path) as e:
        await reading(e)
        await publish(
            nats_server.url,
            ({"branch": "main", "sha": "d1"}, "dup"),
            ({"branch": "main", "sha": "d1"}, "dup"),
        )
        assert await outputs(e, 1) == ["push d1"]
        # beyond the stream's duplicate window, the enforcement record still says it was done
        await e.emit("core.nats", {"branch": "main", "sha": "d1"}, subject="t.push", instance_id="dup")
        await asyncio.sleep(0.2)  # deliberate: a second start would show up here
        assert len(await e.list()) == 1
        assert len(await e.enforcements()) == 1


async def test_rules_over_the_control_service(nats_server: NatsServer, tmp_path: Path) -> None:
    from attune_actors.nats.service import ControlService
    from attune_actors.nats.subjects import Subjects

    subjects = Subjects("rt")
    async with make_engine(nats_server, tmp_path) as e:
        nc = await nats.connect(nats_server.url)
        service = ControlService(e, nc, subjects)
        await service.start()
        try:

            async def call(op: str, body: dict[str, Any]) -> Any:
                reply = await nc.request(subjects.api(op), json.dumps(body).encode(), timeout=5)
                return json.loads(reply.data)

            listed = await call("rules.list", {})
            assert [r["ref"] for r in listed["rules"]] == ["rt.every", "rt.on_hook", "rt.on_push"]
            posted = await call("webhooks.post", {"name": "hook", "payload": {"n": 7}})
            (record,) = (await call("enforcements.list", {"rule": "rt.on_hook"}))["enforcements"]
            assert (record["trigger_instance_id"], record["matched"]) == (posted["trigger_instance_id"], True)
            assert (await call("rules.disable", {"ref": "rt.on_hook"}))["enabled"] is False
            assert (await call("webhooks.post", {"name": "nope"}))["error"]["code"] == "not_found"
            types = {t["type"] for t in (await call("triggers.list", {}))["triggers"]}
            assert {"core.nats", "core.webhook", "core.interval", "core.cron", "core.datetime"} <= types
        finally:
            await service.stop()
            await nc.close()


async def test_the_kv_ledger_claims_once_across_engines(nats_server: NatsServer) -> None:
    from attune_actors.rules.kv_ledger import KVLedger
    from attune_actors.rules.ledger import new_record

    settings = NatsSettings(url=nats_server.url, subject_prefix="kv")
    one, two = KVLedger(settings), KVLedger(settings)
    await one.open()
    await two.open()
    try:
        instance = {"id": "i1", "type": "core.webhook"}
        records = [new_record(instance, "p.a", True, start=True), new_record(instance, "p.b", False)]
        first = await one.claim(records)
        again = await two.claim([new_record(instance, "p.a", True, start=True)])
        assert [fresh for _, fresh in first] == [True, True]
        assert again == [(records[0], False)]
        await two.update(records[0]._replace(execution_id=None, error="refused"))
        (found,) = await one.list(rule="p.a")
        assert found.error == "refused"
        assert len(await one.list(trigger_instance_id="i1")) == 2
        await one.put_state("p.timer", "last_fire", 12.5)
        assert await two.get_state("p.timer", "last_fire") == 12.5
        assert await two.get_state("p.other", "last_fire") is None
    finally:
        await one.close()
        await two.close()


async def test_without_nats_the_rule_waits_and_says_so_in_one_clear_line(
    tmp_path: Path, caplog: Any
) -> None:
    """NATS unreachable: core.nats shows `retrying: ...`, everything else is served, and the log
    has the rules service's line (what waits, for what), not the client's socket errors."""
    settings = Settings(
        packs=(str(PACKS / "rt"),),
        data_dir=str(tmp_path / "data"),
        nats=NatsSettings(url="nats://127.0.0.1:1", subject_prefix="rt", connect_timeout=0.3),
    )
    caplog.set_level("DEBUG", logger="attune_actors")
    async with Engine(settings=settings) as e:

        async def waiting() -> Any:
            (t,) = [t for t in await e.list_triggers() if t["type"] == "core.nats"]
            return t if str(t["status"]).startswith("retrying: ") else None

        trigger = await until(waiting)
        assert "cannot connect to NATS at nats://127.0.0.1:1" in trigger["status"]
        final = await e.wait((await e.execute("rt.record", {"tag": "still served"})).id, timeout=30)
        assert final.status == "succeeded"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings, "the wait for NATS is not logged"
    clear = "core.nats rules are waiting for NATS (cannot connect"
    assert all(m.startswith(clear) for m in warnings), warnings
