"""`attune-actors serve --http` as a real process (no NATS), and a schema-driven fuzz of its API.

The fuzz generates requests from `/openapi.json` with schemathesis (valid ones and invalid ones) for
every operation and checks that none gets a 500, and that every answer has a documented status,
content type and shape.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from api_support import TOKENS, token_settings
from hypothesis import HealthCheck, assume, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

REPO = Path(__file__).parents[2]
TOKEN_ITEMS = token_settings().items()


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`serve --http` on the example packs, tokens configured, SQLite data dir; no NATS anywhere."""
    tmp = tmp_path_factory.mktemp("serve")
    config = tmp / "attune.yaml"
    config.write_text(
        "http:\n  tokens:\n"
        + "".join(f"    {d}: {{identity: {t['identity']}, role: {t['role']}}}\n" for d, t in TOKEN_ITEMS),
        encoding="utf-8",
    )
    port = _free_port()
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "attune_actors.cli", "serve", "--http", f"127.0.0.1:{port}",
             "--packs", str(REPO / "packs"), "--data-dir", str(tmp / "data")],
            env={**os.environ, "ATTUNE_CONFIG": str(config)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"serve --http did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.05)  # deliberate: polling a starting process with a deadline
    yield Served(url, proc, log)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_serve_http_runs_an_embedded_engine_and_stops_on_sigterm(served: Served) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['operator'][0]}"}
    with httpx.Client(base_url=f"{served.url}/api/v1", headers=headers, timeout=30) as client:
        body = {"parameters": {"environment": "staging"}}
        started = client.post("/workflows/examples.decision/execute", json=body)
        assert started.status_code == 201, started.text
        execution_id = started.json()["id"]
        with client.stream("GET", f"/workflow-executions/{execution_id}/events") as stream:
            last = [line for line in stream.iter_lines() if line.startswith("data: ")][-1]
        assert '"status":"succeeded"' in last
        doc = client.get(f"/workflow-executions/{execution_id}").json()
        assert doc["output"] == {"environment": "staging", "path": "run_tests"}
        assert client.get("/whoami").json()["identity"] == "otto"


_FRAMING = {"content-length", "transfer-encoding", "host", "connection"}


def test_fuzzing_the_openapi_schema_finds_no_server_error(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    headers = {"Authorization": f"Bearer {TOKENS['admin'][0]}"}
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                # Headers that frame the HTTP message belong to the HTTP server, not the API: a
                # garbled Content-Length gets uvicorn's own plain-text 400 before the app runs.
                assume(not _FRAMING.intersection(k.lower() for k in case.headers or {}))
                response = case.call(base_url=served.url, headers=headers, timeout=30)
                case.validate_response(response, checks=checks, headers=headers)

            try:
                check()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no parameters, no body
    assert "Traceback" not in served.log.read_text(), served.log.read_text()[-3000:]
