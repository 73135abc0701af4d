"""The one codec for snapshots and messages on the wire: msgpack, JSON-compatible values only.

Everything the engine stores or sends is plain data (dict, list, str, int, float, bool, None), so
one encoder serves the stores and the NATS transport alike. Encoded snapshots are also cheaper to
keep in memory: bytes are not traversed by the garbage collector, dicts of dicts are.
"""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]

from attune_actors.errors import StoreError

_packer = msgpack.Packer(use_bin_type=True, datetime=False)


def encode(value: Any) -> bytes:
    """Plain data -> bytes. Tuples become lists; anything not JSON-like is an error."""
    try:
        packed: bytes = _packer.pack(value)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        raise StoreError(f"cannot encode value: {exc}") from None


def decode(data: bytes) -> Any:
    """bytes -> plain data (lists, never tuples; str keys)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise StoreError(f"cannot decode stored value: {exc}") from None
