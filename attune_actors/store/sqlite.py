"""The durable store: snapshots and definitions in SQLite, group-committed by one writer thread.

`SQLiteStore` keeps what `Store` describes in the data directory's `attune.db` (WAL mode; the
key-value datastore keeps its `kv` table in the same file). Threads and what they touch:

- The caller's thread (the event loop's, normally) calls `save`, `put_*` and `delete_definition`.
  They only encode the records and put them in the *open batch*, an in-memory buffer where a later
  save of the same row (execution header, task run, with_items item, definition) replaces an earlier
  one. The first write of a loop turn schedules a callback for the end of the turn that asks for a
  commit; without a running loop, each write asks for one at once.
- One writer thread, owned by the store, commits: when asked, it takes the whole open batch (a fresh
  one opens for the next writes) and writes it in one transaction. While it waits for the disk, the
  loop goes on filling the next batch, so a commit carries every turn since the previous one and
  the number of fsyncs per second, not of saves, is what the disk bounds.
  Commits start at most every `COMMIT_INTERVAL` (2 ms) unless `flush()` asks: a lone busy
  execution would otherwise pay a commit every few steps. A write inside that interval leaves an
  idle writer asleep and sets a timer on the loop for the interval's end, which wakes it.
- Reads (`load`, `headers`, `unfinished`, `definitions`, `get_source`) run on the caller's thread:
  first the batch being committed and the open batch, then SQLite through a reader connection of
  their own (WAL lets it read while the writer writes). A batch leaves memory only once committed,
  so a read never goes back in time.

Durability: what `flush()` returned for is committed (with `synchronous="FULL"`, on disk; with
`"NORMAL"`, safe from a process crash but the last commits may be lost to a power cut). A crash
loses the saves not yet committed: those since the last commit started (at most
`COMMIT_INTERVAL` plus the current turn) and those of the commit in progress, a few milliseconds'
worth (more when saves outpace the disk: the open batch then grows until the writer
catches up). The database itself stays valid, and each save is whole or absent, since a batch is
one SQLite transaction.

Failures: when a commit fails (disk full, I/O error, locked for longer than `BUSY_TIMEOUT`), it is
rolled back, logged, and its records go back in front of the open batch, so nothing is dropped and
reads still see them; every later `save` and `flush` raises `StoreError` until a retry (with
backoff, or at once on `flush`) succeeds. A file that is not a database, or that a newer schema
wrote, is refused when the store opens, with a `StoreError` naming it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from attune_actors.errors import StoreError
from attune_actors.statuses import TERMINAL
from attune_actors.store import migrations
from attune_actors.store.base import (
    ItemRow,
    Listing,
    RunRow,
    Snapshot,
    Store,
    decode_header,
    decode_snapshot,
)
from attune_actors.store.groupcommit import Backoff, CommitWaiters
from attune_actors.store.wal import enable_wal

__all__ = ["BUSY_TIMEOUT", "COMMIT_INTERVAL", "SYNCHRONOUS_MODES", "SQLiteStore", "StoreStats"]

log = logging.getLogger(__name__)

BUSY_TIMEOUT = 10.0  # seconds a statement waits for another connection's write lock
# Commits not asked for by flush() start at most this often. A lone chain of tasks would otherwise
# commit every few steps, and a commit costs both threads far more CPU (fsync, wake-ups) than the
# rows in it; a crash may lose this much more work, which recovery runs again.
COMMIT_INTERVAL = 0.002  # seconds
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
_RETRY_FIRST = 0.05  # seconds before retrying a failed commit; doubled each failure...
_RETRY_MAX = 2.0  # ...up to this
_WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes of WAL kept after a checkpoint
_NUMS_KEPT = 4096  # executions whose num the writer remembers (the busy ones; others: read again)


def _bind_as_is(kind: type, identity: Callable[[Any], Any]) -> None:
    """Have sqlite3 bind values of `kind` as they are, found in its adapter registry at once.

    sqlite3 binds int, float, str and bytearray directly; any other value (bytes, None) first goes
    through its adaptation protocol, whose failed `__adapt__` lookup formats and discards an
    AttributeError: ~200 ns a value, with the interpreter lock held, up to three per snapshot row.
    An identity adapter binds the same value, so other users of sqlite3 see no change; one that
    someone else registered is left alone.
    """
    if (kind, sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(kind, identity)


_bind_as_is(bytes, bytes.__bytes__)  # b.__bytes__() is b itself (a method, cheaper than bytes(b))
_bind_as_is(type(None), {}.get)  # {}.get(None) is None: a builtin, so no Python frame per value

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters since the store opened: what callers asked for and what reached the file."""

    saves: int  # save() calls
    commits: int  # transactions committed by the writer
    rows_written: int  # rows upserted or deleted by those commits (after coalescing)
    failed_commits: int  # transactions that failed and were rolled back (their rows kept)


