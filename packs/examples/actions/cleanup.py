"""Simulated clean-up after a failed build."""

from __future__ import annotations

import time
from typing import Any


def run(deployment_id: str | None = None, latency: float = 0) -> dict[str, Any]:
    time.sleep(latency)
    return {"cleaned_up": True, "deployment_id": deployment_id}
