"""Helpers for the workflow-language tests: throwaway packs in tmp_path, positions in YAML text."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from attune_actors.errors import AttuneError
from attune_actors.spec.model import WorkflowSpec
from attune_actors.spec.packs import load_workflow_text
from attune_actors.spec.validate import validate_paths

TEST_PACK = Path(__file__).resolve().parent.parent / "packs" / "testpack"


def at(text: str, needle: str, nth: int = 1) -> str:
    """`LINE:COLUMN` (1-based) of the nth occurrence of `needle` in `text`."""
    index = -1
    for _ in range(nth):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"{line}:{column}"


def lines(problems: list[AttuneError]) -> list[str]:
    """Each problem as `FILE:LINE:COLUMN: message`."""
    out = []
    for err in problems:
        assert err.location is not None, f"unlocated problem: {err.message}"
        loc = err.location
        out.append(f"{loc.file}:{loc.line}:{loc.column}: {err.message}")
    return out


def parse(text: str, *, pack: str = "tp", file: str = "wf.yaml") -> tuple[WorkflowSpec | None, list[str]]:
    """Load one workflow document (no catalog checks): (spec, problems as lines)."""
    problems: list[AttuneError] = []
    spec = load_workflow_text(
        textwrap.dedent(text), pack=pack, file=file, default_ref=f"{pack}.wf", problems=problems
    )
    return spec, lines(problems)


def spec_of(text: str) -> WorkflowSpec:
    spec, problems = parse(text)
    assert problems == []
    assert spec is not None
    return spec


Check = Callable[..., tuple[str, list[str]]]


@pytest.fixture
def pack_root(tmp_path: Path) -> Path:
    """A folder of packs holding a copy of the test pack (testpack.square needs `n: integer`)."""
    root = tmp_path / "packs"
    shutil.copytree(TEST_PACK, root / "testpack")
    return root


@pytest.fixture
def check(pack_root: Path) -> Check:
    """check(yaml) -> (text, problems): validates the workflow as testpack/workflows/wf.yaml.

    Problems are `LINE:COLUMN: message` for that file (any problem elsewhere fails the test).
    """

    def run(text: str, name: str = "wf") -> tuple[str, list[str]]:
        text = textwrap.dedent(text)
        folder = pack_root / "testpack" / "workflows"
        folder.mkdir(exist_ok=True)
        file = folder / f"{name}.yaml"
        file.write_text(text, encoding="utf-8")
        found = []
        for line in lines(validate_paths([pack_root])):
            prefix = f"{file}:"
            assert line.startswith(prefix), f"problem outside the workflow: {line}"
            found.append(line[len(prefix) :])
        return text, found

    return run
