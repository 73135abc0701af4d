"""Progress of one execution on a terminal: a live task table, or plain lines when not a TTY.

Used by `attune-actors run`. It only reads execution documents; it never changes anything.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from attune_actors.engine.execution import Execution, TaskRunInfo
from attune_actors.statuses import Status

_SYMBOL = {
    "succeeded": "✔",
    "failed": "✘",
    "timeout": "⏱",
    "canceled": "⊘",
    "abandoned": "✘",
    "running": "▶",
    "pending": "?",
    "delayed": "…",
    "scheduled": "·",
    "paused": "‖",
}


def _duration(run: TaskRunInfo) -> str:
    from datetime import datetime

    if run.started_at is None:
        return ""
    start = datetime.fromisoformat(run.started_at.replace("Z", "+00:00")).timestamp()
    end = (
        datetime.fromisoformat(run.ended_at.replace("Z", "+00:00")).timestamp()
        if run.ended_at
        else time.time()
    )
    return f"{end - start:6.2f}s"


def _describe(run: TaskRunInfo) -> str:
    extra = ""
    if run.items is not None:
        done = sum(1 for it in run.items if it["status"] in ("succeeded", "failed", "timeout", "canceled"))
        extra = f" [{done}/{len(run.items)} items]"
    if run.attempts > 1:
        extra += f" (attempt {run.attempts})"
    if run.inquiry_id and run.status == "pending":
        extra += f" inquiry {run.inquiry_id}"
    if run.error and run.status in ("failed", "timeout"):
        extra += f": {run.error}"
    return extra


class Progress:
    """Shows an execution's task runs as they change."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._seen: dict[str, tuple[str, int]] = {}
        self._drawn = 0
        self._status: Status | None = None

    def update(self, execution: Execution) -> None:
        if self.live:
            self._redraw(execution)
            return
        # The execution's line frames its tasks' as the events do: a start or pause before the
        # task lines of the same update, an end after them (its last task ended first).
        line = ""
        if execution.status != self._status:
            self._status = execution.status
            line = f"{execution.ref} {execution.id}: {execution.status}\n"
        before, after = ("", line) if execution.status.terminal else (line, "")
        self.stream.write(before)
        for run in execution.tasks:
            key = (run.status.value, run.attempts)
            if self._seen.get(run.id) != key:
                self._seen[run.id] = key
                self.stream.write(
                    f"  {run.name:<24} {run.status.value:<10} {_duration(run)}{_describe(run)}\n"
                )
        self.stream.write(after)
        self.stream.flush()

    def pause(self) -> None:
        """Stop redrawing in place (someone else writes to the terminal now)."""
        self._drawn = 0

    def resume(self) -> None:
        """Redraw below whatever was written meanwhile."""
        self._drawn = 0

    def _redraw(self, execution: Execution) -> None:
        lines = [f"{execution.ref} {execution.id[:12]}  {execution.status.value}"]
        for run in execution.tasks:
            sym = _SYMBOL.get(run.status.value, " ")
            lines.append(f" {sym} {run.name:<24} {run.status.value:<10} {_duration(run)}{_describe(run)}")
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")
        out.extend(f"\x1b[2K{line}\n" for line in lines)
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)

    def done(self, execution: Execution) -> None:
        """The last update; the command prints the outcome (status, output or error) itself."""
        self.update(execution)
