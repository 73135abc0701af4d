"""JSON responses as the engine's other front ends write them: compact UTF-8, dates and odd values as text."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSON


class JSONResponse(_StarletteJSON):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str).encode()


__all__ = ["JSONResponse"]
