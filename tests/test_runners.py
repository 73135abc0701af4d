"""Runners: the python runner (real worker processes) and the built-in noop/echo/sleep runners,
and RunnerSet dispatch and result limits."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually

from attune_actors.errors import ActionError
from attune_actors.kv import Masker
from attune_actors.runners import (
    EchoRunner,
    NoopRunner,
    PythonRunner,
    RunContext,
    RunnerLimits,
    RunnerSet,
    SleepRunner,
    default_runners,
    json_result,
)
from attune_actors.spec.model import ActionSpec


def context(attempt: int = 1, item_index: int | None = None) -> RunContext:
    return RunContext(
        execution_id="ex-1", run_id="run-1", attempt=attempt, task="t1",
        item_index=item_index, action="mypack.act",
    )


def action(runner_type: str, *, pack_path: Path | str = "", entry_point: str | None = None,
           name: str = "act") -> ActionSpec:
    return ActionSpec(
        ref=f"mypack.{name}", pack="mypack", name=name, runner_type=runner_type,
        entry_point=entry_point, pack_path=str(pack_path),
    )



class Pack:
    """A throw-away pack directory with python action files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "actions").mkdir(parents=True, exist_ok=True)

    def write(self, name: str, source: str) -> Path:
        path = self.root / "actions" / name
        path.write_text(textwrap.dedent(source))
        return path

    def action(self, entry_point: str) -> ActionSpec:
        return action("python", pack_path=self.root, entry_point=entry_point)


@pytest.fixture
def pack(tmp_path: Path) -> Pack:
    return Pack(tmp_path / "mypack")


