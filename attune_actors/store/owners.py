"""Which live process runs which execution, for several processes sharing one data directory.

Each process that runs executions on a data dir holds an OS file lock on `owners/<token>.lock`
for as long as it lives, and records its token in the header of every execution it runs (the
header's `owner`). The kernel drops the lock when the process dies, however it dies (SIGKILL
included), so there is no heartbeat to miss and no record to expire: an unfinished execution whose
owner's lock nobody holds was left by a process that died. Nothing is written per execution beyond
the header it saves anyway. The lock file also says who holds it (pid, host, since), for messages.

Adopting such executions (taking them over) happens under the data dir's claim lock,
`owners/claim.lock`, held only while adopting: two processes never adopt the same one, since the
second finds the first's token in the header once the first has saved it. Locks are `flock` locks, local
to one host: a data dir is for processes of one machine (SQLite itself asks for that).

The packs' timer rules and sensors run in one process of a data dir: the one holding
`owners/sources.lock` (`lead_sources`); the others try to take it over now and then, so they run
again within a second or so of that process's death.

Another process asks the owner to act on one of its executions (cancel, pause, resume, answer an
inquiry) through request files in `owners/requests/`: the owner polls that folder, carries out
each request addressed to an execution it runs and writes the reply beside it. Files are written
whole under a temporary name, then renamed, so nobody reads half a request or reply.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Owner", "Owners"]

_POLL = 0.05  # seconds between looks for a reply


@dataclass(frozen=True)
class Owner:
    """The live process that runs an execution."""

    pid: int
    host: str
    since: float

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


class Owners:
    """This process's token on a data dir (with `hold`), and the liveness of other tokens."""

    def __init__(self, data_dir: Path, *, hold: bool = True) -> None:
        self.folder = Path(data_dir) / "owners"
        self._requests = self.folder / "requests"
        self.token: str | None = None
        self._fd: int | None = None
        self._sources_fd: int | None = None
        self._me = Owner(os.getpid(), socket.gethostname(), time.time())
        if hold:
            self.token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = _locked(self._lock_path(self.token), blocking=True)
            assert fd is not None
            record = {"pid": self._me.pid, "host": self._me.host, "since": self._me.since}
            os.pwrite(fd, json.dumps(record).encode(), 0)
            self._fd = fd

    def _lock_path(self, token: str) -> Path:
        if not token or "/" in token or token.startswith("."):
            raise ValueError(f"not an owner token: {token!r}")
        return self.folder / f"{token}.lock"

    def lead_sources(self) -> bool:
        """Whether this process runs the data dir's timer rules and sensors: it holds, or has just
        taken, `owners/sources.lock` (each process would run its own copy of each, and start an
        execution per fire or event)."""
        if self._sources_fd is None:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._sources_fd = _locked(self.folder / "sources.lock", blocking=False)
        return self._sources_fd is not None

    def close(self) -> None:
        """Give up the token: executions recorded under it have no live owner from now on."""
        sources, self._sources_fd = self._sources_fd, None
        if sources is not None:
            _unlink(self.folder / "sources.lock")  # before unlocking: see `_locked`
            os.close(sources)
        fd, self._fd = self._fd, None
        if fd is None or self.token is None:
            return
        try:
            os.unlink(self._lock_path(self.token))
        except FileNotFoundError:
            pass
        os.close(fd)

    def alive(self, token: object) -> Owner | None:
        """The live process holding `token`, or None when none does (it ended, or no token)."""
        if not isinstance(token, str) or not token:
            return None
        if token == self.token:
            return self._me
        try:
            fd = os.open(self._lock_path(token), os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ValueError):
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: a live owner
            else:
                return None
            try:
                data = json.loads(os.pread(fd, 4096, 0) or b"{}")
                return Owner(int(data["pid"]), str(data["host"]), float(data["since"]))
            except (ValueError, KeyError, TypeError):
                return Owner(0, "?", 0.0)  # being written: owned all the same
        finally:
            os.close(fd)

    @asynccontextmanager
    async def claiming(self) -> AsyncIterator[None]:
        """Hold the data dir's claim lock: decide which executions to adopt, and record the
        adoptions in the store, inside this block. Waits (without blocking the loop) while another
        process or engine holds it."""
        path = self.folder / "claim.lock"
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _locked(path, blocking=False)
        while fd is None:
            await asyncio.sleep(_POLL)  # held briefly by another adopter: a lock gives no event
            fd = _locked(path, blocking=False)
        try:
            yield
        finally:
            os.close(fd)

    # -- requests to the owner of an execution ------------------------------------------------

    async def ask(self, execution_id: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send `request` to the live owner of the execution and return its reply.

        TimeoutError when no reply came within `timeout` seconds (the request is withdrawn).
        """
        if not execution_id or "/" in execution_id or execution_id.startswith("."):
            raise ValueError(f"not an execution id: {execution_id!r}")
        token = f"{execution_id}.{uuid.uuid4().hex}"
        _write_whole(self._requests / f"{token}.req", request)
        reply = self._requests / f"{token}.reply"
        deadline = time.monotonic() + timeout
        while True:
            try:
                data: dict[str, Any] = json.loads(reply.read_bytes())
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    _unlink(self._requests / f"{token}.req")
                    _unlink(reply)  # if it came meanwhile
                    raise TimeoutError(f"the owner of execution {execution_id} did not answer") from None
                await asyncio.sleep(_POLL)  # another process answers: a file is all there is to watch
                continue
            _unlink(reply)
            return data

    def requests(self, runs_here: Callable[[str], bool]) -> list[tuple[str, str, dict[str, Any]]]:
        """(token, execution id, request) of each request addressed to an execution that
        `runs_here`."""
        try:
            names = os.listdir(self._requests)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if not name.endswith(".req"):
                continue
            token = name[: -len(".req")]
            execution_id = token.rpartition(".")[0]
            if not runs_here(execution_id):
                continue
            try:
                found.append((token, execution_id, json.loads((self._requests / name).read_bytes())))
            except (OSError, ValueError):
                continue  # withdrawn meanwhile, or not ours to read
        return found

    def reply(self, token: str, reply: dict[str, Any]) -> None:
        if not (self._requests / f"{token}.req").exists():
            return  # withdrawn: the asker gave up
        _write_whole(self._requests / f"{token}.reply", reply)
        _unlink(self._requests / f"{token}.req")


def _locked(path: Path, *, blocking: bool) -> int | None:
    """An fd holding the exclusive lock of the file at `path` (created 0600), or None when another
    holds it and not `blocking`. Retries when the file it locked was unlinked meanwhile."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        # Holders unlink the file before unlocking it: a lock won on an unlinked file guards
        # nothing, so try again with the file now at that path.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            return fd
        os.close(fd)


def _write_whole(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data, default=str).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
