"""`frozen`: the dataclass decorator for the values a transition passes around.

Messages between actors, the conductor's commands, action attempts and their outcomes are built
several times per task transition. `dataclass(frozen=True)` builds each field with
`object.__setattr__`, which made those constructions a tenth of a transition's CPU. A `frozen`
class is a slotted dataclass the type checker treats as frozen (`mypy --strict` refuses any
assignment to its fields), hashable by its fields as a frozen dataclass is, and built with plain
attribute stores: nothing is assigned to it after construction, so only the runtime check goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

__all__ = ["frozen"]

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def frozen(cls: type[T]) -> type[T]:
    """`@dataclass(frozen=True, slots=True)`, without the runtime cost of frozen fields."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
