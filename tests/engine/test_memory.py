"""What an ended execution leaves behind: nothing the cyclic collector has to find.

An execution whose objects form a reference cycle is freed only by a collection of the oldest
generation, which pauses the loop for every object alive (~100 ms with 10,000 parked executions) and
ran once per ~1,000 executions at full speed. Freed by reference counting, it costs no collection.
"""

from __future__ import annotations

import gc
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from attune_actors import Engine
from attune_actors.store.base import MemoryStore

FLOW = """
parameters:
  names: {type: array}
tasks:
  - name: start
    action: core.echo
    input: {at: "{{ system.timestamp }}"}
    on_complete: [each, flaky, nested]
  - name: each
    action: core.echo
    with_items: "{{ parameters.names }}"
    input: {who: "{{ item }}"}
    on_success: join
  - name: flaky
    action: testpack.fail
    input: {message: nope}
    retry: {count: 1}
    on_complete: join
  - name: nested
    action: testpack.leaf
    on_success: join
  - name: join
    action: core.noop
    join: all
"""

LEAF = """
tasks:
  - {name: only, action: core.noop}
"""


def _attune_garbage() -> Counter[str]:
    """The attune_actors objects only the cyclic collector could free, by type."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return Counter(
            type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("attune_actors")
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_ended_executions_are_freed_without_the_cyclic_collector(
    workflow: Any, packs_dir: Path, tmp_path: Path, store: str
) -> None:
    workflow("leaf", LEAF)
    ref = workflow("memory", FLOW)
    chosen = MemoryStore() if store == "memory" else None  # None: the data dir's SQLite file
    async with Engine(packs=[packs_dir], data_dir=tmp_path / "data", store=chosen) as engine:
        first = await engine.wait((await engine.execute(ref, {"names": ["a", "b"]})).id, timeout=10)
        assert first.status == "succeeded", first.error  # caches and the like are built: not garbage later
        assert first.task("flaky").attempts == 2
        gc.collect()
        gc.disable()
        try:
            for names in (["c"], ["d", "e", "f"], []):
                done = await engine.wait((await engine.execute(ref, {"names": names})).id, timeout=10)
                assert done.status == "succeeded", done.error
            assert _attune_garbage() == Counter()
        finally:
            gc.enable()
