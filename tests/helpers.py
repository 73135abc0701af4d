"""Waiting in tests: for a condition to hold (`eventually`) or for an execution to reach a state.

The one place tests poll. Prefer awaiting an event (`execution_reaches`); poll, with a deadline,
only what sends no event (a file another process writes, a subprocess exiting, a store counter).
Every other sleep in tests/ needs a `# deliberate: why` marker saying why (tests/test_sleeps.py).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from attune_actors import Engine

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    what: str = "the condition",
    timeout: float = 10.0,
    *,
    interval: float = 0.01,
) -> T:
    """Poll `probe` (plain or async) until it returns something truthy, and return that.

    Fails the test naming `what` after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)  # deliberate: polling with a deadline


async def execution_reaches(engine: Engine, execution_id: str, check: Any, timeout: float = 10) -> None:
    """Wait for an event after which `check(execution)` holds (no polling: each event re-checks)."""
    events = engine.events(execution_id)
    try:
        async with asyncio.timeout(timeout):
            while not check(await engine.get(execution_id)):
                await anext(events)
    finally:
        events.close()
