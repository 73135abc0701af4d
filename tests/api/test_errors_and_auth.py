"""Errors (every code the API can answer), roles, missing tokens, body limits, the loopback rule."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from api_support import TOKENS, ApiFactory, error_of, waits_for_an_answer
from helpers import execution_reaches

from attune_actors import Engine
from attune_actors.api import HttpServer
from attune_actors.errors import ConfigError

WorkflowWriter = Callable[..., str]

NEEDS_N = """
parameters:
  n: {type: integer, required: true}
tasks:
  - {name: sq, action: testpack.square, input: {n: "{{ parameters.n }}"}}
"""

ASK = """
tasks:
  - name: approve
    action: core.inquiry
    input: {prompt: "go?", schema: {type: object, required: [ok]}}
"""


async def test_every_error_code(api_factory: ApiFactory, workflow: WorkflowWriter) -> None:
    workflow("needs_n", NEEDS_N)
    workflow("ask", ASK)
    api = await api_factory()
    admin = api.client("admin")

    # 400 bad_request: not JSON, a mistyped field, an unknown field, a bad query value
    not_json = await admin.post(
        "/workflows/testpack.needs_n/execute", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert error_of(not_json) == (400, "bad_request")
    mistyped = await admin.post("/workflows/testpack.needs_n/execute", json={"parameters": [1]})
    assert error_of(mistyped) == (400, "bad_request")
    assert "parameters" in mistyped.json()["error"]["message"]
    assert error_of(await admin.get("/workflow-executions", params={"limit": 0})) == (400, "bad_request")
    bad_status = await admin.get("/workflow-executions", params={"status": "done"})
    assert error_of(bad_status) == (400, "bad_request")
    # 400 invalid_parameters: the engine refuses the workflow's parameters, naming them
    missing = await admin.post("/workflows/testpack.needs_n/execute", json={})
    assert error_of(missing) == (400, "invalid_parameters")
    assert "'n'" in missing.json()["error"]["message"]
    wrong = await admin.post("/workflows/testpack.needs_n/execute", json={"parameters": {"n": "x", "m": 1}})
    assert error_of(wrong) == (400, "invalid_parameters")
    # 404 not_found: unknown workflow, execution, inquiry, pack, route
    assert error_of(await admin.post("/workflows/testpack.nope/execute", json={})) == (404, "not_found")
    assert error_of(await admin.get("/workflow-executions/nope")) == (404, "not_found")
    assert error_of(await admin.get("/workflow-executions/nope/graph")) == (404, "not_found")
    assert error_of(await admin.get("/workflow-executions/nope/events")) == (404, "not_found")
    assert error_of(await admin.post("/workflow-executions/nope/cancel")) == (404, "not_found")
    assert error_of(await admin.get("/inquiries/nope")) == (404, "not_found")
    assert error_of(await admin.get("/packs/nope/workflows")) == (404, "not_found")
    assert error_of(await admin.get("/no-such-thing")) == (404, "not_found")
    # 405 method_not_allowed
    assert error_of(await admin.delete("/workflow-executions")) == (405, "method_not_allowed")
    # 409 inquiry_refused: a response that does not fit the schema; the inquiry stays pending
    execution = (await admin.post("/workflows/testpack.ask/execute", json={})).json()
    inquiry_id = await _pending_inquiry(admin, api.engine, execution["id"])
    refused = await admin.post(f"/inquiries/{inquiry_id}/respond", json={"response": {"no": 1}})
    assert error_of(refused) == (409, "inquiry_refused")
    assert (await admin.get(f"/inquiries/{inquiry_id}")).json()["status"] == "pending"
    # 415 unsupported_media_type: a workflow must be YAML (or JSON, which is YAML)
    form = await admin.post("/packs/testpack/workflows", data={"yaml": "tasks: []"})
    assert error_of(form) == (415, "unsupported_media_type")
    # 422 validation_failed: every problem of an invalid definition is listed
    invalid = await admin.post(
        "/packs/testpack/workflows",
        content="ref: testpack.bad\ntasks:\n  - {name: a, action: core.nope}\n  - {name: b, next: [{do: z}]}",
    )
    assert error_of(invalid) == (422, "validation_failed")
    assert len(invalid.json()["error"]["errors"]) >= 2
    # A workflow of a pack file is changed in its file, not over the API.
    assert error_of(await admin.delete("/workflows/testpack.ask")) == (422, "validation_failed")
    # 400 (rerun of a running execution) is the engine's invalid_parameters.
    rerun = await admin.post(f"/workflow-executions/{execution['id']}/rerun")
    assert error_of(rerun) == (400, "invalid_parameters")
    # 503 unavailable: the engine has stopped, the server still answers
    await api.engine.close()
    assert error_of(await admin.get(f"/workflow-executions/{execution['id']}")) == (503, "unavailable")


async def _pending_inquiry(client: httpx.AsyncClient, engine: Engine, execution_id: str) -> str:
    await execution_reaches(engine, execution_id, waits_for_an_answer)
    found = (await client.get("/inquiries", params={"execution_id": execution_id})).json()["inquiries"]
    return str(found[0]["id"])


@pytest.fixture
async def clients(
    api_factory: ApiFactory, workflow: WorkflowWriter
) -> dict[str | None, httpx.AsyncClient]:
    workflow("needs_n", NEEDS_N)
    api = await api_factory()
    return {role: api.client(role) for role in (None, *TOKENS)}


async def test_missing_or_unknown_token_is_401(clients: dict[str | None, httpx.AsyncClient]) -> None:
    anonymous = clients[None]
    for response in (
        await anonymous.get("/workflow-executions"),
        await anonymous.post("/workflows/testpack.needs_n/execute", json={"parameters": {"n": 2}}),
        await anonymous.get("/workflows/testpack.needs_n", headers={"Authorization": "Bearer wrong"}),
        await anonymous.get("/workflows/testpack.needs_n", headers={"Authorization": "Basic YTpi"}),
    ):
        assert error_of(response) == (401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Health is for load balancers: no token needed.
    assert (await anonymous.get("/health")).json()["status"] == "ok"


async def test_roles_are_checked_at_the_door(clients: dict[str | None, httpx.AsyncClient]) -> None:
    viewer, operator, admin = clients["viewer"], clients["operator"], clients["admin"]
    assert (await viewer.get("/whoami")).json() == {"identity": "vera", "role": "viewer", "auth": True}
    assert (await viewer.get("/workflows/testpack.needs_n")).status_code == 200
    # viewer: reading only
    for response in (
        await viewer.post("/workflows/testpack.needs_n/execute", json={"parameters": {"n": 2}}),
        await viewer.post("/workflow-executions/x/pause"),
        await viewer.post("/workflow-executions/x/resume"),
        await viewer.post("/workflow-executions/x/cancel"),
        await viewer.post("/workflow-executions/x/rerun"),
        await viewer.post("/inquiries/x/respond", json={"response": 1}),
        await viewer.post("/packs/testpack/workflows", content="ref: testpack.v\ntasks: []\n"),
    ):
        assert error_of(response) == (403, "unauthorized")
        assert "vera has the viewer role" in response.json()["error"]["message"]
    # operator: runs things, but does not change definitions (putting a workflow is running code)
    executed = await operator.post("/workflows/testpack.needs_n/execute", json={"parameters": {"n": 2}})
    assert executed.status_code == 201
    for response in (
        await operator.post("/packs/testpack/workflows", content="ref: testpack.o\ntasks: []\n"),
        await operator.put("/workflows/testpack.o", content="tasks: []\n"),
        await operator.delete("/workflows/testpack.needs_n"),
    ):
        assert error_of(response) == (403, "unauthorized")
    assert error_of(await admin.get("/workflows/testpack.o")) == (404, "not_found")  # nothing was put
    # admin: everything
    put = await admin.put(
        "/workflows/testpack.o",
        content="tasks:\n  - {name: a, action: core.noop}\n",
    )
    assert put.status_code == 200, put.text


async def test_a_body_over_the_limit_is_refused_before_anything_is_done(
    api_factory: ApiFactory, workflow: WorkflowWriter
) -> None:
    workflow("needs_n", NEEDS_N)
    api = await api_factory(limits={"request_bytes": 2048})
    admin = api.client("admin")
    big = {"parameters": {"n": 2, "padding": "x" * 4096}}

    announced = await admin.post("/workflows/testpack.needs_n/execute", json=big)
    assert error_of(announced) == (413, "too_large")
    assert "limits.request_bytes (2048 bytes)" in announced.json()["error"]["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while it streams
        yield b'{"parameters": {"n": 2, "padding": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}}'

    streamed = await admin.post(
        "/workflows/testpack.needs_n/execute", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert error_of(streamed) == (413, "too_large")
    yaml_text = "ref: testpack.huge\ndescription: " + "y" * 4096 + "\ntasks: []\n"
    assert error_of(await admin.post("/packs/testpack/workflows", content=yaml_text)) == (413, "too_large")

    # Nothing was created: no execution, no workflow.
    assert await api.engine.list() == []
    assert error_of(await admin.get("/workflows/testpack.huge")) == (404, "not_found")
    # Even a route that reads no body refuses one over the limit, before acting.
    execution = await admin.post("/workflows/testpack.needs_n/execute", json={"parameters": {"n": 3}})
    final = await api.engine.wait(execution.json()["id"], timeout=10)
    refused = await admin.post(f"/workflow-executions/{final.id}/rerun", content=b"x" * 4096)
    assert error_of(refused) == (413, "too_large")
    # Under the limit, everything works.
    assert final.status == "succeeded"
    assert len(await api.engine.list()) == 1


async def test_without_tokens_only_loopback_and_everyone_is_admin(api_factory: ApiFactory) -> None:
    api = await api_factory(tokens=False)
    anonymous = api.client(None)
    assert (await anonymous.get("/whoami")).json() == {"identity": None, "role": "admin", "auth": False}
    with pytest.raises(ConfigError, match="loopback addresses only"):
        HttpServer(api.engine, "0.0.0.0:8080")
    with pytest.raises(ConfigError, match="loopback addresses only"):
        HttpServer(api.engine, "[::]:8080")
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        HttpServer(api.engine, "8080")
    HttpServer(api.engine, "[::1]:0")  # loopback: allowed
    HttpServer(api.engine, "localhost:0")


async def test_openapi_document_and_docs_page_need_no_cdn(api_factory: ApiFactory) -> None:
    api = await api_factory()
    async with httpx.AsyncClient(base_url=api.url) as client:
        schema = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
        assert docs.status_code == 200
        sources = [part.split('"')[1] for part in docs.text.split("src=")[1:]]
        sources += [part.split('"')[1] for part in docs.text.split("href=")[1:]]
        assert sources
        assert all(src.startswith("/docs/") for src in sources), sources
        for src in sources:
            asset = await client.get(src)
            assert asset.status_code == 200, src
            assert b"cdn.jsdelivr" not in asset.content
    paths = schema["paths"]
    for path, method in [
        ("/api/v1/packs/{pack}/workflows", "post"),
        ("/api/v1/packs/{pack}/workflows", "get"),
        ("/api/v1/workflows/{ref}", "get"),
        ("/api/v1/workflows/{ref}", "put"),
        ("/api/v1/workflows/{ref}", "delete"),
        ("/api/v1/workflows/{ref}/execute", "post"),
        ("/api/v1/workflow-executions", "get"),
        ("/api/v1/workflow-executions/{execution_id}", "get"),
        ("/api/v1/workflow-executions/{execution_id}/tasks", "get"),
        ("/api/v1/workflow-executions/{execution_id}/graph", "get"),
        ("/api/v1/workflow-executions/{execution_id}/pause", "post"),
        ("/api/v1/workflow-executions/{execution_id}/resume", "post"),
        ("/api/v1/workflow-executions/{execution_id}/cancel", "post"),
        ("/api/v1/workflow-executions/{execution_id}/rerun", "post"),
        ("/api/v1/workflow-executions/{execution_id}/events", "get"),
        ("/api/v1/inquiries", "get"),
        ("/api/v1/inquiries/{inquiry_id}/respond", "post"),
        ("/api/v1/health", "get"),
    ]:
        assert method in paths[path], (path, method)
    execute = paths["/api/v1/workflows/{ref}/execute"]["post"]
    assert execute["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/Execution")
    # A refused request is 400 bad_request, as on NATS; 422 is an invalid workflow definition.
    assert "HTTPValidationError" not in str(schema)
    assert execute["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
