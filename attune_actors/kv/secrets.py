"""The secret key and the encryption of secret values at rest (Fernet, from `cryptography`).

`Cipher` holds one Fernet key, given by configuration or kept in a key file next to the database.
The key file is read on first need, and generated there (mode 0600) when it does not exist yet, so a
data directory without secrets never gets one. Fernet authenticates what it decrypts: a token
written with another key is refused, never decrypted into garbage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from attune_actors.errors import ConfigError, StoreError

__all__ = ["KEY_FILE_NAME", "Cipher", "generate_key"]

log = logging.getLogger(__name__)

KEY_FILE_NAME = "secret.key"
_KEY_FILE_MODE = 0o600


def generate_key() -> bytes:
    """A new random Fernet key (32 bytes, url-safe base64), as `secret_key=` and key files hold."""
    return Fernet.generate_key()


def _fernet(key: bytes | str, source: str, error: type[ConfigError] | type[StoreError]) -> Fernet:
    try:
        return Fernet(key.strip())
    except (ValueError, TypeError):
        raise error(
            f"{source} is not a valid Fernet key: expected 32 url-safe base64-encoded bytes, "
            "as `attune_actors.kv.generate_key()` makes"
        ) from None


class Cipher:
    """Encrypts and decrypts secret values with one key; thread-safe.

    With `secret_key` the key is that value (checked now: a bad one raises `ConfigError`).
    Otherwise it is the content of `key_file`, read on the first `encrypt`/`decrypt` and created
    with mode 0600 when missing; processes racing to create it all end up with the one that won.
    """

    __slots__ = ("_fernet", "_key_file", "_lock", "source")

    def __init__(self, *, secret_key: bytes | str | None = None, key_file: Path) -> None:
        self._key_file = key_file
        self._lock = threading.Lock()
        self._fernet: Fernet | None = None
        #: Where the key comes from, for messages (never the key itself).
        self.source = f"the secret key file {key_file}"
        if secret_key is not None:
            self.source = "the configured secret key"
            self._fernet = _fernet(secret_key, self.source, ConfigError)

    def __repr__(self) -> str:
        return f"Cipher(source={self.source!r})"

    def has_key(self) -> bool:
        """Whether the key exists already (configured, or its file is there)."""
        return self._fernet is not None or self._key_file.exists()

    def encrypt(self, plaintext: bytes) -> str:
        """The Fernet token (ASCII) of `plaintext`; creates the key file if it is the first need."""
        return self._get().encrypt(plaintext).decode("ascii")

    def decrypt(self, token: str, *, what: str) -> bytes:
        """The plaintext of `token`; `what` names the value in the error if the key does not fit."""
        try:
            return self._get().decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise StoreError(
                f"cannot decrypt {what}: the secret key does not match the one it was written with"
                f" (using {self.source})"
            ) from None

    def _get(self) -> Fernet:
        fernet = self._fernet
        if fernet is not None:
            return fernet
        with self._lock:
            if self._fernet is None:
                self._fernet = _fernet(_load_or_create(self._key_file), self.source, StoreError)
            return self._fernet


def _load_or_create(path: Path) -> bytes:
    """The key in `path`, after creating it (mode 0600, atomically) if it does not exist."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    key = generate_key()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write a private temporary file, then link it into place: the link either creates the key
        # file whole or fails because another process got there first, whose key then wins. Nobody
        # ever reads a half-written key.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _KEY_FILE_MODE)
        try:
            os.fchmod(fd, _KEY_FILE_MODE)  # whatever the umask
            os.write(fd, key + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key(path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    except OSError as e:
        raise StoreError(f"cannot create the secret key file {path}: {e.strerror or e}") from None
    log.warning(
        "generated a new secret key in %s; back it up: secrets stored with it cannot be read "
        "without it",
        path,
    )
    return key


def _read_key(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            key = f.read()
    except FileNotFoundError:
        raise  # the caller creates it
    except OSError as e:
        raise StoreError(f"cannot read the secret key file {path}: {e.strerror or e}") from None
    if stat.S_IMODE(mode) & 0o077:
        log.warning(
            "secret key file %s is readable by other users (mode %o); chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return key
