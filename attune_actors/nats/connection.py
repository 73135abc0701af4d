"""Connecting to NATS with the configured credentials, for engines, workers and clients alike.

Credentials come from `Settings.nats` (file or `ATTUNE_NATS__*` environment): user/password, token,
an nkey seed, or a creds file (JWT + nkey). Connections reconnect forever: a NATS server restart
is an outage to wait out, not an error to die of.
"""

from __future__ import annotations

import logging
from typing import Any

import nats
from nats.aio.client import Client

from attune_actors.config import NatsSettings
from attune_actors.errors import ConfigError, TransportError

log = logging.getLogger("attune_actors.nats")


def connect_options(settings: NatsSettings, *, name: str) -> dict[str, Any]:
    """The keyword arguments for `nats.connect` that `settings` ask for."""
    options: dict[str, Any] = {
        "servers": [u.strip() for u in settings.url.split(",") if u.strip()],
        "name": name,
        "connect_timeout": settings.connect_timeout,
        # The first connection gives up after trying each server twice: an unreachable server is
        # a clear error at start-up. `connect` switches to reconnecting forever once connected.
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
        "inbox_prefix": settings.inbox_prefix,
    }
    prefix = settings.inbox_prefix
    if not prefix or any(c in prefix for c in " \t\r\n*>") or "" in prefix.split("."):
        raise ConfigError(f"nats.inbox_prefix {prefix!r} is not a subject prefix (e.g. _INBOX_worker)")
    given = [k for k in ("token", "nkey_seed", "creds_file") if getattr(settings, k)]
    if settings.user or settings.password:
        given.append("user/password")
    if len(given) > 1:
        raise ConfigError(f"nats: use one way to authenticate, not {' and '.join(given)}")
    if settings.user or settings.password:
        if not (settings.user and settings.password):
            raise ConfigError("nats: user and password go together")
        options["user"], options["password"] = settings.user, settings.password
    if settings.token:
        options["token"] = settings.token
    if settings.nkey_seed:
        options["nkeys_seed_str"] = settings.nkey_seed
    if settings.creds_file:
        options["user_credentials"] = settings.creds_file
    return options


async def connect(settings: NatsSettings, *, name: str) -> Client:
    """A connected client; TransportError (one line) when the server cannot be reached or refuses."""

    connected = False

    async def error_cb(exc: Exception) -> None:
        # Before the first connection, a failed attempt is what connect() raises, in one line:
        # logging each attempt too only repeated it, as a cryptic socket error.
        log.log(logging.WARNING if connected else logging.DEBUG, "nats (%s): %s", name, exc)

    async def disconnected_cb() -> None:
        log.info("nats (%s): disconnected from %s", name, settings.url)

    async def reconnected_cb() -> None:
        log.info("nats (%s): reconnected", name)

    try:
        nc = await nats.connect(
            **connect_options(settings, name=name),
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
        )
    except ConfigError:
        raise
    except Exception as exc:  # nats-py raises many unrelated types for "cannot connect"
        reason = str(exc) or type(exc).__name__
        raise TransportError(f"cannot connect to NATS at {settings.url}: {reason}") from None
    connected = True
    # A server restart is an outage to wait out: from now on, reconnect without limit.
    nc.options["max_reconnect_attempts"] = -1
    # nats-py (pinned) parses every message's headers with this; ours gives the same dicts, faster.
    nc._parse_header_lines = parse_header_lines  # type: ignore[method-assign]
    return nc


_header_names: dict[bytes, str | None] = {}  # a header name received -> as kept (None: dropped)


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's `Client._parse_header_lines` (`Name: Value` per line, names ASCII without
    whitespace, values decoded with errors replaced), with each name checked once and remembered
    instead of a generator over its characters per message: a dispatch's headers (message id,
    expected subject sequence) cost the worker that on every attempt."""
    out: dict[str, str] = {}
    names = _header_names
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = names.get(name)
        if key is None and name not in names:
            key = _header_name(name)
            if len(names) < 1024:  # (a bound: names are few, but they come from the network)
                names[name] = key
        if key is not None:
            out[key] = value.strip().decode("utf-8", "replace")
    return out


def _header_name(name: bytes) -> str | None:
    try:
        key = name.strip().decode("ascii")
    except UnicodeDecodeError:
        return None
    return None if any(c.isspace() for c in key) else key


def describe(exc: BaseException) -> str:
    """One line for an error nats-py raised (JetStream API errors carry a `description`)."""
    description = getattr(exc, "description", None)
    return str(description or exc or type(exc).__name__)


class ConnectionWatch:
    """Notices a connection that came back (reconnects counter moved, or was down at the last look)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._reconnects = nc.stats["reconnects"]
        self.connected = nc.is_connected

    def poll(self) -> bool:
        """True once after each return of the connection."""
        connected = self._nc.is_connected
        reconnects = self._nc.stats["reconnects"]
        came_back = connected and (reconnects != self._reconnects or not self.connected)
        self._reconnects, self.connected = reconnects, connected
        return came_back
