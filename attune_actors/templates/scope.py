"""Context objects for the template scopes of SPEC section 4, built cheaply from live engine state.

The engine builds one context per render batch without copying its state:

    ctx = build_context(task=task_views, vars=variables, parameters=params,
                        pack={"config": pack_config}, system=system_info,
                        kv=KVView.of(datastore), **run_functions(status, result, error))

`Scope` is a read-only view over a mapping (no copy; later changes to the mapping show through).
In templates a scope has keys only (SPEC 7, Lookup): `parameters.items`, `vars.keys` and `task.get`
name the parameter, variable or task, and a name that is not there is undefined, never a method.
Plain dicts inside a scope (results, nested parameters) show their key first too, and fall back to
their read-only methods (`result().items()`) only when no such key exists. Both rules live in the
environment's `getattr`/`getitem`.

`TaskViews` is what `task` wraps: task name -> the latest run's view, where a task of the workflow
that has not run (yet) shows `NOT_RUN` (all fields null, `attempts` 0).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from jinja2.runtime import Context
from jinja2.utils import pass_context

from attune_actors.statuses import ABANDONED, FAILED, SUCCEEDED, TIMEOUT

__all__ = [
    "FAILED_STATUSES",
    "LAST_RUN",
    "LAST_RUN_FUNCTIONS",
    "NOT_RUN",
    "KVView",
    "KeyValueStore",
    "Scope",
    "TaskViews",
    "build_context",
    "run_functions",
]

#: Statuses for which `failed()` is true (SPEC 7, Handled failure).
FAILED_STATUSES: frozenset[str] = frozenset((FAILED, TIMEOUT, ABANDONED))

#: `task.<name>` for a task of the workflow that has not run (yet).
NOT_RUN: Mapping[str, Any] = MappingProxyType(
    {"status": None, "result": None, "error": None, "attempts": 0, "started_at": None, "ended_at": None}
)


class Scope(Mapping[str, Any]):
    """A read-only, no-copy view over a mapping; in templates it shows its keys and nothing else.

    Keys only is a template rule (`{{ vars.items }}` is the variable `items`, or undefined), applied
    by the environment's `getattr`. In Python a Scope is a plain `Mapping`: `scope["items"]` is the
    key, `scope.items()` the method, and there is no attribute access to keys (so type checkers
    still catch typos).
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: Mapping[str, Any] = {} if data is None else data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __repr__(self) -> str:
        return f"Scope({self._data!r})"

    def __str__(self) -> str:
        return str(dict(self._data))

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy as a plain dict (what a template gets for `{{ vars }}`)."""
        return dict(self._data)


class TaskViews(dict[str, Any]):
    """Task name -> view of its latest run; a task of the workflow that has not run reads `NOT_RUN`.

    A dict, so the lookups of runs that exist stay C-speed; `get` and `in` see only runs. `find`
    tells whether a name is a task of the workflow (anything but None), asked only on a miss.
    """

    __slots__ = ("_find",)

    def __init__(self, find: Callable[[str], object] | Collection[str]) -> None:
        super().__init__()
        self._find = find if callable(find) else frozenset(find).__contains__

    def __missing__(self, key: str) -> Any:
        if self._find(key) not in (None, False):
            return NOT_RUN
        raise KeyError(key)


class KeyValueStore(Protocol):
    """What `kv` offers templates: `kv.get(key, default=None)` and `kv.get_secret(key)`."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def get_secret(self, key: str) -> Any: ...


class KVView:
    """`kv` for templates: exposes exactly `get` and `get_secret`, nothing else of the store.

    The store's other attributes stay out of reach (the sandbox refuses `_`-prefixed names), so a
    template cannot walk from `kv` to the datastore object, its keys or its cipher.
    Do not pass a Mapping as `kv`: on mappings, keys win over methods, so `kv.get` would be a key.
    """

    __slots__ = ("_get", "_get_secret")

    def __init__(self, get: Callable[..., Any], get_secret: Callable[[str], Any]) -> None:
        self._get = get
        self._get_secret = get_secret

    @classmethod
    def of(cls, store: KeyValueStore) -> KVView:
        return cls(store.get, store.get_secret)

    def get(self, key: str, default: Any = None) -> Any:
        return self._get(key, default)

    def get_secret(self, key: str) -> Any:
        return self._get_secret(key)

    def __repr__(self) -> str:
        return "<kv>"


