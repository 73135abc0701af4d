"""Whole-population helpers: list, stop and wait for the AsyncioActors of the running loop.

Meant for tests and for shutting an engine down; they look at every running AsyncioActor, registered
in pykka's ActorRegistry or not, and touch no actor's state (they only send stop requests). They take
a `timeout` (rather than leave it to `asyncio.timeout()`) so that the error can name the actors that
are still running.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from attune_actors.actors._actor import _live

if TYPE_CHECKING:
    from pykka import ActorRef

    from attune_actors.actors._actor import AsyncioActor

__all__ = ["running_actors", "stop_all_actors", "wait_all_stopped"]


def _running_on(loop: asyncio.AbstractEventLoop) -> list[AsyncioActor]:
    return [actor for actor in list(_live) if actor.actor_inbox.loop is loop]


def running_actors() -> list[ActorRef[Any]]:
    """Refs of the AsyncioActors whose task runs on the current loop and has not ended."""
    return [actor.actor_ref for actor in _running_on(asyncio.get_running_loop())]


async def stop_all_actors(*, timeout: float | None = 10.0) -> int:
    """Stop every AsyncioActor of the current loop and wait until their tasks have ended.

    Root actors (no running parent) are asked to stop, all at once; each stops its children first.
    Returns how many actors were running. Raises `TimeoutError` after `timeout` seconds.
    """
    loop = asyncio.get_running_loop()
    actors = _running_on(loop)
    roots = [a for a in actors if a.parent is None or not a.parent.is_alive()]

    async def stop_roots() -> None:
        for future in [actor.actor_ref.stop(block=False) for actor in roots]:
            await future

    async with asyncio.timeout(timeout):
        await stop_roots()
    await wait_all_stopped(timeout=timeout)
    return len(actors)


async def wait_all_stopped(*, timeout: float | None = 5.0) -> None:
    """Wait until no AsyncioActor runs on the current loop (their tasks have ended).

    Polls with a short, growing interval; raises `TimeoutError` naming the actors still running.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = 0.0
    while True:
        alive = [a for a in _running_on(loop) if a._task is None or not a._task.done()]
        if not alive:
            return
        if deadline is not None and loop.time() >= deadline:
            names = ", ".join(str(a) for a in alive[:10])
            more = f" and {len(alive) - 10} more" if len(alive) > 10 else ""
            msg = f"{len(alive)} actor(s) still running after {timeout} s: {names}{more}"
            raise TimeoutError(msg)
        await asyncio.sleep(delay)
        delay = min(0.05, delay * 2 or 0.001)
