"""The HTTP API as an ASGI app: `create_app(engine)` (SPEC section 9).

Every route is a thin layer on one `Engine` method: it checks the caller's role, passes the request
on and returns the engine's document as JSON. Routers are grouped by resource under `/api/v1`
(`ROUTERS`); a new resource is one more router there. Around them: the guard (request size, last-
resort errors), the error documents, `/openapi.json` from the typed models and `/docs`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from attune_actors import __version__, console
from attune_actors.api import docs, errors
from attune_actors.api.auth import Tokens
from attune_actors.api.deps import EngineApi
from attune_actors.api.guard import Guard
from attune_actors.api.routes import executions, inquiries, metrics, rules, system, workflows
from attune_actors.api.sse import EventStreams
from attune_actors.config import Settings

API_PREFIX = "/api/v1"
ROUTERS: tuple[APIRouter, ...] = (
    system.router, workflows.router, executions.router, inquiries.router, rules.router
)

_DESCRIPTION = """\
Workflow definitions, executions, their graphs and live events, and inquiries of an attune_actors
engine. Errors are `{"error": {"code", "message"}}` with the codes of the NATS control service.
With tokens configured (`http.tokens`), every route but `/api/v1/health` needs
`Authorization: Bearer TOKEN`; the token's role (viewer, operator, admin) decides what it may do.
"""


def create_app(engine: EngineApi, settings: Settings | None = None) -> FastAPI:
    """The API of `engine` (started or not: routes need it started), configured by `settings`
    (default: the engine's)."""
    settings = settings or engine.settings
    app = FastAPI(
        title="attune_actors",
        version=__version__,
        description=_DESCRIPTION,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN; ours are vendored
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.tokens = Tokens(settings.http.tokens)
    app.state.streams = EventStreams()
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(docs.router)
    app.include_router(metrics.router)  # at the root, where Prometheus looks by default
    app.mount(docs.ASSETS_URL, docs.assets())
    app.include_router(console.router)
    app.mount(console.ASSETS_URL, console.assets())
    errors.install(app)
    app.add_middleware(Guard, max_body=settings.limits.request_bytes)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, without the 422 it adds for refused requests: ours are 400 `bad_request`."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                refused = responses.get("422", {}).get("content", {}).get("application/json", {})
                if refused.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                    del responses["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


__all__ = ["API_PREFIX", "ROUTERS", "create_app"]
