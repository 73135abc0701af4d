"""`attune-actors serve`: an engine process on NATS; startup errors, the exclusive lease, clean shutdown.

The processes are real (`python -m attune_actors.nats.serve`, the same `run` the `serve` command
calls) against a real nats-server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from attune_actors.errors import StoreError
from attune_actors.nats.serve import DataDirLock

POLL = 0.02  # seconds between polls (each with a deadline)

ASK = """
    tasks:
      - name: ask
        action: core.inquiry
        input:
          prompt: Ship it?
          schema: {type: object, properties: {approved: {type: boolean}}, required: [approved]}
"""


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "attune_actors.nats.serve", *args]


def run_serve(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def error_lines(stderr: str) -> list[str]:
    """The lines serve printed itself (not log records)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


class Served:
    """A running `serve` (or worker) process."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        module: str = "attune_actors.nats.serve",
        env: dict[str, str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"serve did not stop on signal {sig}: {err[-2000:]}") from None
        return self.proc.returncode, err


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[Served]]:
    processes: list[Served] = []
    yield processes
    for p in processes:
        if p.proc.poll() is None:
            p.stop(signal.SIGKILL)


async def wait_ready(url: str, engine_id: str, served: Served, timeout: float = 30) -> None:
    """Poll `$SRV.PING.attune-engine` until the engine called `engine_id` answers."""
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if served.proc.poll() is not None:
                _, err = served.proc.communicate()
                raise AssertionError(f"serve exited {served.proc.returncode}: {err[-3000:]}")
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish("$SRV.PING.attune-engine", b"", reply=inbox)
            try:
                while True:
                    msg = await sub.next_msg(timeout=0.2)
                    if msg.data and json.loads(msg.data)["metadata"].get("engine_id") == engine_id:
                        return  # (an empty message is the server's "no responders" status)
            except nats.errors.TimeoutError:
                pass
            finally:
                await sub.unsubscribe()
            if time.monotonic() > deadline:
                raise AssertionError(f"engine {engine_id} did not answer $SRV.PING within {timeout} s")
    finally:
        await nc.close()


async def call(url: str, operation: str, body: dict[str, Any]) -> Any:
    nc = await nats.connect(url)
    try:
        return json.loads(
            (await nc.request(f"attune.api.{operation}", json.dumps(body).encode(), timeout=10)).data
        )
    finally:
        await nc.close()


# ------------------------------------------------------------------------------------ data dir lock


def test_data_dir_lock_is_exclusive(tmp_path: Path) -> None:
    with DataDirLock(tmp_path / "data") as held:
        assert held.path.read_text().startswith(f"pid {os.getpid()} ")
        with pytest.raises(StoreError, match=r"data dir .*data is in use by another engine \(pid \d+ on "):
            DataDirLock(tmp_path / "data").__enter__()
    with DataDirLock(tmp_path / "data"):  # released on exit
        pass


def test_serve_refuses_a_data_dir_another_engine_holds(tmp_path: Path) -> None:
    with DataDirLock(tmp_path / "data"):
        proc = run_serve("--nats", "nats://127.0.0.1:1", "--data-dir", "data", cwd=tmp_path)
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [proc.stderr.strip().splitlines()[-1]]
    assert "is in use by another engine" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------ startup errors


def test_serve_cannot_connect(tmp_path: Path) -> None:
    proc = run_serve(
        "--nats",
        "nats://127.0.0.1:1",
        "--data-dir",
        "data",
        cwd=tmp_path,
        env={"ATTUNE_NATS__CONNECT_TIMEOUT": "0.3"},
    )
    assert proc.returncode == 2
    [line] = error_lines(proc.stderr)
    assert line.startswith("error: cannot connect to NATS at nats://127.0.0.1:1")
    assert "Traceback" not in proc.stderr


def test_serve_refuses_the_memory_store(tmp_path: Path) -> None:
    proc = run_serve("--data-dir", "data", cwd=tmp_path, env={"ATTUNE_STORE": "memory"})
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        "error: serve keeps executions durable: store must be sqlite or nats, not memory"
    ]


def test_serve_help_lists_the_options() -> None:
    proc = subprocess.run(serve_command("--help"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for option in ("--nats", "--packs", "--data-dir", "--store", "--subject-prefix", "--engine-id"):
        assert option in proc.stdout


# ------------------------------------------------------------------------------------ serving


async def test_serve_answers_holds_its_lease_and_stops_cleanly(
    nats_server: Any, workflow: Any, packs_dir: Path, tmp_path: Path, served: list[Served]
) -> None:
    ref = workflow("ask", ASK)
    workflow("broken", "tasks: 3\n")
    args = ["--nats", nats_server.url, "--packs", str(packs_dir), "--store", "sqlite"]
    first = Served([*args, "--data-dir", "one", "--engine-id", "first"], tmp_path)
    served.append(first)
    await wait_ready(nats_server.url, "first", first)

    # an invalid workflow does not stop the engine: it is left out, and executing it says why
    broken = await call(nats_server.url, "executions.create", {"ref": "testpack.broken"})
    assert broken["error"]["code"] == "validation_failed"
    assert "broken.yaml" in broken["error"]["message"]

    # an inquiry runs on the engine itself, so this round trip needs no worker
    execution = await call(nats_server.url, "executions.create", {"ref": ref})
    deadline = time.monotonic() + 10
    while not (
        pending := (await call(nats_server.url, "inquiries.list", {"execution_id": execution["id"]}))[
            "inquiries"
        ]
    ):
        assert time.monotonic() < deadline, "no inquiry opened"
        await asyncio.sleep(POLL)  # deliberate: polling with a deadline
    await call(nats_server.url, "inquiries.respond", {"id": pending[0]["id"], "response": {"approved": True}})
    while (doc := await call(nats_server.url, "executions.get", {"id": execution["id"]}))[
        "status"
    ] != "succeeded":
        assert time.monotonic() < deadline, doc
        await asyncio.sleep(POLL)  # deliberate: polling with a deadline

    # a second engine on the same subject prefix (even with its own data dir) refuses to start
    second = run_serve(*args, "--data-dir", "two", "--engine-id", "second", cwd=tmp_path)
    assert second.returncode == 2
    [line] = error_lines(second.stderr)
    assert "lease" in line or "held" in line, line
    assert "Traceback" not in second.stderr

    code, err = first.stop(signal.SIGTERM)
    assert code == 0, err
    assert "Traceback" not in err

    # the lease was released: a restart serves at once, with the execution kept in the data dir
    again = Served([*args, "--data-dir", "one", "--engine-id", "first"], tmp_path)
    served.append(again)
    await wait_ready(nats_server.url, "first", again)
    kept = await call(nats_server.url, "executions.get", {"id": execution["id"]})
    assert kept["status"] == "succeeded"
    assert kept["tasks"][0]["result"] == {"approved": True}
    code, err = again.stop(signal.SIGINT)
    assert code == 0, err


async def test_serve_stops_when_its_lease_is_lost(
    nats_server: Any, packs_dir: Path, tmp_path: Path, served: list[Served]
) -> None:
    engine = Served(["--nats", nats_server.url, "--packs", str(packs_dir), "--engine-id", "e1"], tmp_path)
    served.append(engine)
    await wait_ready(nats_server.url, "e1", engine)
    nc = await nats.connect(nats_server.url)
    try:  # as if it had expired and another engine had taken it
        await (await nc.jetstream().key_value("attune_lease")).delete("engine")
    finally:
        await nc.close()
    try:
        code = engine.proc.wait(timeout=20)  # noticed at the next renewal, within ttl / 3
    except subprocess.TimeoutExpired:
        raise AssertionError("serve kept running without its lease") from None
    _, err = engine.proc.communicate()
    assert code == 1, err
    assert "lease" in err
    assert "Traceback" not in err


TWO_STEPS = """
    parameters:
      n: {type: integer, required: true}
    tasks:
      - {name: first, action: testpack.square, input: {n: "{{ parameters.n }}"}, on_success: second}
      - {name: second, action: core.echo, input: {value: "{{ task.first.result }}"}}
    output_map:
      value: "{{ task.second.result.value }}"
