"""The wire format between engines and workers, and the dead letters bad messages leave.

Every message is msgpack (see `codec`):

    dispatch  {"v": 1, "engine": id, "runner": runner_type, "sent": epoch, "run": {ActionRun fields},
               "sealed": bin}   # with a payload key: run.parameters is {} and "sealed" holds
                                # {"parameters": ..., "secrets": [...]} (see `nats.payload`)
    results   [1, worker_id, event...]  event: ["s", key, started_at] | ["e", key, started_at,
              status, result, error] | ["x", key, started_at, status, bin]  # "x": [result, error] sealed
    heartbeat {"v": 1, "worker": id, "pid": n, "interval": s, "concurrency": n, "draining": bool,
               "running": {engine_id: [key, ...]}}
    cancel    {"v": 1, "engine": id, "keys": [key, ...]}

Bad input on any of these subjects is logged, recorded on `Subjects.dead_letters` and announced as
an `error` event on `Subjects.service_events` (JSON, the control service's format): `report_bad_input`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from attune_actors import codec
from attune_actors.errors import AttuneError
from attune_actors.nats.connection import describe
from attune_actors.nats.payload import PayloadCipher, Unreadable
from attune_actors.nats.subjects import Subjects
from attune_actors.statuses import TERMINAL
from attune_actors.transport.base import ActionRun

log = logging.getLogger("attune_actors.nats.wire")

PROTOCOL = 1
MSG_ID = "Nats-Msg-Id"
MAX_MSG_SIZE = 1024 * 1024  # bytes; the stream's max_msg_size and the default server max_payload
DEAD_LETTER_SAMPLE = 1024
STARTED, ENDED, SEALED_END = "s", "e", "x"


class BadMessage(Exception):
    """A message that does not have the expected shape; `engine`/`key` when they could be read."""

    def __init__(self, reason: str, *, engine: str | None = None, key: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.engine = engine
        self.key = key


# ----------------------------------------------------------------------------------------- dispatch


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A decoded dispatch: who sent it, the attempt, and (sealed ones) the secret values it holds."""

    engine: str
    run: ActionRun
    sealed: bool = False
    secrets: tuple[str, ...] = ()


def dispatch_binding(engine_id: str, run: ActionRun) -> bytes:
    """What sealed parameters are bound to: they open only in this attempt of this action."""
    return b"attune dispatch\0" + codec.encode(
        [engine_id, run.execution_id, run.key, run.task, run.action, run.deadline]
    )


def result_binding(engine_id: str, worker_id: str, key: str) -> bytes:
    """What a sealed outcome is bound to: this attempt, reported by this worker to this engine."""
    return b"attune result\0" + codec.encode([engine_id, worker_id, key])


def encode_dispatch(
    engine_id: str,
    run: ActionRun,
    runner_type: str,
    *,
    cipher: PayloadCipher | None = None,
    secrets: list[str] | None = None,
) -> bytes:
    """A dispatch message; with `cipher`, the parameters (and the `secrets` among them) sealed."""
    body: dict[str, Any] = {
        "v": PROTOCOL,
        "engine": engine_id,
        "runner": runner_type,
        "sent": time.time(),
        "run": {
            "execution_id": run.execution_id,
            "run_id": run.run_id,
            "item": run.item,
            "attempt": run.attempt,
            "task": run.task,
            "action": run.action,
            "parameters": run.parameters if cipher is None else {},
            "deadline": run.deadline,
        },
    }
    if cipher is not None:
        inner = codec.encode({"parameters": run.parameters, "secrets": secrets or []})
        body["sealed"] = cipher.seal(inner, dispatch_binding(engine_id, run))
    return codec.encode(body)


_RUN_TYPES = (
    ("execution_id", str),
    ("run_id", str),
    ("item", (int, type(None))),
    ("attempt", int),
    ("task", str),
    ("action", str),
    ("parameters", dict),
    ("deadline", (int, float, type(None))),
)


def _well_typed(run: dict[str, Any]) -> bool:
    """The common case of `_RUN_TYPES` (exact types, as msgpack decodes them), checked quickly;
    False sends the run through the full check, which names what is wrong."""
    get = run.get
    item, deadline = get("item"), get("deadline")
    return (
        type(get("execution_id")) is str and type(get("run_id")) is str and type(get("attempt")) is int
        and type(get("task")) is str and type(get("action")) is str and type(get("parameters")) is dict
        and (item is None or type(item) is int) and (deadline is None or type(deadline) in (float, int))
    )


def dispatch_engine(data: bytes) -> str | None:
    """The id of the engine that sent a dispatch (its outcome goes there); None if unreadable."""
    try:
        body = codec.decode(data)
    except AttuneError:
        return None
    engine = body.get("engine") if isinstance(body, dict) else None
    return engine if isinstance(engine, str) else None


