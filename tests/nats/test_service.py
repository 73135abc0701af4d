"""The NATS control service: request/reply round trips, error replies, discovery, events (issue #7).

A real nats-server (fixture) and a real engine with the in-process transport: the service only talks
to the `Engine`, whichever transport runs the actions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from attune_actors import Engine
from attune_actors.nats.service import ControlService
from attune_actors.nats.subjects import Subjects

POLL = 0.02  # seconds between polls (each with a deadline)
SUBJECTS = Subjects()

TWO_STEPS = """
    parameters:
      n: {type: integer, required: true}
    tasks:
      - {name: first, action: testpack.square, input: {n: "{{ parameters.n }}"}, on_success: second}
      - {name: second, action: core.echo, input: {value: "{{ task.first.result }}"}}
    output_map:
      value: "{{ task.second.result.value }}"
"""

SLOW = """
    tasks:
      - {name: slow, action: testpack.wait, input: {seconds: 0.3}, on_success: after}
      - {name: after, action: testpack.wait, input: {seconds: 0.3}}
"""

INQUIRY = """
    tasks:
      - name: ask
        action: core.inquiry
        input:
          prompt: Ship it?
          schema:
            type: object
            properties: {approved: {type: boolean}}
            required: [approved]
        on_success: done
      - {name: done, action: core.echo, input: {answer: "{{ task.ask.result.approved }}"}}
"""


@dataclass
class Api:
    """A client connection to the control service under test."""

    client: Client
    engine: Engine
    service: ControlService

    async def raw(self, operation: str, data: bytes, timeout: float = 10) -> Msg:
        return await self.client.request(SUBJECTS.api(operation), data, timeout=timeout)

    async def call(self, operation: str, body: Any = None, timeout: float = 10) -> tuple[bool, Any]:
        """(ok, reply): an error reply carries the micro framework's error headers."""
        payload = b"" if body is None else json.dumps(body).encode()
        msg = await self.raw(operation, payload, timeout)
        reply = json.loads(msg.data)
        failed = bool(msg.headers and "Nats-Service-Error-Code" in msg.headers)
        assert not failed or set(reply) == {"error"}, reply
        return not failed, reply

    async def ok(self, operation: str, body: Any = None) -> Any:
        ok, reply = await self.call(operation, body)
        assert ok, reply
        return reply

    async def error(self, operation: str, body: Any = None) -> dict[str, Any]:
        ok, reply = await self.call(operation, body)
        assert not ok, reply
        error: dict[str, Any] = reply["error"]
        return error

    async def listen(self, subject: str) -> Subscription:
        sub = await self.client.subscribe(subject)
        await self.client.flush()
        return sub


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def serve(nats_server: Any, engine_factory: Any) -> AsyncIterator[ApiFactory]:
    """serve(**service_options) -> Api: an engine (over the test packs) behind a started service."""
    connections: list[Client] = []
    services: list[ControlService] = []

    async def make(**options: Any) -> Api:
        engine = await engine_factory()
        nc = await nats.connect(nats_server.url)
        connections.append(nc)
        service = ControlService(engine, nc, SUBJECTS, engine_id="test-engine", **options)
        await service.start()
        services.append(service)
        client = await nats.connect(nats_server.url)
        connections.append(client)
        return Api(client, engine, service)

    yield make
    for service in services:
        await service.stop()
    for nc in connections:
        await nc.close()


async def next_json(sub: Subscription, timeout: float = 10) -> Any:
    return json.loads((await sub.next_msg(timeout=timeout)).data)


async def wait_status(api: Api, execution_id: str, *statuses: str, timeout: float = 10) -> dict[str, Any]:
    """Poll executions.get over NATS until the execution has one of `statuses`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        doc: dict[str, Any] = await api.ok("executions.get", {"id": execution_id})
        if doc["status"] in statuses:
            return doc
        if loop.time() > deadline:
            raise AssertionError(f"execution stayed {doc['status']}, expected one of {statuses}")
        await asyncio.sleep(POLL)  # deliberate: polling with a deadline


async def wait_task(api: Api, execution_id: str, name: str, status: str, timeout: float = 10) -> None:
    """Poll executions.tasks over NATS until the latest run of task `name` has `status`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        tasks = (await api.ok("executions.tasks", {"id": execution_id}))["tasks"]
        if [t["status"] for t in tasks if t["name"] == name][-1:] == [status]:
            return
        if loop.time() > deadline:
            raise AssertionError(f"task {name} did not become {status}: {tasks}")
        await asyncio.sleep(POLL)  # deliberate: polling with a deadline


