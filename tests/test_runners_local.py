"""The local (shell command) runner: output, failures, a minimal environment, argv and quoting
against injection, bounded output, and cancellation that kills."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers import eventually

from attune_actors import Engine
from attune_actors.errors import ActionError
from attune_actors.runners import LocalRunner, RunContext
from attune_actors.spec.model import ActionSpec

CTX = RunContext(execution_id="ex", run_id="r", attempt=1, task="t", item_index=None,
                 action="core.local")
LOCAL = ActionSpec(ref="core.local", pack="core", name="local", runner_type="local")


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an orphan waiting for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def reaped(pid: int) -> bool:
    """True when `pid` is entirely gone: it ended and its parent reaped it (no zombie)."""
    return not Path(f"/proc/{pid}").exists()


def real(path: Path) -> str:
    return str(path.resolve())


def read_pids(path: Path) -> list[int] | None:
    """The pids a command wrote to `path` once the line is complete."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    if not text.endswith("\n"):
        return None
    return [int(p) for p in text.split()]


async def test_stdout_and_return_code() -> None:
    result = await LocalRunner().run(LOCAL, {"cmd": "echo hello; echo world"}, CTX)
    assert result == {"stdout": "hello\nworld", "stderr": "", "return_code": 0}


async def test_failure_keeps_the_result_and_the_last_stderr_line() -> None:
    cmd = "echo partial; echo first >&2; echo 'disk full' >&2; exit 3"
    with pytest.raises(ActionError) as info:
        await LocalRunner().run(LOCAL, {"cmd": cmd}, CTX)
    assert info.value.message == "command exited with code 3: disk full"
    assert info.value.result == {"stdout": "partial", "stderr": "first\ndisk full",
                                 "return_code": 3}


async def test_failure_without_stderr_and_death_by_signal() -> None:
    with pytest.raises(ActionError, match=r"^command exited with code 1$"):
        await LocalRunner().run(LOCAL, {"cmd": "false"}, CTX)
    with pytest.raises(ActionError, match=r"^command killed by SIGKILL$") as info:
        await LocalRunner().run(LOCAL, {"cmd": "kill -9 $$"}, CTX)
    assert isinstance(info.value.result, dict)
    assert info.value.result["return_code"] == -9


async def test_env_and_cwd(tmp_path: Path) -> None:
    result = await LocalRunner().run(
        LOCAL,
        {"cmd": 'echo "$GREETING $COUNT $FLAG"; pwd; test -n "$PATH"',
         "env": {"GREETING": "hi there", "COUNT": 3, "FLAG": True}, "cwd": str(tmp_path)},
        CTX,
    )
    assert result["stdout"].splitlines() == ["hi there 3 true", real(tmp_path)]


async def test_without_a_shell(tmp_path: Path) -> None:
    runner = LocalRunner()
    result = await runner.run(LOCAL, {"cmd": ["printf", "%s|", "a b", "$HOME"], "shell": False},
                              CTX)
    assert result["stdout"] == "a b|$HOME|"
    result = await runner.run(LOCAL, {"cmd": "printf '%s|' 'a b' c", "shell": False}, CTX)
    assert result["stdout"] == "a b|c|"


async def test_bad_parameters_and_start_failures(tmp_path: Path) -> None:
    runner = LocalRunner()
    with pytest.raises(ActionError, match="'cmd' is required"):
        await runner.run(LOCAL, {}, CTX)
    for empty in ("", []):
        with pytest.raises(ActionError, match="'cmd' is empty"):
            await runner.run(LOCAL, {"cmd": empty}, CTX)
    with pytest.raises(ActionError, match="'env' must be an object"):
        await runner.run(LOCAL, {"cmd": "true", "env": ["A=1"]}, CTX)
    with pytest.raises(ActionError, match="cannot start command"):
        await runner.run(LOCAL, {"cmd": "true", "cwd": str(tmp_path / "missing")}, CTX)
    with pytest.raises(ActionError, match="cannot start command"):
        await runner.run(LOCAL, {"cmd": ["/no/such/program"], "shell": False}, CTX)


