"""Switching a SQLite file to WAL mode when other processes may be opening it too.

SQLite does not call the busy handler for `PRAGMA journal_mode = WAL`: while another connection
creates or converts the same fresh file, the switch fails at once with "database is locked"
(seen when `attune-actors run` and `attune-actors inquiries list` start together on a new data
dir). The switch is retried here until the busy timeout has passed.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["enable_wal"]


def enable_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Put `conn`'s database in WAL mode, waiting up to `timeout` seconds for other openers; the
    journal mode SQLite reports afterwards (not "wal" on file systems that refuse it)."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)  # deliberate: SQLite offers no wait for this lock
        pause = min(pause * 2, 0.05)
