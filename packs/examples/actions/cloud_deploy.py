"""Simulated per-region cloud deployment."""

from __future__ import annotations

import time
from typing import Any


def run(region: str, version: str = "1.0.0", fail: bool = False,
        latency: float = 0) -> dict[str, Any]:
    time.sleep(latency)
    if fail:
        raise RuntimeError(f"deployment of {version} to {region} failed: quota exceeded")
    return {"region": region, "version": version, "endpoint": f"https://{region}.example.test"}