"""


async def test_serve_with_a_worker_on_the_nats_store(
    nats_server: Any, workflow: Any, packs_dir: Path, tmp_path: Path, served: list[Served]
) -> None:
    ref = workflow("two", TWO_STEPS)
    engine = Served(
        ["--nats", nats_server.url, "--packs", str(packs_dir), "--store", "nats", "--engine-id", "e1"],
        tmp_path,
    )
    served.append(engine)
    worker = Served(
        ["--nats", nats_server.url, "--packs", str(packs_dir)], tmp_path, "attune_actors.nats.worker"
    )
    served.append(worker)
    await wait_ready(nats_server.url, "e1", engine)

    nc = await nats.connect(nats_server.url)
    try:
        events = await nc.subscribe("attune.events.executions.*")
        reply = await nc.request(
            "attune.api.executions.create",
            json.dumps({"ref": ref, "parameters": {"n": 6}}).encode(),
            timeout=10,
        )
        execution = json.loads(reply.data)
        received: list[dict[str, Any]] = []
        while (
            not received
            or received[-1]["type"] != "execution"
            or received[-1]["status"] not in ("succeeded", "failed", "timeout", "canceled")
        ):
            msg = await events.next_msg(timeout=30)
            assert msg.subject == f"attune.events.executions.{execution['id']}"
            received.append(json.loads(msg.data))
    finally:
        await nc.close()
    assert received[-1]["status"] == "succeeded", received
    assert received[-1]["output"] == {"value": 36}
    task_events = [(e["name"], e["status"]) for e in received if e["type"] == "task"]
    assert [t for t in task_events if t[1] == "succeeded"] == [
        ("first", "succeeded"),
        ("second", "succeeded"),
    ]
    assert task_events.index(("first", "running")) < task_events.index(("first", "succeeded"))
    assert not (tmp_path / ".attune" / "engine.lock").exists()  # the nats store needs no data dir lock

    for process in (engine, worker):
        code, err = process.stop(signal.SIGTERM)
        assert code == 0, err
        assert "Traceback" not in err


# ------------------------------------------------------------------------------------ permissions

DOCS = Path(__file__).parents[2] / "docs" / "distributed.md"


def documented_authorization() -> str:
    """The nats-server `authorization` block of docs/distributed.md ("Subject permissions")."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("```conf\nauthorization {") + len("```conf\n")
    return text[start : text.index("```", start)]


