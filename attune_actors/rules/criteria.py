"""Criteria: a rule's `{path: {operator: pattern}}` tests compiled into one predicate over an instance.

Paths are dotted keys into the trigger instance (`trigger.payload.branch`); a number token indexes
a list. A path that leads nowhere fails every operator but `nexists`. Operators never raise: a
comparison between values of different kinds (a number and a string) is simply false.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from attune_actors.spec.rules import OPERATORS

_MISSING = object()
Predicate = Callable[[dict[str, Any]], bool]


def lookup(instance: dict[str, Any], path: str) -> Any:
    """The value at `trigger.<path>` of an instance, or `_MISSING`."""
    return _walk(instance, tuple(path.split(".")[1:]))


def _walk(instance: dict[str, Any], tokens: tuple[str, ...]) -> Any:
    value: Any = instance
    for token in tokens:
        if isinstance(value, dict):
            value = value.get(token, _MISSING)
        elif isinstance(value, list) and token.lstrip("-").isdigit():
            index = int(token)
            value = value[index] if -len(value) <= index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return value
    return value


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (isinstance(a, str) and isinstance(b, str))


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    return lambda value, pattern: _comparable(value, pattern) and op(value, pattern)


def _contains(value: Any, pattern: Any) -> bool:
    if isinstance(value, str):
        return isinstance(pattern, str) and pattern in value
    if isinstance(value, list | dict):
        try:
            return pattern in value
        except TypeError:  # an unhashable pattern against a dict's keys
            return False
    return False


def _equal(value: Any, pattern: Any) -> bool:
    """`==` without Python's cross-kind surprises (`1 == True`, `1 == 1.0` stays true)."""
    return (type(value) is type(pattern) or _comparable(value, pattern)) and bool(value == pattern)


def _in(value: Any, pattern: Any) -> bool:
    return any(_equal(value, p) for p in pattern)


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": _equal,
    "nequals": lambda v, p: not _equal(v, p),
    "lt": _compare(operator.lt),
    "lte": _compare(operator.le),
    "gt": _compare(operator.gt),
    "gte": _compare(operator.ge),
    "contains": _contains,
    "ncontains": lambda v, p: not _contains(v, p),
    "startswith": lambda v, p: isinstance(v, str) and v.startswith(p),
    "endswith": lambda v, p: isinstance(v, str) and v.endswith(p),
    "in": _in,
    "nin": lambda v, p: not _in(v, p),
    "exists": lambda v, p: True,
}
assert set(_TESTS) | {"regex", "nexists"} == set(OPERATORS)


def compile_criteria(criteria: tuple[tuple[str, str, Any], ...]) -> Predicate:
    """One predicate that holds when every criterion holds (no criteria: always)."""
    tests = [_compile_one(path, op, pattern) for path, op, pattern in criteria]
    if not tests:
        return lambda instance: True
    if len(tests) == 1:
        return tests[0]
    return lambda instance: all(test(instance) for test in tests)


def _compile_one(path: str, op: str, pattern: Any) -> Predicate:
    tokens = tuple(path.split(".")[1:])
    if op == "nexists":
        return lambda instance: _walk(instance, tokens) is _MISSING
    if op == "regex":
        search = re.compile(pattern).search

        def regex(instance: dict[str, Any]) -> bool:
            value = _walk(instance, tokens)
            return isinstance(value, str) and search(value) is not None

        return regex
    test = _TESTS[op]

    def check(instance: dict[str, Any]) -> bool:
        value = _walk(instance, tokens)
        return value is not _MISSING and test(value, pattern)

    return check


__all__ = ["Predicate", "compile_criteria", "lookup"]
