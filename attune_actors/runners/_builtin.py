"""The runners that need nothing outside the event loop: `noop`, `echo` and `sleep`."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from attune_actors.errors import ActionError
from attune_actors.runners._base import RunContext
from attune_actors.spec.model import ActionSpec

__all__ = ["EchoRunner", "NoopRunner", "SleepRunner", "sleep_seconds"]


class NoopRunner:
    """Does nothing; the result is None."""

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        return None


class EchoRunner:
    """Returns its parameters (a shallow copy) as the result."""

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        return dict(parameters)


def sleep_seconds(parameters: dict[str, Any]) -> float:
    """The `seconds` a sleep waits; ActionError unless a number >= 0."""
    seconds = parameters.get("seconds")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ActionError(f"parameter 'seconds' must be a number >= 0, not {seconds!r}")
    return seconds


class SleepRunner:
    """Waits `seconds` (a number >= 0) on the event loop; the result is None.

    A parked run costs one timer handle and the caller's task: no thread, no process. (The
    engine's in-process transport does not even start a task for it: see `InProcessTransport`.)
    """

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        await asyncio.sleep(sleep_seconds(parameters))
        return None
