"""Who is calling, and may they: bearer tokens from `http.tokens`, three roles, checked at the door.

A token is looked up by its sha256 digest (settings never hold tokens themselves); it names an
identity and a role. `viewer` may read, `operator` may also execute, pause, resume, cancel, rerun
and respond to inquiries, `admin` may also change workflow definitions. The identity becomes
`system.identity.login` of what the caller executes and answers the caller's inquiry responses; no
request body can claim another. Without tokens there is no identity and everyone is admin, which
is why the server then listens on loopback addresses only (`check_listen`).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from attune_actors.api.errors import ApiError
from attune_actors.config import ROLES, HttpToken
from attune_actors.errors import ConfigError

_RANK = {role: rank for rank, role in enumerate(ROLES)}
# Declares the scheme in the OpenAPI document (and the "Authorize" button of /docs); the header is
# checked below, so that a missing token gets our 401 document rather than FastAPI's.
bearer = HTTPBearer(auto_error=False, description="a token listed (as its sha256) in http.tokens")


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity and role a request acts as (identity None: no tokens are configured)."""

    identity: str | None
    role: str


class Tokens:
    """The configured tokens, by digest."""

    def __init__(self, tokens: Mapping[str, HttpToken]) -> None:
        self._tokens = dict(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def caller(self, authorization: str | None) -> Caller:
        """Who the `Authorization` header says the caller is; ApiError `unauthenticated` if nobody."""
        if not self._tokens:
            return Caller(None, "admin")
        challenge = {"WWW-Authenticate": "Bearer"}
        if not authorization:
            raise ApiError("unauthenticated", "this API needs 'Authorization: Bearer TOKEN'", challenge)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError("unauthenticated", "the Authorization header must be 'Bearer TOKEN'", challenge)
        found = self._tokens.get(hashlib.sha256(token.encode()).hexdigest())
        if found is None:
            raise ApiError(
                "unauthenticated",
                "the bearer token is not one of http.tokens",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return Caller(found.identity, found.role)


def require(role: str) -> Callable[..., Awaitable[Caller]]:
    """A route dependency: the caller, if their role is `role` or above; else 401 or 403."""

    async def caller(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
    ) -> Caller:
        tokens: Tokens = request.app.state.tokens
        who = tokens.caller(request.headers.get("authorization"))
        if _RANK[who.role] < _RANK[role]:
            raise ApiError(
                "unauthorized",
                f"{who.identity} has the {who.role} role; {request.method} {request.url.path} "
                f"needs {role}",
            )
        return who

    return caller


def token_digest(token: str) -> str:
    """The key under which `token` is listed in `http.tokens`."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_listen(host: str, tokens: Tokens) -> None:
    """Refuse to listen beyond this host when no token protects the API (ConfigError)."""
    if tokens.enabled or is_loopback(host):
        return
    raise ConfigError(
        f"the HTTP API would listen on {host} with no http.tokens configured: without tokens it "
        "listens on loopback addresses only (127.0.0.1, ::1, localhost); configure tokens "
        "(docs/http.md) to listen beyond this host"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


__all__ = ["Caller", "Tokens", "check_listen", "is_loopback", "require", "token_digest"]
