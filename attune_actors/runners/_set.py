"""`RunnerSet`: the runners of one worker, by `runner_type`, the owner of their resources, and
the place where every runner's result is held to `limits.max_result_bytes`."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from attune_actors.errors import ActionError
from attune_actors.kv import Masker
from attune_actors.runners._base import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_RESULT_BYTES,
    Closeable,
    RunContext,
    Runner,
    result_size_error,
)
from attune_actors.runners._builtin import EchoRunner, NoopRunner, SleepRunner
from attune_actors.runners._http import HttpRunner
from attune_actors.runners._local import LocalRunner
from attune_actors.runners._python import PythonRunner
from attune_actors.spec.model import ActionSpec

__all__ = ["ENGINE_RUNNER_TYPES", "RunnerLimits", "RunnerSet", "default_runners"]

# Runner types the engine itself carries out; asking a RunnerSet for them is a programming error.
ENGINE_RUNNER_TYPES = ("inquiry", "workflow")


@dataclass(frozen=True, slots=True)
class RunnerLimits:
    """The bounds runners work within; the fields are the `limits.*` settings of the same names."""

    python_workers: int = 8  # python action processes (a sync run, or up to 100 async, each)
    kill_grace: float = 5.0  # SIGTERM-to-SIGKILL delay for stopped commands and python actions
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # a larger result (as JSON) fails the run
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES  # of each captured stream; the rest dropped
    http_max_seconds: float = 300.0  # the largest `timeout` an HTTP request may ask for
    http_max_body_bytes: int = DEFAULT_MAX_RESULT_BYTES  # a longer response body fails the run

    @classmethod
    def from_settings(cls, limits: object) -> RunnerLimits:
        """The fields of `limits` (a `LimitSettings`) that name runner limits."""
        names = [f.name for f in dataclasses.fields(cls) if hasattr(limits, f.name)]
        return cls(**{name: getattr(limits, name) for name in names})


def default_runners(
    limits: RunnerLimits | None = None, *, masker: Masker | None = None
) -> dict[str, Runner]:
    """One runner per built-in `runner_type` (python, local, http, noop, echo, sleep).

    `masker` masks what python actions print. Runners that hold resources have an `aclose()`;
    `RunnerSet` calls them.
    """
    limits = limits or RunnerLimits()
    return {
        "python": PythonRunner(
            workers=limits.python_workers, kill_grace=limits.kill_grace,
            max_output_bytes=limits.max_output_bytes, max_result_bytes=limits.max_result_bytes,
            masker=masker,
        ),
        "local": LocalRunner(kill_grace=limits.kill_grace, max_output_bytes=limits.max_output_bytes),
        "http": HttpRunner(
            max_seconds=limits.http_max_seconds, max_body_bytes=limits.http_max_body_bytes
        ),
        "noop": NoopRunner(),
        "echo": EchoRunner(),
        "sleep": SleepRunner(),
    }


class _Bounded:
    """A runner whose results are held to `limit` bytes of JSON."""

    def __init__(self, runner: Runner, limit: int) -> None:
        self.runner = runner
        self.limit = limit

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        try:
            result = await self.runner.run(action, parameters, context)
        except ActionError as exc:
            if result_size_error(exc.result, self.limit, action=action.ref) is not None:
                raise ActionError(
                    f"{exc.message} (its partial result exceeds limits.max_result_bytes "
                    f"({self.limit}) and was dropped)", location=exc.location,
                ) from exc
            raise
        error = result_size_error(result, self.limit, action=action.ref)
        if error is not None:
            raise error
        return result


class RunnerSet:
    """Runners by `runner_type`; `aclose()` (or `async with`) releases their processes and clients.

    Without `runners`, holds `default_runners(limits, masker=masker)`. Whichever runner `get`
    returns, a result of more than `limits.max_result_bytes` of JSON fails the run (the error says
    so; the result is dropped, not cut).
    """

    def __init__(
        self,
        runners: Mapping[str, Runner] | None = None,
        *,
        limits: RunnerLimits | None = None,
        masker: Masker | None = None,
    ) -> None:
        self.limits = limits or RunnerLimits()
        self._runners: dict[str, Runner] = dict(
            runners if runners is not None else default_runners(self.limits, masker=masker)
        )
        self._bounded = {
            name: _Bounded(runner, self.limits.max_result_bytes)
            for name, runner in self._runners.items()
        }
        self._closed = False

    def get(self, runner_type: str) -> Runner:
        """The runner for `runner_type`; `ActionError` naming the known types when there is none."""
        runner = self._bounded.get(runner_type)
        if runner is not None:
            return runner
        if runner_type in ENGINE_RUNNER_TYPES:
            raise ActionError(
                f"runner type {runner_type!r} is carried out by the engine, not by a runner"
            )
        known = sorted(self._runners)
        close = difflib.get_close_matches(runner_type, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ActionError(
            f"unknown runner type {runner_type!r} (known: {', '.join(known)}){hint}"
        )

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        """Run `action` with the runner of its `runner_type`."""
        return await self.get(action.runner_type).run(action, parameters, context)

    async def aclose(self) -> None:
        """Close every runner that holds resources; idempotent."""
        if self._closed:
            return
        self._closed = True
        for runner in self._runners.values():
            if isinstance(runner, Closeable):
                await runner.aclose()

    async def __aenter__(self) -> RunnerSet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def types(self) -> tuple[str, ...]:
        """The runner types this set can run, sorted."""
        return tuple(sorted(self._runners))

    def __contains__(self, runner_type: object) -> bool:
        return runner_type in self._runners
