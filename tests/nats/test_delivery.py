"""`subscribe_inline` (nats.jetstream) against a real nats-server: messages handled from the client's
read loop, in order, also when a handler must wait; a failing handler loses nothing else and keeps
the connection. And the connection's header parser gives what nats-py's own gives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from helpers import eventually as until
from nats.aio.client import Client
from nats.aio.msg import Msg

from attune_actors.config import NatsSettings
from attune_actors.nats.connection import connect, parse_header_lines
from attune_actors.nats.jetstream import subscribe_inline


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Client]:
    client = await connect(NatsSettings(url=nats_server.url), name="delivery test")
    try:
        yield client
    finally:
        await client.close()


async def test_messages_are_handled_in_order_also_behind_one_that_waits(nc: Client) -> None:
    seen: list[bytes] = []
    release = asyncio.Event()

    async def slow(data: bytes) -> None:
        await release.wait()
        seen.append(data)

    def handler(msg: Msg) -> Awaitable[None] | None:
        if msg.data == b"2":
            return slow(msg.data)  # the ones after it wait for it
        seen.append(msg.data)
        return None

    sub = await subscribe_inline(nc, "inline.order", handler)
    for n in range(1, 6):
        await nc.publish("inline.order", str(n).encode())
    await nc.flush()
    await until(lambda: seen == [b"1"] and sub.pending_msgs == 3, "the first handled, three waiting")
    release.set()
    await until(lambda: len(seen) == 5, "all five")
    assert seen == [b"1", b"2", b"3", b"4", b"5"]
    await nc.publish("inline.order", b"6")  # and back to handling at once
    await until(lambda: len(seen) == 6, "the sixth")
    await sub.drain()


async def test_a_failing_handler_loses_nothing_else_and_keeps_the_connection(
    nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []

    def handler(msg: Msg) -> Awaitable[None] | None:
        if msg.data == b"bad":
            raise ValueError("broken handler")
        seen.append(msg.data)
        return None

    async def fails_later() -> None:
        raise ValueError("broken after waiting")

    def waiting_handler(msg: Msg) -> Awaitable[None] | None:
        return fails_later() if msg.data == b"bad" else handler(msg)

    await subscribe_inline(nc, "inline.fail", handler)
    await subscribe_inline(nc, "inline.fail_later", waiting_handler)
    for subject in ("inline.fail", "inline.fail_later"):
        for data in (b"a", b"bad", b"b"):
            await nc.publish(subject, data)
    await until(lambda: len(seen) == 4, "the four good ones")
    assert sorted(seen) == [b"a", b"a", b"b", b"b"]
    assert nc.is_connected
    assert "broken handler" in caplog.text
    assert "broken after waiting" in caplog.text


def test_header_lines_parse_as_nats_py_parses_them() -> None:
    blocks = [
        b"Nats-Msg-Id: r1/1/1@ab12\r\nNats-Expected-Last-Subject-Sequence: 0\r\n\r\n",
        b"traceparent: 00-abc-def-01\r\ntracestate: k=v\r\n\r\n",
        b"A:b\r\nK:\t spaced \r\nK: again\r\nno colon\r\nbad name: x\r\n\xff\xfe: y\r\n\r\n",
        b"Value: caf\xc3\xa9 \xff\r\n\r\n",
        b"",
    ]
    for block in blocks:
        for _ in range(2):  # the second time from the names remembered
            assert parse_header_lines(block) == Client._parse_header_lines(block), block
