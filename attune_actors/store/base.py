"""The store: where supervisors' snapshots, finished executions and run-time definitions live.

A snapshot is a set of records per execution: one header (status, vars, timers, joins, ...), one
record per task run and one per with_items item. Supervisors `save` only what changed in a step, so
the cost of a snapshot does not grow with the length of the workflow; implementations may buffer
and group-commit, and `flush` makes everything saved so far durable.

The stored form (every store writes the same bytes, msgpack-encoded by `attune_actors.codec`):

- A task run record is a list in the order of `RUN_FIELDS` (`TaskRun.record`). Records written
  before SQLite schema 4 / NATS store format 2 are dicts with the same keys; both read back as
  dicts (`run_fields`), so readers see one shape.
- The header carries the records of the execution's *active* runs (not ended) under `ACTIVE_RUNS`,
  up to a few small ones: a run's record is then written once, in a run row, when it ends, instead
  of once when it starts and again when it ends (a chain's step writes the header and one run row,
  not two). A run listed there is read from there, whatever its row says (its row, if any, is an
  older state); readers get the header without that key and the runs beside the others.
- An item record is a list (`Items.record`).
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from attune_actors.codec import decode, encode
from attune_actors.statuses import TERMINAL

ItemRecord = tuple[str, int, list[Any]]  # (run_id, item index, ItemRun record)
# A run's row as the stores write it: (run_id, seq, task, status, encoded record).
RunRow = tuple[str, int, str, str, bytes]
ItemRow = tuple[tuple[str, int], bytes]  # ((run_id, item index), encoded record)
# The header's fields the stores list executions by: (status, started_at, ended_at, parent_id, ref).
Listing = tuple[str, float | None, float | None, str | None, str | None]

#: A task run record's fields, in the order `TaskRun.record` lists them (new ones go at the end).
RUN_FIELDS = (
    "id", "seq", "task", "status", "result", "error", "attempts", "started_at", "ended_at",
    "group", "input", "deadline", "inquiry_id", "child_id", "item_count", "next_item",
    "pending_subs", "handled", "fired",
)
#: The header key holding the active runs' records.
ACTIVE_RUNS = "active_runs"
_ACTIVE_KEY = encode(ACTIVE_RUNS)


def run_fields(rec: list[Any] | dict[str, Any]) -> dict[str, Any]:
    """A stored run record as a dict keyed by `RUN_FIELDS` (older records are dicts already)."""
    if isinstance(rec, dict):
        return rec
    return dict(zip(RUN_FIELDS, rec, strict=False))


def run_record(fields: dict[str, Any]) -> list[Any]:
    """A run record given as a dict (`run_fields`' shape) in its stored form; missing keys: None."""
    get = fields.get
    return [get(name) for name in RUN_FIELDS]


def run_row(rec: list[Any]) -> RunRow:
    """A run record's row: its key columns and its encoded record."""
    return rec[0], rec[1] or 0, rec[2] or "", rec[3] or "", encode(rec)


class HeaderBase:
    """The fields of an execution's header that no step changes, encoded once per execution.

    `record` makes the stored header of a step from it, the step's other fields and the encoded
    records of the active runs: msgpack writes a map as a count and then its entries, so entries
    encoded apart concatenate into the same record one `encode` of the whole header gives (the
    fields in another order). The runtime builds one per execution (id, definition, parameters as
    shown, sealed parameters, `system`, ...); `parent_id` and `ref` are kept for the listings.
    """

    __slots__ = ("count", "entries", "parent_id", "ref")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.count = len(fields)
        self.entries = _entries(encode(fields))
        self.parent_id: str | None = fields.get("parent_id")
        self.ref: str | None = fields.get("ref")

    def record(self, step: dict[str, Any], active: Collection[bytes] = ()) -> bytes:
        """The header record of this base, `step`'s fields (no key in both) and `active`, the
        encoded records of the active runs it carries (`ACTIVE_RUNS`)."""
        count = self.count + len(step)
        if not active:
            return b"".join((_map_start(count), self.entries, _entries(encode(step))))
        n = len(active)
        runs = _ARRAY_STARTS[n] if n < 16 else b"\xdc" + n.to_bytes(2, "big")
        return b"".join(
            (_map_start(count + 1), self.entries, _entries(encode(step)), _ACTIVE_KEY, runs, *active)
        )

    def listing(self, step: dict[str, Any]) -> Listing:
        return step["status"], step["started_at"], step.get("ended_at"), self.parent_id, self.ref


def encode_step(
    header: dict[str, Any], runs: Iterable[dict[str, Any]], items: Iterable[ItemRecord],
    base: HeaderBase | None = None,
) -> tuple[bytes, Listing, list[RunRow], list[ItemRow]]:
    """`Store.save`'s records in the stored form `Store.save_encoded` takes: runs as rows."""
    if base is None:
        blob = encode(header)
        listing: Listing = (
            header["status"], header["started_at"], header.get("ended_at"),
            header["parent_id"], header.get("ref"),
        )
    else:
        blob, listing = base.record(header), base.listing(header)
    return (
        blob,
        listing,
        [run_row(run_record(rec)) for rec in runs],
        [((run_id, idx), encode(rec)) for run_id, idx, rec in items],
    )


_MAP_STARTS = [(0x80 | n).to_bytes(1, "big") for n in range(16)] + [
    b"\xde" + n.to_bytes(2, "big") for n in range(16, 64)
]
_ARRAY_STARTS = [(0x90 | n).to_bytes(1, "big") for n in range(16)]


def _map_start(count: int) -> bytes:
    """msgpack's start of a map of `count` entries."""
    if count < 64:
        return _MAP_STARTS[count]
    return b"\xde" + count.to_bytes(2, "big") if count < 0x10000 else b"\xdf" + count.to_bytes(4, "big")


def _entries(packed_map: bytes) -> bytes:
    """The entries of an encoded map, without the count before them."""
    first = packed_map[0]
    return packed_map[1:] if first < 0x90 else packed_map[3:] if first == 0xDE else packed_map[5:]


def decode_header(blob: bytes) -> tuple[dict[str, Any], list[Any]]:
    """A stored header, without the active runs' records it carries, and those records."""
    header: dict[str, Any] = decode(blob)
    return header, header.pop(ACTIVE_RUNS, None) or []


def decode_snapshot(
    header: bytes, runs: Iterable[bytes], items: Iterable[tuple[tuple[str, int], bytes]]
) -> Snapshot:
    """An execution's stored records as the `Snapshot` readers get (runs as dicts, by id)."""
    fields, active = decode_header(header)
    by_id: dict[str, dict[str, Any]] = {}
    for blob in runs:
        rec = run_fields(decode(blob))
        by_id[rec["id"]] = rec
    for stored in active:  # the header's records are the runs' latest
        rec = run_fields(stored)
        by_id[rec["id"]] = rec
    return Snapshot(fields, by_id, {k: decode(v) for k, v in items})


@dataclass
class Snapshot:
    """Everything stored about one execution: its header and its runs as dicts (`RUN_FIELDS`)."""

    header: dict[str, Any]
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[tuple[str, int], list[Any]] = field(default_factory=dict)

    def item_records(self) -> list[ItemRecord]:
        return [(run_id, idx, rec) for (run_id, idx), rec in self.items.items()]

if TYPE_CHECKING:
    from attune_actors.observability.metrics import EngineMetrics


class Store(abc.ABC):
    """Storage of execution snapshots and workflow definitions."""

    # Set by the engine before `open` (`instrument`): group commits report their time and size.
    metrics: EngineMetrics | None = None

    def instrument(self, metrics: EngineMetrics) -> None:
        """Report commits to `metrics` (stores that commit in batches; others ignore it)."""
        self.metrics = metrics

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Create or migrate what the store needs."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources."""

    def save(
        self,
        execution_id: str,
        header: dict[str, Any],
        runs: list[dict[str, Any]],
        items: list[ItemRecord],
        base: HeaderBase | None = None,
    ) -> None:
        """Record a step's changes. May be buffered until `flush`.

        `header` is the whole header record, or with `base`, the fields `base` does not hold;
        `runs` are run records as dicts (`run_fields`' shape), written as rows.
        """
        self.save_encoded(execution_id, *encode_step(header, runs, items, base))

    @abc.abstractmethod
    def save_encoded(
        self,
        execution_id: str,
        header: bytes,
        listing: Listing,
        runs: list[RunRow],
        items: list[ItemRow],
    ) -> None:
        """`save` with the records in their stored form (what `Runtime.save_step` makes).

        `header` is the encoded header record (with the active runs it carries); `listing`
        repeats some of its fields; a row of `runs` or `items` replaces the stored one.
        """

    async def flush(self) -> None:  # noqa: B027 - optional hook
        """Make everything saved so far durable."""

    @abc.abstractmethod
    def load(self, execution_id: str) -> Snapshot | None:
        """The stored snapshot of one execution, or None."""

    @abc.abstractmethod
    def headers(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        parent_id: str | None = None,
        roots_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Execution headers, newest first, optionally filtered."""

    @abc.abstractmethod
    def unfinished(self) -> list[str]:
        """Ids of executions whose snapshot is not terminal (to resume after a restart)."""

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` execution ids that start with `prefix` (ids may be abbreviated)."""
        return [h["id"] for h in self.headers() if h["id"].startswith(prefix)][:limit]

    # The definition each execution started with (kept by content digest, shared by executions).
    @abc.abstractmethod
    def put_source(self, digest: str, pack: str, source: str) -> None: ...

    @abc.abstractmethod
    def get_source(self, digest: str) -> tuple[str, str] | None:
        """(pack, source) stored under `digest`."""

    # Workflow definitions put at run time.
    @abc.abstractmethod
    def put_definition(self, ref: str, pack: str, source: str) -> None: ...

    @abc.abstractmethod
    def delete_definition(self, ref: str) -> bool: ...

    @abc.abstractmethod
    def definitions(self) -> list[tuple[str, str, str]]:
        """Every stored (ref, pack, source)."""


def resolve_id(store: Store, prefix: str) -> str:
    """The one execution id starting with `prefix`; NotFoundError, or ParameterError if several do."""
    from attune_actors.errors import NotFoundError, ParameterError

    prefix = prefix.strip()
    if not prefix:
        raise ParameterError("an execution id is needed")
    found = store.ids_with_prefix(prefix, 2)
    if prefix in found or len(found) == 1:
        return prefix if prefix in found else found[0]
    if not found:
        raise NotFoundError(f"no execution '{prefix}'")
    raise ParameterError(f"'{prefix}' names more than one execution; give more of its id")


class EncodedSnapshot:
    """One execution's records, encoded (bytes are invisible to the garbage collector).

    `status`, `parent_id` and `started_at` are copied out of the header, so listing executions
    does not decode every header.
    """

    __slots__ = ("header", "items", "parent_id", "runs", "started_at", "status")

    def __init__(
        self,
        header: bytes = b"",
        status: str = "",
        parent_id: str | None = None,
        started_at: float = 0.0,
        runs: dict[str, bytes] | None = None,
        items: dict[tuple[str, int], bytes] | None = None,
    ) -> None:
        self.header = header
        self.status = status
        self.parent_id = parent_id
        self.started_at = started_at
        self.runs: dict[str, bytes] = {} if runs is None else runs
        self.items: dict[tuple[str, int], bytes] = {} if items is None else items


class MemoryStore(Store):
    """Keeps encoded snapshots in dicts: fast, and gone when the process ends.

    Besides `Store`, it offers its encoded records (`encoded`, `put_encoded`) to a store that keeps
    a MemoryStore as its in-memory mirror and writes the same bytes elsewhere.
    """

    def __init__(self) -> None:
        self._snapshots: dict[str, EncodedSnapshot] = {}  # in the order of first save
        self._definitions: dict[str, tuple[str, str]] = {}
        self._sources: dict[str, tuple[str, str]] = {}

    def count(self) -> int:
        """The number of executions stored."""
        return len(self._snapshots)

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._snapshots

    def encoded(self, execution_id: str) -> EncodedSnapshot | None:
        """An execution's records as stored (shared, not copied: do not change them)."""
        return self._snapshots.get(execution_id)

    def put_encoded(self, execution_id: str, snap: EncodedSnapshot) -> None:
        """Store an execution's encoded records as they are (after executions put before it)."""
        self._snapshots[execution_id] = snap

    def put_source(self, digest: str, pack: str, source: str) -> None:
        self._sources[digest] = (pack, source)

    def get_source(self, digest: str) -> tuple[str, str] | None:
        return self._sources.get(digest)

    def save_encoded(
        self,
        execution_id: str,
        header: bytes,
        listing: Listing,
        runs: list[RunRow],
        items: list[ItemRow],
    ) -> None:
        snap = self._snapshots.get(execution_id)
        if snap is None:
            snap = self._snapshots[execution_id] = EncodedSnapshot()
        status, started_at, _, parent_id, _ = listing
        snap.header, snap.status, snap.parent_id = header, status, parent_id
        snap.started_at = started_at or 0.0
        for row in runs:
            snap.runs[row[0]] = row[4]
        if items:
            snap.items.update(items)

    def load(self, execution_id: str) -> Snapshot | None:
        snap = self._snapshots.get(execution_id)
        if snap is None:
            return None
        return decode_snapshot(snap.header, snap.runs.values(), snap.items.items())

    def headers(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        parent_id: str | None = None,
        roots_only: bool = False,
    ) -> list[dict[str, Any]]:
        found = [
            s
            for s in self._snapshots.values()
            if (status is None or s.status == status)
            and (parent_id is None or s.parent_id == parent_id)
            and (not roots_only or s.parent_id is None)
        ]
        found.sort(key=lambda s: s.started_at, reverse=True)
        if limit is not None:
            found = found[:limit]
        return [decode_header(s.header)[0] for s in found]

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        return [k for k in self._snapshots if k.startswith(prefix)][:limit]

    def unfinished(self) -> list[str]:
        return [k for k, s in self._snapshots.items() if s.status not in TERMINAL]

    def put_definition(self, ref: str, pack: str, source: str) -> None:
        self._definitions[ref] = (pack, source)

    def delete_definition(self, ref: str) -> bool:
        return self._definitions.pop(ref, None) is not None

    def definitions(self) -> list[tuple[str, str, str]]:
        return [(ref, pack, source) for ref, (pack, source) in sorted(self._definitions.items())]
