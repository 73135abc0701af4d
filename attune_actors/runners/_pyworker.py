"""A python pool worker: the child process that runs python actions.

Started by `_pool.ProcessPool` (see its `_BOOTSTRAP`), which calls `main()`. It speaks frames on
the stdin/stdout it was started with (a 4-byte big-endian length, then a JSON object) and serves
them from its own event loop. Its file descriptors 0-2 become /dev/null and two private temporary
files, so nothing an action writes reaches the engine's stdout.

Messages in: a request `{"id", "path", "pack_dir", "ref", "stamp", "parameters", "context",
"log_level", "max_output_bytes", "max_result_bytes"}`, or `{"cancel": id}`. Out: one reply per
request, `{"id", "ok": true, "result", ...}` or `{"id", "ok": false, "error", "result", "location",
...}`, both with `stdout`, `stderr`, `logs` (`[name, levelno, message]`: records the action logged
through `logging` at or above `log_level`, for the engine to log as its own) and `async` (whether
the action's `run` is a coroutine function), or `{"id", "canceled": true}`.

Sync actions run one at a time, in the main thread, blocking the loop (the pool sends nothing else
to a worker running one); what they write to fds 1 and 2 (print, C code, subprocesses) is captured.
Async actions may run many at once, each in its own task; their `print`s and `sys.stdout` /
`sys.stderr` writes are routed to their own run by a context variable (writes straight to fds 1 and
2, such as a subprocess's inherited output, cannot be told apart and are dropped). `{"cancel": id}`
cancels an async run where it awaits.

Stopping: SIGTERM raises `_Stopped` (a `SystemExit`, so neither the loop nor `except Exception`
swallows it) in a sync run, whose `finally` blocks run, and the worker exits without replying; with
async runs, it cancels them all and exits when they have ended. The pool kills the process group if
that takes longer than its grace, and starts a fresh worker for later runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import importlib.util
import inspect
import io
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
from typing import Any, TextIO

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


class _Stopped(SystemExit):
    """Raised by SIGTERM: the pool stops this worker (a sync run timed out or was canceled)."""


class _Run:
    """What one run captures: its log records and, for an async run, its stdout and stderr."""

    def __init__(self, limit: int, routed: bool) -> None:
        self.limit = limit
        self.logs: list[list[Any]] = []
        self.log_room = limit
        self.logs_dropped = 0
        self.streams: list[_Bounded] | None = [_Bounded(limit), _Bounded(limit)] if routed else None

    def log(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # a record whose arguments do not fit its format
            text = str(record.msg)
        if len(text) > self.log_room:
            self.logs_dropped += 1
            return
        self.log_room -= len(text)
        self.logs.append([record.name, record.levelno, text])

    def finish(self, reply: dict[str, Any]) -> dict[str, Any]:
        if self.streams is not None:
            reply["stdout"], reply["stderr"] = (s.text() for s in self.streams)
        else:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            reply["stdout"], reply["stderr"] = _captured(1, self.limit), _captured(2, self.limit)
        if self.logs_dropped:
            self.logs.append([
                "attune_actors.runners.python", logging.WARNING,
                f"{self.logs_dropped} more log records dropped: limits.max_output_bytes",
            ])
        reply["logs"] = self.logs
        return reply


_current: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("attune_run", default=None)


class _Bounded:
    """An async run's stdout or stderr: the first `limit` characters, and how many more came."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.room = limit
        self.dropped = 0
        self.limit = limit

    def write(self, text: str) -> None:
        kept = text[: max(self.room, 0)]
        if kept:
            self.parts.append(kept)
            self.room -= len(kept)
        self.dropped += len(text) - len(kept)

    def text(self) -> str:
        text = "".join(self.parts).rstrip("\r\n")
        if self.dropped:
            text += "\n" + truncation_note(self.dropped, "limits.max_output_bytes", self.limit)
        return text