class _RunOutcome:
    """The `succeeded()`/`failed()`/... functions for the run that just ended."""

    __slots__ = ("_error", "_result", "_status")

    def __init__(self, status: str, result: Any, error: Any) -> None:
        self._status = status
        self._result = result
        self._error = error

    def succeeded(self) -> bool:
        return self._status == SUCCEEDED

    def failed(self) -> bool:
        return self._status in FAILED_STATUSES

    def timed_out(self) -> bool:
        return self._status == TIMEOUT

    def result(self) -> Any:
        return self._result

    def error(self) -> Any:
        return self._error


#: Where `LAST_RUN_FUNCTIONS` find the run (or item) whose attempt just ended: a context key that
#: is not an identifier, so no template can name it.
LAST_RUN = "#last run"


def _last_run(context: Context) -> Any:
    return context.resolve_or_missing(LAST_RUN)


@pass_context
def _last_succeeded(context: Context) -> bool:
    return getattr(_last_run(context), "status", None) == SUCCEEDED


@pass_context
def _last_failed(context: Context) -> bool:
    return getattr(_last_run(context), "status", None) in FAILED_STATUSES


@pass_context
def _last_timed_out(context: Context) -> bool:
    return getattr(_last_run(context), "status", None) == TIMEOUT


@pass_context
def _last_result(context: Context) -> Any:
    return getattr(_last_run(context), "result", None)


@pass_context
def _last_error(context: Context) -> Any:
    return getattr(_last_run(context), "error", None)


#: `succeeded()`, `failed()`, `timed_out()`, `result()`, `error()` of the run (or item) a context
#: holds under `LAST_RUN` (a `status`, `result`, `error`; None before any): one set of functions
#: for every context, where `run_functions` makes five per call.
LAST_RUN_FUNCTIONS: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {
        "succeeded": _last_succeeded,
        "failed": _last_failed,
        "timed_out": _last_timed_out,
        "result": _last_result,
        "error": _last_error,
    }
)


def run_functions(status: str, result: Any = None, error: Any = None) -> dict[str, Any]:
    """`succeeded()`, `failed()`, `timed_out()`, `result()`, `error()` of one ended run.

    `status` is the run's status string (`Execution.status` values compare equal to them);
    `failed()` is true for `failed`, `timeout` and `abandoned`, `timed_out()` only for `timeout`.
    """
    outcome = _RunOutcome(str(status), result, error)
    return {
        "succeeded": outcome.succeeded,
        "failed": outcome.failed,
        "timed_out": outcome.timed_out,
        "result": outcome.result,
        "error": outcome.error,
    }


def _scope(value: Mapping[str, Any] | None) -> Scope:
    if type(value) is Scope:
        return value
    return Scope(value)


def build_context(
    *,
    task: Mapping[str, Any] | None = None,
    vars: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    pack: Mapping[str, Any] | None = None,
    system: Mapping[str, Any] | None = None,
    kv: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """One render context: each scope wrapped in a `Scope` (no copy), plus `extra` names as given.

    `extra` carries `item`/`index` inside with_items and the `run_functions(...)` in `when` and
    `publish`. `kv` is left out when None, so `kv.get(...)` is then an undefined-name error.
    """
    ctx: dict[str, Any] = {
        "task": _scope(task),
        "vars": _scope(vars),
        "parameters": _scope(parameters),
        "pack": _scope(pack),
        "system": _scope(system),
    }
    if kv is not None:
        ctx["kv"] = kv
    if extra:
        ctx.update(extra)
    return ctx
