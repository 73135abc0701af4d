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


class ItemRuns:
    """The items of one with_items run: one list per field, not one object per item.

    100,000 items as 100,000 objects were that many more objects for every full garbage collection
    to walk while the run lasts (the collector took 20 % of a 100,000-item run, 10 % of a 10,000
    one); lists of plain values are walked at a fraction of that. `items[i]` is an `ItemRun`, a
    view that reads and writes item i's fields here.
    """

    __slots__ = ("attempts", "deadline", "ended_at", "error", "input", "result", "started_at", "status")

    def __init__(self, count: int) -> None:
        self.status: list[str] = [SCHEDULED] * count
        self.result: list[Any] = [None] * count
        self.error: list[str | None] = [None] * count
        self.attempts: list[int] = [0] * count
        self.started_at: list[float | None] = [None] * count
        self.ended_at: list[float | None] = [None] * count
        self.input: list[dict[str, Any] | None] = [None] * count  # while in flight, for recovery
        self.deadline: list[float | None] = [None] * count

    def __len__(self) -> int:
        return len(self.status)

    def __getitem__(self, index: int) -> ItemRun:
        if not 0 <= index < len(self.status):
            raise IndexError(f"no item {index} of {len(self.status)}")
        return ItemRun(self, index)

    def __iter__(self) -> Iterator[ItemRun]:
        return (ItemRun(self, i) for i in range(len(self.status)))

    def load(self, index: int, rec: list[Any]) -> None:
        """Set item `index` from its stored record (`ItemRun.to_record`)."""
        (
            self.status[index],
            self.result[index],
            self.error[index],
            self.attempts[index],
            self.started_at[index],
            self.ended_at[index],
            self.input[index],
            self.deadline[index],
        ) = rec

    def results(self) -> list[Any]:
        return list(self.result)

    def documents(self) -> list[dict[str, Any]]:
        return [
            {
                "index": i,
                "status": status,
                "result": result,
                "error": error,
                "attempts": attempts,
                "started_at": iso(started),
                "ended_at": iso(ended),
            }
            for i, (status, result, error, attempts, started, ended) in enumerate(
                zip(self.status, self.result, self.error, self.attempts, self.started_at, self.ended_at,
                    strict=True)
            )
        ]


class ItemRun:
    """One item of a with_items task run (its own attempts, result and times): a view of its
    fields in the run's `ItemRuns`, made when asked for."""

    __slots__ = ("_at", "_items")

    def __init__(self, items: ItemRuns | None = None, index: int = 0) -> None:
        self._items = items if items is not None else ItemRuns(1)
        self._at = index

    @property
    def status(self) -> str:
        return self._items.status[self._at]

    @status.setter
    def status(self, value: str) -> None:
        self._items.status[self._at] = value

    @property
    def result(self) -> Any:
        return self._items.result[self._at]

    @result.setter
    def result(self, value: Any) -> None:
        self._items.result[self._at] = value

    @property
    def error(self) -> str | None:
        return self._items.error[self._at]

    @error.setter
    def error(self, value: str | None) -> None:
        self._items.error[self._at] = value

    @property
    def attempts(self) -> int:
        return self._items.attempts[self._at]

    @attempts.setter
    def attempts(self, value: int) -> None:
        self._items.attempts[self._at] = value

    @property
    def started_at(self) -> float | None:
        return self._items.started_at[self._at]

    @started_at.setter
    def started_at(self, value: float | None) -> None:
        self._items.started_at[self._at] = value

    @property
    def ended_at(self) -> float | None:
        return self._items.ended_at[self._at]

    @ended_at.setter
    def ended_at(self, value: float | None) -> None:
        self._items.ended_at[self._at] = value

    @property
    def input(self) -> dict[str, Any] | None:
        return self._items.input[self._at]

    @input.setter
    def input(self, value: dict[str, Any] | None) -> None:
        self._items.input[self._at] = value

    @property
    def deadline(self) -> float | None:
        return self._items.deadline[self._at]

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._items.deadline[self._at] = value

    def to_record(self, mask: Callable[[Any], Any] = _same, seal: Callable[[Any], Any] = _same) -> list[Any]:
        """The stored form, a plain array in the order `from_record` reads.

        `mask` is applied to the result and error, `seal` to the input (what a snapshot must not
        hold in clear), while the record is built: a with_items step stores thousands of these.
        """
        items, at = self._items, self._at
        return [
            items.status[at],
            mask(items.result[at]),
            mask(items.error[at]),
            items.attempts[at],
            items.started_at[at],
            items.ended_at[at],
            seal(items.input[at]),
            items.deadline[at],
        ]

    @classmethod
    def from_record(cls, rec: list[Any]) -> ItemRun:
        items = ItemRuns(1)
        items.load(0, rec)
        return cls(items)

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
        self.item_runs: ItemRuns | None = None  # with_items runs only
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
            run.item_runs = ItemRuns(rec["item_count"])
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
            else max(self.item_runs.attempts, default=0),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "items": None
            if self.item_runs is None
            else self.item_runs.documents(),
            "inquiry_id": self.inquiry_id,
        }
