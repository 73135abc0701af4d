"""The group guard: process groups started by runners die with the process that started them.

Commands (`core.local`) and python pool workers run in their own sessions, so a Ctrl-C at the
terminal does not reach them and a cancellation can kill a whole group at once. The flip side is
that nothing ends them when the engine dies without cleaning up (SIGKILL, OOM killer): a command
would finish on its own and the resumed execution would run it again.

The guard is one small watchdog process per engine process, started on first use. Runners tell it
(through a pipe) which process groups are running. When the engine dies, the kernel closes the
pipe; the watchdog sees end-of-file and sends SIGTERM, then SIGKILL after `grace` seconds, to every
group still registered. Unlike `PR_SET_PDEATHSIG` on the leader, this also reaches grandchildren
(`sh -c "step1; step2"`), and it works on any POSIX system.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

__all__ = ["GroupGuard", "group_guard", "signal_group"]

# The watchdog: reads "+PGID" / "-PGID" lines; on EOF terminates what is left, then exits.
# Runs with -I -S (no site, no user code): it must start fast and import nothing of ours.
_WATCHDOG = r"""
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
grace = float(sys.argv[1])
groups = set()
for line in sys.stdin.buffer:
    line = line.strip()
    if line[:1] == b"+":
        groups.add(int(line[1:]))
    elif line[:1] == b"-":
        groups.discard(int(line[1:]))
def signal_all(sig):
    for g in list(groups):
        try:
            os.killpg(g, sig)
        except ProcessLookupError:
            groups.discard(g)
        except PermissionError:
            groups.discard(g)
signal_all(signal.SIGTERM)
end = time.monotonic() + grace
while groups and time.monotonic() < end:
    time.sleep(0.05)
    signal_all(0)
signal_all(signal.SIGKILL)
"""


class GroupGuard:
    """Registers process groups with the watchdog; thread-safe, one per process (`group_guard`)."""

    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = os.getpid()

    def add(self, pgid: int) -> None:
        """Kill process group `pgid` if this process dies before `discard(pgid)`."""
        self._send(f"+{pgid}\n".encode())

    def discard(self, pgid: int) -> None:
        """Forget `pgid` (its leader ended; the id may be reused by an unrelated group)."""
        self._send(f"-{pgid}\n".encode(), start=False)

    def _send(self, line: bytes, *, start: bool = True) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child has no watchdog of its own yet
                self._proc, self._pid = None, os.getpid()
            if self._proc is None or self._proc.poll() is not None:
                if not start:
                    return
                self._proc = self._start()
            assert self._proc.stdin is not None
            # A few bytes into a pipe the watchdog drains at once: this does not block.
            with contextlib.suppress(BrokenPipeError, OSError):
                os.write(self._proc.stdin.fileno(), line)

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(self.grace)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )


_guard: GroupGuard | None = None
_guard_lock = threading.Lock()


def group_guard() -> GroupGuard:
    """The process-wide guard (its watchdog starts with the first registered group)."""
    global _guard
    with _guard_lock:
        if _guard is None:
            _guard = GroupGuard()
        return _guard


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to process group `pgid`, if it still exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
