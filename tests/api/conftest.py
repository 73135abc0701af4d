"""A real HTTP API: an engine over the test packs and uvicorn on a free loopback port, in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from api_support import Api, ApiFactory, token_settings

from attune_actors import Engine
from attune_actors.api import HttpServer
from attune_actors.config import load_settings


@pytest.fixture
async def api_factory(packs_dir: Path, tmp_path: Path) -> AsyncIterator[ApiFactory]:
    """Start servers (each with its own engine); `tokens=False` configures none."""
    started: list[Api] = []

    async def make(*, tokens: bool = True, limits: dict[str, Any] | None = None) -> Api:
        overrides: dict[str, Any] = {
            "packs": [str(packs_dir)],
            "data_dir": str(tmp_path / f"data{len(started)}"),
            "limits": limits or {},
            "http": {"tokens": token_settings() if tokens else {}},
        }
        engine = Engine(settings=load_settings(overrides=overrides, environ={}))
        await engine.start()
        server = HttpServer(engine, "127.0.0.1:0")
        await server.start()
        api = Api(server.url, engine, server)
        started.append(api)
        return api

    yield make
    for api in started:
        for client in api.clients:
            await client.aclose()
        await api.server.stop()
        await api.engine.close()


@pytest.fixture
async def api(api_factory: ApiFactory) -> Api:
    return await api_factory()
