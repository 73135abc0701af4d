"""`Publisher` (nats.jetstream) against a real nats-server: messages written from synchronous code,
in order with the client's own, re-sent across a server restart and stored once; acknowledgements
held back and still sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import eventually as until
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, RetentionPolicy, StreamConfig

from attune_actors.config import NatsSettings
from attune_actors.nats.connection import connect
from attune_actors.nats.jetstream import Publisher, PublishError

STREAM = "PUBTEST"


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Client]:
    client = await connect(NatsSettings(url=nats_server.url), name="publisher test")
    await client.jetstream().add_stream(
        StreamConfig(name=STREAM, subjects=["pubtest.>"], retention=RetentionPolicy.WORK_QUEUE)
    )
    try:
        yield client
    finally:
        await client.close()


async def messages(nc: Client) -> int:
    return (await nc.jetstream().stream_info(STREAM)).state.messages or 0


async def test_a_write_keeps_its_place_after_what_the_client_buffered(nc: Client) -> None:
    seen: list[bytes] = []

    async def got(msg: Msg) -> None:
        seen.append(msg.data)

    await nc.subscribe("order.>", cb=got)
    publisher = Publisher(nc)
    await publisher.start()
    try:
        await nc.publish("order.a", b"1")  # in nats-py's buffer until its flusher's next turn
        publisher.send("order.b", b"2", "id-2")
        publisher.write()
        await nc.publish("order.a", b"3")
        publisher.send("order.b", b"4", "id-4")  # written at the end of the loop turn
        await until(lambda: len(seen) == 4, "the four messages")
        assert seen == [b"1", b"2", b"3", b"4"]
    finally:
        await publisher.close()


async def test_a_publish_while_the_server_is_down_is_stored_once_it_is_back(
    nc: Client, nats_server: Any
) -> None:
    publisher = Publisher(nc, ack_timeout=0.2)
    await publisher.start()
    done: list[PublishError | None] = []

    async def stored(error: PublishError | None) -> None:
        done.append(error)

    try:
        publisher.publish("pubtest.one", b"before", "one", stored)  # written, stored, acknowledged
        await until(lambda: done, "the first pub-ack")
        await asyncio.to_thread(nats_server.stop)
        await until(lambda: not nc.is_connected, "the disconnect")
        publisher.publish("pubtest.two", b"during", "two", stored)
        publisher.write()  # nothing to write to: kept
        await asyncio.to_thread(nats_server.start)
        await until(lambda: nc.is_connected, "the reconnect", timeout=20)
        publisher.sweep(resend_all=True)  # what the owner does after a reconnect
        publisher.kick()
        await until(lambda: len(done) == 2, "the second pub-ack", timeout=20)
        assert done == [None, None]
        assert await messages(nc) == 2
        publisher.sweep(resend_all=True)  # re-sent under the same message id: not stored twice
        publisher.kick()
        await nc.flush()
        assert await messages(nc) == 2
    finally:
        await publisher.close()


async def left(nc: Client, count: int) -> bool:
    return await messages(nc) == count


async def take_three(nc: Client) -> list[Msg]:
    js = nc.jetstream()
    await js.add_consumer(STREAM, ConsumerConfig(durable_name="c", filter_subject="pubtest.>"))
    for n in range(3):
        await js.publish(f"pubtest.{n}", b"x")
    psub = await js.pull_subscribe_bind("c", stream=STREAM)
    return await psub.fetch(3, timeout=5)


async def test_acknowledgements_go_with_the_next_write(nc: Client) -> None:
    publisher = Publisher(nc, ack_delay=60)
    await publisher.start()
    try:
        for msg in await take_three(nc):
            publisher.ack(msg)
        publisher.write()
        await until(lambda: left(nc, 0), "the three acknowledged")
    finally:
        await publisher.close()


async def test_the_newest_acknowledgement_held_back_goes_at_close(nc: Client) -> None:
    publisher = Publisher(nc, ack_delay=60, ack_hold=True)
    await publisher.start()
    for msg in await take_three(nc):
        publisher.ack(msg)
    publisher.write()
    await until(lambda: left(nc, 1), "the two older ones acknowledged")
    await publisher.close()
    await until(lambda: left(nc, 0), "the newest acknowledged at close")


async def test_the_newest_acknowledgement_held_back_goes_after_the_delay(nc: Client) -> None:
    publisher = Publisher(nc, ack_delay=0.05, ack_hold=True)
    await publisher.start()
    try:
        for msg in await take_three(nc):
            publisher.ack(msg)
        await until(lambda: left(nc, 0), "all three acknowledged, nothing else written")
    finally:
        await publisher.close()


async def test_a_message_larger_than_the_server_takes_is_refused_and_the_connection_kept(
    nc: Client,
) -> None:
    publisher = Publisher(nc)
    await publisher.start()
    done: list[PublishError | None] = []

    async def stored(error: PublishError | None) -> None:
        done.append(error)

    try:
        publisher.publish("pubtest.big", b"x" * (nc.max_payload + 1), "big", stored)
        publisher.publish("pubtest.small", b"x", "small", stored)
        await until(lambda: len(done) == 2, "both answered")
        refused, accepted = (done if done[0] is not None else done[::-1])
        assert refused is not None
        assert "max_payload" in str(refused)
        assert accepted is None
        assert nc.is_connected
        assert await messages(nc) == 1
    finally:
        await publisher.close()
