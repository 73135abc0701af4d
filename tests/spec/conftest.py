"""Fixtures of the workflow-language tests: throwaway packs in tmp_path."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from spec_helpers import TEST_PACK, lines

from attune_actors.spec.validate import validate_paths

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
