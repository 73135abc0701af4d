"""The one template renderer: Jinja2's sandbox, native values, Tera extras, cached compilation.

Rendering rules (SPEC 4 and 7):

- A string that is a single `{{ expr }}` (surrounding whitespace ignored) renders to the
  expression's own value: a list, number, bool, None, dict, or a string exactly as it is (the string
  `"12345"` stays a string; nothing is literal-evaluated, unlike Jinja's NativeEnvironment).
  Generators, ranges, tuples and dict views become lists; a `Scope` becomes a plain dict.
  Values are returned by reference (no copy).
- Any other string containing `{{`, `{%` or `{#` renders to a string (`str()` of each value, as
  Jinja does: `None` prints `None`). Trailing newlines are kept.
- A string without those markers, and any value that is not a str, dict or list, is returned as is.
  Dicts and lists are rendered recursively into new containers; dict keys are kept literally,
  never rendered.
- Rendering happens once: a value that comes out of a template (a parameter holding `{{ 7*7 }}`)
  is data and is never rendered again.
- Undefined names and attributes are errors (`TemplateError`) naming where (the caller's `where`
  plus the key path inside a rendered dict or list), the missing path (`vars.nope is undefined`,
  with the keys that do exist) and the template source. Sandbox refusals and resource limits are
  `TemplateError`s too, as is any exception raised while rendering.
- `{% macro %}`, `{% call %}`, `{% extends %}`, `{% include %}`, `{% import %}` and recursive
  loops are refused at compile time: workflow templates are expressions and small text, not
  template libraries.
- Render budget (SPEC 12): every `{% for %}` is charged to the render's loop steps
  (`max_loop_steps`, setting `limits.template_loop_steps`) before it starts; the text a render
  produces, and a native value it builds, may not exceed `max_output` characters (setting
  `limits.template_output_bytes`, counted as it is produced when the template loops). The error
  names the setting.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any, cast

from jinja2 import nodes
from jinja2.environment import Template
from jinja2.exceptions import (
    SecurityError,
    TemplateAssertionError,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.runtime import Undefined
from jinja2.utils import missing

from attune_actors.errors import TemplateError
from attune_actors.templates.sandbox import (
    DEFAULT_LOOP_STEPS,
    DEFAULT_OUTPUT,
    LOOP_BUDGET_FILTER,
    PRINTED_BUDGET_FILTER,
    RenderContext,
    TemplateEnvironment,
    check_built,
    check_output,
)
from attune_actors.templates.scope import Scope
from attune_actors.templates.ternary import rewrite_ternary

__all__ = ["Renderer", "is_template"]

_SCALAR_TYPES = frozenset((str, int, float, bool, type(None)))
_PLAIN_TYPES = _SCALAR_TYPES | {dict, list}
_LIST_LIKE: tuple[type[Iterable[Any]], ...] = (
    tuple,
    range,
    types.GeneratorType,
    type({}.keys()),
    type({}.values()),
    type({}.items()),
    Iterator,
)
_FALSY_STRINGS = frozenset(("", "false", "no", "off", "0", "none", "null"))
_REFUSED_TAGS: dict[type[nodes.Node], str] = {
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
}
_SOURCE_SHOWN = 160


def is_template(value: Any) -> bool:
    """True for a str holding `{{`, `{%` or `{#` (anything else renders to itself)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


