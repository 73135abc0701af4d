"""The HTTP API end to end: real server, real engine, httpx as the client."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

from api_support import ApiFactory, error_of, sse_events, waits_for_an_answer
from helpers import execution_reaches

from attune_actors.api.sse import EventStreams
from attune_actors.config import load_settings

WorkflowWriter = Callable[..., str]

SLOW = """
ref: testpack.slow
description: two short waits
parameters:
  value: {type: string, required: true}
tasks:
  - name: first
    action: testpack.wait
    input: {seconds: 0.2, value: "{{ parameters.value }}"}
    on_success: second
  - {name: second, action: testpack.wait, input: {seconds: 0.1, value: "{{ system.identity.login }}"}}
output_map:
  who: "{{ task.second.result }}"
"""


async def test_workflow_crud_round_trip(api_factory: ApiFactory) -> None:
    api = await api_factory()
    admin = api.client("admin")
    yaml_text = textwrap.dedent(
        """
        ref: testpack.greet
        description: says hello
        parameters:
          name: {type: string, required: true, description: who to greet}
          loud: {type: boolean, default: false}
        tasks:
          - {name: hello, action: core.echo, input: {text: "hello {{ parameters.name }}"}}
        output_map:
          text: "{{ task.hello.result.text }}"
        """
    )
    created = await admin.post(
        "/packs/testpack/workflows", content=yaml_text, headers={"Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/workflows/testpack.greet"
    doc = created.json()
    assert (doc["ref"], doc["pack"], doc["description"], doc["runtime_defined"]) == (
        "testpack.greet",
        "testpack",
        "says hello",
        True,
    )
    assert doc["source"] == yaml_text
    assert doc["parameters"]["name"]["required"] is True
    assert doc["parameters_schema"] == {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "who to greet"},
            "loud": {"type": "boolean", "default": False},
        },
        "required": ["name"],
        "additionalProperties": False,
    }

    assert (await admin.get("/workflows/testpack.greet")).json() == doc
    listed = (await admin.get("/packs/testpack/workflows")).json()["workflows"]
    assert [w["ref"] for w in listed] == ["testpack.greet"]
    assert "testpack.greet" in [w["ref"] for w in (await admin.get("/workflows")).json()["workflows"]]

    # PUT may leave out the ref (the path names it) and replaces the definition.
    changed = yaml_text.replace("ref: testpack.greet\n", "").replace("says hello", "says hello again")
    put = await admin.put("/workflows/testpack.greet", content=changed)
    assert put.status_code == 200, put.text
    assert put.json()["description"] == "says hello again"

    executed = await admin.post("/workflows/testpack.greet/execute", json={"parameters": {"name": "bob"}})
    assert executed.status_code == 201, executed.text
    final = await api.engine.wait(executed.json()["id"], timeout=10)
    assert final.output == {"text": "hello bob"}

    assert (await admin.delete("/workflows/testpack.greet")).status_code == 204
    assert error_of(await admin.get("/workflows/testpack.greet")) == (404, "not_found")
    assert error_of(await admin.delete("/workflows/testpack.greet")) == (404, "not_found")
    # The execution keeps the definition it started with.
    assert (await admin.get(f"/workflow-executions/{final.id}")).json()["status"] == "succeeded"


async def test_execute_then_follow_the_events_until_it_ends(
    api_factory: ApiFactory, workflow: WorkflowWriter
) -> None:
    workflow("slow", SLOW)
    api = await api_factory()
    operator = api.client("operator")
    started = await operator.post("/workflows/testpack.slow/execute", json={"parameters": {"value": "v"}})
    assert started.status_code == 201, started.text
    execution_id = started.json()["id"]
    assert started.headers["location"] == f"/api/v1/workflow-executions/{execution_id}"

    events = await sse_events(operator, f"/workflow-executions/{execution_id}/events")

    # The status first, then the changes, and the stream ends after the terminal status.
    assert events[0]["type"] == "execution"
    assert events[0]["id"] == execution_id
    assert events[0]["status"] in ("requested", "running")
    assert events[-1]["type"] == "execution"
    assert events[-1]["status"] == "succeeded"
    assert events[-1]["output"] == {"who": "otto"}  # the token's identity is system.identity.login
    task_statuses = [(e["name"], e["status"]) for e in events if e["type"] == "task"]
    assert ("first", "succeeded") in task_statuses
    assert ("second", "succeeded") in task_statuses
    assert task_statuses.index(("first", "succeeded")) < task_statuses.index(("second", "succeeded"))

    doc = (await operator.get(f"/workflow-executions/{execution_id}")).json()
    assert doc["status"] == "succeeded"
    tasks = (await operator.get(f"/workflow-executions/{execution_id}/tasks")).json()["tasks"]
    assert [t["name"] for t in tasks] == ["first", "second"]
    assert tasks == doc["tasks"]

    # An ended execution's stream is its status, then the end.
    again = await sse_events(operator, f"/workflow-executions/{execution_id}/events")
    assert [(e["type"], e["status"]) for e in again] == [("execution", "succeeded")]

    listed = (await operator.get("/workflow-executions", params={"status": "succeeded"})).json()
    assert [e["id"] for e in listed["executions"]] == [execution_id]
    assert (await operator.get("/workflow-executions", params={"status": "failed"})).json() == {
        "executions": []
    }


async def test_pause_resume_cancel_and_rerun(api_factory: ApiFactory, workflow: WorkflowWriter) -> None:
    workflow("slow", SLOW)
    api = await api_factory()
    operator = api.client("operator")
    execution_id = (
        await operator.post("/workflows/testpack.slow/execute", json={"parameters": {"value": "v"}})
    ).json()["id"]
    paused = await operator.post(f"/workflow-executions/{execution_id}/pause")
    assert paused.status_code == 200
    assert paused.json()["status"] in ("pausing", "paused")
    resumed = await operator.post(f"/workflow-executions/{execution_id}/resume")
    assert resumed.json()["status"] in ("running", "pausing", "paused")
    canceled = await operator.post(f"/workflow-executions/{execution_id}/cancel", json={"force": True})
    assert canceled.status_code == 200
    final = await api.engine.wait(execution_id, timeout=10)
    assert final.status == "canceled"

    rerun = await operator.post(f"/workflow-executions/{execution_id}/rerun", json={})
    assert rerun.status_code == 201, rerun.text
    final = await api.engine.wait(rerun.json()["id"], timeout=10)
    assert final.status == "succeeded"


async def test_graph_of_a_decision_shows_taken_and_untaken_edges(
    api_factory: ApiFactory, workflow: WorkflowWriter
) -> None:
    workflow(
        "route",
        """
        parameters:
          env: {type: string, default: staging}
        tasks:
          - name: check
            action: core.noop
            decision:
              - when: "{{ parameters.env == 'production' }}"
                next: approve
              - when: "{{ parameters.env == 'staging' }}"
                next: test
              - default: deploy
          - name: approve
            action: core.inquiry
            input: {prompt: "ok?"}
            on_success: deploy
          - {name: test, action: core.echo, input: {step: test}, on_success: deploy}
          - {name: deploy, action: core.echo, input: {step: deploy}, join: 1}
        """,
    )
    api = await api_factory()
    viewer, operator = api.client("viewer"), api.client("operator")
    execution_id = (await operator.post("/workflows/testpack.route/execute", json={})).json()["id"]
    await api.engine.wait(execution_id, timeout=10)

    graph = (await viewer.get(f"/workflow-executions/{execution_id}/graph")).json()
    assert graph["execution_id"] == execution_id
    assert (graph["ref"], graph["status"]) == ("testpack.route", "succeeded")
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert list(nodes) == ["check", "approve", "test", "deploy"]
    assert (nodes["check"]["status"], nodes["check"]["runs"]) == ("succeeded", 1)
    approve = nodes["approve"]
    assert (approve["kind"], approve["status"], approve["runs"]) == ("inquiry", None, 0)
    assert (nodes["deploy"]["kind"], nodes["deploy"]["action"], nodes["deploy"]["join"]) == (
        "action",
        "core.echo",
        1,
    )
    edges = {(e["from"], e["to"]): e for e in graph["edges"]}
    assert {k: e["taken"] for k, e in edges.items()} == {
        ("check", "approve"): False,
        ("check", "test"): True,
        ("check", "deploy"): False,
        ("approve", "deploy"): False,
        ("test", "deploy"): True,
    }
    assert edges[("check", "test")]["when"] == "{{ parameters.env == 'staging' }}"

    mermaid = await viewer.get(f"/workflow-executions/{execution_id}/graph", params={"format": "mermaid"})
    assert mermaid.headers["content-type"].startswith("text/vnd.mermaid")
    ids = {line.split("[")[0].split("{")[0].strip(): line for line in mermaid.text.splitlines()[1:5]}
    by_name = {line.split('"')[1].split("<br/>")[0]: node_id for node_id, line in ids.items()}
    assert mermaid.text.startswith("flowchart TD\n")
    assert f"{by_name['check']} ==>|\"parameters.env == 'staging'\"| {by_name['test']}" in mermaid.text
    assert f"{by_name['check']} -.->|\"parameters.env == 'production'\"| {by_name['approve']}" in mermaid.text
    assert f"{by_name['test']} ==>|\"succeeded#40;#41;\"|" not in mermaid.text  # only " # < > are escaped
    assert f"{by_name['test']} ==>|\"succeeded()\"| {by_name['deploy']}" in mermaid.text

    dot = await viewer.get(f"/workflow-executions/{execution_id}/graph", params={"format": "dot"})
    assert dot.headers["content-type"].startswith("text/vnd.graphviz")
    assert dot.text.startswith('digraph "testpack.route" {')
    assert '"check" -> "test" [label="parameters.env == \'staging\'", style=bold, penwidth=2];' in dot.text
    assert (
        '"check" -> "approve" [label="parameters.env == \'production\'", style=dashed, color=gray50];'
        in dot.text
    )
    png = await viewer.get(f"/workflow-executions/{execution_id}/graph", params={"format": "png"})
    assert error_of(png) == (400, "bad_request")


async def test_inquiry_is_answered_as_the_token_identity(
    api_factory: ApiFactory, workflow: WorkflowWriter
) -> None:
    workflow(
        "ask",
        """
        tasks:
          - name: approve
            action: core.inquiry
            input:
              prompt: Ship it?
              schema: {type: object, properties: {ok: {type: boolean}}, required: [ok]}
              users: [otto]
        output_map:
          answer: "{{ task.approve.result }}"
        """,
    )
    api = await api_factory()
    admin, operator, viewer = api.client("admin"), api.client("operator"), api.client("viewer")
    execution_id = (await operator.post("/workflows/testpack.ask/execute", json={})).json()["id"]

    await execution_reaches(api.engine, execution_id, waits_for_an_answer)
    listed = (await viewer.get("/inquiries", params={"execution_id": execution_id})).json()["inquiries"]
    assert len(listed) == 1
    inquiry = listed[0]
    detail = (await viewer.get(f"/inquiries/{inquiry['id']}")).json()
    assert detail["schema"] == {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
    }
    assert (detail["prompt"], detail["status"], detail["users"]) == ("Ship it?", "pending", ["otto"])

    path = f"/inquiries/{inquiry['id']}/respond"
    # Who answers is the token's identity: ada may not, and no body can claim to be otto.
    assert error_of(await admin.post(path, json={"response": {"ok": True}})) == (409, "inquiry_refused")
    assert error_of(await admin.post(path, json={"response": {"ok": True}, "identity": "otto"})) == (
        400,
        "bad_request",
    )
    assert error_of(await viewer.post(path, json={"response": {"ok": True}})) == (403, "unauthorized")
    assert error_of(await operator.post(path, json={"response": {"ok": "yes"}})) == (409, "inquiry_refused")
    answered = await operator.post(path, json={"response": {"ok": True}})
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "succeeded"
    final = await api.engine.wait(execution_id, timeout=10)
    assert final.output == {"answer": {"ok": True}}
    assert (await viewer.get("/inquiries")).json() == {"inquiries": []}
    everything = (await viewer.get("/inquiries", params={"status": "all"})).json()["inquiries"]
    assert [i["status"] for i in everything] == ["succeeded"]


async def test_a_listener_that_falls_behind_still_sees_the_end(
    workflow: WorkflowWriter, engine_factory: Callable[..., Any]
) -> None:
    """Events dropped for a slow listener (a `gap`) are followed by the current document."""
    ref = workflow(
        "many",
        """
        tasks:
          - {name: a, action: core.noop, on_success: b}
          - {name: b, action: core.noop, on_success: c}
          - {name: c, action: core.noop, on_success: d}
          - {name: d, action: core.noop}
        """,
    )
    settings = load_settings(overrides={"limits": {"event_buffer": 2}}, environ={})
    engine = await engine_factory(settings=settings)
    execution = await engine.execute(ref)
    frames = await EventStreams().open(engine, execution.id)
    first = await anext(frames)
    assert b"event: execution" in first
    await engine.wait(execution.id, timeout=10)  # the listener reads nothing meanwhile
    rest = [frame async for frame in frames]
    names = [f.split(b"\n")[1] for f in rest]
    assert b"event: gap" in names
    after_gap = rest[names.index(b"event: gap") + 1]
    assert b"event: execution" in after_gap
    assert b'"status":"succeeded"' in after_gap
    assert rest[-1] == after_gap  # and that is the end


async def test_stopping_the_server_ends_open_event_streams(
    api_factory: ApiFactory, workflow: WorkflowWriter
) -> None:
    workflow(
        "long",
        """
        tasks:
          - {name: sleep, action: testpack.wait, input: {seconds: 60}}
        """,
    )
    api = await api_factory()
    viewer = api.client("viewer")
    execution = await api.engine.execute("testpack.long")
    lines: list[str] = []
    async with viewer.stream("GET", f"/workflow-executions/{execution.id}/events") as stream:
        async for line in stream.aiter_lines():
            lines.append(line)
            if line.startswith("data: "):
                await api.server.stop()  # while the execution still runs
    assert lines[1] == "event: execution"
    assert (await api.engine.get(execution.id)).status == "running"
