"""The rules ledger: enforcement records and per-rule state, kept where the engine keeps executions.

An enforcement record says what one rule did with one trigger instance: whether its criteria
matched, the execution it started (its id is chosen before the action starts) or why it started
none. Its `id` is derived from (trigger instance id, rule), and `claim` writes records
*create-if-absent*: a redelivered instance finds its records already there, so it never enforces
twice (the rules service then only makes sure the execution named in the record exists).

Implementations: `MemoryLedger` (the memory store), `SQLiteLedger` (tables `rule_enforcement` and
`rule_state` of the data dir's `attune.db`, migration 2; claims from the loop are group-committed
by one writer thread, and the unique key makes a claim atomic across processes sharing the file)
and `attune_actors.rules.kv_ledger.KVLedger` (a JetStream KV bucket, for the `nats` store).
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from attune_actors.errors import StoreError
from attune_actors.store import migrations
from attune_actors.store.wal import enable_wal


def enforcement_id(trigger_instance_id: str, rule: str) -> str:
    """The id of the record of `rule` for one instance; also the id of the execution it starts."""
    return hashlib.blake2b(f"{trigger_instance_id}\n{rule}".encode(), digest_size=16).hexdigest()


class Enforcement(NamedTuple):
    """What one rule did with one trigger instance (SPEC section 10). A tuple: one is built per rule
    per instance, and a frozen dataclass costs several times more to build."""

    id: str
    rule: str
    trigger_instance_id: str
    trigger_type: str
    matched: bool
    execution_id: str | None = None
    error: str | None = None
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        from attune_actors.engine.state import iso

        return {**self._asdict(), "created_at": iso(self.created_at)}


class RuleLedger(abc.ABC):
    """Storage of enforcement records and rule state."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Create what the ledger needs."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    @abc.abstractmethod
    async def claim(self, records: Sequence[Enforcement]) -> list[tuple[Enforcement, bool]]:
        """Write each record unless one with its id exists: `(stored record, written now)` per record."""

    @abc.abstractmethod
    async def update(self, record: Enforcement) -> None:
        """Replace a record (its execution id and error, after the action was started or refused)."""

    @abc.abstractmethod
    async def list(
        self, *, rule: str | None = None, trigger_instance_id: str | None = None, limit: int = 50
    ) -> list[Enforcement]:
        """Records, newest first."""

    @abc.abstractmethod
    async def get_state(self, rule: str, key: str) -> Any:
        """A rule's stored state value, or None."""

    @abc.abstractmethod
    async def put_state(self, rule: str, key: str, value: Any) -> None:
        """Store a rule's state value (None deletes it); durable when this returns."""

    async def states(self, rules: Sequence[str], key: str) -> dict[str, Any]:
        """`key`'s stored value for each of `rules` that has one."""
        found = {}
        for rule in rules:
            value = await self.get_state(rule, key)
            if value is not None:
                found[rule] = value
        return found


class MemoryLedger(RuleLedger):
    """Records in a dict: gone with the process."""

    def __init__(self) -> None:
        self._records: dict[str, Enforcement] = {}
        self._state: dict[tuple[str, str], Any] = {}

    async def claim(self, records: Sequence[Enforcement]) -> list[tuple[Enforcement, bool]]:
        out = []
        for rec in records:
            existing = self._records.get(rec.id)
            if existing is None:
                self._records[rec.id] = rec
            out.append((existing or rec, existing is None))
        return out

    async def update(self, record: Enforcement) -> None:
        self._records[record.id] = record

    async def list(
        self, *, rule: str | None = None, trigger_instance_id: str | None = None, limit: int = 50
    ) -> list[Enforcement]:
        found = [
            r
            for r in reversed(self._records.values())
            if (rule is None or r.rule == rule)
            and (trigger_instance_id is None or r.trigger_instance_id == trigger_instance_id)
        ]
        return found[:limit]

    async def get_state(self, rule: str, key: str) -> Any:
        return self._state.get((rule, key))

    async def put_state(self, rule: str, key: str, value: Any) -> None:
        if value is None:
            self._state.pop((rule, key), None)
        else:
            self._state[(rule, key)] = value


_COLUMNS = "id, rule, trigger_instance_id, trigger_type, matched, execution_id, error, created_at"


def _row(rec: Enforcement) -> tuple[Any, ...]:
    return (
        rec.id,
        rec.rule,
        rec.trigger_instance_id,
        rec.trigger_type,
        int(rec.matched),
        rec.execution_id,
        rec.error,
        rec.created_at,
    )


def _record(row: Sequence[Any]) -> Enforcement:
    return Enforcement(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7])


