"""Simulated health probe (an async action: it runs on the event loop)."""

from __future__ import annotations

import asyncio
from typing import Any

from attune_actors.errors import ActionError


async def run(url: str, fail: bool = False, latency: float = 0) -> dict[str, Any]:
    await asyncio.sleep(latency)
    if fail:
        raise ActionError(
            f"{url} is unhealthy: HTTP 503",
            result={"url": url, "status": "unhealthy", "status_code": 503},
        )
    return {"url": url, "status": "healthy", "status_code": 200}
