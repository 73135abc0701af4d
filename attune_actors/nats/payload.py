"""End-to-end encryption of run parameters and results between an engine and its workers.

With `nats.payload_key` (32 bytes, base64 or hex; or `nats.payload_key_file`) set on the engine
and every worker, the parameters of each dispatch and the result and error of each outcome are
sealed with AES-256-GCM: a fresh random 96-bit nonce per message, and associated data that binds
the ciphertext to where it belongs (the engine, the attempt key, the action, and for outcomes the
worker). Anyone who can read the subjects or the JetStream store files (other users' inboxes, a
server's disk) sees routing metadata, never the values; a sealed value moved to another attempt or
another worker's report does not open.

Without a key, parameters and results travel in clear; the engine then refuses to dispatch a run
whose parameters hold a secret (`NatsTransport`).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from attune_actors.config import NatsSettings
from attune_actors.errors import ConfigError

KEY_SIZE = 32
NONCE_SIZE = 12


class Unreadable(Exception):
    """A sealed value that does not open with this key (another key, altered, or moved)."""


class PayloadCipher:
    """Seals and opens payloads with one AES-256-GCM key; thread-safe."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ConfigError(f"nats.payload_key must be {KEY_SIZE} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "<PayloadCipher>"  # never the key

    @classmethod
    def from_settings(cls, settings: NatsSettings) -> PayloadCipher | None:
        """The cipher `settings` ask for (None without a key); ConfigError naming a bad one."""
        if settings.payload_key and settings.payload_key_file:
            raise ConfigError("nats: give payload_key or payload_key_file, not both")
        if settings.payload_key_file:
            try:
                text = Path(settings.payload_key_file).read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not text"
                raise ConfigError(f"nats.payload_key_file {settings.payload_key_file}: {reason}") from None
            return cls(parse_key(text, "nats.payload_key_file"))
        if settings.payload_key:
            return cls(parse_key(settings.payload_key, "nats.payload_key"))
        return None

    def seal(self, plaintext: bytes, bound_to: bytes) -> bytes:
        """nonce + ciphertext + tag; opens only with the same `bound_to`."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, bound_to)

    def open(self, sealed: bytes, bound_to: bytes) -> bytes:
        """The plaintext `seal` was given; Unreadable when it does not open."""
        if len(sealed) < NONCE_SIZE + 16:
            raise Unreadable("too short to be sealed")
        try:
            return self._aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], bound_to)
        except InvalidTag:
            raise Unreadable("does not open with this nats.payload_key") from None


def parse_key(text: str, name: str) -> bytes:
    """A 32-byte key from base64 (standard or URL-safe) or hex text."""
    text = text.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise ConfigError(
            f"{name} must be {KEY_SIZE} random bytes in base64 or hex (generate one with: python -c "
            '"import os, base64; print(base64.b64encode(os.urandom(32)).decode())")'
        )
    return key
