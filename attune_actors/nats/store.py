"""The `nats` store: snapshots and definitions in a JetStream KV bucket, group-committed in atomic batches.

`NatsStore` keeps what `Store` describes in the KV bucket `Subjects.snapshot_bucket` (a JetStream
stream `KV_<bucket>` on subjects `$KV.<bucket>.>`, one message kept per key). The engine that
opens it holds the engine lease (`attune_actors.nats.lease`), or, in a cluster, the lease of the
partition the store is opened for (`partition=`, its keys under `p<n>.`, fenced by `owner=`), so it
is the only writer of its keys, and the store works like this:

- `open()` creates or checks the bucket, then reads every key once (one push consumer, last value
  per subject, flow-controlled) into an in-memory mirror, a `MemoryStore`. The mirror is the truth:
  `load`, `headers`, `unfinished`, `definitions` and `get_source` answer from it, without I/O.
- `save()` and the other writes update the mirror and put the encoded records in the *open batch*,
  where a later write of the same key replaces an earlier one. A writer task, on the event loop,
  takes the whole open batch at the start of the next loop turn (a fresh one opens for the next
  writes) and publishes it as JetStream *atomic batches* (nats-server 2.12+, `allow_atomic`): up to
  `batch_size` messages that the server stores all together or not at all, with one
  acknowledgement. While it waits for the acknowledgement, the loop fills the next batch, so the
  server's fsyncs (with `sync_interval: always`) are paid per batch, not per record.
- `flush()` returns once everything saved before the call is acknowledged by JetStream.

Key layout (KV keys allow `[-/_=.a-zA-Z0-9]`; anything else in an id is written `=XX`, per UTF-8
byte, and so is a dot that would make an empty token, or any dot in an execution id):

- `x.<execution id>.h`: the header (with its active runs' records, see `store.base`);
  `x.<id>.r.<run id>`: a task run's row; `x.<id>.i.<run id>.<index>`:
  a with_items item; `x.<id>.n`: empty, written with the first save and never again, so that its
  stream sequence orders executions by first save (as `MemoryStore` and `SQLiteStore` do). An
  execution's records of one group commit go in the same atomic batch, header last.
- `d.<ref>`: a workflow definition put at run time (value: `[ref, pack, source]`).
- `s.<digest>`: the definition an execution started with (value: `[digest, pack, source]`).
- `meta`: `{"format": 2}`; a bucket written by a newer format is refused, one of format 1 (run
  records as dicts, no active runs in the header: `store.base` reads both) is marked 2 on open.
- `p.<n>.<key>`: part `n` of a value larger than the server's `max_payload`; the key itself then
  holds `0xc1` (a byte msgpack never uses) + the number of parts. Parts and their key are written in
  the same atomic batch.
- A cluster's partition n (`attune_actors.nats.cluster`) keeps all of the above under `p<n>.`
  (`p3.x.<id>.h`, `p3.meta`, `p3.p.0.x.<id>.h`, ...), so a partition's owner reads only its own
  keys, and fences with `owner.p<n>`. It also reads the keys outside any namespace (written by a
  single engine): the executions there whose id falls in its partition (`partition_of`) are its
  own, written back at their keys. A single engine reads every namespace the same way.

Durability: what `flush()` returned for is acknowledged by JetStream, which with file storage means
written to the server's files; whether it is on disk depends on the server's `sync_interval` (see
docs/perf/nats-store.md, "Settings and durability"). A crash of the engine loses the saves not yet
acknowledged: those of the current turn and of the batch in flight. Each atomic batch is whole or
absent, so a step is never half-stored, except when one execution writes more than `batch_size`
records in one group commit (a with_items step over thousands of items): those go in several
batches, in order, header last.

Failures: when a publish fails or is not acknowledged in `ack_timeout` (server down, restarting,
out of space), the batch's records go back in front of the open batch (newer writes win), the
failure is logged, and the writer retries with backoff (at once on `flush()`) until it succeeds:
nothing saved is dropped, and `save()` never raises because of it; `flush()` waits. `close()`
gives up after `close_timeout` and raises `StoreError` saying how many records are lost.

Use a store from the event loop thread that opened it (nats-py is not thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import string
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from attune_actors.codec import decode, encode
from attune_actors.errors import StoreError
from attune_actors.nats.cluster import partition_of
from attune_actors.nats.subjects import Subjects
from attune_actors.store.base import (
    EncodedSnapshot,
    ItemRow,
    Listing,
    MemoryStore,
    RunRow,
    Snapshot,
    Store,
)
from attune_actors.store.groupcommit import Backoff, CommitWaiters

__all__ = [
    "FORMAT",
    "STORAGE_TYPES",
    "NatsStore",
    "NatsStoreStats",
    "escape_path",
    "escape_token",
    "unescape",
]

log = logging.getLogger(__name__)

# The key layout and value encoding; `meta` records it. 2: run records are lists and the header
# carries the active runs (store.base); format 1 buckets are read as they are, then marked 2.
FORMAT = 2
STORAGE_TYPES = ("file", "memory")
KV_OPERATION = "KV-Operation"
OWNER_KEY = "owner"  # who opened the bucket last (fencing, see `NatsStore`)
_MANIFEST = b"\xc1"  # first byte of a key whose value is in parts (never a msgpack value's first byte)
_PAYLOAD_MARGIN = 2048  # bytes left under max_payload for headers (the server counts them)
_RETRY_FIRST = 0.05  # seconds before retrying a failed batch; doubled each failure...
_RETRY_MAX = 1.0  # ...up to this (a restarted server is used again within a second)
_LOAD_STALL = 30.0  # seconds without a message before loading the bucket gives up
_LOAD_ATTEMPTS = 3  # a gap in the delivered sequence restarts the load, up to this many times
_NO_MARK = 1 << 62  # the order of an execution without its `.n` key: after those with one

# -- keys ------------------------------------------------------------------------------------------

_SAFE = frozenset(string.ascii_letters + string.digits + "_-")
_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_ESCAPED = re.compile(rb"=([0-9A-F]{2})")


def _escape(text: str, dots: bool) -> str:
    if not text:
        return "="
    out = []
    last = len(text) - 1
    for i, c in enumerate(text):
        if c in _SAFE or (c == "." and dots and 0 < i < last and text[i - 1] != "." and text[i + 1] != "."):
            out.append(c)
        else:
            out.append("".join(f"={b:02X}" for b in c.encode("utf-8", "surrogatepass")))
    return "".join(out)


def escape_token(text: str) -> str:
    """`text` as one KV key token: no dots, only `[-_=a-zA-Z0-9]` (`unescape` reverses it)."""
    return text if _PLAIN_TOKEN.fullmatch(text) else _escape(text, False)


def escape_path(text: str) -> str:
    """`text` as KV key tokens: dots kept where they separate non-empty tokens, the rest escaped."""
    return text if _PLAIN_PATH.fullmatch(text) else _escape(text, True)


def unescape(key_part: str) -> str:
    """The text `escape_token` or `escape_path` made `key_part` from."""
    if key_part == "=":
        return ""
    if "=" not in key_part:
        return key_part
    raw = _ESCAPED.sub(lambda m: bytes([int(m[1], 16)]), key_part.encode())
    return raw.decode("utf-8", "surrogatepass")


def _namespace(key: str) -> str:
    """The partition namespace a key is in (`p<n>.`), or "" for a key outside any."""
    if key[:1] == "p" and key[1:2].isdigit():
        return key[: key.index(".") + 1]
    return ""


def _part_key(n: int, key: str) -> str:
    ns = _namespace(key)
    return f"{ns}p.{n}.{key[len(ns):]}"


# -- batches ---------------------------------------------------------------------------------------

Value = bytes | None  # None: delete the key
Message = tuple[str, bytes, dict[str, str] | None]  # subject, payload, extra headers


@dataclass(frozen=True, slots=True)
class NatsStoreStats:
    """Counters since the store opened: what callers asked for and what reached JetStream."""

    saves: int  # save() calls
    group_commits: int  # open batches written completely
    batches: int  # atomic batches acknowledged
    records_written: int  # keys written or deleted by those batches (after coalescing)
    messages_written: int  # messages in those batches (records, parts of large values, deletions)
    failed_batches: int  # atomic batches that failed or were not acknowledged in time (kept, retried)


class _Batch:
    """Records written since the previous group commit (the open batch), or in one group commit.

    `units` maps a unit (an execution's key prefix `x.<id>`, or a definition's or source's key) to
    its records, key -> value; one unit's records go in the same atomic batch when they fit.
    """

    __slots__ = ("gen", "units")

    def __init__(self, gen: int) -> None:
        self.gen = gen  # group commits are numbered in order
        self.units: dict[str, dict[str, Value]] = {}

    def empty(self) -> bool:
        return not self.units

    def records(self) -> int:
        return sum(len(records) for records in self.units.values())

    def under(self, newer: _Batch) -> _Batch:
        """One batch holding this (older, unwritten) batch's records overwritten by `newer`'s."""
        merged = _Batch(newer.gen)
        merged.units = {unit: dict(records) for unit, records in self.units.items()}
        for unit, records in newer.units.items():
            found = merged.units.get(unit)
            if found is None:
                merged.units[unit] = records
            else:
                found.update(records)
        return merged


class _Chunk:
    """One atomic batch: its messages and the records they write."""

    __slots__ = ("messages", "parts", "records")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.records: list[tuple[str, str, Value]] = []  # unit, key, value
        self.parts: dict[str, int] = {}  # key -> parts it has once this batch is stored


class _WriteError(Exception):
    """JetStream refused or did not acknowledge an atomic batch."""


# -- the store -------------------------------------------------------------------------------------


class NatsStore(Store):
    """Snapshots and definitions in a JetStream KV bucket, mirrored in memory; see the module doc.

    `nc` is a connected client (the caller owns it and closes it after the store). `storage` and
    `replicas` are the bucket's (JetStream cannot change the storage of an existing bucket: a
    mismatch is refused; replicas are updated). `batch_size` is the number of messages per atomic
    batch, at most the server's `jetstream.limits.batch.max_msgs` (1,000 by default).
    """

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        *,
        replicas: int = 1,
        storage: str = "file",
        batch_size: int = 1000,
        ack_timeout: float = 10.0,
        close_timeout: float = 30.0,
        partition: tuple[int, int] | None = None,
        owner: str | None = None,
    ) -> None:
        if storage not in STORAGE_TYPES:
            raise ValueError(f"storage must be one of {', '.join(STORAGE_TYPES)}, not {storage!r}")
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.nc = nc
        self.subjects = subjects
        self.replicas = replicas
        self.storage = storage
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.close_timeout = close_timeout
        self.bucket = subjects.snapshot_bucket
        # A cluster's partition store (index, count): its keys are under `p<index>.`, and it also
        # takes the executions of that partition stored outside any namespace (by a single engine).
        self.partition = partition
        self.namespace = f"{subjects.partition_engine_id(partition[0])}." if partition else ""
        # Executions kept where they were found, outside this store's namespace: id -> key prefix.
        self._units: dict[str, str] = {}
        # Definitions found outside this store's namespace: ref -> their keys (deleted with it).
        self._elsewhere: dict[str, set[str]] = {}
        # Fencing (a cluster's partition store): `open()` writes the owner key, and every batch is
        # stored only while that key is still at the revision this store wrote: once another engine
        # opened the partition, this one can no longer write (`fenced` says why).
        self.owner = owner
        self._owner_key = f"{OWNER_KEY}.{self.namespace[:-1]}" if partition else OWNER_KEY
        self._fence = 0
        self.fenced: str | None = None
        self.stream = f"KV_{self.bucket}"
        self._prefix = f"$KV.{self.bucket}."
        self._mirror = MemoryStore()
        self._state = "new"  # new -> open -> closing -> closed
        self._open = _Batch(1)
        self._inflight: _Batch | None = None
        self._parts: dict[str, int] = {}  # keys stored in parts -> how many
        self._waiters = CommitWaiters()
        self._wake = asyncio.Event()
        self._force = False  # flush(): write now, even during a retry backoff
        self._failure: str | None = None  # why the last batch failed; cleared by a success
        self._failed_since = 0  # consecutive failed attempts
        self._backoff = Backoff(_RETRY_FIRST, _RETRY_MAX)
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._limit = 0  # largest value stored in one message
        self._inbox = ""
        self._ack_sub: Subscription | None = None
        self._acks: dict[str, asyncio.Future[bytes]] = {}
        self._ack_ids = itertools.count(1)
        self._batch_ids = itertools.count(1)
        self._instance = uuid.uuid4().hex[:16]
        self._saves = self._group_commits = self._batches = 0
        self._records_written = self._messages_written = self._failed_batches = 0
        self.load_seconds = 0.0  # how long open() took to read the bucket
        self.loaded_keys = 0

    def __repr__(self) -> str:
        return (f"NatsStore(bucket={self.bucket!r}, namespace={self.namespace!r}, "
                f"storage={self.storage!r}, replicas={self.replicas})")

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create or check the bucket and read it into memory. Raises `StoreError` when it cannot."""
        if self._state == "open":
            return
        if self._state != "new":
            raise StoreError(f"the nats store {self.bucket} is closed")
        try:
            js = self.nc.jetstream()
            await self._ensure_stream(js)
            self._limit = max(1024, self.nc.max_payload - _PAYLOAD_MARGIN)
            self._inbox = self.nc.new_inbox()
            self._ack_sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
            if self.owner is not None:  # before reading: what the previous owner writes later is refused
                self._fence = (await js.publish(self._prefix + self._owner_key, self.owner.encode())).seq
            start = time.perf_counter()
            values, created = await self._load(js)
            self._fill(values, created)
            self.load_seconds = time.perf_counter() - start
            self.loaded_keys = len(values)
        except StoreError:
            self._state = "closed"  # a failed open may have filled the mirror halfway: use a new store
            await self._drop_ack_sub()
            raise
        except (TimeoutError, nats.errors.Error, OSError) as e:
            self._state = "closed"
            await self._drop_ack_sub()
            raise StoreError(f"cannot open the nats store (bucket {self.bucket}): {_describe(e)}") from None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._state = "open"
        self._writer = self._loop.create_task(self._writer_main(), name=f"attune-nats-store:{self.bucket}")
        log.info(
            "nats store %s%s: %d keys, %d executions read in %.2f s",
            self.bucket, f" ({self.namespace[:-1]})" if self.namespace else "",
            self.loaded_keys, self._mirror.count(), self.load_seconds,
        )

    async def flush(self) -> None:
        """Return once everything saved before the call is acknowledged by JetStream.

        Writes at once (skipping a retry backoff); while the server cannot be reached, waits for it.
        """
        if self._state not in ("open", "closing"):
            state = "not open" if self._state == "new" else "closed"
            raise StoreError(f"the nats store {self.bucket} is {state}")
        await self._flush()

    async def _flush(self) -> None:
        if self._writer is None or self._writer.done():
            raise StoreError(f"the writer of the nats store {self.bucket} stopped")
        if not self._open.empty():
            target = self._open.gen
        elif self._inflight is not None:
            target = self._inflight.gen
        else:
            return
        fut = self._waiters.add(target)
        self._force = True
        self._wake.set()
        await fut

    async def close(self) -> None:
        """Write what is pending (for up to `close_timeout` s), then stop. Closing twice is harmless.

        Raises `StoreError` when pending records could not be written (they are lost then). The
        NATS connection is the caller's: it stays open.
        """
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        if self._state == "closing":
            return
        self._state = "closing"
        lost = 0
        reason = ""
        try:
            async with asyncio.timeout(self.close_timeout):
                await self._flush()
        except TimeoutError:
            lost = self._pending_records()
            reason = self._failure or f"not acknowledged within {self.close_timeout:g} s"
        except StoreError as e:
            lost = self._pending_records()
            reason = e.message
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        await self._drop_ack_sub()
        self._waiters.resolve(None, StoreError(f"the nats store {self.bucket} is closed"))
        self._state = "closed"
        if lost:
            message = (
                f"closing the nats store {self.bucket}: {lost} pending records could not be written "
                f"and are lost: {reason}"
            )
            log.error("%s", message)
            raise StoreError(message)

    def stats(self) -> NatsStoreStats:
        """Counters since the store opened."""
        return NatsStoreStats(
            self._saves, self._group_commits, self._batches, self._records_written,
            self._messages_written, self._failed_batches,
        )

    def pending(self) -> int:
        """Records saved but not acknowledged yet."""
        return self._pending_records()

    def _pending_records(self) -> int:
        return self._open.records() + (self._inflight.records() if self._inflight is not None else 0)

    async def _drop_ack_sub(self) -> None:
        sub, self._ack_sub = self._ack_sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    # -- the bucket ------------------------------------------------------------------------------

    def _stream_config(self) -> api.StreamConfig:
        """The KV bucket's stream, as `create_key_value` makes it, with atomic batches allowed."""
        return api.StreamConfig(
            name=self.stream,
            description="attune-actors: execution snapshots and workflow definitions",
            subjects=[f"{self._prefix}>"],
            storage=api.StorageType(self.storage),
            num_replicas=self.replicas,
            max_msgs_per_subject=1,  # history 1
            max_msgs=-1,
            max_bytes=-1,
            max_msg_size=-1,
            max_consumers=-1,
            discard=api.DiscardPolicy.NEW,
            deny_delete=True,
            allow_rollup_hdrs=True,
            allow_direct=True,
            duplicate_window=120.0,
            allow_atomic=True,
        )

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        wanted = self._stream_config()
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            try:
                info = await js.add_stream(wanted)
            except nats.js.errors.BadRequestError:
                info = await js.stream_info(self.stream)  # another process created it meanwhile
        config = info.config
        storage = getattr(config.storage, "value", config.storage)
        if storage != self.storage:
            raise StoreError(
                f"the nats store's bucket {self.bucket} exists with {storage} storage, not {self.storage}: "
                "JetStream cannot change the storage of a stream (copy it, or use another subject_prefix)"
            )
        if config.max_age:
            raise StoreError(
                f"the nats store's bucket {self.bucket} has a TTL of {config.max_age:g} s: execution "
                "snapshots would expire; remove the TTL (nats stream edit) or use another subject_prefix"
            )
        if config.num_replicas != self.replicas or not config.allow_atomic or not config.allow_direct:
            log.info(
                "nats store %s: updating the bucket (replicas %s -> %d, atomic batches on)",
                self.bucket, config.num_replicas, self.replicas,
            )
            try:
                info = await js.update_stream(
                    _evolve(config, num_replicas=self.replicas, allow_atomic=True, allow_direct=True)
                )
            except nats.js.errors.APIError as e:
                raise StoreError(
                    f"cannot update the nats store's bucket {self.bucket} to {self.replicas} replicas with "
                    f"atomic batches: {_describe(e)}"
                ) from None
        if not info.config.allow_atomic:
            version = self.nc.connected_server_version
            raise StoreError(
                f"the nats store needs atomic batch publishing (nats-server 2.12 or later); "
                f"the server is {version.major}.{version.minor}.{version.patch}"
            )

    async def _load(self, js: JetStreamContext) -> tuple[dict[str, bytes], dict[str, int]]:
        """Every key's value, read through one flow-controlled push consumer (retried on a gap)."""
        for attempt in range(1, _LOAD_ATTEMPTS + 1):
            try:
                return await self._load_once(js)
            except _LoadGap as e:
                log.warning("nats store %s: %s while reading; reading again (%d)", self.bucket, e, attempt)
        raise StoreError(f"cannot read the nats store's bucket {self.bucket}: messages kept going missing")

    async def _load_once(self, js: JetStreamContext) -> tuple[dict[str, bytes], dict[str, int]]:
        nc = self.nc
        prefix_len = len(self._prefix)
        values: dict[str, bytes] = {}
        done = asyncio.Event()
        state = _LoadState()

        async def on_msg(msg: Msg) -> None:
            headers = msg.headers
            if headers is not None and "Status" in headers:
                if headers["Status"] != "100":
                    state.gap = f"status {headers['Status']} {headers.get('Description', '')}".strip()
                    done.set()
                elif msg.reply:  # flow control: answer it to get more (else an idle heartbeat)
                    await nc.publish(msg.reply, b"")
                return
            reply = msg.reply or ""
            tokens = reply.split(".")
            if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
                sseq, cseq, pending = tokens[5], int(tokens[6]), int(tokens[8])
            elif len(tokens) >= 11:  # $JS.ACK.<domain>.<account>.<stream>...<pending>[.<token>]
                sseq, cseq, pending = tokens[7], int(tokens[8]), int(tokens[10])
            else:
                state.gap = f"a message without JetStream metadata ({reply!r})"
                done.set()
                return
            if cseq != state.next:
                state.gap = f"message {state.next} missing (got {cseq})"
                done.set()
                return
            state.next = cseq + 1
            state.received += 1
            state.progress = time.monotonic()
            key = msg.subject[prefix_len:]
            if headers is not None and headers.get(KV_OPERATION) in ("DEL", "PURGE"):
                values.pop(key, None)
            else:
                values[key] = msg.data
                if key[-2:] == ".n":
                    local = key[len(_namespace(key)):] if key[:1] == "p" else key
                    if local[:2] == "x." and local.find(".", 2) == len(local) - 2:
                        # an execution's creation mark: its sequence orders executions
                        state.created[key[:-2]] = int(sseq)
            if pending == 0:
                done.set()

        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=1 << 24, pending_bytes_limit=1 << 34)
        consumer = None
        if self.namespace:  # its partition's keys, and what a single engine stored (not other partitions')
            filters: dict[str, Any] = {"filter_subjects": [
                f"{self._prefix}{top}" for top in (f"{self.namespace}>", "x.>", "d.>", "s.>", "p.>", "meta")
            ]}
        else:
            filters = {"filter_subject": f"{self._prefix}>"}
        try:
            info = await js.add_consumer(
                self.stream,
                api.ConsumerConfig(
                    deliver_subject=inbox,
                    deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                    ack_policy=api.AckPolicy.NONE,
                    **filters,
                    flow_control=True,
                    idle_heartbeat=5.0,
                    mem_storage=True,
                    num_replicas=1,
                    inactive_threshold=60.0,
                ),
            )
            consumer = info.name
            if not info.num_pending:
                return values, state.created
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await done.wait()
                if not done.is_set() and time.monotonic() - state.progress > _LOAD_STALL:
                    raise StoreError(
                        f"cannot read the nats store's bucket {self.bucket}: no message for "
                        f"{_LOAD_STALL:g} s ({state.received} read)"
                    )
            if state.gap:
                raise _LoadGap(state.gap)
            return values, state.created
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
            if consumer is not None:
                with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                    await js.delete_consumer(self.stream, consumer)

    def _fill(self, values: dict[str, bytes], created: dict[str, int]) -> None:
        """Put the bucket's records into the mirror (executions in the order of their first save).

        Keys in a partition namespace (`p<n>.`) other than this store's are read too (a single
        engine after a cluster) and so are keys outside any (a partition store after a single
        engine; of those executions, only its partition's): they are written back where they are.
        """
        own, mine = self.namespace, self.partition
        parts: dict[str, dict[int, bytes]] = {}
        for key in values:
            ns = _namespace(key)
            if key[len(ns):len(ns) + 2] == "p.":
                _, number, whole = key[len(ns):].split(".", 2)
                parts.setdefault(ns + whole, {})[int(number)] = values[key]
        used: set[tuple[str, int]] = set()
        headers: dict[str, bytes] = {}
        order: dict[str, int] = {}
        runs: dict[str, dict[str, bytes]] = {}
        items: dict[str, dict[tuple[str, int], bytes]] = {}
        skipped: set[str] = set()  # another partition's executions (stored outside any namespace)
        has_meta = False
        for key, value in values.items():
            ns = _namespace(key) if key[:1] == "p" else ""
            local = key[len(ns):] if ns else key
            kind = local[:2]
            if kind == "p." or local == OWNER_KEY or local.startswith(OWNER_KEY + "."):
                continue
            if local == "meta":
                found = decode(value).get("format")
                if not isinstance(found, int) or found > FORMAT:
                    raise StoreError(
                        f"the nats store's bucket {self.bucket} was written by a newer attune-actors "
                        f"(format {found!r}; this one reads format {FORMAT})"
                    )
                has_meta = has_meta or (ns == own and found == FORMAT)
                continue
            if kind == "x.":
                eid_token, _, rest = local[2:].partition(".")
                eid = unescape(eid_token)
                if ns != own:
                    if mine is not None and partition_of(eid, mine[1]) != mine[0]:
                        skipped.add(eid)
                        continue
                    self._units[eid] = ns
            if value[:1] == _MANIFEST:
                value = self._assemble(key, value, parts.get(key, {}))
                used.update((key, n) for n in range(self._parts[key]))
            if kind == "x.":
                if rest == "h":
                    headers[eid] = value
                    order[eid] = created.get(f"{ns}x.{eid_token}", _NO_MARK)
                elif rest == "n":
                    pass
                elif rest.startswith("r."):
                    runs.setdefault(eid, {})[unescape(rest[2:])] = value
                elif rest.startswith("i."):
                    run_id, _, idx = rest[2:].rpartition(".")
                    items.setdefault(eid, {})[(unescape(run_id), int(idx))] = value
                else:
                    log.warning("nats store %s: ignoring unknown key %s", self.bucket, key)
            elif kind == "d.":
                ref, pack, source = decode(value)
                self._mirror.put_definition(ref, pack, source)
                if ns != own:
                    self._elsewhere.setdefault(ref, set()).add(key)
            elif kind == "s.":
                digest, pack, source = decode(value)
                self._mirror.put_source(digest, pack, source)
            else:
                log.warning("nats store %s: ignoring unknown key %s", self.bucket, key)
        if skipped:
            log.info("nats store %s: %d executions of other partitions left to their owners",
                     self.bucket, len(skipped))
        decoded = {eid: decode(blob) for eid, blob in headers.items()}
        for eid in sorted(decoded, key=lambda e: (order[e], decoded[e].get("created_at") or 0.0, e)):
            h = decoded[eid]
            self._mirror.put_encoded(
                eid,
                EncodedSnapshot(
                    headers[eid], h["status"], h["parent_id"], h["started_at"] or 0.0,
                    runs.pop(eid, {}), items.pop(eid, {}),
                ),
            )
        for eid in {*runs, *items}:
            log.warning("nats store %s: records of execution %s without its header ignored", self.bucket, eid)
        for key, found in parts.items():  # parts no key refers to (left by a bug): delete them
            if _namespace(key) != own:
                continue  # (another partition's, or a legacy execution's: not ours to judge)
            for n in found:
                if (key, n) not in used:
                    self._put("p", _part_key(n, key), None)
        if not has_meta:
            self._put(own + "meta", own + "meta", encode({"format": FORMAT}))

    def _assemble(self, key: str, manifest: bytes, parts: dict[int, bytes]) -> bytes:
        count = decode(manifest[1:])
        missing = [n for n in range(count) if n not in parts]
        if missing:
            raise StoreError(
                f"the nats store's bucket {self.bucket} is damaged: {key} lacks part {missing[0]} of {count}"
            )
        self._parts[key] = count
        return b"".join(parts[n] for n in range(count))

    # -- writes: buffered ------------------------------------------------------------------------

    def save_encoded(
        self,
        execution_id: str,
        header: bytes,
        listing: Listing,
        runs: list[RunRow],
        items: list[ItemRow],
    ) -> None:
        """Record a step's changes in the mirror and the open batch (latest wins per key)."""
        self._check_writable()
        mirror = self._mirror
        new = execution_id not in mirror
        mirror.save_encoded(execution_id, header, listing, runs, items)
        unit = f"{self._units.get(execution_id, self.namespace)}x.{escape_token(execution_id)}"
        records = self._open.units.get(unit)
        if records is None:
            records = self._open.units[unit] = {}
        if new:
            records[f"{unit}.n"] = b""
        for row in runs:
            records[f"{unit}.r.{escape_path(row[0])}"] = row[4]
        for (run_id, idx), blob in items:
            records[f"{unit}.i.{escape_path(run_id)}.{idx}"] = blob
        records[f"{unit}.h"] = header
        self._saves += 1
        self._ask_write()

    def put_source(self, digest: str, pack: str, source: str) -> None:
        self._check_writable()
        self._mirror.put_source(digest, pack, source)
        key = f"{self.namespace}s.{escape_path(digest)}"
        self._put(key, key, encode([digest, pack, source]))
        self._ask_write()

    def put_definition(self, ref: str, pack: str, source: str) -> None:
        self._check_writable()
        self._mirror.put_definition(ref, pack, source)
        key = f"{self.namespace}d.{escape_path(ref)}"
        self._put(key, key, encode([ref, pack, source]))
        self._ask_write()

    def delete_definition(self, ref: str) -> bool:
        self._check_writable()
        existed = self._mirror.delete_definition(ref)
        if existed:
            for key in {f"{self.namespace}d.{escape_path(ref)}", *self._elsewhere.pop(ref, ())}:
                self._put(key, key, None)
            self._ask_write()
        return existed

    def _put(self, unit: str, key: str, value: Value) -> None:
        records = self._open.units.get(unit)
        if records is None:
            records = self._open.units[unit] = {}
        records[key] = value

    def _check_writable(self) -> None:
        if self._state != "open":
            state = "not open" if self._state == "new" else "closed"
            raise StoreError(f"the nats store {self.bucket} is {state}")
        if threading.get_ident() != self._thread:
            raise StoreError(f"the nats store {self.bucket} is used from a thread other than its loop's")
        if self._writer is None or self._writer.done():
            raise StoreError(f"the writer of the nats store {self.bucket} stopped")

    def _ask_write(self) -> None:
        """Wake the writer (it runs on a later loop turn, so a turn's saves go together).

        During a failure backoff the writer waits for its timer (or a flush), not for saves.
        """
        if self._failure is None:
            self._wake.set()

    # -- reads: the mirror -----------------------------------------------------------------------

    def load(self, execution_id: str) -> Snapshot | None:
        return self._mirror.load(execution_id)

    def headers(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        parent_id: str | None = None,
        roots_only: bool = False,
    ) -> list[dict[str, Any]]:
        return self._mirror.headers(status=status, limit=limit, parent_id=parent_id, roots_only=roots_only)

    def unfinished(self) -> list[str]:
        return self._mirror.unfinished()

    def get_source(self, digest: str) -> tuple[str, str] | None:
        return self._mirror.get_source(digest)

    def definitions(self) -> list[tuple[str, str, str]]:
        return self._mirror.definitions()

    # -- the writer task -------------------------------------------------------------------------

    async def _writer_main(self) -> None:
        try:
            while True:
                self._wake.clear()
                if self._open.empty():
                    await self._wake.wait()
                    continue
                if self._failure is not None and not self._force:
                    delay = self._backoff.remaining()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(delay):
                                await self._wake.wait()
                        continue
                self._force = False
                if not self.nc.is_connected:
                    self._failed("the NATS connection is " + ("closed" if self.nc.is_closed else "down"))
                    continue
                batch, self._open = self._open, _Batch(self._open.gen + 1)
                self._inflight = batch
                began = time.perf_counter()
                try:
                    leftover, error = await self._write(batch)
                finally:
                    self._inflight = None
                metrics = self.metrics
                if leftover is None:
                    self._group_commits += 1
                    if metrics is not None:
                        metrics.store_committed(time.perf_counter() - began, batch.records())
                    if self._failure is not None:
                        log.warning(
                            "nats store %s writes again (after %d failed attempts)",
                            self.bucket, self._failed_since,
                        )
                    self._failure = None
                    self._failed_since = 0
                    self._backoff.succeeded()
                    self._waiters.resolve(batch.gen)
                elif self._fence and error is not None and "wrong last sequence" in error:
                    # Another engine owns the bucket now: nothing more of ours may be stored.
                    self.fenced = f"another engine took over the nats store {self.bucket}"
                    lost = leftover.records() + self._open.records()
                    self._open = _Batch(self._open.gen + 1)
                    log.error("%s: %d records not written", self.fenced, lost)
                    self._waiters.resolve(None, StoreError(self.fenced))
                    return
                else:
                    if metrics is not None:
                        metrics.store_commit_failed()
                    self._open = leftover.under(self._open)
                    self._failed(error or "unknown error")
        except asyncio.CancelledError:
            raise
        except BaseException:  # a bug: do not leave flush() waiting forever
            log.exception("the writer of the nats store %s stopped", self.bucket)
            self._waiters.resolve(None, StoreError(f"the writer of the nats store {self.bucket} stopped"))
            raise

    def _failed(self, reason: str) -> None:
        self._failed_since += 1
        if self._failure != reason:
            log.error(
                "nats store %s: cannot write: %s; %d records kept in memory and retried",
                self.bucket, reason, self._open.records(),
            )
        self._failure = reason
        self._backoff.failed()

    async def _write(self, batch: _Batch) -> tuple[_Batch | None, str | None]:
        """Publish `batch` in atomic batches, in order; (records not written, why) when one fails."""
        chunks = self._chunks(batch)
        for i, chunk in enumerate(chunks):
            try:
                await self._send(chunk)
            except (_WriteError, nats.errors.Error, OSError, TimeoutError) as e:
                self._failed_batches += 1
                for key, count in chunk.parts.items():  # it may be stored after all: delete extra parts later
                    self._parts[key] = max(self._parts.get(key, 0), count)
                leftover = _Batch(batch.gen)
                for rest in chunks[i:]:
                    for unit, key, value in rest.records:
                        found = leftover.units.get(unit)
                        if found is None:
                            found = leftover.units[unit] = {}
                        found[key] = value
                return leftover, _describe(e)
            for key, count in chunk.parts.items():
                if count:
                    self._parts[key] = count
                else:
                    self._parts.pop(key, None)
            self._batches += 1
            self._records_written += len(chunk.records)
            self._messages_written += len(chunk.messages)
        return None, None

    def _messages(self, key: str, value: Value, chunk: _Chunk) -> list[Message]:
        """The messages writing `value` at `key` (parts first if it is large, then extra parts deleted)."""
        subject = self._prefix + key
        had = self._parts.get(key, 0)
        out: list[Message]
        if value is None:
            out = [(subject, b"", {KV_OPERATION: "DEL"})]
            count = 0
        elif len(value) <= self._limit:
            out = [(subject, value, None)]
            count = 0
        else:
            size = self._limit
            count = -(-len(value) // size)
            out = [
                (self._prefix + _part_key(n, key), value[n * size:(n + 1) * size], None) for n in range(count)
            ]
            out.append((subject, _MANIFEST + encode(count), None))
        out.extend((self._prefix + _part_key(n, key), b"", {KV_OPERATION: "DEL"}) for n in range(count, had))
        if count or had:
            chunk.parts[key] = count
        return out

    def _chunks(self, batch: _Batch) -> list[_Chunk]:
        """`batch` cut into atomic batches of at most `batch_size` messages, whole units where they fit."""
        size = self.batch_size
        limit, had_parts, prefix = self._limit, self._parts, self._prefix
        chunks: list[_Chunk] = []
        cur = _Chunk()
        for unit, records in batch.units.items():
            header = f"{unit}.h"
            if len(records) <= size and all(
                value is not None and len(value) <= limit and key not in had_parts
                for key, value in records.items()
            ):  # the usual case: one message per record
                if len(cur.messages) + len(records) > size:
                    chunks.append(cur)
                    cur = _Chunk()
                messages, written = cur.messages, cur.records
                last = records.get(header)
                for key, value in records.items():
                    if key != header:
                        messages.append((prefix + key, value, None))  # type: ignore[arg-type]
                        written.append((unit, key, value))
                if last is not None:
                    messages.append((prefix + header, last, None))
                    written.append((unit, header, last))
                continue
            keys = [k for k in records if k != header]
            if header in records:
                keys.append(header)
            groups = []
            for key in keys:
                probe = _Chunk()
                groups.append((key, self._messages(key, records[key], probe), probe.parts))
            total = sum(len(msgs) for _, msgs, _ in groups)
            if cur.messages and len(cur.messages) + total > size:
                chunks.append(cur)
                cur = _Chunk()
            for key, msgs, parts in groups:
                if cur.messages and len(cur.messages) + len(msgs) > size:
                    chunks.append(cur)
                    cur = _Chunk()
                while len(msgs) > size:  # one value in more parts than a batch holds: several batches
                    cur.messages.extend(msgs[:size])
                    chunks.append(cur)
                    cur = _Chunk()
                    msgs = msgs[size:]
                cur.messages.extend(msgs)
                cur.records.append((unit, key, records[key]))
                cur.parts.update(parts)
        if cur.messages:
            chunks.append(cur)
        return chunks

    async def _send(self, chunk: _Chunk) -> None:
        """Publish one atomic batch and wait for its acknowledgement; `_WriteError` if refused."""
        nc = self.nc
        batch_id = f"{self._instance}.{next(self._batch_ids)}"
        messages = chunk.messages
        last = len(messages)
        for seq, (subject, payload, extra) in enumerate(messages, 1):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(seq)}
            if seq == 1 and self._fence:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(self._fence)
                headers["Nats-Expected-Last-Subject-Sequence-Subject"] = self._prefix + self._owner_key
            if extra:
                headers.update(extra)
            if seq < last:
                await nc.publish(subject, payload, headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            token = str(next(self._ack_ids))
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._acks[token] = fut
            try:
                await nc.publish(subject, payload, reply=f"{self._inbox}.{token}", headers=headers)
                try:
                    async with asyncio.timeout(self.ack_timeout):
                        data = await fut
                except TimeoutError:
                    raise _WriteError(f"no acknowledgement within {self.ack_timeout:g} s") from None
            finally:
                self._acks.pop(token, None)
            try:
                reply = json.loads(data)
            except ValueError:
                raise _WriteError(f"unexpected acknowledgement {data[:200]!r}") from None
            error = reply.get("error") if isinstance(reply, dict) else None
            if error:
                description = error.get("description", error) if isinstance(error, dict) else error
                raise _WriteError(f"JetStream refused the batch: {description}")

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox) + 1:]
        fut = self._acks.get(token)
        if fut is None or fut.done():
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "503":
            fut.set_exception(_WriteError(f"no JetStream stream answers for the bucket {self.bucket}"))
        elif status:
            fut.set_exception(_WriteError(f"status {status} {headers.get('Description', '')}".strip()))
        else:
            fut.set_result(msg.data)


class _LoadState:
    """Where reading the bucket is: the next consumer sequence expected, what went wrong."""

    __slots__ = ("created", "gap", "next", "progress", "received")

    def __init__(self) -> None:
        self.next = 1
        self.received = 0
        self.gap = ""
        self.progress = time.monotonic()
        self.created: dict[str, int] = {}  # escaped execution id -> stream sequence of its `.n` key


class _LoadGap(Exception):
    """The consumer reading the bucket skipped a message."""


def _evolve(config: api.StreamConfig, **changes: Any) -> api.StreamConfig:
    return config.evolve(**changes)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        text = exc.description
    return text or type(exc).__name__
