"""The partitions one engine process owns, and requests routed to whichever engine owns theirs.

`PartitionHost` (on the engine's loop) runs one `Engine` per owned partition: its executions are in
the partition's share of the `nats` store (`NatsStore(partition=...)`: its keys in the one snapshot
bucket, fenced: opened with this member as owner), its attempts go out and come back under the
partition's transport identity (`Subjects.partition_engine_id`: a durable results consumer per
partition, so a new owner receives the outcomes of attempts that ran while the old one died), and
its ids name the partition. Adopting a partition starts that engine (which resumes what the store
holds unfinished); losing it closes the engine. Requests for the partition arrive on
`Subjects.partition_api(p)`, which only its owner listens on.

`ClusterRouter` (on the control service's loop) is what the control service calls instead of an
engine in a cluster: every engine answers `<prefix>.api.*` in one queue group, and the router sends
each request to the owner of its partition (a create to a random partition, whose owner names the
new id after it; a list to every partition, merged), retrying while a partition changes hands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client

from attune_actors.engine.engine import Engine
from attune_actors.errors import RoutedError
from attune_actors.nats.service import ControlService
from attune_actors.nats.subjects import Subjects
from attune_actors.nats.transport import NatsTransport

__all__ = ["WORKER_HEARTBEAT", "ClusterRouter", "PartitionHost"]

log = logging.getLogger(__name__)

WORKER_HEARTBEAT = 1.0  # seconds between a worker's heartbeats (attune_actors.nats.worker default)
_BY_ID = frozenset(
    {"executions.get", "executions.tasks", "executions.graph", "executions.pause", "executions.resume",
     "executions.cancel", "executions.rerun"}
)
# Every partition's engine holds these (its own copy of the definitions, its rules' state).
_EVERYWHERE = frozenset(
    {"workflows.put", "workflows.delete", "inquiries.respond", "rules.enable", "rules.disable"}
)


class PartitionHost:
    """One engine per partition this process owns (see the module doc).

    `build(p)` makes the partition's engine (not started). `adopt` and `drop` may be called from
    any loop; they run here, one at a time per partition, in the order called.
    """

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        *,
        build: Callable[[int], tuple[Engine, NatsTransport]],
        engine_id: str,
        settle: float = 1.5 * WORKER_HEARTBEAT,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.build = build
        self.engine_id = engine_id
        self.settle = settle
        self.engines: dict[int, Engine] = {}
        self._services: dict[int, ControlService] = {}
        self._chains: dict[int, asyncio.Future[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        """Called on the engine's loop before any adopt or drop."""
        self._loop = asyncio.get_running_loop()

    async def adopt(self, p: int) -> None:
        await self._in_turn(p, self._adopt(p))

    async def drop(self, p: int) -> None:
        await self._in_turn(p, self._drop(p))

    async def _in_turn(self, p: int, coro: Any) -> None:
        loop = self._loop
        assert loop is not None, "bind() first"
        if asyncio.get_running_loop() is not loop:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._in_turn(p, coro), loop))
            return
        before = self._chains.get(p)
        mine: asyncio.Future[None] = loop.create_future()
        self._chains[p] = mine
        try:
            if before is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(before)
            await coro
        finally:
            mine.set_result(None)
            if self._chains.get(p) is mine:
                del self._chains[p]

    async def _adopt(self, p: int) -> None:
        if p in self.engines:
            return
        started = time.monotonic()
        engine, transport = self.build(p)
        try:
            # Outcomes waiting for the partition are taken, and the workers' heartbeats are heard,
            # before its executions resume: an attempt still running is not sent again.
            await transport.start()
            await asyncio.sleep(self.settle)
            await engine.start()
            service = ControlService(engine, self.nc, self.subjects, engine_id=self.engine_id)
            await service.start_partition(self.subjects.partition_api(p))
        except Exception:
            log.exception("cannot adopt partition %d", p)
            with contextlib.suppress(Exception):
                await engine.close()
            return
        self.engines[p] = engine
        self._services[p] = service
        log.info("partition %d adopted in %.2f s", p, time.monotonic() - started)

    async def _drop(self, p: int) -> None:
        engine = self.engines.pop(p, None)
        service = self._services.pop(p, None)
        if service is not None:
            await service.stop()
        if engine is not None:
            await engine.close()
            log.info("partition %d dropped", p)

    async def close(self) -> None:
        for p in sorted(self.engines):
            await self.drop(p)


