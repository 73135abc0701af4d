"""Webhooks and rules over the real HTTP API (docs/rules.md): POST /api/v1/webhooks/{name} and friends."""

from __future__ import annotations

import shutil
from pathlib import Path

from api_support import ApiFactory, error_of

RULE_PACKS = Path(__file__).parent.parent / "rules" / "packs"


async def test_a_webhook_starts_its_rule_and_rules_are_managed_by_role(
    api_factory: ApiFactory, packs_dir: Path
) -> None:
    shutil.copytree(RULE_PACKS / "rt", packs_dir / "rt")
    api = await api_factory()
    operator, viewer, admin = api.client("operator"), api.client("viewer"), api.client("admin")

    accepted = await operator.post("/webhooks/hook", json={"n": 4})
    assert accepted.status_code == 202, accepted.text
    instance = accepted.json()["trigger_instance_id"]
    (record,) = (await viewer.get("/enforcements", params={"trigger_instance_id": instance})).json()[
        "enforcements"
    ]
    assert (record["rule"], record["matched"]) == ("rt.on_hook", True)
    execution = await api.engine.wait(record["execution_id"], timeout=10)
    assert execution.output == {"tag": "hook 4"}

    assert error_of(await operator.post("/webhooks/nope", json={})) == (404, "not_found")
    assert (await viewer.post("/webhooks/hook", json={"n": 4})).status_code == 403
    assert (await operator.post("/rules/rt.on_hook/disable")).status_code == 403
    assert (await admin.post("/rules/rt.on_hook/disable")).json()["enabled"] is False
    rules = (await viewer.get("/rules")).json()["rules"]
    assert {r["ref"]: r["enabled"] for r in rules}["rt.on_hook"] is False
    types = [t["type"] for t in (await viewer.get("/triggers")).json()["triggers"]]
    assert "core.webhook" in types
