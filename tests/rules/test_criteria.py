"""Every criteria operator of SPEC section 10, over paths into a trigger instance."""

from __future__ import annotations

from typing import Any

import pytest

from attune_actors.rules.criteria import compile_criteria
from attune_actors.rules.service import subject_matches

INSTANCE = {
    "id": "i1",
    "type": "core.nats",
    "subject": "git.push",
    "payload": {
        "branch": "main",
        "n": 3,
        "tags": ["a", "b"],
        "repo": "acme/shop",
        "flag": True,
        "items": [{"x": 1}],
    },
}


@pytest.mark.parametrize(
    ("path", "op", "pattern", "expected"),
    [
        ("trigger.payload.branch", "equals", "main", True),
        ("trigger.payload.n", "equals", "3", False),
        ("trigger.payload.flag", "equals", 1, False),
        ("trigger.payload.branch", "nequals", "dev", True),
        ("trigger.payload.n", "lt", 4, True),
        ("trigger.payload.n", "lte", 3, True),
        ("trigger.payload.n", "gt", 3, False),
        ("trigger.payload.n", "gte", 3.0, True),
        ("trigger.payload.n", "gt", "2", False),
        ("trigger.payload.tags", "contains", "a", True),
        ("trigger.payload.repo", "contains", "shop", True),
        ("trigger.payload.tags", "ncontains", "z", True),
        ("trigger.payload.repo", "startswith", "acme/", True),
        ("trigger.payload.repo", "endswith", "/shop", True),
        ("trigger.payload.repo", "regex", "^acme/", True),
        ("trigger.payload.n", "regex", "3", False),
        ("trigger.payload.branch", "exists", True, True),
        ("trigger.payload.nothing", "exists", True, False),
        ("trigger.payload.nothing", "nexists", True, True),
        ("trigger.payload.branch", "in", ["main", "release"], True),
        ("trigger.payload.n", "in", [True, "3"], False),
        ("trigger.payload.branch", "nin", ["dev"], True),
        ("trigger.payload.items.0.x", "equals", 1, True),
        ("trigger.subject", "equals", "git.push", True),
        ("trigger.payload.nothing", "nequals", "x", False),
    ],
)
def test_operator(path: str, op: str, pattern: Any, expected: bool) -> None:
    assert compile_criteria(((path, op, pattern),))(INSTANCE) is expected


def test_all_criteria_must_hold() -> None:
    both = compile_criteria((("trigger.payload.branch", "equals", "main"), ("trigger.payload.n", "gt", 5)))
    assert both(INSTANCE) is False
    assert compile_criteria(())(INSTANCE) is True


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("git.push", "git.push", True),
        ("git.*", "git.push", True),
        ("git.>", "git.a.b", True),
        ("git.>", "git", False),
        ("git.*", "git.a.b", False),
        ("git.push", "git.pull", False),
    ],
)
def test_subject_wildcards(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected
