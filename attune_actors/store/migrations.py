"""The SQLite store's schema and its migrations: what `attune.db` holds, version by version.

`migrate(conn, path)` brings a connection's database to `SCHEMA_VERSION` inside one write
transaction, and refuses (with a `StoreError` naming the file) a database that a newer version of
attune_actors wrote, or one that holds our tables without saying which version they are: an old
program must never write over a schema it does not know.

The version lives in `schema_version`, one row per component, so the other users of the same file
(the `kv` table of `attune_actors.kv.store`) may version their tables there too. To change the
schema, append a `Migration` to `MIGRATIONS` (version N+1, statements that turn version N into N+1,
rewriting data in Python through `apply` when SQL is not enough); never edit a released one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from attune_actors.errors import StoreError

__all__ = [
    "COMPONENT",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "Migration",
    "check",
    "migrate",
    "stored_version",
]

COMPONENT = "store"  # our row in schema_version

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    component  TEXT PRIMARY KEY NOT NULL,  -- 'store' (executions, definitions); others may join
    version    INTEGER NOT NULL,
    updated_at TEXT NOT NULL               -- ISO 8601, UTC
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """Turns schema version `version - 1` into `version`: `statements`, then `apply(conn)`."""

    version: int
    description: str
    statements: Sequence[str]
    apply: Callable[[sqlite3.Connection], object] | None = field(default=None)


_V1 = (
    # Workflow definitions put at run time (Engine.put_workflow): the YAML as given.
    """
    CREATE TABLE workflow_definition (
        ref        TEXT PRIMARY KEY NOT NULL,
        pack       TEXT NOT NULL,
        source     TEXT NOT NULL,
        updated_at REAL NOT NULL           -- epoch seconds
    )
    """,
    "CREATE INDEX workflow_definition_by_pack ON workflow_definition (pack, ref)",
    # Every version of a definition an execution started with, by content digest (shared).
    """
    CREATE TABLE workflow_definition_version (
        digest     TEXT PRIMARY KEY NOT NULL,
        pack       TEXT NOT NULL,
        source     TEXT NOT NULL
    )
    """,
    # One row per execution; `header` is the codec-encoded header record, the other columns are
    # copies of its fields for listing. `num` keeps the order executions were first stored in.
    """
    CREATE TABLE workflow_execution (
        num        INTEGER PRIMARY KEY,
        id         TEXT NOT NULL UNIQUE,
        ref        TEXT,
        status     TEXT NOT NULL,
        parent_id  TEXT,
        started_at REAL,                   -- epoch seconds; NULL until it starts
        ended_at   REAL,
        header     BLOB NOT NULL
    )
    """,
    "CREATE INDEX workflow_execution_by_started ON workflow_execution (started_at)",
    "CREATE INDEX workflow_execution_by_status ON workflow_execution (status, started_at)",
    "CREATE INDEX workflow_execution_by_parent ON workflow_execution (parent_id, started_at)",
    # One row per task run (a retry is an attempt of the same run); `record` is TaskRun.to_record.
    """
    CREATE TABLE workflow_task_execution (
        execution_id TEXT NOT NULL,
        run_id       TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        task         TEXT NOT NULL,
        status       TEXT NOT NULL,
        record       BLOB NOT NULL,
        PRIMARY KEY (execution_id, run_id)
    )
    """,
    # One row per with_items item of a task run; `record` is ItemRun.to_record.
    """
    CREATE TABLE workflow_task_item (
        execution_id TEXT NOT NULL,
        run_id       TEXT NOT NULL,
        idx          INTEGER NOT NULL,
        record       BLOB NOT NULL,
        PRIMARY KEY (execution_id, run_id, idx)
    )
    """,
)

_V2 = (
    # One row per (trigger instance, rule) the rules service evaluated (attune_actors.rules.ledger).
    # `id` is derived from both, so inserting it is the claim that makes an enforcement happen once.
    """
    CREATE TABLE rule_enforcement (
        num                 INTEGER PRIMARY KEY,
        id                  TEXT NOT NULL UNIQUE,
        rule                TEXT NOT NULL,
        trigger_instance_id TEXT NOT NULL,
        trigger_type        TEXT NOT NULL,
        matched             INTEGER NOT NULL,
        execution_id        TEXT,
        error               TEXT,
        created_at          REAL NOT NULL   -- epoch seconds
    )
    """,
    "CREATE INDEX rule_enforcement_by_rule ON rule_enforcement (rule, num)",
    "CREATE INDEX rule_enforcement_by_instance ON rule_enforcement (trigger_instance_id)",
    # Per-rule state that outlives the process: a timer's last nominal fire time, an enable override.
    """
    CREATE TABLE rule_state (
        rule  TEXT NOT NULL,
        key   TEXT NOT NULL,
        value TEXT NOT NULL,                -- JSON
        PRIMARY KEY (rule, key)
    )
    """,
)

_V3 = (
    # Task runs and items keyed by their execution's `num` instead of its id. Ids are random, so
    # every new run landed on a random page of the (execution_id, run_id) index: a commit of N
    # steps dirtied ~N index pages (measured: 28 -> 15 µs of writer CPU per transition). `num`
    # grows with each new execution, so the live executions' rows share the index's last pages.
    "ALTER TABLE workflow_task_execution RENAME TO workflow_task_execution_v2",
    """
    CREATE TABLE workflow_task_execution (
        execution_num INTEGER NOT NULL,     -- workflow_execution.num
        run_id        TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        task          TEXT NOT NULL,
        status        TEXT NOT NULL,
        record        BLOB NOT NULL,
        PRIMARY KEY (execution_num, run_id)
    )
    """,
    """
    INSERT INTO workflow_task_execution (execution_num, run_id, seq, task, status, record)
    SELECT e.num, t.run_id, t.seq, t.task, t.status, t.record
    FROM workflow_task_execution_v2 t JOIN workflow_execution e ON e.id = t.execution_id
    """,
    "DROP TABLE workflow_task_execution_v2",
    "ALTER TABLE workflow_task_item RENAME TO workflow_task_item_v2",
    """
    CREATE TABLE workflow_task_item (
        execution_num INTEGER NOT NULL,     -- workflow_execution.num
        run_id        TEXT NOT NULL,
        idx           INTEGER NOT NULL,
        record        BLOB NOT NULL,
        PRIMARY KEY (execution_num, run_id, idx)
    )
    """,
    """
    INSERT INTO workflow_task_item (execution_num, run_id, idx, record)
    SELECT e.num, i.run_id, i.idx, i.record
    FROM workflow_task_item_v2 i JOIN workflow_execution e ON e.id = i.execution_id
    """,
    "DROP TABLE workflow_task_item_v2",
)

# Version 4 changes what the blobs hold, not the tables (store.base): a task run's record is a list
# in `RUN_FIELDS` order (a dict before), and an execution's header carries the records of its
# active runs (`ACTIVE_RUNS`), so a run's row is written when it ends, not also when it starts.
# Records written before are read as they are, so nothing is rewritten; the version is raised so
# that an older attune_actors refuses the file rather than misread it.
_V4: tuple[str, ...] = ()

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "executions, task runs, items, definitions", _V1),
    Migration(2, "rule enforcements and rule state", _V2),
    Migration(3, "task runs and items keyed by their execution's num", _V3),
    Migration(4, "run records as lists, active runs in the header (blobs only)", _V4),
)
SCHEMA_VERSION = MIGRATIONS[-1].version
TABLES = (
    "workflow_definition",
    "workflow_definition_version",
    "workflow_execution",
    "workflow_task_execution",
    "workflow_task_item",
    "rule_enforcement",
    "rule_state",
)


def stored_version(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of the database behind `conn`: 0 when it holds none of our tables.

    Raises `StoreError` for a file that is not a database, or that holds our tables without a
    version (not written by attune_actors, or damaged).
    """
    try:
        names = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "schema_version" in names:
            row = conn.execute(
                "SELECT version FROM schema_version WHERE component = ?", (COMPONENT,)
            ).fetchone()
            if row is not None:
                version = row[0]
                if not isinstance(version, int) or version < 1:
                    raise StoreError(f"the store {path} has an invalid schema version {version!r}")
                return version
    except sqlite3.Error as e:
        raise StoreError(
            f"cannot read the store {path}: {e} (is it an attune data file?)"
        ) from None
    ours = sorted(names.intersection(TABLES))
    if ours:
        raise StoreError(
            f"the store {path} has tables {', '.join(ours)} but no schema version: "
            "it was not written by attune_actors, or it is damaged"
        )
    return 0


