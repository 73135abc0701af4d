"""The state of one execution's task runs, as the conductor keeps it and snapshots store it.

Plain slotted records, cheap in memory (10,000 parked executions must fit in a few MiB) and cheap to
turn into snapshot records. A `TaskRun` is also the read-only mapping templates see as
`task.<name>` (status, result, error, attempts, started_at, ended_at), so no copy is made per render.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from attune_actors.engine.execution import TaskRunInfo
from attune_actors.statuses import SCHEDULED, TERMINAL, Status
from attune_actors.store.base import RUN_FIELDS

_VIEW_KEYS = ("status", "result", "error", "attempts", "started_at", "ended_at")


_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")
_last_iso: tuple[float, str] = (math.nan, "")
#: Status members by value (`Status(value)` goes through the enum machinery: ~0.5 µs).
STATUSES: dict[str, Status] = {s.value: s for s in Status}


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds, as documents show times.

    The same text as `datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")`: the
    fraction is rounded to microseconds the way datetime rounds it, then truncated to milliseconds.
    The date-and-time part of the last second is kept, because a with_items document formats
    hundreds of thousands of times that mostly fall within the same few seconds; and so is the
    last text, because in a chain a run starts at the time the previous one ended.
    """
    global _last_second, _last_iso
    if ts is None:
        return None
    last = _last_iso
    if last[0] == ts:
        return last[1]
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
    text = f"{cached[1]}.{micros // 1000:03d}Z"
    _last_iso = (ts, text)
    return text


NO_TIME = math.nan  # an item's time that is not set (None in records and documents)


def _time(value: float) -> float | None:
    return None if value != value else value  # NaN: not set


class Items:
    """The items of one with_items run: one list or array per field, not an object per item.

    A full garbage collection walks every tracked object and every reference a tracked container
    holds, reading each referent: 100,000 `ItemRun` objects with three float attributes each
    cost it ~400,000 scattered reads, and with 1,000 items in flight it runs every few thousand
    items. Here statuses and attempts are shared strings and small ints, results and errors
    mostly None, and the times are arrays of doubles the collector does not see (NaN: not set).
    The conductor reads and writes these directly where it handles an item; `ItemRun` is a view
    of one item, for the snapshot and the templates (`succeeded()` & co. of the item whose attempt
    ended).
    """

    __slots__ = ("attempts", "deadline", "ended_at", "error", "input", "result", "started_at", "status")

    def __init__(self, count: int) -> None:
        self.status: list[str] = [SCHEDULED] * count
        self.result: list[Any] = [None] * count
        self.error: list[str | None] = [None] * count
        self.attempts: list[int] = [0] * count
        self.started_at = array("d", (NO_TIME,)) * count
        self.ended_at = array("d", (NO_TIME,)) * count
        self.deadline = array("d", (NO_TIME,)) * count  # of the latest attempt
        # Items whose latest attempt's input is kept (in flight, or waiting for a retry), to
        # re-dispatch after a crash.
        self.input: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.status)

    def record(
        self, idx: int, mask: Callable[[Any], Any] | None = None, seal: Callable[[Any], Any] | None = None
    ) -> list[Any]:
        """Item `idx`'s stored form, a plain array in the order `load` reads.

        `mask` is applied to the result and error, `seal` to the input (what a snapshot must not
        hold in clear), while the record is built: a with_items step stores thousands of these.
        None: nothing to mask.
        """
        started, ended, deadline = self.started_at[idx], self.ended_at[idx], self.deadline[idx]
        result, error, inp = self.result[idx], self.error[idx], self.input.get(idx)
        if mask is not None:
            result, error = mask(result), mask(error)
        if seal is not None and inp is not None:
            inp = seal(inp)
        return [
            self.status[idx],
            result,
            error,
            self.attempts[idx],
            None if started != started else started,  # NaN: not set
            None if ended != ended else ended,
            inp,
            None if deadline != deadline else deadline,
        ]

    def load(self, idx: int, rec: list[Any]) -> None:
        """Item `idx` as `record` stored it."""
        status, result, error, attempts, started, ended, inp, deadline = rec
        self.status[idx], self.result[idx], self.error[idx] = status, result, error
        self.attempts[idx] = attempts
        self.started_at[idx] = NO_TIME if started is None else started
        self.ended_at[idx] = NO_TIME if ended is None else ended
        self.deadline[idx] = NO_TIME if deadline is None else deadline
        if inp is None:
            self.input.pop(idx, None)
        else:
            self.input[idx] = inp

    def documents(self) -> list[dict[str, Any]]:
        return [
            {
                "index": idx,
                "status": status,
                "result": result,
                "error": error,
                "attempts": attempts,
                "started_at": iso(_time(started)),
                "ended_at": iso(_time(ended)),
            }
            for idx, (status, result, error, attempts, started, ended) in enumerate(
                zip(
                    self.status, self.result, self.error, self.attempts, self.started_at, self.ended_at,
                    strict=True,
                )
            )
        ]


