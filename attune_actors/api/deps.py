"""What routes are given: the engine, the caller at each role, the shared error responses.

A new router (webhooks, metrics, ...) declares its parameters with these and is added to
`attune_actors.api.app.ROUTERS`; nothing else needs to change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from attune_actors.api.auth import Caller, require
from attune_actors.api.models import ErrorBody
from attune_actors.engine.engine import Engine


async def _engine(request: Request) -> Engine:
    # async: FastAPI would run a plain function on a worker thread, a thread hop per request.
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(_engine)]
Viewer = Annotated[Caller, Depends(require("viewer"))]
Operator = Annotated[Caller, Depends(require("operator"))]
Admin = Annotated[Caller, Depends(require("admin"))]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route may answer (with the ones every route may)."""
    common = (400, 401, 403, 413)
    return {status: {"model": ErrorBody} for status in sorted({*common, *statuses})}


__all__ = ["Admin", "EngineDep", "Operator", "Viewer", "errors"]
