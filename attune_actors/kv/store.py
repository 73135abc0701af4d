"""The key-value datastore: JSON values and encrypted secrets in the `kv` table of `attune.db`.

One `KVStore` holds one SQLite connection (WAL mode, so readers never wait for a writer; a busy
timeout, so writers from other connections or processes wait their turn) behind a lock: any thread
may call it. Calls are short and blocking; the engine may make them from its loop thread.

Reading rules: `get` returns a plain value, and `***` for a secret (the store never decrypts behind
your back); `get_secret` decrypts a secret, and refuses a plain value (`NotFoundError`), since a
value read as a secret but stored in plain text is a mistake worth hearing about.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from attune_actors.errors import NotFoundError, ParameterError, StoreError
from attune_actors.kv.masking import MASK
from attune_actors.kv.secrets import KEY_FILE_NAME, Cipher
from attune_actors.store.wal import enable_wal

__all__ = ["BUSY_TIMEOUT", "MAX_KEY_LENGTH", "KVEntry", "KVStore", "validate_key"]

MAX_KEY_LENGTH = 256
BUSY_TIMEOUT = 10.0  # seconds a write waits for another connection's transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,              -- JSON text, or the Fernet token of the JSON text
    secret     INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL               -- ISO 8601, UTC
)
"""


