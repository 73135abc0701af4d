"""What routes are given: the engine, the caller at each role, the shared error responses.

A new router (webhooks, metrics, ...) declares its parameters with these and is added to
`attune_actors.api.app.ROUTERS`; nothing else needs to change.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from attune_actors.api.auth import Caller, require
from attune_actors.api.models import ErrorBody
from attune_actors.config import Settings
from attune_actors.engine.engine import WorkflowInfo
from attune_actors.engine.events import Subscription
from attune_actors.engine.execution import Execution
from attune_actors.observability.metrics import Metrics


class EngineApi(Protocol):
    """The part of the `Engine` API the HTTP API calls: an `Engine`, or, on an engine of a cluster,
    `attune_actors.nats.routed.RoutedEngine`, which takes each call to the engine that owns it."""

    @property
    def settings(self) -> Settings: ...
    @property
    def metrics(self) -> Metrics: ...
    async def execute(
        self, ref: str, parameters: dict[str, Any] | None = None, identity: str | None = None, *,
        execution_id: str | None = None,
    ) -> Execution: ...
    async def get(self, execution_id: str) -> Execution: ...
    async def list(self, status: str | None = None, limit: int | None = None) -> builtins.list[Execution]: ...
    async def tasks(self, execution_id: str) -> builtins.list[Any]: ...
    async def graph(self, execution_id: str) -> dict[str, Any]: ...
    async def pause(self, execution_id: str) -> Execution: ...
    async def resume(self, execution_id: str) -> Execution: ...
    async def cancel(self, execution_id: str, *, force: bool = False) -> Execution: ...
    async def rerun(
        self, execution_id: str, tasks: Sequence[str] | None = None, *, reset_items: bool = False
    ) -> Execution: ...
    def events(self, execution_id: str | None = None) -> Subscription: ...
    async def inquiries(
        self, status: str | None = "pending", execution_id: str | None = None
    ) -> builtins.list[dict[str, Any]]: ...
    async def respond(
        self, inquiry_id: str, response: Any, identity: str | None = None
    ) -> dict[str, Any]: ...
    async def list_workflows(self, pack: str | None = None) -> builtins.list[WorkflowInfo]: ...
    async def get_workflow(self, ref: str) -> WorkflowInfo: ...
    async def put_workflow(self, pack: str, yaml_text: str, *, ref: str | None = None) -> str: ...
    async def delete_workflow(self, ref: str) -> None: ...
    async def list_rules(self, pack: str | None = None) -> builtins.list[dict[str, Any]]: ...
    async def get_rule(self, ref: str) -> dict[str, Any]: ...
    async def enable_rule(self, ref: str) -> dict[str, Any]: ...
    async def disable_rule(self, ref: str) -> dict[str, Any]: ...
    async def list_triggers(self) -> builtins.list[dict[str, Any]]: ...
    async def enforcements(
        self, rule: str | None = None, trigger_instance_id: str | None = None, limit: int = 50
    ) -> builtins.list[dict[str, Any]]: ...
    async def emit(
        self, trigger_type: str, payload: Any = None, *, instance_id: str | None = None, **attributes: Any
    ) -> str: ...


async def _engine(request: Request) -> EngineApi:
    # async: FastAPI would run a plain function on a worker thread, a thread hop per request.
    engine: EngineApi = request.app.state.engine
    return engine


EngineDep = Annotated[EngineApi, Depends(_engine)]
Viewer = Annotated[Caller, Depends(require("viewer"))]
Operator = Annotated[Caller, Depends(require("operator"))]
Admin = Annotated[Caller, Depends(require("admin"))]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route may answer (with the ones every route may)."""
    common = (400, 401, 403, 413)
    return {status: {"model": ErrorBody} for status in sorted({*common, *statuses})}


__all__ = ["Admin", "EngineApi", "EngineDep", "Operator", "Viewer", "errors"]
