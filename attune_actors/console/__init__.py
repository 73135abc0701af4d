"""The web console: a static single-page app served at `/` on the HTTP API it uses (SPEC 9).

No build step and nothing fetched at run time: `static/` holds plain HTML, CSS and ES modules
(`app.js` for the views, `graph.js` for the execution graph's layered SVG layout). The console
talks only to the public `/api/v1` routes, with the caller's bearer token, like any other client.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"

__all__ = ["STATIC_DIR"]
