"""What callers get back: `Execution` and `TaskRunInfo`, read-only views of execution documents.

The JSON execution document (SPEC section 6) is the one shape every front end returns (Python API,
CLI `--json`, NATS control service); these classes are that document with attribute access.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from attune_actors.frozen import frozen
from attune_actors.statuses import Status

__all__ = ["Execution", "Status", "TaskRunInfo"]


@frozen
class TaskRunInfo:
    """One task run of an execution (a with_items run lists its per-item runs in `items`)."""

    id: str
    name: str
    status: Status
    result: Any = None
    error: str | None = None
    attempts: int = 0
    started_at: str | None = None
    ended_at: str | None = None
    items: list[dict[str, Any]] | None = None
    inquiry_id: str | None = None

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TaskRunInfo:
        return cls(
            id=doc["id"],
            name=doc["name"],
            status=Status(doc["status"]),
            result=doc.get("result"),
            error=doc.get("error"),
            attempts=doc.get("attempts", 0),
            started_at=doc.get("started_at"),
            ended_at=doc.get("ended_at"),
            items=doc.get("items"),
            inquiry_id=doc.get("inquiry_id"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "items": self.items,
            "inquiry_id": self.inquiry_id,
        }


@frozen
class Execution:
    """One workflow execution, as it was when this object was made."""

    id: str
    ref: str
    status: Status
    parameters: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: str | None = None
    ended_at: str | None = None
    parent_id: str | None = None
    tasks: list[TaskRunInfo] = field(default_factory=list)
    rerun_of: str | None = None

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Execution:
        return cls(
            id=doc["id"],
            ref=doc["ref"],
            status=Status(doc["status"]),
            parameters=doc.get("parameters") or {},
            output=doc.get("output"),
            error=doc.get("error"),
            started_at=doc.get("started_at"),
            ended_at=doc.get("ended_at"),
            parent_id=doc.get("parent_id"),
            tasks=[TaskRunInfo.from_dict(t) for t in doc.get("tasks") or ()],
            rerun_of=doc.get("rerun_of"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The execution document (SPEC section 6), ready for `json.dumps`."""
        return {
            "id": self.id,
            "ref": self.ref,
            "status": self.status.value,
            "parameters": self.parameters,
            "output": self.output,
            "error": self.error,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "parent_id": self.parent_id,
            "rerun_of": self.rerun_of,
            "tasks": [t.to_dict() for t in self.tasks],
        }

    def task(self, name: str) -> TaskRunInfo:
        """The latest run of the task called `name` (KeyError if it never ran)."""
        for run in reversed(self.tasks):
            if run.name == name:
                return run
        raise KeyError(name)

    @property
    def terminal(self) -> bool:
        return self.status.terminal