# ------------------------------------------------------------------------------------ round trips


async def test_create_get_tasks_list_round_trip(workflow: Any, serve: ApiFactory) -> None:
    ref = workflow("two", TWO_STEPS)
    api = await serve()
    created = await api.ok("executions.create", {"ref": ref, "parameters": {"n": 7}})
    assert created["ref"] == ref
    assert created["parameters"] == {"n": 7}
    assert set(created) >= {"id", "status", "output", "error", "started_at", "ended_at", "parent_id", "tasks"}
    await api.engine.wait(created["id"], timeout=10)

    got = await api.ok("executions.get", {"id": created["id"]})
    assert got["status"] == "succeeded"
    assert got["output"] == {"value": 49}
    assert got == (await api.engine.get(created["id"])).to_dict()

    tasks = await api.ok("executions.tasks", {"id": created["id"]})
    assert [(t["name"], t["status"]) for t in tasks["tasks"]] == [
        ("first", "succeeded"),
        ("second", "succeeded"),
    ]
    assert tasks["tasks"][0]["result"] == 49

    other = await api.ok("executions.create", {"ref": ref, "parameters": {"n": 2}, "identity": "alice"})
    await api.engine.wait(other["id"], timeout=10)
    listed = await api.ok("executions.list", {})
    assert [e["id"] for e in listed["executions"]] == [other["id"], created["id"]]  # newest first
    assert [e["id"] for e in (await api.ok("executions.list", {"limit": 1}))["executions"]] == [other["id"]]
    assert (await api.ok("executions.list", {"status": "failed"}))["executions"] == []
    assert len((await api.ok("executions.list"))["executions"]) == 2  # an empty request is {}


async def test_pause_resume_cancel(workflow: Any, serve: ApiFactory) -> None:
    ref = workflow("slow", SLOW)
    api = await serve()
    execution = await api.ok("executions.create", {"ref": ref})
    await wait_task(api, execution["id"], "slow", "running")
    paused = await api.ok("executions.pause", {"id": execution["id"]})
    assert paused["status"] in ("pausing", "paused")
    await wait_status(api, execution["id"], "paused")
    # paused: the first task ended, nothing new was dispatched
    tasks = (await api.ok("executions.tasks", {"id": execution["id"]}))["tasks"]
    assert [(t["name"], t["status"]) for t in tasks] == [("slow", "succeeded"), ("after", "scheduled")]
    await api.ok("executions.resume", {"id": execution["id"]})
    await wait_task(api, execution["id"], "after", "running")
    await api.ok("executions.cancel", {"id": execution["id"], "force": True})
    final = await wait_status(api, execution["id"], "canceled", "succeeded", "failed")
    assert final["status"] == "canceled"
    assert final["tasks"][-1]["status"] == "canceled"  # forced: the running wait was stopped


async def test_rerun_a_canceled_execution(workflow: Any, serve: ApiFactory) -> None:
    ref = workflow("slow", SLOW)
    api = await serve()
    execution = await api.ok("executions.create", {"ref": ref})
    await api.ok("executions.cancel", {"id": execution["id"], "force": True})
    await wait_status(api, execution["id"], "canceled")
    rerun = await api.ok("executions.rerun", {"id": execution["id"], "tasks": ["slow"]})
    assert rerun["id"] != execution["id"]
    assert rerun["rerun_of"] == execution["id"]
    final = await api.engine.wait(rerun["id"], timeout=10)
    assert final.status == "succeeded"
    still_running = await api.ok("executions.create", {"ref": ref})
    error = await api.error("executions.rerun", {"id": still_running["id"]})
    assert error["code"] == "invalid_parameters"
    assert "still running" in error["message"]


