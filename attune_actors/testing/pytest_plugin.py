"""pytest plugin of attune_actors (registered through the `pytest11` entry point).

Installing the package gives every pytest run:

- the fixture `attune_workflow_test`: a factory of `WorkflowTest`s over the packs named by the ini
  option `attune_packs` (default `packs`, relative to the rootdir), or those you pass:
  `async with attune_workflow_test() as t:` (async tests need an asyncio plugin such as
  pytest-asyncio or anyio);
- rehearsal files as tests: a `rehearsals/*.yaml` file beside a `pack.yaml` that pytest is
  pointed at (`pytest packs/`) is collected, one test per rehearsal, failing with its
  differences.

Nothing heavy is imported until a fixture or rehearsal is used, so the plugin costs other test
suites nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from attune_actors.testing._harness import WorkflowTest
    from attune_actors.testing.rehearsal import Rehearsal


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "attune_packs",
        "folders of packs the attune_workflow_test fixture loads (relative to the rootdir)",
        type="paths",
        default=[],
    )


@pytest.fixture
def attune_workflow_test(pytestconfig: pytest.Config) -> Callable[..., WorkflowTest]:
    """Make a `WorkflowTest`: `async with attune_workflow_test(packs=None, **options) as t:`."""
    from attune_actors.testing._harness import WorkflowTest

    configured: list[Path] = list(pytestconfig.getini("attune_packs")) or [pytestconfig.rootpath / "packs"]

    def make(packs: list[str | Path] | None = None, **options: Any) -> WorkflowTest:
        return WorkflowTest(packs if packs is not None else configured, **options)

    return make


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if (
        file_path.suffix in (".yaml", ".yml")
        and file_path.parent.name == "rehearsals"
        and (file_path.parent.parent / "pack.yaml").is_file()
    ):
        return RehearsalFile.from_parent(parent, path=file_path)
    return None


class RehearsalFile(pytest.File):
    """A rehearsal file: one test item per rehearsal."""

    def collect(self) -> Iterator[RehearsalItem]:
        from attune_actors.errors import ValidationError
        from attune_actors.testing.rehearsal import load_rehearsals

        try:
            rehearsals = load_rehearsals(self.path)
        except ValidationError as exc:
            raise self.CollectError("\n".join(str(e) for e in exc.errors)) from None
        for rehearsal in rehearsals:
            yield RehearsalItem.from_parent(self, name=rehearsal.name, rehearsal=rehearsal)


class RehearsalFailed(Exception):
    """A rehearsal's differences from its expectations."""


class RehearsalItem(pytest.Item):
    def __init__(self, *, rehearsal: Rehearsal, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rehearsal = rehearsal

    def runtest(self) -> None:
        from attune_actors.testing.rehearsal import packs_of, rehearse

        found = asyncio.run(rehearse(self.rehearsal, packs_of(self.path)))
        if found:
            raise RehearsalFailed("\n".join(found))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, RehearsalFailed):
            return f"rehearsal '{self.rehearsal.name}' ({self.rehearsal.workflow}):\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        line = self.rehearsal.location.line if self.rehearsal.location is not None else 1
        return self.path, line - 1, f"rehearsal: {self.rehearsal.name}"
