"""`/docs`: Swagger UI on `/openapi.json`, served from the package (no CDN is ever asked for anything).

The assets are swagger-ui-dist from the npm registry, vendored under `static/swagger-ui` (see the
README there). FastAPI's own `/docs` loads them from a CDN at run time; it is turned off.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "static" / "swagger-ui"
ASSETS_URL = "/docs/assets"

router = APIRouter(include_in_schema=False)

_PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>attune_actors HTTP API</title>
  <link rel="icon" type="image/png" href="{ASSETS_URL}/favicon-32x32.png">
  <link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

# A separate script, so that a Content-Security-Policy without 'unsafe-inline' allows the page.
_INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  persistAuthorization: true,
});
"""


@router.get("/docs", response_class=HTMLResponse)
async def docs() -> HTMLResponse:
    return HTMLResponse(_PAGE)


@router.get("/docs/init.js")
async def init_script() -> HTMLResponse:
    return HTMLResponse(_INIT, media_type="text/javascript")


def assets() -> StaticFiles:
    """The vendored Swagger UI files, to mount at ASSETS_URL."""
    return StaticFiles(directory=ASSETS)


__all__ = ["ASSETS_URL", "assets", "router"]
