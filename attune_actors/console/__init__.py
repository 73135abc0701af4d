"""The web console: a static single-page app served at `/`, a client of the HTTP API (SPEC 9).

No build step and nothing fetched at run time: `static/` holds plain HTML, CSS and ES modules
(`app.js` for the views, `graph.js` for the execution graph's layered SVG layout). The console has
no routes of its own beyond its files; it talks to the public `/api/v1` routes with the caller's
bearer token, like any other client, so it can do exactly what that token may do.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
ASSETS_URL = "/console"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    # The page is a shell; every view's data comes from the API, so it is never cached stale.
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def assets() -> StaticFiles:
    """The console's scripts and styles, to mount at ASSETS_URL."""
    return StaticFiles(directory=STATIC_DIR)


__all__ = ["ASSETS_URL", "STATIC_DIR", "assets", "router"]
