"""Workflow and task statuses (SPEC section 5): the one place they are defined.

`Status` is the public enum; each member compares and hashes equal to its string value, so documents
and snapshot records keep plain strings. The module-level names are those same strings (plain `str`,
not enum members), used on hot paths and in stored records so nothing is converted per event.
It sits below `spec`, `store` and `engine` so each can import it without a cycle.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """Workflow and task statuses (SPEC section 5); each compares equal to its string value."""

    REQUESTED = "requested"
    SCHEDULED = "scheduled"
    DELAYED = "delayed"
    RUNNING = "running"
    PENDING = "pending"
    PAUSING = "pausing"
    PAUSED = "paused"
    CANCELING = "canceling"
    CANCELED = "canceled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ABANDONED = "abandoned"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


REQUESTED: str = Status.REQUESTED.value
SCHEDULED: str = Status.SCHEDULED.value
DELAYED: str = Status.DELAYED.value
RUNNING: str = Status.RUNNING.value
PENDING: str = Status.PENDING.value
PAUSING: str = Status.PAUSING.value
PAUSED: str = Status.PAUSED.value
CANCELING: str = Status.CANCELING.value
CANCELED: str = Status.CANCELED.value
SUCCEEDED: str = Status.SUCCEEDED.value
FAILED: str = Status.FAILED.value
TIMEOUT: str = Status.TIMEOUT.value
ABANDONED: str = Status.ABANDONED.value

TERMINAL: frozenset[str] = frozenset((SUCCEEDED, FAILED, TIMEOUT, CANCELED, ABANDONED))
"""Statuses an execution or run never leaves."""

ACTIVE: frozenset[str] = frozenset(s.value for s in Status) - TERMINAL
"""Every status that is not terminal: the execution or run may still change."""
