"""Executions: list, read, tasks, graph, control (pause, resume, cancel, rerun) and live events."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from attune_actors.api.deps import EngineDep, Operator, Viewer, errors
from attune_actors.api.models import CancelRequest, Execution, ExecutionList, Graph, RerunRequest, TaskList
from attune_actors.api.responses import JSONResponse
from attune_actors.api.sse import EventStreams
from attune_actors.engine.graphdoc import render_graph
from attune_actors.statuses import Status

router = APIRouter(prefix="/workflow-executions", tags=["executions"])

MAX_LIST = 1000
_GRAPH_TYPES = {"mermaid": "text/vnd.mermaid; charset=utf-8", "dot": "text/vnd.graphviz; charset=utf-8"}


@router.get(
    "",
    response_model=ExecutionList,
    responses=errors(),
    summary="Executions started from the API, newest first",
)
async def list_executions(
    engine: EngineDep,
    _: Viewer,
    status: Annotated[Status | None, Query(description="only executions with this status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST, description="at most this many")] = 50,
) -> Response:
    executions = await engine.list(status=status.value if status else None, limit=limit)
    return JSONResponse({"executions": [e.to_dict() for e in executions]})


@router.get("/{execution_id}", response_model=Execution, responses=errors(404), summary="An execution")
async def get_execution(execution_id: str, engine: EngineDep, _: Viewer) -> Response:
    return JSONResponse((await engine.get(execution_id)).to_dict())


@router.get(
    "/{execution_id}/tasks",
    response_model=TaskList,
    responses=errors(404),
    summary="Its task runs, in the order they started",
)
async def get_tasks(execution_id: str, engine: EngineDep, _: Viewer) -> Response:
    return JSONResponse({"tasks": [t.to_dict() for t in await engine.tasks(execution_id)]})


@router.get(
    "/{execution_id}/graph",
    response_model=Graph,
    responses={
        **errors(404),
        200: {
            "description": "the graph document, or with `format` its Mermaid or DOT text",
            "content": {"text/vnd.mermaid": {}, "text/vnd.graphviz": {}},
        },
    },
    summary="Its workflow as a graph: nodes with their latest status, edges taken or not",
)
async def get_graph(
    execution_id: str,
    engine: EngineDep,
    _: Viewer,
    format: Literal["json", "mermaid", "dot"] = Query("json", description="json, mermaid or dot"),
) -> Response:
    doc = await engine.graph(execution_id)
    if format == "json":
        return JSONResponse(doc)
    return Response(render_graph(doc, format), media_type=_GRAPH_TYPES[format])


@router.post("/{execution_id}/pause", response_model=Execution, responses=errors(404), summary="Pause it")
async def pause(execution_id: str, engine: EngineDep, _: Operator) -> Response:
    return JSONResponse((await engine.pause(execution_id)).to_dict())


@router.post("/{execution_id}/resume", response_model=Execution, responses=errors(404), summary="Resume it")
async def resume(execution_id: str, engine: EngineDep, _: Operator) -> Response:
    return JSONResponse((await engine.resume(execution_id)).to_dict())


@router.post(
    "/{execution_id}/cancel",
    response_model=Execution,
    responses=errors(404),
    summary="Cancel it (`force`: stop running tasks too)",
)
async def cancel(
    execution_id: str, engine: EngineDep, _: Operator, body: CancelRequest | None = None
) -> Response:
    force = body.force if body is not None else False
    return JSONResponse((await engine.cancel(execution_id, force=force)).to_dict())


@router.post(
    "/{execution_id}/rerun",
    status_code=201,
    response_model=Execution,
    responses=errors(404),
    summary="Run a failed, timed-out or canceled execution again, keeping what completed",
)
async def rerun(
    execution_id: str, engine: EngineDep, _: Operator, body: RerunRequest | None = None
) -> Response:
    tasks = body.tasks if body is not None else None
    reset_items = body.reset_items if body is not None else False
    execution = await engine.rerun(execution_id, tasks, reset_items=reset_items)
    return JSONResponse(
        execution.to_dict(),
        status_code=201,
        headers={"Location": f"/api/v1/workflow-executions/{execution.id}"},
    )


@router.get(
    "/{execution_id}/events",
    response_class=StreamingResponse,
    responses={
        **errors(404),
        200: {"description": "server-sent events", "content": {"text/event-stream": {}}},
    },
    summary="Live events: the status now, then every change; ends after the terminal status",
)
async def events(execution_id: str, request: Request, engine: EngineDep, _: Viewer) -> Response:
    streams: EventStreams = request.app.state.streams
    frames = await streams.open(engine, execution_id)
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["router"]