@dataclass(frozen=True, slots=True)
class KVEntry:
    """One key as `KVStore.list` shows it: a secret's value is `***`."""

    key: str
    value: Any
    secret: bool
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The entry as a JSON-ready mapping (`updated_at` in ISO 8601)."""
        return {
            "key": self.key,
            "value": self.value,
            "secret": self.secret,
            "updated_at": self.updated_at.isoformat(),
        }


def validate_key(key: object) -> str:
    """`key` when it is a valid key: 1 to 256 characters, no whitespace or control characters.

    Raises `ParameterError` otherwise.
    """
    if (
        not isinstance(key, str)
        or not 0 < len(key) <= MAX_KEY_LENGTH
        or not key.isprintable()
        or any(c.isspace() for c in key)
    ):
        raise ParameterError(
            f"invalid key {key!r}: a key is a string of 1 to {MAX_KEY_LENGTH} characters, "
            "without whitespace or control characters"
        )
    return key


class KVStore:
    """Keys mapped to JSON values, some of them secrets encrypted at rest; thread-safe.

    `path` is the SQLite database file (created with its folder if missing); the store uses its own
    `kv` table, so other modules may keep other tables in the same file. The secret key is
    `secret_key` when given, else the content of `key_file` (default: `secret.key` beside `path`),
    read on first need and created with mode 0600 if missing: a store that never touches a secret
    never creates a key.
    """

    __slots__ = ("_cipher", "_conn", "_lock", "path")

    def __init__(
        self,
        path: Path,
        *,
        secret_key: bytes | str | None = None,
        key_file: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self._cipher = Cipher(
            secret_key=secret_key,
            key_file=self.path.parent / KEY_FILE_NAME if key_file is None else Path(key_file),
        )
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = _connect(self.path)
        try:
            self.check_key(decrypt=False)
        except StoreError:
            self.close()
            raise

    def check_key(self, *, decrypt: bool = True) -> None:
        """Refuse a secret key that is missing, or (with `decrypt`) cannot read, the secrets stored.

        Without this, a lost key file would be silently replaced by a new key on the first
        secret written, and every older secret would be unreadable from then on. Opening a store
        checks that the key exists; an engine checks that it fits, before it starts.
        """
        rows, _ = self._execute("SELECT key, value FROM kv WHERE secret = 1 ORDER BY key LIMIT 1")
        if not rows:
            return
        count = self._execute("SELECT count(*) FROM kv WHERE secret = 1")[0][0][0]
        held = f"the datastore {self.path} holds {count} encrypted secret(s)"
        if not self._cipher.has_key():
            raise StoreError(
                f"{held} but {self._cipher.source} is missing: restore it from your backup "
                "(or configure secret_key); a new key could not read them"
            )
        if not decrypt:
            return
        try:
            self._cipher.decrypt(rows[0][1], what=f"secret {rows[0][0]!r}")
        except StoreError:
            raise StoreError(
                f"{held} that {self._cipher.source} cannot decrypt: restore the key they were "
                "written with from your backup"
            ) from None

    def __repr__(self) -> str:
        return f"KVStore({str(self.path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, `default` when there is none, or `***` when it is a secret."""
        entry = self.entry(key)
        return default if entry is None else entry.value

    def entry(self, key: str) -> KVEntry | None:
        """The entry of `key` as `list` shows it (a secret's value is `***`), or None."""
        validate_key(key)
        rows, _ = self._execute(
            "SELECT key, value, secret, updated_at FROM kv WHERE key = ?", (key,)
        )
        return _entry(*rows[0]) if rows else None

    def get_secret(self, key: str) -> Any:
        """The decrypted value of secret `key`.

        Raises `NotFoundError` when `key` does not exist or holds a plain value, and `StoreError`
        when the secret key is not the one the value was written with.
        """
        validate_key(key)
        rows, _ = self._execute("SELECT value, secret FROM kv WHERE key = ?", (key,))
        if not rows:
            raise NotFoundError(f"no key {key!r} in the datastore {self.path}")
        text, secret = rows[0]
        if not secret:
            raise NotFoundError(
                f"key {key!r} is not a secret: its value is stored in plain text "
                "(read it with get, or set it again as a secret)"
            )
        return _decode(self._cipher.decrypt(text, what=f"secret {key!r}").decode("utf-8"), key)

    def set(self, key: str, value: Any, *, secret: bool = False) -> None:
        """Store the JSON value `value` under `key`, encrypted when `secret`, replacing any value.

        Raises `ParameterError` for an invalid key or a value that is not JSON (NaN included).
        """
        validate_key(key)
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise ParameterError(f"the value of key {key!r} is not a JSON value: {e}") from None
        if secret:
            text = self._cipher.encrypt(text.encode("utf-8"))
        self._execute(
            "INSERT OR REPLACE INTO kv (key, value, secret, updated_at) VALUES (?, ?, ?, ?)",
            (key, text, int(secret), datetime.now(UTC).isoformat()),
        )

    def delete(self, key: str) -> bool:
        """Remove `key`; whether it existed."""
        validate_key(key)
        _, count = self._execute("DELETE FROM kv WHERE key = ?", (key,))
        return count > 0

    def close(self) -> None:
        """Close the connection; later calls raise `StoreError`. Closing twice is harmless."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def list(self, prefix: str | None = None) -> builtins.list[KVEntry]:
        """The entries whose key starts with `prefix` (all without one), sorted by key."""
        if prefix:
            rows, _ = self._execute(
                "SELECT key, value, secret, updated_at FROM kv "
                "WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            )
        else:
            rows, _ = self._execute("SELECT key, value, secret, updated_at FROM kv ORDER BY key")
        return [_entry(*row) for row in rows]

    def _execute(
        self, sql: str, params: tuple[Any, ...] = ()
    ) -> tuple[builtins.list[tuple[Any, ...]], int]:
        """The rows and row count of one statement (its own transaction), run under the lock."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"the datastore {self.path} is closed")
            try:
                cursor = conn.execute(sql, params)
                return cursor.fetchall(), cursor.rowcount
            except sqlite3.Error as e:
                raise StoreError(f"datastore {self.path}: {e}") from None


def _entry(key: str, text: str, secret: int, updated_at: str) -> KVEntry:
    return KVEntry(
        key=key,
        value=MASK if secret else _decode(text, key),
        secret=bool(secret),
        updated_at=datetime.fromisoformat(updated_at),
    )


def _decode(text: str, key: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise StoreError(f"the value of key {key!r} in the datastore is not valid JSON") from None


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as e:
        raise StoreError(f"cannot open the datastore {path}: {e}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        enable_wal(conn, BUSY_TIMEOUT)
        conn.execute("PRAGMA secure_delete = ON")  # zero what is deleted or overwritten
        conn.execute(_SCHEMA)
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(f"cannot open the datastore {path}: {e}") from None
    return conn
