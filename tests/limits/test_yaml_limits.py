"""YAML document limits (SPEC 12): bytes and alias expansion, refused before anything walks the value."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from attune_actors import Engine, NotFoundError, ValidationError
from attune_actors.config import load_settings
from attune_actors.spec.packs import load_packs
from attune_actors.spec.yamlsrc import YamlLimits, load_yaml


def alias_bomb(levels: int, width: int = 9) -> str:
    """The "billion laughs" document: `width ** levels` values from a few hundred bytes."""
    names = "abcdefghijklmnop"
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        prev, cur = names[i - 1], names[i]
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_the_463_byte_bomb_is_refused_naming_the_limit() -> None:
    text = alias_bomb(9)
    assert len(text) < 500
    value, problems = load_yaml(text, "bomb.yaml")
    assert value is None
    assert [str(p) for p in problems] == [
        "bomb.yaml:1:1: the YAML document's aliases expand it to more than 100000 values, "
        "which exceeds limits.yaml_values (100000)"
    ]


def test_a_9_to_the_10_bomb_is_refused_too() -> None:
    value, problems = load_yaml(alias_bomb(10), "bomb.yaml")
    assert value is None
    assert "limits.yaml_values" in str(problems[0])


def test_aliases_within_the_limit_still_load() -> None:
    text = "base: &b {retries: 2, delay: 1}\nfirst: *b\nsecond: {<<: *b, delay: 5}\n"
    value, problems = load_yaml(text, "ok.yaml", YamlLimits(max_values=25))
    assert problems == []
    assert value == {
        "base": {"retries": 2, "delay": 1},
        "first": {"retries": 2, "delay": 1},
        "second": {"retries": 2, "delay": 5},
    }
    _, problems = load_yaml(text, "ok.yaml", YamlLimits(max_values=20))
    assert "exceeds limits.yaml_values (20)" in str(problems[0])


def test_a_recursive_alias_is_an_error_not_a_hang() -> None:
    value, problems = load_yaml("a: &a [*a]\n", "loop.yaml")
    assert value is None or problems
    assert problems


def test_a_document_over_the_byte_limit_is_refused_before_parsing() -> None:
    text = "x: [" + "1, " * 600_000 + "1]\n"  # 1.8 MB
    value, problems = load_yaml(text, "big.yaml")
    assert value is None
    assert [str(p) for p in problems] == [
        f"big.yaml:1:1: the YAML document is {len(text)} bytes, which exceeds limits.yaml_bytes (1048576)"
    ]
    # Multi-byte characters count as the bytes they take.
    _, problems = load_yaml("x: " + "é" * 600, "utf8.yaml", YamlLimits(max_bytes=1000))
    assert "is 1203 bytes, which exceeds limits.yaml_bytes (1000)" in str(problems[0])


def test_a_pack_with_a_huge_workflow_file_loads_the_rest(tmp_path: Path) -> None:
    pack = tmp_path / "big"
    (pack / "workflows").mkdir(parents=True)
    (pack / "pack.yaml").write_text("ref: big\n")
    (pack / "workflows" / "ok.yaml").write_text("tasks:\n  - {name: a, action: core.noop}\n")
    with open(pack / "workflows" / "huge.yaml", "w") as f:
        f.write("tasks: []\n# " + "x" * 5_000_000 + "\n")
    (pack / "workflows" / "bomb.yaml").write_text(alias_bomb(9))
    catalog, problems = load_packs([tmp_path])
    assert "big.ok" in catalog.actions
    assert "big.huge" not in catalog.actions
    assert "big.bomb" not in catalog.actions
    messages = sorted(str(p) for p in problems)
    assert any("huge.yaml:1:1: the YAML document is 5000013 bytes, which exceeds" in m for m in messages)
    assert any("bomb.yaml:1:1: the YAML document's aliases expand it" in m for m in messages)


def test_validate_refuses_a_bomb_with_one_line(tmp_path: Path) -> None:
    file = tmp_path / "bomb.yaml"
    file.write_text(alias_bomb(10))
    done = subprocess.run(
        [sys.executable, "-m", "attune_actors.cli", "validate", str(file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert lines == [
        f"{file}:1:1: the YAML document's aliases expand it to more than 100000 values, "
        "which exceeds limits.yaml_values (100000)"
    ]


# -- workflows put at run time ------------------------------------------------------------------


async def test_put_refuses_a_bomb_naming_the_limit_and_the_engine_serves_on(
    engine_factory: Callable[..., Any], workflow: Callable[[str, str], str]
) -> None:
    light = workflow("light", "tasks:\n  - {name: one, action: testpack.square, input: {n: 4}}\n")
    engine: Engine = await engine_factory()
    bomb = "ref: testpack.bomb\n" + alias_bomb(9) + "tasks:\n  - {name: a, action: core.noop}\n"
    with pytest.raises(ValidationError) as caught:
        await engine.put_workflow("testpack", bomb)
    assert str(caught.value).endswith(
        "the YAML document's aliases expand it to more than 100000 values, "
        "which exceeds limits.yaml_values (100000)"
    )
    big = "ref: testpack.big\ntasks: []\n# " + "x" * 2_000_000
    too_big = r"is 2000030 bytes, which exceeds limits.yaml_bytes \(1048576\)"
    with pytest.raises(ValidationError, match=too_big):
        await engine.put_workflow("testpack", big)
    final = await engine.wait((await engine.execute(light)).id, timeout=30)
    assert final.status == "succeeded"
    with pytest.raises(NotFoundError):
        await engine.get_workflow("testpack.bomb")


async def test_a_slow_put_does_not_stop_other_executions(
    engine_factory: Callable[..., Any], workflow: Callable[[str, str], str]
) -> None:
    light = workflow("light", "tasks:\n  - {name: one, action: testpack.square, input: {n: 5}}\n")
    settings = load_settings(
        environ={}, overrides={"limits": {"yaml_bytes": 50_000_000, "yaml_values": 10_000_000}}
    )
    engine: Engine = await engine_factory(settings=settings)
    entries = "".join(f"    k{i}: value number {i}\n" for i in range(25_000))  # seconds of parsing
    text = f"ref: testpack.slow\ntasks:\n  - {{name: a, action: core.noop}}\nvars:\n  big:\n{entries}"
    put = asyncio.ensure_future(engine.put_workflow("testpack", text))
    for n in range(3):
        final = await engine.wait((await engine.execute(light)).id, timeout=30)
        assert final.status == "succeeded", n
    assert not put.done()  # the executions ran while the document was being parsed
    assert await put == "testpack.slow"
    assert (await engine.get_workflow("testpack.slow")).runtime_defined
