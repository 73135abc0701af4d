"""Helpers for the HTTP API tests: tokens per role, the running server, SSE and error readers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from attune_actors import Engine, Execution
from attune_actors.api import HttpServer, token_digest

# role -> (token, identity)
TOKENS = {
    "viewer": ("viewer-secret-token", "vera"),
    "operator": ("operator-secret-token", "otto"),
    "admin": ("admin-secret-token", "ada"),
}


def token_settings() -> dict[str, Any]:
    return {token_digest(t): {"identity": who, "role": role} for role, (t, who) in TOKENS.items()}


@dataclass
class Api:
    """A running server: its URL, its engine, and clients acting as each role."""

    url: str
    engine: Engine
    server: HttpServer
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, role: str | None = "admin") -> httpx.AsyncClient:
        """A client sending the token of `role` (None: no Authorization header)."""
        headers = {"Authorization": f"Bearer {TOKENS[role][0]}"} if role is not None else {}
        client = httpx.AsyncClient(base_url=f"{self.url}/api/v1", headers=headers, timeout=30)
        self.clients.append(client)
        return client


ApiFactory = Callable[..., Awaitable[Api]]


async def sse_events(client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """Read a whole event stream (it ends by itself): each event's data, with its `event` name checked."""
    events: list[dict[str, Any]] = []
    async with client.stream("GET", path) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert data["type"] == name
                events.append(data)
    return events


def error_of(response: httpx.Response) -> tuple[int, str]:
    """(status, code) of an error response, checking its shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"], body
    return response.status_code, body["error"]["code"]



def waits_for_an_answer(execution: Execution) -> bool:
    """Whether a task of the execution is pending on an inquiry."""
    return any(t.status == "pending" for t in execution.tasks)