async def test_inquiries_list_and_respond(workflow: Any, serve: ApiFactory) -> None:
    ref = workflow("inq", INQUIRY)
    api = await serve()
    execution = await api.ok("executions.create", {"ref": ref})
    await wait_status(api, execution["id"], "pending")  # waiting on the inquiry
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not (found := (await api.ok("inquiries.list", {"execution_id": execution["id"]}))["inquiries"]):
        assert loop.time() < deadline, "no inquiry opened"
        await asyncio.sleep(POLL)  # deliberate: polling with a deadline
    [inquiry] = found
    assert inquiry["prompt"] == "Ship it?"
    assert inquiry["status"] == "pending"
    assert (await api.ok("inquiries.list"))["inquiries"] == [inquiry]  # default: pending ones

    refused = await api.error("inquiries.respond", {"id": inquiry["id"], "response": {"approved": "yes"}})
    assert refused["code"] == "inquiry_refused"
    assert "approved" in refused["message"]
    assert (await api.ok("inquiries.list"))["inquiries"] == [inquiry]  # still pending

    answered = await api.ok("inquiries.respond", {"id": inquiry["id"], "response": {"approved": True}})
    assert answered["status"] == "succeeded"
    assert answered["response"] == {"approved": True}
    final = await api.engine.wait(execution["id"], timeout=10)
    assert final.status == "succeeded"
    assert final.task("done").result == {"answer": True}
    assert (await api.ok("inquiries.list"))["inquiries"] == []
    every = (await api.ok("inquiries.list", {"status": None}))["inquiries"]
    assert [i["status"] for i in every] == ["succeeded"]
    again = await api.error("inquiries.respond", {"id": inquiry["id"], "response": {"approved": False}})
    assert again["code"] == "inquiry_refused"
    unknown = await api.error("inquiries.respond", {"id": "nope", "response": None})
    assert unknown["code"] == "not_found"


async def test_workflows_put_get_list_delete(workflow: Any, serve: ApiFactory) -> None:
    workflow("two", TWO_STEPS)
    api = await serve()
    yaml = "ref: testpack.made\ntasks:\n  - {name: only, action: core.echo, input: {x: 1}}\n"
    put = await api.ok("workflows.put", {"pack": "testpack", "yaml": yaml})
    assert put["ref"] == "testpack.made"
    assert put["runtime_defined"] is True
    got = await api.ok("workflows.get", {"ref": "testpack.made"})
    assert got["source"] == yaml
    listed = await api.ok("workflows.list", {"pack": "testpack"})
    assert sorted(w["ref"] for w in listed["workflows"]) == ["testpack.made", "testpack.two"]
    execution = await api.ok("executions.create", {"ref": "testpack.made"})
    assert (await api.engine.wait(execution["id"], timeout=10)).status == "succeeded"

    invalid = await api.error("workflows.put", {"pack": "testpack", "yaml": "ref: testpack.bad\ntasks: 3\n"})
    assert invalid["code"] == "validation_failed"
    assert invalid["message"]
    assert (await api.error("workflows.put", {"pack": "nopack", "yaml": yaml}))["code"] == "not_found"
    from_file = await api.error("workflows.delete", {"ref": "testpack.two"})
    assert from_file["code"] == "validation_failed"
    assert "pack file" in from_file["message"]

    assert await api.ok("workflows.delete", {"ref": "testpack.made"}) == {
        "ref": "testpack.made",
        "deleted": True,
    }
    assert (await api.error("workflows.get", {"ref": "testpack.made"}))["code"] == "not_found"
    assert (await api.error("workflows.delete", {"ref": "testpack.made"}))["code"] == "not_found"


# ------------------------------------------------------------------------------------ errors


