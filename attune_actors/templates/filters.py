"""Filters added to Jinja's standard set, and size guards on the ones that can blow up memory.

Tera-compatible extras: `from_json`, `to_json` (alias `json_encode`, Tera's name) and
`batch(size=N)`. Jinja's own positional `batch(3)` keeps working and, like `map`, `select`,
`reject`, `selectattr`, `rejectattr`, `unique`, `items` and `slice` here, returns a list rather
than a generator, so a single-expression template renders to a real list. `shell_quote` quotes a
value as one word for a POSIX shell (`core.local` command lines).

Guards: a template must not be able to allocate gigabytes from a few characters
(`'x' | center(10**9)`, `'%999999999d' | format(1)`, `range(99) | join('x' * 10**6)`). The filters
that amplify their input check the size of what they would build first and refuse with
`ResourceLimitError` (a `SecurityError`) above `MAX_SIZE` characters or items.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shlex
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2 import filters as _jf
from jinja2.exceptions import FilterArgumentError, SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Undefined
from jinja2.utils import pass_eval_context

__all__ = [
    "EXTRA_FILTERS",
    "MAX_INT_BITS",
    "MAX_RANGE",
    "MAX_SIZE",
    "MAX_WIDTH",
    "ResourceLimitError",
    "batch",
    "check_percent_format",
    "check_size",
    "from_json",
    "shell_quote",
    "to_json",
]

#: Most items all `range()` calls of one render may produce together (Jinja's default per call).
MAX_RANGE = 100_000
#: Most characters (or items) an amplifying operation may produce: `*`, padding, join, replace...
MAX_SIZE = 1_000_000
#: Largest field width or precision in `%` / `format` / `str.format` specifications.
MAX_WIDTH = 10_000
#: Largest integer (in bits) that `**` may produce.
MAX_INT_BITS = 100_000
#: Largest `indent` accepted by `to_json` / `tojson`.
MAX_JSON_INDENT = 16


class ResourceLimitError(SecurityError):
    """A template asked for more memory or work than the sandbox allows."""


def check_size(size: int, what: str) -> None:
    """Refuse an operation that would produce more than `MAX_SIZE` characters or items."""
    if size > MAX_SIZE:
        raise ResourceLimitError(
            f"{what} would produce {size} characters or items; the sandbox allows {MAX_SIZE}"
        )


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_SIZE:
        check_size(width, what)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_percent_format(fmt: str, args: Any) -> None:
    """Refuse `%`-formatting whose field widths or precisions exceed `MAX_WIDTH`."""
    star = False
    for m in _PERCENT_SPEC.finditer(fmt):
        for group in m.groups():
            if group == "*":
                star = True
            elif group is not None and int(group) > MAX_WIDTH:
                raise ResourceLimitError(
                    f"format width {group} is above the sandbox limit ({MAX_WIDTH})"
                )
    if star:
        values = args if isinstance(args, tuple) else (args,)
        for value in values:
            if isinstance(value, int) and abs(value) > MAX_WIDTH:
                raise ResourceLimitError(
                    f"format width {value} is above the sandbox limit ({MAX_WIDTH})"
                )


_FORMAT_SPEC_WIDTH = re.compile(r"\d+")


def check_format_spec(spec: str) -> None:
    """Refuse a `str.format` field spec (`{:>99999999}`) with a width above `MAX_WIDTH`."""
    for digits in _FORMAT_SPEC_WIDTH.findall(spec):
        if int(digits) > MAX_WIDTH:
            raise ResourceLimitError(
                f"format width {digits} is above the sandbox limit ({MAX_WIDTH})"
            )


# -- Tera-compatible extras -------------------------------------------------------------------


def from_json(value: Any) -> Any:
    """Parse a JSON document. A value that is not a string (already parsed) passes through."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise FilterArgumentError(
            f"from_json: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None


_LISTABLE: tuple[type[Iterable[Any]], ...] = (
    types.GeneratorType,
    range,
    type({}.keys()),
    type({}.values()),
    type({}.items()),
)


