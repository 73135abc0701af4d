"""The `http` runner: one HTTP request per run, through a client shared by all runs.

Parameters: `url` (required), `method` (default GET), `headers`, `params` (query string), `json` (a
JSON body), `body` (a text body), `timeout` (seconds for the whole exchange, default the runner's),
and `verify_ssl` (default true). Redirects are followed.

Limits: `timeout` is a total deadline, from connecting to the last byte of the body (httpx's own
timeouts are per operation: a server dripping a byte a second would never trip them); it may not
exceed `max_seconds` (limits.http_max_seconds). The body is read up to `max_body_bytes`
(limits.http_max_body_bytes, counted after content decoding); a longer body fails the run as soon as
the limit is passed, without reading the rest.

Result: `{"status_code", "headers", "body"}`; header names are lower-case (repeated headers joined
with ", "), and the body is parsed JSON when the response's content type is JSON, else text. A
status of 400 or more fails the run and keeps the result; a transport error fails it without one.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from typing import TYPE_CHECKING, Any

from attune_actors.errors import ActionError
from attune_actors.runners._base import DEFAULT_MAX_RESULT_BYTES, RunContext
from attune_actors.spec.model import ActionSpec

if TYPE_CHECKING:
    import httpx  # imported on the first request: ~100 ms of every command's start-up otherwise

__all__ = ["HttpRunner"]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class HttpRunner:
    """Sends HTTP requests; `aclose()` closes the shared connection pools."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        max_seconds: float = 300.0,
        max_body_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.max_body_bytes = max_body_bytes
        # httpx verifies certificates per client, so there is one client per `verify_ssl` value,
        # each created on first use.
        self._clients: dict[bool, httpx.AsyncClient] = {}
        self._closed = False

    def _client(self, verify: bool) -> httpx.AsyncClient:
        client = self._clients.get(verify)
        if client is None:
            import httpx

            client = httpx.AsyncClient(verify=verify, follow_redirects=True)
            self._clients[verify] = client
        return client

    async def run(
        self, action: ActionSpec, parameters: dict[str, Any], context: RunContext
    ) -> Any:
        if self._closed:
            raise ActionError("the http runner is closed")
        url = parameters.get("url")
        if not isinstance(url, str) or not url:
            raise ActionError("parameter 'url' is required and must be a string")
        method = parameters.get("method") or "GET"
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise ActionError(f"parameter 'method' must be one of {', '.join(METHODS)}")
        method = method.upper()
        # An optional parameter that was not given may arrive as None: it means "the default".
        verify = parameters.get("verify_ssl")
        if verify is None:
            verify = True
        if not isinstance(verify, bool):
            raise ActionError("parameter 'verify_ssl' must be a boolean")
        timeout = parameters.get("timeout")
        if timeout is None:
            timeout = self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ActionError("parameter 'timeout' must be a positive number")
        if timeout > self.max_seconds:
            raise ActionError(
                f"parameter 'timeout' ({timeout}) exceeds limits.http_max_seconds ({self.max_seconds})"
            )

        import httpx

        # The deadline below is the limit; httpx's per-operation timeouts only back it up.
        request: dict[str, Any] = {"timeout": httpx.Timeout(float(timeout) + 1.0)}
        headers = parameters.get("headers")
        if headers is not None:
            if not isinstance(headers, dict):
                raise ActionError("parameter 'headers' must be an object")
            request["headers"] = {
                str(k): v if isinstance(v, str) else jsonlib.dumps(v) for k, v in headers.items()
            }
        query = parameters.get("params")
        if query is not None:
            if not isinstance(query, dict):
                raise ActionError("parameter 'params' must be an object")
            request["params"] = query
        body = parameters.get("body")
        if "json" in parameters and parameters["json"] is not None:
            if body is not None:
                raise ActionError("parameters 'json' and 'body' cannot both be given")
            request["json"] = parameters["json"]
        elif body is not None:
            if not isinstance(body, str):
                raise ActionError("parameter 'body' must be a string (use 'json' for data)")
            request["content"] = body.encode("utf-8")

        try:
            async with asyncio.timeout(float(timeout)):
                response, content = await self._exchange(verify, method, url, request)
        except TimeoutError:
            raise ActionError(
                f"{method} {url} failed: no complete response within {timeout} seconds"
            ) from None
        except httpx.HTTPError as exc:
            raise ActionError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None

        result = {
            "status_code": response.status_code,
            "headers": dict(response.headers.items()),
            "body": _body(response, content),
        }
        if response.status_code >= 400:
            reason = response.reason_phrase or "error"
            raise ActionError(
                f"{method} {url} returned HTTP {response.status_code} {reason}", result=result
            )
        return result

    async def _exchange(
        self, verify: bool, method: str, url: str, request: dict[str, Any]
    ) -> tuple[httpx.Response, bytes]:
        """The response and its (decoded) body, refused past `max_body_bytes`."""
        limit = self.max_body_bytes
        async with self._client(verify).stream(method, url, **request) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit and not response.headers.get(
                "content-encoding"
            ):
                raise ActionError(_too_big(method, url, int(declared), limit))
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > limit:
                    raise ActionError(_too_big(method, url, None, limit))
            return response, bytes(content)

    async def aclose(self) -> None:
        """Close the clients; runs started afterwards fail."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def _too_big(method: str, url: str, size: int | None, limit: int) -> str:
    what = f"is {size} bytes" if size is not None else "is longer"
    return (
        f"{method} {url}: the response body {what}, which exceeds "
        f"limits.http_max_body_bytes ({limit}); the run failed without reading the rest"
    )


def _body(response: httpx.Response, content: bytes) -> Any:
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = content_type == "application/json" or content_type.endswith("+json")
    if is_json and content:
        try:
            return jsonlib.loads(content, parse_constant=_not_json)
        except ValueError:
            pass  # announced as JSON but is not: hand back the text
    return content.decode(response.encoding or "utf-8", errors="replace")


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