class _Router(io.TextIOBase):
    """`sys.stdout` / `sys.stderr`: writes go to the current async run's stream, else to `real`."""

    def __init__(self, real: TextIO, index: int) -> None:
        super().__init__()
        self.real = real
        self.index = index

    def write(self, text: str) -> int:
        run = _current.get()
        if run is not None and run.streams is not None:
            run.streams[self.index].write(text)
        else:
            self.real.write(text)
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def fileno(self) -> int:
        return self.real.fileno()

    def __getattr__(self, name: str) -> Any:  # `buffer`, `errors`, ...: the real stream's
        return getattr(self.real, name)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.real.encoding


class _Logs(logging.Handler):
    """Hands each record to the run it was logged in (none outside runs: dropped)."""

    def emit(self, record: logging.LogRecord) -> None:
        run = _current.get()
        if run is not None:
            run.log(record)


class _Worker:
    def __init__(self, wire_in: int, wire_out: int) -> None:
        self.wire_in = wire_in
        self.wire_out = wire_out
        self.buffer = bytearray()
        self.modules: dict[str, tuple[list[int], ModuleType, Any, bool]] = {}
        self.loop = asyncio.new_event_loop()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.in_sync_run = False

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.in_sync_run or not self.tasks:
            raise _Stopped(0)  # in a sync run: its `finally` blocks run on the way out
        self.loop.call_soon_threadsafe(self.cancel_all)  # async runs: cancelled where they await

    def cancel_all(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        asyncio.gather(*tasks, return_exceptions=True).add_done_callback(
            lambda _: self.loop.stop()
        )

    def serve(self) -> None:
        os.set_blocking(self.wire_in, False)
        self.loop.add_reader(self.wire_in, self.on_readable)
        self.loop.run_forever()  # until the engine closes the pipe (or SIGTERM raises _Stopped)

    # -- wire --------------------------------------------------------------------------------

    def on_readable(self) -> None:
        try:
            data = os.read(self.wire_in, 1 << 16)
        except BlockingIOError:
            return
        if not data:
            self.loop.stop()  # the engine closed the pipe (or died): nothing more to do
            return
        self.buffer += data
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + size:
                break
            message = json.loads(self.buffer[_HEADER.size : _HEADER.size + size])
            del self.buffer[: _HEADER.size + size]
            self.dispatch(message)

    def send(self, reply: dict[str, Any]) -> None:
        data = json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:  # a blocking pipe: the engine reads replies as they come
            view = view[os.write(self.wire_out, view) :]

    # -- runs --------------------------------------------------------------------------------

    def dispatch(self, message: dict[str, Any]) -> None:
        if "cancel" in message:
            task = self.tasks.get(message["cancel"])
            if task is not None:
                task.cancel()
            return
        logging.getLogger().setLevel(message["log_level"])
        ref: str = message["ref"]
        pack_dir = Path(message["pack_dir"])
        try:
            function, is_async = self.load(ref, message["path"], pack_dir, message["stamp"])
        except ActionError as exc:
            self.send(_failure(message, exc.message, is_async=False))
            return
        if is_async:
            task = self.loop.create_task(self.run_async(message, function, pack_dir))
            self.tasks[message["id"]] = task
            return
        run = _Run(message["max_output_bytes"], routed=False)
        token = _current.set(run)
        self.in_sync_run = True
        try:
            reply = self.call(message, function, pack_dir, None)
        finally:
            self.in_sync_run = False
            _current.reset(token)
        self.send(run.finish(reply))

    async def run_async(self, message: dict[str, Any], function: Any, pack_dir: Path) -> None:
        run = _Run(message["max_output_bytes"], routed=True)
        _current.set(run)  # this task's own context: its prints and records are its own
        try:
            coroutine = self.call(message, function, pack_dir, "start")
            reply = coroutine if isinstance(coroutine, dict) else await self.finish_async(
                message, coroutine, function, pack_dir
            )
        except asyncio.CancelledError:
            reply = {"id": message["id"], "canceled": True}
        finally:
            self.tasks.pop(message["id"], None)
        self.send(run.finish(reply) if not reply.get("canceled") else reply)
        for fd in (1, 2):  # async runs cannot claim what was written to the fds: drop it
            if os.fstat(fd).st_size > run.limit:
                _captured(fd, 0)

    async def finish_async(
        self, message: dict[str, Any], coroutine: Any, function: Any, pack_dir: Path
    ) -> dict[str, Any]:
        try:
            result = await coroutine
        except (asyncio.CancelledError, _Stopped):
            raise
        except (Exception, SystemExit) as exc:
            return _raised(message, exc, function, pack_dir, is_async=True)
        return _success(message, result, is_async=True)

    def call(self, message: dict[str, Any], function: Any, pack_dir: Path, mode: str | None) -> Any:
        """A sync run's reply; for an async run (`mode="start"`), its coroutine (or a failure)."""
        is_async = mode is not None
        try:
            kwargs = dict(message["parameters"])
            if _wants_context(function):
                kwargs[CONTEXT_PARAMETER] = RunContext(**message["context"])
            result = function(**kwargs)
            if is_async:
                return result
            if inspect.isawaitable(result):  # a sync `run` that returned one: our loop is busy
                with concurrent.futures.ThreadPoolExecutor(1) as thread:
                    result = thread.submit(asyncio.run, _awaited(result)).result()
        except _Stopped:
            raise
        except (Exception, SystemExit) as exc:
            return _raised(message, exc, function, pack_dir, is_async=is_async)
        return _success(message, result, is_async=False)

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
        except _Stopped:
            raise
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


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _success(message: dict[str, Any], result: Any, *, is_async: bool) -> dict[str, Any]:
    ref = message["ref"]
    try:
        result = json_result(result, action=ref)
    except ActionError as exc:
        return _failure(message, exc.message, is_async)
    too_big = result_size_error(result, message["max_result_bytes"], action=ref)
    if too_big is not None:
        return _failure(message, too_big.message, is_async)
    return {"id": message["id"], "ok": True, "result": result, "async": is_async}


def _raised(
    message: dict[str, Any], exc: BaseException, function: Any, pack_dir: Path, *, is_async: bool
) -> dict[str, Any]:
    """The reply for a run whose action raised: an ActionError's own failure, else the exception
    described (its traceback within the pack only)."""
    if isinstance(exc, ActionError):
        return _action_failure(message, exc, is_async=is_async)
    described = describe_exception(exc, under=pack_dir, fallback=_definition(function))
    return _failure(message, described, is_async)


def _action_failure(message: dict[str, Any], exc: ActionError, *, is_async: bool) -> dict[str, Any]:
    """The action failed on purpose: keep its message and (JSON-checked) partial result."""
    partial, note = exc.result, ""
    try:
        partial = json_result(partial, action=message["ref"], what="partial result")
    except ActionError as bad:
        partial, note = None, f" ({bad.message}; dropped)"
    reply = _failure(message, exc.message + note, is_async)
    reply["result"] = partial
    reply["location"] = dataclasses.asdict(exc.location) if exc.location is not None else None
    return reply


def _failure(message: dict[str, Any], error: str, is_async: bool) -> dict[str, Any]:
    return {"id": message["id"], "ok": False, "error": error, "result": None, "location": None,
            "async": is_async}


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
    wire_in, wire_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd in (1, 2):
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), fd)
    for stream in (sys.stdout, sys.stderr):  # prints interleave with what subprocesses write
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    sys.stdout, sys.stderr = _Router(sys.stdout, 0), _Router(sys.stderr, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle
    worker = _Worker(wire_in, wire_out)
    signal.signal(signal.SIGTERM, worker.on_sigterm)
    logging.getLogger().addHandler(_Logs())
    try:
        worker.serve()
    except _Stopped:
        pass
    os._exit(0)  # no interpreter teardown: nothing of ours needs it, and it can hang on threads
