"""Masking of secret values: one facility between secrets and all that is stored, logged or shown.

A `Masker` learns secret values (`add`) and replaces every occurrence of them with `***` in text and
in JSON-like data (`mask`, `mask_text`). The engine gives one to the `kv` template scope, which adds
each secret it decrypts, and passes results, events, snapshots and API output through `mask`; a
`MaskingFilter` on log handlers does the same for log records. With no secrets known, masking
returns its input untouched at the cost of one truth test.

What is masked, and why:

- strings shorter than `MIN_SECRET_LENGTH` (3) characters are ignored: masking every `a` or `42`
  would shred all output, and such a value hides nothing anyway;
- a string secret is also masked in its JSON-escaped and `repr`-escaped forms and, when it spans
  lines, line by line, so it is caught inside serialised documents, reprs and multi-line dumps;
- numbers are masked through their `str` form: as substrings of text, and as whole values in data
  (the integer `123456` becomes `"***"`); booleans and `null` are never secrets;
- for lists and dicts, every leaf is added (dict keys are names, not secrets).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["MASK", "MIN_SECRET_LENGTH", "Masker", "MaskingFilter", "ProcessMaskingFilter", "default_masker"]

MASK = "***"
MIN_SECRET_LENGTH = 3


class Masker:
    """A set of secret values and the masking of their occurrences; thread-safe.

    `add` may be called from any thread while others mask: it rebuilds the pattern under a lock and
    publishes it with one assignment, and `mask` reads whichever pattern is current. Secrets are
    never forgotten (a value once decrypted may still sit in any later output).
    """

    __slots__ = ("__weakref__", "_lock", "_state", "version")

    def __init__(self, secrets: Iterable[Any] = ()) -> None:
        _live.add(self)  # for the log handlers' ProcessMaskingFilter
        self._lock = threading.Lock()
        # The pattern and the strings it matches, replaced as one so readers need no lock.
        self._state: tuple[re.Pattern[str], frozenset[str]] | None = None
        self.version = 0  # counts the changes: what was masked before a change may need it again
        for value in secrets:
            self.add(value)

    def __bool__(self) -> bool:
        """Whether any secret is known (an empty masker masks nothing)."""
        return self._state is not None

    def __repr__(self) -> str:
        count = 0 if self._state is None else len(self._state[1])
        return f"<Masker of {count} strings>"  # never the secrets themselves

    def add(self, value: Any) -> None:
        """Mask `value` from now on: a string, a number, or a list/dict of them (see module doc)."""
        new = {s for s in _forms(value) if len(s) >= MIN_SECRET_LENGTH and not s.isspace()}
        with self._lock:
            known = frozenset() if self._state is None else self._state[1]
            if new <= known:
                return
            secrets = known | new
            # Longest first: where secrets overlap, the longer one is masked whole.
            alternatives = sorted(secrets, key=len, reverse=True)
            self._state = (re.compile("|".join(map(re.escape, alternatives))), secrets)
            self.version += 1

    def mask_text(self, text: str) -> str:
        """`text` with every occurrence of a secret replaced by `***`."""
        state = self._state
        if state is None:
            return text
        return state[0].sub(MASK, text)

    def found_in(self, obj: Any) -> list[str]:
        """The secrets that occur in `obj` (text, numbers, and lists/dicts of them), each once."""
        state = self._state
        if state is None:
            return []
        found: dict[str, None] = {}
        stack = [obj]
        while stack:
            value = stack.pop()
            if isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, list | tuple):
                stack.extend(value)
            elif isinstance(value, str):
                found.update(dict.fromkeys(state[0].findall(value)))
            elif isinstance(value, int | float) and not isinstance(value, bool) and str(value) in state[1]:
                found[str(value)] = None
        return list(found)

    def mask(self, obj: Any) -> Any:
        """A masked copy of `obj` (str, int/float, and dict/list/tuple of them, nested).

        Parts holding no secret are returned as they are, not copied: `mask(x) is x` when nothing in
        `x` had to change. Other objects are returned unchanged, so mask data before turning it into
        text, or mask the text (`mask_text`).
        """
        state = self._state
        if state is None:
            return obj
        return _mask(obj, *state)


def _forms(value: Any) -> Iterator[str]:
    """The strings under which `value` is masked."""
    if isinstance(value, str):
        yield value
        yield json.dumps(value)[1:-1]
        yield repr(value)[1:-1]
        if "\n" in value:
            yield from (line.strip() for line in value.splitlines())
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _forms(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _forms(item)
    else:
        yield from _forms(str(value))


def _mask(obj: Any, pattern: re.Pattern[str], secrets: frozenset[str]) -> Any:
    if isinstance(obj, str):
        masked = pattern.sub(MASK, obj)
        return obj if masked == obj else masked
    if isinstance(obj, dict):
        pairs = [
            (k, v, _mask(k, pattern, secrets), _mask(v, pattern, secrets)) for k, v in obj.items()
        ]
        if all(mk is k and mv is v for k, v, mk, mv in pairs):
            return obj
        return {mk: mv for _, _, mk, mv in pairs}
    if isinstance(obj, list | tuple):
        items = [_mask(item, pattern, secrets) for item in obj]
        if all(m is o for m, o in zip(items, obj, strict=True)):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, int | float) and not isinstance(obj, bool) and str(obj) in secrets:
        return MASK
    return obj


class MaskingFilter(logging.Filter):
    """A logging filter that masks secrets in records; attach it to handlers.

    It masks the message, its arguments, and the traceback and stack text (which it formats now, so
    the handler's formatter prints the masked version). A record whose formatted message holds a
    secret is rewritten as that masked message with no arguments. The record is changed in place,
    so handlers after this one see the masked version too. It never drops a record.

    Attach it to each handler (`handler.addFilter(MaskingFilter(masker))`): filters on a logger do
    not see records that propagate from its child loggers. Attributes given through `extra=` are
    not masked.
    """

    def __init__(self, masker: Masker | None = None) -> None:
        super().__init__()
        self.masker = default_masker() if masker is None else masker

    def filter(self, record: logging.LogRecord) -> bool:
        for masker in self._maskers():
            if masker:
                _mask_record(record, masker)
        return True

    def _maskers(self) -> Iterable[Masker]:
        return (self.masker,)


class ProcessMaskingFilter(MaskingFilter):
    """A `MaskingFilter` that masks with every `Masker` of the process: each engine's, the default
    one, a worker's. What `configure_logging` puts on the handlers it installs."""

    def __init__(self) -> None:
        super().__init__(default_masker())

    def _maskers(self) -> Iterable[Masker]:
        return list(_live)


def _mask_record(record: logging.LogRecord, masker: Masker) -> None:
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: mask what is there
        record.msg = masker.mask(record.msg)
        record.args = masker.mask(record.args)
    else:
        masked = masker.mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = _formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = masker.mask_text(record.exc_text)
    if record.stack_info:
        record.stack_info = masker.mask_text(record.stack_info)


_formatter = logging.Formatter()
_live: weakref.WeakSet[Masker] = weakref.WeakSet()
_default = Masker()


def default_masker() -> Masker:
    """The process-wide masker: for code that has no masker of its own to hand (CLI, log setup).

    Secrets added to it are masked for the life of the process, whichever engine added them.
    """
    return _default
