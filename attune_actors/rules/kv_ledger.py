"""The rules ledger in a JetStream KV bucket (`<prefix>_rules`), for engines on the `nats` store.

Keys: `e.<enforcement id>` holds a record (JSON), written with `create`, which the server refuses
when the key exists: that refusal is the create-if-absent claim, atomic across every engine that
shares the bucket. `s.<rule>.<key>` holds rule state (a timer's last nominal fire, an enable
override), the rule ref escaped as a KV token. Listing reads every record (one watch): fine for the
audit trail of a deployment, not meant for millions of records (a `max_age` on the bucket, set by
operators with `nats kv`, bounds it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.kv import KeyValue

from attune_actors.config import NatsSettings
from attune_actors.errors import StoreError
from attune_actors.nats.store import escape_token
from attune_actors.rules.ledger import Enforcement, RuleLedger

CLAIMS_AT_ONCE = 64  # KV requests in flight per claim batch


def bucket_name(prefix: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in prefix) + "_rules"


class KVLedger(RuleLedger):
    """Records and rule state in the KV bucket `<prefix>_rules`; its own NATS connection."""

    def __init__(self, settings: NatsSettings, *, nc: Client | None = None) -> None:
        self.settings = settings
        self.bucket = bucket_name(settings.subject_prefix)
        self._nc = nc
        self._own = nc is None
        self._kv: KeyValue | None = None

    async def open(self) -> None:
        from attune_actors.nats.connection import connect

        if self._nc is None:
            self._nc = await connect(self.settings, name="attune-rules-ledger")
        js = self._nc.jetstream()
        try:
            try:
                self._kv = await js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await js.create_key_value(
                    api.KeyValueConfig(
                        bucket=self.bucket,
                        description="attune-actors: rule enforcements and rule state",
                        history=1,
                        storage=api.StorageType.FILE,
                    )
                )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise StoreError(f"cannot open the rules bucket {self.bucket}: {exc}") from None

    async def close(self) -> None:
        if self._own and self._nc is not None:
            await self._nc.close()
        self._nc = self._kv = None

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise StoreError(f"the rules bucket {self.bucket} is not open")
        return self._kv

    async def _claim_one(self, rec: Enforcement) -> tuple[Enforcement, bool]:
        kv = self._bucket()
        key = f"e.{rec.id}"
        try:
            await kv.create(key, _encode(rec))
            return rec, True
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await kv.get(key)
            return _decode(entry.value), False

    async def claim(self, records: Sequence[Enforcement]) -> list[tuple[Enforcement, bool]]:
        out: list[tuple[Enforcement, bool]] = []
        for start in range(0, len(records), CLAIMS_AT_ONCE):
            chunk = records[start : start + CLAIMS_AT_ONCE]
            out.extend(await asyncio.gather(*(self._claim_one(r) for r in chunk)))
        return out

    async def update(self, record: Enforcement) -> None:
        await self._bucket().put(f"e.{record.id}", _encode(record))

    async def list(
        self, *, rule: str | None = None, trigger_instance_id: str | None = None, limit: int = 50
    ) -> list[Enforcement]:
        watcher = await self._bucket().watch("e.>", ignore_deletes=True)
        found = []
        try:
            async for entry in watcher:
                if entry is None:  # every current value has been delivered
                    break
                rec = _decode(entry.value)
                if (rule is None or rec.rule == rule) and (
                    trigger_instance_id is None or rec.trigger_instance_id == trigger_instance_id
                ):
                    found.append((entry.revision or 0, rec))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [rec for _, rec in found[:limit]]

    async def get_state(self, rule: str, key: str) -> Any:
        try:
            entry = await self._bucket().get(f"s.{escape_token(rule)}.{key}")
        except nats.js.errors.KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def put_state(self, rule: str, key: str, value: Any) -> None:
        name = f"s.{escape_token(rule)}.{key}"
        if value is None:
            await self._bucket().delete(name)
        else:
            await self._bucket().put(name, json.dumps(value).encode())


def _encode(rec: Enforcement) -> bytes:
    return json.dumps(list(rec)).encode()


def _decode(data: bytes | None) -> Enforcement:
    return Enforcement(*json.loads(data or b"[]"))


__all__ = ["KVLedger", "bucket_name"]
