"""Observability across processes: one trace from the engine's spans to a worker process's, the
worker's JSON log lines and Prometheus endpoint, abandon and retry events when a worker dies.

Real nats-server, real `python -m attune_actors.nats.worker` subprocesses over tests/nats/worker_packs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import eventually
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from attune_actors import Engine
from attune_actors.config import NatsSettings
from attune_actors.nats.connection import connect
from attune_actors.nats.subjects import Subjects
from attune_actors.nats.transport import NatsTransport

WORKER_PACKS = Path(__file__).parent / "worker_packs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Deployment:
    def __init__(self, server: Any, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker(self, name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{name}.out", "wb") as out, open(self.tmp / f"{name}.err", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "attune_actors.nats.worker", "--nats", self.server.url,
                 "--packs", str(WORKER_PACKS), "--worker-id", name, "--heartbeat", "0.25", *extra],
                stdout=out, stderr=err, cwd=self.tmp,
                env={**os.environ, "ATTUNE_NATS__CONNECT_TIMEOUT": "2", **(env or {})},
            )
        self.procs.append(proc)
        return proc

    def text(self, name: str, stream: str) -> str:
        return (self.tmp / f"{name}.{stream}").read_text(errors="replace")

    async def engine(self, **kwargs: Any) -> Engine:
        nc = await connect(NatsSettings(url=self.server.url), name="test engine")
        engine: Engine | None = None

        def action(ref: str) -> Any:
            assert engine is not None
            return engine.catalog.action(ref)

        transport = NatsTransport(
            nc, Subjects(), engine_id="obs-engine", actions=action, heartbeat_timeout=1.5
        )
        engine = Engine(packs=[WORKER_PACKS], data_dir=self.tmp / "data", transport=transport, **kwargs)
        await engine.start()
        self.closers.append((engine, nc))
        return engine

    closers: list[tuple[Engine, Any]]


@pytest.fixture
async def deployment(nats_server: Any, tmp_path: Path) -> AsyncIterator[Deployment]:
    d = Deployment(nats_server, tmp_path)
    d.closers = []
    try:
        yield d
    finally:
        for engine, nc in d.closers:
            await engine.close()
            await nc.close()
        for proc in d.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def stopped(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    await eventually(lambda: proc.poll() is not None, "the worker to drain and exit", 15)
    return proc.returncode


def console_spans(text: str) -> list[dict[str, Any]]:
    """The spans the SDK's console exporter printed (JSON objects, one after another)."""
    decoder = json.JSONDecoder()
    spans, at = [], 0
    text = text.strip()
    while at < len(text):
        span, end = decoder.raw_decode(text, at)
        spans.append(span)
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
    return spans


def hex_id(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


async def test_one_trace_joins_engine_and_worker_spans(deployment: Deployment) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = await deployment.engine(tracer_provider=provider)
    worker = deployment.worker("traced", env={"OTEL_TRACES_EXPORTER": "console",
                                              "OTEL_SERVICE_NAME": "attune-worker"})
    execution = await engine.execute("natstest.chain", {"n": 1})
    final = await engine.wait(execution.id, timeout=30)
    assert final.status == "succeeded"
    assert await stopped(worker) == 0  # the SDK flushes its spans at exit

    local = {span.name: span for span in exporter.get_finished_spans()}
    root = local["execution natstest.chain"]
    task = local["task middle"]
    assert root.parent is None
    assert task.parent is not None
    assert task.parent.span_id == root.context.span_id
    assert task.attributes is not None
    assert task.attributes["attune.task"] == "middle"
    assert task.attributes["attune.status"] == "succeeded"
    assert {"task start", "task first", "task last"} <= set(local)

    remote = console_spans(deployment.text("traced", "out"))
    [attempt] = [s for s in remote if s["name"] == "attempt middle"]
    assert attempt["context"]["trace_id"] == hex_id(root.context.trace_id, 32)
    assert attempt["parent_id"] == hex_id(task.context.span_id, 16)
    assert attempt["attributes"]["attune.attempt"] == 1
    assert attempt["attributes"]["attune.worker"] == "traced"
    assert attempt["attributes"]["attune.status"] == "succeeded"
    assert attempt["resource"]["attributes"]["service.name"] == "attune-worker"


async def test_worker_logs_json_lines_and_serves_metrics(deployment: Deployment) -> None:
    engine = await deployment.engine()
    port = free_port()
    worker = deployment.worker("counted", "--metrics-port", str(port),
                               env={"ATTUNE_LOGGING__FORMAT": "json"})
    execution = await engine.execute("natstest.chain", {"n": 2})
    assert (await engine.wait(execution.id, timeout=30)).status == "succeeded"

    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text) for s in family.samples
    }
    ran = (("action", "natstest.whoami"), ("status", "succeeded"))
    assert samples[("attune_worker_attempts_total", ran)] == 2
    assert samples[("attune_worker_attempt_seconds_count", (("action", "natstest.whoami"),))] == 2
    # the engine's side: two dispatch latencies measured per whoami (noop and echo too)
    engine_side = {
        s.name: s.value
        for family in text_string_to_metric_families(engine.metrics.exposition().decode())
        for s in family.samples
    }
    assert engine_side["attune_nats_dispatch_seconds_count"] >= 2
    assert engine_side["attune_nats_workers"] == 1

    assert await stopped(worker) == 0
    lines = [json.loads(line) for line in deployment.text("counted", "err").splitlines() if line.strip()]
    ended = [entry for entry in lines if entry.get("event") == "attempt_ended"]
    assert len(ended) == 2
    for entry in ended:
        assert entry["execution_id"] == execution.id
        assert entry["task"] == "middle"
        assert entry["status"] == "succeeded"
        assert entry["duration"] >= 0
        assert entry["level"] == "INFO"
    assert any(entry.get("event") == "attempt_started" for entry in lines)
    assert any("ready" in entry["message"] and entry["execution_id"] is None for entry in lines)


async def test_a_killed_worker_gives_abandoned_then_retry_events(
    deployment: Deployment, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    engine = await deployment.engine()
    doomed = deployment.worker("doomed")
    execution = await engine.execute("natstest.slow_retry", {"seconds": 30, "marker_dir": str(markers)})
    events = engine.events(execution.id)
    await eventually(lambda: any(markers.iterdir()), "the slow run to start", 20)
    doomed.send_signal(signal.SIGKILL)
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        async for event in events:
            seen.append(event)
            if event["type"] == "retry":
                break
    events.close()
    kinds = [e["type"] for e in seen]
    abandoned = seen[kinds.index("abandoned")]
    assert abandoned["task"] == "slow"
    assert abandoned["attempt"] == 1
    assert abandoned["retried"] is True
    assert "worker doomed stopped responding" in abandoned["error"]
    retry = seen[-1]
    assert (retry["attempt"], retry["next_attempt"], retry["status"]) == (1, 2, "abandoned")
    assert kinds.index("abandoned") < len(kinds) - 1
    await engine.cancel(execution.id, force=True)
