"""What the conductor asks its supervisor to do: the only way the pure state machine acts.

The conductor never performs I/O; after each event it returns a list of these commands and the
supervisor actor carries them out (dispatch through task actors, timers, child supervisors, ...).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

from attune_actors.frozen import frozen
from attune_actors.spec.model import ActionSpec


class TimerKind(StrEnum):
    """What a conductor timer is for."""

    TIMEOUT = "timeout"  # the workflow's `timeout`
    DELAY = "delay"  # a task's `delay` before its first dispatch
    RETRY = "retry"  # the delay before a retry (of a run, or of one item)
    INQUIRY = "inquiry"  # an inquiry's expiry


class TimerKey(NamedTuple):
    """Names one timer of one execution; a timer set again under the same key replaces it."""

    kind: TimerKind
    run_id: str | None = None
    item: int | None = None  # RETRY of one with_items item
    inquiry_id: str | None = None  # INQUIRY

    def to_record(self) -> list[Any]:
        """The stored form: `[kind]`, `[kind, run]`, `[retry, run, item]`, `[inquiry, run, id]`."""
        if self.kind is TimerKind.TIMEOUT:
            return [self.kind.value]
        if self.kind is TimerKind.DELAY:
            return [self.kind.value, self.run_id]
        if self.kind is TimerKind.RETRY:
            return [self.kind.value, self.run_id, self.item]
        return [self.kind.value, self.run_id, self.inquiry_id]

    @classmethod
    def from_record(cls, rec: list[Any]) -> TimerKey:
        kind = TimerKind(rec[0])
        if kind is TimerKind.INQUIRY:
            return cls(kind, rec[1], None, rec[2])
        if kind is TimerKind.RETRY:
            return cls(kind, rec[1], rec[2])
        return cls(kind, rec[1] if len(rec) > 1 else None)


@frozen
class Dispatch:
    """Run one attempt of an action (an item of it, for with_items) through the run's task actor."""

    run_id: str
    task: str
    item: int | None
    attempt: int
    action: ActionSpec
    input: dict[str, Any]
    deadline: float | None  # epoch seconds at which the attempt times out


@frozen
class StartChild:
    """Start a nested workflow execution for one attempt of a task run."""

    run_id: str
    task: str
    attempt: int
    child_id: str
    action: ActionSpec
    input: dict[str, Any]


@frozen
class OpenInquiry:
    """Record a pending inquiry; the run stays `pending` until it is answered or expires."""

    run_id: str
    task: str
    inquiry_id: str
    input: dict[str, Any]
    expires_at: float | None


@frozen
class CloseInquiry:
    """The inquiry ended without an answer (expired, canceled): it is no longer answerable."""

    inquiry_id: str
    status: str


@frozen
class SetTimer:
    """Call back `on_timer(key)` at epoch time `at` (timers that became moot are ignored there)."""

    key: TimerKey
    at: float


@frozen
class StopRun:
    """Tell whatever runs this attempt to stop (action run, item, or nested workflow)."""

    run_id: str
    item: int | None
    attempt: int
    child_id: str | None = None


@frozen
class ControlChild:
    """Cascade pause/resume/cancel to a nested workflow."""

    child_id: str
    op: str  # pause | resume | cancel
    force: bool = False


@frozen
class RunEnded:
    """A task run reached a terminal status; its task actor may stop."""

    run_id: str


@frozen
class Finished:
    """The workflow reached a terminal status; output and error are set on the conductor."""

    status: str


Command = (
    Dispatch
    | StartChild
    | OpenInquiry
    | CloseInquiry
    | SetTimer
    | StopRun
    | ControlChild
    | RunEnded
    | Finished
)
