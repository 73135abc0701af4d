"""Every actor test ends with no actor running, nothing registered and no task left on its loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pykka import ActorRegistry

from attune_actors.actors import AsyncioActor, stop_all_actors


@pytest.fixture(autouse=True)
async def no_leftovers() -> AsyncIterator[None]:
    yield
    await stop_all_actors(timeout=5.0)
    current = asyncio.current_task()
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert leftover == []
    registered = [r for r in ActorRegistry.get_all() if issubclass(r.actor_class, AsyncioActor)]
    assert registered == []
