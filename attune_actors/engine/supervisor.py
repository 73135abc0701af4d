"""WorkflowSupervisor: the actor that owns one execution, its conductor and its child actors.

It handles `Start`, `AttemptEnded`, `TimerFired`, `Control`, `AnswerInquiry`, `GetDocument` and
`GetGraph`. Each message becomes one conductor event; the conductor's commands are carried out here
(task actors for dispatch, timers on the loop, child supervisors for nested workflows), then the
step's changes are published as events. They are saved as one snapshot once every message that
came in together is handled (`on_drained`): a with_items batch or a fan-in whose outcomes arrive in
one loop turn writes the header once, not once per outcome. Nothing else touches the conductor.
"""

from __future__ import annotations

import logging
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from pykka import ActorDeadError, ActorRef

from attune_actors import logctx
from attune_actors.actors import AsyncioActor, Directive
from attune_actors.clock import TimerHandle
from attune_actors.engine.commands import (
    CloseInquiry,
    Command,
    ControlChild,
    Dispatch,
    Finished,
    OpenInquiry,
    RunEnded,
    SetTimer,
    StartChild,
    StopRun,
    TimerKey,
)
from attune_actors.engine.conductor import Conductor
from attune_actors.engine.messages import (
    RELEASE,
    AnswerInquiry,
    AttemptEnded,
    CancelAttempt,
    ChildStatus,
    Control,
    DispatchAttempts,
    GetDocument,
    GetGraph,
    Rerun,
    Start,
    TimerFired,
)
from attune_actors.engine.observer import FLUSH_PROGRESS, ExecutionObserver
from attune_actors.engine.state import TaskRun, iso
from attune_actors.engine.task import TaskActor
from attune_actors.errors import AttuneError, StoreError
from attune_actors.observability.tracing import Carrier
from attune_actors.statuses import FAILED, PAUSED, PENDING, RUNNING, TERMINAL
from attune_actors.transport.base import ActionRun

if TYPE_CHECKING:
    from attune_actors.engine.runtime import Runtime

log = logging.getLogger("attune_actors.engine")

_IDLE_TASK_ACTORS = 4  # released task actors a supervisor keeps for its next runs
_by_seq = attrgetter("seq")


class ParentLink:
    """Where a nested execution reports its end: the parent supervisor and the run it serves."""

    __slots__ = ("attempt", "ref", "run_id", "trace")

    def __init__(self, ref: ActorRef[Any], run_id: str, attempt: int, trace: Carrier | None = None) -> None:
        self.ref = ref
        self.run_id = run_id
        self.attempt = attempt
        self.trace = trace  # the trace context of the run's span: the nested execution's span is its child


