"""The server itself: health (for load balancers, no token needed) and who the caller is."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from attune_actors import __version__
from attune_actors.api.auth import Tokens
from attune_actors.api.deps import Viewer, errors
from attune_actors.api.models import Health, Whoami
from attune_actors.api.responses import JSONResponse

router = APIRouter(tags=["system"])


@router.get(
    "/health", response_model=Health, responses=errors(), summary="The server answers (no token needed)"
)
async def health() -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


@router.get("/whoami", response_model=Whoami, responses=errors(), summary="The caller's identity and role")
async def whoami(request: Request, caller: Viewer) -> Response:
    tokens: Tokens = request.app.state.tokens
    return JSONResponse({"identity": caller.identity, "role": caller.role, "auth": tokens.enabled})


__all__ = ["router"]
