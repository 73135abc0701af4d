"""Supervision vocabulary: the directives a parent returns for a failed child, and the notices a child
sends its parent when it stops or fails.

Notices are ordinary tells to the parent's inbox, so the parent learns about its children one message
at a time, in its own task, like anything else; only the parent touches its table of children.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from pykka import ActorRef

__all__ = ["Directive"]


class Directive(enum.Enum):
    """What a parent does when a child fails (see `AsyncioActor.on_child_failure`).

    The failed child has already stopped (its children first, then `on_failure`) when the parent decides.
    """

    RESTART = "restart"
    """Start a new instance of the child's class with the arguments it was spawned with. The new
    child has a new `ActorRef`; the parent's `on_child_restarted(old, new)` hook learns it. More
    than `max_restarts` restarts of one child within `restart_window` seconds escalate instead."""

    STOP = "stop"
    """Leave the child stopped; the parent carries on."""

    ESCALATE = "escalate"
    """Fail the parent with the child's exception: the parent stops its other children, runs
    `on_failure` and, if it has a parent of its own, hands the failure up to it."""


class ChildStopped(NamedTuple):
    """Notice to a parent: `child` stopped normally (or was cancelled)."""

    child: ActorRef[Any]


class ChildFailed(NamedTuple):
    """Notice to a parent: `child` stopped because of `error` (unhandled in a tell or a hook)."""

    child: ActorRef[Any]
    error: BaseException


class Escalation(Exception):
    """Raised in a parent's task to fail it with a child's error (the ESCALATE directive)."""

    def __init__(self, child: ActorRef[Any], error: BaseException) -> None:
        super().__init__(f"{child} failed: {error!r}")
        self.child = child
        self.error = error


class ChildSpec:
    """How a child was spawned (to restart it) and when it was last restarted."""

    __slots__ = ("actor_class", "args", "kwargs", "restarts")

    def __init__(self, actor_class: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.actor_class = actor_class
        self.args = args
        self.kwargs = kwargs
        self.restarts: list[float] | None = None

    def allow_restart(self, max_restarts: int, window: float, now: float) -> bool:
        """Record a restart at `now`, unless `max_restarts` happened in the last `window` s."""
        recent = [t for t in self.restarts or () if now - t < window]
        if len(recent) >= max_restarts:
            self.restarts = recent
            return False
        recent.append(now)
        self.restarts = recent
        return True
