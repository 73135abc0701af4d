"""`ProcessPool`: the python runner's worker processes, started on demand and reused.

Each worker (`_pyworker`) runs one request at a time. `call` takes an idle worker (or starts one,
up to `size`), sends the request and awaits the reply. When the caller is cancelled (a timeout, a
cancel), the worker is stopped: SIGTERM to its process group, SIGKILL after `kill_grace` seconds,
then reaped; a later call starts a fresh one. A worker that dies mid-run (`os._exit`, a crash)
fails that run with its exit status and is replaced the same way.

Workers run in their own sessions (a Ctrl-C at the terminal is the engine's to handle) and are
registered with the group guard, so they die with the engine even when it is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import sys
from pathlib import Path
from typing import Any

from attune_actors.errors import ActionError
from attune_actors.runners._guard import group_guard

__all__ = ["ProcessPool"]

_HEADER = struct.Struct(">I")
# Starts a worker without running the `attune_actors` and `attune_actors.runners` package
# __init__ files (they import the whole engine: ~0.45 s and ~30 MiB more per worker). Each package
# is a placeholder that runs its real __init__ on the first attribute it is asked for, so an
# action's `from attune_actors import ActionError` still works.
_BOOTSTRAP = """
import importlib.util, sys
def placeholder(name):
    spec = importlib.util.find_spec(name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    def __getattr__(attr):
        del module.__getattr__
        spec.loader.exec_module(module)
        return getattr(module, attr)
    module.__getattr__ = __getattr__
placeholder("attune_actors")
placeholder("attune_actors.runners")
from attune_actors.runners._pyworker import main
main()
"""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding attune_actors/


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout = proc.stdout

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.stdin.write(_HEADER.pack(len(data)) + data)
        try:
            await self.stdin.drain()
            (size,) = _HEADER.unpack(await self.stdout.readexactly(_HEADER.size))
            reply: dict[str, Any] = json.loads(await self.stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await self.proc.wait()
            raise _Died(code) from None
        return reply


class _Died(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class ProcessPool:
    """Up to `size` worker processes; `call` runs one request on one of them."""

    def __init__(self, size: int = 8, *, kill_grace: float = 5.0) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.kill_grace = kill_grace
        self._idle: list[_Worker] = []
        self._count = 0  # started and not yet stopped, idle or busy
        self._freed = asyncio.Condition()
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """The worker's reply to `request`; `ActionError` if the worker died running it."""
        worker = await self._acquire()
        try:
            reply = await worker.call(request)
        except _Died as exc:
            await self._stop(worker)
            raise ActionError(f"the python action process {_how(exc.code)} before replying") from None
        except BaseException:  # cancelled (timeout, cancel) or broken: this worker cannot be reused
            await self._stop(worker)
            raise
        await self._release(worker)
        return reply

    async def aclose(self) -> None:
        """Stop every worker (idle ones end when their pipe closes); refuse new calls."""
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in idle:
            worker.stdin.close()
        await asyncio.gather(*(self._stop(w, gently=True) for w in idle), return_exceptions=True)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    @property
    def processes(self) -> list[int]:
        """Pids of the idle workers (for tests and diagnostics)."""
        return [w.proc.pid for w in self._idle]

    async def _acquire(self) -> _Worker:
        async with self._freed:
            while True:
                if self._closed:
                    raise ActionError("the python runner is closed")
                if self._idle:
                    return self._idle.pop()
                if self._count < self.size:
                    self._count += 1
                    break
                await self._freed.wait()
        try:
            return await self._start()
        except BaseException:
            async with self._freed:
                self._count -= 1
                self._freed.notify()
            raise

    async def _release(self, worker: _Worker) -> None:
        async with self._freed:
            self._idle.append(worker)
            self._freed.notify()

    async def _start(self) -> _Worker:
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _BOOTSTRAP,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ActionError(f"cannot start a python action process: {exc}") from None
        group_guard().add(proc.pid)
        return _Worker(proc)

    async def _stop(self, worker: _Worker, *, gently: bool = False) -> None:
        """End `worker` and free its slot, even if we are cancelled again meanwhile."""
        task = asyncio.create_task(self._terminate(worker, gently))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        await asyncio.shield(task)

    async def _terminate(self, worker: _Worker, gently: bool) -> None:
        proc = worker.proc
        try:
            if proc.returncode is None and not gently:
                _signal_group(proc.pid, signal.SIGTERM)
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), self.kill_grace)
            _signal_group(proc.pid, signal.SIGKILL)  # and whatever the action started
            await proc.wait()
            group_guard().discard(proc.pid)
        finally:
            async with self._freed:
                self._count -= 1
                self._freed.notify()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
