"""Simulated Kubernetes rollback."""

from __future__ import annotations

import time
from typing import Any


def run(deployment_id: str | None = None, environment: str = "dev",
        latency: float = 0) -> dict[str, Any]:
    time.sleep(latency)
    return {"rolled_back": True, "deployment_id": deployment_id, "environment": environment}