async def test_the_documented_permissions_are_enough(
    nats_server: Any,
    workflow: Any,
    packs_dir: Path,
    tmp_path: Path,
    served: list[Served],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = workflow("two", TWO_STEPS)
    block = documented_authorization()
    # plus an observer of the lease bucket, to see the engine renew its lease
    watcher = '{ user: observer, password: observer, permissions: { subscribe: "$KV.attune_lease.>" } }'
    block = block.replace("  users = [\n", f"  users = [\n    {watcher}\n")
    (tmp_path / "auth.conf").write_text(block, encoding="utf-8")
    for role in ("ENGINE", "WORKER", "ADMIN", "OPERATOR", "VIEWER"):
        monkeypatch.setenv(f"NATS_{role}_PASSWORD", f"{role.lower()}-secret")  # read by nats-server
    nats_server.args.extend(["-c", str(tmp_path / "auth.conf")])
    nats_server.restart()
    url = nats_server.url

    def as_user(role: str) -> dict[str, str]:
        return {"ATTUNE_NATS__USER": role, "ATTUNE_NATS__PASSWORD": f"{role}-secret",
                "ATTUNE_NATS__INBOX_PREFIX": f"_INBOX_{role}"}

    observer = await nats.connect(url, user="observer", password="observer")
    client = await nats.connect(
        url, user="operator", password="operator-secret", inbox_prefix="_INBOX_operator"
    )
    try:
        lease_writes = await observer.subscribe("$KV.attune_lease.engine")
        await observer.flush()
        engine = Served(
            ["--nats", url, "--packs", str(packs_dir), "--store", "nats", "--no-cluster",
             "--engine-id", "e1"],
            tmp_path, env=as_user("engine"),
        )
        served.append(engine)
        worker = Served(
            ["--nats", url, "--packs", str(packs_dir)], tmp_path, "attune_actors.nats.worker",
            env=as_user("worker"),
        )
        served.append(worker)

        # discovery and replies go through allow_responses
        deadline = time.monotonic() + 30
        while True:
            try:
                ping = json.loads((await client.request("$SRV.PING.attune-engine", b"", timeout=1)).data)
                break
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                assert engine.proc.poll() is None, engine.stop()
                assert time.monotonic() < deadline, "the engine did not answer $SRV.PING"
                await asyncio.sleep(POLL)  # deliberate: polling with a deadline
        assert ping["metadata"]["engine_id"] == "e1"

        events = await client.subscribe("attune.events.executions.*")
        reply = await client.request(
            "attune.api.executions.create",
            json.dumps({"ref": ref, "parameters": {"n": 9}}).encode(),
            timeout=10,
        )
        assert json.loads(reply.data)["ref"] == ref
        while True:  # a worker ran the actions: dispatch, results, heartbeats, events all allowed
            event = json.loads((await events.next_msg(timeout=30)).data)
            if event["type"] == "execution" and event["status"] in ("succeeded", "failed"):
                break
        assert event["status"] == "succeeded", event
        assert event["output"] == {"value": 81}
        bad = await client.request("attune.api.executions.get", b"{", timeout=10)
        assert json.loads(bad.data)["error"]["code"] == "bad_request"

        # a second engine reads who holds the lease, and is refused
        second = run_serve(
            "--nats", url, "--packs", str(packs_dir), "--data-dir", "two", cwd=tmp_path, env=as_user("engine")
        )
        assert second.returncode == 2
        assert "lease held" in error_lines(second.stderr)[0]
        # the engine renews its lease (every ttl / 3 s): an update, on condition of its last revision
        while True:
            write = await lease_writes.next_msg(timeout=10)
            expected = (write.headers or {}).get("Nats-Expected-Last-Subject-Sequence")
            if json.loads(write.data)["holder"].startswith("e1-") and expected not in (None, "0"):
                break
    finally:
        await client.close()
        await observer.close()

    for process in (engine, worker):
        code, err = process.stop(signal.SIGTERM)
        assert code == 0, err
        assert "permissions violation" not in err.lower(), err
        assert "Traceback" not in err
    assert "permissions violation" not in second.stderr.lower(), second.stderr
