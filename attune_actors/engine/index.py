"""ExecutionIndex: the executions one engine runs now, each one's supervisor, and who waits for its end.

Engine, supervisors and the inquiry book read and change it only through these methods; an execution
is in the index from the moment its supervisor starts until it reports its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pykka import ActorDeadError, ActorRef

from attune_actors.engine.execution import Execution


class ExecutionIndex:
    """Live executions by id: supervisor, top-level execution, and futures waiting for the end."""

    __slots__ = ("_roots", "_supervisors", "_waiters")

    def __init__(self) -> None:
        self._supervisors: dict[str, ActorRef[Any]] = {}
        self._roots: dict[str, str] = {}  # nested execution id -> top-level execution id
        self._waiters: dict[str, list[asyncio.Future[Execution | None]]] = {}

    def add(self, execution_id: str, supervisor: ActorRef[Any], *, parent_id: str | None = None) -> None:
        """A supervisor now runs `execution_id` (nested in `parent_id`, if given)."""
        self._supervisors[execution_id] = supervisor
        if parent_id is not None:
            self._roots[execution_id] = self.root_of(parent_id)

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._supervisors

    def supervisor(self, execution_id: str) -> ActorRef[Any] | None:
        return self._supervisors.get(execution_id)

    def supervisors(self) -> list[ActorRef[Any]]:
        return list(self._supervisors.values())

    def root_of(self, execution_id: str) -> str:
        """The top-level execution an execution (maybe nested) belongs to."""
        return self._roots.get(execution_id, execution_id)

    def tell(self, execution_id: str, message: Any) -> bool:
        """Send a message to a live execution's supervisor; False if it is not live (or just stopped)."""
        ref = self._supervisors.get(execution_id)
        if ref is None:
            return False
        try:
            ref.tell(message)
        except ActorDeadError:
            return False
        return True

    def end_of(self, execution_id: str) -> asyncio.Future[Execution | None] | None:
        """A future resolved when the live execution ends, with it as it ended when its supervisor
        gave that (None otherwise); None if it is not live."""
        if execution_id not in self._supervisors:
            return None
        fut: asyncio.Future[Execution | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(execution_id, []).append(fut)
        return fut

    def ended(self, execution_id: str, final: Callable[[], Execution] | None = None) -> None:
        """The execution ended: drop it and wake whoever waits for it, each with `final()`.

        Handing the final execution to the waiters saves each of them reading it back from the
        store (a SQL read and a decode per execution); it is built only when someone waits.
        """
        self._supervisors.pop(execution_id, None)
        self._roots.pop(execution_id, None)
        for fut in self._waiters.pop(execution_id, ()):
            if not fut.done():
                fut.set_result(None if final is None else final())

    def cancel_waiters(self) -> None:
        """The engine closes: nobody will see these executions end."""
        for futs in self._waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()


__all__ = ["ExecutionIndex"]
