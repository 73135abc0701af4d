"""Simulated chat notification (an async action)."""

from __future__ import annotations

import asyncio
from typing import Any


async def run(message: str, channel: str = "#deploys", latency: float = 0) -> dict[str, Any]:
    await asyncio.sleep(latency)
    return {"channel": channel, "message": message}
