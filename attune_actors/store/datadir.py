"""The data directory: created private (0700, its database files 0600), or refused in one line.

Executions, their inputs and the datastore live there; other users of the machine have no
business reading them, whatever the umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from attune_actors.errors import StoreError

__all__ = ["DB_FILE_NAME", "prepare_data_dir"]

DB_FILE_NAME = "attune.db"
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def prepare_data_dir(path: Path) -> Path:
    """Make `path` usable as a data dir and return it; StoreError saying why when it is not.

    A folder created here is 0700; one that exists keeps its mode (it may be a project folder).
    The database file is created 0600 (SQLite gives its WAL files the same mode), and existing
    database files readable by others are made private.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StoreError(f"cannot use the data dir {path}: it is not a folder")
    try:
        if not path.is_dir():
            path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            os.chmod(path, _DIR_MODE)  # whatever the umask
        db = path / DB_FILE_NAME
        fd = os.open(db, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        os.close(fd)
        for name in (DB_FILE_NAME, f"{DB_FILE_NAME}-wal", f"{DB_FILE_NAME}-shm"):
            try:
                st = os.stat(path / name)
            except FileNotFoundError:
                continue
            if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.getuid():
                os.chmod(path / name, _FILE_MODE)
    except OSError as e:
        raise StoreError(f"cannot use the data dir {path}: {e.strerror or e}") from None
    return path