def _merged_triggers(replies: list[Any]) -> list[dict[str, Any]]:
    """The trigger types as one partition's engine lists them, with each sensor's state taken from
    the engine that runs it (one per deployment)."""
    listed: list[dict[str, Any]] = replies[0]["triggers"]
    states = {t["type"]: t["sensor"] for reply in replies for t in reply["triggers"] if "sensor" in t}
    return [{**t, "sensor": states[t["type"]]} if t["type"] in states else t for t in listed]


class ClusterRouter:
    """Sends each control request to the owner of its partition; see the module doc."""

    def __init__(self, nc: Client, subjects: Subjects, partitions: int, *, timeout: float = 30.0) -> None:
        self.nc = nc
        self.subjects = subjects
        self.partitions = partitions
        self.timeout = timeout

    async def __call__(self, operation: str, body: dict[str, Any]) -> Any:
        from attune_actors.nats.cluster import partition_of

        if operation == "executions.create":
            return await self.forward(random.randrange(self.partitions), operation, body)
        if operation in _BY_ID:
            return await self.forward(partition_of(body["id"], self.partitions), operation, body)
        if operation == "executions.list":
            return await self._list(body)
        if operation == "inquiries.list":
            found = await self._everywhere(operation, body)
            return {"inquiries": [i for reply in found for i in reply["inquiries"]]}
        if operation in _EVERYWHERE:
            return (await self._everywhere(operation, body, first=True))[0]
        if operation == "triggers.list":
            return {"triggers": _merged_triggers(await self._everywhere(operation, body))}
        return await self.forward(random.randrange(self.partitions), operation, body)  # workflows

    async def _list(self, body: dict[str, Any]) -> Any:
        found = await self._everywhere("executions.list", body)
        executions = [e for reply in found for e in reply["executions"]]
        executions.sort(key=lambda e: e.get("created_at") or e.get("started_at") or 0.0, reverse=True)
        limit = body.get("limit")
        return {"executions": executions[:limit] if limit else executions}

    async def _everywhere(self, operation: str, body: dict[str, Any], *, first: bool = False) -> list[Any]:
        """The replies of every partition (`first`: the first that is not `not_found`)."""
        results = await asyncio.gather(
            *(self.forward(p, operation, body) for p in range(self.partitions)), return_exceptions=True
        )
        replies: list[Any] = []
        missing: RoutedError | None = None
        for result in results:
            if isinstance(result, RoutedError) and result.code == "not_found":
                missing = result
                continue
            if isinstance(result, BaseException):
                raise result
            replies.append(result)
        if first and not replies:
            raise missing or RoutedError("not_found", f"{operation}: not found")
        return replies

    async def forward(self, p: int, operation: str, body: dict[str, Any]) -> Any:
        """Ask the owner of partition `p`; while nobody owns it (it changes hands), ask again."""
        data = json.dumps({"op": operation, "body": body}).encode()
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            left = deadline - time.monotonic()
            try:
                msg = await self.nc.request(self.subjects.partition_api(p), data, timeout=max(0.1, left))
                reply = json.loads(msg.data)
                error = reply.get("error") if isinstance(reply, dict) and set(reply) == {"error"} else None
                if not isinstance(error, dict):
                    return reply
                if error.get("code") != "unavailable":  # (unavailable: its engine is stopping)
                    raise RoutedError(str(error.get("code")), str(error.get("message")))
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                pass
            if time.monotonic() + delay >= deadline:
                raise RoutedError(
                    "unavailable", f"{operation}: no engine serves partition {p} now; try again shortly"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
