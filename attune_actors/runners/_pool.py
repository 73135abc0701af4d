"""`ProcessPool`: the python runner's worker processes, started on demand and reused.

A worker (`_pyworker`) runs either one sync run (`exclusive`: it has the worker to itself, since it
blocks the worker's loop) or up to `async_per_worker` async runs at once. `call` picks a worker
(starting one, up to `size`), sends the request and awaits the reply.

Stopping, when the caller is cancelled (a timeout, a cancel): an async run is first asked to stop
(`{"cancel": id}`: it is cancelled where it awaits); a sync run, or an async run still going
`kill_grace` seconds later, has its worker stopped: SIGTERM to the process group, SIGKILL after
`kill_grace`, then reaped; the other runs on that worker fail saying why, and later calls start a
fresh worker. A worker that dies (`os._exit`, a crash) fails its runs with its exit status.

Workers run in their own sessions (a Ctrl-C at the terminal is the engine's to handle) and are
registered with the group guard, so they die with the engine even when it is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import struct
import sys
from pathlib import Path
from typing import Any

from attune_actors.errors import ActionError
from attune_actors.runners._guard import group_guard, signal_group

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


class _Died(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Worker:
    """One worker process: its pipes, the replies it owes, and which kind of runs it holds."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout = proc.stdout
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.runs = 0  # calls holding this worker
        self.exclusive = False  # held by a sync run
        self.stopping: str | None = None  # why it is being stopped, once it is
        self.stopped: asyncio.Task[None] | None = None
        self.reader = asyncio.get_running_loop().create_task(self._read(), name="python worker")

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.stdin.write(_HEADER.pack(len(data)) + data)

    def expect(self, ident: int) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        return future

    async def _read(self) -> None:
        try:
            while True:
                (size,) = _HEADER.unpack(await self.stdout.readexactly(_HEADER.size))
                reply: dict[str, Any] = json.loads(await self.stdout.readexactly(size))
                future = self.pending.pop(reply["id"], None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        code = await self.proc.wait()
        why = self.stopping or f"the python action process {_how(code)} before replying"
        for future in self.pending.values():
            if not future.done():
                future.set_exception(_Died(why))
        self.pending.clear()


class ProcessPool:
    """Up to `size` worker processes; `call` runs one request on one of them."""

    def __init__(
        self, size: int = 8, *, kill_grace: float = 5.0, async_per_worker: int = 100
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.kill_grace = kill_grace
        self.async_per_worker = async_per_worker
        self._workers: list[_Worker] = []
        self._starting = 0
        self._freed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    async def call(self, request: dict[str, Any], *, exclusive: bool) -> dict[str, Any]:
        """The worker's reply to `request`; `ActionError` if the worker died running it.

        `exclusive`: the run may block its worker (a sync action, or one not known to be async).
        """
        worker = await self._acquire(exclusive)
        ident = next(self._ids)
        reply = worker.expect(ident)
        try:
            worker.send({**request, "id": ident})
            await worker.stdin.drain()
            answer = await reply
            if answer.get("canceled"):  # the worker is being stopped: it cancelled its runs
                raise _Died(worker.stopping or "the python action process was stopped")
            return answer
        except _Died as exc:
            await self._stop(worker, exc.why)  # reap it, and whatever it left behind
            raise ActionError(exc.why) from None
        except BaseException:  # cancelled (timeout, cancel) or broken
            await self._stop_run(worker, ident, exclusive)
            raise
        finally:
            await self._release(worker)

    async def aclose(self) -> None:
        """Stop every worker (idle ones end when their pipe closes); refuse new calls."""
        self._closed = True
        workers, self._workers = self._workers, []
        for worker in workers:
            if not worker.runs:
                worker.stdin.close()
        await asyncio.gather(
            *(self._stop(w, "the python runner was closed", gently=not w.runs) for w in workers),
            return_exceptions=True,
        )
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    @property
    def processes(self) -> list[int]:
        """Pids of the running workers (for tests and diagnostics)."""
        return [w.proc.pid for w in self._workers]

    # -- placing runs --------------------------------------------------------------------------

    async def _acquire(self, exclusive: bool) -> _Worker:
        async with self._freed:
            while True:
                if self._closed:
                    raise ActionError("the python runner is closed")
                worker = self._pick(exclusive)
                if worker is not None:
                    worker.runs += 1
                    worker.exclusive = exclusive
                    return worker
                if len(self._workers) + self._starting < self.size:
                    self._starting += 1
                    break
                await self._freed.wait()
        try:
            worker = await self._start()
        finally:
            async with self._freed:
                self._starting -= 1
                self._freed.notify_all()
        async with self._freed:
            worker.runs, worker.exclusive = 1, exclusive
            self._workers.append(worker)
        return worker

    def _pick(self, exclusive: bool) -> _Worker | None:
        idle = None
        for worker in self._workers:
            if worker.stopping is not None:
                continue
            if not worker.runs:
                idle = idle or worker
            elif not exclusive and not worker.exclusive and worker.runs < self.async_per_worker:
                return worker  # async runs share a worker before taking an idle one
        return idle

    async def _release(self, worker: _Worker) -> None:
        async with self._freed:
            worker.runs -= 1
            self._freed.notify_all()

    async def _stop_run(self, worker: _Worker, ident: int, exclusive: bool) -> None:
        """Stop one run: ask an async one to stop, stop the worker of anything else."""
        if exclusive or worker.stopping is not None or worker.proc.returncode is not None:
            await self._stop(worker, "the python action process was stopped")
            return
        if ident not in worker.pending:
            return  # its reply came in the meantime: nothing left to stop
        ended = worker.expect(ident)
        with contextlib.suppress(ConnectionError):
            worker.send({"cancel": ident})
        try:
            await asyncio.shield(asyncio.wait_for(ended, self.kill_grace))
        except (TimeoutError, _Died):
            await self._stop(
                worker, "the python action process was stopped: another run on it ignored its "
                "cancellation for limits.kill_grace"
            )

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

    async def _stop(self, worker: _Worker, why: str, *, gently: bool = False) -> None:
        """End `worker` (once), even if we are cancelled again meanwhile."""
        if worker.stopped is None:
            worker.stopping = why
            worker.stopped = asyncio.create_task(self._terminate(worker, gently))
            self._stopping.add(worker.stopped)
            worker.stopped.add_done_callback(self._stopping.discard)
        await asyncio.shield(worker.stopped)

    async def _terminate(self, worker: _Worker, gently: bool) -> None:
        proc = worker.proc
        try:
            if proc.returncode is None and not gently:
                signal_group(proc.pid, signal.SIGTERM)
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), self.kill_grace)
            signal_group(proc.pid, signal.SIGKILL)  # and whatever the action started
            await proc.wait()
            await worker.reader
            group_guard().discard(proc.pid)
        finally:
            async with self._freed:
                if worker in self._workers:
                    self._workers.remove(worker)
                self._freed.notify_all()


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
