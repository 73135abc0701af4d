"""The ternary `cond ? a : b`: tokenised like Jinja, so `?` and `:` in strings, dict literals and
slices are left alone; lowest precedence, nests to the right."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attune_actors.errors import TemplateError
from attune_actors.templates import Renderer, build_context, rewrite_ternary


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@pytest.fixture
def ctx() -> dict[str, Any]:
    return build_context(
        vars={"success": True, "fail": False, "n": 5, "name": "shop", "xs": [1, 2, 3]},
        parameters={"items": [10, 20, 30]},
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ vars.success ? 'deployed' : 'failed' }}", "deployed"),
        ("{{ vars.fail ? 'deployed' : 'failed' }}", "failed"),
        ("{{ vars.success ? 1 : 2 }}", 1),  # native value
        ("{{ vars.fail ? [1] : {'a': 1} }}", {"a": 1}),
        ("{{ vars.n > 3 ? 'big' : 'small' }}", "big"),
        ("{{ vars.n > 3 and vars.fail ? 'x' : 'y' }}", "y"),
        ("{{ not vars.success ? 'x' : 'y' }}", "y"),
        # right-nested: a ? b : (c ? d : e)
        ("{{ vars.fail ? 'a' : vars.success ? 'b' : 'c' }}", "b"),
        ("{{ vars.fail ? 'a' : vars.fail ? 'b' : 'c' }}", "c"),
        # nested in the middle: a ? (b ? c : d) : e
        ("{{ vars.success ? vars.fail ? 'c' : 'd' : 'e' }}", "d"),
        # filters bind tighter than the ternary
        ("{{ vars.success ? vars.name | upper : 'none' }}", "SHOP"),
        ("{{ vars.fail ? 'x' : vars.name | upper }}", "SHOP"),
        ("{{ (vars.success ? 'yes' : 'no') | upper }}", "YES"),
        ("{{ vars.xs | length > 2 ? 'many' : 'few' }}", "many"),
        # inside brackets, arguments, literals
        ("{{ [vars.success ? 1 : 2, 3] }}", [1, 3]),
        ("{{ {'k': vars.success ? 'v' : 'w', 'z': 0} }}", {"k": "v", "z": 0}),
        ("{{ {'k': (vars.fail ? 1 : 2)} }}", {"k": 2}),
        ("{{ vars.xs | batch(size=vars.success ? 2 : 1) }}", [[1, 2], [3]]),
        ("{{ vars.xs | join(vars.success ? '-' : '+') }}", "1-2-3"),
        ("{{ 'x' ~ (vars.success ? 'y' : 'z') ~ 'w' }}", "xyw"),
        ("{{ parameters.items[vars.success ? 0 : 1] }}", 10),
        # strings, dict literals and slices keep their ? and :
        ("{{ 'a ? b : c' }}", "a ? b : c"),
        ('{{ vars.success ? "is it? yes: really" : "no" }}', "is it? yes: really"),
        ("{{ vars.success ? 'it\\'s ? :' : 'no' }}", "it's ? :"),
        ("{{ {'a': 1, 'b': 2}['b'] }}", 2),
        ("{{ parameters.items[1:2] }}", [20]),
        ("{{ parameters.items[vars.success ? 1 : 0:] }}", [20, 30]),
        ("{{ vars.success ? parameters.items[0:2] : parameters.items[1:] }}", [10, 20]),
        ("{{ vars.success ? {'a': {'b': 1}} : {} }}", {"a": {"b": 1}}),
        # text, comments and raw blocks are not touched
        ("Ready? {{ vars.success ? 'go' : 'stop' }}: done", "Ready? go: done"),
        ("{# a ? b : c #}{{ vars.n }}", 5),
        ("{% raw %}{{ a ? b : c }}{% endraw %}", "{{ a ? b : c }}"),
        ("a ? b : c", "a ? b : c"),
        # statements: the ternary inside brackets
        ("{% set x = (vars.success ? 'A' : 'B') %}{{ x }}", "A"),
        ("{% if (vars.fail ? false : true) %}T{% endif %}", "T"),
        ("{% for i in (vars.success ? vars.xs : []) %}{{ i }}{% endfor %}", "123"),
        # whitespace control and line breaks
        ("{{- vars.success ? 'a' : 'b' -}}", "a"),
        ("{{ vars.success\n   ? 'a'\n   : 'b' }}", "a"),
        ("x {{ vars.success ? 1 : 2 }} y {{ vars.fail ? 1 : 2 }}", "x 1 y 2"),
    ],
)
def test_ternary(renderer: Renderer, ctx: dict[str, Any], source: str, expected: Any) -> None:
    assert renderer.render(source, ctx) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ vars.success ? 'a' }}", "ternary '\\?' without its ':'"),
        ("{{ ? 'a' : 'b' }}", "empty condition"),
        ("{{ vars.success ? : 'b' }}", "empty value after '\\?'"),
        ("{{ vars.success ? 'a' : }}", "empty value after ':'"),
        ("{% set x = vars.success ? 1 : 2 %}", "needs parentheses"),
    ],
)
def test_ternary_syntax_errors(
    renderer: Renderer, ctx: dict[str, Any], source: str, message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        renderer.render(source, ctx)
    assert renderer.check(source) is not None


def test_ternary_errors_keep_the_original_source_and_line(
    renderer: Renderer, ctx: dict[str, Any]
) -> None:
    source = "first line\n{{ vars.success ? vars.nope : 1 }}\n"
    with pytest.raises(TemplateError) as caught:
        renderer.render(source, ctx, where="w")
    message = str(caught.value)
    assert "vars.nope is undefined" in message
    assert repr(source) in message  # the source as written, not the rewritten one
    assert "line 2" in message
    error = renderer.check("a\nb\n{{ x ? 1 }}")
    assert error is not None
    assert "line 3" in str(error)


def test_rewrite_leaves_sources_without_question_marks_alone() -> None:
    source = "{{ a }} {% if b %}{{ {'x': 1}['x'] }}{% endif %}"
    assert rewrite_ternary(source) is source


def test_rewrite_keeps_line_count() -> None:
    source = "a\n{{ x\n ? y\n : z }}\nb ? c"
    rewritten = rewrite_ternary(source)
    assert rewritten.count("\n") == source.count("\n")
    assert rewritten.endswith("\nb ? c")


def test_unterminated_blocks_are_left_to_jinja(renderer: Renderer, ctx: dict[str, Any]) -> None:
    for source in ("{{ a ? b : c", "{# a ? b", "{% raw %}{{ a ? b }}"):
        assert rewrite_ternary(source).startswith(source[:2])
        with pytest.raises(TemplateError):
            renderer.render(source, ctx)


def _python(expr: Any) -> Any:
    if isinstance(expr, tuple):
        cond, then, other = expr
        return _python(then) if _python(cond) else _python(other)
    return expr


def _jinja(expr: Any) -> str:
    if isinstance(expr, tuple):
        cond, then, other = expr
        # the condition needs parentheses when it is itself a ternary (the ternary nests right)
        cond_src = f"({_jinja(cond)})" if isinstance(cond, tuple) else _jinja(cond)
        return f"{cond_src} ? {_jinja(then)} : {_jinja(other)}"
    if isinstance(expr, bool):
        return "true" if expr else "false"
    if isinstance(expr, str):
        return repr(expr)
    return str(expr)


_leaves = st.one_of(
    st.booleans(),
    st.integers(-5, 5),
    st.text(alphabet="ab?:{}[]() ,'\"=", max_size=6).map(lambda s: s.replace("\\", "")),
)
_exprs = st.recursive(_leaves, lambda inner: st.tuples(inner, inner, inner), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_exprs)
def test_nested_ternaries_evaluate_like_python(expr: Any) -> None:
    renderer = Renderer(cache_size=16)
    assert renderer.render("{{ " + _jinja(expr) + " }}", {}) == _python(expr)
    assert renderer.render("{{ [" + _jinja(expr) + "] }}", {}) == [_python(expr)]
