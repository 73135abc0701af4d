"""TaskActor: one per task run; submits the run's attempts to the transport and relays outcomes.

It handles `DispatchAttempts` (submit each attempt), `CancelAttempt` (ask the transport to stop one)
and `Release` (its run ended: stop what is still out), and relays the transport's `RunOutcome`s to
its supervisor (an `AttemptEnded`). Its only state is the attempts it has in flight. A with_items run's
items all go through their run's one task actor. A released actor serves the next task run of the
same execution: an actor per task run while it runs, without paying for a new actor per run.
"""

from __future__ import annotations

from typing import Any

from pykka import ActorDeadError, ActorRef

from attune_actors import logctx
from attune_actors.actors import AsyncioActor
from attune_actors.engine.messages import CancelAttempt, DispatchAttempts, Release
from attune_actors.transport.base import ActionRun, RunOutcome, Transport


class AttemptsInFlight:
    """How many action attempts one engine's task actors have out (a virtual clock waits for them)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class TaskActor(AsyncioActor):
    """Child of a WorkflowSupervisor; serves one task run at a time."""

    # Short-lived and numerous: registering each in pykka's global registry would cost a lock and
    # an O(n) removal per task run, and nothing looks task actors up.
    use_actor_registry = False

    def __init__(
        self, supervisor: ActorRef[Any], transport: Transport, attempts: AttemptsInFlight | None = None
    ) -> None:
        super().__init__()
        self._supervisor = supervisor
        self._transport = transport
        self._attempts = attempts or AttemptsInFlight()
        # Keyed by the full attempt key: after a Release, a late outcome of the previous run must
        # not be taken for the same (item, attempt) of the run this actor serves now.
        self._inflight: dict[tuple[str, int | None, int], ActionRun] = {}
        self._submitting = False  # in a DispatchAttempts handler: outcomes must wait their turn

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RunOutcome):
            self._outcome(message)
        elif isinstance(message, DispatchAttempts):
            if message.release:
                self._release()
            # The action runs started here inherit these: their log records name execution and task.
            tokens = (logctx.execution_id.set(message.runs[0].execution_id),
                      logctx.task.set(message.runs[0].task))
            inflight = self._inflight
            before = len(inflight)
            self._submitting = True
            try:
                for attempt in message.runs:
                    inflight[(attempt.run_id, attempt.item, attempt.attempt)] = attempt
                    self._transport.submit(attempt, self)
            finally:
                self._submitting = False
                self._attempts.count += len(inflight) - before
                logctx.task.reset(tokens[1])
                logctx.execution_id.reset(tokens[0])
        elif isinstance(message, Release):
            self._release()
        elif isinstance(message, CancelAttempt):
            run = self._inflight.pop((message.run_id, message.item, message.attempt), None)
            if run is not None:
                self._attempts.count -= 1
                self._transport.cancel(run)
        else:
            return super().on_receive(message)
        return None

    def __call__(self, outcome: RunOutcome) -> None:
        """The transport's outcome callback (`submit(run, self)`: no bound method to build, and
        later collect, per attempt): relay the outcome now, without a trip through the inbox.

        Transports call it on the loop's thread, so never in the middle of one of this actor's
        handlers (none of them awaits): its state is between two messages, as a handler would find
        it, and the wake-up of a queued message per attempt is saved. Messages still queued (a
        `Release`, a `CancelAttempt`) come after it, as if the outcome had arrived first; the
        conductor ignores the outcome of an attempt it no longer waits for. An outcome given back
        from inside `submit` (during a handler) is queued instead, like any message.
        """
        if self._submitting:
            try:
                self.actor_ref.tell(outcome)
            except ActorDeadError:
                pass
        elif not self.actor_stopped.is_set():  # stopped: the run ended, nothing waits for this
            self._outcome(outcome)

    def _outcome(self, outcome: RunOutcome) -> None:
        if self._inflight.pop((outcome.run_id, outcome.item, outcome.attempt), None) is None:
            return  # canceled or duplicate: the supervisor already moved on
        self._attempts.count -= 1
        try:
            self._supervisor.tell(outcome)  # an AttemptEnded
        except ActorDeadError:
            pass  # the execution ended meanwhile (canceled, timed out); nothing waits for this

    def _release(self) -> None:
        # A run that ends while attempts are still out (cancel, workflow timeout) stops them.
        for run in self._inflight.values():
            self._transport.cancel(run)
        self._attempts.count -= len(self._inflight)
        self._inflight.clear()

    def on_stop(self) -> None:
        self._release()
