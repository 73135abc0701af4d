"""The `local` runner: runs a command in its own process group and returns its output.

Parameters: `cmd` (required; a list of arguments, run without a shell, or a string, run by /bin/sh),
`cwd`, `env` (variables for the command; non-string values are JSON-encoded) and `shell` (default:
true for a string, false for a list; a string run without a shell is split like a shell would). An
action whose metadata has an `entry_point` and no `cmd` parameter runs the entry point as its command.

Environment: only PATH, HOME and LANG are taken from the engine (LANG defaults to C.UTF-8), then the
action's `env`. Nothing else of the engine's or worker's environment (credentials, keys, NATS
passwords) reaches a command.

Result: `{"stdout", "stderr", "return_code"}`, the output decoded as UTF-8 (undecodable bytes
replaced) with trailing newlines removed. Each stream keeps its first `max_output_bytes` bytes; the
rest is read and dropped (never buffered), and the kept text ends with a line saying how much was
dropped. A non-zero exit fails the run with the last line of stderr and keeps the result.

Stopping: on cancellation the whole process group gets SIGTERM, then SIGKILL once the leader has
exited or `kill_grace` seconds have passed, and the leader is reaped: no process or zombie is left.
Each group is registered with the group guard (`_guard`), so it is also killed when the engine
itself dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
from typing import Any

from attune_actors.errors import ActionError
from attune_actors.runners._base import DEFAULT_MAX_OUTPUT_BYTES, RunContext, truncation_note
from attune_actors.runners._guard import group_guard, signal_group
from attune_actors.spec.model import ActionSpec

__all__ = ["LocalRunner"]


# Taken from the engine's environment when set; everything else is left behind.
INHERITED = ("PATH", "HOME", "LANG")
_FALLBACK = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_CHUNK = 65536


class LocalRunner:
    """Runs commands; `kill_grace`: seconds a cancelled command has to end after SIGTERM;
    `max_output_bytes`: bytes of stdout and of stderr kept in the result (the rest is dropped)."""

    def __init__(
        self, *, kill_grace: float = 5.0, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    ) -> None:
        if kill_grace < 0:
            raise ValueError("kill_grace must not be negative")
        if max_output_bytes < 0:
            raise ValueError("max_output_bytes must not be negative")
        self.kill_grace = kill_grace
        self.max_output_bytes = max_output_bytes
        # Cleanups still running after a second cancellation interrupted the first; kept referenced
        # so they are not garbage-collected before the process is reaped.
        self._reapers: set[asyncio.Task[None]] = set()

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        # An optional parameter that was not given may arrive as None: it means "the default".
        cmd = parameters.get("cmd")
        if cmd is None:
            cmd = action.entry_point
        shell = parameters.get("shell")
        if shell is None:
            shell = not isinstance(cmd, list)
        if not isinstance(shell, bool):
            raise ActionError(f"parameter 'shell' must be a boolean, not {shell!r}")
        argv = _command(cmd, shell)
        cwd = parameters.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ActionError(f"parameter 'cwd' must be a string, not {cwd!r}")
        env = _environment(parameters.get("env"))

        options: dict[str, Any] = {
            "cwd": cwd or None, "env": env, "start_new_session": True,
            "stdin": asyncio.subprocess.DEVNULL, "stdout": asyncio.subprocess.PIPE,
            "stderr": asyncio.subprocess.PIPE,
        }
        spawn = asyncio.ensure_future(
            asyncio.create_subprocess_shell(argv[0], **options)
            if shell
            else asyncio.create_subprocess_exec(*argv, **options)
        )
        try:
            # Shielded: a cancellation while asyncio is still connecting the pipes would make it
            # kill the shell alone and leave the rest of its group running; finish starting, then
            # stop the whole group like any cancelled command.
            proc = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            with contextlib.suppress(OSError):
                await self._stop(await spawn)
            raise
        except OSError as exc:
            raise ActionError(f"cannot start command: {exc}") from None

        guard = group_guard()
        guard.add(proc.pid)
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            out, err, _ = await asyncio.gather(
                _read_bounded(proc.stdout, self.max_output_bytes),
                _read_bounded(proc.stderr, self.max_output_bytes),
                proc.wait(),
            )
        except BaseException:  # cancellation above all: never leave the command behind
            await self._stop(proc)
            raise
        finally:
            if proc.returncode is not None:
                guard.discard(proc.pid)

        code = proc.returncode if proc.returncode is not None else -1
        result = {"stdout": _text(*out), "stderr": _text(*err), "return_code": code}
        if code != 0:
            raise ActionError(_failure(code, _text(err[0], 0)), result=result)
        return result

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """Terminate and reap `proc`'s process group, even if we are cancelled again meanwhile."""
        reaper = asyncio.create_task(_terminate(proc, self.kill_grace))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        await asyncio.shield(reaper)

    async def aclose(self) -> None:
        """Wait for cleanups of cancelled commands that are still in progress."""
        if self._reapers:
            await asyncio.gather(*self._reapers, return_exceptions=True)


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    if proc.returncode is None:
        signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
    # Whatever is left of the group (the leader ignoring SIGTERM, or children it left behind).
    signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()
    group_guard().discard(proc.pid)


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, int]:
    """The first `limit` bytes of `stream` and how many more were read and dropped."""
    kept = bytearray()
    dropped = 0
    while chunk := await stream.read(_CHUNK):
        room = limit - len(kept)
        if room > 0:
            kept += chunk[:room]
        dropped += max(0, len(chunk) - max(room, 0))
    return bytes(kept), dropped


def _command(cmd: Any, shell: bool) -> list[str]:
    if cmd is None:
        raise ActionError("parameter 'cmd' is required")
    if cmd == "" or cmd == []:
        raise ActionError("parameter 'cmd' is empty: give a command line or a list of arguments")
    if shell:
        if isinstance(cmd, list):
            if not all(isinstance(a, str) for a in cmd):
                raise ActionError("parameter 'cmd' must be a string or a list of strings")
            return [shlex.join(cmd)]
        if not isinstance(cmd, str):
            raise ActionError(f"parameter 'cmd' must be a string, not {cmd!r}")
        return [cmd]
    if isinstance(cmd, str):
        try:
            return shlex.split(cmd)
        except ValueError as exc:
            raise ActionError(f"parameter 'cmd' cannot be split into arguments: {exc}") from None
    if isinstance(cmd, list) and all(isinstance(a, str) for a in cmd):
        return list(cmd)
    raise ActionError("parameter 'cmd' must be a string or a list of strings")


def _environment(extra: Any) -> dict[str, str]:
    env = {}
    for name in INHERITED:
        value = os.environ.get(name) or _FALLBACK.get(name)
        if value:
            env[name] = value
    if extra is None:
        return env
    if not isinstance(extra, dict):
        raise ActionError(f"parameter 'env' must be an object, not {extra!r}")
    for key, value in extra.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ActionError(f"parameter 'env' has an invalid variable name {key!r}")
        env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


def _text(data: bytes, dropped: int) -> str:
    text = data.decode("utf-8", errors="replace").rstrip("\r\n")
    if dropped:
        text += "\n" + truncation_note(dropped, "limits.max_output_bytes", len(data))
    return text


def _failure(code: int, stderr: str) -> str:
    if code < 0:
        try:
            what = f"command killed by {signal.Signals(-code).name}"
        except ValueError:
            what = f"command killed by signal {-code}"
    else:
        what = f"command exited with code {code}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    return f"{what}: {lines[-1].strip()}" if lines else what