def decode_dispatch(data: bytes, cipher: PayloadCipher | None = None) -> Dispatch:
    """The dispatch in a message (its parameters opened with `cipher`); BadMessage naming what is wrong."""
    try:
        body = codec.decode(data)
    except AttuneError:
        raise BadMessage("not a msgpack document") from None
    if not isinstance(body, dict):
        raise BadMessage(f"a dispatch must be a map, not {type(body).__name__}")
    engine = body.get("engine")
    if not isinstance(engine, str) or not engine:
        raise BadMessage("dispatch without an engine id")
    run = body.get("run")
    key: str | None = None
    if isinstance(run, dict) and isinstance(run.get("run_id"), str) and isinstance(run.get("attempt"), int):
        item = run.get("item")
        key = f"{run['run_id']}/{'' if item is None else item}/{run['attempt']}"
    if body.get("v") != PROTOCOL:
        raise BadMessage(f"unknown dispatch version {body.get('v')!r}", engine=engine, key=key)
    if not isinstance(run, dict):
        raise BadMessage("dispatch without a run", engine=engine)
    if not _well_typed(run):
        problems = [
            name for name, kinds in _RUN_TYPES
            if not isinstance(value := run.get(name), kinds) or isinstance(value, bool)
        ]
        if problems:
            raise BadMessage(f"dispatch with a missing or mistyped {', '.join(problems)}", engine=engine,
                             key=key)
    attempt = ActionRun(
        run["execution_id"], run["run_id"], run.get("item"), run["attempt"], run["task"], run["action"],
        run["parameters"], run.get("deadline"),
    )
    sealed = body.get("sealed")
    if sealed is None:
        return Dispatch(engine, attempt)
    if not isinstance(sealed, bytes):
        raise BadMessage("a dispatch's 'sealed' must be binary", engine=engine, key=key)
    if cipher is None:
        raise BadMessage(
            "the parameters are encrypted and this worker has no nats.payload_key: give it the "
            "engine's (ATTUNE_NATS__PAYLOAD_KEY)",
            engine=engine, key=key,
        )
    try:
        inner = codec.decode(cipher.open(sealed, dispatch_binding(engine, attempt)))
    except Unreadable:
        raise BadMessage(
            "the parameters do not open with this worker's nats.payload_key (not the engine's, or altered)",
            engine=engine, key=key,
        ) from None
    except AttuneError:
        raise BadMessage("sealed parameters that are not msgpack", engine=engine, key=key) from None
    parameters = inner.get("parameters") if isinstance(inner, dict) else None
    secrets = inner.get("secrets") if isinstance(inner, dict) else None
    if not isinstance(parameters, dict) or not isinstance(secrets, list):
        raise BadMessage("sealed parameters of the wrong shape", engine=engine, key=key)
    run_open = dataclasses.replace(attempt, parameters=parameters)
    return Dispatch(engine, run_open, True, tuple(str(s) for s in secrets))


# ------------------------------------------------------------------------------------------ results


def encode_started(key: str, at: float) -> bytes:
    return codec.encode([STARTED, key, at])


def encode_ended(
    key: str,
    at: float,
    status: str,
    result: Any,
    error: str | None,
    *,
    cipher: PayloadCipher | None = None,
    binding: bytes = b"",
) -> bytes:
    """One `ended` event, its result and error sealed with `cipher` (bound to `binding`, see
    `result_binding`); AttuneError when the result cannot be encoded."""
    if cipher is None:
        return codec.encode([ENDED, key, at, status, result, error])
    sealed = cipher.seal(codec.encode([result, error]), binding)
    return codec.encode([SEALED_END, key, at, status, sealed])


def open_ended(event: list[Any], cipher: PayloadCipher | None, binding: bytes) -> tuple[Any, str | None]:
    """(result, error) of a decoded `ended` or sealed-`ended` event; BadMessage when it does not open."""
    if event[0] == ENDED:
        return event[4], event[5]
    if cipher is None:
        raise BadMessage(f"a sealed outcome for {event[1]} and no nats.payload_key to open it")
    try:
        inner = codec.decode(cipher.open(event[4], binding))
    except (Unreadable, AttuneError):
        raise BadMessage(f"a sealed outcome for {event[1]} that does not open (not its worker?)") from None
    if not (isinstance(inner, list) and len(inner) == 2 and (inner[1] is None or isinstance(inner[1], str))):
        raise BadMessage(f"a sealed outcome for {event[1]} of the wrong shape")
    return inner[0], inner[1]


