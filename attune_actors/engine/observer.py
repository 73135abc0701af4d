"""ExecutionObserver: what a supervisor reports about its execution besides snapshots and status events.

One per WorkflowSupervisor, called from its message handling (so it runs on the supervisor's turn
and only reads the conductor's state, never changes it):

- metrics (`observability.metrics.EngineMetrics`): attempts, task runs and executions ended;
- spans (`observability.tracing`, when on): one per execution, a child per task run, whose trace
  context goes with each attempt (`ActionRun.trace`) and to nested executions;
- events the status changes do not show: `retry` (an attempt failed and another follows),
  `abandoned` (an attempt's worker vanished) and `progress` of with_items runs, batched: at most one
  per run every `PROGRESS_INTERVAL` seconds unless `PROGRESS_ITEMS` more items ended meanwhile; a
  change not yet published is published by a timer (the supervisor's `FLUSH_PROGRESS` message).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pykka import ActorDeadError, ActorRef

from attune_actors.engine.commands import Command, SetTimer, TimerKey, TimerKind
from attune_actors.engine.conductor import Conductor
from attune_actors.engine.messages import AttemptEnded
from attune_actors.engine.state import ItemRun, TaskRun, iso
from attune_actors.observability.metrics import ActionStats
from attune_actors.observability.tracing import Carrier
from attune_actors.statuses import ABANDONED, SUCCEEDED, TERMINAL

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from attune_actors.engine.runtime import Runtime

PROGRESS_INTERVAL = 0.1  # seconds between two progress events of one with_items run...
PROGRESS_ITEMS = 1000  # ...unless this many more items ended


class FlushProgress:
    """Supervisor message: publish the item progress held back by the interval."""


FLUSH_PROGRESS = FlushProgress()


def _tell(ref: ActorRef[Any], message: Any) -> None:
    try:
        ref.tell(message)
    except ActorDeadError:  # the execution ended meanwhile
        pass


_OK, _BAD = 1, 2  # per-item marks of what was counted as done


class _Progress:
    __slots__ = ("done", "failed", "marks", "published", "published_at")

    def __init__(self, statuses: list[str]) -> None:
        self.marks = bytearray(len(statuses))
        self.done = self.failed = 0
        for idx, status in enumerate(statuses):
            self.mark(idx, status)
        self.published = -1
        self.published_at = float("-inf")

    def mark(self, idx: int, status: str) -> None:
        old = self.marks[idx]
        new = 0 if status not in TERMINAL else _OK if status == SUCCEEDED else _BAD
        if old != new:
            self.done += (new != 0) - (old != 0)
            self.failed += (new == _BAD) - (old == _BAD)
            self.marks[idx] = new


class ExecutionObserver:
    """Metrics, spans and the finer-grained events of one execution."""

    def __init__(
        self,
        runtime: Runtime,
        conductor: Conductor,
        parent_trace: Carrier | None,
        supervisor: ActorRef[Any],
    ) -> None:
        self._rt = runtime
        self._c = conductor
        self._metrics = runtime.metrics
        self._tracing = runtime.tracing
        self._parent_trace = parent_trace
        # Told FLUSH_PROGRESS when progress is due. The ref, not a bound method of the actor: the
        # ref holds its actor weakly, so the supervisor and its observer are no reference cycle.
        self._supervisor = supervisor
        self._flush_due = False
        self._span: Span | None = None
        self._run_spans: dict[str, tuple[Span, Carrier]] = {}
        self._stats = runtime.metrics.by_task(conductor.spec)  # task name -> its action's stats
        self._ending: tuple[AttemptEnded, TaskRun | ItemRun] | None = None
        self._progress: dict[str, _Progress] = {}

    def _stats_of(self, task: str) -> ActionStats:
        stats = self._stats.get(task)
        if stats is None:
            spec = self._c.graph.tasks.get(task) or self._c.spec.task(task)
            action = (spec.action or spec.type) if spec is not None else task
            stats = self._stats[task] = self._metrics.action(action)
        return stats

    # -- lifecycle

    def started(self, recovered: bool) -> None:
        if not recovered:
            self._metrics.executions_started.inc((self._c.spec.ref,))

    def finished(self, status: str) -> None:
        c = self._c
        self._metrics.executions.inc((c.spec.ref, status))
        if self._tracing is not None:
            self._tracing.end(self._execution_span(), status, c.ended_at)
            self._span = None

    def stopped(self) -> None:
        """The supervisor stops before its execution ended (engine closing): close open spans."""
        if self._tracing is not None:
            for span, _ in self._run_spans.values():
                self._tracing.end(span, None, **{"attune.interrupted": True})
            if self._span is not None:
                self._tracing.end(self._span, None, **{"attune.interrupted": True})
            self._run_spans.clear()
            self._span = None

    # -- attempts and runs

    def attempt_ended(self, message: AttemptEnded) -> None:
        """Before the conductor hears of it: count it, and remember an unsuccessful live attempt."""
        run = self._c.runs.get(message.run_id)
        if run is None:
            return
        status = message.status
        attempts = (self._stats.get(run.task) or self._stats_of(run.task)).attempts
        attempts[status] = attempts.get(status, 0) + 1
        if status == SUCCEEDED:
            return
        target: TaskRun | ItemRun | None = run
        idx, state = message.item, run.item_state
        if idx is not None:
            target = ItemRun(state, idx) if state is not None and 0 <= idx < len(state) else None
        if target is not None and target.attempts == message.attempt and target.status not in TERMINAL:
            self._ending = (message, target)

    def trace_of(self, run_id: str) -> Carrier | None:
        """The trace context of a task run's span (started here if needed); None when tracing is off."""
        if self._tracing is None:
            return None
        found = self._run_spans.get(run_id)
        if found is None:
            run = self._c.runs[run_id]
            span = self._tracing.start(
                f"task {run.task}",
                self._execution_span(),
                {
                    "attune.execution_id": self._c.id,
                    "attune.ref": self._c.spec.ref,
                    "attune.task": run.task,
                    "attune.action": self._stats_of(run.task).ref,
                    "attune.run_id": run_id,
                },
                run.started_at,
            )
            found = self._run_spans[run_id] = (span, self._tracing.carrier(span))
        return found[1]

    def run_ended(self, run_id: str) -> None:
        run = self._c.runs.get(run_id)
        if run is None:
            return
        stats = self._stats.get(run.task) or self._stats_of(run.task)
        runs = stats.runs
        runs[run.status] = runs.get(run.status, 0) + 1
        started, ended = run.started_at, run.ended_at
        if started is not None and ended is not None:
            pending = stats.pending
            pending.append(ended - started)
            if len(pending) >= ActionStats.FOLD_EVERY:
                stats.fold()
        if self._tracing is not None:
            self.trace_of(run_id)
            span, _ = self._run_spans.pop(run_id)
            self._tracing.end(span, run.status, run.ended_at, **{"attune.attempt": run.attempts})

    def _execution_span(self) -> Span:
        if self._span is None:
            assert self._tracing is not None
            c = self._c
            self._span = self._tracing.start(
                f"execution {c.spec.ref}",
                self._parent_trace,
                {"attune.execution_id": c.id, "attune.ref": c.spec.ref, "attune.parent_id": c.parent_id},
                c.started_at,
            )
        return self._span

    # -- events

    def after_step(
        self, commands: list[Command], items: dict[str, dict[int, None]], active: bool
    ) -> None:
        """Publish this step's retry, abandon and progress events (if anyone listens)."""
        ending = self._ending
        if ending is not None:
            self._ending = None
            retried = ending[1].status not in TERMINAL
            if retried:
                self._stats_of(self._c.runs[ending[0].run_id].task).retries += 1
            if active:
                self._attempt_events(ending[0], retried, commands)
        if not active:
            if self._progress:
                self._progress.clear()  # counted again from the items when someone listens
            return
        if items:
            now = self._rt.clock.now()
            for run_id, indices in items.items():
                state = self._c.runs[run_id].item_state
                assert state is not None
                progress = self._progress.get(run_id)
                if progress is None:
                    self._progress[run_id] = _Progress(state.status)
                else:
                    statuses = state.status
                    for idx in indices:
                        progress.mark(idx, statuses[idx])
            for run_id in items:
                self._maybe_publish(run_id, now)

    def flush_progress(self) -> None:
        self._flush_due = False
        now = self._rt.clock.now()
        for run_id in list(self._progress):
            self._publish_progress(run_id, self._progress[run_id], now)

    def _maybe_publish(self, run_id: str, now: float) -> None:
        progress = self._progress[run_id]
        if progress.done == progress.published:
            return
        run = self._c.runs[run_id]
        if (run.terminal or now - progress.published_at >= PROGRESS_INTERVAL
                or progress.done - progress.published >= PROGRESS_ITEMS):
            self._publish_progress(run_id, progress, now)
        elif not self._flush_due:
            self._flush_due = True
            self._rt.clock.call_at(
                progress.published_at + PROGRESS_INTERVAL, _tell, self._supervisor, FLUSH_PROGRESS
            )

    def _publish_progress(self, run_id: str, progress: _Progress, now: float) -> None:
        run = self._c.runs[run_id]
        if progress.done != progress.published:
            progress.published, progress.published_at = progress.done, now
            self._publish({
                "type": "progress",
                "run_id": run_id,
                "task": run.task,
                "status": run.status,
                "items_done": progress.done,
                "items_failed": progress.failed,
                "items_total": len(progress.marks),
            })
        if run.terminal:
            del self._progress[run_id]

    def _attempt_events(self, message: AttemptEnded, retried: bool, commands: list[Command]) -> None:
        run = self._c.runs[message.run_id]
        base = {
            "run_id": message.run_id,
            "task": run.task,
            "item": message.item,
            "attempt": message.attempt,
            "status": message.status,
            "error": message.error,
        }
        if message.status == ABANDONED:
            self._publish({"type": "abandoned", **base, "retried": retried})
        if retried:
            at = self._rt.clock.now()  # dispatched again at once, unless a retry timer was set
            key = TimerKey(TimerKind.RETRY, message.run_id, message.item)
            for cmd in commands:
                if isinstance(cmd, SetTimer) and cmd.key == key:
                    at = cmd.at
            self._publish({"type": "retry", **base, "next_attempt": message.attempt + 1, "at": iso(at)})

    def _publish(self, event: dict[str, Any]) -> None:
        c = self._c
        self._rt.publish({"execution_id": c.id, "root_id": self._rt.executions.root_of(c.id), **event})
