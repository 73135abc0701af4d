"""The outermost layer of the HTTP app: bounded request bodies, and no bug without an answer.

A request body is read whole, up to `limits.request_bytes`, before any route runs: one announced
larger (Content-Length) is refused at once without being read, one that turns out larger while
streaming is refused as soon as it passes the limit. Either way the answer is 413 `too_large` and
nothing was done, whatever the route (even one that never reads its body). Routes then read the
buffered body as usual.

An exception no handler took is logged once, with its traceback, and answered with a 500
`internal` document if nothing was sent yet.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from attune_actors.api.errors import error_response

log = logging.getLogger("attune_actors.api")


class Guard:
    """ASGI middleware: body limit, then the app, with a last-resort error answer."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = _announced_too_large(scope, self.max_body)
        if refusal is not None:
            await error_response("too_large", refusal)(scope, receive, send)
            return
        body, disconnected = await self._read_body(receive)
        if body is None:
            if not disconnected:
                message = f"the request body is over limits.request_bytes ({self.max_body} bytes)"
                await error_response("too_large", message)(scope, receive, send)
            return
        started = False

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                chunk, body = body, None
                return {"type": "http.request", "body": chunk, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, tracked)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                path = scope.get("path", "")
                await error_response("internal", f"{scope.get('method')} {path} failed: internal error")(
                    scope, receive, send
                )

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, bool]:
        """(the body, disconnected); the body is None when it is over the limit or the client left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, True
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None, False
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False


def _announced_too_large(scope: Scope, limit: int) -> str | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we see the request
            if length > limit:
                return f"a request body of {length} bytes is over limits.request_bytes ({limit} bytes)"
    return None


__all__ = ["Guard"]