async def test_entry_point_is_the_default_command() -> None:
    act = ActionSpec(ref="p.hello", pack="p", name="hello", runner_type="local",
                     entry_point="echo from entry point")
    assert (await LocalRunner().run(act, {}, CTX))["stdout"] == "from entry point"


async def test_cancel_kills_the_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    termed = tmp_path / "termed"
    # A grace period longer than the test's timeout: only SIGTERM can end this test in time.
    runner = LocalRunner(kill_grace=600)
    cmd = f"trap 'echo TERM > {termed}; exit 143' TERM; sleep 30 & echo $$ $! > {pids}; wait"
    task = asyncio.create_task(runner.run(LOCAL, {"cmd": cmd}, CTX))
    await eventually(lambda: read_pids(pids) is not None)
    shell, child = read_pids(pids) or []
    assert running(shell)
    assert running(child)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert termed.read_text().strip() == "TERM"  # the shell was told to stop with SIGTERM
    await eventually(lambda: reaped(shell))  # ended and reaped: no zombie of ours
    await eventually(lambda: not running(child))


async def test_sigterm_ignored_gets_sigkill_after_grace(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    grace = 0.3
    runner = LocalRunner(kill_grace=grace)
    cmd = f"trap '' TERM; sleep 30 & echo $$ $! > {pids}; wait"
    task = asyncio.create_task(runner.run(LOCAL, {"cmd": cmd}, CTX))
    await eventually(lambda: read_pids(pids) is not None)
    shell, child = read_pids(pids) or []
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started >= grace
    assert reaped(shell)
    await eventually(lambda: not running(child))


async def test_second_cancel_during_cleanup_still_kills(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    runner = LocalRunner(kill_grace=0.5)
    cmd = f"trap '' TERM; echo $$ > {pids}; while :; do sleep 0.05; done"
    task = asyncio.create_task(runner.run(LOCAL, {"cmd": cmd}, CTX))
    await eventually(lambda: read_pids(pids) is not None)
    (shell,) = read_pids(pids) or []
    task.cancel()
    await asyncio.sleep(0)  # let the first cancellation reach the runner  # deliberate: one loop turn
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await runner.aclose()  # waits for the cleanup that the second cancel left running
    await eventually(lambda: reaped(shell))


async def test_timeout_by_the_caller_kills_the_command(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    runner = LocalRunner(kill_grace=1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            runner.run(LOCAL, {"cmd": f"echo $$ > {pids}; exec sleep 30"}, CTX), 0.5
        )
    (pid,) = read_pids(pids) or []
    assert reaped(pid)


async def test_concurrent_commands() -> None:
    runner = LocalRunner()
    results = await asyncio.gather(
        *(runner.run(LOCAL, {"cmd": f"echo {i}"}, CTX) for i in range(20))
    )
    assert [r["stdout"] for r in results] == [str(i) for i in range(20)]


async def test_absent_optional_parameters_may_be_null() -> None:
    params = {"cmd": "echo $0 | grep -c sh", "cwd": None, "env": None, "shell": None}
    assert (await LocalRunner().run(LOCAL, params, CTX))["stdout"] == "1"


async def test_a_command_sees_none_of_the_engine_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATTUNE_CANARY_PASSWORD", "canary-8f2d1c")
    monkeypatch.setenv("LANG", "C.UTF-8")
    runner = LocalRunner()
    argv = await runner.run(LOCAL, {"cmd": ["env"], "env": {"MINE": "yes"}}, CTX)
    names = {line.split("=", 1)[0] for line in argv["stdout"].splitlines()}
    assert names == {"PATH", "HOME", "LANG", "MINE"}
    shell = await runner.run(LOCAL, {"cmd": "env; echo ${ATTUNE_CANARY_PASSWORD:-unset}"}, CTX)
    assert "canary-8f2d1c" not in shell["stdout"]
    assert shell["stdout"].endswith("\nunset")
    assert f"PATH={os.environ['PATH']}" in shell["stdout"].splitlines()


async def test_output_is_read_with_a_bound_and_says_what_was_dropped() -> None:
    runner = LocalRunner(max_output_bytes=1000)
    # 5 MB through the pipes: read and dropped as it comes, never held whole.
    result = await runner.run(
        LOCAL, {"cmd": "head -c 5000000 /dev/zero | tr '\\0' a; echo; echo err >&2"}, CTX
    )
    assert result["return_code"] == 0
    kept, note = result["stdout"].split("\n")
    assert kept == "a" * 1000
    assert note == ("[... 4999001 more bytes dropped: output is kept up to "
                    "limits.max_output_bytes (1000)]")
    assert result["stderr"] == "err"


INJECTION = "world; touch INJECTED; id -un"


@pytest.mark.parametrize("form", ["shell_quote", "argv", "argv-with-shell-false"])
async def test_injection_is_inert_with_shell_quote_and_argv(
    form: str, workflow, engine_factory, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    cmd = {
        "shell_quote": '"echo hello {{ parameters.name | shell_quote }}"',
        "argv": '["echo", "hello", "{{ parameters.name }}"]',
        "argv-with-shell-false": '["echo", "hello", "{{ parameters.name }}"]',
    }[form]
    shell = ", shell: false" if form == "argv-with-shell-false" else ""
    ref = workflow(
        f"inject_{form.replace('-', '_')}",
        f"""
        parameters:
          name: {{type: string}}
        tasks:
          - name: greet
            action: core.local
            input: {{cmd: {cmd}, cwd: "{work}"{shell}}}
        output_map:
          said: "{{{{ task.greet.result.stdout }}}}"
    """,
    )
    engine: Engine = await engine_factory()
    done = await engine.wait((await engine.execute(ref, {"name": INJECTION})).id, timeout=30)
    assert done.status == "succeeded", done.error
    assert done.output == {"said": f"hello {INJECTION}"}
    assert list(work.iterdir()) == []  # nothing was touched


async def test_the_unquoted_shell_form_is_what_the_quoting_prevents(
    workflow, engine_factory, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    ref = workflow(
        "inject_plain",
        f"""
        parameters:
          name: {{type: string}}
        tasks:
          - name: greet
            action: core.local
            input: {{cmd: "echo hello {{{{ parameters.name }}}}", cwd: "{work}"}}
    """,
    )
    engine: Engine = await engine_factory()
    done = await engine.wait((await engine.execute(ref, {"name": INJECTION})).id, timeout=30)
    assert done.status == "succeeded", done.error
    assert (work / "INJECTED").exists()  # the unsafe form runs the injection: docs warn


async def test_commands_do_not_outlive_an_engine_killed_outright(
    workflow, packs_dir: Path, tmp_path: Path
) -> None:
    pids, napper = tmp_path / "pids", tmp_path / "napper"
    actions = packs_dir / "testpack" / "actions"
    (actions / "napper.py").write_text(
        "import os, time\n\ndef run(pidfile):\n"
        "    open(pidfile, 'w').write(f'{os.getpid()}\\n')\n"
        "    time.sleep(60)\n"  # deliberate: what the killed engine leaves running
    )
    (actions / "napper.yaml").write_text(
        "name: napper\nrunner_type: python\nentry_point: napper.py\n"
        "parameters:\n  pidfile: {type: string, required: true}\n"
    )
    workflow(
        "long",
        f"""
        tasks:
          - name: long
            action: core.local
            input: {{cmd: "sleep 60 & echo $$ $! > {pids}; wait"}}
          - name: nap
            action: testpack.napper
            input: {{pidfile: "{napper}"}}
    """,
    )
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "attune_actors.cli", "run", "testpack.long", "--packs", str(packs_dir),
        "--data-dir", str(tmp_path / "data"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=tmp_path,
    )
    try:
        await eventually(lambda: None not in (read_pids(pids), read_pids(napper)), timeout=30)
        shell, child = read_pids(pids) or []
        (python,) = read_pids(napper) or []
        assert all(map(running, (shell, child, python)))
        cli.send_signal(signal.SIGKILL)  # no cleanup of its own: the guard must do it
        assert await cli.wait() == -signal.SIGKILL
        await eventually(lambda: not any(map(running, (shell, child, python))), timeout=10)
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()
