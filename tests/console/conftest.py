"""A real console: the HTTP API on a free loopback port and a real headless Chromium driving it.

Chromium is Debian's (`.ci/run` installs it); Playwright's Python API drives it through
`executable_path`, so no browser is downloaded. Without a Chromium these tests are skipped.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from api_support import TOKENS, token_settings

from attune_actors import Engine
from attune_actors.api import HttpServer
from attune_actors.config import load_settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs it)")

# What the machine's closed network and a root user need (see docs/console.md).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def console(packs_dir: Path, tmp_path: Path) -> AsyncIterator[Any]:
    """Start a server (tokens or none) and return its base URL; stopped at the end."""
    servers: list[tuple[Engine, HttpServer]] = []

    async def start(*, tokens: bool = False) -> str:
        overrides: dict[str, Any] = {
            "packs": [str(packs_dir)],
            "data_dir": str(tmp_path / f"data{len(servers)}"),
            "http": {"tokens": token_settings() if tokens else {}},
        }
        engine = Engine(settings=load_settings(overrides=overrides, environ={}))
        await engine.start()
        server = HttpServer(engine, "127.0.0.1:0")
        await server.start()
        servers.append((engine, server))
        return server.url

    yield start
    for engine, server in servers:
        await server.stop()
        await engine.close()


@pytest.fixture
def admin_token() -> str:
    return TOKENS["admin"][0]
