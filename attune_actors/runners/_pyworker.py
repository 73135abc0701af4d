"""A python pool worker: the child process that runs python actions, one at a time.

Started by `_pool.ProcessPool` (see its `_BOOTSTRAP`), which calls `main()`. It speaks frames on
the stdin/stdout it was started with (a 4-byte big-endian length, then a JSON object), and points
its own file descriptors 1 and 2 at private temporary files, so whatever an action prints (through
`print`, `logging`, C code or a subprocess it starts) is captured for its run and never reaches the
engine's stdout.

Log records an action emits through `logging` (at or above the request's `log_level`) are not
printed: they travel back in the reply (`logs`: `[name, levelno, message]`, at most
`max_output_bytes` of messages) for the engine to log as its own, with the run's execution and task.

Request: `{"path", "pack_dir", "ref", "stamp", "parameters", "context", "log_level",
"max_output_bytes", "max_result_bytes"}`. Reply: `{"ok": true, "result", "stdout", "stderr", "logs"}`
or `{"ok": false, "error", "result", "location", "stdout", "stderr", "logs"}`.

Stopping: SIGTERM raises `_Stopped` inside a sync action (its `finally` blocks run) or cancels an
async one; the worker then exits without replying. The pool kills the process group if that takes
longer than its grace, and starts a fresh worker for later runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import inspect
import itertools
import json
import logging
import os
import re
import signal
import struct
import sys
import tempfile
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, BinaryIO

from attune_actors.errors import ActionError
from attune_actors.runners._base import (
    RunContext,
    describe_exception,
    json_result,
    result_size_error,
    truncation_note,
)

CONTEXT_PARAMETER = "run_context"
_HEADER = struct.Struct(">I")
_module_seq = itertools.count(1)


class _Stopped(BaseException):
    """Raised in a sync action by SIGTERM: the pool stops this run (timeout or cancel)."""


class _Collect(logging.Handler):
    """Keeps the run's log records (bounded) for the reply."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[list[Any]] = []
        self.room = 0
        self.dropped = 0

    def start(self, limit: int) -> None:
        self.records, self.room, self.dropped = [], limit, 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # a record whose arguments do not fit its format
            text = str(record.msg)
        if len(text) > self.room:
            self.dropped += 1
            return
        self.room -= len(text)
        self.records.append([record.name, record.levelno, text])

    def finish(self) -> list[list[Any]]:
        if self.dropped:
            self.records.append([
                "attune_actors.runners.python", logging.WARNING,
                f"{self.dropped} more log records dropped: limits.max_output_bytes",
            ])
        records, self.records = self.records, []
        return records


