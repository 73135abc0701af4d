"""The Jinja environment every workflow template runs in: sandboxed, immutable, strict, keys first.

- `ImmutableSandboxedEnvironment`: no `_`-prefixed or internal attributes (`''.__class__`,
  `f.__globals__`, `x.mro`), no methods that mutate lists, dicts or sets (`vars.update(...)`).
- Globals are only `range` (budgeted), `dict` and `namespace`; Jinja's `lipsum`, `cycler` and
  `joiner` are removed (nothing in a workflow needs them).
- Strict undefined: using an undefined value is an error (the renderer names the missing path).
- Keys win over attributes on mappings: `parameters.items` is the parameter named `items`, never the
  dict method. A context `Scope` shows keys only: a name it lacks is undefined, never a method
  (SPEC 7). On other mappings, attributes are looked up only when the key is missing, and only
  safe ones; on mappings other than dicts (an engine view) only the read-only Mapping methods
  `get`, `items`, `keys`, `values` are reachable that way, never other attributes.
- Resource guards: `range` is budgeted per render (`MAX_RANGE` items over all calls), `*` `**` `%`
  are intercepted to refuse huge repetitions, powers and format widths, `str` padding/join/replace
  methods and the amplifying filters check their result size first, `namespace` attributes may not
  grow past `MAX_SIZE`; `{% macro %}`, `{% call %}` and template loading tags are refused at
  compile time (see `renderer`), so templates cannot recurse.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any, cast

from jinja2 import StrictUndefined
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace, missing, pass_eval_context

from attune_actors.templates.filters import (
    EXTRA_FILTERS,
    MAX_INT_BITS,
    MAX_RANGE,
    ResourceLimitError,
    check_format_spec,
    check_percent_format,
    check_size,
    replacement_size,
)
from attune_actors.templates.scope import Scope

__all__ = ["RenderContext", "TemplateEnvironment"]

_RANGE_BUDGET = "attune_range_budget"


@pass_eval_context
def budget_range(eval_ctx: EvalContext, *args: int) -> range:
    """`range()` whose items, over every call of one render, stay within `MAX_RANGE`."""
    rng = range(*args)
    left: int = getattr(eval_ctx, _RANGE_BUDGET, MAX_RANGE) - len(rng)
    if left < 0:
        raise ResourceLimitError(
            f"range() calls of one template may produce {MAX_RANGE} items in all; this one"
            f" asks for {len(rng)}"
        )
    setattr(eval_ctx, _RANGE_BUDGET, left)
    return rng


class GuardedNamespace(Namespace):
    """Jinja's `namespace()`, whose attributes may not grow past `MAX_SIZE` (no doubling loops)."""

    def __setitem__(self, name: str, value: Any) -> None:
        if isinstance(value, str | list | tuple | dict):
            check_size(len(value), "namespace attribute")
        super().__setitem__(name, value)


