"""Limits and liveness on NATS (SPEC 12): request bytes, malformed requests, a busy engine loop.

A real nats-server; the control service in front of a real engine, and `serve` itself (run on a
thread of this process, with its own event loop) for the sidecar: `$SRV.PING` and lease renewals
go on while the engine's loop is blocked by a template at the edge of its budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from attune_actors import Engine
from attune_actors.config import load_settings
from attune_actors.nats.cluster import cluster_status
from attune_actors.nats.serve import serve
from attune_actors.nats.service import ControlService
from attune_actors.nats.subjects import Subjects

SUBJECTS = Subjects()
POLL = 0.1  # seconds between polls (each with a deadline)

SQUARE = """
tasks:
  - {name: one, action: testpack.square, input: {n: 3}}
output_map: {n: "{{ task.one.result }}"}
"""


def write_workflow(packs_dir: Path, name: str, text: str) -> str:
    folder = packs_dir / "testpack" / "workflows"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return f"testpack.{name}"


@pytest.fixture(params=[1024 * 1024])
async def service(
    request: pytest.FixtureRequest, nats_server: Any, packs_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[Engine, Client]]:
    """An engine (limits.request_bytes: the param) behind the control service; a client."""
    settings = load_settings(
        environ={},
        overrides={"packs": [str(packs_dir)], "data_dir": str(tmp_path / "data"),
                   "limits": {"request_bytes": request.param}},
    )
    write_workflow(packs_dir, "sq", SQUARE)
    engine = Engine(settings=settings)
    await engine.start()
    nc = await nats.connect(nats_server.url)
    control = ControlService(engine, nc, SUBJECTS, engine_id="limits")
    await control.start()
    client = await nats.connect(nats_server.url)
    yield engine, client
    await control.stop()
    await client.close()
    await nc.close()
    await engine.close()


async def call(client: Client, operation: str, data: bytes, timeout: float = 10) -> tuple[str | None, Any]:
    """(the error code header or None, the JSON reply)."""
    msg = await client.request(SUBJECTS.api(operation), data, timeout=timeout)
    assert msg.data, "an empty reply"
    code = msg.headers.get("Nats-Service-Error-Code") if msg.headers else None
    return code, json.loads(msg.data)


@pytest.mark.parametrize(
    ("operation", "data", "says"),
    [
        ("executions.list", b'{"status": {"$ne": 1}}', "'status' must be one of requested"),
        ("executions.list", b'{"status": ["failed"]}', "'status' must be one of requested"),
        ("executions.list", b'{"limit": {"$gt": 0}}', "'limit' must be an integer of at least 1"),
        ("executions.get", b'{"id": {"$regex": ".*"}}', "'id' must be a non-empty string"),
        ("executions.create", b'{"ref": "testpack.sq", "parameters": [1]}', "'parameters' must be an"),
        ("executions.list", b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        ("executions.list", b'{"status": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested too deeply"),
        ("executions.list", b"\xff\xfe", "not JSON"),
        ("executions.list", b"12", "must be a JSON object"),
    ],
)
async def test_malformed_requests_get_a_4xx_json_error_logged_once(
    service: tuple[Engine, Client],
    caplog: pytest.LogCaptureFixture,
    operation: str,
    data: bytes,
    says: str,
) -> None:
    engine, client = service
    caplog.set_level(logging.INFO)
    code, reply = await call(client, operation, data)
    assert code is not None
    assert code.startswith("4"), (code, reply)
    assert reply["error"]["code"] == "bad_request"
    assert says in reply["error"]["message"]
    logged = [r for r in caplog.records if operation in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert logged[0].exc_info is None  # one line, no traceback
    # still serving
    code, reply = await call(client, "executions.create", b'{"ref": "testpack.sq"}')
    assert code is None
    assert (await engine.wait(reply["id"], timeout=10)).output == {"n": 9}


@pytest.mark.parametrize("service", [4096], indirect=True)
async def test_a_request_over_limits_request_bytes_is_refused_before_anything_runs(
    service: tuple[Engine, Client],
) -> None:
    engine, client = service
    body = json.dumps({"ref": "testpack.sq", "parameters": {"pad": "x" * 5000}}).encode()
    code, reply = await call(client, "executions.create", body)
    assert code == "413"
    assert reply["error"] == {
        "code": "too_large",
        "message": f"executions.create: the request is {len(body)} bytes, which exceeds "
        "limits.request_bytes (4096)",
    }
    assert await engine.list() == []  # nothing was created, nothing ran


# -- a busy engine loop: PING and the lease go on -----------------------------------------------

BUSY = """
tasks:
  - name: build
    action: core.echo
    input:
      x: "{% for a in [1]*20000 %}{% for b in [1]*10000 %}{% endfor %}{% endfor %}done"