def json_default(value: Any) -> Any:
    """`json.dumps(default=...)`: scopes and views become dicts and lists; undefined is an error."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, _LISTABLE):
        return list(value)
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    raise TypeError(f"to_json: a {type(value).__name__} value is not JSON serializable")


def to_json(
    value: Any, pretty: bool = False, indent: int | None = None, sort_keys: bool = False
) -> str:
    """Serialise to JSON: compact (as Tera's `json_encode`); `pretty=true` indents by 2."""
    if indent is None and pretty:
        indent = 2
    if indent is not None and (not isinstance(indent, int) or indent > MAX_JSON_INDENT):
        raise FilterArgumentError(f"to_json: indent must be an integer up to {MAX_JSON_INDENT}")
    return json.dumps(
        value,
        ensure_ascii=False,
        indent=indent,
        separators=(",", ": ") if indent is not None else (",", ":"),
        sort_keys=sort_keys,
        default=json_default,
    )


def batch(
    value: Iterable[Any],
    linecount: int | None = None,
    fill_with: Any = None,
    *,
    size: int | None = None,
) -> list[list[Any]]:
    """Split into lists of `size` items (Tera: `batch(size=N)`; Jinja: `batch(N, fill_with)`)."""
    if size is not None and linecount is not None:
        raise FilterArgumentError("batch: give the size once, as batch(size=N) or batch(N)")
    n = size if size is not None else linecount
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FilterArgumentError(f"batch: size must be a positive integer, not {n!r}")
    items = list(value)
    out = [items[i : i + n] for i in range(0, len(items), n)]
    if fill_with is not None and out and len(out[-1]) < n:
        check_size(n, "batch(fill_with=...)")
        out[-1].extend([fill_with] * (n - len(out[-1])))
    return out


# -- guarded versions of Jinja's amplifying filters -------------------------------------------


def _center(value: Any, width: int = 80) -> str:
    _check_width(width, "center")
    return _jf.do_center(value, width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(s)
    unit = len(width) if isinstance(width, str) else width
    if isinstance(unit, int) and unit > 0:
        check_size(len(text) + unit * (text.count("\n") + 1), "indent")
    return _jf.do_indent(text, width, first, blank)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    check_percent_format(str(value), args or tuple(kwargs.values()))
    return _jf.do_format(value, *args, **kwargs)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    check_size(len(str(d)) * len(items), "join")
    return _jf.sync_do_join(eval_ctx, items, d, attribute)


def replacement_size(s: str, old: str, new: str, count: int | None = None) -> int:
    """Length of `s.replace(old, new, count)`, computed without building it."""
    hits = len(s) + 1 if old == "" else s.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * (len(new) - len(old))


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    check_size(replacement_size(str(s), str(old), str(new), count), "replace")
    return _jf.do_replace(eval_ctx, s, old, new, count)


def _slice(value: Any, slices: int, fill_with: Any = None) -> list[list[Any]]:
    if isinstance(slices, int) and slices > MAX_RANGE:
        check_size(slices, "slice")
    return list(_jf.sync_do_slice(value, slices, fill_with))


def _wordwrap(*args: Any, **kwargs: Any) -> str:
    # do_wordwrap(environment, s, width=79, break_long_words=True, wrapstring=None, ...)
    text = str(args[1]) if len(args) > 1 else str(kwargs.get("s", ""))
    wrapstring = kwargs.get("wrapstring", args[4] if len(args) > 4 else None)
    if wrapstring is not None:
        check_size(len(text) * (len(str(wrapstring)) + 1), "wordwrap")
    return _jf.do_wordwrap(*args, **kwargs)


_wordwrap.jinja_pass_arg = _jf.do_wordwrap.jinja_pass_arg  # type: ignore[attr-defined]


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any, indent: int | None = None) -> Any:
    if indent is not None and (not isinstance(indent, int) or indent > MAX_JSON_INDENT):
        raise FilterArgumentError(f"tojson: indent must be an integer up to {MAX_JSON_INDENT}")
    return _jf.do_tojson(eval_ctx, value, indent)


def shell_quote(value: Any) -> str:
    """`value` as one shell word (`shlex.quote`): `'a; rm -rf /'` stays data, never a command.

    A list becomes its items quoted one by one and joined by spaces (several words); anything else
    is quoted as its text (None as the empty word), so `{{ x | shell_quote }}` is always safe to
    splice into a `core.local` command line.
    """
    if isinstance(value, Undefined):
        value = str(value)  # strict undefined raises here; a lenient one quotes as ''
    if isinstance(value, list | tuple):
        return " ".join(shlex.quote(_word(v)) for v in value)
    return shlex.quote(_word(value))


def _word(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, default=json_default)


def _listing(name: str) -> Callable[..., Any]:
    """Wrap a Jinja filter that returns a generator so that it returns a list."""
    original = _jf.FILTERS[name]

    def wrapper(*args: Any, **kwargs: Any) -> list[Any]:
        return list(original(*args, **kwargs))

    wrapper.__name__ = f"{name}_list"
    pass_arg = getattr(original, "jinja_pass_arg", None)
    if pass_arg is not None:
        wrapper.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return wrapper


EXTRA_FILTERS: dict[str, Callable[..., Any]] = {
    "from_json": from_json,
    "to_json": to_json,
    "json_encode": to_json,
    "batch": batch,
    "center": _center,
    "indent": _indent,
    "format": _format,
    "join": _join,
    "replace": _replace,
    "slice": _slice,
    "wordwrap": _wordwrap,
    "tojson": _tojson,
    "shell_quote": shell_quote,
    **{
        name: _listing(name)
        for name in ("map", "select", "reject", "selectattr", "rejectattr", "unique", "items")
    },
}
