"""A deterministic flaky call: fails until the attempt number reaches `succeed_on_attempt`."""

from __future__ import annotations

import time
from typing import Any


def run(
    url: str = "https://api.example.test/v1",
    succeed_on_attempt: int = 3,
    latency: float = 0,
    run_context: Any = None,
) -> dict[str, Any]:
    time.sleep(latency)
    attempt = run_context.attempt if run_context is not None else 1
    if attempt < succeed_on_attempt:
        raise ConnectionError(
            f"{url} unavailable on attempt {attempt} (succeeds on attempt {succeed_on_attempt})"
        )
    return {"url": url, "attempt": attempt, "response": {"ok": True}}
