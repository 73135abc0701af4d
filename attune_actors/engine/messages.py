"""The messages actors of the engine send each other: small typed classes, one per intent.

To a WorkflowSupervisor: `Start`, `AttemptEnded`, `TimerFired`, `Control`, `ChildStatus`,
`AnswerInquiry`, `GetDocument`, `GetGraph`. To a TaskActor: `DispatchAttempts`, `CancelAttempt`,
`Release` (and the transport's `RunOutcome`, which it relays to its supervisor as `AttemptEnded`).
"""

from __future__ import annotations

from typing import Any

from attune_actors.engine.commands import TimerKey
from attune_actors.frozen import frozen
from attune_actors.transport.base import ActionRun, RunOutcome


@frozen
class Start:
    """Begin the execution (or, after a restart, resume it from its snapshot).

    `new_attempts`: action attempts in flight when the engine stopped died with it (embedded
    runners), so they go out again as new attempts rather than as the same ones.
    """

    recovered: bool = False
    new_attempts: bool = False


# An attempt of a task run (action, item, nested workflow) ended. The transport's own outcome: a
# task actor relays it as it is (a copy per transition would cost more than the relay itself),
# and a nested execution's end or a refused start is told in the same shape.
AttemptEnded = RunOutcome


@frozen
class TimerFired:
    key: TimerKey


@frozen
class Control:
    """pause | resume | cancel (with `force`: stop running runs whatever the policy)."""

    op: str
    force: bool = False


@frozen
class ChildStatus:
    """A nested execution paused or resumed (its parent may now be `paused`)."""

    run_id: str
    attempt: int
    status: str


@frozen
class AnswerInquiry:
    run_id: str
    inquiry_id: str
    response: Any


@frozen
class Rerun:
    """Run a failed or canceled execution again from its failed tasks (or the named ones)."""

    tasks: tuple[str, ...] | None = None
    reset_items: bool = False


@frozen
class GetDocument:
    """Ask: the execution document as it is now."""


@frozen
class GetGraph:
    """Ask: the execution's graph document (engine.graphdoc) as it is now."""


@frozen
class DispatchAttempts:
    """Submit these attempts of the task actor's run to the transport.

    `release`: the actor's previous run ended; release it first (a `Release` and the next run's
    first attempts in one message)."""

    runs: tuple[ActionRun, ...]
    release: bool = False


@frozen
class Release:
    """The task actor's run ended: stop whatever is still in flight; the actor may serve another run."""


RELEASE = Release()


@frozen
class CancelAttempt:
    """Stop one attempt (cancel_running, workflow timeout)."""

    run_id: str
    item: int | None
    attempt: int
