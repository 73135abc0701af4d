"""The http runner against a real HTTP server on 127.0.0.1 (stdlib http.server in a thread)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from attune_actors.errors import ActionError
from attune_actors.runners import HttpRunner, RunContext, RunnerLimits, RunnerSet
from attune_actors.spec.model import ActionSpec

CTX = RunContext(execution_id="ex", run_id="r", attempt=1, task="t", item_index=None,
                 action="core.http")
HTTP = ActionSpec(ref="core.http", pack="core", name="http", runner_type="http")


class Server:
    def __init__(self) -> None:
        self.release = threading.Event()  # lets /slow answer
        self.slow_started = threading.Event()
        self.big_cut = False  # the client hung up before /big was all sent
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Multi", "a")
                self.send_header("X-Multi", "b")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, status: int, data: Any) -> None:
                self._send(status, json.dumps(data).encode(), "application/json; charset=utf-8")

            def _handle(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if url.path == "/echo":
                    self._json(200, {
                        "method": self.command, "query": parse_qs(url.query),
                        "body": raw.decode(), "content_type": self.headers.get("Content-Type"),
                        "token": self.headers.get("X-Token"),
                    })
                elif url.path == "/text":
                    self._send(200, "plain ✓".encode(), "text/plain; charset=utf-8")
                elif url.path == "/fake-json":
                    self._send(200, b"not json", "application/json")
                elif url.path == "/missing":
                    self._json(404, {"error": "no such thing"})
                elif url.path == "/broken":
                    self._send(500, b"it broke", "text/plain")
                elif url.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/text")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif url.path == "/drip":  # one byte every 0.2 s, forever (until the client goes)
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    try:
                        for _ in range(1000):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.2)  # deliberate: the slow server under test
                    except OSError:
                        pass
                elif url.path == "/big":  # no Content-Length: only reading tells the size
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        for _ in range(int(parse_qs(url.query)["kib"][0])):
                            self.wfile.write(b"b" * 1024)
                    except OSError:
                        server.big_cut = True
                elif url.path == "/declared":
                    self._send(200, b"d" * 5000, "text/plain")
                elif url.path == "/slow":
                    server.slow_started.set()
                    server.release.wait(10)
                    self._json(200, {"slow": True})
                else:
                    self._json(400, {"error": "unexpected path"})

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as srv:
        yield srv


@pytest.fixture
async def runner(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[HttpRunner]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    http = HttpRunner()
    yield http
    await http.aclose()


async def test_get_json(server: Server, runner: HttpRunner) -> None:
    result = await runner.run(
        HTTP, {"url": f"{server.url}/echo", "params": {"q": "x y", "n": 2}}, CTX
    )
    assert result["status_code"] == 200
    assert result["headers"]["content-type"] == "application/json; charset=utf-8"
    assert result["headers"]["x-multi"] == "a, b"
    assert result["body"]["method"] == "GET"
    assert result["body"]["query"] == {"q": ["x y"], "n": ["2"]}


async def test_post_json_and_headers(server: Server, runner: HttpRunner) -> None:
    result = await runner.run(HTTP, {
        "url": f"{server.url}/echo", "method": "post", "json": {"a": [1, 2]},
        "headers": {"X-Token": "t0k"},
    }, CTX)
    body = result["body"]
    assert body["method"] == "POST"
    assert json.loads(body["body"]) == {"a": [1, 2]}
    assert body["content_type"] == "application/json"
    assert body["token"] == "t0k"


async def test_text_body(server: Server, runner: HttpRunner) -> None:
    result = await runner.run(HTTP, {
        "url": f"{server.url}/echo", "method": "PUT", "body": "raw text",
        "headers": {"Content-Type": "text/plain"},
    }, CTX)
    assert result["body"]["body"] == "raw text"
    assert result["body"]["content_type"] == "text/plain"


async def test_non_json_responses(server: Server, runner: HttpRunner) -> None:
    text = await runner.run(HTTP, {"url": f"{server.url}/text"}, CTX)
    assert text["body"] == "plain ✓"
    fake = await runner.run(HTTP, {"url": f"{server.url}/fake-json"}, CTX)
    assert fake["body"] == "not json"
    redirected = await runner.run(HTTP, {"url": f"{server.url}/redirect"}, CTX)
    assert redirected["status_code"] == 200
    assert redirected["body"] == "plain ✓"
    head = await runner.run(HTTP, {"url": f"{server.url}/text", "method": "HEAD"}, CTX)
    assert head["body"] == ""


async def test_error_status_fails_with_the_result(server: Server, runner: HttpRunner) -> None:
    with pytest.raises(ActionError) as info:
        await runner.run(HTTP, {"url": f"{server.url}/missing"}, CTX)
    assert info.value.message == f"GET {server.url}/missing returned HTTP 404 Not Found"
    assert isinstance(info.value.result, dict)
    assert info.value.result["status_code"] == 404
    assert info.value.result["body"] == {"error": "no such thing"}

    with pytest.raises(ActionError, match="HTTP 500") as info:
        await runner.run(HTTP, {"url": f"{server.url}/broken", "method": "DELETE"}, CTX)
    assert isinstance(info.value.result, dict)
    assert info.value.result["body"] == "it broke"


async def test_connection_refused(runner: HttpRunner) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ActionError, match=r"GET http://127\.0\.0\.1:\d+/ failed: ConnectError") \
            as info:
        await runner.run(HTTP, {"url": f"http://127.0.0.1:{port}/"}, CTX)
    assert info.value.result is None


async def test_request_timeout(server: Server, runner: HttpRunner) -> None:
    with pytest.raises(ActionError, match=r"failed: no complete response within 0\.2 seconds"):
        await runner.run(HTTP, {"url": f"{server.url}/slow", "timeout": 0.2}, CTX)


async def test_timeout_is_a_total_deadline_against_a_dripping_server(
    server: Server, runner: HttpRunner
) -> None:
    # Each byte comes well within any per-read timeout; only a total deadline stops this (the
    # message is the deadline's: not a read timeout, not the 200 s the server would take).
    with pytest.raises(ActionError, match=r"GET .*/drip failed: no complete response within 1 seconds"):
        await runner.run(HTTP, {"url": f"{server.url}/drip", "timeout": 1}, CTX)


async def test_timeout_above_the_limit_is_refused(server: Server) -> None:
    async with RunnerSet(limits=RunnerLimits(http_max_seconds=5)) as runners:
        with pytest.raises(ActionError, match=r"parameter 'timeout' \(60\) exceeds "
                                              r"limits.http_max_seconds \(5"):
            await runners.run(HTTP, {"url": f"{server.url}/text", "timeout": 60}, CTX)


async def test_body_is_read_up_to_the_limit_then_the_run_fails(server: Server) -> None:
    async with RunnerSet(limits=RunnerLimits(http_max_body_bytes=64 * 1024)) as runners:
        small = await runners.run(HTTP, {"url": f"{server.url}/big?kib=10"}, CTX)
        assert small["body"] == "b" * 10 * 1024
        with pytest.raises(ActionError, match=r"/big\?kib=100000: the response body is longer, "
                                              r"which exceeds limits.http_max_body_bytes \(65536\); "
                                              r"the run failed without reading the rest"):
            await runners.run(HTTP, {"url": f"{server.url}/big?kib=100000"}, CTX)
        deadline = time.monotonic() + 10
        while not server.big_cut:  # we hung up: the server could not send its 100 MB
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)  # deliberate: polling with a deadline
    async with RunnerSet(limits=RunnerLimits(http_max_body_bytes=1000)) as runners:
        with pytest.raises(ActionError, match=r"the response body is 5000 bytes, which exceeds "
                                              r"limits.http_max_body_bytes \(1000\)"):
            await runners.run(HTTP, {"url": f"{server.url}/declared"}, CTX)


async def test_cancel_in_flight(server: Server, runner: HttpRunner) -> None:
    task = asyncio.create_task(runner.run(HTTP, {"url": f"{server.url}/slow"}, CTX))
    deadline = asyncio.get_running_loop().time() + 10
    while not server.slow_started.is_set():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)  # deliberate: polling with a deadline
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server.release.set()
    # The shared client is still usable after a cancelled request.
    assert (await runner.run(HTTP, {"url": f"{server.url}/text"}, CTX))["status_code"] == 200


async def test_bad_parameters(runner: HttpRunner) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "'url' is required"),
        ({"url": "http://x", "method": "FETCH"}, "'method' must be one of"),
        ({"url": "http://x", "json": {}, "body": "x"}, "cannot both be given"),
        ({"url": "http://x", "body": {"a": 1}}, "'body' must be a string"),
        ({"url": "http://x", "headers": ["a"]}, "'headers' must be an object"),
        ({"url": "http://x", "timeout": 0}, "'timeout' must be a positive number"),
        ({"url": "http://x", "verify_ssl": "no"}, "'verify_ssl' must be a boolean"),
        ({"url": "ftp://x/"}, "failed: UnsupportedProtocol"),
    ]
    for params, message in cases:
        with pytest.raises(ActionError, match=message):
            await runner.run(HTTP, params, CTX)


async def test_closed_runner_refuses(server: Server) -> None:
    http = HttpRunner()
    assert (await http.run(HTTP, {"url": f"{server.url}/text", "verify_ssl": False}, CTX))[
        "status_code"] == 200
    await http.aclose()
    with pytest.raises(ActionError, match="closed"):
        await http.run(HTTP, {"url": f"{server.url}/text"}, CTX)


async def test_absent_optional_parameters_may_be_null(server: Server, runner: HttpRunner) -> None:
    result = await runner.run(HTTP, {
        "url": f"{server.url}/echo", "method": None, "headers": None, "params": None,
        "json": None, "body": None, "timeout": None, "verify_ssl": None,
    }, CTX)
    assert result["body"]["method"] == "GET"
    assert result["body"]["body"] == ""
