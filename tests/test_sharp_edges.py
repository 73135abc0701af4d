"""Regression tests for the sharp edges of issue #23 (items 1, 2, 4, 5, 6, 7; 8 is docs)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from test_cli import cli, write

from attune_actors import Engine, StoreError, ValidationError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- 1. a missing or different secret key is refused, not replaced -----------------------------------


def test_a_missing_secret_key_is_refused_naming_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert cli("kv", "set", "token", "s3cret", "--secret", "--data-dir", data, cwd=tmp_path).returncode == 0
    key = data / "secret.key"
    key.rename(tmp_path / "backup.key")
    for args in (("kv", "set", "other", "x", "--secret"), ("kv", "get", "token", "--secret"),
                 ("run", "core.noop")):
        proc = cli(*args, "--data-dir", data, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.splitlines()
        assert f"holds 1 encrypted secret(s) but the secret key file {key} is missing" in line
        assert "restore it from your backup" in line
    assert not key.exists()  # no new key was made beside the secrets
    (tmp_path / "backup.key").rename(key)
    got = cli("kv", "get", "token", "--secret", "--data-dir", data, cwd=tmp_path)
    assert got.stdout == "s3cret\n"


async def test_an_engine_refuses_a_key_that_cannot_read_the_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert cli("kv", "set", "token", "s3cret", "--secret", "--data-dir", data, cwd=tmp_path).returncode == 0
    (data / "secret.key").unlink()
    from attune_actors.kv import generate_key

    (data / "secret.key").write_bytes(generate_key())
    with pytest.raises(StoreError, match="cannot decrypt: restore the key they were written with"):
        async with Engine(data_dir=data):
            pass


# -- 2. the data dir is private -----------------------------------------------------------------------


def test_the_data_dir_and_its_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = cli("run", "core.noop", "--data-dir", data, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert mode(data) == 0o700
    files = [p for p in data.iterdir() if p.is_file()]
    assert "attune.db" in {p.name for p in files}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_database_files_made_readable_by_others_are_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert cli("run", "core.noop", "--data-dir", data, cwd=tmp_path).returncode == 0
    (data / "attune.db").chmod(0o644)
    assert cli("executions", "cancel", "nope", "--data-dir", data, cwd=tmp_path).returncode == 2
    assert mode(data / "attune.db") == 0o600


# -- 4, 5. what the records say -----------------------------------------------------------------------


async def test_the_fail_command_carries_the_failure_that_led_to_it(workflow, engine_factory) -> None:
    ref = workflow("gaveup", """
        tasks:
          - {name: build, action: testpack.fail, input: {message: "disk full"}, on_failure: gave_up}
          - {name: gave_up, action: core.noop, on_complete: fail}
    """)
    engine: Engine = await engine_factory()
    final = await engine.wait((await engine.execute(ref)).id, timeout=30)
    assert final.status == "failed"
    message = final.error["message"]
    assert message.startswith("task 'gave_up' ran the fail command, after task 'build' failed: ")
    assert "disk full" in message


async def test_a_with_items_run_counts_its_attempts(workflow, engine_factory) -> None:
    ref = workflow("items", """
        tasks:
          - {name: each, action: core.echo, with_items: "{{ [1, 2, 3] }}", input: {n: "{{ item }}"}}
    """)
    engine: Engine = await engine_factory()
    final = await engine.wait((await engine.execute(ref)).id, timeout=30)
    assert final.status == "succeeded"
    assert final.task("each").attempts == 1


# -- 6, 7. what can be known before running is said before running, and only that --------------------


def test_run_refuses_a_workflow_whose_python_action_does_not_parse(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write(packs / "t" / "pack.yaml", "ref: t\n")
    write(packs / "t" / "actions" / "broken.yaml",
          "name: broken\nrunner_type: python\nentry_point: broken.py\n")
    write(packs / "t" / "actions" / "broken.py", "def run(:\n    pass\n")
    write(packs / "t" / "workflows" / "uses.yaml", """\
        tasks:
          - {name: first, action: core.local, input: {cmd: "touch ran"}, on_success: second}
          - {name: second, action: t.broken}
        """)
    validated = cli("validate", packs, cwd=tmp_path)
    assert validated.returncode == 2
    proc = cli("run", "t.uses", "--packs", packs, "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{packs}/t/actions/broken.py:1:9: task 'second': action 't.broken': syntax error in entry point: "
        + validated.stderr.split("syntax error in entry point: ")[1].strip()
    ]
    assert not (tmp_path / "ran").exists()  # nothing ran


def test_an_undefined_variable_is_found_before_running(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write(packs / "t" / "pack.yaml", "ref: t\n")
    write(packs / "t" / "workflows" / "v.yaml", """\
        vars: {count: 1}
        tasks:
          - name: a
            action: core.echo
            input: {n: "{{ vars.count }}", m: "{{ vars.later }}", o: "{{ vars.get('x', 0) }}"}
            publish: {later: 2}
          - {name: b, action: core.echo, input: {x: "{{ vars.cuont }}"}}
        """)
    expected = [
        f"{packs}/t/workflows/v.yaml:7:42: task 'b' input.x: reference to undefined variable 'vars.cuont': "
        "not in 'vars' and no task publishes it (did you mean 'count'?)"
    ]
    validated = cli("validate", packs, cwd=tmp_path)
    assert validated.stderr.splitlines() == expected
    run = cli("run", "t.v", "--packs", packs, "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.splitlines() == expected


async def test_an_engine_says_once_which_workflows_are_invalid(tmp_path: Path, caplog) -> None:
    packs = tmp_path / "packs"
    write(packs / "t" / "pack.yaml", "ref: t\n")
    write(packs / "t" / "workflows" / "a.yaml", "tasks: [{name: x, action: core.nope}]\n")
    write(packs / "t" / "workflows" / "b.yaml", "tasks: [{name: x, action: core.noop, retyr: 1}]\n")
    caplog.set_level("INFO")
    async with Engine(packs=[packs], data_dir=tmp_path / "data") as engine:
        with pytest.raises(ValidationError, match=r"unknown action 'core\.nope'"):
            await engine.execute("t.a")
    said = [r.getMessage() for r in caplog.records if r.levelname in ("INFO", "WARNING")]
    assert [m for m in said if "t.a" in m or "t.b" in m] == [
        "2 invalid workflow(s) or action(s) will not run (`attune-actors validate` says why): t.a, t.b"
    ]


def test_the_execution_document_of_an_action(tmp_path: Path) -> None:
    proc = cli("run", "core.echo", "greeting=hi", "--json", "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ref"] == "core.echo"
    assert doc["output"] == {"result": {"greeting": "hi"}}