"""
LEASE_TTL = 1.5


class ServeThread:
    """`serve()` on its own thread and event loop, as `attune-actors serve` runs it."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.code: int | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-under-test")
        self._thread.start()
        assert self._ready.wait(30)

    def _run(self) -> None:
        async def main() -> int:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            return await serve(self.settings, engine_id="busy", stop=self._stop, lease_ttl=LEASE_TTL)

        try:
            self.code = asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def stop(self) -> int | None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join, 60)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.code


async def ping(client: Client, timeout: float = 2) -> dict[str, Any]:
    msg = await client.request("$SRV.PING.attune-engine", b"", timeout=timeout)
    found: dict[str, Any] = json.loads(msg.data)
    return found


async def test_ping_and_lease_renewals_go_on_while_a_template_keeps_the_loop_busy(
    nats_server: Any, packs_dir: Path, tmp_path: Path
) -> None:
    ref = write_workflow(packs_dir, "busy", BUSY)
    settings = load_settings(
        environ={},
        overrides={
            "packs": [str(packs_dir)],
            "data_dir": str(tmp_path / "data"),
            "store": "sqlite",
            "transport": "nats",
            "nats": {"url": nats_server.url},
            # 200 million loop steps: seconds of work within the (raised) budget
            "limits": {"template_loop_steps": 1_000_000_000},
        },
    )
    served = ServeThread(settings)
    client = await nats.connect(nats_server.url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await ping(client, timeout=0.5)
                break
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                assert time.monotonic() < deadline, "serve did not come up"
                await asyncio.sleep(POLL)  # deliberate: polling with a deadline
        lease = await (client.jetstream()).key_value(SUBJECTS.lease_bucket)
        revision_before = (await lease.get("engine")).revision

        async def create_then_get() -> dict[str, Any]:
            # Both answered by the engine's loop, so only around the render.
            code, created = await call(client, "executions.create", json.dumps({"ref": ref}).encode())
            assert code is None, created
            data = json.dumps({"id": created["id"]}).encode()
            reply = await client.request(SUBJECTS.api("executions.get"), data, timeout=120)
            found: dict[str, Any] = json.loads(reply.data)
            return found

        started = time.monotonic()
        engine_calls = asyncio.ensure_future(create_then_get())
        pings_while_busy = 0
        while not engine_calls.done():
            assert (await ping(client))["name"] == "attune-engine"  # within 2 s, every time
            if not engine_calls.done():
                pings_while_busy += 1
            await asyncio.sleep(0.2)  # deliberate: spacing the pings
        busy_for = time.monotonic() - started
        document = await engine_calls
        revision_after = (await lease.get("engine")).revision

        assert busy_for > LEASE_TTL, "the render was too quick to show anything"
        assert pings_while_busy >= 3
        # The lease was renewed (every ttl/3) through the busy time, not lost.
        assert revision_after - revision_before >= int(busy_for / (LEASE_TTL / 3)) - 2
        assert document["status"] == "running"
        assert document["tasks"][0]["name"] == "build"
    finally:
        await client.close()
        code = await served.stop()
    assert code == 0  # stopped by us, not by a lost lease


# -- a wedged engine loop: the lease is given up, the process exits, the next engine takes over --

WEDGE = """
tasks:
  - name: build
    action: core.echo
    input:
      x: "{% for a in [1]*200000 %}{% for b in [1]*100000 %}{% endfor %}{% endfor %}done"
"""


def stop(*procs: subprocess.Popen[str] | None) -> None:
    """SIGTERM the engines still running, SIGKILL one that does not stop within 30 s."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_a_wedged_engine_gives_up_its_lease_and_exits_and_the_next_one_takes_over(
    nats_server: Any, packs_dir: Path, tmp_path: Path
) -> None:
    ref = write_workflow(packs_dir, "wedge", WEDGE)
    data = tmp_path / "data"
    driver = Path(__file__).parent / "wedge_serve.py"

    def start(steps: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(driver), nats_server.url, str(packs_dir), str(data), str(steps)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )

    async def wait_up(proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                await ping(client, timeout=0.5)
                return
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "serve did not come up"
                await asyncio.sleep(POLL)  # deliberate: polling with a deadline

    client = await nats.connect(nats_server.url)
    first = start(10**11)  # 2 * 10^10 steps allowed: the render would take many minutes
    second: subprocess.Popen[str] | None = None
    try:
        await wait_up(first)
        code, created = await call(client, "executions.create", json.dumps({"ref": ref}).encode())
        assert code is None, created
        # Wedged: the heartbeat stops, the lease is not renewed and is lost, the loop cannot stop.
        returncode = await asyncio.to_thread(first.wait, 60)
        stderr = first.stderr.read() if first.stderr else ""
        assert returncode == 1, stderr
        assert "the engine has not answered for" in stderr
        assert "the engine's event loop is stuck and its lease is lost: exiting" in stderr

        second = start(100_000)  # the default budget
        await wait_up(second)
        deadline = time.monotonic() + 30
        while True:
            code, document = await call(
                client, "executions.get", json.dumps({"id": created["id"]}).encode()
            )
            assert code is None, document
            if document["status"] == "failed":
                break
            assert time.monotonic() < deadline, document
            await asyncio.sleep(POLL)  # deliberate: polling with a deadline
        assert "exceeds limits.template_loop_steps (100000)" in document["error"]["message"]
    finally:
        await client.close()
        stop(first, second)


async def test_a_wedged_cluster_engine_exits_and_another_resumes_its_partitions(
    nats_server: Any, packs_dir: Path, tmp_path: Path
) -> None:
    ref = write_workflow(packs_dir, "wedge", WEDGE)
    driver = Path(__file__).parent / "wedge_serve.py"

    def start(steps: int, name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(driver), nats_server.url, str(packs_dir), str(tmp_path / name), str(steps),
             "cluster", name],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )

    async def served_by(name: str, proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 30
        while True:
            status = await cluster_status(client, SUBJECTS)
            if set(status.members) == {name} and status.served():
                return
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"{name} did not take every partition: {status}"
            await asyncio.sleep(POLL)  # deliberate: polling with a deadline

    client = await nats.connect(nats_server.url)
    first = start(10**11, "wedged")
    second: subprocess.Popen[str] | None = None
    try:
        await served_by("wedged", first)
        # The create is stored, then its first step wedges the loop (the reply may never leave).
        with contextlib.suppress(nats.errors.TimeoutError):
            await call(client, "executions.create", json.dumps({"ref": ref}).encode(), timeout=5)
        returncode = await asyncio.to_thread(first.wait, 60)
        stderr = first.stderr.read() if first.stderr else ""
        assert returncode == 1, stderr
        assert "the engine's event loop is stuck and its lease is lost: exiting" in stderr

        second = start(100_000, "next")  # the default budget
        await served_by("next", second)
        deadline = time.monotonic() + 30
        while True:
            _, listed = await call(client, "executions.list", b"{}")
            found = [e for e in listed["executions"] if e["ref"] == ref]
            if found and found[0]["status"] == "failed":
                break
            assert time.monotonic() < deadline, listed
            await asyncio.sleep(POLL)  # deliberate: polling with a deadline
        assert "exceeds limits.template_loop_steps (100000)" in found[0]["error"]["message"]
    finally:
        await client.close()
        stop(first, second)
