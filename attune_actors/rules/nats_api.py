"""The rules part of the NATS control service (`attune_actors.nats.service` registers these).

    rules.list        {pack?}                                -> {"rules": [rule, ...]}
    rules.get         {ref}                                  -> rule
    rules.enable      {ref}                                  -> rule   (admin: grant it like workflows.*)
    rules.disable     {ref}                                  -> rule   (admin)
    triggers.list     {}                                     -> {"triggers": [trigger type, ...]}
    enforcements.list {rule?, trigger_instance_id?, limit?}  -> {"enforcements": [record, ...]} newest first
    webhooks.post     {name, payload?, headers?}             -> {"trigger_instance_id": ...}  (operator)

`webhooks.post` is the NATS twin of `POST /api/v1/webhooks/{name}`. Each entry has the shape of the
service's own operations: `{field: ((what it must be, test), required)}` and a coroutine.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from attune_actors.rules import post_webhook

if TYPE_CHECKING:
    from attune_actors.engine.engine import Engine

_Check = tuple[str, Callable[[Any], bool]]
TEXT: _Check = ("a non-empty string", lambda v: isinstance(v, str) and v != "")
OBJECT: _Check = ("an object", lambda v: isinstance(v, dict))
ANY: _Check = ("any JSON value", lambda v: True)
COUNT: _Check = ("an integer from 1 to 1000", lambda v: type(v) is int and 1 <= v <= 1000)

Operation = tuple[dict[str, tuple[_Check, bool]], Callable[[dict[str, Any]], Coroutine[Any, Any, Any]]]


def rule_operations(engine: Engine) -> dict[str, Operation]:
    """The operations to add to the control service of `engine`."""

    async def list_rules(body: dict[str, Any]) -> Any:
        return {"rules": await engine.list_rules(body.get("pack"))}

    async def get_rule(body: dict[str, Any]) -> Any:
        return await engine.get_rule(body["ref"])

    async def enable(body: dict[str, Any]) -> Any:
        return await engine.enable_rule(body["ref"])

    async def disable(body: dict[str, Any]) -> Any:
        return await engine.disable_rule(body["ref"])

    async def triggers(body: dict[str, Any]) -> Any:
        return {"triggers": await engine.list_triggers()}

    async def enforcements(body: dict[str, Any]) -> Any:
        found = await engine.enforcements(
            body.get("rule"), body.get("trigger_instance_id"), body.get("limit") or 50
        )
        return {"enforcements": found}

    async def webhook(body: dict[str, Any]) -> Any:
        headers = {str(k): str(v) for k, v in (body.get("headers") or {}).items()}
        return {"trigger_instance_id": await post_webhook(engine, body["name"], body.get("payload"), headers)}

    return {
        "rules.list": ({"pack": (TEXT, False)}, list_rules),
        "rules.get": ({"ref": (TEXT, True)}, get_rule),
        "rules.enable": ({"ref": (TEXT, True)}, enable),
        "rules.disable": ({"ref": (TEXT, True)}, disable),
        "triggers.list": ({}, triggers),
        "enforcements.list": (
            {"rule": (TEXT, False), "trigger_instance_id": (TEXT, False), "limit": (COUNT, False)},
            enforcements,
        ),
        "webhooks.post": (
            {"name": (TEXT, True), "payload": (ANY, False), "headers": (OBJECT, False)},
            webhook,
        ),
    }


__all__ = ["rule_operations"]
