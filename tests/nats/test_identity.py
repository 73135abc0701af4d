"""The requester's identity from the server (`Nats-Request-Info` of a shared service import): real
nats-server with two accounts, the engine's exporting the API and the people's importing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nats
from helpers import eventually
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from attune_actors.nats.identity import Caller, caller

ACCOUNTS = """
accounts {
  ENGINE { users: [{user: engine, password: engine-pw}], exports: [{service: "attune.api.>"}] }
  PEOPLE {
    users: [{user: alice, password: alice-pw}, {user: bob, password: bob-pw}]
    imports: [{service: {account: ENGINE, subject: "attune.api.>"}, share: true}]
  }
}
"""


async def test_the_server_names_the_requester_and_a_forged_header_is_replaced(
    nats_server: Any, tmp_path: Path
) -> None:
    (tmp_path / "accounts.conf").write_text(ACCOUNTS, encoding="utf-8")
    nats_server.args.extend(["-c", str(tmp_path / "accounts.conf")])
    nats_server.restart()
    engine = await nats.connect(nats_server.url, user="engine", password="engine-pw")
    alice = await nats.connect(nats_server.url, user="alice", password="alice-pw")
    seen: list[Caller | None] = []  # appended before each reply, so complete once a request returns

    async def serve(msg: Msg) -> None:
        seen.append(caller(msg))
        await msg.respond(b"{}")

    try:
        await engine.subscribe("attune.api.>", cb=serve)
        await engine.flush()
        forged = json.dumps({"acc": "PEOPLE", "user": "bob"})

        async def answered() -> bool:
            # The service import reaches alice's account a moment after the subscription: until
            # then a request finds no responders (and never reaches `serve`).
            try:
                await alice.request("attune.api.inquiries.respond", b"{}", timeout=5)
            except NoRespondersError:
                return False
            return True

        await eventually(answered, "the engine's service to be visible from alice's account")
        headers = {"Nats-Request-Info": forged}
        await alice.request("attune.api.inquiries.respond", b"{}", timeout=5, headers=headers)
    finally:
        await alice.close()
        await engine.close()
    assert [c.identity if c else None for c in seen] == ["alice", "alice"]
    assert seen[0] == Caller("PEOPLE", "alice")


def test_no_or_bad_header_is_no_identity() -> None:
    class Fake:
        def __init__(self, headers: dict[str, str] | None) -> None:
            self.headers = headers

    for headers in (None, {}, {"Nats-Request-Info": "{"}, {"Nats-Request-Info": '{"acc": "A"}'}):
        assert caller(Fake(headers)) is None  # type: ignore[arg-type]
