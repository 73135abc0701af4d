"""Fixtures shared by the suite: real packs on disk, a real engine per test."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from attune_actors import Engine

TESTS = Path(__file__).parent
REPO = TESTS.parent
TEST_PACK = TESTS / "packs" / "testpack"
EXAMPLES = REPO / "packs"


@pytest.fixture
def packs_dir(tmp_path: Path) -> Path:
    """A folder of packs holding a copy of the test pack; tests add workflows to it."""
    root = tmp_path / "packs"
    shutil.copytree(TEST_PACK, root / "testpack")
    return root


WorkflowWriter = Callable[..., str]


@pytest.fixture
def workflow(packs_dir: Path) -> WorkflowWriter:
    """Write a workflow into the test pack: workflow("name", '''yaml''') -> "testpack.name"."""

    def write(name: str, text: str) -> str:
        folder = packs_dir / "testpack" / "workflows"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
        return f"testpack.{name}"

    return write


@pytest.fixture
async def engine_factory(packs_dir: Path, tmp_path: Path) -> AsyncIterator[Callable[..., Engine]]:
    """Build started engines over the test packs; all are closed at the end of the test."""
    engines: list[Engine] = []

    async def make(**kwargs: object) -> Engine:
        kwargs.setdefault("packs", [packs_dir])
        kwargs.setdefault("data_dir", tmp_path / "data")
        engine = Engine(**kwargs)  # type: ignore[arg-type]
        await engine.start()
        engines.append(engine)
        return engine

    yield make  # type: ignore[misc]
    for engine in engines:
        await engine.close()


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts in the background: killed, if still running, when it ends."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
