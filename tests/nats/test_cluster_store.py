"""Fencing of a partition's store: once another engine opens it, the previous owner cannot write."""

from __future__ import annotations

from typing import Any

import nats
import pytest

from attune_actors.errors import StoreError
from attune_actors.nats.store import NatsStore
from attune_actors.nats.subjects import Subjects


def save(store: NatsStore, execution_id: str, status: str = "running") -> None:
    header = {
        "id": execution_id, "ref": "p.w", "status": status, "parent_id": None, "started_at": 1.0,
        "created_at": 1.0,
    }
    store.save(execution_id, header, [], [])


async def test_a_store_opened_by_a_new_owner_fences_the_old_one(nats_server: Any) -> None:
    subjects = Subjects("fence")
    bucket = subjects.partition_bucket(3)
    nc1 = await nats.connect(nats_server.url)
    nc2 = await nats.connect(nats_server.url)
    try:
        old = NatsStore(nc1, subjects, bucket=bucket, owner="e1", close_timeout=2)
        await old.open()
        save(old, "a")
        await old.flush()

        new = NatsStore(nc2, subjects, bucket=bucket, owner="e2")
        await new.open()
        assert new.load("a") is not None  # what the old owner stored before is there

        save(old, "a", "succeeded")
        with pytest.raises(StoreError, match="another engine took over"):
            await old.flush()
        assert old.fenced is not None
        with pytest.raises(StoreError):
            save(old, "b")

        save(new, "c")
        await new.flush()  # the new owner writes
        await new.close()
        await old.close()  # nothing left to write: what was fenced is gone

        check = NatsStore(nc2, subjects, bucket=bucket)
        await check.open()
        stored = check.load("a")
        assert stored is not None
        assert stored.header["status"] == "running"  # the fenced write is not there
        assert check.load("b") is None
        assert check.load("c") is not None
        await check.close()
    finally:
        await nc1.close()
        await nc2.close()
