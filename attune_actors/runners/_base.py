"""What every runner shares: the `RunContext` of a run, the `Runner` protocol, result checks.

A runner executes one action run and returns its result, which must be plain JSON data.
It fails by raising `ActionError` (carrying the partial result, if any). Timeouts and cancellation
are the caller's business (`asyncio.wait_for`, `task.cancel()`); a runner only promises to release
what it holds when `asyncio.CancelledError` reaches it, and to let the error propagate.
"""

from __future__ import annotations

import json
import math
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from attune_actors.errors import ActionError
from attune_actors.spec.model import ActionSpec

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_MAX_RESULT_BYTES",
    "Closeable",
    "RunContext",
    "Runner",
    "describe_exception",
    "exception_location",
    "json_result",
    "result_size_error",
    "truncation_note",
]

DEFAULT_MAX_RESULT_BYTES = 1024 * 1024  # limits.max_result_bytes
DEFAULT_MAX_OUTPUT_BYTES = 256 * 1024  # limits.max_output_bytes


@dataclass(frozen=True, slots=True)
class RunContext:
    """What an action run knows about itself.

    `(run_id, attempt)` is the idempotency key of one attempt: an action with side effects can use
    it to recognise a duplicate delivery. `attempt` is 1-based and grows with the task's retries.
    """

    execution_id: str
    run_id: str
    attempt: int
    task: str
    item_index: int | None
    action: str  # the action ref, "<pack>.<name>"


class Runner(Protocol):
    """Executes action runs of one `runner_type`.

    `run` returns the run's result (JSON data) or raises `ActionError(message, result=partial)`.
    It may be called concurrently for many runs. On `asyncio.CancelledError` it stops the run,
    releases what the run holds (processes; threads cannot be stopped) and re-raises.
    """

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any: ...


@runtime_checkable
class Closeable(Protocol):
    """A runner that holds resources (an executor, an HTTP client) and releases them in `aclose`."""

    async def aclose(self) -> None: ...


class _NotJson(Exception):
    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path} {why}")


def _to_json(value: Any, path: str, seen: set[int]) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJson(path, f"is {value!r}, which JSON cannot represent")
        return value
    if isinstance(value, dict | list | tuple):
        key = id(value)
        if key in seen:
            raise _NotJson(path, "contains itself (a reference cycle)")
        seen.add(key)
        try:
            if isinstance(value, dict):
                out: dict[str, Any] = {}
                for k, v in value.items():
                    if not isinstance(k, str):
                        raise _NotJson(f"{path}[{k!r}]", f"has a non-string key of type "
                                       f"{type(k).__name__}")
                    out[k] = _to_json(v, f"{path}[{k!r}]", seen)
                return out
            return [_to_json(v, f"{path}[{i}]", seen) for i, v in enumerate(value)]
        finally:
            seen.discard(key)
    raise _NotJson(path, f"is of type {type(value).__module__}.{type(value).__qualname__}")


def json_result(value: Any, *, action: str, what: str = "result") -> Any:
    """`value` as plain JSON data (tuples become lists), or `ActionError` saying what is not JSON.

    Accepted: dict with string keys, list, tuple, str, int, finite float, bool, None.
    """
    try:
        return _to_json(value, what, set())
    except _NotJson as exc:
        raise ActionError(f"{action}: {what} is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise ActionError(f"{action}: {what} is nested too deeply for JSON") from None


def describe_exception(
    exc: BaseException, *, under: Path | None = None, fallback: str | None = None
) -> str:
    """`"<ExcType>: <message> (raised at FILE:LINE)"` for an exception raised by action code.

    The location is the innermost traceback frame inside `under` (the pack directory), so it points
    at the action's own code rather than at a library it called; failing that, `fallback` (such as
    the line where the action's `run` is defined), else the innermost frame.
    """
    name = type(exc).__name__
    # A SyntaxError's str() repeats the file and line; its location is added below anyway.
    text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    head = f"{name}: {text}" if text else name
    where = exception_location(exc, under=under) or fallback
    if where is None and under is not None:
        where = exception_location(exc)
    return f"{head} (raised at {where})" if where else head


def exception_location(exc: BaseException, *, under: Path | None = None) -> str | None:
    """`FILE:LINE` of the innermost frame of `exc` inside `under` (anywhere if `under` is None)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno or 0}"
    frames: list[traceback.FrameSummary] = list(traceback.extract_tb(exc.__traceback__))
    if under is not None:
        root = str(under) + "/"
        frames = [f for f in frames if f.filename.startswith(root)]
    if frames:
        return f"{frames[-1].filename}:{frames[-1].lineno}"
    return None


def result_size_error(result: Any, limit: int, *, action: str) -> ActionError | None:
    """The error failing a run whose result is more than `limit` bytes of JSON, else None.

    The whole result is refused rather than cut: a truncated JSON document would be silently wrong
    data for the tasks that read it. (Captured output streams are truncated instead; see
    `truncation_note`.)
    """
    if result is None or isinstance(result, bool | int | float):
        return None
    if isinstance(result, str) and len(result) * 6 + 2 <= limit:  # JSON escapes a char to <= 6
        return None
    size = len(json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size <= limit:
        return None
    return ActionError(
        f"{action}: result is {size} bytes of JSON, which exceeds "
        f"limits.max_result_bytes ({limit}); the run failed and its result was dropped"
    )


def truncation_note(dropped: int, setting: str, kept: int) -> str:
    """The line that ends a truncated output stream: what was dropped and which limit did it."""
    return f"[... {dropped} more bytes dropped: output is kept up to {setting} ({kept})]"
