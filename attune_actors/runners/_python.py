"""The `python` runner: calls `run(**parameters)` from `<pack>/actions/<entry_point>`.

A plain `def run` is called off the event loop in an executor (a bounded thread pool unless one is
given); an `async def run` is awaited on the loop. A parameter named `run_context` receives the
`RunContext`. Modules are loaded once per file path and modification time, each under a unique
module name, so editing an action file takes effect on its next run without touching other packs.

Cancellation: an `async def run` is cancelled where it awaits; a thread cannot be interrupted, so a
cancelled `def run` that already started keeps running to its end in the executor and its result is
dropped (one that has not started yet never starts).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import importlib.util
import inspect
import itertools
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from attune_actors.errors import ActionError
from attune_actors.runners._base import RunContext, describe_exception, json_result
from attune_actors.spec.model import ActionSpec

__all__ = ["PythonRunner"]

CONTEXT_PARAMETER = "run_context"
_module_seq = itertools.count(1)


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One loaded action module and what we need to call its `run`."""

    stamp: tuple[int, int]  # (mtime_ns, size) of the file when it was loaded
    module: ModuleType
    function: Any
    wants_context: bool
    is_async: bool


def _default_workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


class PythonRunner:
    """Runs python actions; owns its thread pool unless `executor` is given (the caller's, then)."""

    def __init__(self, *, executor: concurrent.futures.Executor | None = None) -> None:
        self._owns_executor = executor is None
        self._executor: concurrent.futures.Executor = executor or (
            concurrent.futures.ThreadPoolExecutor(
                max_workers=_default_workers(), thread_name_prefix="attune-action"
            )
        )
        self._modules: dict[Path, _Loaded] = {}
        self._paths: dict[tuple[str, str | None], tuple[Path, Path]] = {}
        self._lock = threading.Lock()  # loads happen in executor threads
        self._closed = False

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        if self._closed:
            raise ActionError(f"{action.ref}: the python runner is closed")
        located = self._paths.get((action.pack_path, action.entry_point))
        if located is None:
            located = self._paths[(action.pack_path, action.entry_point)] = _entry_file(action)
        path, pack_dir = located
        loop = asyncio.get_running_loop()
        try:
            stat = path.stat()
        except OSError as exc:
            raise ActionError(
                f"{action.ref}: python action file {path} cannot be read: {exc.strerror or exc}"
            ) from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        loaded = self._modules.get(path)
        if loaded is None or loaded.stamp != stamp:
            loaded = await loop.run_in_executor(
                self._executor, self._load, action.ref, path, pack_dir, stamp
            )

        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        kwargs = dict(parameters)
        if loaded.wants_context:
            kwargs[CONTEXT_PARAMETER] = context
        try:
            if loaded.is_async:
                result = await loaded.function(**kwargs)
            else:
                call = functools.partial(
                    contextvars.copy_context().run, loaded.function, **kwargs
                )
                result = await loop.run_in_executor(self._executor, call)
                if inspect.isawaitable(result):
                    result = await result
        except ActionError as exc:
            # The action failed on purpose; keep its message and (JSON-checked) partial result.
            raise _checked_action_error(action.ref, exc) from exc
        except (Exception, SystemExit) as exc:
            raise ActionError(
                describe_exception(exc, under=pack_dir, fallback=_definition(loaded.function))
            ) from exc
        if task is not None and task.cancelling() > cancelling:
            # The run was cancelled but the action swallowed the CancelledError: honour it anyway.
            raise asyncio.CancelledError
        return json_result(result, action=action.ref)

    async def aclose(self) -> None:
        """Refuse new runs and shut the owned thread pool down (running threads finish alone)."""
        self._closed = True
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- loading -------------------------------------------------------------------------------

    def _load(self, ref: str, path: Path, pack_dir: Path, stamp: tuple[int, int]) -> _Loaded:
        """Import `path` under a fresh module name (in an executor thread)."""
        with self._lock:
            cached = self._modules.get(path)
            if cached is not None and cached.stamp == stamp:
                return cached
            seq = next(_module_seq)
            name = f"_attune_action_{_identifier(pack_dir.name)}_{_identifier(path.stem)}_{seq}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ActionError(f"{ref}: cannot load python action {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except FileNotFoundError:
                sys.modules.pop(name, None)
                raise ActionError(f"{ref}: python action file {path} not found") from None
            except (Exception, SystemExit) as exc:
                sys.modules.pop(name, None)
                raise ActionError(
                    f"{ref}: cannot import python action {path}: "
                    f"{describe_exception(exc, under=pack_dir)}"
                ) from exc
            function = getattr(module, "run", None)
            if not callable(function):
                sys.modules.pop(name, None)
                raise ActionError(f"{ref}: python action {path} defines no function 'run'")
            loaded = _Loaded(
                stamp, module, function, _wants_context(function),
                inspect.iscoroutinefunction(function),
            )
            if cached is not None:
                sys.modules.pop(cached.module.__name__, None)
            self._modules[path] = loaded
            return loaded


def _entry_file(action: ActionSpec) -> tuple[Path, Path]:
    """The action's python file and its pack directory, both resolved."""
    if not action.entry_point:
        raise ActionError(f"{action.ref}: python action has no entry_point")
    if not action.pack_path:
        raise ActionError(f"{action.ref}: python action has no pack path")
    pack_dir = Path(action.pack_path).resolve()
    actions_dir = pack_dir / "actions"
    path = (actions_dir / action.entry_point).resolve()
    if not path.is_relative_to(actions_dir):
        raise ActionError(
            f"{action.ref}: entry_point {action.entry_point!r} is outside {actions_dir}"
        )
    return path, pack_dir


def _checked_action_error(ref: str, exc: ActionError) -> ActionError:
    try:
        result = json_result(exc.result, action=ref, what="partial result")
    except ActionError as bad:
        return ActionError(f"{exc.message} ({bad.message}; dropped)", location=exc.location)
    return ActionError(exc.message, result=result, location=exc.location)


def _definition(function: Any) -> str | None:
    """`FILE:LINE` where `function` is defined (used when the traceback never entered the pack)."""
    code = getattr(function, "__code__", None)
    if code is None:
        return None
    return f"{code.co_filename}:{code.co_firstlineno}"


def _wants_context(function: Any) -> bool:
    try:
        return CONTEXT_PARAMETER in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)
