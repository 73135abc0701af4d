"""Trust boundaries on a shared NATS bus (SPEC 12), tried as an attacker with the documented roles.

A real nats-server runs with the `authorization` block of docs/distributed.md; a real engine
(`serve --store nats`: a cluster engine, owning every partition) and worker run as the `engine` and
`worker` users with a payload key; the test connects
as `admin`, `operator` and `viewer`, and snoops with `operator` and `worker` credentials while a
workflow whose parameter is a secret runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from attune_actors import codec
from attune_actors.config import ClusterSettings
from attune_actors.nats.cluster import partition_of

DOCS = Path(__file__).parents[2] / "docs" / "distributed.md"
SECRET = "S3cr3t-tok3n-42"
PAYLOAD_KEY = base64.b64encode(bytes(range(32))).decode()
ROLES = ("engine", "worker", "admin", "operator", "viewer")
PARTITIONS = ClusterSettings().partitions

LEAKY = """
ref: testpack.leaky
parameters:
  token: {type: string, secret: true, required: true}
tasks:
  - name: login
    action: testpack.talk
    input: {message: "login failed for token {{ parameters.token }}"}
output_map:
  said: "{{ task.login.result }}"
"""

SLOW = """
ref: testpack.slowpoke
tasks:
  - {name: nap, action: testpack.wait, input: {seconds: 1.0, value: real}}
output_map:
  value: "{{ task.nap.result }}"
"""


def documented_authorization() -> str:
    """The nats-server `authorization` block of docs/distributed.md."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("```conf\nauthorization {") + len("```conf\n")
    return text[start : text.index("```", start)]


