"""A cluster of engines on one deployment: members, partitions, and who owns which.

The execution space is split into `cluster.partitions` partitions. An execution's id names its
partition (`p<n>-<random hex>`, `partition_of`); ids without that form (made by a single engine
before clustering) fall in the partition the CRC-32 of their top-level execution's id says, so an
execution and its nested ones (`<parent id>.<run>-<attempt>`) stay together.

`ClusterMember` runs on the sidecar's loop (`attune_actors.nats.sidecar`), so a busy engine loop
neither misses a renewal nor stops answering:

- Membership: key `<member id>` in the KV bucket `Subjects.members_bucket`, whose messages expire
  `ttl` seconds after they are written; each member rewrites its key every `ttl / 3` s while
  `alive()` (the engine loop's heartbeat is recent). The live members are the bucket's keys.
- Ownership: partition n belongs to the live member with the highest rendezvous score
  (`owner_of`), so when a member joins or leaves only the partitions it gains or loses move.
- Leases: key `p<n>` in `Subjects.partitions_bucket` (same TTL). A member creates the lease of a
  partition it should own (create fails while another holds it), renews it on condition that it is
  still at the revision it wrote, and, when the partition should go to another member, first stops
  acting on it (`on_lose`), then deletes the lease, so the new owner takes it at its next tick.
  A lease that cannot be renewed (expired, taken, NATS unreachable for `ttl`) is lost: `on_lose` at
  once. A dead member's leases expire within `ttl`; the survivors then take its partitions.
- Acting on a partition (`on_gain`) is the caller's: `serve` runs a partition engine whose store is
  fenced (`NatsStore(owner=...)`), so even an engine that missed losing its lease cannot store
  anything once the new owner opened the partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from attune_actors.errors import StoreError
from attune_actors.nats.lease import lease_holder
from attune_actors.nats.subjects import Subjects

__all__ = [
    "ClusterMember",
    "ClusterStatus",
    "cluster_status",
    "new_execution_id",
    "owner_of",
    "partition_of",
]

log = logging.getLogger(__name__)

_ID = re.compile(r"p(\d+)-")
_NATS_ERRORS = (nats.errors.Error, OSError, TimeoutError)


def partition_of(execution_id: str, partitions: int) -> int:
    """The partition an execution (or anything whose id starts with its id) belongs to."""
    found = _ID.match(execution_id)
    if found is not None and int(found[1]) < partitions:
        return int(found[1])
    return zlib.crc32(execution_id.split(".", 1)[0].encode()) % partitions


def new_execution_id(partition: int) -> str:
    return f"p{partition}-{uuid.uuid4().hex}"


def _score(member: str, partition: int) -> bytes:
    return hashlib.blake2b(f"{member}/{partition}".encode(), digest_size=8).digest()


def owner_of(partition: int, members: Iterable[str]) -> str | None:
    """Rendezvous hashing: the member that should own `partition` (None without members)."""
    return max(members, key=lambda m: _score(m, partition), default=None)


async def _bucket(js: JetStreamContext, name: str, ttl: float, description: str) -> KeyValue:
    try:
        return await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        try:
            return await js.create_key_value(
                api.KeyValueConfig(bucket=name, description=description, history=1, ttl=ttl)
            )
        except nats.js.errors.BadRequestError:  # created meanwhile
            return await js.key_value(name)


async def _entries(kv: KeyValue) -> dict[str, dict[str, Any]]:
    """Every key of a small bucket with its JSON value."""
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for key in keys:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            entry = await kv.get(key)
            try:
                value = json.loads(entry.value or b"{}")
            except ValueError:
                value = {}
            found[key] = value if isinstance(value, dict) else {}
    return found


@dataclass(frozen=True)
class ClusterStatus:
    """Who is in the cluster and which partitions each one holds."""

    members: dict[str, dict[str, Any]]  # member id -> what it says of itself
    owners: dict[int, str | None]  # partition -> lease holder (None: nobody holds it now)

    def served(self) -> bool:
        """Whether every partition is held by a live member whose engine for it is started."""
        return bool(self.owners) and all(
            owner in self.members and p in self.members[owner].get("serving", ())
            for p, owner in self.owners.items()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": {
                m: {**info, "partitions": sorted(p for p, o in self.owners.items() if o == m)}
                for m, info in sorted(self.members.items())
            },
            "unowned": sorted(p for p, o in self.owners.items() if o is None),
        }


async def cluster_status(nc: Client, subjects: Subjects) -> ClusterStatus:
    """The members and partition leases as NATS holds them now."""
    js = nc.jetstream()
    members: dict[str, dict[str, Any]] = {}
    leases: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(nats.js.errors.BucketNotFoundError):
        members = await _entries(await js.key_value(subjects.members_bucket))
    with contextlib.suppress(nats.js.errors.BucketNotFoundError):
        leases = await _entries(await js.key_value(subjects.partitions_bucket))
    count = max([int(info.get("partitions", 0)) for info in members.values()] + [0])
    owners: dict[int, str | None] = {p: None for p in range(count)}
    for key, value in leases.items():
        if key.startswith("p") and key[1:].isdigit():
            owners[int(key[1:])] = value.get("holder")
    return ClusterStatus(members, owners)


class ClusterMember:
    """This engine's membership and partition leases; see the module doc.

    `serving()` lists the partitions this engine has started acting on (it is published in the
    member key, for `cluster_status`). `on_gain(p)` and `on_lose(p)` are called on this member's
    loop; `on_lose` is awaited before a handed-over lease is deleted, so it should return once the
    engine no longer acts on `p`.
    """

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        *,
        member_id: str,
        partitions: int,
        ttl: float,
        on_gain: Callable[[int], Any],
        on_lose: Callable[[int], Any],
        alive: Callable[[], bool] | None = None,
        serving: Callable[[], list[int]] | None = None,
        on_wedged: Callable[[str], Any] | None = None,
    ) -> None:
        self.js = nc.jetstream()
        self.subjects = subjects
        self.member_id = member_id
        self.partitions = partitions
        self.ttl = ttl
        self.on_gain = on_gain
        self.on_lose = on_lose
        self.alive = alive
        self.serving = serving  # the partitions whose engines are started (shown to others)
        self.on_wedged = on_wedged  # called once when leases lapse because `alive()` said no
        self._retired = False
        self.held: dict[int, int] = {}  # partition -> revision of our lease
        self._lease_at: dict[int, float] = {}  # partition -> monotonic time of its last write
        self.members: set[str] = set()
        self._members_kv: KeyValue | None = None
        self._leases_kv: KeyValue | None = None
        self._renewed_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._dropping: set[asyncio.Task[None]] = set()
        self._handing: dict[int, asyncio.Task[None]] = {}  # partitions being handed over
        self._writing = asyncio.Lock()  # one lease write at a time (a hand-over runs beside the ticks)

    async def start(self) -> None:
        """Join: check the other members agree on the partition count, write our member key."""
        try:
            self._members_kv = await _bucket(
                self.js, self.subjects.members_bucket, self.ttl, "attune-actors: live engines"
            )
            self._leases_kv = await _bucket(
                self.js, self.subjects.partitions_bucket, self.ttl, "attune-actors: partition leases"
            )
            single = await lease_holder(self.js, self.subjects)
            if single is not None:
                raise StoreError(
                    f"engine {single} serves prefix {self.subjects.prefix} alone (it holds the exclusive "
                    f"engine lease, --no-cluster): stop it, or start this one with --no-cluster too"
                )
            for member, info in (await _entries(self._members_kv)).items():
                if member == self.member_id:
                    raise StoreError(
                        f"an engine named {member} (pid {info.get('pid')} on {info.get('host')}) is in "
                        f"the cluster already: give this one another --engine-id, or, if that one "
                        f"died, start again within {self.ttl:g} s"
                    )
                if info.get("partitions") not in (None, self.partitions):
                    raise StoreError(
                        f"engine {member} runs with cluster.partitions {info.get('partitions')}, this one "
                        f"with {self.partitions}: every engine of a deployment must use the same number"
                    )
            await self._beat()
        except _NATS_ERRORS as e:
            bucket = self.subjects.members_bucket
            raise StoreError(f"cannot join the cluster (bucket {bucket}): {e}") from None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="attune-cluster")

    async def _beat(self) -> None:
        assert self._members_kv is not None
        value = {"host": socket.gethostname(), "pid": os.getpid(), "partitions": self.partitions,
                 "serving": self.serving() if self.serving is not None else sorted(self.held),
                 "at": time.time()}
        await self._members_kv.put(self.member_id, json.dumps(value).encode())
        self._renewed_at = time.monotonic()

    def _lease_value(self) -> bytes:
        return json.dumps({"holder": self.member_id, "at": time.time()}).encode()

    async def _run(self) -> None:
        period = self.ttl / 3
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the membership loop must outlive any one failure
                log.exception("cluster: tick failed")
            await asyncio.sleep(period)

    async def _tick(self) -> None:
        if self._retired:
            return
        assert self._members_kv is not None
        assert self._leases_kv is not None
        if self.alive is not None and not self.alive():
            if time.monotonic() - self._renewed_at >= self.ttl and self.held:
                reason = "the engine has not answered for the lease ttl"
                self._lose_all(reason)
                if self.on_wedged is not None:
                    self.on_wedged(reason)
                    self._retired = True  # the engine stops: it must not take partitions again
            return
        try:
            await self._beat()
            live = set(await _entries(self._members_kv))
        except _NATS_ERRORS as e:
            if time.monotonic() - self._renewed_at >= self.ttl:
                self._lose_all(f"NATS unreachable for {self.ttl:g} s ({e})")
            return
        live.add(self.member_id)
        if live != self.members:
            log.info("cluster: members %s", ", ".join(sorted(live)))
            self.members = live
        mine = {p for p in range(self.partitions) if owner_of(p, live) == self.member_id}
        kv = self._leases_kv
        for p in sorted(set(self.held) - mine - set(self._handing)):
            # Stopping a partition's engine takes a while: it must not hold up the renewals.
            self._handing[p] = asyncio.get_running_loop().create_task(self._hand_over(p))
        for p in sorted(self.held):  # (renewed while handed over too, so it does not lapse meanwhile)
            async with self._writing:
                if p not in self.held:
                    continue
                try:
                    self.held[p] = await kv.update(f"p{p}", self._lease_value(), last=self.held[p])
                    self._lease_at[p] = time.monotonic()
                except nats.js.errors.KeyWrongLastSequenceError:
                    del self.held[p]
                    log.critical("cluster: lease of partition %d lost (expired or taken)", p)
                    self._drop_later(p)
        for p in sorted(mine - set(self.held)):
            try:
                at = time.monotonic()
                self.held[p] = await kv.create(f"p{p}", self._lease_value())
                self._lease_at[p] = at
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # its previous owner still holds it: until it hands it over or it expires
            log.info("cluster: partition %d taken", p)
            await self._call(self.on_gain, p)

    async def _hand_over(self, p: int) -> None:
        """Stop acting on `p`, then let go of its lease (the new owner takes it at its next tick)."""
        try:
            await self._call(self.on_lose, p)
            async with self._writing:
                revision = self.held.pop(p, None)
                if revision is not None and self._leases_kv is not None:
                    with contextlib.suppress(*_NATS_ERRORS, nats.js.errors.KeyWrongLastSequenceError):
                        await self._leases_kv.delete(f"p{p}", last=revision)
            log.info("cluster: partition %d handed over", p)
        finally:
            self._handing.pop(p, None)

    def _lose_all(self, reason: str) -> None:
        if not self.held:
            return
        log.critical("cluster: every partition lease is lost: %s", reason)
        for p in sorted(self.held):
            del self.held[p]
            self._drop_later(p)

    def _drop_later(self, p: int) -> None:
        """`on_lose(p)`, not awaited: this loop must go on renewing while the partition's engine
        stops (or while the engine's loop is stuck)."""
        task = asyncio.get_running_loop().create_task(self._call(self.on_lose, p))
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    @staticmethod
    async def _call(callback: Callable[[int], Any], p: int) -> None:
        result = callback(p)
        if asyncio.iscoroutine(result):
            await result

    def owns(self, p: int) -> bool:
        """Whether this engine surely still holds partition `p` (from any thread): its lease was
        written within 3/4 of the ttl (a paused or cut-off engine learns it no longer is at once)."""
        at = self._lease_at.get(p)
        return (p in self.held and p not in self._handing and at is not None
                and time.monotonic() - at < self.ttl * 0.75)

    async def stop(self) -> None:
        """Leave: stop acting on every partition, delete our leases and member key."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*self._handing.values(), return_exceptions=True)
        for p in sorted(self.held):
            revision = self.held.pop(p)
            await self._call(self.on_lose, p)
            if self._leases_kv is not None:
                with contextlib.suppress(*_NATS_ERRORS, nats.js.errors.KeyWrongLastSequenceError):
                    await self._leases_kv.delete(f"p{p}", last=revision)
        if self._members_kv is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await self._members_kv.delete(self.member_id)
