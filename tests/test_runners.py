"""Runners: the python runner and the built-in noop/echo/sleep runners, and RunnerSet dispatch."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually

from attune_actors.errors import ActionError
from attune_actors.runners import (
    EchoRunner,
    NoopRunner,
    PythonRunner,
    RunContext,
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
    runner = PythonRunner()
    yield runner
    await runner.aclose()


# -- python runner ---------------------------------------------------------------------------------


async def test_sync_action_runs_off_the_loop(pack: Pack, python_runner: PythonRunner) -> None:
    pack.write("add.py", """
        import threading

        def run(a, b=2):
            return {"sum": a + b, "thread": threading.current_thread().name}
    """)
    result = await python_runner.run(pack.action("add.py"), {"a": 1}, context())
    assert result["sum"] == 3
    assert result["thread"].startswith("attune-action")


async def test_async_action_is_awaited_on_the_loop(pack: Pack, python_runner: PythonRunner) -> None:
    pack.write("hello.py", """
        import asyncio, threading

        async def run(name):
            await asyncio.sleep(0)  # noqa: sleep-ok - one loop turn, so it really is a coroutine
            return {"greeting": f"hello {name}", "thread": threading.get_ident()}
    """)
    result = await python_runner.run(pack.action("hello.py"), {"name": "bob"}, context())
    assert result == {"greeting": "hello bob", "thread": threading.get_ident()}


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
    assert isinstance(info.value.__cause__, ZeroDivisionError)


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
                await asyncio.sleep(30)  # noqa: sleep-ok - the action the test cancels
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
                await asyncio.sleep(30)  # noqa: sleep-ok - the action the test cancels
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


async def test_cancelling_a_sync_action_returns_at_once(
    pack: Pack, python_runner: PythonRunner
) -> None:
    pack.write("block.py", """
        def run(started, release):
            started.set()
            release.wait(30)
            return 1
    """)
    started, release = threading.Event(), threading.Event()
    task = asyncio.create_task(python_runner.run(
        pack.action("block.py"), {"started": started, "release": release}, context()
    ))
    await eventually(started.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()


async def test_given_executor_is_used_and_left_open(pack: Pack) -> None:
    pack.write("where.py", """
        import threading

        def run():
            return threading.current_thread().name
    """)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine") as executor:
        runner = PythonRunner(executor=executor)
        assert (await runner.run(pack.action("where.py"), {}, context())).startswith("mine")
        await runner.aclose()
        assert executor.submit(lambda: 5).result() == 5
        with pytest.raises(ActionError, match="closed"):
            await runner.run(pack.action("where.py"), {}, context())


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
    await asyncio.sleep(0)  # noqa: sleep-ok - let the task start, so the cancel hits the sleep
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- RunnerSet -------------------------------------------------------------------------------------


async def test_runner_set_dispatches_by_runner_type(pack: Pack) -> None:
    pack.write("x.py", "def run(v):\n    return v * 2\n")
    async with RunnerSet(kill_grace=0.5) as runners:
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