async def test_error_replies(workflow: Any, serve: ApiFactory) -> None:
    ref = workflow("two", TWO_STEPS)
    api = await serve()
    unknown_ref = await api.error("executions.create", {"ref": "testpack.twoo"})
    assert unknown_ref["code"] == "not_found"
    assert "did you mean 'testpack.two'" in unknown_ref["message"]

    invalid = await api.error("executions.create", {"ref": ref, "parameters": {"n": "seven"}})
    assert invalid["code"] == "invalid_parameters"
    assert "n" in invalid["message"]
    missing_param = await api.error("executions.create", {"ref": ref})
    assert missing_param["code"] == "invalid_parameters"

    for operation in ("executions.get", "executions.tasks", "executions.pause", "executions.cancel"):
        missing = await api.error(operation, {})
        assert missing == {
            "code": "bad_request",
            "message": f"{operation}: missing 'id' (a non-empty string)",
        }
        unknown = await api.error(operation, {"id": "does-not-exist"})
        assert unknown["code"] == "not_found"
        assert "does-not-exist" in unknown["message"]

    wrong_type = await api.error("executions.get", {"id": 42})
    assert wrong_type["code"] == "bad_request"
    assert "'id' must be a non-empty string, got 42" in wrong_type["message"]
    typo = await api.error("executions.cancel", {"id": "x", "forse": True})
    assert typo["code"] == "bad_request"
    assert "did you mean 'force'" in typo["message"]
    assert (await api.error("executions.list", {"limit": 0}))["code"] == "bad_request"
    assert (await api.error("executions.list", {"status": "done"}))["code"] == "bad_request"
    assert (await api.error("executions.get", ["id"]))["code"] == "bad_request"

    msg = await api.raw("executions.get", b"{not json")
    assert json.loads(msg.data)["error"]["code"] == "bad_request"
    assert msg.headers is not None
    assert msg.headers["Nats-Service-Error-Code"] == "400"
    assert msg.headers["Nats-Service-Error"].startswith("executions.get: the request is not JSON")

    msg = await api.raw("executions.get", b"\xff\xfe")
    assert json.loads(msg.data)["error"]["code"] == "bad_request"

    with pytest.raises(nats.errors.NoRespondersError):  # no such operation: nothing listens there
        await api.raw("executions.frobnicate", b"{}")

    # the service still answers after all that
    execution = await api.ok("executions.create", {"ref": ref, "parameters": {"n": 3}})
    assert (await api.engine.wait(execution["id"], timeout=10)).output == {"value": 9}


async def test_oversized_request_is_refused(workflow: Any, serve: ApiFactory) -> None:
    ref = workflow("two", TWO_STEPS)
    api = await serve(max_payload=2048)
    dead = await api.listen(SUBJECTS.dead_letters)
    big = {"ref": ref, "parameters": {"n": 1, "padding": "x" * 4096}}
    error = await api.error("executions.create", big)
    assert error["code"] == "too_large"
    assert "is 4158 bytes, which exceeds limits.request_bytes (2048)" in error["message"]
    record = await next_json(dead)
    assert record["code"] == "too_large"
    assert record["size"] > 4096
    assert len(record["payload"]) == 1024
    assert record["truncated"] is True
    assert await api.engine.list() == []  # nothing was started
    assert (await api.ok("executions.list"))["executions"] == []


async def test_malformed_message_is_dead_lettered_and_service_keeps_answering(
    workflow: Any, serve: ApiFactory
) -> None:
    ref = workflow("two", TWO_STEPS)
    api = await serve()
    dead = await api.listen(SUBJECTS.dead_letters)
    service_events = await api.listen(SUBJECTS.service_events)

    reply = await api.raw("executions.create", b'{"ref": ')
    assert json.loads(reply.data)["error"]["code"] == "bad_request"
    record = await next_json(dead)
    assert record["subject"] == "attune.api.executions.create"
    assert record["code"] == "bad_request"
    assert record["payload"] == '{"ref": '
    assert record["engine_id"] == "test-engine"
    assert "not JSON" in record["reason"]
    event = await next_json(service_events)
    assert event["type"] == "error"
    assert event["code"] == "bad_request"
    assert event["subject"] == "attune.api.executions.create"

    # published without a reply subject: nobody to answer, so only the record and the event
    await api.client.publish(SUBJECTS.api("executions.create"), json.dumps({"ref": ref}).encode())
    record = await next_json(dead)
    assert "no reply subject" in record["reason"]
    assert (await next_json(service_events))["type"] == "error"

    execution = await api.ok("executions.create", {"ref": ref, "parameters": {"n": 4}})
    assert (await api.engine.wait(execution["id"], timeout=10)).output == {"value": 16}
    assert [e.id for e in await api.engine.list()] == [execution["id"]]  # the unanswerable one did not run


