"""Which live process runs which execution, for several processes sharing one data directory.

Each execution a process runs is *owned* through an OS file lock on `owners/<execution id>.lock`
in the data dir, held for as long as the process runs the execution. The kernel drops the lock
when the process dies, however it dies (SIGKILL included), so there is no heartbeat to miss and
no stale record to expire: an execution whose lock nobody holds has no live owner. The lock file
also says who holds it (pid, host, since), for messages.

Only executions started from the API (top-level ones) are owned; nested executions belong to
their parent's owner. Locks are `flock` locks, local to one host: a data dir is for processes of
one machine (SQLite itself asks for that).

Another process asks the owner to act on one of its executions (cancel, pause, resume, answer an
inquiry) through request files in `owners/requests/`: the owner polls that folder, carries out
each request addressed to an execution it holds and writes the reply beside it. Files are written
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
    """Claims and releases of executions by this process, and who owns the others."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = Path(data_dir) / "owners"
        self._requests = self.folder / "requests"
        self._held: dict[str, int] = {}  # execution id -> the fd holding its lock

    def _path(self, execution_id: str) -> Path:
        if not execution_id or "/" in execution_id or execution_id.startswith("."):
            raise ValueError(f"not an execution id: {execution_id!r}")
        return self.folder / f"{execution_id}.lock"

    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def claim(self, execution_id: str) -> bool:
        """Own the execution; False if another live process (or another engine here) owns it."""
        if execution_id in self._held:
            return True
        path = self._path(execution_id)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            # The previous owner unlinks the file before unlocking it: a lock won on an unlinked
            # file guards nothing, so try again with the file now at that path.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self._held[execution_id] = fd
        return True

    def release(self, execution_id: str) -> None:
        """Stop owning the execution (call once its end is durable in the store)."""
        fd = self._held.pop(execution_id, None)
        if fd is None:
            return
        try:
            os.unlink(self._path(execution_id))
        except FileNotFoundError:
            pass
        os.close(fd)

    def release_all(self) -> None:
        for execution_id in list(self._held):
            self.release(execution_id)

    def owner(self, execution_id: str) -> Owner | None:
        """The live process that owns the execution, or None when no live process does."""
        if execution_id in self._held:
            return Owner(os.getpid(), socket.gethostname(), 0.0)
        try:
            fd = os.open(self._path(execution_id), os.O_RDONLY | os.O_CLOEXEC)
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

    # -- requests to the owner of an execution ------------------------------------------------

    async def ask(self, execution_id: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send `request` to the live owner of the execution and return its reply.

        TimeoutError when no reply came within `timeout` seconds (the request is withdrawn).
        """
        self._path(execution_id)  # a valid id
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

    def requests(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(token, execution id, request) of each request addressed to an execution held here."""
        if not self._held:
            return []
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
            if execution_id not in self._held:
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
