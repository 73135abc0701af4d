"""Scripted outcomes: what a mocked action does on each call, and the record of the calls made.

An `Outcome` is one attempt's scripted end (a result, an error, a timeout, or the real action),
optionally after a delay in the engine's time. A `Mock` holds the rules for one action ref; the
first rule whose conditions match a call scripts it, rules with conditions (`item`, `task`,
`when`) before the plain one. A rule's outcomes are a sequence: its n-th call gets the n-th
outcome, and the last one repeats.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from attune_actors.transport.base import ActionRun

__all__ = ["Call", "Mock", "Outcome", "error", "real", "result", "timeout"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one scripted attempt ends.

    `error` set: the attempt fails with that message (and `result` as its partial result).
    `timeout`: it times out at its deadline (the task's `timeout`), or after `delay` without one.
    `real`: the real action runs instead. `delay`: seconds of engine time before the outcome
    arrives; an attempt still running at its deadline times out there.
    """

    result: Any = None
    error: str | None = None
    timeout: bool = False
    delay: float = 0.0
    real: bool = False

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ValueError(f"an outcome's delay cannot be negative (got {self.delay})")
        if self.real and (self.error is not None or self.timeout or self.result is not None):
            raise ValueError("a real outcome runs the action: it takes no result, error or timeout")
        if self.timeout and self.error is not None:
            raise ValueError("an outcome is a timeout or an error, not both")


def result(value: Any = None, *, delay: float = 0.0) -> Outcome:
    """The attempt succeeds with `value` as its result (after `delay` seconds of engine time)."""
    return Outcome(result=value, delay=delay)


def error(message: str, *, result: Any = None, delay: float = 0.0) -> Outcome:
    """The attempt fails with `message` (and `result` as its partial result)."""
    return Outcome(result=result, error=message, delay=delay)


def timeout(*, delay: float = 0.0) -> Outcome:
    """The attempt times out: at its deadline, or after `delay` when the task has no timeout."""
    return Outcome(timeout=True, delay=delay)


def real() -> Outcome:
    """The real action runs for this call."""
    return Outcome(real=True)


@dataclass(frozen=True, slots=True)
class Call:
    """One attempt the engine made of an action, and how it ended (`outcome` None: it ran for real)."""

    execution_id: str
    action: str
    task: str
    item: int | None
    attempt: int
    input: dict[str, Any]
    at: float  # engine time (epoch seconds) when it was submitted
    outcome: Outcome | None


Predicate = Callable[[dict[str, Any]], bool]


@dataclass
class _Rule:
    outcomes: tuple[Outcome, ...]
    item: int | None = None
    task: str | None = None
    when: Predicate | None = None
    calls: int = 0

    @property
    def plain(self) -> bool:
        return self.item is None and self.task is None and self.when is None

    def matches(self, run: ActionRun) -> bool:
        if self.item is not None and run.item != self.item:
            return False
        if self.task is not None and run.task != self.task:
            return False
        return self.when is None or bool(self.when(run.parameters))

    def next(self) -> Outcome:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        return outcome


class Mock:
    """The scripted behaviour of one action ref; made by `WorkflowTest.mock`."""

    def __init__(self, action: str) -> None:
        self.action = action
        self._rules: list[_Rule] = []

    def __repr__(self) -> str:
        return f"Mock({self.action!r}, rules={len(self._rules)})"

    def add(
        self,
        outcomes: tuple[Outcome, ...],
        *,
        item: int | None = None,
        task: str | None = None,
        when: Predicate | None = None,
    ) -> Mock:
        """Script the calls matching the conditions (a plain rule replaces the previous plain one)."""
        if not outcomes:
            raise ValueError(f"mock of {self.action}: give at least one outcome")
        bad = [o for o in outcomes if not isinstance(o, Outcome)]
        if bad:
            raise TypeError(
                f"mock of {self.action}: outcomes are made with result(), error(), timeout() or "
                f"real(), not {type(bad[0]).__name__}"
            )
        rule = _Rule(tuple(outcomes), item, task, when)
        if rule.plain:
            self._rules = [r for r in self._rules if not r.plain]
        self._rules.append(rule)
        self._rules.sort(key=lambda r: r.plain)  # stable: conditional rules first, in given order
        return self

    def pick(self, run: ActionRun) -> Outcome | None:
        """The scripted outcome of this attempt; None when no rule matches (the action runs)."""
        for rule in self._rules:
            if rule.matches(run):
                return rule.next()
        return None


def subset_predicate(expected: Mapping[str, Any]) -> Predicate:
    """A predicate true when the call's input holds every key of `expected` with that value."""

    def check(parameters: dict[str, Any]) -> bool:
        return all(k in parameters and parameters[k] == v for k, v in expected.items())

    return check