class _Worker:
    def __init__(self, wire_in: BinaryIO, wire_out: BinaryIO) -> None:
        self.wire_in = wire_in
        self.wire_out = wire_out
        self.modules: dict[str, tuple[list[int], ModuleType, Any, bool]] = {}
        self.loop = asyncio.new_event_loop()
        self.stopping = False
        self.async_task: asyncio.Task[Any] | None = None

    # -- wire --------------------------------------------------------------------------------

    def receive(self) -> dict[str, Any] | None:
        header = self.wire_in.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None  # the engine closed the pipe (or died): nothing more to do
        (size,) = _HEADER.unpack(header)
        data: dict[str, Any] = json.loads(self.wire_in.read(size))
        return data

    def send(self, reply: dict[str, Any]) -> None:
        data = json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.wire_out.write(_HEADER.pack(len(data)) + data)
        self.wire_out.flush()

    # -- stopping ----------------------------------------------------------------------------

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.async_task is None:
            raise _Stopped
        # Cancel it where it awaits. (Not `loop.add_signal_handler` per run: that costs ~0.5 ms.)
        self.loop.call_soon_threadsafe(self.async_task.cancel)

    # -- one run -----------------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        ref: str = request["ref"]
        pack_dir = Path(request["pack_dir"])
        try:
            function, is_async = self.load(ref, request["path"], pack_dir, request["stamp"])
            kwargs = dict(request["parameters"])
            if _wants_context(function):
                kwargs[CONTEXT_PARAMETER] = RunContext(**request["context"])
            if is_async:
                result = self.run_async(function(**kwargs))
            else:
                result = function(**kwargs)
                if inspect.isawaitable(result):
                    result = self.run_async(result)
        except ActionError as exc:
            partial, note = exc.result, ""
            try:
                partial = json_result(partial, action=ref, what="partial result")
            except ActionError as bad:
                partial, note = None, f" ({bad.message}; dropped)"
            location = dataclasses.asdict(exc.location) if exc.location is not None else None
            return {"ok": False, "error": exc.message + note, "result": partial, "location": location}
        except (Exception, SystemExit) as exc:
            where = _definition(function) if "function" in locals() else None
            return {"ok": False, "error": describe_exception(exc, under=pack_dir, fallback=where),
                    "result": None, "location": None}
        try:
            result = json_result(result, action=ref)
        except ActionError as exc:
            return {"ok": False, "error": exc.message, "result": None, "location": None}
        too_big = result_size_error(result, request["max_result_bytes"], action=ref)
        if too_big is not None:
            return {"ok": False, "error": too_big.message, "result": None, "location": None}
        return {"ok": True, "result": result}

    def run_async(self, awaitable: Any) -> Any:
        async def wrapper() -> Any:
            return await awaitable

        task = self.loop.create_task(wrapper())
        self.async_task = task  # from now on a SIGTERM cancels the task instead of raising
        try:
            return self.loop.run_until_complete(task)
        except asyncio.CancelledError:
            raise _Stopped from None
        finally:
            self.async_task = None

    def load(self, ref: str, path: str, pack_dir: Path, stamp: list[int]) -> tuple[Any, bool]:
        cached = self.modules.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[2], cached[3]
        name = f"_attune_action_{_identifier(pack_dir.name)}_{_identifier(Path(path).stem)}_" \
               f"{next(_module_seq)}"
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
        if cached is not None:
            sys.modules.pop(cached[1].__name__, None)
        is_async = inspect.iscoroutinefunction(function)
        self.modules[path] = (stamp, module, function, is_async)
        return function, is_async


def _captured(fd: int, limit: int) -> str:
    """What was written to `fd` (a temporary file) during the run, bounded; then empty it."""
    size = os.fstat(fd).st_size
    if not size:
        return ""  # the common case: one system call
    data = os.pread(fd, min(size, limit), 0)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    text = data.decode("utf-8", errors="replace").rstrip("\r\n")
    if size > limit:
        text += "\n" + truncation_note(size - limit, "limits.max_output_bytes", limit)
    return text


def _definition(function: Any) -> str | None:
    code = getattr(function, "__code__", None)
    return None if code is None else f"{code.co_filename}:{code.co_firstlineno}"


def _wants_context(function: Any) -> bool:
    try:
        return CONTEXT_PARAMETER in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)


def main() -> None:
    # The wire keeps the pipes we were started with; fds 0-2 become /dev/null and capture files.
    wire_in = os.fdopen(os.dup(0), "rb")
    wire_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd in (1, 2):
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), fd)
    for stream in (sys.stdout, sys.stderr):  # prints interleave with what subprocesses write
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle
    worker = _Worker(wire_in, wire_out)
    signal.signal(signal.SIGTERM, worker.on_sigterm)
    logs = _Collect()
    root = logging.getLogger()
    root.addHandler(logs)
    try:
        while not worker.stopping and (request := worker.receive()) is not None:
            limit = request["max_output_bytes"]
            root.setLevel(request["log_level"])
            logs.start(limit)
            reply = worker.handle(request)
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            reply["stdout"], reply["stderr"] = _captured(1, limit), _captured(2, limit)
            reply["logs"] = logs.finish()
            if worker.stopping:
                break
            worker.send(reply)
    except _Stopped:
        pass
    os._exit(0)  # no interpreter teardown: nothing of ours needs it, and it can hang on threads
