"""Recovery quarantine: an execution whose recovery crashes or wedges the engine is not resumed again.

The engine resumes unfinished executions one at a time under a marker, `<data_dir>/recovering.json`,
that names the executions being resumed, `BATCH` at a time (one file write per batch: renaming a
file costs milliseconds on some file systems, more than resuming an execution), and it removes the
file once every execution's supervisor has handled its recovery step. A file still there when the
engine starts means the previous process died while resuming one of the executions it names. Then:

- if that recovery step was *stuck* (it had not ended `stall` seconds after it began: a watchdog
  thread names that execution alone in the file while the engine's loop is blocked), the
  execution is failed with a reason at once, with its nested executions, instead of being resumed
  into the same wedge;
- otherwise the process may have been killed from outside at that moment (a deploy, an operator's
  `kill -9`), so the executions named are resumed again, each under a marker naming it alone (the
  one that kills the process is then known), and one is failed only when the engine has died
  `MAX_DEATHS` times in a row while resuming it (a recovery that crashes the process). A death
  while a batch was resumed counts as one for each execution of the batch.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attune_actors.statuses import TERMINAL
from attune_actors.store.base import Store

__all__ = ["BATCH", "MAX_DEATHS", "RecoveryGuard", "fail_stored"]

log = logging.getLogger("attune_actors.engine")

MARKER = "recovering.json"
MAX_DEATHS = 3  # engine deaths in a row while resuming one execution before it is quarantined
BATCH = 100  # executions one marker names; after a death each is resumed under a marker of its own


@dataclass(frozen=True)
class LeftOver:
    """What the previous process was resuming when it died."""

    execution_ids: tuple[str, ...]  # one of them was being resumed
    deaths: int  # processes that died while resuming them, in a row (this one included)
    stuck: bool  # the recovery step of the only one named had been running for longer than `stall`

    @property
    def quarantine(self) -> bool:
        return len(self.execution_ids) == 1 and (self.stuck or self.deaths >= MAX_DEATHS)

    @property
    def reason(self) -> str:
        if self.stuck:
            return (
                "quarantined: the engine got stuck resuming this execution (its recovery step ran "
                "until the engine was stopped), so it was not resumed again"
            )
        return (
            f"quarantined: the engine stopped {self.deaths} times in a row while resuming this "
            "execution, so it was not resumed again"
        )


class RecoveryGuard:
    """The marker of the executions being resumed (see the module doc); one per engine start.

    `order` is the executions the engine means to resume, in that order: a marker names the one
    whose recovery starts and those after it, up to `batch`. One watchdog thread, from the first
    `mark` to `clear`, names the execution whose recovery step runs for longer than `stall`
    seconds as stuck (the engine's loop may be blocked meanwhile).
    """

    def __init__(
        self, data_dir: Path, *, stall: float, order: Sequence[str] = (), batch: int = BATCH
    ) -> None:
        self.path = data_dir / MARKER
        self.stall = stall
        self._order = order
        self._batch = batch
        self._position: dict[str, int] | None = None  # of each id in `order`, built at the first mark
        self._deaths: dict[str, int] = {}  # suspects: deaths so far while resuming their batch
        self._named: frozenset[str] = frozenset()  # what the marker on disk names
        self._cond = threading.Condition()
        self._current: str | None = None  # whose recovery step runs
        self._since = 0.0  # monotonic time the current recovery step began
        self._stuck = False  # the marker names the current one as stuck
        self._watchdog: threading.Thread | None = None
        self._done = False

    def left_over(self) -> LeftOver | None:
        """What a previous process was resuming when it died (None after a clean start)."""
        try:
            found = json.loads(self.path.read_text(encoding="utf-8"))
            # "id": a marker of an earlier version, which named one execution.
            ids = tuple(str(i) for i in found["ids"]) if "ids" in found else (str(found["id"]),)
            left = LeftOver(ids, int(found["deaths"]) + 1, bool(found["stuck"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable recovery marker %s: %s", self.path, exc)
            return None
        if not left.quarantine:
            self._deaths.update(dict.fromkeys(left.execution_ids, left.deaths))
        return left

    def mark(self, execution_id: str) -> None:
        """The recovery step of `execution_id` starts now."""
        with self._cond:
            if execution_id not in self._named or self._stuck:
                self._name(self._next_batch(execution_id), self._deaths.get(execution_id, 0), stuck=False)
            idle = self._current is None
            self._current = execution_id
            self._since = time.monotonic()
            self._stuck = False
            if idle:  # else the watchdog wakes at the previous step's deadline and looks again
                self._cond.notify()
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name="attune-recovery-watchdog", daemon=True
            )
            self._watchdog.start()

    def _next_batch(self, execution_id: str) -> list[str]:
        """`execution_id` and up to `batch` - 1 of those after it in `order`; a suspect alone,
        and a batch ends before the next suspect."""
        if execution_id in self._deaths:
            return [execution_id]
        if self._position is None:
            self._position = {eid: i for i, eid in enumerate(self._order)}
        at = self._position.get(execution_id)
        if at is None:
            return [execution_id]
        batch = [execution_id]
        for eid in self._order[at + 1 : at + self._batch]:
            if eid in self._deaths:
                break
            batch.append(eid)
        return batch

    def _watch(self) -> None:
        with self._cond:
            while not self._done:
                current = self._current
                if current is None or self._stuck:
                    self._cond.wait()
                    continue
                late = self._since + self.stall - time.monotonic()
                if late > 0:
                    self._cond.wait(late)
                    continue
                self._stuck = True
                self._name([current], self._deaths.get(current, 0), stuck=True)
                log.warning("resuming execution %s takes more than %g s", current, self.stall)

    def _name(self, ids: list[str], deaths: int, *, stuck: bool) -> None:
        # Before the executions run again; a process crash keeps it (the page cache outlives the
        # process), which is what matters here.
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"ids": ids, "deaths": deaths, "stuck": stuck}), encoding="utf-8")
        os.replace(tmp, self.path)
        self._named = frozenset(ids)

    def clear(self) -> None:
        """Every execution is resumed."""
        with self._cond:
            self._current = None
            self._done = True
            self.path.unlink(missing_ok=True)
            self._cond.notify()


def fail_stored(store: Store, execution_id: str, reason: str, now: float) -> list[str]:
    """Mark an unfinished execution and its unfinished nested ones failed in the store, with
    `reason` as their error and that of their unfinished task runs; the ids failed."""
    unfinished = set(store.unfinished())
    failed: list[str] = []
    todo = [execution_id]
    while todo:
        current = todo.pop()
        snap = store.load(current)
        if snap is None or current not in unfinished:
            continue
        header: dict[str, Any] = dict(snap.header)
        header.update(status="failed", error={"message": reason, "task": None}, ended_at=now)
        runs = []
        for rec in snap.runs.values():
            if rec.get("status") not in TERMINAL:
                runs.append(dict(rec, status="failed", error=reason, ended_at=now, input=None))
        store.save(current, header, runs, [])
        failed.append(current)
        todo.extend(h["id"] for h in store.headers(parent_id=current) if h["id"] in unfinished)
    return failed
