"""The `Engine` API of a cluster engine, for the HTTP API: every call goes where the NATS service's go.

An engine of a cluster (`serve --store nats`) runs no single `Engine`: its partitions' engines
hold the executions, and the one owning an execution may be in another process. `RoutedEngine`
offers the part of the `Engine` API that the HTTP API uses (`attune_actors.api.deps.EngineApi`) and
turns each call into the control operation the NATS service would run for it, sent through the
same `ClusterRouter` to the owner of the execution's partition, so both front ends answer alike
and neither holds engine logic. Replies come back as the documents the owner sent and are turned
into the same types `Engine` returns; errors keep their codes (`RoutedError`).

Events (`events(id)`, the HTTP API's server-sent events) are those the owning engine publishes on
NATS: a subscription to `<prefix>.events.executions.*` is made while someone listens. `metrics` is
what the caller passes: `serve` gives the partition engines' metrics merged.

Use it on the loop of the NATS connection it was given.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from attune_actors.config import Settings
from attune_actors.engine.engine import WorkflowInfo
from attune_actors.engine.events import EventBus, Subscription
from attune_actors.engine.execution import Execution, TaskRunInfo
from attune_actors.errors import ParameterError
from attune_actors.nats.service import Router
from attune_actors.nats.subjects import Subjects
from attune_actors.observability.metrics import Metrics

__all__ = ["RoutedEngine"]

log = logging.getLogger(__name__)


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class RoutedEngine:
    """The HTTP API's engine on a cluster engine; see the module doc. `close()` when done."""

    def __init__(self, route: Router, nc: Client, subjects: Subjects, settings: Settings,
                 metrics: Metrics) -> None:
        self._route = route
        self._nc = nc
        self._subjects = subjects
        self._settings = settings
        self._metrics = metrics
        self._bus = EventBus(settings.limits.event_buffer)
        self._events: NatsSubscription | None = None
        self._subscribing: asyncio.Task[None] | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    # -- executions ------------------------------------------------------------------------------

    async def execute(
        self, ref: str, parameters: dict[str, Any] | None = None, identity: str | None = None, *,
        execution_id: str | None = None,
    ) -> Execution:
        if execution_id is not None:
            raise ParameterError("a cluster names new executions itself: execution_id cannot be chosen")
        body = _present(ref=ref, parameters=parameters, identity=identity)
        return Execution.from_dict(await self._route("executions.create", body))

    async def get(self, execution_id: str) -> Execution:
        return Execution.from_dict(await self._route("executions.get", {"id": execution_id}))

    async def list(self, status: str | None = None, limit: int | None = None) -> builtins.list[Execution]:
        found = await self._route("executions.list", _present(status=status, limit=limit))
        return [Execution.from_dict(e) for e in found["executions"]]

    async def tasks(self, execution_id: str) -> builtins.list[Any]:
        found = await self._route("executions.tasks", {"id": execution_id})
        return [TaskRunInfo.from_dict(t) for t in found["tasks"]]

    async def graph(self, execution_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._route("executions.graph", {"id": execution_id})
        return found

    async def pause(self, execution_id: str) -> Execution:
        return Execution.from_dict(await self._route("executions.pause", {"id": execution_id}))

    async def resume(self, execution_id: str) -> Execution:
        return Execution.from_dict(await self._route("executions.resume", {"id": execution_id}))

    async def cancel(self, execution_id: str, *, force: bool = False) -> Execution:
        body = {"id": execution_id, "force": force}
        return Execution.from_dict(await self._route("executions.cancel", body))

    async def rerun(
        self, execution_id: str, tasks: Sequence[str] | None = None, *, reset_items: bool = False
    ) -> Execution:
        listed = None if tasks is None else list(tasks)
        body = _present(id=execution_id, tasks=listed, reset_items=reset_items)
        return Execution.from_dict(await self._route("executions.rerun", body))

    # -- events ----------------------------------------------------------------------------------

    def events(self, execution_id: str | None = None) -> Subscription:
        sub = self._bus.subscribe(execution_id)
        if self._events is None and (self._subscribing is None or self._subscribing.done()):
            self._subscribing = asyncio.get_running_loop().create_task(self._listen())
        return sub

    async def _listen(self) -> None:
        # Made before the caller's next request goes out (same connection, in order), so what
        # changes after the state it reads is heard.
        self._events = await self._nc.subscribe(self._subjects.executions_events, cb=self._on_event)

    async def _on_event(self, msg: Msg) -> None:
        if not self._bus.active:  # nobody listens any more: stop receiving every event
            await self._unlisten()
            return
        try:
            event = json.loads(msg.data)
        except ValueError:
            return
        if isinstance(event, dict):
            self._bus.publish(event)

    async def _unlisten(self) -> None:
        sub, self._events = self._events, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def close(self) -> None:
        self._bus.close()
        if self._subscribing is not None:
            with contextlib.suppress(Exception):
                await self._subscribing
        await self._unlisten()

    # -- inquiries -------------------------------------------------------------------------------

    async def inquiries(
        self, status: str | None = "pending", execution_id: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        body: dict[str, Any] = {"status": status, **_present(execution_id=execution_id)}  # null: any
        found: builtins.list[dict[str, Any]] = (await self._route("inquiries.list", body))["inquiries"]
        return found

    async def respond(
        self, inquiry_id: str, response: Any, identity: str | None = None
    ) -> dict[str, Any]:
        body = {"id": inquiry_id, "response": response, **_present(identity=identity)}
        found: dict[str, Any] = await self._route("inquiries.respond", body)
        return found

    # -- workflows -------------------------------------------------------------------------------

    async def list_workflows(self, pack: str | None = None) -> builtins.list[WorkflowInfo]:
        found = await self._route("workflows.list", _present(pack=pack))
        return [WorkflowInfo.from_dict(w) for w in found["workflows"]]

    async def get_workflow(self, ref: str) -> WorkflowInfo:
        return WorkflowInfo.from_dict(await self._route("workflows.get", {"ref": ref}))

    async def put_workflow(self, pack: str, yaml_text: str, *, ref: str | None = None) -> str:
        found = await self._route("workflows.put", _present(pack=pack, yaml=yaml_text, ref=ref))
        return str(found["ref"])

    async def delete_workflow(self, ref: str) -> None:
        await self._route("workflows.delete", {"ref": ref})

    # -- rules -----------------------------------------------------------------------------------

    async def list_rules(self, pack: str | None = None) -> builtins.list[dict[str, Any]]:
        found: builtins.list[dict[str, Any]] = (await self._route("rules.list", _present(pack=pack)))["rules"]
        return found

    async def get_rule(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._route("rules.get", {"ref": ref})
        return found

    async def enable_rule(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._route("rules.enable", {"ref": ref})
        return found

    async def disable_rule(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._route("rules.disable", {"ref": ref})
        return found

    async def list_triggers(self) -> builtins.list[dict[str, Any]]:
        found: builtins.list[dict[str, Any]] = (await self._route("triggers.list", {}))["triggers"]
        return found

    async def enforcements(
        self, rule: str | None = None, trigger_instance_id: str | None = None, limit: int = 50
    ) -> builtins.list[dict[str, Any]]:
        body = _present(rule=rule, trigger_instance_id=trigger_instance_id, limit=limit)
        found: builtins.list[dict[str, Any]] = (await self._route("enforcements.list", body))["enforcements"]
        return found

    async def emit(
        self, trigger_type: str, payload: Any = None, *, instance_id: str | None = None, **attributes: Any
    ) -> str:
        if trigger_type != "core.webhook" or instance_id is not None:
            raise ParameterError("a cluster engine's API emits core.webhook instances only")
        body = _present(name=attributes.get("name"), payload=payload, headers=attributes.get("headers"))
        return str((await self._route("webhooks.post", body))["trigger_instance_id"])
