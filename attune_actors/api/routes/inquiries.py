"""Inquiries: the questions executions wait on, and answering them as the caller."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from attune_actors.api.deps import EngineDep, Operator, Viewer, errors
from attune_actors.api.models import Inquiry, InquiryList, RespondRequest
from attune_actors.api.responses import JSONResponse
from attune_actors.errors import NotFoundError

router = APIRouter(prefix="/inquiries", tags=["inquiries"])


@router.get(
    "", response_model=InquiryList, responses=errors(), summary="Inquiries (by default the pending ones)"
)
async def list_inquiries(
    engine: EngineDep,
    _: Viewer,
    execution_id: Annotated[
        str | None, Query(description="only this execution's (nested ones included)")
    ] = None,
    status: Annotated[
        Literal["pending", "succeeded", "timeout", "canceled", "all"],
        Query(description="only inquiries with this status (all: every status)"),
    ] = "pending",
) -> Response:
    found = await engine.inquiries(None if status == "all" else status, execution_id=execution_id)
    return JSONResponse({"inquiries": found})


@router.get(
    "/{inquiry_id}",
    response_model=Inquiry,
    responses=errors(404),
    summary="An inquiry, with the JSON Schema its response must satisfy",
)
async def get_inquiry(inquiry_id: str, engine: EngineDep, _: Viewer) -> Response:
    for inquiry in await engine.inquiries(None):
        if inquiry["id"] == inquiry_id:
            return JSONResponse(inquiry)
    raise NotFoundError(f"no inquiry '{inquiry_id}'")


@router.post(
    "/{inquiry_id}/respond",
    response_model=Inquiry,
    responses=errors(404, 409),
    summary="Answer an inquiry as the caller (the response must validate against its schema)",
)
async def respond(inquiry_id: str, body: RespondRequest, engine: EngineDep, caller: Operator) -> Response:
    return JSONResponse(await engine.respond(inquiry_id, body.response, identity=caller.identity))


__all__ = ["router"]
