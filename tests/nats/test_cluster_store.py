"""A partition's share of the nats store: its own keys in the one bucket, the executions a single
engine stored before clustering, and fencing (once another engine opens it, the previous owner cannot
write)."""

from __future__ import annotations

from typing import Any

import nats
import pytest

from attune_actors.errors import StoreError
from attune_actors.nats.cluster import partition_of
from attune_actors.nats.store import NatsStore
from attune_actors.nats.subjects import Subjects


def save(store: NatsStore, execution_id: str, status: str = "running", parent_id: str | None = None) -> None:
    header = {
        "id": execution_id, "ref": "p.w", "status": status, "parent_id": parent_id, "started_at": 1.0,
        "created_at": 1.0,
    }
    store.save(execution_id, header, [], [])


async def test_a_store_opened_by_a_new_owner_fences_the_old_one(nats_server: Any) -> None:
    subjects = Subjects("fence")
    bucket = (3, 8)
    nc1 = await nats.connect(nats_server.url)
    nc2 = await nats.connect(nats_server.url)
    try:
        old = NatsStore(nc1, subjects, partition=bucket, owner="e1", close_timeout=2)
        await old.open()
        save(old, "a")
        await old.flush()

        new = NatsStore(nc2, subjects, partition=bucket, owner="e2")
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

        check = NatsStore(nc2, subjects, partition=bucket)
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


async def test_partitions_share_one_bucket_and_adopt_what_a_single_engine_stored(nats_server: Any) -> None:
    subjects = Subjects("legacy")
    partitions = 4
    nc = await nats.connect(nats_server.url)
    try:
        # A single engine (no partitions) parked an execution with a nested one, and put a workflow.
        single = NatsStore(nc, subjects)
        await single.open()
        root = "0123456789abcdef0123456789abcdef"
        child = f"{root}.3-1"
        save(single, root)
        save(single, child, parent_id=root)
        single.put_definition("p.put", "p", "name: put")
        await single.close()
        home = partition_of(root, partitions)
        assert partition_of(child, partitions) == home  # a nested execution goes with its root

        # Every partition reads the one bucket; only the root's partition takes both executions.
        stores = {
            p: NatsStore(nc, subjects, partition=(p, partitions), owner=f"e{p}") for p in range(partitions)
        }
        for store in stores.values():
            await store.open()
            assert [d[0] for d in store.definitions()] == ["p.put"]  # definitions are everyone's
        assert {p for p, s in stores.items() if s.unfinished()} == {home}
        assert sorted(stores[home].unfinished()) == sorted([root, child])

        # Its owner writes them where they are; a new execution goes in its namespace.
        save(stores[home], root, "succeeded")
        save(stores[home], f"p{home}-new")
        assert stores[home].delete_definition("p.put")
        for store in stores.values():
            await store.close()

        again = NatsStore(nc, subjects, partition=(home, partitions), owner="e9")
        await again.open()
        loaded = again.load(root)
        assert loaded is not None
        assert loaded.header["status"] == "succeeded"
        assert sorted(again.unfinished()) == sorted([child, f"p{home}-new"])
        assert again.definitions() == []  # deleted where the single engine had put it too
        await again.close()

        # Read each key (nats-py's `keys()` lists them through a watcher, which once ended before
        # the first key under a busy CI's load, as if the bucket were empty).
        bucket = await nc.jetstream().key_value(subjects.snapshot_bucket)
        for key in (f"x.{root}.h", f"p{home}.x.p{home}-new.h", f"owner.p{home}"):
            assert (await bucket.get(key)).value is not None, key

        # Back to a single engine: it reads every partition's executions as well.
        single = NatsStore(nc, subjects)
        await single.open()
        assert sorted(single.unfinished()) == sorted([child, f"p{home}-new"])
        save(single, f"p{home}-new", "succeeded")
        await single.close()
        after = NatsStore(nc, subjects, partition=(home, partitions))
        await after.open()
        assert after.unfinished() == [child]
        await after.close()
    finally:
        await nc.close()
