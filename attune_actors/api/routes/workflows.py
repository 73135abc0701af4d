"""Workflow definitions (list, read, put, delete) and executing them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from attune_actors.api.deps import Admin, EngineDep, Operator, Viewer, errors
from attune_actors.api.errors import ApiError
from attune_actors.api.models import ExecuteRequest, Execution, Workflow, WorkflowList
from attune_actors.api.responses import JSONResponse
from attune_actors.engine.engine import WorkflowInfo

router = APIRouter(tags=["workflows"])

# JSON is YAML too.
_YAML_TYPES = (
    "",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "text/plain",
    "application/json",
)

_YAML_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the workflow definition (YAML, with its `ref`)",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


@router.get(
    "/packs/{pack}/workflows",
    response_model=WorkflowList,
    responses=errors(404),
    summary="The workflows of a pack",
)
async def list_pack_workflows(pack: str, engine: EngineDep, _: Viewer) -> Response:
    return JSONResponse({"workflows": [_workflow(w) for w in await engine.list_workflows(pack)]})


@router.post(
    "/packs/{pack}/workflows",
    status_code=201,
    response_model=Workflow,
    responses=errors(404, 415, 422),
    openapi_extra=_YAML_BODY,
    summary="Create (or replace) a workflow of a pack from YAML",
)
async def create_workflow(pack: str, request: Request, engine: EngineDep, _: Admin) -> Response:
    ref = await engine.put_workflow(pack, await _yaml(request))
    doc = _workflow(await engine.get_workflow(ref))
    return JSONResponse(doc, status_code=201, headers={"Location": f"/api/v1/workflows/{ref}"})


@router.get("/workflows", response_model=WorkflowList, responses=errors(404), summary="Every workflow")
async def list_workflows(
    engine: EngineDep, _: Viewer, pack: Annotated[str | None, Query(description="only this pack's")] = None
) -> Response:
    return JSONResponse({"workflows": [_workflow(w) for w in await engine.list_workflows(pack)]})


@router.get(
    "/workflows/{ref}",
    response_model=Workflow,
    responses=errors(404, 422),
    summary="A workflow: parameters (with their JSON Schema) and source",
)
async def get_workflow(ref: str, engine: EngineDep, _: Viewer) -> Response:
    return JSONResponse(_workflow(await engine.get_workflow(ref)))


@router.put(
    "/workflows/{ref}",
    response_model=Workflow,
    responses=errors(404, 415, 422),
    openapi_extra=_YAML_BODY,
    summary="Create or replace a workflow put at run time (its YAML may leave out `ref`)",
)
async def put_workflow(ref: str, request: Request, engine: EngineDep, _: Admin) -> Response:
    pack, dot, name = ref.partition(".")
    if not dot or not name:
        raise ApiError("bad_request", f"'{ref}' is not a workflow ref (<pack>.<name>)")
    await engine.put_workflow(pack, await _yaml(request), ref=ref)
    return JSONResponse(_workflow(await engine.get_workflow(ref)))


@router.delete(
    "/workflows/{ref}",
    status_code=204,
    response_class=Response,
    responses=errors(404, 422),
    summary="Delete a workflow put at run time",
)
async def delete_workflow(ref: str, engine: EngineDep, _: Admin) -> Response:
    await engine.delete_workflow(ref)
    return Response(status_code=204)


@router.post(
    "/workflows/{ref}/execute",
    status_code=201,
    response_model=Execution,
    responses=errors(404, 422),
    summary="Start an execution; the caller's identity becomes system.identity.login",
)
async def execute(
    ref: str, engine: EngineDep, caller: Operator, body: ExecuteRequest | None = None
) -> Response:
    parameters = body.parameters if body is not None else {}
    execution = await engine.execute(ref, parameters, identity=caller.identity)
    return JSONResponse(
        execution.to_dict(),
        status_code=201,
        headers={"Location": f"/api/v1/workflow-executions/{execution.id}"},
    )


async def _yaml(request: Request) -> str:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in _YAML_TYPES:
        raise ApiError(
            "unsupported_media_type", f"the body must be the workflow as YAML (application/yaml), not {kind}"
        )
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError("bad_request", f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None


def _workflow(info: WorkflowInfo) -> dict[str, Any]:
    """The workflow document, with a JSON Schema of its parameters for forms and clients."""
    doc = info.to_dict()
    properties: dict[str, Any] = {}
    required: list[str] = []
    for p in info.parameters:
        prop: dict[str, Any] = {}
        if p.type is not None:
            prop["type"] = p.type
        if p.enum is not None:
            prop["enum"] = list(p.enum)
        if p.has_default:
            prop["default"] = p.default
        if p.description:
            prop["description"] = p.description
        if p.secret:
            prop["writeOnly"] = True
        properties[p.name] = prop
        if p.required and not p.has_default:
            required.append(p.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    doc["parameters_schema"] = schema
    return doc


__all__ = ["router"]
