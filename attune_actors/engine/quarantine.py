"""Recovery quarantine: an execution whose recovery crashes or wedges the engine is not resumed again.

The engine resumes unfinished executions one at a time. Before it resumes one it names it in
`<data_dir>/recovering.json`, and it removes the file once every execution's supervisor has
handled its recovery step. A file still there when the engine starts means the previous process
died while resuming the execution it names. Then:

- if that recovery step was *stuck* (it had not ended `stall` seconds after it began: a watchdog
  thread writes that into the file while the engine's loop is blocked), the execution is failed
  with a reason at once, with its nested executions, instead of being resumed into the same wedge;
- otherwise the process may have been killed from outside at that moment (a deploy, an operator's
  `kill -9`), so the execution is resumed again, and failed only when the engine has died
  `MAX_DEATHS` times in a row while resuming it (a recovery that crashes the process).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attune_actors.statuses import TERMINAL
from attune_actors.store.base import Store

__all__ = ["MAX_DEATHS", "RecoveryGuard", "fail_stored"]

log = logging.getLogger("attune_actors.engine")

MARKER = "recovering.json"
MAX_DEATHS = 3  # engine deaths in a row while resuming one execution before it is quarantined


@dataclass(frozen=True)
class LeftOver:
    """What the previous process was resuming when it died."""

    execution_id: str
    deaths: int  # processes that died while resuming it, in a row (this one included)
    stuck: bool  # its recovery step had been running for longer than `stall`

    @property
    def quarantine(self) -> bool:
        return self.stuck or self.deaths >= MAX_DEATHS

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
    """The marker of the execution being resumed (see the module doc); one per engine start.

    One watchdog thread, from the first `mark` to `clear`, marks a recovery step that runs for
    longer than `stall` seconds as stuck (the engine's loop may be blocked meanwhile).
    """

    def __init__(self, data_dir: Path, *, stall: float) -> None:
        self.path = data_dir / MARKER
        self.stall = stall
        self._deaths: dict[str, int] = {}  # deaths so far of the execution the last process resumed
        self._cond = threading.Condition()
        self._current: dict[str, Any] | None = None
        self._since = 0.0  # monotonic time the current recovery step began
        self._watchdog: threading.Thread | None = None
        self._done = False

    def left_over(self) -> LeftOver | None:
        """What a previous process was resuming when it died (None after a clean start)."""
        try:
            found = json.loads(self.path.read_text(encoding="utf-8"))
            left = LeftOver(str(found["id"]), int(found["deaths"]) + 1, bool(found["stuck"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable recovery marker %s: %s", self.path, exc)
            return None
        if not left.quarantine:
            self._deaths[left.execution_id] = left.deaths
        return left

    def mark(self, execution_id: str) -> None:
        """`execution_id` is being resumed now (its recovery step starts)."""
        with self._cond:
            self._current = {"id": execution_id, "deaths": self._deaths.get(execution_id, 0), "stuck": False}
            self._since = time.monotonic()
            self._write()
            self._cond.notify()
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name="attune-recovery-watchdog", daemon=True
            )
            self._watchdog.start()

    def _watch(self) -> None:
        with self._cond:
            while not self._done:
                current = self._current
                if current is None or current["stuck"]:
                    self._cond.wait()
                    continue
                late = self._since + self.stall - time.monotonic()
                if late > 0:
                    self._cond.wait(late)
                    continue
                current["stuck"] = True
                self._write()
                log.warning("resuming execution %s takes more than %g s", current["id"], self.stall)

    def _write(self) -> None:
        # Before the execution runs again; a process crash keeps it (the page cache outlives the
        # process), which is what matters here.
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._current), encoding="utf-8")
        os.replace(tmp, self.path)

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
