"""The command line as several processes share one data dir (SPEC section 8), as real subprocesses:
ownership of executions, interrupted runs resumed or canceled, control of an execution another
process runs, inquiries answered from another process, closed pipes, Ctrl-C and timeouts."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_cli import EXAMPLES, cli, write

DEADLINE = 30.0  # seconds any awaited state may take on a loaded machine


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ATTUNE_")}


def start(*args: str | Path, cwd: Path, **kw: Any) -> subprocess.Popen[str]:
    """`attune-actors ARGS` in the background."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "attune_actors.cli", *map(str, args)],
        cwd=cwd, env=env(), text=True, **kw,
    )


def eventually(what: str, probe: Callable[[], Any]) -> Any:
    """Poll `probe` until it returns something truthy (the state of other processes: no event)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # deliberate: polling another process's state with a deadline


def listed(cwd: Path, data: Path) -> list[dict[str, Any]]:
    proc = cli("executions", "list", "--json", "--data-dir", data, cwd=cwd)
    if proc.returncode != 0:
        return []
    docs: list[dict[str, Any]] = json.loads(proc.stdout)
    return docs


def running_task(cwd: Path, data: Path, ref: str) -> dict[str, Any] | None:
    """The execution of `ref` once one of its task runs is running."""
    for doc in listed(cwd, data):
        if doc["ref"] == ref and any(t["status"] == "running" for t in doc["tasks"]):
            return doc
    return None


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    """Pack `t`: `gate` waits for a file to exist, `quick` returns at once; both log their runs."""
    root = tmp_path / "packs"
    write(root / "t" / "pack.yaml", "ref: t\n")
    write(root / "t" / "workflows" / "gate.yaml", """\
        tasks:
          - name: wait
            action: core.local
            input:
              cmd: "while [ ! -e go ]; do sleep 0.02; done; echo gate {{ system.execution_id }} >> runs.log"
            on_success: after
          - {name: after, action: core.noop}
        output_map: {done: true}
        """)
    write(root / "t" / "workflows" / "quick.yaml", """\
        tasks:
          - name: go
            action: core.local
            input: {cmd: "echo quick {{ system.execution_id }} >> runs.log"}
        """)
    write(root / "t" / "workflows" / "ask.yaml", """\
        tasks:
          - name: approve
            action: core.inquiry
            input: {prompt: "Go on?", schema: {type: object, properties: {ok: {type: boolean}},
                                               required: [ok]}}
        output_map: {ok: "{{ task.approve.result.ok }}"}
        """)
    write(root / "t" / "workflows" / "flow.yaml", """        tasks:
          - {name: first, action: core.noop, on_success: risky}
          - {name: risky, action: core.local, input: {cmd: "test -e fixed"}, on_success: last}
          - {name: last, action: core.noop}
        """)
    return root


def runs_log(tmp_path: Path) -> list[str]:
    log = tmp_path / "runs.log"
    return log.read_text().splitlines() if log.exists() else []


# -- one data dir, several processes ---------------------------------------------------------------


def test_two_runs_on_one_data_dir_each_run_their_own_workflow_once(
    packs: Path, tmp_path: Path, background: list[subprocess.Popen[str]]
) -> None:
    data = tmp_path / "data"
    gate = start("run", "t.gate", "--packs", packs, "--data-dir", data, "--json", cwd=tmp_path)
    background.append(gate)
    first = eventually("the gate to run", lambda: running_task(tmp_path, data, "t.gate"))
    quick = cli("run", "t.quick", "--packs", packs, "--data-dir", data, "--json", cwd=tmp_path)
    assert quick.returncode == 0, quick.stderr
    assert "resumed" not in quick.stderr
    assert runs_log(tmp_path) == [f"quick {json.loads(quick.stdout)['id']}"]  # the gate did not run here
    (tmp_path / "go").touch()
    out, err = gate.communicate(timeout=DEADLINE)
    assert gate.returncode == 0, err
    assert json.loads(out)["id"] == first["id"]
    quick_id = json.loads(quick.stdout)["id"]
    assert sorted(runs_log(tmp_path)) == sorted([f"gate {first['id']}", f"quick {quick_id}"])
    assert all(t["attempts"] == 1 for t in json.loads(out)["tasks"])  # one attempt, in one process


def killed_run(packs: Path, tmp_path: Path, data: Path) -> dict[str, Any]:
    """A `run t.gate` SIGKILLed while its task runs: the execution it leaves behind."""
    proc = start("run", "t.gate", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    try:
        doc = eventually("the gate to run", lambda: running_task(tmp_path, data, "t.gate"))
    finally:
        proc.kill()
        proc.communicate()
    assert doc is not None
    return doc


def test_an_interrupted_run_is_listed_and_resumed(packs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    left = killed_run(packs, tmp_path, data)
    short = left["id"][:12]
    listing = cli("executions", "list", "--data-dir", data, cwd=tmp_path)
    assert re.search(rf"^{short}  running .*interrupted", listing.stdout, re.M), listing.stdout

    other = cli("run", "t.quick", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert f"{short} t.gate (running)" in other.stderr  # the hint names it...
    assert "executions resume ID" in other.stderr
    still = cli("executions", "get", short, "--json", "--data-dir", data, cwd=tmp_path)
    assert json.loads(still.stdout)["status"] == "running"  # ...and does not run it

    (tmp_path / "go").touch()
    resumed = cli("executions", "resume", left["id"][:8], "--packs", packs, "--data-dir", data, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == f"t.gate {short}: succeeded"
    final = json.loads(cli("executions", "get", short, "--json", "--data-dir", data, cwd=tmp_path).stdout)
    assert final["status"] == "succeeded"
    assert final["output"] == {"done": True}
    # The attempt the kill cut short went out again as a new attempt, and is counted.
    assert final["tasks"][0]["attempts"] == 2
    listing = cli("executions", "list", "--data-dir", data, cwd=tmp_path)
    assert "interrupted" not in listing.stdout


def test_an_interrupted_run_is_canceled(packs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    left = killed_run(packs, tmp_path, data)
    canceled = cli("executions", "cancel", left["id"][:10], "--packs", packs, "--data-dir", data,
                   cwd=tmp_path)
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout.strip() == f"{left['id'][:12]} t.gate: canceled"
    got = cli("executions", "get", left["id"], "--json", "--data-dir", data, cwd=tmp_path)
    final = json.loads(got.stdout)
    assert final["status"] == "canceled"
    assert [t["status"] for t in final["tasks"]] == ["canceled"]
    again = cli("run", "t.quick", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    assert "note:" not in again.stderr  # nothing is left unfinished


def test_control_of_an_execution_another_process_runs(
    packs: Path, tmp_path: Path, background: list[subprocess.Popen[str]]
) -> None:
    data = tmp_path / "data"
    gate = start("run", "t.gate", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    background.append(gate)
    doc = eventually("the gate to run", lambda: running_task(tmp_path, data, "t.gate"))
    short = doc["id"][:12]
    # The process that runs it carries out the request, and says so in the list.
    assert f"run by process {gate.pid}" in cli("executions", "list", "--data-dir", data, cwd=tmp_path).stdout
    paused = cli("executions", "pause", short, "--packs", packs, "--data-dir", data, cwd=tmp_path)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"{short} t.gate: pausing"
    (tmp_path / "go").touch()
    eventually("the pause", lambda: json.loads(cli("executions", "get", short, "--json", "--data-dir", data,
                                                   cwd=tmp_path).stdout)["status"] == "paused")
    resumed = cli("executions", "resume", short, "--packs", packs, "--data-dir", data, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr  # follows it (from the store) to its end
    assert resumed.stdout.splitlines()[0] == f"t.gate {short}: succeeded"
    out, err = gate.communicate(timeout=DEADLINE)
    assert gate.returncode == 0, err
    assert out.splitlines()[0] == f"t.gate {short}: succeeded"


def test_cancel_and_watch_of_an_execution_another_process_runs(
    packs: Path, tmp_path: Path, background: list[subprocess.Popen[str]]
) -> None:
    data = tmp_path / "data"
    gate = start("run", "t.gate", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    background.append(gate)
    doc = eventually("the gate to run", lambda: running_task(tmp_path, data, "t.gate"))
    watch = start("executions", "watch", doc["id"][:6], "--json", "--packs", packs, "--data-dir", data,
                  cwd=tmp_path)
    background.append(watch)
    canceled = cli("executions", "cancel", doc["id"], "--force", "--packs", packs, "--data-dir", data,
                   cwd=tmp_path)
    assert canceled.returncode == 0, canceled.stderr
    out, err = gate.communicate(timeout=DEADLINE)
    assert gate.returncode == 1
    assert out.splitlines()[0] == f"t.gate {doc['id'][:12]}: canceled"
    out, err = watch.communicate(timeout=DEADLINE)
    assert watch.returncode == 1, err  # `run`'s exit status
    assert json.loads(out)["status"] == "canceled"


def test_an_inquiry_answered_from_another_process(
    packs: Path, tmp_path: Path, background: list[subprocess.Popen[str]]
) -> None:
    data = tmp_path / "data"
    run = start("run", "t.ask", "--packs", packs, "--data-dir", data, "--json", cwd=tmp_path)
    background.append(run)

    def pending() -> list[dict[str, Any]]:
        proc = cli("inquiries", "list", "--json", "--packs", packs, "--data-dir", data, cwd=tmp_path)
        return json.loads(proc.stdout) if proc.returncode == 0 else []

    (inquiry,) = eventually("the inquiry", pending)
    assert inquiry["prompt"] == "Go on?"
    listing = cli("inquiries", "list", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    assert listing.stdout.startswith(f"{inquiry['id']}  approve")
    refused = cli("inquiries", "respond", inquiry["id"], '{"ok": "yes"}', "--packs", packs,
                  "--data-dir", data, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "ok" in refused.stderr
    answered = cli("inquiries", "respond", inquiry["id"], '{"ok": true}', "--packs", packs,
                   "--data-dir", data, cwd=tmp_path)
    assert answered.returncode == 0, answered.stderr
    out, err = run.communicate(timeout=DEADLINE)
    assert run.returncode == 0, err
    assert json.loads(out)["output"] == {"ok": True}
    assert f"inquiries respond {inquiry['id']} JSON" in err  # how to answer, on a run without a terminal


def test_an_inquiry_of_an_interrupted_run_is_answered_and_the_run_finishes(
    packs: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    run = start("run", "t.ask", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    try:
        doc = eventually("the inquiry", lambda: next(
            (d for d in listed(tmp_path, data) if d["tasks"] and d["tasks"][0]["status"] == "pending"), None))
    finally:
        run.kill()
        run.communicate()
    inquiry_id = doc["tasks"][0]["inquiry_id"]
    answered = cli("inquiries", "respond", inquiry_id, '{"ok": false}', "--packs", packs, "--data-dir", data,
                   cwd=tmp_path)
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.splitlines()[0] == f"t.ask {doc['id'][:12]}: succeeded"
    final = json.loads(cli("executions", "get", doc["id"], "--json", "--data-dir", data, cwd=tmp_path).stdout)
    assert final["output"] == {"ok": False}


# -- every command ------------------------------------------------------------------------------------


def test_run_an_action_with_trailing_assignments(tmp_path: Path) -> None:
    proc = cli("run", "core.local", "cmd=echo hello", "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    assert re.fullmatch(r"core\.local [0-9a-f]{12}: succeeded", first)
    assert json.loads("\n".join(rest))["result"]["stdout"] == "hello"
    failed = cli("run", "core.local", "-p", "cmd=echo oops >&2; exit 3", "--json", "--data-dir",
                 tmp_path / "data", cwd=tmp_path)
    assert failed.returncode == 1
    doc = json.loads(failed.stdout)
    assert doc["status"] == "failed"
    assert doc["output"]["result"]["stderr"] == "oops"
    assert [t["name"] for t in doc["tasks"]] == ["action"]  # one task run for an action


def test_get_tasks_graph_and_rerun_round_trip(packs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = cli("run", "t.flow", "--json", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    assert first.returncode == 1
    doc = json.loads(first.stdout)
    short = doc["id"][:12]
    got = cli("executions", "get", short, "--json", "--data-dir", data, cwd=tmp_path)
    assert json.loads(got.stdout)["id"] == doc["id"]
    tasks = cli("executions", "tasks", short, "--json", "--data-dir", data, cwd=tmp_path)
    assert [t["name"] for t in json.loads(tasks.stdout)] == ["first", "risky"]
    text = cli("executions", "tasks", short, "--data-dir", data, cwd=tmp_path).stdout
    assert re.search(r"risky +failed +attempts 1", text), text

    def graph(fmt: str) -> str:
        proc = cli("executions", "graph", short, "--format", fmt, "--packs", packs, "--data-dir", data,
                   cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    doc_graph = json.loads(graph("json"))
    assert doc_graph["execution_id"] == doc["id"]
    nodes = {n["id"]: (n["kind"], n["status"], n["runs"]) for n in doc_graph["nodes"]}
    assert nodes == {"first": ("action", "succeeded", 1), "risky": ("action", "failed", 1),
                     "last": ("action", None, 0)}
    assert [(e["from"], e["to"], e["taken"]) for e in doc_graph["edges"]] == [
        ("first", "risky", True), ("risky", "last", False)]
    assert graph("mermaid").startswith("flowchart TD\n")
    dot = graph("dot")
    assert dot.startswith('digraph "t.flow" {')
    assert dot.rstrip().endswith("}")

    (tmp_path / "fixed").touch()
    rerun = cli("rerun", short, "--json", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads(rerun.stdout)
    assert again["id"] != doc["id"]
    assert again["rerun_of"] == doc["id"]
    assert [(t["name"], t["status"]) for t in again["tasks"]] == [
        ("first", "succeeded"), ("risky", "failed"), ("risky", "succeeded"), ("last", "succeeded")]
    original = cli("executions", "get", short, "--json", "--data-dir", data, cwd=tmp_path)
    assert json.loads(original.stdout) == json.loads(got.stdout)  # the original stays as it was
    listing = cli("executions", "list", "--data-dir", data, cwd=tmp_path).stdout
    assert f"rerun of {short}" in listing


def test_ambiguous_and_unknown_ids(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for _ in range(20):  # 20 ids: two share their first hex digit
        assert cli("run", "core.noop", "--data-dir", data, cwd=tmp_path).returncode == 0
    ids = [d["id"] for d in listed(tmp_path, data)]
    digit = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    for args in (("executions", "get", digit), ("executions", "cancel", digit)):
        proc = cli(*args, "--data-dir", data, cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr == f"error: '{digit}' names more than one execution; give more of its id\n"
    proc = cli("executions", "get", "nope", "--data-dir", data, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, "error: no execution 'nope'\n")


def test_catalog_lists_and_version(tmp_path: Path) -> None:
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0
    assert re.fullmatch(r"attune-actors \d+\.\d+\.\d+\n", version.stdout)
    workflows = cli("workflows", "list", "--packs", EXAMPLES, cwd=tmp_path).stdout.split()
    assert "examples.deploy" in workflows
    assert "core.local" not in workflows
    actions = json.loads(cli("actions", "list", "--json", "--packs", EXAMPLES, cwd=tmp_path).stdout)
    assert {"ref": "core.local", "runner_type": "local"}.items() <= next(
        a for a in actions if a["ref"] == "core.local").items()
    rules = json.loads(cli("rules", "list", "--json", "--packs", EXAMPLES, cwd=tmp_path).stdout)
    assert ("examples.on_push", "core.nats", "examples.deploy", True) in [
        (r["ref"], r["trigger"], r["action"], r["enabled"]) for r in rules]
    triggers = cli("triggers", "list", "--packs", EXAMPLES, cwd=tmp_path).stdout
    assert "examples.disk_usage" in triggers
    assert "core.webhook" in triggers


# -- ends: closed pipe, Ctrl-C, timeout, bad data dirs ------------------------------------------------


def one_error_line(proc: subprocess.CompletedProcess[str] | tuple[int, str], code: int) -> str:
    returncode, stderr = (proc.returncode, proc.stderr) if not isinstance(proc, tuple) else proc
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert returncode == code, stderr
    assert lines, "no message"
    return lines[-1]


def test_a_closed_pipe(tmp_path: Path) -> None:
    proc = start("actions", "list", "--json", "--packs", EXAMPLES, cwd=tmp_path)
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head` that has read what it wanted
    _, err = proc.communicate(timeout=DEADLINE)
    line = one_error_line((proc.returncode, err), 2)
    assert line == "error: the output was closed before everything was written"


def test_ctrl_c_leaves_the_execution_for_resume(packs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = start("run", "t.gate", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    doc = eventually("the gate to run", lambda: running_task(tmp_path, data, "t.gate"))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=DEADLINE)
    line = one_error_line((proc.returncode, err), 130)
    assert line == (f"interrupted: execution {doc['id']} left unfinished; `attune-actors executions resume "
                    f"{doc['id'][:12]}` continues it, `executions cancel {doc['id'][:12]}` ends it")
    assert "interrupted" in cli("executions", "list", "--data-dir", data, cwd=tmp_path).stdout


def prompt_session(packs: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """`run t.ask` on a terminal, once it shows the inquiry prompt."""
    master, slave = pty.openpty()
    proc = start("run", "t.ask", "--packs", packs, "--data-dir", tmp_path / "data", cwd=tmp_path, stdin=slave)
    os.close(slave)
    assert proc.stderr is not None
    fd, seen, deadline = proc.stderr.fileno(), b"", time.monotonic() + DEADLINE
    while b"Go on?" not in seen:  # the prompt ends with no newline: read what comes
        assert time.monotonic() < deadline, f"the prompt never came: {seen!r}"
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"the prompt never came: {seen!r}"
            seen += chunk
    return proc, master


def test_ctrl_c_at_the_inquiry_prompt(packs: Path, tmp_path: Path) -> None:
    proc, master = prompt_session(packs, tmp_path)
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=DEADLINE)
    finally:
        os.close(master)
    assert one_error_line((proc.returncode, err), 130).startswith("interrupted: execution ")


def test_end_of_input_at_the_inquiry_prompt(packs: Path, tmp_path: Path) -> None:
    proc, master = prompt_session(packs, tmp_path)
    try:
        os.write(master, b"\x04")  # Ctrl-D
        _, err = proc.communicate(timeout=DEADLINE)
    finally:
        os.close(master)
    line = one_error_line((proc.returncode, err), 1)
    assert line.startswith("error: no answer (end of input); the execution waits: `attune-actors inquiries")


def test_an_answer_typed_at_the_prompt(packs: Path, tmp_path: Path) -> None:
    proc, master = prompt_session(packs, tmp_path)
    try:
        os.write(master, b'{"ok": true}\n')
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    assert json.loads("\n".join(out.splitlines()[1:])) == {"ok": True}


def test_timeout_cancels_and_exits_1(packs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = cli("run", "t.gate", "--timeout", "0.5", "--packs", packs, "--data-dir", data, cwd=tmp_path)
    line = one_error_line(proc, 1)
    match = re.fullmatch(r"error: timed out after 0\.5 s: execution ([0-9a-f]{32}) canceled", line)
    assert match, line
    final = json.loads(cli("executions", "get", match[1], "--json", "--data-dir", data, cwd=tmp_path).stdout)
    assert final["status"] == "canceled"


@pytest.mark.parametrize("command", [
    ("run", "core.noop"), ("executions", "list"), ("executions", "get", "abc"),
    ("executions", "cancel", "abc"), ("inquiries", "list"), ("kv", "set", "k", "v"),
])
@pytest.mark.parametrize("data_dir", ["/proc/x", "afile"])
def test_an_unusable_data_dir(tmp_path: Path, command: tuple[str, ...], data_dir: str) -> None:
    (tmp_path / "afile").write_text("not a folder")
    proc = cli(*command, "--data-dir", data_dir, cwd=tmp_path)
    line = one_error_line(proc, 2)
    assert line.startswith("error: "), line
    assert data_dir in line
    assert len(proc.stderr.splitlines()) == 1
