"""The control service: JSON requests on `<prefix>.api.*` become Engine calls; engine events go out on NATS.

Built on nats-py's micro-service framework, so `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` discover
it (service name `attune-engine`, metadata `prefix` and `engine_id`). Each operation is one endpoint
whose subject is `Subjects.api(operation)` and which maps 1:1 onto an `Engine` method:

    executions.create {ref, parameters?, identity?}   -> execution document
    executions.get    {id}                            -> execution document
    executions.list   {status?, limit?}               -> {"executions": [document, ...]} newest first
    executions.tasks  {id}                            -> {"tasks": [task run, ...]}
    executions.graph  {id}                            -> the graph document (nodes, edges)
    executions.pause / executions.resume {id}         -> execution document
    executions.cancel {id, force?}                    -> execution document
    executions.rerun  {id, tasks?, reset_items?}      -> execution document
    inquiries.list    {status?, execution_id?}        -> {"inquiries": [...]} (status default "pending")
    inquiries.respond {id, response, identity?}       -> the inquiry
    workflows.list    {pack?}                         -> {"workflows": [...]}
    workflows.get     {ref}                           -> the workflow
    workflows.put     {pack, yaml, ref?}              -> the workflow (`ref`: the one the yaml must define)
    workflows.delete  {ref}                           -> {"ref": ..., "deleted": true}

Every reply is JSON. A failure is `{"error": {"code": ..., "message": ...}}` (with the micro
framework's `Nats-Service-Error` / `Nats-Service-Error-Code` headers, the code as an HTTP-like
number); the codes are the stable strings in `ERROR_STATUS`. Bad input (not JSON, not an object,
a missing, unknown or mistyped field, more than `max_payload` bytes, no reply subject) also leaves a
dead-letter record on `Subjects.dead_letters` and an `error` event on `Subjects.service_events`
(`wire.report_bad_input`); the service keeps serving whatever it is sent. A request for an
operation that does not exist gets the server's "no responders" status at once: nothing listens
there. (A catch-all subscription on the same connection would answer it, but a connection that
receives a request twice loses the right to reply under the `allow_responses` permission.)

Requests on one subject are handled one at a time, in arrival order; different operations run
concurrently. (A cluster engine's service routes requests to other engines: there up to
`ROUTED_AT_ONCE` are handled at once, in no particular order.) With a `Sidecar` (as `serve` runs
it), the service lives on the sidecar's thread and connection: discovery requests are answered there
even while the engine's loop is busy, requests are parsed and checked there, and only the engine
call itself runs on the engine's loop. Requests over `max_payload` bytes (setting
`limits.request_bytes`) are refused before they are parsed; a malformed request of any shape gets a
`bad_request` reply and one line in the log.

Every event of `Engine.events()` is published, in order, on
`Subjects.events(root execution id)` (a nested execution's events go on its root's subject);
gap markers go on `Subjects.service_events`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

import nats.micro
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.micro.request import Request
from nats.micro.service import Service

from attune_actors import __version__
from attune_actors.engine.engine import Engine
from attune_actors.engine.events import Subscription
from attune_actors.engine.execution import Status
from attune_actors.errors import ERROR_STATUS, AttuneError, RoutedError, ValidationError, error_code
from attune_actors.nats.sidecar import Sidecar
from attune_actors.nats.subjects import Subjects
from attune_actors.nats.wire import report_bad_input
from attune_actors.rules.nats_api import rule_operations
from attune_actors.spec.suggest import printable, unknown_key

log = logging.getLogger("attune_actors.nats.service")

T = TypeVar("T")

SERVICE_NAME = "attune-engine"
MAX_PAYLOAD = 1024 * 1024  # the default of limits.request_bytes
DEFAULT_LIST_LIMIT = 50
ROUTED_AT_ONCE = 256  # requests a cluster engine routes, or answers for its partition, at once

class BadRequest(Exception):
    """A request the service refuses before calling the engine (the code is one of ERROR_STATUS)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- request fields: (what the value must be, its test); a null optional field counts as absent


