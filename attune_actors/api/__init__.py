"""The HTTP API (SPEC section 9): FastAPI routes on `Engine`, bearer tokens with roles, SSE events.

    server = HttpServer(engine, "127.0.0.1:8080")   # or create_app(engine) for any ASGI server
    await server.start(); ...; await server.stop()
"""

from attune_actors.api.app import API_PREFIX, ROUTERS, create_app
from attune_actors.api.auth import Caller, token_digest
from attune_actors.api.server import HttpServer, parse_listen

__all__ = ["API_PREFIX", "ROUTERS", "Caller", "HttpServer", "create_app", "parse_listen", "token_digest"]
