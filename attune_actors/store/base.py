"""The store: where supervisors' snapshots, finished executions and run-time definitions live.

A snapshot is a set of records per execution: one header (status, vars, timers, joins, ...), one
record per task run and one per with_items item. Supervisors `save` only what changed in a step, so
the cost of a snapshot does not grow with the length of the workflow; implementations may buffer
and group-commit, and `flush` makes everything saved so far durable.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from attune_actors.codec import decode, encode
from attune_actors.statuses import TERMINAL

ItemRecord = tuple[str, int, list[Any]]  # (run_id, item index, ItemRun record)


class HeaderBase:
    """The fields of an execution's header that no step changes, encoded once per execution.

    `Store.save` takes it beside the step's other fields and stores the two as one header record:
    msgpack writes a map as a count and then its entries, so entries encoded apart concatenate
    into the same record one `encode` of the whole header gives (the fields in another order).
    The runtime builds one per execution (id, definition, parameters as shown, sealed
    parameters, `system`, ...); `parent_id` and `ref` are kept for the stores' listing columns.
    """

    __slots__ = ("count", "entries", "parent_id", "ref")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.count = len(fields)
        self.entries = _entries(encode(fields))
        self.parent_id: str | None = fields.get("parent_id")
        self.ref: str | None = fields.get("ref")


def encode_header(header: dict[str, Any], base: HeaderBase | None) -> bytes:
    """The stored header record: `header`, or `base`'s fields and `header`'s (no key in both)."""
    if base is None:
        return encode(header)
    count = base.count + len(header)
    start = b"\xde" + count.to_bytes(2, "big") if count < 0x10000 else b"\xdf" + count.to_bytes(4, "big")
    return start + base.entries + _entries(encode(header))


def header_listing(header: dict[str, Any], base: HeaderBase | None) -> tuple[str | None, str | None]:
    """(parent_id, ref) of a header given to `Store.save`."""
    if base is None:
        return header["parent_id"], header.get("ref")
    return base.parent_id, base.ref


def _entries(packed_map: bytes) -> bytes:
    """The entries of an encoded map, without the count before them."""
    first = packed_map[0]
    if 0x80 <= first <= 0x8F:  # fixmap: the count is in the type byte
        return packed_map[1:]
    return packed_map[3:] if first == 0xDE else packed_map[5:]  # map 16, map 32


@dataclass
class Snapshot:
    """Everything stored about one execution."""

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

    @abc.abstractmethod
    def save(
        self,
        execution_id: str,
        header: dict[str, Any],
        runs: list[dict[str, Any]],
        items: list[ItemRecord],
        base: HeaderBase | None = None,
    ) -> None:
        """Record a step's changes. May be buffered until `flush`.

        `header` is the whole header record, or with `base`, the fields `base` does not hold
        (`encode_header` makes the record of both).
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

    def save(
        self,
        execution_id: str,
        header: dict[str, Any],
        runs: list[dict[str, Any]],
        items: list[ItemRecord],
        base: HeaderBase | None = None,
    ) -> None:
        snap = self._snapshots.get(execution_id)
        if snap is None:
            snap = self._snapshots[execution_id] = EncodedSnapshot()
        snap.header = encode_header(header, base)
        snap.status = header["status"]
        snap.parent_id = header_listing(header, base)[0]
        snap.started_at = header["started_at"] or 0.0
        for rec in runs:
            snap.runs[rec["id"]] = encode(rec)
        for run_id, idx, item in items:
            snap.items[(run_id, idx)] = encode(item)

    def load(self, execution_id: str) -> Snapshot | None:
        snap = self._snapshots.get(execution_id)
        if snap is None:
            return None
        return Snapshot(
            decode(snap.header),
            {k: decode(v) for k, v in snap.runs.items()},
            {k: decode(v) for k, v in snap.items.items()},
        )

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
        return [decode(s.header) for s in found]

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