_Check = tuple[str, Callable[[Any], bool]]
TEXT: _Check = ("a non-empty string", lambda v: isinstance(v, str) and v != "")
OBJECT: _Check = ("an object", lambda v: isinstance(v, dict))
FLAG: _Check = ("true or false", lambda v: isinstance(v, bool))
COUNT: _Check = (
    "an integer of at least 1",
    lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
)
NAMES: _Check = (
    "a list of non-empty strings",
    lambda v: isinstance(v, list) and all(isinstance(s, str) and s for s in v),
)
ANY: _Check = ("any JSON value", lambda v: True)
_STATUSES = frozenset(s.value for s in Status)
STATUS: _Check = (
    f"one of {', '.join(s.value for s in Status)}",
    lambda v: isinstance(v, str) and v in _STATUSES,
)

_Fields = dict[str, tuple[_Check, bool]]  # name -> (check, required)
_Call = Callable[[dict[str, Any]], Coroutine[Any, Any, Any]]


def _required(check: _Check) -> tuple[_Check, bool]:
    return check, True


def _optional(check: _Check) -> tuple[_Check, bool]:
    return check, False


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


Router = Callable[[str, dict[str, Any]], Coroutine[Any, Any, Any]]


class ControlService:
    """Serves one engine's API on NATS and publishes its events; `start()` then, at the end, `stop()`.

    In a cluster (`serve --store nats`) the service answers for every engine in one queue group and
    a `router` (`attune_actors.nats.partitions.ClusterRouter`) takes each checked request to the
    engine of its partition, whose own service answers on `start_partition(subject)`.
    """

    def __init__(
        self,
        engine: Engine | None,
        nc: Client,
        subjects: Subjects,
        *,
        max_payload: int | None = None,
        engine_id: str | None = None,
        sidecar: Sidecar | None = None,
        router: Router | None = None,
    ) -> None:
        if (engine is None) == (router is None):
            raise ValueError("a control service serves either an engine or a router")
        self.engine = engine
        self.nc = nc  # events
        self.subjects = subjects
        self.router = router
        if max_payload is None:
            max_payload = engine.settings.limits.request_bytes if engine is not None else MAX_PAYLOAD
        self.max_payload = max_payload
        self.engine_id = engine_id
        self.sidecar = sidecar
        self._requests_nc = sidecar.nc if sidecar is not None else nc
        self._engine_loop: asyncio.AbstractEventLoop | None = None
        self._service: Service | None = None
        self._events: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self._partition_sub: NatsSubscription | None = None
        self._slots = asyncio.Semaphore(ROUTED_AT_ONCE)
        self._routing: set[asyncio.Task[None]] = set()
        self._operations: dict[str, tuple[_Fields, _Call]] = {
            "executions.create": (
                {"ref": _required(TEXT), "parameters": _optional(OBJECT), "identity": _optional(TEXT)},
                self._create,
            ),
            "executions.get": ({"id": _required(TEXT)}, self._get),
            "executions.list": ({"status": _optional(STATUS), "limit": _optional(COUNT)}, self._list),
            "executions.tasks": ({"id": _required(TEXT)}, self._tasks),
            "executions.graph": ({"id": _required(TEXT)}, self._graph),
            "executions.pause": ({"id": _required(TEXT)}, self._pause),
            "executions.resume": ({"id": _required(TEXT)}, self._resume),
            "executions.cancel": ({"id": _required(TEXT), "force": _optional(FLAG)}, self._cancel),
            "executions.rerun": (
                {"id": _required(TEXT), "tasks": _optional(NAMES), "reset_items": _optional(FLAG)},
                self._rerun,
            ),
            "inquiries.list": ({"status": _optional(TEXT), "execution_id": _optional(TEXT)}, self._inquiries),
            "inquiries.respond": (
                {"id": _required(TEXT), "response": _required(ANY), "identity": _optional(TEXT)},
                self._respond,
            ),
            "workflows.list": ({"pack": _optional(TEXT)}, self._workflows),
            "workflows.get": ({"ref": _required(TEXT)}, self._workflow),
            "workflows.put": (
                {"pack": _required(TEXT), "yaml": _required(TEXT), "ref": _optional(TEXT)}, self._put_workflow
            ),
            "workflows.delete": ({"ref": _required(TEXT)}, self._delete_workflow),
        }
        # rules.*, triggers.*, enforcements.*, webhooks.*; a router only needs their fields (the
        # calls, which use the engine only when called, are made by the engines it routes to)
        self._operations.update(rule_operations(engine if engine is not None else cast(Engine, None)))

    @property
    def operations(self) -> list[str]:
        return list(self._operations)

    @property
    def service_id(self) -> str | None:
        """The micro-service instance id (`$SRV.INFO.attune-engine.<id>`), once started."""
        return self._service.id if self._service is not None else None

    async def start(self) -> None:
        """Subscribe to the engine's events, then answer requests (the engine must be started).

        Called on the engine's loop.
        """
        if self._service is not None:
            return
        self._engine_loop = asyncio.get_running_loop()
        if self.engine is not None:  # (a router's engines publish their own)
            self._events = self.engine.events()
            self._pump = asyncio.create_task(self._publish_events(self._events), name="attune-events-pump")
        self._service = await self._on_requests_loop(self._add_service())
        log.info("control service on %s (%d operations)", self.subjects.api(">"), len(self._operations))

    async def start_partition(self, subject: str) -> None:
        """Publish the engine's events and answer requests routed to it on `subject` (a cluster's
        partition engine: requests were checked by the service that routed them)."""
        self._engine_loop = asyncio.get_running_loop()
        self._events = self._engine.events()
        self._pump = asyncio.create_task(self._publish_events(self._events), name="attune-events-pump")

        async def routed(msg: Msg) -> None:
            await self._concurrently(self._on_routed(msg))

        self._partition_sub = await self.nc.subscribe(subject, cb=routed)

    async def _on_routed(self, msg: Msg) -> None:
        try:
            request = json.loads(msg.data)
            _, call = self._operations[request["op"]]
            result = await call(request["body"])
        except AttuneError as exc:
            await self._reply_error(msg, error_code(exc), exc)
            return
        except Exception:
            log.exception("a routed request failed")
            await self._reply_error(msg, "internal", "internal error")
            return
        try:
            await self.nc.publish(msg.reply, _encode(result))
        except Exception as exc:
            log.warning("cannot reply to a routed request: %s", exc)

    async def _add_service(self) -> Service:
        nc = self._requests_nc
        metadata = {"prefix": self.subjects.prefix}
        if self.engine_id is not None:
            metadata["engine_id"] = self.engine_id
        service = await nats.micro.add_service(
            nc,
            name=SERVICE_NAME,
            version=__version__,
            description="attune_actors workflow engine control API",
            metadata=metadata,
        )
        for operation in self._operations:
            await service.add_endpoint(
                name=operation.replace(".", "_"),
                subject=self.subjects.api(operation),
                handler=self._handler(operation),
                metadata={"operation": operation},
            )
        await nc.flush()
        return service

    async def _on_requests_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` where requests are served: the sidecar's loop, or this one."""
        if self.sidecar is None:
            return await coro
        return await self.sidecar.run(coro)

    async def _on_engine_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run an engine call on the engine's loop (from the sidecar's, when there is one).

        The result is handed over as the call returns, not one loop turn later (as
        `run_coroutine_threadsafe` would): work the call scheduled (an execution's first step)
        must not hold the reply back.
        """
        loop = self._engine_loop
        if loop is None or asyncio.get_running_loop() is loop:
            return await coro
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        async def run() -> None:
            try:
                done.set_result(await coro)
            except BaseException as exc:  # handed to the caller, which re-raises it
                done.set_exception(exc)

        loop.call_soon_threadsafe(loop.create_task, run())
        return await asyncio.wrap_future(done)

    async def stop(self) -> None:
        """Stop answering, then publish the events still buffered and stop the event stream."""
        service, self._service = self._service, None
        if service is not None:
            await self._on_requests_loop(service.stop())
        sub, self._partition_sub = self._partition_sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._routing:
            await asyncio.gather(*self._routing, return_exceptions=True)
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._pump is not None:
            await self._pump
            self._pump = None
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=2)

    # ------------------------------------------------------------------ requests

    def _handler(self, operation: str) -> Callable[[Request], Awaitable[None]]:
        async def handle(request: Request) -> None:
            if self.router is None:
                await self._handle(operation, request)
            else:  # routed: each request waits on another engine, so they go concurrently
                await self._concurrently(self._handle(operation, request))

        return handle

    async def _concurrently(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in a task, at most `ROUTED_AT_ONCE` at a time (then the subscription waits)."""
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(coro)
        self._routing.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._routing.discard(t)
            self._slots.release()

        task.add_done_callback(done)

    async def _handle(self, operation: str, request: Request) -> None:
        fields, call = self._operations[operation]
        try:
            body = self._parse(operation, request, fields)
        except BadRequest as bad:
            await self._reject(request._msg, bad.code, bad.message)
            return
        except Exception as exc:  # a shape no check foresaw: still the caller's error, never a 500
            await self._reject(
                request._msg, "bad_request", f"{operation}: malformed request ({type(exc).__name__})"
            )
            return
        try:
            if self.router is not None:
                result: Any = await self.router(operation, body)
            else:
                result = await self._on_engine_loop(call(body))
        except RoutedError as exc:
            await self._reply_error(request._msg, exc.code, exc.message)
            return
        except AttuneError as exc:
            await self._reply_error(request._msg, error_code(exc), exc)
            return
        except Exception:
            log.exception("%s failed", operation)
            await self._reply_error(request._msg, "internal", f"{operation} failed: internal error")
            return
        try:
            data = _encode(result)
        except (ValueError, RecursionError) as exc:  # e.g. a result nested too deeply for JSON
            log.error("%s: cannot encode the reply: %s", operation, exc)
            await self._reply_error(request._msg, "internal", f"{operation}: the reply cannot be encoded")
            return
        if len(data) > self._requests_nc.max_payload:
            await self._reply_error(
                request._msg,
                "too_large",
                f"the reply to {operation} is {len(data)} bytes, over the server's max_payload "
                f"({self._requests_nc.max_payload}); ask for less (e.g. a lower limit)",
            )
            return
        await self._send(request._msg, data)

    def _parse(self, operation: str, request: Request, fields: _Fields) -> dict[str, Any]:
        data = request.data
        if len(data) > self.max_payload:
            raise BadRequest(
                "too_large",
                f"{operation}: the request is {len(data)} bytes, which exceeds limits.request_bytes "
                f"({self.max_payload})",
            )
        if not request._msg.reply:
            raise BadRequest(
                "bad_request", f"{operation}: no reply subject (the control API is request/reply)"
            )
        body: Any = {}
        if data.strip():
            try:
                body = json.loads(data)
            except (UnicodeDecodeError, ValueError) as exc:
                raise BadRequest("bad_request", f"{operation}: the request is not JSON: {exc}") from None
            except RecursionError:
                raise BadRequest("bad_request", f"{operation}: the request is nested too deeply") from None
        if not isinstance(body, dict):
            raise BadRequest(
                "bad_request", f"{operation}: the request must be a JSON object, got {type(body).__name__}"
            )
        for key in body:
            if key not in fields:
                raise BadRequest("bad_request", f"{operation}: {unknown_key(key, fields, 'the request')}")
        for name, (check, required) in fields.items():
            what, test = check
            value = body.get(name)
            if value is None and not (name in body and check is ANY):  # null is a value only for ANY
                if required:
                    raise BadRequest("bad_request", f"{operation}: missing '{name}' ({what})")
                continue
            if not test(value):
                got = printable(_shown(value))
                raise BadRequest("bad_request", f"{operation}: '{name}' must be {what}, got {got}")
        return body

    # ------------------------------------------------------------------ replies, dead letters

    async def _reject(self, msg: Msg, code: str, message: str) -> None:
        """Bad input: an error reply (when there is a reply subject), a dead-letter record, an error
        event, and one line in the log."""
        if msg.reply:
            await self._reply_error(msg, code, message)
        who = {"engine_id": self.engine_id} if self.engine_id is not None else {}
        await report_bad_input(self._requests_nc, self.subjects, msg, code, message, **who)

    async def _reply_error(self, msg: Msg, code: str, error: str | AttuneError) -> None:
        body: dict[str, Any] = {"code": code, "message": str(error)}
        if isinstance(error, ValidationError):
            body["errors"] = [str(e) for e in error.errors]
        headers = {
            "Nats-Service-Error": printable(str(error).splitlines()[0] if str(error) else code)[:500],
            "Nats-Service-Error-Code": str(ERROR_STATUS.get(code, 500)),
        }
        await self._send(msg, _encode({"error": body}), headers)

    async def _send(self, msg: Msg, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            await self._requests_nc.publish(msg.reply, data, headers=headers)
        except Exception as exc:  # a closed or reconnecting connection: the requester times out
            log.warning("cannot reply on %s: %s", msg.subject, exc)

    # ------------------------------------------------------------------ events

    async def _publish_events(self, events: Subscription) -> None:
        async for event in events:
            try:
                root = event.get("root_id") or event.get("execution_id")
                subject = self.subjects.events(root) if root else self.subjects.service_events
                data = _encode(event)
                if len(data) > self.nc.max_payload:
                    data = _encode(_summary(event))
                await self.nc.publish(subject, data)
            except Exception:  # one event that cannot be sent must not end the stream
                log.exception("cannot publish event %s", event.get("type"))

    # ------------------------------------------------------------------ operations

    @property
    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("this control service routes requests: it has no engine")
        return self.engine

    async def _create(self, body: dict[str, Any]) -> Any:
        execution = await self._engine.execute(
            body["ref"], body.get("parameters"), identity=body.get("identity")
        )
        return execution.to_dict()

    async def _get(self, body: dict[str, Any]) -> Any:
        return (await self._engine.get(body["id"])).to_dict()

    async def _list(self, body: dict[str, Any]) -> Any:
        limit = body.get("limit") or DEFAULT_LIST_LIMIT
        executions = await self._engine.list(status=body.get("status"), limit=limit)
        return {"executions": [e.to_dict() for e in executions]}

    async def _tasks(self, body: dict[str, Any]) -> Any:
        return {"tasks": [t.to_dict() for t in await self._engine.tasks(body["id"])]}

    async def _graph(self, body: dict[str, Any]) -> Any:
        return await self._engine.graph(body["id"])

    async def _pause(self, body: dict[str, Any]) -> Any:
        return (await self._engine.pause(body["id"])).to_dict()

    async def _resume(self, body: dict[str, Any]) -> Any:
        return (await self._engine.resume(body["id"])).to_dict()

    async def _cancel(self, body: dict[str, Any]) -> Any:
        return (await self._engine.cancel(body["id"], force=bool(body.get("force")))).to_dict()

    async def _rerun(self, body: dict[str, Any]) -> Any:
        execution = await self._engine.rerun(
            body["id"], body.get("tasks"), reset_items=bool(body.get("reset_items"))
        )
        return execution.to_dict()

    async def _inquiries(self, body: dict[str, Any]) -> Any:
        status = body.get("status", "pending")  # null: every status
        return {"inquiries": await self._engine.inquiries(status, execution_id=body.get("execution_id"))}

    async def _respond(self, body: dict[str, Any]) -> Any:
        return await self._engine.respond(body["id"], body["response"], identity=body.get("identity"))

    async def _workflows(self, body: dict[str, Any]) -> Any:
        return {"workflows": [w.to_dict() for w in await self._engine.list_workflows(body.get("pack"))]}

    async def _workflow(self, body: dict[str, Any]) -> Any:
        return (await self._engine.get_workflow(body["ref"])).to_dict()

    async def _put_workflow(self, body: dict[str, Any]) -> Any:
        ref = await self._engine.put_workflow(body["pack"], body["yaml"], ref=body.get("ref"))
        return (await self._engine.get_workflow(ref)).to_dict()

    async def _delete_workflow(self, body: dict[str, Any]) -> Any:
        await self._engine.delete_workflow(body["ref"])
        return {"ref": body["ref"], "deleted": True}


_SUMMARY_KEYS = (
    "type",
    "execution_id",
    "root_id",
    "id",
    "ref",
    "name",
    "status",
    "attempts",
    "started_at",
    "ended_at",
    "parent_id",
    "inquiry_id",
    "items_done",
    "items_total",
    "task",
)


def _shown(value: Any) -> str:
    """At most 80 characters of a JSON value, for an error message (whatever its depth)."""
    try:
        return json.dumps(value, default=str)[:80]
    except (RecursionError, ValueError):
        return f"a deeply nested {type(value).__name__}"


def _summary(event: dict[str, Any]) -> dict[str, Any]:
    """An event too large for one message, without its values (results, output, ...)."""
    return {**{k: event[k] for k in _SUMMARY_KEYS if k in event}, "truncated": True}


__all__ = [
    "ERROR_STATUS", "MAX_PAYLOAD", "SERVICE_NAME", "ControlService", "RoutedError", "Router", "error_code",
]
