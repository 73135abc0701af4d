"""What a snapshot stores about an execution's parameters, step after step and across a restart.

The runtime builds, masks, seals and encodes the fixed part of an execution's header once
(`Runtime.save_step`): secret parameters are stored sealed and shown as `***`, and a plain
parameter that a later secret turns out to contain is masked in the snapshots from then on.
"""

from __future__ import annotations

from pathlib import Path

from helpers import execution_reaches

from attune_actors import Engine
from attune_actors.store.sqlite import SQLiteStore

TOKEN = "tok-4f9a-not-in-clear"
HALF = len(TOKEN) // 2  # the definition (stored too) holds the token in two pieces

ASK_THEN_CHECK = f"""
parameters:
  token: {{type: string, secret: true}}
  name: {{type: string}}
tasks:
  - name: ask
    action: core.inquiry
    input: {{prompt: "go?", schema: {{type: boolean}}}}
    on_success: check
  - name: check
    action: core.echo
    input:
      same: "{{{{ parameters.token == '{TOKEN[:HALF]}' ~ '{TOKEN[HALF:]}' }}}}"
      who: "{{{{ parameters.name }}}}"
"""


def on_disk(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data.glob("attune.db*")))


async def asked(engine: Engine, execution_id: str) -> str:
    await execution_reaches(engine, execution_id, lambda e: bool(e.tasks) and e.tasks[0].status == "pending")
    inquiry_id = (await engine.get(execution_id)).tasks[0].inquiry_id
    assert inquiry_id is not None
    return inquiry_id


async def test_secret_parameters_are_sealed_and_restored_after_a_restart(
    workflow, packs_dir, tmp_path
) -> None:
    ref = workflow("sealed", ASK_THEN_CHECK)
    data = tmp_path / "data"
    first = Engine(packs=[packs_dir], data_dir=data)
    await first.start()
    execution = await first.execute(ref, {"token": TOKEN, "name": "ada"})
    inquiry_id = await asked(first, execution.id)
    await first.close()  # as if the process ended while the inquiry waits
    assert TOKEN.encode() not in on_disk(data)
    store = SQLiteStore(data / "attune.db")
    snap = store.load(execution.id)
    store.close_sync()
    assert snap is not None
    assert snap.header["parameters"] == {"token": "***", "name": "ada"}
    assert set(snap.header["sealed_parameters"]) == {"__attune_sealed__"}

    second = Engine(packs=[packs_dir], data_dir=data)
    await second.start()
    try:
        await second.respond(inquiry_id, True)
        done = await second.wait(execution.id, timeout=10)
        assert done.status == "succeeded"
        assert done.task("check").result == {"same": True, "who": "ada"}  # the token came back
        assert done.parameters == {"token": "***", "name": "ada"}
    finally:
        await second.close()
    assert TOKEN.encode() not in on_disk(data)


async def test_a_parameter_that_a_later_secret_contains_is_masked_from_then_on(
    workflow, packs_dir, tmp_path
) -> None:
    plain = workflow("plain", ASK_THEN_CHECK.replace("secret: true", "secret: false"))
    sealed = workflow("sealed", ASK_THEN_CHECK)
    data = tmp_path / "data"
    engine = Engine(packs=[packs_dir], data_dir=data)
    await engine.start()
    later_secret = "later-secret-7f3e"
    try:
        first = await engine.execute(plain, {"token": "x", "name": later_secret})
        inquiry_id = await asked(engine, first.id)
        assert (await engine.get(first.id)).parameters["name"] == later_secret  # not a secret yet
        second = await engine.execute(sealed, {"token": later_secret, "name": "bob"})  # now it is
        await asked(engine, second.id)
        await engine.respond(inquiry_id, True)
        done = await engine.wait(first.id, timeout=10)
        assert done.status == "succeeded"
        assert done.parameters == {"token": "x", "name": "***"}
    finally:
        await engine.close()
    store = SQLiteStore(data / "attune.db")
    try:
        snap = store.load(first.id)  # the snapshot itself, not a document masked when read
    finally:
        store.close_sync()
    assert snap is not None
    assert snap.header["status"] == "succeeded"
    assert snap.header["parameters"] == {"token": "x", "name": "***"}
