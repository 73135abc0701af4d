"""'Did you mean ...?' for unknown keys and names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `word`, if any is close enough to be a likely typo."""
    matches = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_key(key: object, valid: Iterable[str], where: str) -> str:
    """The message for an unknown key, naming the closest valid one."""
    valid = tuple(valid)
    scope = f" in {where}" if where else ""
    guess = closest(str(key), valid)
    if guess is not None:
        return f"unknown key '{key}'{scope} (did you mean '{guess}'?)"
    return f"unknown key '{key}'{scope} (valid keys: {', '.join(sorted(valid))})"
