"""The state of one execution's task runs, as the conductor keeps it and snapshots store it.

Plain slotted records, cheap in memory (10,000 parked executions must fit in a few MiB) and cheap to
turn into snapshot records. A `TaskRun` is also the read-only mapping templates see as
`task.<name>` (status, result, error, attempts, started_at, ended_at), so no copy is made per render.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from attune_actors.statuses import SCHEDULED, TERMINAL

_VIEW_KEYS = ("status", "result", "error", "attempts", "started_at", "ended_at")


_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds, as documents show times.

    The same text as `datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")`: the
    fraction is rounded to microseconds the way datetime rounds it, then truncated to milliseconds.
    The date-and-time part of the last second is kept, because a with_items document formats
    hundreds of thousands of times that mostly fall within the same few seconds.
    """
    global _last_second
    if ts is None:
        return None
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    second = int(whole)
    cached = _last_second
    if cached[0] != second:
        cached = _last_second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{micros // 1000:03d}Z"


def _same(value: Any) -> Any:
    return value


class ItemRun:
    """One item of a with_items task run: its own attempts, result and times."""

    __slots__ = ("attempts", "deadline", "ended_at", "error", "input", "result", "started_at", "status")

    def __init__(self) -> None:
        self.status: str = SCHEDULED
        self.result: Any = None
        self.error: str | None = None
        self.attempts: int = 0
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.input: dict[str, Any] | None = None  # kept while in flight, to re-dispatch after a crash
        self.deadline: float | None = None

    def to_record(self, mask: Callable[[Any], Any] = _same, seal: Callable[[Any], Any] = _same) -> list[Any]:
        """The stored form, a plain array in the order `from_record` reads.

        `mask` is applied to the result and error, `seal` to the input (what a snapshot must not
        hold in clear), while the record is built: a with_items step stores thousands of these.
        """
        return [
            self.status,
            mask(self.result),
            mask(self.error),
            self.attempts,
            self.started_at,
            self.ended_at,
            seal(self.input),
            self.deadline,
        ]

    @classmethod
    def from_record(cls, rec: list[Any]) -> ItemRun:
        item = cls()
        (
            item.status,
            item.result,
            item.error,
            item.attempts,
            item.started_at,
            item.ended_at,
            item.input,
            item.deadline,
        ) = rec
        return item

    def document(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
        }


class _Unstarted(ItemRun):
    """`UNSTARTED`: refuses changes, since every item that has not started shares it."""

    __slots__ = ()

    def __init__(self) -> None:
        fresh = ItemRun()
        for name in ItemRun.__slots__:
            object.__setattr__(self, name, getattr(fresh, name))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("an unstarted item is shared: take it with own_item() to change it")


#: Every item of a with_items run that has not started: 100,000 items are then 100,000 references
#: to one object instead of 100,000 objects for every full garbage collection to walk (an item
#: gets an object of its own when it starts; see `own_item`).
UNSTARTED: ItemRun = _Unstarted()


def unstarted_items(count: int) -> list[ItemRun]:
    return [UNSTARTED] * count


def own_item(items: list[ItemRun], index: int) -> ItemRun:
    """Item `index` as an object of its own, to change."""
    item = items[index]
    if item is UNSTARTED:
        item = items[index] = ItemRun()
    return item


class TaskRun(Mapping[str, Any]):
    """One run of one task (a retry is another attempt of the same run, not a new run)."""

    __slots__ = (
        "attempts",
        "child_id",
        "deadline",
        "ended_at",
        "error",
        "fired",
        "group",
        "handled",
        "id",
        "inflight",
        "input",
        "inquiry_id",
        "item_runs",
        "next_item",
        "pending_subs",
        "result",
        "seq",
        "started_at",
        "status",
        "task",
    )

    def __init__(self, run_id: str, task: str, seq: int, group: str | None = None) -> None:
        self.id = run_id
        self.task = task
        self.seq = seq
        self.status: str = SCHEDULED
        self.result: Any = None
        self.error: str | None = None
        self.attempts: int = 0
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.group = group  # id of the parallel group run this sub-task run belongs to
        self.input: dict[str, Any] | None = None  # rendered input of the current attempt
        self.deadline: float | None = None  # per-attempt deadline (epoch seconds), kept across restarts
        self.inquiry_id: str | None = None
        self.child_id: str | None = None  # nested workflow execution of the current attempt
        self.item_runs: list[ItemRun] | None = None  # with_items runs only
        self.next_item = 0  # index of the next item to dispatch
        self.inflight = 0  # items dispatched and not ended
        self.pending_subs = 0  # parallel groups: sub-task runs not ended
        self.handled = False  # a transition fired after it ended (a failure it had was handled)
        self.fired: tuple[int, ...] = ()  # indices of the task's `next` entries that fired when it ended

    # Mapping interface: what `task.<name>` shows to templates.
    def __getitem__(self, key: str) -> Any:
        if key in _VIEW_KEYS:
            value = getattr(self, key)
            return iso(value) if key in ("started_at", "ended_at") else value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_VIEW_KEYS)

    def __len__(self) -> int:
        return len(_VIEW_KEYS)

    def __repr__(self) -> str:
        return f"TaskRun({self.id} {self.task} {self.status})"

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "seq": self.seq,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "group": self.group,
            "input": None if self.terminal else self.input,
            "deadline": self.deadline,
            "inquiry_id": self.inquiry_id,
            "child_id": self.child_id,
            "item_count": None if self.item_runs is None else len(self.item_runs),
            "next_item": self.next_item,
            "pending_subs": self.pending_subs,
            "handled": self.handled,
            "fired": list(self.fired),
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> TaskRun:
        run = cls(rec["id"], rec["task"], rec["seq"], rec["group"])
        for key in (
            "status",
            "result",
            "error",
            "attempts",
            "started_at",
            "ended_at",
            "input",
            "deadline",
            "inquiry_id",
            "child_id",
            "next_item",
            "pending_subs",
            "handled",
        ):
            setattr(run, key, rec[key])
        run.fired = tuple(rec.get("fired") or ())  # records saved before it was kept have none
        if rec["item_count"] is not None:
            run.item_runs = unstarted_items(rec["item_count"])
        return run

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.task,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            # A with_items run's attempts are its items': it shows the most any item took.
            "attempts": self.attempts
            if self.item_runs is None
            else max((it.attempts for it in self.item_runs), default=0),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "items": None
            if self.item_runs is None
            else [it.document(i) for i, it in enumerate(self.item_runs)],
            "inquiry_id": self.inquiry_id,
        }
