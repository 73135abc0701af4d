"""The `python` runner: calls `run(**parameters)` from `<pack>/actions/<entry_point>` in a worker process.

Actions run in a pool of `workers` processes (`ProcessPool`, `_pyworker`), started on first use and
reused. A plain `def run` is called in a worker's main thread, with the worker to itself; `async def
run` runs share workers, each awaited in its own task on the worker's event loop (the runner reads
which one a file defines from its source). A parameter named `run_context` receives the
`RunContext`. Each worker loads a module once per file path and modification time, under a unique
module name, so editing an action file takes effect on its next run without touching other packs.
Parameters and results travel as JSON.

Output: what the action prints is captured per run (see `_pyworker` for what async runs can
claim), each stream up to `max_output_bytes`, masked with `masker`, and never reaches the engine's
own stdout. It goes into the result: a dict result gets `stdout` / `stderr` keys for the streams
that are not empty (keys the action set itself win); a failed run without a partial result gets
`{"stdout", "stderr"}`; any other result is left as it is and the output is logged (masked) on the
`attune_actors.runners.python` logger. A result of more than `max_result_bytes` of JSON fails the
run. Records the action logs through `logging` are logged here under their own logger names
(masked), within the run's context, so they carry its execution and task like the engine's own.

Stopping: a cancelled or timed-out run is stopped for real: an async run is cancelled where it
awaits; a sync run's worker gets SIGTERM (the action sees an exception, so its `finally` blocks
run), then SIGKILL after `kill_grace` seconds, with everything it started, and a fresh worker takes
its place; so does the worker of an async run that ignores its cancellation for `kill_grace`.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

from attune_actors.errors import ActionError, Location
from attune_actors.kv import Masker
from attune_actors.runners._base import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_RESULT_BYTES,
    RunContext,
)
from attune_actors.runners._pool import ProcessPool
from attune_actors.spec.model import ActionSpec

__all__ = ["PythonRunner"]

log = logging.getLogger("attune_actors.runners.python")


class PythonRunner:
    """Runs python actions in up to `workers` reusable processes (see the module docstring)."""

    def __init__(
        self,
        *,
        workers: int = 8,
        kill_grace: float = 5.0,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        masker: Masker | None = None,
    ) -> None:
        self._pool = ProcessPool(workers, kill_grace=kill_grace)
        self.max_output_bytes = max_output_bytes
        self.max_result_bytes = max_result_bytes
        self.masker = masker or Masker()
        self._paths: dict[tuple[str, str | None], tuple[Path, Path]] = {}
        # Whether a file's `run` is async (read from its source, then from its replies): a run not
        # known to be async gets a worker of its own (a sync one would block the others' loop).
        self._async: dict[tuple[Path, int, int], bool] = {}
        self._closed = False

    @property
    def pool(self) -> ProcessPool:
        """The worker processes."""
        return self._pool

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        if self._closed:
            raise ActionError(f"{action.ref}: the python runner is closed")
        located = self._paths.get((action.pack_path, action.entry_point))
        if located is None:
            located = self._paths[(action.pack_path, action.entry_point)] = _entry_file(action)
        path, pack_dir = located
        try:
            stat = path.stat()
        except OSError as exc:
            raise ActionError(
                f"{action.ref}: python action file {path} cannot be read: {exc.strerror or exc}"
            ) from None
        kind = (path, stat.st_mtime_ns, stat.st_size)
        reply = await self._pool.call({
            "ref": action.ref,
            "path": str(path),
            "pack_dir": str(pack_dir),
            "stamp": [stat.st_mtime_ns, stat.st_size],
            "parameters": parameters,
            "context": {
                "execution_id": context.execution_id, "run_id": context.run_id,
                "attempt": context.attempt, "task": context.task,
                "item_index": context.item_index, "action": context.action,
            },
            "log_level": logging.getLogger().getEffectiveLevel(),
            "max_output_bytes": self.max_output_bytes,
            "max_result_bytes": self.max_result_bytes,
        }, exclusive=not self._is_async(kind))
        if reply.get("async") is not None:
            self._async[kind] = reply["async"]
        mask = self.masker.mask_text
        for name, level, text in reply.get("logs", ()):
            logger = logging.getLogger(name)
            if logger.isEnabledFor(level):
                logger.handle(logger.makeRecord(name, level, "(python action)", 0, mask(text), (),
                                                None))
        output = {k: mask(reply[k]) for k in ("stdout", "stderr") if reply.get(k)}
        result = reply.get("result")
        if reply["ok"]:
            return self._with_output(result, output, context)
        result = output if result is None and output else self._with_output(result, output, context)
        where = reply.get("location")
        raise ActionError(
            self.masker.mask_text(reply["error"]), result=result,
            location=Location(**where) if where else None,
        )

    def _is_async(self, kind: tuple[Path, int, int]) -> bool:
        known = self._async.get(kind)
        if known is None:
            known = self._async[kind] = _defines_async_run(kind[0])
        return known

    def _with_output(self, result: Any, output: dict[str, str], context: RunContext) -> Any:
        if not output:
            return result
        if isinstance(result, dict):
            return {**output, **result}
        for name, text in output.items():
            log.info("%s of %s (run %s, attempt %d):\n%s", name, context.action, context.run_id,
                     context.attempt, text)
        return result

    async def aclose(self) -> None:
        """Refuse new runs and stop the worker processes."""
        self._closed = True
        await self._pool.aclose()


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


def _defines_async_run(path: Path) -> bool:
    """Whether the module's last top-level `run` is an `async def` (False when unsure)."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return False  # the worker will say what is wrong
    kind = False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "run":
            kind = isinstance(node, ast.AsyncFunctionDef)
        elif isinstance(node, ast.Assign | ast.ImportFrom | ast.Import):
            names = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            names += [a.asname or a.name for a in getattr(node, "names", [])]
            if "run" in names:
                kind = False
    return kind
