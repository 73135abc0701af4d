"""Simulated infrastructure provisioning."""

from __future__ import annotations

import time
from typing import Any


def run(
    resource: str,
    environment: str,
    region: str,
    network_id: str | None = None,
    fail: bool = False,
    latency: float = 0,
) -> dict[str, Any]:
    time.sleep(latency)
    if fail:
        raise RuntimeError(f"cannot provision {resource} in {region}: capacity exhausted")
    return {
        "id": f"{resource}-{environment}-{region}",
        "endpoint": f"https://{resource}.{region}.{environment}.example.test",
        "network_id": network_id,
    }
