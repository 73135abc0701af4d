"""Simulated dependency check, shared by check_database, check_cache and check_queue.

Each action's metadata gives `service` a different default, so one file serves all three.
"""

from __future__ import annotations

import time
from typing import Any

from attune_actors.errors import ActionError


def run(service: str, fail: bool = False, latency: float = 0) -> dict[str, Any]:
    time.sleep(latency)
    if fail:
        raise ActionError(
            f"{service} is unreachable", result={"service": service, "healthy": False}
        )
    return {"service": service, "healthy": True}
