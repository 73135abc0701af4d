"""`logging.format: json`: one JSON object per log line, for log collectors.

    {"time": "2026-12-07T00:10:04.123Z", "level": "INFO", "logger": "attune_actors.nats.worker",
     "message": "attempt ... ended succeeded in 0.012 s", "execution_id": "...", "task": "build"}

`execution_id` and `task` are null when a record is about no execution (`logctx.ContextFilter`
fills them); `exception` holds the traceback when there is one. Masking happens before this
formatter runs (the `ProcessMaskingFilter` that `logctx.install` puts on every handler rewrites the
record's message and traceback), so a JSON line holds `***` wherever a secret was. Extra fields a
record carries under `attune_fields` (a dict) are added as they are: the worker's per-attempt
lines give their key, status and duration that way.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

JSON_FORMAT = "json"  # the `logging.format` value that selects this formatter


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "execution_id": _id(getattr(record, "execution_id", None)),
            "task": _id(getattr(record, "task", None)),
        }
        fields = getattr(record, "attune_fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def _id(value: Any) -> Any:
    return None if value in (None, "-") else value


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


__all__ = ["JSON_FORMAT", "JsonFormatter"]
