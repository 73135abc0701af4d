"""Rehearsal files: `attune-actors test PATH...` and the pytest plugin, as real subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from attune_actors import ValidationError
from attune_actors.testing.rehearsal import load_rehearsals

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "packs" / "examples"

WORKFLOW = """
    vars: {total: null}
    tasks:
      - name: fetch
        action: testpack.square
        input: {n: 4}
        retry: {count: 2, delay: 30}
        publish: [{total: "{{ task.fetch.result }}"}]
        on_success: store
        on_failure: alert
      - {name: store, action: core.echo, input: {total: "{{ vars.total }}"}}
      - {name: alert, action: core.noop}
"""

REHEARSALS = """
    workflow: testpack.sums
    rehearsals:
      - name: right
        expect:
          status: succeeded
          route: [fetch, store]
          vars: {total: 16}
      - name: wrong
        mocks:
          testpack.square: {error: "service down"}
        expect:
          route: [fetch, store]
          tasks: {fetch: {attempts: 2}}
"""


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTUNE_")}
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_examples_rehearsals_all_pass() -> None:
    proc = run("-m", "attune_actors.cli", "test", "packs/examples")
    lines = proc.stdout.splitlines()
    expected = sum(
        len(yaml.safe_load(f.read_text())["rehearsals"]) for f in (EXAMPLES / "rehearsals").glob("*.yaml")
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines[-1] == f"{expected} passed, 0 failed"
    assert len(lines) == expected + 1
    assert all(line.startswith("PASS  packs/examples/rehearsals/") for line in lines[:-1])
    # Every example workflow is rehearsed.
    workflows = {f"examples.{p.stem}" for p in (EXAMPLES / "workflows").glob("*.yaml")}
    assert {re.search(r"\((examples\.\w+),", line).group(1) for line in lines[:-1]} == workflows  # type: ignore[union-attr]


def test_a_wrong_expectation_fails_with_a_diff_naming_the_task(packs_dir: Path, workflow) -> None:
    workflow("sums", WORKFLOW)
    write(packs_dir / "testpack" / "rehearsals" / "sums.yaml", REHEARSALS)
    proc = run("-m", "attune_actors.cli", "test", packs_dir)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert re.search(r"^PASS  .*sums\.yaml:4 right \(testpack\.sums", out, re.M)
    assert re.search(r"^FAIL  .*sums\.yaml:9 wrong \(testpack\.sums", out, re.M)
    assert "    route: differs at step 2: expected 'store', got 'alert'" in out
    assert "    task 'fetch': attempts: expected 2, got 3" in out
    assert out.splitlines()[-1] == "1 passed, 1 failed"
    assert "Traceback" not in out + proc.stderr


def test_bad_rehearsal_files_and_paths_say_where(packs_dir: Path, workflow) -> None:
    workflow("sums", WORKFLOW)
    bad = write(
        packs_dir / "testpack" / "rehearsals" / "bad.yaml",
        """
        workflow: testpack.sums
        rehearsals:
          - name: typo
            expect: {route: [fetch], stauts: succeeded}
        """,
    )
    proc = run("-m", "attune_actors.cli", "test", bad)
    assert proc.returncode == 1
    assert f"{bad}:5:30: unknown key 'stauts' in 'expect' (did you mean 'status'?)" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "0 passed, 1 failed"

    empty = run("-m", "attune_actors.cli", "test", packs_dir / "testpack" / "workflows")
    assert empty.returncode == 2
    assert empty.stderr.strip().endswith("no rehearsals here (no rehearsals/*.yaml below it)")
    assert "Traceback" not in empty.stderr


def test_the_pytest_plugin_collects_rehearsals_and_gives_the_fixture(packs_dir: Path, workflow) -> None:
    workflow("sums", WORKFLOW)
    write(packs_dir / "testpack" / "rehearsals" / "sums.yaml", REHEARSALS)
    write(
        packs_dir / "test_sums.py",
        """
        from attune_actors.testing import result

        async def test_with_the_fixture(attune_workflow_test):
            async with attune_workflow_test() as t:
                t.mock("testpack.square", result(7))
                run = await t.run("testpack.sums")
            run.expect(route=["fetch", "store"], vars={"total": 7})
        """,
    )
    write(packs_dir / "pytest.ini", "[pytest]\nattune_packs = .\nasyncio_mode = auto\n")
    proc = run("-m", "pytest", "-q", "-p", "no:cacheprovider", packs_dir, cwd=packs_dir)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "1 failed, 2 passed" in out
    assert "rehearsal 'wrong' (testpack.sums):" in out
    assert "task 'fetch': attempts: expected 2, got 3" in out


def test_every_mistake_in_a_rehearsal_file_is_located(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "rehearsals" / "bad.yaml",
        """
        workflow: testpack.sums
        rehearsals:
          - name: shapes
            mocks:
              testpack.square: {items: [1], when: {input: {n: 1}}}
              testpack.wait: [{result: 1}, 7, {delay: soon}]
            expect:
              route: fetch
              tasks: {fetch: {attempt: 2}}
              calls: {testpack.square: two}
          - {name: shapes, expect: {}}
          - 5
        """,
    )
    with pytest.raises(ValidationError) as caught:
        load_rehearsals(bad)
    assert [str(e) for e in caught.value.errors] == [
        f"{bad}:6:25: mock of testpack.square: 'items' maps item indexes to outcomes",
        f"{bad}:6:37: mock of testpack.square: 'when' is a list of {{input: ..., then: ...}}",
        f"{bad}:7:36: an outcome is a mapping of result, error, timeout, delay or real",
        f"{bad}:7:39: invalid outcome: could not convert string to float: 'soon'",
        f"{bad}:9:7: 'route' must be a list of task names (a list inside it: tasks starting together)",
        f"{bad}:11:7: 'calls' must be a mapping of action ref -> number of calls",
        f"{bad}:10:23: unknown key 'attempt' in the expectation of task 'fetch' (did you mean 'attempts'?)",
        f"{bad}:13:5: a rehearsal is a mapping (name, parameters, mocks, answers, expect)",
    ]
