"""What the conductor asks its supervisor to do: the only way the pure state machine acts.

The conductor never performs I/O; after each event it returns a list of these commands and the
supervisor actor carries them out (dispatch through task actors, timers, child supervisors, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attune_actors.spec.model import ActionSpec


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Run one attempt of an action (an item of it, for with_items) through the run's task actor."""

    run_id: str
    task: str
    item: int | None
    attempt: int
    action: ActionSpec
    input: dict[str, Any]
    deadline: float | None  # epoch seconds at which the attempt times out


@dataclass(frozen=True, slots=True)
class StartChild:
    """Start a nested workflow execution for one attempt of a task run."""

    run_id: str
    task: str
    attempt: int
    child_id: str
    action: ActionSpec
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OpenInquiry:
    """Record a pending inquiry; the run stays `pending` until it is answered or expires."""

    run_id: str
    task: str
    inquiry_id: str
    input: dict[str, Any]
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class CloseInquiry:
    """The inquiry ended without an answer (expired, canceled): it is no longer answerable."""

    inquiry_id: str
    status: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call back `on_timer(key)` at epoch time `at` (timers that became moot are ignored there)."""

    key: tuple[Any, ...]
    at: float


@dataclass(frozen=True, slots=True)
class StopRun:
    """Tell whatever runs this attempt to stop (action run, item, or nested workflow)."""

    run_id: str
    item: int | None
    attempt: int
    child_id: str | None = None


@dataclass(frozen=True, slots=True)
class ControlChild:
    """Cascade pause/resume/cancel to a nested workflow."""

    child_id: str
    op: str  # pause | resume | cancel
    force: bool = False


@dataclass(frozen=True, slots=True)
class RunEnded:
    """A task run reached a terminal status; its task actor may stop."""

    run_id: str


@dataclass(frozen=True, slots=True)
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
