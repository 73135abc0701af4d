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
- Render budget (SPEC 12, settings `limits.template_loop_steps` / `limits.template_output_bytes`):
  the renderer compiles every `{% for %}` so that its iterable passes through `loop_budget`, which
  charges the loop's length (counted item by item when it has none) to the render's step budget,
  before the first iteration, and every printed `{{ }}` that builds a value through
  `printed_budget`; `*`, `join` and `str.join` refuse results longer than the output budget; the
  renderer also bounds the text and native values a render returns.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any, cast

from jinja2 import StrictUndefined
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace, missing, pass_environment, pass_eval_context

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
from attune_actors.templates.scope import LAST_RUN_FUNCTIONS, Scope

__all__ = ["LOOP_BUDGET_FILTER", "PRINTED_BUDGET_FILTER", "RenderContext", "TemplateEnvironment"]

#: The filter the renderer wraps around every `{% for %}` iterable (see `loop_budget`).
LOOP_BUDGET_FILTER = "_attune_loop_budget"
#: The filter the renderer wraps around a printed `{{ }}` that builds a value (see `printed_budget`).
PRINTED_BUDGET_FILTER = "_attune_printed_budget"
DEFAULT_LOOP_STEPS = 100_000
DEFAULT_OUTPUT = 1024 * 1024

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


def _out_of_steps(environment: TemplateEnvironment) -> ResourceLimitError:
    limit = environment.max_loop_steps
    return ResourceLimitError(
        f"the loops of this template run more than {limit} iterations in one render, which exceeds "
        f"limits.template_loop_steps ({limit})"
    )


def check_output(environment: TemplateEnvironment, size: int, what: str) -> None:
    """Refuse a value of `size` characters (or items) above the environment's output budget."""
    limit = environment.max_output
    if size > limit:
        raise ResourceLimitError(
            f"{what} would produce {size} characters or items, which exceeds "
            f"limits.template_output_bytes ({limit})"
        )


@pass_eval_context
def loop_budget(eval_ctx: EvalContext, iterable: Any) -> Any:
    """Charge a `{% for %}` loop's iterations to the render's step budget, all at once if sized."""
    env = cast(TemplateEnvironment, eval_ctx.environment)
    try:
        steps = len(iterable)
    except TypeError:
        return _counted(eval_ctx, env, iterable)
    left: int = getattr(eval_ctx, "steps_left", env.max_loop_steps) - steps
    if left < 0:
        raise _out_of_steps(env)
    eval_ctx.steps_left = left  # type: ignore[attr-defined]
    return iterable


def _counted(eval_ctx: EvalContext, env: TemplateEnvironment, iterable: Any) -> Any:
    for item in iterable:
        left: int = getattr(eval_ctx, "steps_left", env.max_loop_steps) - 1
        if left < 0:
            raise _out_of_steps(env)
        eval_ctx.steps_left = left  # type: ignore[attr-defined]
        yield item


def joined_size(items: list[Any], separator: str) -> int:
    """Length of `separator.join(map(str, items))`, computed without building it."""
    size = len(separator) * max(len(items) - 1, 0)
    for item in items:
        size += len(item) if type(item) is str else len(str(item))
    return size


def check_built(environment: TemplateEnvironment, value: Any, what: str) -> None:
    """Refuse a container whose strings and items add up to more than the output budget, and one
    that holds an Undefined (`{{ [vars.nope] }}`).

    A value counts each time it appears (`[s] * 1000` is 1000 times `s`), as it would in JSON.
    """
    limit = environment.max_output
    if _left_after(value, limit) < 0:
        raise ResourceLimitError(
            f"{what} holds more than {limit} characters or items, which exceeds "
            f"limits.template_output_bytes ({limit})"
        )


def _left_after(value: Any, left: int) -> int:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, str):
        return left - len(value)
    if isinstance(value, list | tuple):
        left -= len(value)
        for item in value:
            if left < 0:
                break
            left = _left_after(item, left)
    elif isinstance(value, dict):
        left -= len(value)
        for key, item in value.items():
            if left < 0:
                break
            left = _left_after(item, _left_after(key, left))
    return left


_CONTAINERS = frozenset((list, tuple, dict))


@pass_environment
def printed_budget(environment: TemplateEnvironment, value: Any) -> Any:
    """A `{{ }}` of a text template that builds a value: a container is checked before `str()`
    prints it whole (`x{{ [s] * 1000 }}`)."""
    if type(value) in _CONTAINERS:
        check_built(environment, value, "the value printed by the template")
    return value


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


@pass_eval_context
def _budget_join(eval_ctx: EvalContext, value: Any, d: str = "", attribute: Any = None) -> str:
    """Jinja's `join`, refusing a result over the output budget before building it."""
    env = cast(TemplateEnvironment, eval_ctx.environment)
    items = list(value)
    if attribute is not None:
        items = list(map(make_attrgetter(env, attribute), items))
    check_output(env, joined_size(items, str(d)), "join")
    return cast(str, EXTRA_FILTERS["join"](eval_ctx, items, d))


class _EvalContext(EvalContext):
    """EvalContext without the per-render `callable(autoescape)` check (autoescape is off)."""

    def __init__(self, environment: TemplateEnvironment, template_name: str | None = None) -> None:
        self.environment = environment
        self.autoescape = False
        self.volatile = False
        self.steps_left = environment.max_loop_steps  # what `loop_budget` may still charge


# Never mutated: Jinja only reads `globals_keys` (Template.module); shared to save a set per render.
_NO_KEYS = cast(set[str], frozenset())


_LAST_RUN_CALLS = frozenset(LAST_RUN_FUNCTIONS.values())  # trusted, and given the context


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
    # The environment's call_binop checks the output budget first; MAX_SIZE bounds direct calls.
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

    def __init__(
        self, *, max_loop_steps: int = DEFAULT_LOOP_STEPS, max_output: int = DEFAULT_OUTPUT
    ) -> None:
        self.max_loop_steps = max_loop_steps
        self.max_output = max_output
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
        self.filters[LOOP_BUDGET_FILTER] = loop_budget
        self.filters[PRINTED_BUDGET_FILTER] = printed_budget
        self.filters["join"] = _budget_join
        self.binop_table = {**self.binop_table, "*": _mul, "**": _pow, "%": _mod}
        self.context_class = RenderContext

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            if type(left) is int and isinstance(right, str | list | tuple):
                check_output(self, len(right) * left, "*")
            elif type(right) is int and isinstance(left, str | list | tuple):
                check_output(self, len(left) * right, "*")
        return self.binop_table[operator](left, right)

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
        if tp is types.FunctionType and __obj in _LAST_RUN_CALLS:  # `succeeded()` & co., every transition
            if kwargs:
                kwargs.pop("_loop_vars", None)
                kwargs.pop("_block_vars", None)
            return __obj(__context, *args, **kwargs)
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
                check_output(__self, joined_size(items, __obj.__self__), "str.join")
                args = (items, *args[1:])
        return super().call(__context, __obj, *args, **kwargs)
