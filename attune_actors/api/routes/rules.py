"""Rules, trigger types, enforcement records, and webhooks that emit trigger instances (docs/rules.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response

from attune_actors.api.deps import Admin, EngineDep, Operator, Viewer, errors
from attune_actors.api.responses import JSONResponse
from attune_actors.rules import post_webhook

router = APIRouter(tags=["rules"])

# Request headers a rule may see as trigger.headers (never credentials).
_HIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@router.post(
    "/webhooks/{name}",
    status_code=202,
    responses=errors(404),
    summary="Emit a core.webhook trigger instance; the rules listening on `name` are evaluated",
)
async def webhook(
    name: str,
    request: Request,
    engine: EngineDep,
    _: Operator,
    payload: Annotated[Any, Body(description="any JSON: the instance's payload")] = None,
) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HIDDEN_HEADERS}
    instance_id = await post_webhook(engine, name, payload, headers)
    return JSONResponse({"trigger_instance_id": instance_id}, status_code=202)


@router.get("/rules", responses=errors(), summary="Every rule (invalid ones with their errors)")
async def list_rules(
    engine: EngineDep, _: Viewer, pack: Annotated[str | None, Query(description="only this pack's")] = None
) -> Response:
    return JSONResponse({"rules": await engine.list_rules(pack)})


@router.get("/rules/{ref}", responses=errors(404), summary="One rule")
async def get_rule(ref: str, engine: EngineDep, _: Viewer) -> Response:
    return JSONResponse(await engine.get_rule(ref))


@router.post("/rules/{ref}/enable", responses=errors(404), summary="Enable a rule (now and across restarts)")
async def enable_rule(ref: str, engine: EngineDep, _: Admin) -> Response:
    return JSONResponse(await engine.enable_rule(ref))


@router.post(
    "/rules/{ref}/disable", responses=errors(404), summary="Disable a rule (its timer stops at once)"
)
async def disable_rule(ref: str, engine: EngineDep, _: Admin) -> Response:
    return JSONResponse(await engine.disable_rule(ref))


@router.get("/triggers", responses=errors(), summary="Trigger types, their rules and sources")
async def list_triggers(engine: EngineDep, _: Viewer) -> Response:
    return JSONResponse({"triggers": await engine.list_triggers()})


@router.get("/enforcements", responses=errors(), summary="Enforcement records, newest first")
async def list_enforcements(
    engine: EngineDep,
    _: Viewer,
    rule: str | None = None,
    trigger_instance_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    return JSONResponse({"enforcements": await engine.enforcements(rule, trigger_instance_id, limit)})


__all__ = ["router"]
