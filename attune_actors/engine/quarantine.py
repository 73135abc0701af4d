"""Recovery quarantine: an execution whose recovery crashed or wedged the engine is not resumed again.

Before the engine resumes an unfinished execution it names it in `<data_dir>/recovering.json`, and
clears the file once the execution's supervisor has handled its recovery step. A file still there
when the engine starts means the previous process died (or was killed, wedged) while resuming those
executions: they are failed in the store with a reason, with their nested executions, instead of
being resumed into the same crash. Executions are resumed one at a time, so the file names only the
culprit.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from attune_actors.engine.state import TERMINAL
from attune_actors.store.base import Store

__all__ = ["RecoveryGuard", "fail_stored"]

log = logging.getLogger("attune_actors.engine")

MARKER = "recovering.json"


class RecoveryGuard:
    """The marker of the executions being resumed (see the module doc)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / MARKER

    def left_over(self) -> list[str]:
        """Executions a previous process was resuming when it died (empty after a clean start)."""
        try:
            found = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable recovery marker %s: %s", self.path, exc)
            return []
        return [str(i) for i in found] if isinstance(found, list) else []

    def mark(self, execution_id: str) -> None:
        # Written before the execution runs again; a process crash keeps it (the page cache
        # outlives the process), which is what matters here.
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([execution_id]), encoding="utf-8")
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def fail_stored(store: Store, execution_id: str, reason: str) -> list[str]:
    """Mark an unfinished execution and its unfinished nested ones failed in the store, with
    `reason` as their error and that of their unfinished task runs; the ids failed."""
    unfinished = set(store.unfinished())
    failed: list[str] = []
    todo = [execution_id]
    now = time.time()
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
