"""'Did you mean ...?' for unknown keys and names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `word`, if any is close enough to be a likely typo.

    difflib's similarity finds most typos; short words (`dp` for `do`, `ref` for `rel`) are too short
    for a ratio, so one edit (insert, delete, replace or swap two letters) also counts as close.
    """
    word = str(word)
    pool = [str(c) for c in candidates]
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    if len(word) < 2:
        return None
    near = [c for c in pool if len(c) >= 2 and _one_edit(word.lower(), c.lower())]
    return near[0] if near else None


def _one_edit(a: str, b: str) -> bool:
    """Whether `a` and `b` differ by exactly one insertion, deletion, replacement or adjacent swap."""
    if a == b or abs(len(a) - len(b)) > 1 or not a or not b:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def printable(text: object) -> str:
    """`text` with control characters (newlines, tabs, ...) escaped, so a message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def unknown_key(key: object, valid: Iterable[str], where: str) -> str:
    """The message for an unknown key, naming the closest valid one."""
    valid = tuple(valid)
    scope = f" in {where}" if where else ""
    guess = closest(str(key), valid)
    if guess is not None:
        return f"unknown key '{printable(key)}'{scope} (did you mean '{guess}'?)"
    return f"unknown key '{printable(key)}'{scope} (valid keys: {', '.join(sorted(valid))})"
