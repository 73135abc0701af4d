"""The `local` runner: runs a shell command in its own process group and returns its output.

Parameters: `cmd` (required; a string, or a list of arguments when `shell` is false), `cwd`, `env`
(an object merged over the engine's environment; non-string values are JSON-encoded) and `shell`
(default true). An action whose metadata has an `entry_point` and no `cmd` parameter runs the entry
point as its command.

Result: `{"stdout", "stderr", "return_code"}`, the output decoded as UTF-8 (undecodable bytes
replaced) with trailing newlines removed. A non-zero exit fails the run with the last line of stderr
and keeps the result. On cancellation the whole process group gets SIGTERM, then SIGKILL once the
leader has exited or `kill_grace` seconds have passed, and the leader is reaped: no process or
zombie is left.
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
from attune_actors.runners._base import RunContext
from attune_actors.spec.model import ActionSpec

__all__ = ["LocalRunner"]


class LocalRunner:
    """Runs shell commands; `kill_grace`: seconds a cancelled command has to end after SIGTERM."""

    def __init__(self, *, kill_grace: float = 5.0) -> None:
        if kill_grace < 0:
            raise ValueError("kill_grace must not be negative")
        self.kill_grace = kill_grace
        # Cleanups still running after a second cancellation interrupted the first; kept referenced
        # so they are not garbage-collected before the process is reaped.
        self._reapers: set[asyncio.Task[None]] = set()

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        # An optional parameter that was not given may arrive as None: it means "the default".
        shell = parameters.get("shell")
        if shell is None:
            shell = True
        if not isinstance(shell, bool):
            raise ActionError(f"parameter 'shell' must be a boolean, not {shell!r}")
        cmd = parameters.get("cmd")
        if cmd is None:
            cmd = action.entry_point
        argv = _command(cmd, shell)
        cwd = parameters.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ActionError(f"parameter 'cwd' must be a string, not {cwd!r}")
        env = _environment(parameters.get("env"))

        try:
            if shell:
                proc = await asyncio.create_subprocess_shell(
                    argv[0], cwd=cwd or None, env=env, start_new_session=True,
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            else:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=cwd or None, env=env, start_new_session=True,
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
        except OSError as exc:
            raise ActionError(f"cannot start command: {exc}") from None

        try:
            out, err = await proc.communicate()
        except BaseException:  # cancellation above all: never leave the command behind
            await self._stop(proc)
            raise

        code = proc.returncode if proc.returncode is not None else -1
        stderr = _text(err)
        result = {"stdout": _text(out), "stderr": stderr, "return_code": code}
        if code != 0:
            raise ActionError(_failure(code, stderr), result=result)
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
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
    # Whatever is left of the group (the leader ignoring SIGTERM, or children it left behind).
    _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _command(cmd: Any, shell: bool) -> list[str]:
    if cmd is None or cmd == "" or cmd == []:
        raise ActionError("parameter 'cmd' is required")
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


def _environment(extra: Any) -> dict[str, str] | None:
    if extra is None:
        return None
    if not isinstance(extra, dict):
        raise ActionError(f"parameter 'env' must be an object, not {extra!r}")
    env = dict(os.environ)
    for key, value in extra.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ActionError(f"parameter 'env' has an invalid variable name {key!r}")
        env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace").rstrip("\r\n")


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