class _Exec:
    """One execution's pending rows: the latest header and the latest record of each run/item."""

    __slots__ = ("header", "items", "listed", "listing", "runs")

    def __init__(self) -> None:
        self.header = b""
        self.listing: Listing = ("", None, None, None, None)
        self.runs: dict[str, RunRow] = {}
        self.items: dict[tuple[str, int], bytes] = {}
        # Whether the listing columns may differ from the stored row: if not, the commit updates
        # the header alone, and SQLite leaves the execution's three indexes untouched.
        self.listed = False

    def under(self, newer: _Exec) -> _Exec:
        """`newer` with the runs and items only this older one has (newer rows win)."""
        merged = _Exec()
        merged.header, merged.listing = newer.header, newer.listing
        merged.listed = self.listed or newer.listed
        merged.runs = {**self.runs, **newer.runs}
        merged.items = {**self.items, **newer.items}
        return merged


class _Batch:
    """The rows written since the previous commit (the open batch), or in one commit."""

    __slots__ = ("definitions", "execs", "gen", "sources")

    def __init__(self, gen: int) -> None:
        self.gen = gen  # batches are numbered in commit order
        self.execs: dict[str, _Exec] = {}
        self.definitions: dict[str, tuple[str, str] | None] = {}  # None: deleted
        self.sources: dict[str, tuple[str, str]] = {}

    def empty(self) -> bool:
        return not (self.execs or self.definitions or self.sources)

    def rows(self) -> int:
        return (
            len(self.definitions)
            + len(self.sources)
            + sum(1 + len(e.runs) + len(e.items) for e in self.execs.values())
        )

    def under(self, newer: _Batch) -> _Batch:
        """One batch holding this (older, failed) batch's rows overwritten by `newer`'s."""
        merged = _Batch(newer.gen)
        merged.execs = dict(self.execs)
        for eid, e in newer.execs.items():
            old = merged.execs.get(eid)
            merged.execs[eid] = e if old is None else old.under(e)
        merged.definitions = {**self.definitions, **newer.definitions}
        merged.sources = {**self.sources, **newer.sources}
        return merged


