"""Simulated deployment registry: creates a deployment record for an app version."""

from __future__ import annotations

import time
from typing import Any


def run(app_name: str, version: str = "1.0.0", latency: float = 0) -> dict[str, Any]:
    time.sleep(latency)
    return {
        "id": f"dep-{app_name}-{version}",
        "url": f"https://{app_name}.example.test",
        "app_name": app_name,
        "version": version,
    }
