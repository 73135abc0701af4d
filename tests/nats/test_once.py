"""`Once`: of many engines claiming the same key at once, exactly one gets it."""

from __future__ import annotations

import asyncio
from typing import Any

import nats

from attune_actors.nats.once import Once


async def test_one_claim_wins_across_connections(nats_server: Any) -> None:
    conns = [await nats.connect(nats_server.url) for _ in range(3)]
    try:
        claimers = [Once(nc, "attune", holder=f"e{i}") for i, nc in enumerate(conns)]
        for key in ("rule.a/event-1", "rule.a/event-2", "rule b with spaces"):
            won = await asyncio.gather(*(c.claim(key) for c in claimers for _ in range(3)))
            assert won.count(True) == 1, (key, won)
        assert not await claimers[0].claim("rule.a/event-1")  # still recorded
    finally:
        for nc in conns:
            await nc.close()
