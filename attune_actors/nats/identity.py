"""Who sent a control request, as the NATS server authenticated them (not as the body claims).

NATS does not tell a subscriber who published a message, with one exception: a request that
crosses from one account to another through a service import marked `share: true` carries a
`Nats-Request-Info` header that the server writes (it replaces any header of that name the sender
set) with the sender's account and user. In a deployment where the engine's account exports
`<prefix>.api.>` and every person's account imports it with `share: true` (docs/distributed.md,
"Inquiry identities"), `caller(msg)` is therefore the authenticated identity of the requester.

Within the engine's own account the header is not written by the server, so a member of that
account could set it: keep people out of the engine's account, and deny its workers
`<prefix>.api.>` (the documented permissions do).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nats.aio.msg import Msg

REQUEST_INFO = "Nats-Request-Info"


@dataclass(frozen=True, slots=True)
class Caller:
    """The account and user the server authenticated; `name` is the user's name in JWT deployments."""

    account: str
    user: str
    name: str = ""

    @property
    def identity(self) -> str:
        """The name an inquiry's `users` list would hold: the JWT name, else the user."""
        return self.name or self.user


def caller(msg: Msg) -> Caller | None:
    """The server-written identity of the sender of `msg`, or None when the message has none."""
    raw = (msg.headers or {}).get(REQUEST_INFO)
    if not raw:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(info, dict):
        return None
    account, user, name = info.get("acc"), info.get("user"), info.get("name")
    if not isinstance(account, str) or not isinstance(user, str) or not user:
        return None
    return Caller(account, user, name if isinstance(name, str) else "")