@dataclass(frozen=True, slots=True)
class _Upsert:
    """A write of many rows per statement: the writer releases the GIL once per statement.

    sqlite3 releases the GIL around every step, and a thread that wants it back waits up to the
    switch interval (5 ms) while the loop thread runs Python: one row per step makes the writer
    crawl beside a busy loop (measured: 316k rows/s alone, 10k beside a busy thread). Rows go in
    statements of `_MAX_ROWS` rows, the rest in power-of-two pieces, so a handful of statement
    shapes serve every batch: preparing a statement of 1,000 rows takes milliseconds, and sqlite3
    caches the prepared ones.
    """

    width: int  # parameters per row
    template: str  # the statement, with `{values}` where the rows' `(?, ...)` go

    @classmethod
    def insert(cls, table: str, columns: tuple[str, ...], conflict: str) -> _Upsert:
        return cls(len(columns), f"INSERT INTO {table} ({', '.join(columns)}) VALUES {{values}} {conflict}")

    def sql(self, rows: int) -> str:
        return _values_sql(self, rows)

    def run(self, conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
        params: list[Any] = []
        for row in rows:
            params += row
        self.run_flat(conn, params)

    def run_flat(self, conn: sqlite3.Connection, params: list[Any]) -> None:
        """`run` with the rows' parameters one after the other in one list."""
        width = self.width
        n, start = len(params) // width, 0
        while n:
            size = _MAX_ROWS if n >= _MAX_ROWS else 1 << (n.bit_length() - 1)  # else a power of two
            conn.execute(self.sql(size), params[start : start + size * width])
            start += size * width
            n -= size


@functools.cache
def _values_sql(upsert: _Upsert, rows: int) -> str:
    one = "(" + ", ".join("?" * upsert.width) + ")"
    return upsert.template.format(values=", ".join([one] * rows))


def _set(*columns: str) -> str:
    return "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in columns)


_MAX_ROWS = 1024  # 7 statements x 11 shapes (1024, then powers of two), all cached
# (id, *Listing, header): the order `_Exec.listing` holds them in.
_EXECUTION_COLUMNS = ("id", "status", "started_at", "ended_at", "parent_id", "ref", "header")
UPSERT_EXECUTION = _Upsert.insert(
    "workflow_execution",
    _EXECUTION_COLUMNS,
    "ON CONFLICT (id) " + _set("ref", "status", "parent_id", "started_at", "ended_at", "header"),
)
# Most steps change an execution's header but none of its listing columns (status, times, ...):
# the header alone, by `num` (the table's rowid) where the writer knows it, else by id.
UPDATE_HEADER = _Upsert(
    2,
    "UPDATE workflow_execution SET header = v.column2 FROM (VALUES {values}) AS v "
    "WHERE workflow_execution.num = v.column1",
)
UPSERT_HEADER = _Upsert.insert(
    "workflow_execution",
    _EXECUTION_COLUMNS,
    "ON CONFLICT (id) " + _set("header"),
)
# Runs and items are keyed by their execution's `num` (see migrations: index locality).
UPSERT_RUN = _Upsert.insert(
    "workflow_task_execution",
    ("execution_num", "run_id", "seq", "task", "status", "record"),
    "ON CONFLICT (execution_num, run_id) " + _set("seq", "task", "status", "record"),
)
UPSERT_ITEM = _Upsert.insert(
    "workflow_task_item",
    ("execution_num", "run_id", "idx", "record"),
    "ON CONFLICT (execution_num, run_id, idx) " + _set("record"),
)
UPSERT_DEFINITION = _Upsert.insert(
    "workflow_definition",
    ("ref", "pack", "source", "updated_at"),
    "ON CONFLICT (ref) " + _set("pack", "source", "updated_at"),
)
UPSERT_SOURCE = _Upsert.insert(
    "workflow_definition_version", ("digest", "pack", "source"),
    "ON CONFLICT (digest) " + _set("pack", "source"),
)
_IDS = "(SELECT value FROM json_each(?))"  # a JSON array of ids as a set, whatever its size


class SQLiteStore(Store):
    """Snapshots and definitions in the SQLite file `path`, group-committed; see the module doc.

    The file (and its folder) is created and migrated to the current schema when the store is
    built; `StoreError` is raised, naming the file, when it is not a database, is unreadable, or was
    written by a newer schema. `synchronous` is SQLite's `PRAGMA synchronous` for commits: `FULL`
    (default: a committed batch survives a power cut) or `NORMAL` (it survives a process crash).

    `save` and the other writes may be called from any thread, and are cheap (encode, then a dict
    update under a lock); reads may be called from any thread too. Call `close()` (or at least
    `flush()`) before the process exits: the writer is a daemon thread, and what it has not
    committed is lost with the process.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}"
            )
        self.path = Path(path)
        self.synchronous = mode
        self._terminal = tuple(sorted(TERMINAL))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Under _lock: the buffers and the writer's state.
        self._open = _Batch(1)
        self._inflight: _Batch | None = None  # being committed by the writer
        self._requested = False  # a commit was asked for
        self._idle = False  # the writer waits for a request (not pacing, retrying or committing)
        self._force = False  # flush(): commit now, even during a retry backoff
        self._turn_loop: asyncio.AbstractEventLoop | None = None  # end-of-turn callback pending
        self._failure: StoreError | None = None  # the last commit failed; cleared by a success
        self._backoff = Backoff(_RETRY_FIRST, _RETRY_MAX)
        self._paced_until = 0.0  # time.monotonic() before which only flush() starts a commit
        self._pace_timer: asyncio.TimerHandle | None = None  # wakes an idle writer after pacing
        self._waiters = CommitWaiters()
        self._closing = False
        self._final_attempted = False
        self._closed = False
        self._saves = self._commits = self._rows_written = self._failed_commits = 0
        # The listing columns last buffered for each execution not ended yet (under _lock).
        self._listings: dict[str, Listing] = {}
        # The writer's: `num` of the latest executions not ended, as committed (their rows' key).
        self._nums: dict[str, int] = {}

        self._read_lock = threading.Lock()
        self._wconn = _connect(self.path, mode)
        try:
            self._rconn = _connect(self.path, mode, reader=True)
        except BaseException:
            self._wconn.close()
            raise
        self._writer = threading.Thread(
            target=self._writer_main, daemon=True, name=f"attune-store-writer:{self.path.name}"
        )
        self._writer.start()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, synchronous={self.synchronous!r})"

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to do: the file is opened and migrated by the constructor."""
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")

    async def flush(self) -> None:
        """Return once everything saved before the call is committed.

        Commits at once (skipping a retry backoff); raises `StoreError` when that commit fails.
        """
        with self._cond:
            if self._closed:
                raise StoreError(f"the store {self.path} is closed")
            if self._failure is not None and not self._writer.is_alive():
                raise StoreError(self._failure.message)
            if not self._open.empty():
                target = self._open.gen
            elif self._inflight is not None:
                target = self._inflight.gen
            else:
                return
            fut = self._waiters.add(target)
            self._force = True
            # Saved in this loop turn: the turn's end asks for the commit. Every execute() of a
            # burst then rides in one commit (one fsync), not the first few in one of their own.
            if self._turn_loop is not asyncio.get_running_loop():
                self._requested = True
                self._cond.notify()
        await fut

    async def close(self) -> None:
        """Commit what is pending, stop the writer and close the file. Closing twice is harmless.

        Raises `StoreError` when pending changes could not be written (they are lost then).
        """
        if self._closed:
            return
        try:
            await self.flush()
        except StoreError:
            pass  # the writer makes one last attempt on closing; its outcome is what we report
        await asyncio.get_running_loop().run_in_executor(None, self.close_sync)

    def close_sync(self) -> None:
        """`close()` for code without an event loop: blocks until the last commit is done."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify()
        self._writer.join()
        with self._cond:
            self._closed = True
            lost = self._open.rows()
            failure = self._failure
        with self._read_lock:
            self._rconn.close()
        if lost and failure is not None:
            raise StoreError(
                f"closing the store {self.path}: {lost} pending rows could not be "
                f"written and are lost: {failure.message}"
            )

    def stats(self) -> StoreStats:
        """Counters since the store opened."""
        with self._lock:
            return StoreStats(self._saves, self._commits, self._rows_written, self._failed_commits)

    # -- writes: buffered ------------------------------------------------------------------------

    def save_encoded(
        self,
        execution_id: str,
        header: bytes,
        listing: Listing,
        runs: list[RunRow],
        items: list[ItemRow],
    ) -> None:
        """Buffer a step's records (latest wins per row); committed by the end of the loop turn.

        Raises `StoreError` when the store is closed, or when commits are failing: the records are
        buffered all the same (and retried), the error says durability is not keeping up.
        """
        with self._lock:
            if self._closing:
                raise StoreError(f"the store {self.path} is closed")
            e = self._open.execs.get(execution_id)
            if e is None:
                e = self._open.execs[execution_id] = _Exec()
            e.header, e.listing = header, listing
            listings = self._listings
            if listings.get(execution_id) != listing:
                e.listed = True
                if listing[0] in self._terminal:
                    listings.pop(execution_id, None)
                else:
                    listings[execution_id] = listing
            for row in runs:
                e.runs[row[0]] = row
            if items:
                e.items.update(items)
            self._saves += 1
            self._ask_commit_locked()
            failure = self._failure
        if failure is not None:
            _raise_failing(failure)

    def put_source(self, digest: str, pack: str, source: str) -> None:
        self._write(lambda b: b.sources.__setitem__(digest, (pack, source)))

    def put_definition(self, ref: str, pack: str, source: str) -> None:
        self._write(lambda b: b.definitions.__setitem__(ref, (pack, source)))

    def delete_definition(self, ref: str) -> bool:
        with self._lock:
            found = self._pending_definition_locked(ref)
        if found is None:
            existed = bool(
                self._read(
                    lambda c: c.execute(
                        "SELECT 1 FROM workflow_definition WHERE ref = ?", (ref,)
                    ).fetchall()
                )
            )
        else:
            existed = found[0] is not None
        if existed:
            self._write(lambda b: b.definitions.__setitem__(ref, None))
        return existed

    def _write(self, change: Callable[[_Batch], None]) -> None:
        with self._lock:
            if self._closing:
                raise StoreError(f"the store {self.path} is closed")
            change(self._open)
            self._ask_commit_locked()
            failure = self._failure
        if failure is not None:
            _raise_failing(failure)

    def _ask_commit_locked(self) -> None:
        """Ask for a commit at the end of this loop turn (at once when no loop runs here)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._requested = True
            self._cond.notify()
        elif self._turn_loop is not loop:
            self._turn_loop = loop
            loop.call_soon(self._end_of_turn)

    def _end_of_turn(self) -> None:
        with self._cond:
            self._turn_loop = None
            self._requested = True
            # Only a writer waiting for a request, or one a flush() waits for, is woken: one
            # pacing or retrying wakes by itself and sees the request. A needless wake costs the
            # loop thread a futex call, and the interpreter lock hand-overs to the writer while
            # the loop runs. So an idle writer still inside its pacing interval is woken when
            # the interval ends, by a timer on this loop, unless a flush() wakes it first.
            if self._force:
                self._cond.notify()
            elif self._idle:
                wait = self._paced_until - time.monotonic()
                if wait <= 0:
                    self._cond.notify()
                elif self._pace_timer is None:
                    loop = asyncio.get_running_loop()
                    self._pace_timer = loop.call_later(wait, self._pace_ended)

    def _pace_ended(self) -> None:
        with self._cond:
            self._pace_timer = None
            if self._idle and self._requested:
                self._cond.notify()

    def _wait_for_request(self) -> None:
        self._idle = True
        try:
            self._cond.wait()
        finally:
            self._idle = False

    # -- the writer thread -----------------------------------------------------------------------

    def _writer_main(self) -> None:
        try:
            while self._commit_next():
                pass
        except BaseException:  # a bug: do not leave flush() waiting forever
            log.exception("the writer of the store %s stopped", self.path)
            with self._cond:
                self._failure = StoreError(f"the writer of the store {self.path} stopped")
                self._waiters.resolve(None, self._failure)
        finally:
            self._wconn.close()

    def _commit_next(self) -> bool:
        """Wait for a commit to do and do it; False when the store closes."""
        with self._cond:
            while True:
                pending = not self._open.empty()
                if self._closing:
                    if not pending or self._final_attempted:
                        return False
                    self._final_attempted = True
                    break
                if not pending:
                    self._requested = False  # a write after this asks again
                    self._wait_for_request()
                elif self._requested or self._failure is not None:
                    if self._force:
                        break
                    if self._failure is not None:
                        wait = self._backoff.remaining()
                    else:
                        wait = self._paced_until - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                else:
                    self._wait_for_request()
            batch, self._open = self._open, _Batch(self._open.gen + 1)
            self._inflight = batch
            self._requested = self._force = False
            self._paced_until = time.monotonic() + COMMIT_INTERVAL
        began = time.perf_counter()
        error = self._commit(batch)
        written = batch.rows() if error is None else 0  # outside the lock: save() waits on it
        metrics = self.metrics
        if metrics is not None:
            if error is None:
                metrics.store_committed(time.perf_counter() - began, written)
            else:
                metrics.store_commit_failed()
        with self._cond:
            self._inflight = None
            if error is None:
                self._commits += 1
                self._rows_written += written
                if self._failure is not None:
                    log.warning("the store %s writes again (after %d failed commits)",
                                self.path, self._failed_commits)
                self._failure = None
                self._backoff.succeeded()
                self._waiters.resolve(batch.gen)
            else:
                self._failed_commits += 1
                if self._failure is None or self._failure.message != error.message:
                    log.error("%s; the changes are kept in memory and retried", error.message)
                self._failure = error
                self._open = batch.under(self._open)
                self._backoff.failed()
                self._waiters.resolve(None, error)
        return True

    def _commit(self, batch: _Batch) -> StoreError | None:
        """Write `batch` in one transaction; the error, rolled back, if it failed."""
        conn = self._wconn
        now = time.time()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if batch.sources:
                UPSERT_SOURCE.run(conn, ((d, p, s) for d, (p, s) in batch.sources.items()))
            if batch.definitions:
                defs = batch.definitions.items()
                UPSERT_DEFINITION.run(
                    conn, ((ref, v[0], v[1], now) for ref, v in defs if v is not None)
                )
                conn.executemany(
                    "DELETE FROM workflow_definition WHERE ref = ?",
                    ((ref,) for ref, v in defs if v is None),
                )
            execs = batch.execs.items()
            known = self._nums
            listed: list[Any] = []
            by_id: list[Any] = []
            by_num: list[Any] = []
            missing = []  # executions whose num to read: their runs' key, and for later headers
            for eid, e in execs:
                num = known.get(eid)
                if e.listed:
                    listed += (eid, *e.listing, e.header)
                elif num is None:
                    by_id += (eid, *e.listing, e.header)
                else:
                    by_num += (num, e.header)
                if num is None and (e.listed or e.runs or e.items):
                    missing.append(eid)
            UPSERT_EXECUTION.run_flat(conn, listed)
            UPSERT_HEADER.run_flat(conn, by_id)
            UPDATE_HEADER.run_flat(conn, by_num)
            # The nums of new executions, read after their rows were inserted (their runs' key).
            found = dict(
                conn.execute(
                    f"SELECT id, num FROM workflow_execution WHERE id IN {_IDS}", (json.dumps(missing),)
                ).fetchall()
            ) if missing else {}
            runs: list[Any] = []
            items: list[Any] = []
            for eid, e in execs:
                if e.runs or e.items:
                    num = known.get(eid) or found[eid]
                    for row in e.runs.values():
                        runs.append(num)
                        runs += row
                    for (rid, idx), rec in e.items.items():
                        items += (num, rid, idx, rec)
            UPSERT_RUN.run_flat(conn, runs)
            UPSERT_ITEM.run_flat(conn, items)
            conn.execute("COMMIT")
        except Exception as e:  # sqlite3.Error, OSError, a bad value: all mean "not written"
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the next BEGIN will say what is wrong
            return StoreError(f"cannot write to the store {self.path}: {e}")
        for eid, ex in execs:
            if ex.listing[0] in self._terminal:
                known.pop(eid, None)
            elif eid in found:
                if len(known) >= _NUMS_KEPT:
                    del known[next(iter(known))]  # the oldest: a parked execution, likely
                known[eid] = found[eid]
        return None

    # -- reads: pending batches, then the file ---------------------------------------------------

    def _layers_locked(self) -> list[_Batch]:
        """The batches not committed yet, oldest first."""
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        return [self._open] if self._inflight is None else [self._inflight, self._open]

    def _pending_execs_locked(self) -> dict[str, tuple[str, str | None, float | None, bytes]]:
        """id -> (status, parent_id, started_at, header) of each pending execution, by first save."""
        found: dict[str, tuple[str, str | None, float | None, bytes]] = {}
        for batch in self._layers_locked():
            for eid, e in batch.execs.items():
                status, started_at, _, parent_id, _ = e.listing
                found[eid] = (status, parent_id, started_at, e.header)
        return found

    def _pending_definition_locked(self, ref: str) -> tuple[tuple[str, str] | None] | None:
        """(the pending value of `ref`, None when deleted), or None when nothing is pending."""
        for batch in reversed(self._layers_locked()):
            if ref in batch.definitions:
                return (batch.definitions[ref],)
        return None

    def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        """`query` run in one read transaction of the reader connection."""
        with self._read_lock:
            if self._closed:
                raise StoreError(f"the store {self.path} is closed")
            conn = self._rconn
            try:
                conn.execute("BEGIN")
                try:
                    return query(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise StoreError(f"cannot read the store {self.path}: {e}") from None

    def load(self, execution_id: str) -> Snapshot | None:
        with self._lock:
            header: bytes | None = None
            runs: dict[str, bytes] = {}
            items: dict[tuple[str, int], bytes] = {}
            for batch in self._layers_locked():
                e = batch.execs.get(execution_id)
                if e is not None:
                    header = e.header
                    runs.update((rid, row[4]) for rid, row in e.runs.items())
                    items.update(e.items)

        def query(c: sqlite3.Connection) -> tuple[Any, list[Any], list[Any]]:
            row = c.execute(
                "SELECT num, header FROM workflow_execution WHERE id = ?", (execution_id,)
            ).fetchone()
            if row is None:
                return None, [], []
            num, blob = row
            return (
                blob,
                c.execute(
                    "SELECT run_id, record FROM workflow_task_execution "
                    "WHERE execution_num = ? ORDER BY seq",
                    (num,),
                ).fetchall(),
                c.execute(
                    "SELECT run_id, idx, record FROM workflow_task_item "
                    "WHERE execution_num = ? ORDER BY run_id, idx",
                    (num,),
                ).fetchall(),
            )

        stored_header, stored_runs, stored_items = self._read(query)
        if header is None:
            if stored_header is None:
                return None
            header = stored_header
        all_runs = {rid: rec for rid, rec in stored_runs}
        all_runs.update(runs)
        all_items = {(rid, idx): rec for rid, idx, rec in stored_items}
        all_items.update(items)
        return decode_snapshot(header, all_runs.values(), all_items.items())

    def headers(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        parent_id: str | None = None,
        roots_only: bool = False,
    ) -> list[dict[str, Any]]:
        with self._lock:
            pending = self._pending_execs_locked()
        hits = [
            (eid, started_at, blob)
            for eid, (st, parent, started_at, blob) in pending.items()
            if (status is None or st == status)
            and (parent_id is None or parent == parent_id)
            and (not roots_only or parent is None)
        ]
        where, params = ["1"], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if parent_id is not None:
            where.append("parent_id = ?")
            params.append(parent_id)
        if roots_only:
            where.append("parent_id IS NULL")
        if pending:
            where.append(f"id NOT IN {_IDS}")
            params.append(json.dumps(list(pending)))
        sql = (
            f"SELECT num, started_at, header FROM workflow_execution WHERE {' AND '.join(where)}"
            " ORDER BY started_at DESC, num LIMIT ?"
        )

        def query(c: sqlite3.Connection) -> tuple[list[Any], dict[str, int]]:
            rows = c.execute(sql, (*params, -1 if limit is None else limit)).fetchall()
            return rows, _nums(c, [h[0] for h in hits])

        rows, nums = self._read(query)
        if hits:
            first_new = 1 << 62  # executions not in the file yet come last among equals
            rows.extend(
                (nums.get(eid, first_new + i), started_at, blob)
                for i, (eid, started_at, blob) in enumerate(hits)
            )
            rows.sort(key=_newest_first)
            if limit is not None:
                del rows[limit:]
        return [decode_header(blob)[0] for _, _, blob in rows]

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        with self._lock:
            pending = self._pending_execs_locked()
        found = sorted(eid for eid in pending if eid.startswith(prefix))[:limit]
        # Ids are lowercase hex: the range [prefix, prefix + "~") holds exactly those it starts.
        rows = self._read(
            lambda c: c.execute(
                "SELECT id FROM workflow_execution WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                (prefix, prefix + "~", limit),
            ).fetchall()
        )
        for (eid,) in rows:
            if eid not in found and eid.startswith(prefix):
                found.append(eid)
        return found[:limit]

    def unfinished(self) -> list[str]:
        with self._lock:
            pending = self._pending_execs_locked()
        live = [eid for eid, (st, _, _, _) in pending.items() if st not in self._terminal]
        marks = ", ".join("?" * len(self._terminal))
        sql = f"SELECT num, id FROM workflow_execution WHERE status NOT IN ({marks})"
        params: list[Any] = list(self._terminal)
        if pending:
            sql += f" AND id NOT IN {_IDS}"
            params.append(json.dumps(list(pending)))

        def query(c: sqlite3.Connection) -> tuple[list[Any], dict[str, int]]:
            return c.execute(sql + " ORDER BY num", params).fetchall(), _nums(c, live)

        rows, nums = self._read(query)
        if live:
            first_new = 1 << 62
            rows.extend((nums.get(eid, first_new + i), eid) for i, eid in enumerate(live))
            rows.sort()
        return [eid for _, eid in rows]

    def get_source(self, digest: str) -> tuple[str, str] | None:
        with self._lock:
            for batch in reversed(self._layers_locked()):
                found = batch.sources.get(digest)
                if found is not None:
                    return found
        row = self._read(
            lambda c: c.execute(
                "SELECT pack, source FROM workflow_definition_version WHERE digest = ?", (digest,)
            ).fetchone()
        )
        return None if row is None else (row[0], row[1])

    def definitions(self) -> list[tuple[str, str, str]]:
        with self._lock:
            changes: dict[str, tuple[str, str] | None] = {}
            for batch in self._layers_locked():
                changes.update(batch.definitions)
        rows = self._read(
            lambda c: c.execute("SELECT ref, pack, source FROM workflow_definition").fetchall()
        )
        found: dict[str, tuple[str, str]] = {ref: (pack, source) for ref, pack, source in rows}
        for ref, value in changes.items():
            if value is None:
                found.pop(ref, None)
            else:
                found[ref] = value
        return [(ref, pack, source) for ref, (pack, source) in sorted(found.items())]


def _raise_failing(failure: StoreError) -> NoReturn:
    raise StoreError(f"{failure.message} (the changes are kept in memory and retried)")


def _newest_first(row: tuple[int, float | None, bytes]) -> tuple[bool, float, int]:
    """Sort key matching `ORDER BY started_at DESC, num` (NULL, not started, last)."""
    num, started_at, _ = row
    return (started_at is None, -(started_at or 0.0), num)


def _nums(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, int]:
    """The insertion number of each of `ids` that is in the file."""
    wanted = list(ids)
    if not wanted:
        return {}
    rows = conn.execute(
        f"SELECT id, num FROM workflow_execution WHERE id IN {_IDS}", (json.dumps(wanted),)
    )
    return {eid: num for eid, num in rows}


def _connect(path: Path, synchronous: str, *, reader: bool = False) -> sqlite3.Connection:
    """A connection to the store at `path`, migrated (by the writer's) to the current schema."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,  # the upserts' shapes (see _Upsert) stay prepared
        )
    except (OSError, sqlite3.Error) as e:
        raise StoreError(f"cannot open the store {path}: {e}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        if reader:
            conn.execute("PRAGMA query_only = ON")
            migrations.check(conn, path)
            return conn
        migrations.check(conn, path)  # refuse a newer or foreign file before writing anything
        mode = enable_wal(conn, BUSY_TIMEOUT)
        if mode.lower() != "wal":
            raise StoreError(
                f"cannot open the store {path}: WAL mode refused (journal mode "
                f"{mode!r}); is the folder on a network file system?"
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")  # shrink after a burst
        migrations.migrate(conn, path)
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(f"cannot open the store {path}: {e}") from None
    except BaseException:
        conn.close()
        raise
    return conn
