"""Once across every engine: a create-if-absent record in a shared JetStream KV bucket.

In a cluster several engines may see the same thing happen (a trigger instance fired on a NATS
subject every engine listens to, a timer every engine keeps). `Once.claim(key)` creates the key
`key` in the bucket `<prefix>_once` only if it is absent, so exactly one caller across all engines
gets True and acts; the others get False. Records expire after `ttl` seconds (the window in which
duplicates are suppressed; default a day), so the bucket does not grow without end.

The rules engine (`attune_actors.rules`) should enforce each trigger instance through it, with a key
naming the rule and the trigger instance (e.g. the event id).
"""

from __future__ import annotations

import json
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.kv import KeyValue

from attune_actors.errors import StoreError
from attune_actors.nats.store import escape_path
from attune_actors.nats.subjects import token

__all__ = ["Once"]


class Once:
    """Claims keys once across every engine of a subject prefix; see the module doc."""

    def __init__(self, nc: Client, prefix: str, *, holder: str, ttl: float = 86400.0) -> None:
        self.js = nc.jetstream()
        self.bucket = f"{token(prefix)}_once"
        self.holder = holder
        self.ttl = ttl
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                try:
                    self._kv = await self.js.create_key_value(api.KeyValueConfig(
                        bucket=self.bucket, description="attune-actors: done once across engines",
                        history=1, ttl=self.ttl,
                    ))
                except nats.js.errors.BadRequestError:  # created meanwhile
                    self._kv = await self.js.key_value(self.bucket)
        return self._kv

    async def claim(self, key: str) -> bool:
        """True for the one caller that records `key` first (within `ttl`); False for the others."""
        try:
            kv = await self._bucket()
            await kv.create(escape_path(key), json.dumps({"by": self.holder, "at": time.time()}).encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (nats.errors.Error, OSError, TimeoutError) as e:
            raise StoreError(f"cannot record {key!r} in the NATS KV bucket {self.bucket}: {e}") from None
        return True