class _Failure(Exception):
    """Internal: a template failed; `Renderer` turns it into a located `TemplateError`."""

    def __init__(self, detail: str, source: str, lineno: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.source = source
        self.lineno = lineno
        self.path: list[str | int] = []  # innermost first, filled while unwinding

    def to_error(self, where: str) -> TemplateError:
        place = where
        for key in reversed(self.path):
            if isinstance(key, int):
                place += f"[{key}]"
            elif place:
                place += f".{key}"
            else:
                place = str(key)
        shown = self.source
        if len(shown) > _SOURCE_SHOWN:
            shown = shown[: _SOURCE_SHOWN - 3] + "..."
        line = ""
        if self.lineno and "\n" in self.source.strip():
            line = f", line {self.lineno}"
        message = f"{self.detail} (in template {shown!r}{line})"
        if place:
            message = f"{place}: {message}"
        error = TemplateError(message)
        error.__cause__ = self.__cause__
        return error


class _Compiled:
    """One compiled template; `run(context)` renders it (raises `_Failure`)."""

    __slots__ = ("blocks", "deep_check", "env", "loops", "native", "root", "source", "template")

    def __init__(
        self,
        env: TemplateEnvironment,
        source: str,
        template: Template,
        *,
        native: bool,
        deep: bool,
        loops: bool,
    ) -> None:
        self.env = env
        self.source = source
        self.template = template
        self.root = template.root_render_func
        self.blocks = template.blocks or None
        self.native = native
        self.deep_check = deep
        self.loops = loops

    def run(self, context: Mapping[str, Any]) -> Any:
        ctx = RenderContext(self.env, context, None, self.blocks)
        try:
            if self.native:
                for _ in self.root(ctx):
                    pass
                value = ctx.vars["result"]
                tp = type(value)
                if tp in _SCALAR_TYPES or (not self.deep_check and (tp is dict or tp is list)):
                    return value
                return _native(value, deep=self.deep_check, env=self.env)
            if self.loops:
                return self._text_counted(ctx)
            text = "".join(self.root(ctx))
            if len(text) > self.env.max_output:
                check_output(self.env, len(text), "the template")
            return text
        except Exception as exc:
            raise _failure(exc, self.env, self.source, context) from exc

    def _text_counted(self, ctx: RenderContext) -> str:
        """The text of a template with loops, refused as soon as it grows past the output budget."""
        limit = self.env.max_output
        parts: list[str] = []
        size = 0
        for part in self.root(ctx):
            size += len(part)
            if size > limit:
                check_output(self.env, size, "the template")
            parts.append(part)
        return "".join(parts)


def _native(value: Any, *, deep: bool, env: TemplateEnvironment) -> Any:
    """Normalise a native result: no Undefined, no generators/tuples/views, no Scope."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    tp = type(value)
    if tp is Scope:
        value = value.to_dict()
    elif tp not in _PLAIN_TYPES:
        if isinstance(value, str):
            value = str(value)  # Markup and other str subclasses
        elif isinstance(value, _LIST_LIKE):
            value = list(value)
        elif isinstance(value, Mapping):  # an engine view (`{{ task.a }}`) becomes plain data
            value = dict(value)
        elif callable(value):  # `{{ result().items }}` with no such key: a method, never data
            raise TypeError("the template renders to a function, not a value")
    if deep:
        check_built(env, value, "the value built by the template")
    return value


def _template_lineno(exc: BaseException) -> int | None:
    lineno = None
    tb = exc.__traceback__
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if template is not None:
            lineno = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return lineno


def _failure(
    exc: Exception, env: TemplateEnvironment, source: str, context: Mapping[str, Any] | None
) -> _Failure:
    if isinstance(exc, _Failure):
        return exc
    if isinstance(exc, TemplateAssertionError):
        return _Failure(str(exc.message), source, exc.lineno)
    if isinstance(exc, TemplateSyntaxError):
        return _Failure(f"syntax error: {exc.message}", source, exc.lineno)
    lineno = _template_lineno(exc)
    if isinstance(exc, SecurityError):
        return _Failure(f"refused by the sandbox: {exc}", source, lineno)
    if isinstance(exc, UndefinedError):
        detail = _undefined_detail(env, source, context, str(exc)) if context is not None else None
        return _Failure(detail or str(exc), source, lineno)
    if isinstance(exc, RecursionError | MemoryError | OverflowError):
        return _Failure(f"refused: {type(exc).__name__}: {exc}", source, lineno)
    text = str(exc)
    if type(exc).__module__.startswith("jinja2"):
        return _Failure(text, source, lineno)
    return _Failure(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, source, lineno)


# -- naming the missing variable -------------------------------------------------------------

_Step = tuple[bool, Any]  # (is attribute, key)


def _unwind(node: nodes.Node) -> tuple[str, list[_Step]] | None:
    steps: list[_Step] = []
    while True:
        if isinstance(node, nodes.Getattr):
            steps.append((True, node.attr))
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            steps.append((False, node.arg.value))
            node = node.node
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            steps.reverse()
            return node.name, steps
        else:
            return None


def _chains(node: nodes.Node) -> Iterator[tuple[str, list[_Step]]]:
    """Static lookup chains (`a.b['c']`) in evaluation order, outermost first."""
    if isinstance(node, nodes.Getattr | nodes.Getitem | nodes.Name):
        chain = _unwind(node)
        if chain is not None:
            yield chain
    for child in node.iter_child_nodes():
        yield from _chains(child)


def _describe(parent: Any, path: str) -> str:
    if isinstance(parent, Mapping):
        keys = [str(k) for k in list(parent)[:11]]
        if not keys:
            return f" ({path} is empty)"
        more = ", ..." if len(keys) > 10 else ""
        return f" ({path} has: {', '.join(keys[:10])}{more})"
    if isinstance(parent, list | tuple):
        return f" ({path} has {len(parent)} items)"
    if parent is None:
        return f" ({path} is null)"
    return f" ({path} is a {type(parent).__name__})"


def _undefined_detail(
    env: TemplateEnvironment, source: str, context: Mapping[str, Any], message: str
) -> str | None:
    """`vars.nope is undefined (vars has: a, b)`: find the undefined lookup chain in the AST."""
    try:
        ast = env.parse(rewrite_ternary(source))
    except Exception:
        return None
    local = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    found: list[tuple[str, str]] = []  # (detail, the missing name's repr)
    seen: set[str] = set()
    for root, steps in _chains(ast):
        if root in local:
            continue
        value = context[root] if root in context else env.template_globals.get(root, missing)
        if value is missing:
            found.append((f"{root} is undefined", repr(root)))
            continue
        path = root
        for is_attr, key in steps:
            parent, parent_path = value, path
            try:
                value = env.getattr(value, key) if is_attr else env.getitem(value, key)
            except Exception:
                break
            path += f".{key}" if is_attr else f"[{key!r}]"
            if isinstance(value, Undefined):
                if getattr(value, "_undefined_exception", UndefinedError) is UndefinedError and (
                    path not in seen
                ):
                    seen.add(path)
                    found.append(
                        (f"{path} is undefined{_describe(parent, parent_path)}", repr(key))
                    )
                break
    for detail, name in found:
        if name in message:
            return detail
    return found[0][0] if found else None


# -- the renderer ----------------------------------------------------------------------------


def _single_expression(ast: nodes.Template) -> nodes.Expr | None:
    """The expression of a template that is exactly one `{{ expr }}` (whitespace around ignored)."""
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    parts = [
        n
        for n in ast.body[0].nodes
        if not (isinstance(n, nodes.TemplateData) and not n.data.strip())
    ]
    if len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData):
        return parts[0]
    return None


def _builds_value(expr: nodes.Expr) -> bool:
    """Can the expression build a new value (that may hold an Undefined, or be too large)?

    Literals (`[x.nope]`), calls (`dict(a=x.nope)`), filters (`map(attribute='nope')`) and
    operators (`[s] * 1000`) can; a plain lookup (`parameters.x`) or a constant cannot, so its
    result is returned without a scan.
    """
    lookup = expr
    while isinstance(lookup, nodes.Getattr | nodes.Getitem):
        if isinstance(lookup, nodes.Getitem) and not isinstance(lookup.arg, nodes.Const):
            return True
        lookup = lookup.node
    return not isinstance(lookup, nodes.Name | nodes.Const)


class Renderer:
    """Renders workflow templates; compiled templates are cached (bounded LRU, by source).

    Thread-safe for rendering; one instance is meant to be shared by an engine.
    """

    def __init__(
        self,
        *,
        cache_size: int = 8192,
        max_loop_steps: int = DEFAULT_LOOP_STEPS,
        max_output: int = DEFAULT_OUTPUT,
    ) -> None:
        self.env = TemplateEnvironment(max_loop_steps=max_loop_steps, max_output=max_output)
        self._lookup: Callable[[str], _Compiled] = lru_cache(maxsize=cache_size)(self._build)

    # -- public API ---------------------------------------------------------------------------

    @staticmethod
    def is_template(value: Any) -> bool:
        """True for a str holding `{{`, `{%` or `{#`; anything else renders to itself."""
        return is_template(value)

    def render(self, value: Any, context: Mapping[str, Any], *, where: str = "") -> Any:
        """Render `value` (a template string, or a dict/list holding some) against `context`."""
        if type(value) is str:
            if "{" not in value or not ("{{" in value or "{%" in value or "{#" in value):
                return value
            try:
                return self._lookup(value).run(context)
            except _Failure as failure:
                raise failure.to_error(where) from failure.__cause__
        if isinstance(value, dict | list):
            try:
                return self._render_nested(value, context)
            except _Failure as failure:
                raise failure.to_error(where) from failure.__cause__
        if isinstance(value, str):  # a str subclass: render it as the plain str it holds
            return self.render(str(value), context, where=where)
        return value

    def compile(self, source: str, *, where: str = "") -> Callable[[Mapping[str, Any]], Any]:
        """A callable rendering `source` (cached by source); errors raise `TemplateError`."""
        if not is_template(source):

            def constant(context: Mapping[str, Any]) -> Any:
                return source

            return constant
        try:
            compiled = self._lookup(source)
        except _Failure as failure:
            raise failure.to_error(where) from failure.__cause__

        def run(context: Mapping[str, Any]) -> Any:
            try:
                return compiled.run(context)
            except _Failure as failure:
                raise failure.to_error(where) from failure.__cause__

        return run

    def check(
        self, source: Any, *, where: str = "", condition: bool = False
    ) -> TemplateError | None:
        """The syntax error of `source`, if any (compiles it, warming the cache).

        With `condition=True`, a string without template markers is checked as an expression,
        as `truthy` evaluates it.
        """
        if not isinstance(source, str):
            return None
        if condition and not is_template(source):
            source = _as_expression(source)
        elif not is_template(source):
            return None
        try:
            self._lookup(source)
        except _Failure as failure:
            return failure.to_error(where)
        return None

    def truthy(self, source: Any, context: Mapping[str, Any], *, where: str = "") -> bool:
        """Evaluate a `when` condition: None is true; a template renders, then is tested.

        A string without template markers is an expression (`when: succeeded()`). A string result
        is false when empty or one of `false no off 0 none null` (any case), so a parameter
        holding "false" is false; any other value follows Python truthiness.
        """
        if source is None:
            return True
        if not isinstance(source, str):
            return bool(source)
        if not is_template(source):
            source = _as_expression(source)
        value = self.render(source, context, where=where)
        if isinstance(value, str):
            return value.strip().lower() not in _FALSY_STRINGS
        return bool(value)

    def task_references(self, source: Any, *, condition: bool = False) -> set[str]:
        """Names X used as `task.X` or `task['X']` in a template (empty on a syntax error)."""
        return self.references(source, "task", condition=condition)

    def references(self, source: Any, scope: str, *, condition: bool = False, calls: bool = True) -> set[str]:
        """Names X used as `<scope>.X` or `<scope>['X']` in a template (empty on a syntax error);
        without `calls`, not those called as methods (`vars.get('x', 0)`)."""
        if not isinstance(source, str):
            return set()
        if condition and not is_template(source):
            source = _as_expression(source)
        elif not is_template(source):
            return set()
        try:
            ast = self.env.parse(rewrite_ternary(source))
        except Exception:
            return set()
        names: set[str] = set()
        called = set() if calls else {id(call.node) for call in ast.find_all(nodes.Call)}
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            assert isinstance(node, nodes.Getattr | nodes.Getitem)
            if id(node) in called:
                continue
            base = node.node
            if not (isinstance(base, nodes.Name) and base.name == scope and base.ctx == "load"):
                continue
            if isinstance(node, nodes.Getattr):
                names.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                names.add(node.arg.value)
        return names

    def cache_info(self) -> Any:
        """`functools.lru_cache` statistics of the compiled-template cache."""
        return self._lookup.cache_info()  # type: ignore[attr-defined]

    def cache_clear(self) -> None:
        self._lookup.cache_clear()  # type: ignore[attr-defined]

    # -- internals ----------------------------------------------------------------------------

    def _render_nested(self, value: Any, context: Mapping[str, Any]) -> Any:
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                try:
                    out[key] = self._render_item(item, context)
                except _Failure as failure:
                    failure.path.append(key)
                    raise
            return out
        rendered: list[Any] = []
        for index, item in enumerate(value):
            try:
                rendered.append(self._render_item(item, context))
            except _Failure as failure:
                failure.path.append(index)
                raise
        return rendered

    def _render_item(self, value: Any, context: Mapping[str, Any]) -> Any:
        if type(value) is str:
            if "{" in value and ("{{" in value or "{%" in value or "{#" in value):
                return self._lookup(value).run(context)
            return value
        if isinstance(value, dict | list):
            return self._render_nested(value, context)
        if isinstance(value, str):
            return self._render_item(str(value), context)
        return value

    def _build(self, source: str) -> _Compiled:
        env = self.env
        try:
            ast = env.parse(rewrite_ternary(source))
            for node_type, tag in _REFUSED_TAGS.items():
                refused = ast.find(node_type)
                if refused is not None:
                    raise TemplateAssertionError(
                        f"'{{% {tag} %}}' is not allowed in workflow templates",
                        refused.lineno,
                    )
            expr = _single_expression(ast)
            loops = _add_budget(ast, printed=expr is None)
            if expr is None:
                template = env.from_string(ast)
                return _Compiled(env, source, template, native=False, deep=False, loops=loops)
            assign = nodes.Assign(
                nodes.Name("result", "store", lineno=expr.lineno), expr, lineno=expr.lineno
            )
            tree = nodes.Template([assign], lineno=1)
            tree.set_environment(env)
            template = env.from_string(tree)
            return _Compiled(
                env, source, template, native=True, deep=_builds_value(expr), loops=loops
            )
        except Exception as exc:
            raise _failure(exc, env, source, None) from exc


def _add_budget(ast: nodes.Template, *, printed: bool) -> bool:
    """Compile the render budget in (see `sandbox`): every `{% for %}` iterable through the loop
    budget and, with `printed`, every `{{ }}` that builds a value through the printed-value check
    (plain lookups print what is already there). Whether the template loops."""
    found = False
    for loop in ast.find_all(nodes.For):
        assert isinstance(loop, nodes.For)
        if loop.recursive:
            raise TemplateAssertionError(
                "recursive loops are not allowed in workflow templates", loop.lineno
            )
        loop.iter = _filtered(cast(nodes.Expr, loop.iter), LOOP_BUDGET_FILTER)
        found = True
    if printed:
        for output in ast.find_all(nodes.Output):
            assert isinstance(output, nodes.Output)
            output.nodes = [
                _filtered(n, PRINTED_BUDGET_FILTER)
                if not isinstance(n, nodes.TemplateData) and _builds_value(n)
                else n
                for n in output.nodes
            ]
    return found


def _filtered(expr: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(expr, name, [], [], None, None, lineno=expr.lineno)


def _as_expression(source: str) -> str:
    return "{{ " + source + " }}"