#: Where an item's input is in its record (recovery unseals it).
ITEM_INPUT = 6


class ItemRun:
    """One item of a with_items run, read through its run's `Items`: what a snapshot step lists
    as changed (read when it is saved) and what `succeeded()` & co. read for an item."""

    __slots__ = ("index", "items")

    def __init__(self, items: Items, index: int) -> None:
        self.items = items
        self.index = index

    @property
    def status(self) -> str:
        return self.items.status[self.index]

    @property
    def result(self) -> Any:
        return self.items.result[self.index]

    @property
    def error(self) -> str | None:
        return self.items.error[self.index]

    @property
    def attempts(self) -> int:
        return self.items.attempts[self.index]

    @property
    def deadline(self) -> float | None:
        return _time(self.items.deadline[self.index])

    def to_record(
        self, mask: Callable[[Any], Any] | None = None, seal: Callable[[Any], Any] | None = None
    ) -> list[Any]:
        return self.items.record(self.index, mask, seal)


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
        "item_state",
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
        self.item_state: Items | None = None  # with_items runs only
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

    def record(
        self, mask: Callable[[Any], Any] | None = None, seal: Callable[[Any], Any] | None = None
    ) -> list[Any]:
        """The stored form (`RUN_FIELDS`' order): `mask` applied to the result and error, `seal`
        to the input (kept only while the run is active, for recovery to send it again); None:
        nothing to mask (a step saves two of these: no call is made then)."""
        result, error = self.result, self.error
        status = self.status
        inp = None if status in TERMINAL else self.input
        if mask is not None:
            result, error = mask(result), mask(error)
        if seal is not None and inp is not None:
            inp = seal(inp)
        items = self.item_state
        return [
            self.id, self.seq, self.task, status, result, error, self.attempts, self.started_at,
            self.ended_at, self.group, inp, self.deadline, self.inquiry_id, self.child_id,
            None if items is None else len(items), self.next_item, self.pending_subs, self.handled,
            self.fired,
        ]

    def to_record(self) -> dict[str, Any]:
        """`record` as a dict, the shape stores read records back in (`run_fields`)."""
        return dict(zip(RUN_FIELDS, self.record(), strict=True))

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> TaskRun:
        """A run from its record as stores read it back (`run_fields`)."""
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
            run.item_state = Items(rec["item_count"])
        return run

    def info(self) -> TaskRunInfo:
        """`document()` as the `TaskRunInfo` callers get (no dict in between)."""
        items = self.item_state
        return TaskRunInfo(
            self.id,
            self.task,
            STATUSES[self.status],
            self.result,
            self.error,
            self.attempts if items is None else max(items.attempts, default=0),
            iso(self.started_at),
            iso(self.ended_at),
            None if items is None else items.documents(),
            self.inquiry_id,
        )

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.task,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            # A with_items run's attempts are its items': it shows the most any item took.
            "attempts": self.attempts
            if self.item_state is None
            else max(self.item_state.attempts, default=0),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "items": None if self.item_state is None else self.item_state.documents(),
            "inquiry_id": self.inquiry_id,
        }
