"""The HTTP API served by uvicorn inside the engine's own event loop (`serve --http HOST:PORT`).

`HttpServer(engine, "127.0.0.1:8080")` refuses a non-loopback address when no token is configured
(ConfigError); `await start()` binds and serves; `await stop()` ends open event streams, lets requests in
flight finish (at most `GRACE` seconds) and closes. Signals stay with the caller: `serve` stops
the server, then the engine.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn

from attune_actors.api.app import create_app
from attune_actors.api.auth import check_listen
from attune_actors.api.deps import EngineApi
from attune_actors.api.sse import EventStreams
from attune_actors.config import Settings
from attune_actors.errors import ConfigError

log = logging.getLogger("attune_actors.api")

GRACE = 5.0  # seconds requests in flight may take to finish when the server stops


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8080` for IPv6) -> (host, port); ConfigError naming what is wrong."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 ([::1]:8080 for IPv6)")
    return host, int(port_text)


class HttpServer:
    """One engine's HTTP API on one address."""

    def __init__(self, engine: EngineApi, listen: str, *, settings: Settings | None = None) -> None:
        self.engine = engine
        self.host, self.port = parse_listen(listen)
        self.app = create_app(engine, settings)
        check_listen(self.host, self.app.state.tokens)
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The base URL it serves on (with the real port once started, also when asked for port 0)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self._socket = _bind(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",  # the engine's life is the caller's, not the server's
            log_config=None,  # our logging settings apply
            access_log=False,
            timeout_graceful_shutdown=int(GRACE),
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self._socket])
        self._server = server
        self._loop = asyncio.create_task(server.main_loop(), name="attune-http")
        tokens = self.app.state.tokens
        log.info(
            "HTTP API on %s (%s)",
            self.url,
            "bearer tokens required" if tokens.enabled else "no tokens: loopback only",
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        streams: EventStreams = self.app.state.streams
        streams.close()
        server.should_exit = True
        if self._loop is not None:
            await self._loop
        await server.shutdown(sockets=[self._socket] if self._socket is not None else None)
        log.info("HTTP API on %s stopped", self.url)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


__all__ = ["GRACE", "HttpServer", "parse_listen"]