class WorkflowSupervisor(AsyncioActor):
    """One execution: the conductor's I/O around it. Children: task actors and nested supervisors."""

    use_actor_registry = False  # the engine keeps its own index by execution id
    supervisor_strategy = Directive.STOP

    def __init__(self, runtime: Runtime, conductor: Conductor, parent: ParentLink | None = None) -> None:
        super().__init__()
        self._rt = runtime
        self._c = conductor
        self._link = parent
        self._tasks: dict[str, ActorRef[Any]] = {}  # run id -> task actor
        self._idle: list[ActorRef[Any]] = []  # task actors between runs, ready for the next run
        self._unreleased = 0  # the last ones of _idle: their run ended in this burst, not yet released
        # Attempts dispatched by the messages handled since the inbox last ran empty, by run id:
        # told to the task actors once it does (`_send_dispatches`); None while empty (a parked
        # execution keeps no dict).
        self._outbox: dict[str, list[ActionRun]] | None = None
        self._clock = runtime.clock
        # Created when first needed: most parked executions have no timer and nobody listening.
        self._timers: dict[TimerKey, TimerHandle] | None = None
        self._last_status = conductor.status
        self._emitted: dict[str, tuple[str, int]] | None = None  # run id -> (status, attempts) published
        self._done = False
        self._new_attempts = False  # recovered embedded: attempts in flight died with the engine
        self._store_failed: StoreError | None = None  # the first failed save: the execution fails
        # Changed since the last snapshot, saved by _save: runs by id, and item indices by run id
        # (ints in dicts: a burst of 1,000 item outcomes keeps no object per item alive until it
        # is saved, for the collector to promote; records are built when saved).
        self._unsaved = False
        # None while nothing is unsaved (a parked execution keeps no dicts).
        self._unsaved_runs: dict[str, TaskRun] | None = None
        self._unsaved_items: dict[str, dict[int, None]] | None = None
        self._obs = ExecutionObserver(
            runtime, conductor, parent.trace if parent is not None else None, self.actor_ref
        )

    @property
    def execution_id(self) -> str:
        return self._c.id

    # ------------------------------------------------------------------ messages

    def on_receive(self, message: Any) -> Any:
        token = logctx.execution_id.set(self._c.id)
        try:
            return self._handle(message)
        except Exception as exc:  # a bug must not leave the execution running forever (SPEC 7)
            self._crash(exc)
            return None
        finally:
            logctx.execution_id.reset(token)

    def _crash(self, exc: Exception) -> None:
        """End the execution `failed` with a one-line error; the traceback goes to the log."""
        if isinstance(exc, AttuneError):  # a deliberate error (a store that cannot write): no traceback
            log.error("execution %s: %s", self._c.id, exc)
        else:
            log.error("execution %s: internal error", self._c.id, exc_info=exc)
        if self._done:
            return
        detail = str(exc).strip().splitlines()
        message = f"internal error: {type(exc).__name__}" + (f": {detail[0]}" if detail else "")
        try:
            self._carry_out(self._c.abort(message, self._clock.now()))
        except Exception as again:
            log.error("execution %s: its failure could not be recorded", self._c.id, exc_info=again)
        if not self._done:
            self._report_end()

    def _handle(self, message: Any) -> Any:
        if isinstance(message, GetGraph):
            return self._rt.graph_document(self._c.id, self._c.status, self._c.spec, self._c.run_marks())
        if self._done:
            return self._c.document() if isinstance(message, GetDocument) else None
        now = self._clock.now()
        c = self._c
        if isinstance(message, AttemptEnded):
            self._obs.attempt_ended(message)
            cmds = c.on_attempt_ended(
                message.run_id,
                message.item,
                message.attempt,
                message.status,
                message.result,
                message.error,
                now,
            )
        elif isinstance(message, TimerFired):
            if self._timers is not None:
                self._timers.pop(message.key, None)
            cmds = c.on_timer(message.key, now)
        elif isinstance(message, GetDocument):
            return c.document()
        elif isinstance(message, Control):
            if message.op == "pause":
                cmds = c.pause(now)
            elif message.op == "resume":
                cmds = c.resume(now)
            else:
                cmds = c.cancel(now, force=message.force)
        elif isinstance(message, ChildStatus):
            cmds = c.on_child_status(message.run_id, message.attempt, message.status, now)
        elif isinstance(message, AnswerInquiry):
            cmds = c.answer_inquiry(message.run_id, message.inquiry_id, message.response, now)
        elif isinstance(message, Rerun):
            tasks = list(message.tasks) if message.tasks is not None else None
            cmds = c.rerun(tasks, now, reset_items=message.reset_items)
        elif isinstance(message, Start):
            self._obs.started(message.recovered)
            self._new_attempts = message.new_attempts
            cmds = (
                c.recovery_commands(now, new_attempts=message.new_attempts)
                if message.recovered
                else c.start(now)
            )
        elif message is FLUSH_PROGRESS:
            self._obs.flush_progress()
            return None
        else:
            return super().on_receive(message)
        self._carry_out(cmds)
        return None

    def on_child_failure(self, child: ActorRef[Any], error: BaseException) -> Directive:
        # A task actor crashed (a bug, not an action failure): its attempts will never report,
        # so the execution fails rather than waiting forever.
        if child in self._idle:
            at = self._idle.index(child)
            if at >= len(self._idle) - self._unreleased:  # one of those not yet released
                self._unreleased -= 1
            del self._idle[at]
        for run_id, ref in list(self._tasks.items()):
            if ref is child:
                del self._tasks[run_id]
                log.error("execution %s: task actor for run %s crashed: %r", self._c.id, run_id, error)
                run = self._c.runs.get(run_id)
                if run is not None and not run.terminal:
                    self._carry_out(
                        self._c.on_attempt_ended(
                            run_id,
                            None,
                            run.attempts,
                            FAILED,
                            None,
                            f"internal error: {error!r}",
                            self._clock.now(),
                        )
                    )
        return Directive.STOP

    def on_drained(self) -> None:
        self._save()
        self._send_dispatches()
        if self._unreleased:  # not taken by a run of this burst
            for ref in self._idle[-self._unreleased :]:
                ref.tell(RELEASE)
            self._unreleased = 0

    def on_stop(self) -> None:
        self._save()
        if not self._done:
            self._obs.stopped()
        for handle in (self._timers or {}).values():
            handle.cancel()
        self._timers = None

    # ------------------------------------------------------------------ commands

    def _carry_out(self, cmds: list[Command]) -> None:
        finished: Finished | None = None
        outbox = self._outbox
        for cmd in cmds:
            if isinstance(cmd, Dispatch):
                attempt = ActionRun(
                    self._c.id,
                    cmd.run_id,
                    cmd.item,
                    cmd.attempt,
                    cmd.task,
                    cmd.action.ref,
                    cmd.input,
                    cmd.deadline,
                    self._obs.trace_of(cmd.run_id),
                )
                if outbox is None:
                    outbox = self._outbox = {}
                queued = outbox.get(cmd.run_id)
                if queued is None:
                    outbox[cmd.run_id] = [attempt]
                else:
                    queued.append(attempt)
            elif isinstance(cmd, SetTimer):
                self._set_timer(cmd.key, cmd.at)
            elif isinstance(cmd, RunEnded):
                self._obs.run_ended(cmd.run_id)
                self._end_task_actor(cmd.run_id)
            elif isinstance(cmd, StopRun):
                self._send_dispatches(cmd.run_id)  # the attempt to stop goes out first
                ref = self._tasks.get(cmd.run_id)
                if ref is not None:
                    ref.tell(CancelAttempt(cmd.run_id, cmd.item, cmd.attempt))
            elif isinstance(cmd, StartChild):
                self._start_child(cmd)
            elif isinstance(cmd, ControlChild):
                self._rt.executions.tell(cmd.child_id, Control(cmd.op, cmd.force))
            elif isinstance(cmd, OpenInquiry):
                self._rt.inquiries.open(self._c.id, cmd, self.actor_ref)
            elif isinstance(cmd, CloseInquiry):
                self._rt.inquiries.close(cmd.inquiry_id, cmd.status)
            elif isinstance(cmd, Finished):
                self._obs.finished(cmd.status)
                finished = cmd
        self._after_step(cmds)
        if finished is not None:
            self._report_end()

    def _after_step(self, cmds: list[Command]) -> None:
        """Note the step's changes for the snapshot, publish its status changes, tell a parent we
        paused or resumed."""
        c = self._c
        runs, items = c.take_changes()
        self._unsaved = True
        if runs:
            unsaved_runs = self._unsaved_runs
            if unsaved_runs is None:
                unsaved_runs = self._unsaved_runs = {}
            for run in runs:
                unsaved_runs[run.id] = run
        if items:
            unsaved_items = self._unsaved_items
            if not unsaved_items:
                self._unsaved_items = items  # the conductor hands the dict over
            else:
                for run_id, indices in items.items():
                    known = unsaved_items.get(run_id)
                    if known is None:
                        unsaved_items[run_id] = indices
                    else:
                        known.update(indices)
        changed = c.status != self._last_status
        active = self._rt.events.active
        if active and self._outbox:
            self._send_dispatches()  # whoever hears a task is running finds its attempt out
        self._obs.after_step(cmds, items, active)  # retries, abandons, item progress
        if active:
            root = self._rt.executions.root_of(c.id)
            # A workflow's own change frames its tasks': `running` before them, an end after them.
            if changed and c.status not in TERMINAL:
                self._publish_status(root)
            emitted = self._emitted
            if emitted is None:
                emitted = self._emitted = {}
            for run in runs:
                key = (run.status, run.attempts)
                if emitted.get(run.id) != key:
                    emitted[run.id] = key
                    doc = run.document()
                    doc.pop("items")
                    if run.item_state is not None:
                        doc["items_done"] = sum(1 for s in run.item_state.status if s in TERMINAL)
                        doc["items_total"] = len(run.item_state)
                    self._rt.publish({"type": "task", "execution_id": c.id, "root_id": root, **doc})
            if changed and c.status in TERMINAL:
                self._publish_status(root)
        if changed:
            self._last_status = c.status
            if self._link is not None and c.status in (PAUSED, RUNNING, PENDING):
                try:
                    self._link.ref.tell(ChildStatus(self._link.run_id, self._link.attempt, c.status))
                except ActorDeadError:
                    pass

    def _save(self) -> None:
        """Save what changed since the last snapshot, as one step (records are built from the
        runs and items as they are now)."""
        c = self._c
        while self._unsaved:
            self._unsaved = False
            runs = sorted(self._unsaved_runs.values(), key=_by_seq) if self._unsaved_runs else []
            items = c.item_views(self._unsaved_items) if self._unsaved_items else ()
            self._unsaved_items = self._unsaved_runs = None
            try:
                self._rt.save_step(c, runs, items)  # buffered even when it raises
            except StoreError as exc:
                if self._store_failed:
                    continue
                self._store_failed = exc  # the store logs the failure; the execution fails, once
                self._carry_out(c.fail(f"the store cannot keep this execution: {exc}", self._clock.now()))

    def _publish_status(self, root: str) -> None:
        c = self._c
        self._rt.publish(
            {
                "type": "execution",
                "execution_id": c.id,
                "root_id": root,
                "id": c.id,
                "ref": c.spec.ref,
                "status": c.status,
                "started_at": iso(c.started_at),
                "ended_at": iso(c.ended_at),
                "parent_id": c.parent_id,
                "output": c.output,
                "error": c.error,
            }
        )

    def _send_dispatches(self, run_id: str | None = None) -> None:
        """Tell the task actors the attempts dispatched since the inbox last ran empty (of one run).

        Once per burst of messages rather than once per message: the 1,000 item outcomes of a
        with_items batch that arrive in one loop turn send their 1,000 next attempts as one
        message. Nothing is later for it: the task actors run only once this actor waits. (With
        event subscribers, each step sends its own before its events are published.)
        """
        outbox = self._outbox
        if not outbox:
            return
        if run_id is not None:
            queued = outbox.pop(run_id, None)
            if queued:
                self._tell_attempts(run_id, queued)
            return
        self._outbox = None
        for rid, runs in outbox.items():
            self._tell_attempts(rid, runs)

    def _tell_attempts(self, run_id: str, runs: list[ActionRun]) -> None:
        ref = self._tasks.get(run_id)
        release = False
        if ref is None:
            if self._idle:
                ref = self._idle.pop()
                if self._unreleased:  # its run ended in this burst: released by this same message
                    self._unreleased -= 1
                    release = True
            else:
                ref = self.spawn(TaskActor, self.actor_ref, self._rt.transport, self._rt.attempts)
            self._tasks[run_id] = ref
        ref.tell(DispatchAttempts(tuple(runs), release))

    def _end_task_actor(self, run_id: str) -> None:
        if self._outbox is not None:
            # Dispatched earlier in this burst and not told yet: an ended run's attempts never go
            # out (told at once, as before the outbox, they would have been canceled here).
            self._outbox.pop(run_id, None)
        ref = self._tasks.pop(run_id, None)
        if ref is None:
            return
        # Released actors serve the next runs: starting and stopping an actor per run cost a
        # quarter of a transition. A few are kept, for parallel branches; the rest stop. The
        # release waits for the end of the burst (on_drained): a run dispatched meanwhile takes
        # the actor with it, in its first message.
        if len(self._idle) < _IDLE_TASK_ACTORS:
            self._idle.append(ref)
            self._unreleased += 1
        else:
            ref.stop(block=False)

    def _set_timer(self, key: TimerKey, at: float) -> None:
        timers = self._timers
        if timers is None:
            timers = self._timers = {}
        old = timers.pop(key, None)
        if old is not None:
            old.cancel()
        timers[key] = self._clock.call_at(at, self._fire, key)

    def _fire(self, key: TimerKey) -> None:
        self._tell_self(TimerFired(key))

    def _tell_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except ActorDeadError:
            pass

    def _start_child(self, cmd: StartChild) -> None:
        """Start the nested execution of a run's attempt, or pick it up again after a restart."""
        link = ParentLink(self.actor_ref, cmd.run_id, cmd.attempt, self._obs.trace_of(cmd.run_id))
        recovered = False
        snap = self._rt.store.load(cmd.child_id)
        try:
            if snap is not None:
                if snap.header["status"] in TERMINAL:  # it ended, but we never heard: hear it now
                    h = snap.header
                    message = (h["error"] or {}).get("message") if h["error"] else None
                    self.actor_ref.tell(
                        AttemptEnded(cmd.run_id, None, cmd.attempt, h["status"], h["output"], message)
                    )
                    return
                conductor = self._rt.restore_conductor(snap)
                recovered = True
            else:
                conductor = self._rt.new_conductor(
                    cmd.action,
                    cmd.input,
                    execution_id=cmd.child_id,
                    parent_id=self._c.id,
                    parent_run=(cmd.run_id, cmd.attempt),
                    identity=self._c.system.get("identity"),
                )
        except AttuneError as exc:  # bad parameters for the nested workflow fail the task run
            self.actor_ref.tell(AttemptEnded(cmd.run_id, None, cmd.attempt, FAILED, None, exc.message))
            return
        ref = self.spawn(WorkflowSupervisor, self._rt, conductor, link)
        self._rt.executions.add(conductor.id, ref, parent_id=self._c.id)
        ref.tell(Start(recovered=recovered, new_attempts=recovered and self._new_attempts))

    def _report_end(self) -> None:
        self._save()  # before anyone hears of the end: the store has it first, as before
        self._send_dispatches()
        self._done = True
        c = self._c
        self._rt.executions.ended(c.id, lambda: self._rt.execution(c))
        if self._link is not None:
            message = (c.error or {}).get("message") if c.error else None
            try:
                self._link.ref.tell(
                    AttemptEnded(self._link.run_id, None, self._link.attempt, c.status, c.output, message)
                )
            except ActorDeadError:
                pass
        self.stop()  # nobody awaits it: no reply futures