class Served:
    """A running `serve` or `worker` process; `stop` returns its exit code and stderr."""

    def __init__(self, args: list[str], cwd: Path, module: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=cwd, env={**os.environ, **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def as_role(role: str) -> dict[str, str]:
    """The environment an attune process of `role` runs with."""
    return {
        "ATTUNE_NATS__USER": role,
        "ATTUNE_NATS__PASSWORD": f"{role}-pw",
        "ATTUNE_NATS__INBOX_PREFIX": f"_INBOX_{role}",
        "ATTUNE_NATS__PAYLOAD_KEY": PAYLOAD_KEY,
    }


class Connections:
    """Client connections by role, each remembering the errors the server sent it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.errors: dict[str, list[str]] = {}
        self.open: list[Client] = []

    async def connect(self, role: str, *, inbox_prefix: str | None = None) -> Client:
        errors = self.errors.setdefault(role, [])

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(
            self.url, user=role, password=f"{role}-pw", error_cb=on_error,
            inbox_prefix=inbox_prefix or f"_INBOX_{role}", max_reconnect_attempts=0,
        )
        self.open.append(nc)
        return nc

    async def close(self) -> None:
        for nc in self.open:
            await nc.close()


class Snoop:
    """Everything a subscription saw: subjects, headers and payloads, as bytes."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def on_msg(self, msg: Msg) -> None:
        headers = json.dumps(msg.headers or {}).encode()
        self.seen.append(msg.subject.encode() + b"\0" + headers + b"\0" + (msg.data or b""))

    def holding(self, needle: bytes) -> list[bytes]:
        return [m[:300] for m in self.seen if needle in m]


async def request(nc: Client, operation: str, body: dict[str, Any], timeout: float = 10) -> Any:
    reply = await nc.request(f"attune.api.{operation}", json.dumps(body).encode(), timeout=timeout)
    return json.loads(reply.data)


async def refused(nc: Client, operation: str, body: dict[str, Any]) -> bool:
    """True when the server does not let `nc` ask `operation` at all (no reply ever comes)."""
    try:
        await request(nc, operation, body, timeout=1.5)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return True
    return False


async def until_ready(nc: Client, engine: Served, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await nc.request("$SRV.PING.attune-engine", b"", timeout=1)
            return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            assert engine.proc.poll() is None, engine.stop()
            assert time.monotonic() < deadline, "the engine did not answer $SRV.PING"
            await asyncio.sleep(0.05)  # deliberate: polling with a deadline


async def test_roles_hold_and_no_secret_crosses_the_bus_or_reaches_logs_or_disk(
    nats_server: Any, packs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "auth.conf").write_text(documented_authorization(), encoding="utf-8")
    for role in ROLES:
        monkeypatch.setenv(f"NATS_{role.upper()}_PASSWORD", f"{role}-pw")  # read by nats-server
    nats_server.args.extend(["-c", str(tmp_path / "auth.conf")])
    nats_server.restart()
    url = nats_server.url
    args = ["--nats", url, "--packs", str(packs_dir)]
    serve_args = [*args, "--store", "nats", "--engine-id", "e1"]
    engine = Served(serve_args, tmp_path, "attune_actors.nats.serve", as_role("engine"))
    worker = Served(args, tmp_path, "attune_actors.nats.worker", as_role("worker"))
    conns = Connections(url)
    try:
        admin = await conns.connect("admin")
        operator = await conns.connect("operator")
        viewer = await conns.connect("viewer")
        await until_ready(operator, engine)

        # Snoopers: every role's view of the other roles' inboxes and of everything. The server
        # refuses these subscriptions; the worker's own inbox prefix is allowed (its peers' pull
        # deliveries arrive there), and is the control that snooping really happens.
        snoops: dict[str, Snoop] = {}
        for role, subject in (("operator", "_INBOX.>"), ("operator", ">"), ("viewer", ">"),
                              ("worker", "_INBOX.>"), ("worker", ">"), ("worker", "_INBOX_worker.>")):
            nc = await conns.connect(role, inbox_prefix="_INBOX_snoop") if role == "worker" else (
                operator if role == "operator" else viewer
            )
            snoop = snoops[f"{role} {subject}"] = Snoop()
            await nc.subscribe(subject, cb=snoop.on_msg)
            await nc.flush()
        events = Snoop()
        await operator.subscribe("attune.events.>", cb=events.on_msg)
        await operator.flush()

        # Workflows are admin-only: operators and viewers cannot put one.
        put = {"pack": "testpack", "yaml": LEAKY}
        assert await refused(operator, "workflows.put", {**put, "yaml": "tasks: []"})
        assert await refused(viewer, "workflows.put", put)
        assert await refused(viewer, "executions.create", {"ref": "testpack.leaky"})
        assert any("workflows.put" in e for e in conns.errors["operator"]), conns.errors
        created = await request(admin, "workflows.put", put)
        assert "error" not in created, created
        ref = created["ref"]

        ended: dict[str, asyncio.Future[dict[str, Any]]] = {}

        async def on_event(msg: Msg) -> None:
            event = json.loads(msg.data)
            if event.get("type") == "execution" and event.get("status") in ("succeeded", "failed"):
                future = ended.setdefault(event["id"], asyncio.get_running_loop().create_future())
                if not future.done():
                    future.set_result(event)

        async def run(ref: str, parameters: dict[str, Any]) -> dict[str, Any]:
            execution = await request(operator, "executions.create", {"ref": ref, "parameters": parameters})
            assert execution["ref"] == ref, execution
            future = ended.setdefault(execution["id"], asyncio.get_running_loop().create_future())
            return await asyncio.wait_for(future, 60)

        await operator.subscribe("attune.events.executions.*", cb=on_event)
        final = await run(ref, {"token": SECRET})
        assert final["status"] == "succeeded", final
        assert final["output"] == {"said": "login failed for token ***"}

        # A worker credential forges the outcome of a run another worker took: it reads the attempt
        # key from that worker's delivery (its Nats-Msg-Id header) and reports it succeeded.
        forger = await conns.connect("worker", inbox_prefix="_INBOX_forger")
        forged: list[str] = []

        async def forge(msg: Msg) -> None:
            key = (msg.headers or {}).get("Nats-Msg-Id", "").split("@")[0]
            if key and key not in forged:
                forged.append(key)
                fake = codec.encode([1, "mallory", ["e", key, time.time(), "succeeded", "forged", None]])
                await forger.publish(f"attune.results.p{partition_of(key, PARTITIONS)}", fake)

        await forger.subscribe("_INBOX_worker.>", cb=forge)
        await forger.flush()
        assert "error" not in await request(admin, "workflows.put", {"pack": "testpack", "yaml": SLOW})
        final = await run("testpack.slowpoke", {})
        assert forged
        assert final["status"] == "succeeded", final
        assert final["output"] == {"value": "real"}

        # The cluster's own subjects and buckets are the engines' alone: no other role may send a
        # request past the checks at the door, listen in on routed ones, or touch a partition lease.
        routed = json.dumps({"op": "executions.list", "body": {}}).encode()
        for role, nc in (("admin", admin), ("operator", operator), ("worker", forger)):
            before = len(conns.errors[role])
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await nc.request("attune.cluster.p0", routed, timeout=1)
            await nc.subscribe("attune.cluster.>")
            await nc.publish("$KV.attune_partitions.p0", b'{"holder": "mallory"}')
            await nc.publish("$KV.attune_snapshots.p0.x.forged.h", b"")
            await nc.publish("$JS.API.STREAM.INFO.KV_attune_members", b"")
            await nc.flush()
            deadline = time.monotonic() + 10
            wanted = ("publish to \"attune.cluster.p0\"", "subscription to \"attune.cluster.>\"",
                      "$kv.attune_partitions.p0", "$kv.attune_snapshots.p0", "kv_attune_members")
            while not all(any(w in e.lower() for e in conns.errors[role][before:]) for w in wanted):
                assert time.monotonic() < deadline, (role, conns.errors[role][before:])
                await asyncio.sleep(0.05)  # deliberate: the server's errors arrive asynchronously
        assert snoops["worker _INBOX_worker.>"].seen, "the control snooper saw no deliveries"
        for name, snoop in snoops.items():
            assert not snoop.holding(SECRET.encode()), f"{name} saw the secret"
        assert events.seen
        assert not events.holding(SECRET.encode())
    finally:
        await conns.close()
        outputs = {}
        for name, process in (("engine", engine), ("worker", worker)):
            code, outputs[name] = process.stop()
            assert code == 0, outputs[name]
    assert "action says login failed for token ***" in outputs["worker"]
    # refused: from a worker that did not take the attempt, or (before its worker reported it
    # started) in clear for an attempt sent sealed
    refusals = [line for line in outputs["engine"].splitlines() if "bad message on attune.results.p" in line]
    assert [line for line in refusals if forged[0] in line], outputs["engine"][-3000:]
    for name, text in outputs.items():
        assert SECRET not in text, f"the {name}'s log holds the secret"
        assert "permissions violation" not in text.lower(), text

    # Nothing on disk in clear: JetStream's files (streams and the nats store's KV bucket).
    nats_server.stop()
    files = [p for p in nats_server.store_dir.rglob("*") if p.is_file()]
    assert files
    holding = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert holding == []


def test_the_cli_masks_secrets_in_its_logs(packs_dir: Path, tmp_path: Path) -> None:
    (packs_dir / "testpack" / "workflows").mkdir(exist_ok=True)
    (packs_dir / "testpack" / "workflows" / "leaky.yaml").write_text(LEAKY, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "attune_actors.cli", "--log-level", "DEBUG", "run", "testpack.leaky",
         "--packs", str(packs_dir), "--data-dir", str(tmp_path / "data"), "-p", f"token={SECRET}"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("ATTUNE_")},
    )
    assert proc.returncode == 0, proc.stderr
    assert "action says login failed for token ***" in proc.stderr
    assert SECRET not in proc.stderr
    assert SECRET not in proc.stdout


@pytest.mark.parametrize("module", ["attune_actors.nats.serve", "attune_actors.nats.worker"])
def test_a_bad_payload_key_is_a_one_line_error_before_connecting(module: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--nats", "nats://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "ATTUNE_NATS__PAYLOAD_KEY": "too-short"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: nats.payload_key must be 32 random bytes in base64 or hex (generate one with: python -c "
        '"import os, base64; print(base64.b64encode(os.urandom(32)).decode())")'
    ]
