"""Helpers shared by the workflow-language tests: positions in YAML text, problems as lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

from attune_actors.errors import AttuneError
from attune_actors.spec.model import WorkflowSpec
from attune_actors.spec.packs import load_workflow_text

TEST_PACK = Path(__file__).resolve().parent.parent / "packs" / "testpack"
EXAMPLES = Path(__file__).resolve().parent.parent.parent / "packs"


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