@pytest.fixture
async def python_runner() -> AsyncIterator[PythonRunner]:
    runner = PythonRunner(workers=2, kill_grace=2.0)
    yield runner
    await runner.aclose()


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_int(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.endswith("\n") else None


# -- python runner ---------------------------------------------------------------------------------


async def test_sync_action_runs_in_a_reused_worker_process(
    pack: Pack, python_runner: PythonRunner
) -> None:
    pack.write("add.py", """
        import os

        def run(a, b=2):
            return {"sum": a + b, "pid": os.getpid()}
    """)
    first = await python_runner.run(pack.action("add.py"), {"a": 1}, context())
    second = await python_runner.run(pack.action("add.py"), {"a": 5, "b": 5}, context())
    assert first["sum"] == 3
    assert second["sum"] == 10
    assert first["pid"] != os.getpid()
    assert second["pid"] == first["pid"]  # the pool keeps its processes


async def test_async_action_is_awaited_in_a_worker(pack: Pack, python_runner: PythonRunner) -> None:
    pack.write("hello.py", """
        import asyncio, os

        async def run(name):
            await asyncio.sleep(0)  # deliberate: one loop turn, so it really is a coroutine
            return {"greeting": f"hello {name}", "pid": os.getpid()}
    """)
    result = await python_runner.run(pack.action("hello.py"), {"name": "bob"}, context())
    assert result["greeting"] == "hello bob"
    assert result["pid"] != os.getpid()


async def test_run_context_is_passed_when_asked_for(
    pack: Pack, python_runner: PythonRunner
) -> None:
    pack.write("ctx.py", """
        def run(x, run_context):
            return {"x": x, "attempt": run_context.attempt, "run_id": run_context.run_id,
                    "task": run_context.task, "item": run_context.item_index,
                    "action": run_context.action, "execution": run_context.execution_id}
    """)
    result = await python_runner.run(pack.action("ctx.py"), {"x": 1}, context(3, 7))
    assert result == {"x": 1, "attempt": 3, "run_id": "run-1", "task": "t1", "item": 7,
                      "action": "mypack.act", "execution": "ex-1"}


async def test_run_context_is_not_forced_on_kwargs(pack: Pack, python_runner: PythonRunner) -> None:
    pack.write("kw.py", """
        def run(**params):
            return sorted(params)
    """)
    assert await python_runner.run(pack.action("kw.py"), {"b": 1, "a": 2}, context()) == ["a", "b"]


async def test_exception_becomes_action_error_with_location(
    pack: Pack, python_runner: PythonRunner
) -> None:
    path = pack.write("boom.py", """
        def helper(n):
            return 10 / n

        def run(n):
            return helper(n)
    """)
    with pytest.raises(ActionError) as info:
        await python_runner.run(pack.action("boom.py"), {"n": 0}, context())
    assert info.value.message == (
        f"ZeroDivisionError: division by zero (raised at {path.resolve()}:3)"
    )
    assert info.value.result is None


async def test_exception_in_a_library_points_at_the_action_line(
    pack: Pack, python_runner: PythonRunner
) -> None:
    path = pack.write("lib.py", """
        import json

        def run(text):
            data = json.loads(text)
            return data
    """)
    with pytest.raises(ActionError) as info:
        await python_runner.run(pack.action("lib.py"), {"text": "{nope"}, context())
    assert info.value.message.startswith("JSONDecodeError: Expecting property name")
    assert info.value.message.endswith(f"(raised at {path.resolve()}:5)")


async def test_bad_arguments_point_at_the_run_definition(
    pack: Pack, python_runner: PythonRunner
) -> None:
    path = pack.write("strict.py", """
        # a comment

        async def run(a):
            return a
    """)
    with pytest.raises(ActionError) as info:
        await python_runner.run(pack.action("strict.py"), {"a": 1, "b": 2}, context())
    assert "TypeError: run() got an unexpected keyword argument 'b'" in info.value.message
    assert info.value.message.endswith(f"(raised at {path.resolve()}:4)")


async def test_action_error_keeps_its_partial_result(
    pack: Pack, python_runner: PythonRunner
) -> None:
    pack.write("partial.py", """
        from attune_actors.errors import ActionError

        def run():
            raise ActionError("half done", result={"done": (1, 2)})
    """)
    with pytest.raises(ActionError) as info:
        await python_runner.run(pack.action("partial.py"), {}, context())
    assert info.value.message == "half done"
    assert info.value.result == {"done": [1, 2]}
    pack.write("top.py", """
        from attune_actors import ActionError  # the package's own name, not the module's

        def run():
            raise ActionError("from the top", result=[1])
    """)
    with pytest.raises(ActionError, match=r"^from the top$") as info:
        await python_runner.run(pack.action("top.py"), {}, context())
    assert info.value.result == [1]


async def test_system_exit_does_not_escape(pack: Pack, python_runner: PythonRunner) -> None:
    pack.write("exit.py", """
        import sys

        def run():
            sys.exit(3)
    """)
    with pytest.raises(ActionError, match=r"^SystemExit: 3 \(raised at .*exit.py:5\)$"):
        await python_runner.run(pack.action("exit.py"), {}, context())


async def test_non_serialisable_result_is_refused(pack: Pack, python_runner: PythonRunner) -> None:
    pack.write("when.py", """
        import datetime

        def run():
            return {"ok": True, "when": [datetime.date(2024, 1, 1)]}
    """)
    with pytest.raises(ActionError) as info:
        await python_runner.run(pack.action("when.py"), {}, context())
    assert "result is not JSON-serialisable" in info.value.message
    assert "result['when'][0] is of type datetime.date" in info.value.message


async def test_tuples_become_lists(pack: Pack, python_runner: PythonRunner) -> None:
    pack.write("tup.py", """
        def run():
            return {"pair": (1, (2, 3))}
    """)
    assert await python_runner.run(pack.action("tup.py"), {}, context()) == {"pair": [1, [2, 3]]}


def test_json_result_rules() -> None:
    assert json_result({"a": [1, 2.5, None, True, "x"]}, action="a") == {
        "a": [1, 2.5, None, True, "x"]
    }
    with pytest.raises(ActionError, match=r"result\[1\] has a non-string key"):
        json_result({"a": 1, 1: 2}, action="a")
    with pytest.raises(ActionError, match="result is nan, which JSON cannot represent"):
        json_result(float("nan"), action="a")
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ActionError, match="reference cycle"):
        json_result(cyclic, action="a")
    with pytest.raises(ActionError, match="set"):
        json_result({1, 2}, action="a")
    shared = [1]
    assert json_result([shared, shared], action="a") == [[1], [1]]  # shared is not a cycle


