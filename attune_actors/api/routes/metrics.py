"""`GET /metrics`: the engine's Prometheus metrics (text format), for a viewer (any token when
tokens are configured, like every GET)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from attune_actors.api.deps import EngineDep, Viewer, errors
from attune_actors.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["system"])


@router.get(
    "/metrics",
    responses={**errors(), 200: {"content": {"text/plain": {}}}},
    response_class=Response,
    summary="Prometheus metrics of the engine (text exposition format)",
)
async def metrics(engine: EngineDep, caller: Viewer) -> Response:
    return Response(engine.metrics.exposition(), media_type=CONTENT_TYPE)


__all__ = ["router"]