def results_head(worker_id: str) -> bytes:
    """What precedes the events of a results message (see `results_message`)."""
    return codec.encode(PROTOCOL) + codec.encode(worker_id)


def results_message(head: bytes, events: list[bytes]) -> bytes:
    """A results message from `results_head` and encoded events, without decoding them again."""
    return array_header(len(events) + 2) + head + b"".join(events)


def decode_results(data: bytes) -> tuple[str, list[list[Any]]]:
    """(worker id, events) from a results message; BadMessage naming what is wrong."""
    try:
        body = codec.decode(data)
    except AttuneError:
        raise BadMessage("not a msgpack document") from None
    if not isinstance(body, list) or len(body) < 2 or body[0] != PROTOCOL or not isinstance(body[1], str):
        raise BadMessage("a results message must be [1, worker id, event...]")
    events = body[2:]
    for event in events:
        if not (
            isinstance(event, list)
            and len(event) >= 3
            and isinstance(event[1], str)
            and isinstance(event[2], int | float)
            and (
                (event[0] == STARTED and len(event) == 3)
                or (
                    event[0] == ENDED
                    and len(event) == 6
                    and event[3] in TERMINAL
                    and (event[5] is None or isinstance(event[5], str))
                )
                or (
                    event[0] == SEALED_END
                    and len(event) == 5
                    and event[3] in TERMINAL
                    and isinstance(event[4], bytes)
                )
            )
        ):
            raise BadMessage(f"malformed results event {str(event)[:200]}")
    return body[1], events


def array_header(n: int) -> bytes:
    """The msgpack header of an array of `n` elements (the elements follow, each encoded)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


# ------------------------------------------------------------------------------- heartbeats, cancels


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a worker says about itself; `running` maps engine ids to the attempt keys it holds."""

    worker: str
    running: dict[str, list[str]]
    pid: int = 0
    interval: float = 0.0
    concurrency: int = 0
    draining: bool = False

    def encode(self) -> bytes:
        return codec.encode(
            {
                "v": PROTOCOL,
                "worker": self.worker,
                "pid": self.pid,
                "interval": self.interval,
                "concurrency": self.concurrency,
                "draining": self.draining,
                "running": self.running,
            }
        )


def decode_heartbeat(data: bytes, engine_id: str) -> tuple[str, list[str]]:
    """(worker id, the keys of `engine_id`'s attempts it holds); BadMessage naming what is wrong."""
    try:
        body = codec.decode(data)
    except AttuneError:
        raise BadMessage("not a msgpack document") from None
    if not isinstance(body, dict) or body.get("v") != PROTOCOL:
        raise BadMessage("a heartbeat must be a map with v=1")
    worker = body.get("worker")
    running = body.get("running")
    if not isinstance(worker, str) or not isinstance(running, dict):
        raise BadMessage("a heartbeat needs 'worker' (string) and 'running' (map)")
    mine = running.get(engine_id) or []
    if not isinstance(mine, list):
        raise BadMessage("a heartbeat's running entries must be lists of keys")
    return worker, mine


def encode_cancel(engine_id: str, keys: list[str]) -> bytes:
    return codec.encode({"v": PROTOCOL, "engine": engine_id, "keys": keys})


def decode_cancel(data: bytes) -> list[str]:
    """The attempt keys a cancel request names; BadMessage when it is not one."""
    try:
        body = codec.decode(data)
    except AttuneError:
        body = None
    keys = body.get("keys") if isinstance(body, dict) and body.get("v") == PROTOCOL else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise BadMessage("a cancel must be {v: 1, keys: [key, ...]}")
    return keys


# -------------------------------------------------------------------------------------- dead letters


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def report_bad_input(
    nc: Client, subjects: Subjects, msg: Msg, code: str, reason: str, **who: str
) -> None:
    """Log, leave a dead-letter record and an `error` event (never raises)."""
    log.error("bad message on %s: %s", msg.subject, reason)
    data = msg.data or b""
    when = now_iso()
    record = {
        "subject": msg.subject,
        "reason": reason,
        "code": code,
        "size": len(data),
        "payload": data[:DEAD_LETTER_SAMPLE].decode("utf-8", errors="replace"),
        "truncated": len(data) > DEAD_LETTER_SAMPLE,
        "time": when,
        **who,
    }
    event = {"type": "error", "code": code, "message": reason, "subject": msg.subject, "time": when}
    try:
        await nc.publish(subjects.dead_letters, json.dumps(record, separators=(",", ":")).encode())
        await nc.publish(subjects.service_events, json.dumps(event, separators=(",", ":")).encode())
    except Exception as exc:
        log.warning("cannot record dead letter: %s", describe(exc))
