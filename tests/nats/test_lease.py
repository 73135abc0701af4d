"""The engine lease on a real nats-server: one holder, refusal naming it, expiry of a dead holder."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually as wait_for
from nats.aio.client import Client

from attune_actors.config import NatsSettings
from attune_actors.errors import StoreError
from attune_actors.nats.connection import connect
from attune_actors.nats.lease import LEASE_KEY, EngineLease
from attune_actors.nats.subjects import Subjects

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Client]:
    client = await connect(NatsSettings(url=nats_server.url), name="test")
    yield client
    await client.close()


async def test_a_second_engine_is_refused_with_the_holders_name_until_release(nc: Client) -> None:
    first = EngineLease(nc, Subjects(), holder="engine-a", ttl=5)
    second = EngineLease(nc.jetstream(), Subjects(), holder="engine-b", ttl=5)
    await first.acquire()
    assert first.held
    with pytest.raises(StoreError) as refused:
        await second.acquire()
    message = str(refused.value)
    assert message.startswith(f"the store is in use by engine engine-a (pid {os.getpid()} on ")
    assert "(lease held, expires within 5 s)" in message
    assert not second.held
    await first.release()
    assert not first.held
    await second.acquire()  # at once: a released lease needs no expiry
    assert second.held
    with pytest.raises(StoreError, match="in use by engine engine-b"):
        await first.acquire()
    await second.release()
    await first.acquire()  # over the delete marker the release left
    await first.release()


async def test_renewing_keeps_the_lease_past_its_ttl(nc: Client) -> None:
    holder = EngineLease(nc, Subjects(), holder="alive", ttl=1.0)
    other = EngineLease(nc, Subjects(), holder="other", ttl=1.0)
    await holder.acquire()
    await holder.start_renewing()
    try:
        started = time.monotonic()
        await wait_for(lambda: holder.renewals >= 5)  # 5 x ttl/3: well past one ttl
        assert time.monotonic() - started > 1.0
        with pytest.raises(StoreError, match="in use by engine alive"):
            await other.acquire()
    finally:
        await holder.release()


async def test_a_holder_that_stops_renewing_loses_it_to_the_next_when_it_expires(nc: Client) -> None:
    quiet = EngineLease(nc, Subjects(), holder="quiet", ttl=1.0)
    await quiet.acquire()  # and never renews: a frozen or dead engine
    taker = EngineLease(nc, Subjects(), holder="taker", ttl=1.0)
    with pytest.raises(StoreError, match="in use by engine quiet"):
        await taker.acquire()
    started = time.monotonic()
    await taker.acquire(wait=10)
    assert taker.held
    assert time.monotonic() - started < 5
    # The quiet one, waking up, finds out at its next renewal.
    lost: list[str] = []
    await quiet.start_renewing(on_lost=lost.append)
    await wait_for(lambda: bool(lost))
    assert "engine taker" in lost[0]
    assert not quiet.held
    await quiet.release()  # harmless: it does not delete the taker's lease
    with pytest.raises(StoreError, match="in use by engine taker"):
        await quiet.acquire()
    await taker.release()


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from attune_actors.config import NatsSettings
    from attune_actors.nats.connection import connect
    from attune_actors.nats.lease import EngineLease
    from attune_actors.nats.subjects import Subjects

    async def main() -> None:
        nc = await connect(NatsSettings(url=sys.argv[1]), name="holder")
        lease = EngineLease(nc, Subjects(), holder="doomed", ttl=1.0)
        await lease.acquire()
        await lease.start_renewing()
        while lease.renewals < 2:
            await asyncio.sleep(0.05)  # deliberate: polling with a deadline
        print("held", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_the_lease_of_a_sigkilled_engine_is_taken_over_when_it_expires(
    nats_server: Any, nc: Client
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, nats_server.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        assert line == b"held\n", (await proc.stderr.read()).decode()[-3000:]
        successor = EngineLease(nc, Subjects(), holder="successor", ttl=1.0)
        with pytest.raises(StoreError, match="in use by engine doomed"):
            await successor.acquire()
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        killed = time.monotonic()
        await successor.acquire(wait=10)
        assert time.monotonic() - killed < 5  # at most the ttl after the last renewal, plus polling
        await successor.release()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_deleted_lease_is_noticed_as_lost(nc: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="attune_actors.nats.lease")
    lease = EngineLease(nc, Subjects(), holder="victim", ttl=1.0)
    lost = asyncio.Event()
    await lease.acquire()
    await lease.start_renewing(on_lost=lambda reason: lost.set())
    kv = await nc.jetstream().key_value(Subjects().lease_bucket)
    await kv.purge(LEASE_KEY)  # an operator removed it (nats kv purge)
    async with asyncio.timeout(5):
        await lost.wait()
    assert "the engine lease of victim was lost: it expired or was deleted" in caplog.text
    await lease.release()


async def test_the_lease_survives_a_server_restart(nats_server: Any) -> None:
    nc = await connect(NatsSettings(url=nats_server.url), name="test")
    try:
        lost: list[str] = []
        lease = EngineLease(nc, Subjects(), holder="steady", ttl=4.0, on_lost=lost.append)
        await lease.acquire()
        await lease.start_renewing()
        nats_server.restart()
        renewed = lease.renewals
        await wait_for(lambda: lease.renewals > renewed, timeout=15)  # renewing again after reconnecting
        assert not lost
        other_nc = await connect(NatsSettings(url=nats_server.url), name="other")
        try:
            with pytest.raises(StoreError, match="in use by engine steady"):
                await EngineLease(other_nc, Subjects(), holder="other", ttl=4.0).acquire()
        finally:
            await other_nc.close()
        await lease.release()
    finally:
        await nc.close()


async def test_an_existing_bucket_keeps_its_ttl(nc: Client) -> None:
    first = EngineLease(nc, Subjects(), holder="a", ttl=7.0)
    await first.acquire()
    second = EngineLease(nc, Subjects(), holder="b", ttl=2.0)
    with pytest.raises(StoreError, match=r"expires within 7 s"):
        await second.acquire()
    assert second.ttl == 7.0  # its renewals will be every 7/3 s, within the bucket's ttl
    await first.release()
    with pytest.raises(StoreError, match="not held"):
        await second.start_renewing()