def check(conn: sqlite3.Connection, path: Path, target: int = SCHEMA_VERSION) -> int:
    """The stored schema version, read without writing anything.

    Raises `StoreError` when the file is not a database, has our tables without a version, or was
    written by a schema newer than `target`.
    """
    version = stored_version(conn, path)
    _check_not_newer(version, target, path)
    return version


def migrate(
    conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Bring the database to the last version of `migrations` in one transaction; that version.

    `conn` must be in autocommit mode (isolation_level=None). Raises `StoreError` when the file was
    written by a newer schema (nothing is changed then), or when a migration fails (rolled back).
    """
    target = migrations[-1].version
    version = check(conn, path, target)  # read first: refuse a newer file without writing to it
    if version == target:
        return version
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = stored_version(conn, path)  # another process may have migrated meanwhile
            _check_not_newer(version, target, path)
            conn.execute(VERSION_TABLE)
            for m in migrations:
                if m.version <= version:
                    continue
                for sql in m.statements:
                    conn.execute(sql)
                if m.apply is not None:
                    m.apply(conn)
                conn.execute(
                    "INSERT INTO schema_version (component, version, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version, "
                    "updated_at = excluded.updated_at",
                    (COMPONENT, m.version, datetime.now(UTC).isoformat()),
                )
                version = m.version
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as e:
        raise StoreError(
            f"cannot migrate the store {path} to schema version {target}: {e}"
        ) from None
    return version


def _check_not_newer(version: int, target: int, path: Path) -> None:
    if version > target:
        raise StoreError(
            f"the store {path} has schema version {version}, newer than this attune_actors "
            f"understands ({target}): upgrade attune_actors, or use another data directory"
        )