async def test_module_is_reloaded_when_the_file_changes(
    pack: Pack, python_runner: PythonRunner
) -> None:
    path = pack.write("ver.py", "def run():\n    return 1\n")
    act = pack.action("ver.py")
    assert await python_runner.run(act, {}, context()) == 1
    assert await python_runner.run(act, {}, context()) == 1
    path.write_text("def run():\n    return 2\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert await python_runner.run(act, {}, context()) == 2


async def test_same_file_name_in_two_packs_does_not_collide(
    tmp_path: Path, python_runner: PythonRunner
) -> None:
    one, two = Pack(tmp_path / "one"), Pack(tmp_path / "two")
    one.write("a.py", "NAME = 'one'\ndef run():\n    return [NAME, __name__]\n")
    two.write("a.py", "NAME = 'two'\ndef run():\n    return [NAME, __name__]\n")
    r1 = await python_runner.run(one.action("a.py"), {}, context())
    r2 = await python_runner.run(two.action("a.py"), {}, context())
    assert r1[0] == "one"
    assert r2[0] == "two"
    assert r1[1] != r2[1]


async def test_load_errors_name_the_file(pack: Pack, python_runner: PythonRunner) -> None:
    bad = pack.write("syntax.py", "def run(:\n    pass\n")
    with pytest.raises(ActionError, match=f"cannot import python action {bad.resolve()}") as info:
        await python_runner.run(pack.action("syntax.py"), {}, context())
    assert f"SyntaxError: invalid syntax (raised at {bad.resolve()}:1)" in info.value.message

    missing = pack.write("imports.py", "import no_such_module_here\n\ndef run():\n    pass\n")
    with pytest.raises(ActionError) as info:
        await python_runner.run(pack.action("imports.py"), {}, context())
    assert f"cannot import python action {missing.resolve()}" in info.value.message
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in info.value.message
    assert f"(raised at {missing.resolve()}:1)" in info.value.message

    norun = pack.write("norun.py", "def main():\n    pass\n")
    with pytest.raises(ActionError, match=f"{norun.resolve()} defines no function 'run'"):
        await python_runner.run(pack.action("norun.py"), {}, context())

    with pytest.raises(ActionError, match=r"absent\.py cannot be read"):
        await python_runner.run(pack.action("absent.py"), {}, context())


async def test_entry_point_must_stay_in_actions(pack: Pack, python_runner: PythonRunner) -> None:
    (pack.root / "secret.py").write_text("def run():\n    return 1\n")
    with pytest.raises(ActionError, match="is outside"):
        await python_runner.run(pack.action("../secret.py"), {}, context())
    with pytest.raises(ActionError, match="has no entry_point"):
        await python_runner.run(action("python", pack_path=pack.root), {}, context())


async def test_cancelling_an_async_action_runs_its_cleanup(
    pack: Pack, python_runner: PythonRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "cleaned"
    started = tmp_path / "started"
    pack.write("slow.py", """
        import asyncio
        from pathlib import Path

        async def run(started, marker):
            Path(started).touch()
            try:
                await asyncio.sleep(30)  # deliberate: the action the test cancels
            finally:
                Path(marker).touch()
    """)
    task = asyncio.create_task(python_runner.run(
        pack.action("slow.py"), {"started": str(started), "marker": str(marker)}, context()
    ))
    await eventually(started.exists)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert marker.exists()


async def test_cancelling_an_action_that_swallows_it_still_cancels(
    pack: Pack, python_runner: PythonRunner, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    pack.write("stubborn.py", """
        import asyncio
        from pathlib import Path

        async def run(started):
            Path(started).touch()
            try:
                await asyncio.sleep(30)  # deliberate: the action the test cancels
            except asyncio.CancelledError:
                return "ignored"
    """)
    task = asyncio.create_task(
        python_runner.run(pack.action("stubborn.py"), {"started": str(started)}, context())
    )
    await eventually(started.exists)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelling_a_sync_action_stops_its_process(
    pack: Pack, python_runner: PythonRunner, tmp_path: Path
) -> None:
    pidfile, marker = tmp_path / "pid", tmp_path / "cleaned"
    pack.write("block.py", """
        import os, time
        from pathlib import Path

        def run(pidfile, marker):
            Path(pidfile).write_text(f"{os.getpid()}\\n")
            try:
                time.sleep(30)  # deliberate: the action the test cancels
            finally:
                Path(marker).touch()
            return 1
    """)
    task = asyncio.create_task(python_runner.run(
        pack.action("block.py"), {"pidfile": str(pidfile), "marker": str(marker)}, context()
    ))
    await eventually(lambda: read_int(pidfile) is not None)
    pid = read_int(pidfile)
    assert pid is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pid)  # stopped and reaped by the time the cancel returns
    assert marker.exists()  # SIGTERM first: its `finally` ran
    # A fresh process takes the stopped one's place.
    pack.write("pid.py", "import os\ndef run():\n    return os.getpid()\n")
    assert await python_runner.run(pack.action("pid.py"), {}, context()) != pid


async def test_a_timed_out_sync_action_is_gone_within_the_kill_grace(
    pack: Pack, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    pack.write("stubborn.py", """
        import os, signal, time
        from pathlib import Path

        def run(pidfile):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # it will take SIGKILL
            Path(pidfile).write_text(f"{os.getpid()}\\n")
            time.sleep(30)  # deliberate: the action the test times out
    """)
    runner = PythonRunner(workers=1, kill_grace=0.5)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await runner.run(pack.action("stubborn.py"), {"pidfile": str(pidfile)}, context())
        pid = read_int(pidfile)
        assert pid is not None
        assert not alive(pid)
    finally:
        await runner.aclose()


async def test_a_worker_that_dies_fails_the_run_and_is_replaced(
    pack: Pack, python_runner: PythonRunner
) -> None:
    pack.write("die.py", """
        import os

        def run(how):
            if how == "exit":
                os._exit(3)
            os.kill(os.getpid(), 9)
    """)
    with pytest.raises(ActionError, match="python action process exited with code 3 before replying"):
        await python_runner.run(pack.action("die.py"), {"how": "exit"}, context())
    with pytest.raises(ActionError, match="was killed by SIGKILL"):
        await python_runner.run(pack.action("die.py"), {"how": "kill"}, context())
    pack.write("ok.py", "def run():\n    return 'ok'\n")
    assert await python_runner.run(pack.action("ok.py"), {}, context()) == "ok"


async def test_output_is_captured_masked_and_kept_off_our_stdout(
    pack: Pack, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    pack.write("talk.py", """
        import logging, subprocess, sys

        def run(token, result):
            print("token is", token)
            logging.getLogger("x").warning("careful with %s", token)
            subprocess.run(["echo", "from a child"], check=True)
            print("oops", file=sys.stderr)
            return result
    """)
    masker = Masker(["S3cr3t-token"])
    runner = PythonRunner(workers=1, masker=masker)
    try:
        result = await runner.run(
            pack.action("talk.py"), {"token": "S3cr3t-token", "result": {"n": 1}}, context()
        )
        assert result == {"n": 1, "stdout": "token is ***\nfrom a child", "stderr": "oops"}
        # Log records become the engine's own (masked), not output.
        assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
            ("x", "WARNING", "careful with ***")
        ]
        # Action keys win over captured output; a non-dict result is left as it is.
        same = {"n": 1, "stdout": "mine"}
        assert await runner.run(pack.action("talk.py"), {"token": "x", "result": same},
                                context()) == {**same, "stderr": "oops"}
        assert await runner.run(pack.action("talk.py"), {"token": "x", "result": 7},
                                context()) == 7
    finally:
        await runner.aclose()
    out, err = capfd.readouterr()
    assert "token is" not in out
    assert "from a child" not in out
    assert "S3cr3t" not in out + err


async def test_output_is_bounded_and_a_failed_run_keeps_it(pack: Pack) -> None:
    pack.write("loud.py", """
        def run():
            print("x" * 100_000)
            raise RuntimeError("then it failed")
    """)
    runner = PythonRunner(workers=1, max_output_bytes=1000)
    try:
        with pytest.raises(ActionError, match="RuntimeError: then it failed") as info:
            await runner.run(pack.action("loud.py"), {}, context())
    finally:
        await runner.aclose()
    stdout = info.value.result["stdout"]
    assert stdout.startswith("x" * 1000 + "\n[... 99001 more bytes dropped")
    assert "limits.max_output_bytes (1000)" in stdout


BARRIER = """
    import asyncio, os
    from pathlib import Path

    async def run(i, n, folder, stubborn=False):
        # Returns only once all n runs are in flight at once (or after 20 s, to fail clearly).
        Path(folder, str(i)).touch()
        print(f"run {i} says hi")
        for _ in range(2000):
            if len(os.listdir(folder)) >= n:
                return {"i": i, "pid": os.getpid()}
            try:
                await asyncio.sleep(0.01)  # deliberate: polling with a deadline
            except asyncio.CancelledError:
                if not stubborn:
                    raise
                await asyncio.sleep(30)  # deliberate: ignores its cancellation
        raise RuntimeError(f"only {len(os.listdir(folder))} of {n} runs were in flight at once")
"""


async def test_async_runs_share_a_worker_each_with_its_own_output(
    pack: Pack, tmp_path: Path
) -> None:
    pack.write("barrier.py", BARRIER)
    folder = tmp_path / "in-flight"
    folder.mkdir()
    runner = PythonRunner(workers=1)  # one process: 30 runs at once only if they share it
    try:
        results = await asyncio.gather(*(
            runner.run(pack.action("barrier.py"), {"i": i, "n": 30, "folder": str(folder)},
                       context())
            for i in range(30)
        ))
    finally:
        await runner.aclose()
    assert [r["i"] for r in results] == list(range(30))
    assert len({r["pid"] for r in results}) == 1
    assert [r["stdout"] for r in results] == [f"run {i} says hi" for i in range(30)]


async def test_cancelling_one_async_run_leaves_the_others_and_the_worker(
    pack: Pack, tmp_path: Path
) -> None:
    pack.write("barrier.py", BARRIER)
    folder = tmp_path / "in-flight"
    folder.mkdir()
    runner = PythonRunner(workers=1, kill_grace=5)
    act = pack.action("barrier.py")
    try:
        runs = [asyncio.create_task(runner.run(act, {"i": i, "n": 4, "folder": str(folder)},
                                               context())) for i in range(3)]
        await eventually(lambda: len(os.listdir(folder)) == 3)
        [pid] = runner.pool.processes
        runs[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await runs[0]
        (folder / "latecomer").touch()  # now the two others see 4 and finish
        assert [r["i"] for r in await asyncio.gather(*runs[1:])] == [1, 2]
        assert runner.pool.processes == [pid]  # cancelled in place, not killed
    finally:
        await runner.aclose()


async def test_an_async_run_that_ignores_its_cancellation_takes_its_worker_down(
    pack: Pack, tmp_path: Path
) -> None:
    pack.write("barrier.py", BARRIER)
    folder = tmp_path / "in-flight"
    folder.mkdir()
    runner = PythonRunner(workers=1, kill_grace=0.5)
    act = pack.action("barrier.py")
    try:
        stubborn = asyncio.create_task(runner.run(
            act, {"i": 0, "n": 9, "folder": str(folder), "stubborn": True}, context()))
        other = asyncio.create_task(runner.run(act, {"i": 1, "n": 9, "folder": str(folder)},
                                               context()))
        await eventually(lambda: len(os.listdir(folder)) == 2)
        [pid] = runner.pool.processes
        stubborn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stubborn
        assert not alive(pid)
        with pytest.raises(ActionError, match="another run on it ignored its cancellation"):
            await other
        (folder / "x").touch()
        assert (await runner.run(act, {"i": 2, "n": 1, "folder": str(folder)}, context()))["i"] == 2
    finally:
        await runner.aclose()


async def test_closed_runner_refuses_runs(pack: Pack) -> None:
    pack.write("one.py", "def run():\n    return 1\n")
    runner = PythonRunner(workers=1)
    assert await runner.run(pack.action("one.py"), {}, context()) == 1
    await runner.aclose()
    with pytest.raises(ActionError, match="closed"):
        await runner.run(pack.action("one.py"), {}, context())


async def test_concurrent_first_runs_load_once(pack: Pack, python_runner: PythonRunner) -> None:
    pack.write("count.py", """
        LOADS = []
        LOADS.append(1)

        def run(i):
            return [i, len(LOADS)]
    """)
    act = pack.action("count.py")
    results = await asyncio.gather(
        *(python_runner.run(act, {"i": i}, context()) for i in range(20))
    )
    assert [r[0] for r in results] == list(range(20))
    assert {r[1] for r in results} == {1}


# -- built-in runners ------------------------------------------------------------------------------


async def test_noop_and_echo() -> None:
    params = {"a": 1, "nested": {"b": [1, 2]}}
    assert await NoopRunner().run(action("noop"), params, context()) is None
    echoed = await EchoRunner().run(action("echo"), params, context())
    assert echoed == params
    assert echoed is not params


async def test_sleep_waits_and_validates() -> None:
    runner = SleepRunner()
    started = time.monotonic()
    assert await runner.run(action("sleep"), {"seconds": 0.05}, context()) is None
    assert time.monotonic() - started >= 0.05
    assert await runner.run(action("sleep"), {"seconds": 0}, context()) is None
    for bad in (None, -1, "1", True, float("inf")):
        with pytest.raises(ActionError, match="'seconds' must be a number"):
            await runner.run(action("sleep"), {"seconds": bad}, context())


async def test_many_sleeps_run_concurrently() -> None:
    runner = SleepRunner()
    started = time.monotonic()
    results = await asyncio.gather(
        *(runner.run(action("sleep"), {"seconds": 0.2}, context()) for _ in range(5000))
    )
    assert results == [None] * 5000
    assert time.monotonic() - started < 10  # concurrent: nowhere near 5000 * 0.2 s


async def test_sleep_is_cancellable() -> None:
    task = asyncio.create_task(SleepRunner().run(action("sleep"), {"seconds": 30}, context()))
    await asyncio.sleep(0)  # deliberate: let the task start, so the cancel hits the sleep
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- RunnerSet -------------------------------------------------------------------------------------


async def test_runner_set_dispatches_by_runner_type(pack: Pack) -> None:
    pack.write("x.py", "def run(v):\n    return v * 2\n")
    async with RunnerSet(limits=RunnerLimits(kill_grace=0.5)) as runners:
        assert runners.types == ("echo", "http", "local", "noop", "python", "sleep")
        assert "python" in runners
        assert await runners.run(pack.action("x.py"), {"v": 21}, context()) == 42
        assert await runners.run(action("echo"), {"k": "v"}, context()) == {"k": "v"}
        assert await runners.get("noop").run(action("noop"), {}, context()) is None


async def test_unknown_runner_type_is_a_clear_error() -> None:
    runners = RunnerSet({"python": PythonRunner(), "echo": EchoRunner()})
    with pytest.raises(ActionError, match=r"unknown runner type 'pyhton' \(known: echo, python\)"
                                          r"; did you mean 'python'\?"):
        runners.get("pyhton")
    with pytest.raises(ActionError, match="unknown runner type 'custom'"):
        await runners.run(action("custom"), {}, context())
    with pytest.raises(ActionError, match="carried out by the engine"):
        runners.get("inquiry")
    await runners.aclose()
    await runners.aclose()  # idempotent


def test_default_runners_are_keyed_by_runner_type() -> None:
    runners = default_runners()
    assert set(runners) == {"python", "local", "http", "noop", "echo", "sleep"}
    asyncio.run(RunnerSet(runners).aclose())


async def test_every_runner_result_is_held_to_max_result_bytes(pack: Pack) -> None:
    pack.write("big.py", "def run(n):\n    return {'data': 'y' * n}\n")
    async with RunnerSet(limits=RunnerLimits(max_result_bytes=2000, python_workers=1)) as runners:
        assert (await runners.run(pack.action("big.py"), {"n": 100}, context()))["data"] == "y" * 100
        with pytest.raises(ActionError, match=r"exceeds limits.max_result_bytes \(2000\); the run "
                                              r"failed and its result was dropped"):
            await runners.run(pack.action("big.py"), {"n": 5000}, context())
        # Any runner, not only python: echo hands back its (large) input.
        with pytest.raises(ActionError, match=r"core.echo|mypack.echo: result is \d+ bytes"):
            await runners.get("echo").run(action("echo", name="echo"), {"v": "z" * 3000}, context())


async def test_engine_timeout_stops_a_sleeping_sync_action(
    workflow, engine_factory, packs_dir: Path, tmp_path: Path
) -> None:
    actions = packs_dir / "testpack" / "actions"
    (actions / "sleeper.py").write_text(textwrap.dedent("""
        import os, time
        from pathlib import Path

        def run(pidfile):
            Path(pidfile).write_text(f"{os.getpid()}\\n")
            time.sleep(30)  # deliberate: the action the engine times out
    """))
    (actions / "sleeper.yaml").write_text(textwrap.dedent("""
        name: sleeper
        runner_type: python
        entry_point: sleeper.py
        parameters:
          pidfile: {type: string, required: true}
    """))
    pidfile = tmp_path / "pid"
    ref = workflow("sleepy", f"""
        tasks:
          - {{name: nap, action: testpack.sleeper, timeout: 1, input: {{pidfile: "{pidfile}"}}}}
    """)
    engine = await engine_factory()
    done = await engine.wait((await engine.execute(ref)).id, timeout=30)
    assert done.status == "failed"
    assert done.task("nap").status == "timeout"
    pid = read_int(pidfile)
    assert pid is not None
    await eventually(lambda: not alive(pid), timeout=engine.settings.limits.kill_grace + 1)


async def test_run_json_stdout_stays_clean_when_an_action_prints(
    workflow, packs_dir: Path, tmp_path: Path
) -> None:
    actions = packs_dir / "testpack" / "actions"
    (actions / "printer.py").write_text("def run():\n    print('noise on stdout')\n    return {'ok': 1}\n")
    (actions / "printer.yaml").write_text("name: printer\nrunner_type: python\nentry_point: printer.py\n")
    workflow("printing", """
        tasks:
          - {name: p, action: testpack.printer}
        output_map:
          said: "{{ task.p.result.stdout }}"
    """)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "attune_actors.cli", "run", "testpack.printing", "--json",
        "--packs", str(packs_dir), "--data-dir", str(tmp_path / "data"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    document = json.loads(out)  # nothing but the document
    assert document["output"] == {"said": "noise on stdout"}