class SQLiteLedger(RuleLedger):
    """Records in `attune.db` (migration 2). Writes from the loop are committed together by one thread:
    every claim and update made while a commit runs goes into the next one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the connection is used by the writer thread and readers
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="attune-rules-ledger")
        self._pending: list[tuple[str, Any, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            enable_wal(conn, 10)
            conn.execute("PRAGMA synchronous=FULL")
            migrations.migrate(conn, self.path)
            return conn

        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._pool, connect)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the rules ledger in {self.path}: {exc}") from None

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        self._pool.shutdown(wait=False)

    # -- writes: queued, then committed in one transaction per batch ---------------------------

    def _submit(self, kind: str, payload: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((kind, payload, fut))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_batches(), name="attune-rules-ledger")
        return fut

    async def _write_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await loop.run_in_executor(self._pool, self._commit, batch)
            except Exception as exc:
                error = StoreError(f"rules ledger {self.path}: {exc}")
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
                continue
            for (_, _, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    def _commit(self, batch: list[tuple[str, Any, asyncio.Future[Any]]]) -> list[Any]:
        conn = self._connection()
        results: list[Any] = []
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for kind, payload, _ in batch:
                    results.append(self._apply(conn, kind, payload))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return results

    @staticmethod
    def _apply(conn: sqlite3.Connection, kind: str, payload: Any) -> Any:
        if kind == "claim":
            out = []
            for rec in payload:
                cur = conn.execute(
                    f"INSERT INTO rule_enforcement ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING",
                    _row(rec),
                )
                if cur.rowcount == 1:
                    out.append((rec, True))
                else:
                    row = conn.execute(
                        f"SELECT {_COLUMNS} FROM rule_enforcement WHERE id = ?", (rec.id,)
                    ).fetchone()
                    out.append((_record(row), False))
            return out
        if kind == "update":
            rec = payload
            conn.execute(
                "UPDATE rule_enforcement SET matched = ?, execution_id = ?, error = ? WHERE id = ?",
                (int(rec.matched), rec.execution_id, rec.error, rec.id),
            )
            return None
        rule, key, value = payload
        if value is None:
            conn.execute("DELETE FROM rule_state WHERE rule = ? AND key = ?", (rule, key))
        else:
            conn.execute(
                "INSERT INTO rule_state (rule, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (rule, key) DO UPDATE SET value = excluded.value",
                (rule, key, json.dumps(value)),
            )
        return None

    async def claim(self, records: Sequence[Enforcement]) -> list[tuple[Enforcement, bool]]:
        if not records:
            return []
        result: list[tuple[Enforcement, bool]] = await self._submit("claim", list(records))
        return result

    async def update(self, record: Enforcement) -> None:
        await self._submit("update", record)

    async def put_state(self, rule: str, key: str, value: Any) -> None:
        await self._submit("state", (rule, key, value))

    # -- reads ----------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the rules ledger {self.path} is closed")
        return self._conn

    async def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        def query() -> list[Any]:
            with self._lock:
                return self._connection().execute(sql, args).fetchall()

        return await asyncio.get_running_loop().run_in_executor(None, query)

    async def list(
        self, *, rule: str | None = None, trigger_instance_id: str | None = None, limit: int = 50
    ) -> list[Enforcement]:
        where, args = [], []
        if rule is not None:
            where.append("rule = ?")
            args.append(rule)
        if trigger_instance_id is not None:
            where.append("trigger_instance_id = ?")
            args.append(trigger_instance_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM rule_enforcement {clause} ORDER BY num DESC LIMIT ?", (*args, limit)
        )
        return [_record(r) for r in rows]

    async def get_state(self, rule: str, key: str) -> Any:
        rows = await self._read("SELECT value FROM rule_state WHERE rule = ? AND key = ?", (rule, key))
        return json.loads(rows[0][0]) if rows else None

    async def states(self, rules: Sequence[str], key: str) -> dict[str, Any]:
        wanted = set(rules)
        rows = await self._read("SELECT rule, value FROM rule_state WHERE key = ?", (key,))
        return {rule: json.loads(value) for rule, value in rows if rule in wanted}


def new_record(
    instance: dict[str, Any],
    rule: str,
    matched: bool,
    *,
    error: str | None = None,
    start: bool = False,
    now: float | None = None,
) -> Enforcement:
    """The record of `rule` for `instance`; `start` names the execution to start (the record's id)."""
    eid = enforcement_id(instance["id"], rule)
    return Enforcement(
        eid,
        rule,
        instance["id"],
        instance["type"],
        matched,
        eid if start else None,
        error,
        time.time() if now is None else now,
    )


__all__ = [
    "Enforcement",
    "MemoryLedger",
    "RuleLedger",
    "SQLiteLedger",
    "enforcement_id",
    "new_record",
]
