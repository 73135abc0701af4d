"""`core.nats` triggers: each rule subject is read through JetStream, so nothing published is lost.

For every distinct subject of the `core.nats` rules, the engine makes sure a stream captures it (an
existing stream whose subjects cover it is used as it is; otherwise the subject is added to the
stream `<PREFIX>_TRIGGERS`, created if needed, with a duplicate window) and reads it through a
durable pull consumer named after the subject. Messages published while the engine is down wait in
the stream; the consumer's position survives restarts, so they are delivered once the engine is
back. A message is acknowledged only after its enforcements are recorded and their executions
started; a crash before that redelivers it, and the enforcement records make the redelivery start
nothing twice.

Instance ids: the message's `Nats-Msg-Id` header when it has one (so a publisher retrying with
the same id is deduplicated by the stream within its window, and by the enforcement records after
it), else `<stream>:<sequence>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

log = logging.getLogger("attune_actors.rules.nats")

Handle = Callable[[dict[str, Any], str], Awaitable[None]]  # (instance, the rule subject)

DUPLICATE_WINDOW = 120.0
MAX_AGE = 7 * 86400.0  # events nobody consumed are kept a week
FETCH_BATCH = 512
IN_FLIGHT = 1024  # instances handled at once per subject (their executions are stored in one commit)


def stream_name(prefix: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in prefix).upper() + "_TRIGGERS"


def durable_name(prefix: str, subject: str, partition: int | None = None) -> str:
    """The consumer of `subject`'s messages: one shared by the engines, or a cluster partition's."""
    digest = hashlib.sha256(subject.encode()).hexdigest()[:16]
    return f"{stream_name(prefix).lower()}_{digest}" + ("" if partition is None else f"_p{partition}")


def instance_id(msg: Msg, stream: str) -> str:
    """The id of a message's trigger instance: its `Nats-Msg-Id`, else its place in the stream."""
    msg_id = (msg.headers or {}).get("Nats-Msg-Id")
    return msg_id or f"{stream}:{msg.metadata.sequence.stream}"


def message_instance(msg: Msg, stream: str) -> dict[str, Any]:
    """The trigger instance of one JetStream message."""
    headers = dict(msg.headers or {})
    meta = msg.metadata
    try:
        payload: Any = json.loads(msg.data) if msg.data else None
    except (UnicodeDecodeError, ValueError):
        payload = msg.data.decode("utf-8", "replace")
    return {
        "id": instance_id(msg, stream),
        "type": "core.nats",
        "payload": payload,
        "occurred_at": (meta.timestamp or datetime.now(UTC)).isoformat(),
        "subject": msg.subject,
        "headers": headers,
    }


class NatsTriggerSource:
    """Durable consumers for a set of subjects; `start()` then `stop()`."""

    def __init__(
        self,
        nc: Client,
        prefix: str,
        subjects: list[str],
        handle: Handle,
        *,
        partition: tuple[int, Callable[[str], bool]] | None = None,
    ) -> None:
        self.nc = nc
        self.prefix = prefix
        self.subjects = sorted(set(subjects))
        self.handle = handle
        # A cluster partition's engine reads every message through consumers of its own, and
        # handles those whose instance id the predicate says are its partition's.
        self.partition = None if partition is None else partition[0]
        self._owns = None if partition is None else partition[1]
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        js = self.nc.jetstream()
        ours = stream_name(self.prefix)
        mine: list[str] = []
        streams: dict[str, str] = {}
        for subject in self.subjects:
            try:
                found = await js.find_stream_name_by_subject(subject)
            except nats.js.errors.NotFoundError:
                found = None
            if found is None or found == ours:
                mine.append(subject)
                streams[subject] = ours
                continue
            info = await js.stream_info(found)
            if info.config.retention != api.RetentionPolicy.LIMITS:
                # A work-queue or interest stream (attune's own runs, say): reading it would take
                # messages away from their consumers.
                log.error(
                    "core.nats subject %s is captured by stream %s (retention %s): rules cannot read it",
                    subject,
                    found,
                    info.config.retention,
                )
                continue
            streams[subject] = found
        if mine:
            await self._ensure_stream(js, ours, mine)
        for subject in self.subjects:
            stream = streams.get(subject)
            if stream is None:
                continue
            durable = durable_name(self.prefix, subject, self.partition)
            config = api.ConsumerConfig(
                durable_name=durable,
                filter_subject=subject,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=60.0,
                max_ack_pending=FETCH_BATCH * 4,
                # A stream of our own holds only what was published for us; someone else's may
                # hold years of history that a new rule must not replay.
                deliver_policy=api.DeliverPolicy.ALL if stream == ours else api.DeliverPolicy.NEW,
            )
            if self.partition is not None:
                await self._continue_shared(js, stream, subject, config)
            sub = await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
            self._tasks.append(
                asyncio.create_task(self._consume(sub, subject, stream), name=f"trigger {subject}")
            )

    async def _continue_shared(self, js: Any, stream: str, subject: str, config: api.ConsumerConfig) -> None:
        """A partition's consumer, when created, starts where the consumer the engines shared
        (before a cluster's partitions had their own) stopped, not at the start of the stream:
        replayed, a week of events would meet the rules added since."""
        try:
            shared = await js.consumer_info(stream, durable_name(self.prefix, subject))
        except nats.js.errors.NotFoundError:
            return
        config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = (shared.ack_floor.stream_seq if shared.ack_floor else 0) + 1

    async def _ensure_stream(self, js: Any, name: str, subjects: list[str]) -> None:
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                api.StreamConfig(
                    name=name,
                    description="attune core.nats trigger events",
                    subjects=subjects,
                    retention=api.RetentionPolicy.LIMITS,
                    storage=api.StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW,
                    max_age=MAX_AGE,
                    discard=api.DiscardPolicy.OLD,
                )
            )
            return
        have = list(info.config.subjects or [])
        missing = [s for s in subjects if s not in have]
        if missing:
            info.config.subjects = have + missing
            await js.update_stream(info.config)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _consume(self, sub: Any, subject: str, stream: str) -> None:
        slots = asyncio.Semaphore(IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping:
                try:
                    msgs = await sub.fetch(FETCH_BATCH, timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                    await asyncio.sleep(0.5)  # deliberate: waiting out a reconnect
                    continue
                except Exception as exc:
                    log.warning("reading %s: %s", subject, exc)
                    await asyncio.sleep(0.5)  # deliberate: a broken fetch is retried, not spun
                    continue
                owns = self._owns
                for msg in msgs:
                    if owns is not None and not owns(instance_id(msg, stream)):
                        # Another partition's: nothing to decode, no task. (Not acknowledged,
                        # it comes back after ack_wait and is acknowledged then.)
                        with contextlib.suppress(Exception):
                            await msg.ack()
                        continue
                    await slots.acquire()
                    task = asyncio.create_task(self._one(msg, subject, stream, slots))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            for task in list(running):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # let started enforcements finish and ack

    async def _one(self, msg: Msg, subject: str, stream: str, slots: asyncio.Semaphore) -> None:
        try:
            instance = message_instance(msg, stream)
            await self.handle(instance, subject)
            await msg.ack()
        except Exception as exc:
            # Not acknowledged: JetStream redelivers it after ack_wait; the records dedupe the retry.
            log.error("trigger message on %s not handled: %s", msg.subject, exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=5.0)
        finally:
            slots.release()


__all__ = ["NatsTriggerSource", "durable_name", "message_instance", "stream_name"]
