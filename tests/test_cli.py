"""`attune-actors validate` and `attune-actors run`, as real subprocesses (SPEC section 6)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "packs"
LOCATED = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<column>\d+): (?P<message>.+)$")
EXECUTION_KEYS = {
    "id",
    "ref",
    "status",
    "parameters",
    "output",
    "error",
    "started_at",
    "ended_at",
    "parent_id",
    "rerun_of",
    "tasks",
}
TASK_KEYS = {
    "id",
    "name",
    "status",
    "result",
    "error",
    "attempts",
    "started_at",
    "ended_at",
    "items",
    "inquiry_id",
}


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `attune-actors ARGS` in `cwd`, with no ATTUNE_* settings inherited from this environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTUNE_")}
    return subprocess.run(
        [sys.executable, "-m", "attune_actors.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr
    assert "Traceback" not in proc.stdout


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    """A folder of packs with pack `t` (no workflows yet)."""
    root = tmp_path / "packs"
    write(root / "t" / "pack.yaml", "ref: t\n")
    return root


# -- validate ----------------------------------------------------------------------------------


def test_validate_the_example_packs(tmp_path: Path) -> None:
    proc = cli("validate", EXAMPLES, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert_no_traceback(proc)


def test_validate_an_invalid_workflow_prints_one_located_line_per_problem(
    packs: Path, tmp_path: Path
) -> None:
    write(
        packs / "t" / "workflows" / "bad.yaml",
        """\
        labl: x
        tasks:
          - name: a
            action: core.nope
            on_succes: b
            timeout: -1
          - name: b
            action: core.sleep
            input: {seconds: soon}
            next:
              - when: "{{ succeeded( }}"
                do: c
        """,
    )
    proc = cli("validate", "packs", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_no_traceback(proc)
    file = "packs/t/workflows/bad.yaml"
    assert proc.stderr.splitlines() == [
        f"{file}:1:1: unknown key 'labl' in workflow (did you mean 'label'?)",
        f"{file}:4:5: task 'a': unknown action 'core.nope' (did you mean 'core.noop'?)",
        f"{file}:5:5: unknown key 'on_succes' in task 'a' (did you mean 'on_success'?)",
        f"{file}:6:5: task 'a': 'timeout' must be zero or more, got -1",
        f"{file}:9:13: task 'b' (action core.sleep): input 'seconds' must be of type number, "
        "got string 'soon'",
        f"{file}:11:9: task 'b' next[0].when: syntax error: unexpected '}}', expected ')' "
        "(in template '{{ succeeded( }}')",
        f"{file}:12:9: task 'b': transition to unknown task 'c'",
    ]


def test_validate_locates_a_yaml_syntax_error(packs: Path, tmp_path: Path) -> None:
    write(packs / "t" / "workflows" / "broken.yaml", "tasks:\n  - name: a\n    action: [core.noop\n")
    proc = cli("validate", packs, cwd=tmp_path)
    assert proc.returncode == 2
    assert_no_traceback(proc)
    (line,) = proc.stderr.splitlines()
    match = LOCATED.match(line)
    assert match is not None, line
    assert match["file"] == str(packs / "t" / "workflows" / "broken.yaml")
    assert (match["line"], match["column"]) == ("4", "1")
    assert match["message"].startswith("invalid YAML: expected ',' or ']'")


def test_validate_one_file_reports_only_that_file(packs: Path, tmp_path: Path) -> None:
    good = write(packs / "t" / "workflows" / "good.yaml", "tasks: [{name: a, action: core.noop}]\n")
    bad = write(packs / "t" / "workflows" / "bad.yaml", "tasks: [{name: a, action: core.nope}]\n")
    ok = cli("validate", good.relative_to(tmp_path), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    failed = cli("validate", bad.relative_to(tmp_path), cwd=tmp_path)
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        "packs/t/workflows/bad.yaml:1:19: task 'a': unknown action 'core.nope' (did you mean 'core.noop'?)"
    ]


def test_validate_a_folder_inside_a_pack(packs: Path, tmp_path: Path) -> None:
    write(packs / "t" / "workflows" / "bad.yaml", "tasks: [{name: a, action: core.nope}]\n")
    write(packs / "t" / "actions" / "bad.yaml", "runner_type: nope\n")  # not in the folder named
    proc = cli("validate", "packs/t/workflows", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "packs/t/workflows/bad.yaml:1:19: task 'a': unknown action 'core.nope' (did you mean 'core.noop'?)"
    ]


def test_validate_a_workflow_file_outside_any_pack(tmp_path: Path) -> None:
    write(tmp_path / "flow.yaml", "tasks:\n  - name: a\n    action: core.echo\n    on_success: b\n")
    proc = cli("validate", "flow.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["flow.yaml:4:5: task 'a': transition to unknown task 'b'"]
    write(tmp_path / "uses_examples.yaml", "ref: mine.flow\ntasks: [{name: a, action: examples.chat_post}]\n")
    proc = cli("validate", EXAMPLES, "uses_examples.yaml", cwd=tmp_path)
    assert proc.returncode == 2  # examples.chat_post needs `message`, and only that is wrong
    assert proc.stderr.splitlines() == [
        "uses_examples.yaml:2:9: task 'a' (action examples.chat_post): missing required input 'message'"
    ]


def test_validate_an_action_file_outside_any_pack(tmp_path: Path) -> None:
    write(tmp_path / "action.yaml", "name: a\nrunner_type: python\n")
    proc = cli("validate", "action.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "action.yaml:1:1: action metadata is checked in its pack: "
        "put it in <pack>/actions/ and validate the pack"
    ]


def test_validate_problems_in_pack_files(packs: Path, tmp_path: Path) -> None:
    write(packs / "t" / "pack.yaml", "ref: t\nlable: T\n")
    write(packs / "t" / "actions" / "run.yaml", "name: run\nrunner_type: python\nentry_point: run.py\n")
    proc = cli("validate", "packs", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "packs/t/actions/run.yaml:3:1: action 't.run': entry point 'run.py' not found in packs/t/actions",
        "packs/t/pack.yaml:2:1: unknown key 'lable' in pack.yaml (did you mean 'label'?)",
    ]


def test_validate_a_missing_path(tmp_path: Path) -> None:
    proc = cli("validate", "nowhere", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["nowhere:1:1: no such file or folder"]


def test_validate_needs_a_path(tmp_path: Path) -> None:
    proc = cli("validate", cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr
    assert_no_traceback(proc)


# -- run: bad input ------------------------------------------------------------------------------


def test_run_an_unknown_ref(tmp_path: Path) -> None:
    proc = cli("run", "examples.deplyo", "--packs", EXAMPLES, "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: unknown action or workflow 'examples.deplyo' (did you mean 'examples.deploy'?)"
    ]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ([], "missing required parameter 'app_name'"),
        (["-p", "app_name=shop", "-p", "environment=prod"], "parameter 'environment' must be one of"),
        (["-p", "app_name=shop", "-p", "latency=slow"], "parameter 'latency' must be a number, got 'slow'"),
        (["-p", "app_name=shop", "-p", "fail_build=maybe"], "parameter 'fail_build' must be true or false"),
        (["-p", "app_name=shop", "-p", "colour=red"], "unknown parameter 'colour'"),
        (["-p", "app_name"], "-p 'app_name': expected KEY=VALUE"),
    ],
)
def test_run_with_invalid_parameters(tmp_path: Path, params: list[str], named: str) -> None:
    proc = cli(
        "run", "examples.deploy", *params, "--packs", EXAMPLES, "--data-dir", tmp_path / "data", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_no_traceback(proc)
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ")
    assert named in line


def test_run_with_an_invalid_workflow_in_the_packs(packs: Path, tmp_path: Path) -> None:
    write(packs / "t" / "workflows" / "w.yaml", "tasks:\n  - name: a\n    action: core.noop\n    retyr: 2\n")
    proc = cli("run", "t.w", "--packs", packs, "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert proc.returncode == 2
    assert_no_traceback(proc)
    # The engine runs everything else; this workflow alone is refused, with its problems located.
    assert proc.stderr.splitlines()[-1] == (
        f"{packs}/t/workflows/w.yaml:4:5: unknown key 'retyr' in task 'a' (did you mean 'retry'?)"
    )


def test_run_of_a_valid_workflow_beside_an_invalid_one(packs: Path, tmp_path: Path) -> None:
    write(packs / "t" / "workflows" / "w.yaml", "tasks:\n  - name: a\n    action: core.noop\n    retyr: 2\n")
    write(packs / "t" / "workflows" / "ok.yaml", "tasks:\n  - {name: a, action: core.noop}\n")
    proc = cli("run", "t.ok", "--packs", packs, "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "t.w" not in proc.stderr  # not this run's business: `validate` says what is wrong there
    assert "retyr" not in proc.stderr


# -- run: parameters -------------------------------------------------------------------------------

TYPES = """\
    parameters:
      count: {type: integer}
      ratio: {type: number}
      flag: {type: boolean}
      tags: {type: array}
      meta: {type: object}
      name: {type: string}
      anything: {}
    tasks:
      - {name: a, action: core.noop}
    output_map:
      count: "{{ parameters.count }}"
      ratio: "{{ parameters.ratio }}"
      flag: "{{ parameters.flag }}"
      tags: "{{ parameters.tags }}"
      meta: "{{ parameters.meta }}"
      name: "{{ parameters.name }}"
      anything: "{{ parameters.anything }}"
    """


def run_json(*args: str | Path, cwd: Path) -> tuple[int, dict[str, Any], str]:
    proc = cli("run", *args, "--json", cwd=cwd)
    assert_no_traceback(proc)
    document = json.loads(proc.stdout)  # exactly one JSON document, nothing else on stdout
    assert isinstance(document, dict)
    return proc.returncode, document, proc.stderr


def test_run_converts_p_values_to_the_declared_types(packs: Path, tmp_path: Path) -> None:
    write(packs / "t" / "workflows" / "types.yaml", TYPES)
    code, execution, _ = run_json(
        "t.types",
        "-p", "count=42",
        "-p", "ratio=0.5",
        "-p", "flag=true",
        "-p", 'tags=["a", 1]',
        "-p", 'meta={"k": [1, null]}',
        "-p", "name=007",
        "-p", "anything=[1]",
        "--packs", packs, "--data-dir", tmp_path / "data",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0
    assert execution["output"] == {
        "count": 42,
        "ratio": 0.5,
        "flag": True,
        "tags": ["a", 1],
        "meta": {"k": [1, None]},
        "name": "007",  # a string parameter stays the string it was given
        "anything": [1],  # an untyped parameter takes the JSON value
    }
    assert execution["parameters"]["count"] == 42


@pytest.mark.parametrize(
    ("param", "named"),
    [
        ("count=4.5", "parameter 'count' must be an integer, got '4.5'"),
        ("tags=[1,", "parameter 'tags' must be JSON (array)"),
        ("meta=[1]", "parameter 'meta' must be of type object, got array"),
    ],
)
def test_run_refuses_p_values_of_the_wrong_type(packs: Path, tmp_path: Path, param: str, named: str) -> None:
    write(packs / "t" / "workflows" / "types.yaml", TYPES)
    proc = cli("run", "t.types", "-p", param, "--packs", packs, "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert named in line


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("params.json", '{"count": 1, "name": "from file", "tags": ["x"]}'),
        ("params.yaml", "count: 1\nname: from file\ntags: [x]\n"),
    ],
)
def test_run_with_a_params_file_and_p_winning(packs: Path, tmp_path: Path, name: str, text: str) -> None:
    write(packs / "t" / "workflows" / "types.yaml", TYPES)
    write(tmp_path / name, text)
    code, execution, _ = run_json(
        "t.types", "--params-file", name, "-p", "count=7",
        "--packs", packs, "--data-dir", tmp_path / "data",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0
    assert execution["output"]["count"] == 7
    assert execution["output"]["name"] == "from file"
    assert execution["output"]["tags"] == ["x"]


def test_run_with_an_unreadable_params_file(packs: Path, tmp_path: Path) -> None:
    write(packs / "t" / "workflows" / "types.yaml", TYPES)
    write(tmp_path / "list.yaml", "- 1\n")
    for name, message in (
        ("missing.json", "cannot read params file missing.json"),
        ("list.yaml", "list.yaml: the params file must hold a mapping"),
    ):
        proc = cli(
            "run",
            "t.types",
            "--params-file",
            name,
            "--packs",
            packs,
            "--data-dir",
            tmp_path / "data",
            cwd=tmp_path,
        )
        assert proc.returncode == 2
        (line,) = proc.stderr.splitlines()
        assert message in line


# -- run: the examples ---------------------------------------------------------------------------


def test_run_deploy_succeeds_with_the_execution_as_json(tmp_path: Path) -> None:
    code, execution, stderr = run_json(
        "examples.deploy",
        "-p",
        "app_name=shop",
        "--packs",
        EXAMPLES,
        "--data-dir",
        tmp_path / "data",
        cwd=tmp_path,
    )
    assert code == 0, stderr
    assert set(execution) == EXECUTION_KEYS
    assert execution["ref"] == "examples.deploy"
    assert execution["status"] == "succeeded"
    assert execution["error"] is None
    assert execution["parent_id"] is None
    assert execution["parameters"]["app_name"] == "shop"
    assert execution["parameters"]["environment"] == "dev"  # defaults applied
    assert execution["output"]["outcome"] == "deployed"
    names = [t["name"] for t in execution["tasks"]]
    assert names == ["create_deployment", "build_image", "deploy", "health_check", "notify_success"]
    for task in execution["tasks"]:
        assert set(task) == TASK_KEYS
        assert task["status"] == "succeeded"


def test_run_nested_failure_exits_1(tmp_path: Path) -> None:
    code, execution, _ = run_json(
        "examples.nested",
        "-p",
        "fail_provisioning=true",
        "--packs",
        EXAMPLES,
        "--data-dir",
        tmp_path / "data",
        cwd=tmp_path,
    )
    assert code == 1
    assert execution["status"] == "failed"
    assert execution["error"]["task"] == "provision_infrastructure"


def test_run_answers_an_inquiry(tmp_path: Path) -> None:
    code, execution, stderr = run_json(
        "examples.inquiry", "--answer", 'require_approval={"approved": true}',
        "--packs", EXAMPLES, "--data-dir", tmp_path / "data",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert execution["output"] == {"approved": True, "outcome": "deployed"}
    approval = execution["tasks"][0]
    assert approval["name"] == "require_approval"
    assert approval["result"] == {"approved": True}
    assert approval["inquiry_id"]


def test_run_without_json_ends_with_the_status_and_output(tmp_path: Path) -> None:
    proc = cli(
        "run", "examples.sequential", "--packs", EXAMPLES, "--data-dir", tmp_path / "data", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    assert re.fullmatch(r"examples\.sequential [0-9a-f]{12}: succeeded", first)
    assert json.loads("\n".join(rest))["image"] == "registry.example.test/shop:1.0.0"
    assert "task3" in proc.stderr  # progress goes to stderr


def test_run_progress_shows_the_end_after_the_last_task_ended(tmp_path: Path) -> None:
    """On stderr (not a terminal): the execution's start line comes first, and its end comes
    after the line of the task that ended it, as the events happened."""
    proc = cli(
        "run", "examples.sequential", "--packs", EXAMPLES, "--data-dir", tmp_path / "data", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    header = r"examples\.sequential [0-9a-f]{32}: "
    assert re.fullmatch(header + "running", lines[0])
    assert re.fullmatch(header + "succeeded", lines[-1])
    assert re.fullmatch(r"  task3 +succeeded +\d+\.\d\ds", lines[-2])


def test_no_command_prints_help(tmp_path: Path) -> None:
    proc = cli(cwd=tmp_path)
    assert proc.returncode == 2
    assert "validate" in proc.stderr
    assert "run" in proc.stderr