# ------------------------------------------------------------------------------------ discovery


async def test_srv_ping_info_stats_discover_the_service(serve: ApiFactory) -> None:
    api = await serve()
    await api.ok("executions.list")
    ping = json.loads((await api.client.request("$SRV.PING.attune-engine", b"", timeout=5)).data)
    assert ping["name"] == "attune-engine"
    assert ping["id"] == api.service.service_id
    assert ping["metadata"] == {"prefix": "attune", "engine_id": "test-engine"}

    everyone = json.loads((await api.client.request("$SRV.PING", b"", timeout=5)).data)
    assert everyone["id"] == api.service.service_id

    info = json.loads(
        (await api.client.request(f"$SRV.INFO.attune-engine.{ping['id']}", b"", timeout=5)).data
    )
    subjects = {e["subject"] for e in info["endpoints"]}
    assert {
        "attune.api.executions.create",
        "attune.api.inquiries.respond",
        "attune.api.workflows.put",
    } <= subjects
    assert len(subjects) == len(api.service.operations)

    stats = json.loads((await api.client.request("$SRV.STATS.attune-engine", b"", timeout=5)).data)
    by_subject = {e["subject"]: e for e in stats["endpoints"]}
    assert by_subject["attune.api.executions.list"]["num_requests"] == 1


async def test_subject_prefix_is_configurable(nats_server: Any, engine_factory: Any) -> None:
    engine = await engine_factory()
    nc = await nats.connect(nats_server.url)
    service = ControlService(engine, nc, Subjects("tenant1"))
    await service.start()
    try:
        reply = await nc.request("tenant1.api.executions.list", b"{}", timeout=5)
        assert json.loads(reply.data) == {"executions": []}
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("attune.api.executions.list", b"{}", timeout=5)
    finally:
        await service.stop()
        await nc.close()


# ------------------------------------------------------------------------------------ events

NESTED = """
    tasks:
      - {name: before, action: core.echo, input: {v: 1}, on_success: call}
      - {name: call, action: testpack.two, input: {n: 3}, on_success: after}
      - {name: after, action: core.noop}
"""


async def test_events_for_a_run_arrive_in_order(workflow: Any, serve: ApiFactory) -> None:
    workflow("two", TWO_STEPS)
    ref = workflow("nested", NESTED)
    api = await serve()
    on_nats = await api.listen("attune.events.executions.*")
    in_process = api.engine.events()
    execution = await api.ok("executions.create", {"ref": ref})
    subject = f"attune.events.executions.{execution['id']}"

    received: list[dict[str, Any]] = []
    while not (
        received
        and received[-1]["type"] == "execution"
        and received[-1]["status"] == "succeeded"
        and received[-1]["id"] == execution["id"]
    ):
        msg = await on_nats.next_msg(timeout=10)
        assert msg.subject == subject  # nested executions' events too: on their root's subject
        received.append(json.loads(msg.data))

    expected = []
    async for event in in_process:
        expected.append(json.loads(json.dumps(event, default=str)))
        if len(expected) == len(received):
            break
    in_process.close()
    assert received == expected  # the same events, in the same order

    assert received[0]["type"] == "execution"
    assert received[0]["status"] == "running"
    nested_ids = {e["execution_id"] for e in received} - {execution["id"]}
    assert len(nested_ids) == 1
    assert all(e["root_id"] == execution["id"] for e in received)
    root_tasks = [
        (e["name"], e["status"])
        for e in received
        if e["type"] == "task" and e["execution_id"] == execution["id"]
    ]
    ended = [name for name, status in root_tasks if status == "succeeded"]
    assert ended == ["before", "call", "after"]
    for name in ("before", "call", "after"):
        statuses = [s for n, s in root_tasks if n == name]
        assert statuses.index("running") < statuses.index("succeeded")
    child_end = next(
        i
        for i, e in enumerate(received)
        if e["type"] == "execution" and e["execution_id"] in nested_ids and e["status"] == "succeeded"
    )
    call_end = received.index(
        next(
            e
            for e in received
            if e["type"] == "task" and e.get("name") == "call" and e["status"] == "succeeded"
        )
    )
    assert child_end < call_end
