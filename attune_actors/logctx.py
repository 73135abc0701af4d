"""Which execution and task a log record is about, without passing them to every call.

Supervisors and task actors set two context variables while they handle a message; asyncio tasks
started meanwhile (the action runs) inherit them. `ContextFilter`, on a handler, copies them onto
every record as `record.execution_id` and `record.task` ("-" when there is none), so a format such
as `%(execution_id)s %(task)s` (the CLI's default) shows them for the engine's records and the
actions' own alike. `install` also puts the masking filter on the handler: every secret any engine
(or worker) of the process has learnt is `***` in what it prints.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

from attune_actors.kv.masking import ProcessMaskingFilter

execution_id: ContextVar[str | None] = ContextVar("attune_execution_id", default=None)
task: ContextVar[str | None] = ContextVar("attune_task", default=None)


@contextlib.contextmanager
def about(execution: str | None, task_name: str | None) -> Iterator[None]:
    """Records logged (and asyncio tasks started) within are about this execution and task."""
    tokens = execution_id.set(execution), task.set(task_name)
    try:
        yield
    finally:
        task.reset(tokens[1])
        execution_id.reset(tokens[0])


class ContextFilter(logging.Filter):
    """Adds `execution_id` and `task` to each record passing through the handler it is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "execution_id"):
            record.execution_id = execution_id.get() or "-"
        if not hasattr(record, "task"):
            record.task = task.get() or "-"
        return True


def install(handler: logging.Handler) -> None:
    """Put a ContextFilter and a ProcessMaskingFilter (every known secret becomes `***`) on
    `handler`, once each: the CLI, `serve` and `worker` install them on every handler they log to."""
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())
    if not any(isinstance(f, ProcessMaskingFilter) for f in handler.filters):
        handler.addFilter(ProcessMaskingFilter())