class _GuardedFormatter(SandboxedFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        return super().format_field(value, format_spec)


_MAPPING_METHODS = frozenset(("get", "items", "keys", "values"))
_PADDING_METHODS = frozenset(("center", "ljust", "rjust", "zfill"))


def _check_str_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Pre-check `str` methods that can produce a much larger string than their inputs."""
    name = method.__name__
    s: str = method.__self__
    if name in _PADDING_METHODS:
        width = args[0] if args else kwargs.get("width", 0)
        if isinstance(width, int):
            check_size(width, f"str.{name}")
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            check_size(len(s) + s.count("\t") * tabsize, "str.expandtabs")
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count")
        check_size(
            replacement_size(s, str(args[0]), str(args[1]), count if count is None else int(count)),
            "str.replace",
        )


class _EvalContext(EvalContext):
    """EvalContext without the per-render `callable(autoescape)` check (autoescape is off)."""

    def __init__(self, environment: TemplateEnvironment, template_name: str | None = None) -> None:
        self.environment = environment
        self.autoescape = False
        self.volatile = False


# Never mutated: Jinja only reads `globals_keys` (Template.module); shared to save a set per render.
_NO_KEYS = cast(set[str], frozenset())


class RenderContext(Context):
    """A Jinja `Context` made cheaply per render: no copy of the caller's mapping.

    Names resolve from the template's own assignments, then the caller's context, then the
    environment's few globals.
    """

    def __init__(
        self,
        environment: TemplateEnvironment,
        parent: Mapping[str, Any],
        name: str | None = None,
        blocks: dict[str, Callable[[Context], Any]] | None = None,
        globals: Mapping[str, Any] | None = None,
    ) -> None:
        self.parent = parent  # type: ignore[assignment]
        self.vars = {}
        self.environment = environment
        self.eval_ctx = _EvalContext(environment, name)
        self.exported_vars = set()
        self.name = name
        self.globals_keys = _NO_KEYS if globals is None else set(globals)
        self.blocks = {k: [v] for k, v in blocks.items()} if blocks else {}
        self._globals = environment.template_globals

    def resolve_or_missing(self, key: str) -> Any:
        if self.vars and key in self.vars:
            return self.vars[key]
        parent = self.parent
        if key in parent:
            return parent[key]
        return self._globals.get(key, missing)

    def get_all(self) -> dict[str, Any]:
        return {**self._globals, **self.parent, **self.vars}


def _pow(left: Any, right: Any) -> Any:
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and right > 0
        and abs(left) > 1
        and right * abs(left).bit_length() > MAX_INT_BITS
    ):
        raise ResourceLimitError(f"** would produce an integer above {MAX_INT_BITS} bits")
    return left**right


def _mul(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, str | list | tuple):
        check_size(len(right) * left, "*")
    elif isinstance(right, int) and isinstance(left, str | list | tuple):
        check_size(len(left) * right, "*")
    return left * right


def _mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        check_percent_format(left, right)
    return left % right


class TemplateEnvironment(ImmutableSandboxedEnvironment):
    """The sandboxed environment of `attune_actors.templates` (see the module docstring)."""

    intercepted_binops = frozenset(("*", "**", "%"))

    def __init__(self) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            cache_size=0,
            auto_reload=False,
        )
        self.globals.clear()
        self.globals.update({"range": budget_range, "dict": dict, "namespace": GuardedNamespace})
        self.template_globals: dict[str, Any] = dict(self.globals)
        self.filters.update(EXTRA_FILTERS)
        self.binop_table = {**self.binop_table, "*": _mul, "**": _pow, "%": _mod}
        self.context_class = RenderContext

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Keys only on scopes; keys first on mappings, then (safe) attributes; else undefined."""
        tp = type(obj)
        if tp is Scope:
            try:
                return obj._data[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if tp is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        elif isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
            if attribute not in _MAPPING_METHODS:
                # Other mappings (engine views such as task runs) show their keys and the
                # read-only Mapping methods, never their other attributes.
                return self.undefined(obj=obj, name=attribute)
        elif isinstance(obj, Undefined):
            obj._fail_with_undefined_error()  # `nope.x` names `nope`, whatever `x` is
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """`scope['name']` is a key or undefined (Jinja would fall back to an attribute)."""
        if type(obj) is Scope:
            try:
                return obj._data[argument]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=argument)
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return None
        if value.__name__ not in ("format", "format_map"):
            return None
        f_self: Any = value.__self__
        if not isinstance(f_self, str):
            return None
        formatter = _GuardedFormatter(self)
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                return str(formatter.vformat(f_self, (), args[0]))
            return str(formatter.vformat(f_self, args, kwargs))

        return wrapper

    def call(
        __self,
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        tp = type(__obj)
        if (tp is types.MethodType or tp is types.FunctionType) and not (
            hasattr(__obj, "jinja_pass_arg")
            or getattr(__obj, "unsafe_callable", False)
            or getattr(__obj, "alters_data", False)
        ):
            # Fast path for plain Python functions and methods (`succeeded()`, `kv.get(...)`):
            # what SandboxedEnvironment.call + Context.call do for them, without the detours.
            if kwargs:
                kwargs.pop("_loop_vars", None)
                kwargs.pop("_block_vars", None)
            try:
                return __obj(*args, **kwargs)
            except StopIteration:
                return __self.undefined(
                    "value was undefined because a callable raised StopIteration"
                )
        if tp is types.BuiltinMethodType and type(__obj.__self__) is str:
            _check_str_method(__obj, args, kwargs)
            if __obj.__name__ == "join" and args:
                items = list(args[0])
                check_size(len(__obj.__self__) * len(items), "str.join")
                args = (items, *args[1:])
        return super().call(__context, __obj, *args, **kwargs)
