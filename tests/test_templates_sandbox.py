"""The sandbox: templates cannot reach Python internals, mutate engine state or exhaust memory.

Every refusal is a `TemplateError`, raised quickly (each template here would otherwise take
gigabytes or run for minutes).
"""

from __future__ import annotations

from typing import Any

import pytest

from attune_actors.errors import TemplateError
from attune_actors.templates import MAX_RANGE, KVView, Renderer, build_context, run_functions


class Store:
    secret_key = "do-not-leak"

    def get(self, key: str, default: Any = None) -> Any:
        return default

    def get_secret(self, key: str) -> Any:
        return "s"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@pytest.fixture
def ctx() -> dict[str, Any]:
    return build_context(
        parameters={"items": [1, 2], "text": "abc"},
        vars={"d": {"k": "v"}},
        task={"t": {"result": {"k": [1, 2]}}},
        kv=KVView.of(Store()),
        **run_functions("succeeded", {"k": 1}),
    )


ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''['__class__'] }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{{ [].__class__.__mro__[-1].__subclasses__() }}",
    "{{ (1).__class__ }}",
    "{{ dict.__subclasses__() }}",
    "{{ dict.mro() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ joiner() }}",
    "{{ lipsum(n=1000000) }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__.sys.modules.os }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self._TemplateReference__context.environment }}",
    "{{ range.__globals__ }}",
    "{{ dict.__init__.__globals__ }}",
    "{{ succeeded.__globals__ }}",
    "{{ succeeded.__self__ }}",
    "{{ result.__func__ }}",
    "{{ kv.get.__self__ }}",
    "{{ kv.get.__func__.__globals__ }}",
    "{{ kv._get }}",
    "{{ kv.secret_key }}",
    "{{ vars._data }}",
    "{{ vars.__class__ }}",
    "{{ parameters.items.__class__ }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ '{x.__class__.__mro__}'.format_map({'x': 1}) }}",
    "{{ parameters.items | attr('__class__') }}",
    "{{ parameters.items | map(attribute='__class__') | list }}",
    "{{ parameters.items | map(attribute='__class__') | join }}",
    "{{ parameters.items | selectattr('__class__') | list }}",
    "{% set c = ''.__class__ %}{{ c }}",
    "{% for x in ''.__class__.__mro__ %}{{ x }}{% endfor %}",
    "{{ config }}",
    "{{ request }}",
    "{{ os }}",
    "{{ __builtins__ }}",
    "{{ import('os') }}",
    "{% import 'os' as os %}",
    "{% from 'x' import y %}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_refused(renderer: Renderer, ctx: dict[str, Any], source: str) -> None:
    with pytest.raises(TemplateError) as caught:
        renderer.render(source, ctx, where="escape")
    assert str(caught.value).startswith("escape: ")


@pytest.mark.parametrize(
    "source",
    [
        "{{ parameters.items.append(3) }}",
        "{{ parameters.items.pop() }}",
        "{{ parameters.items.clear() }}",
        "{{ vars.d.update({'k': 'x'}) }}",
        "{{ vars.d.pop('k') }}",
        "{{ vars.d.setdefault('z', 1) }}",
        "{{ task.t.result.k.extend([3]) }}",
        "{{ vars.update({'k': 'x'}) }}",
        "{% set vars.d = 1 %}",
    ],
)
def test_templates_cannot_mutate_state(
    renderer: Renderer, ctx: dict[str, Any], source: str
) -> None:
    with pytest.raises(TemplateError):
        renderer.render(source, ctx)
    assert ctx["parameters"]["items"] == [1, 2]
    assert ctx["vars"]["d"] == {"k": "v"}
    assert ctx["task"]["t"]["result"]["k"] == [1, 2]


RESOURCE_ABUSE = [
    "{{ range(10**9) }}",
    "{{ range(10**9) | list }}",
    f"{{{{ range({MAX_RANGE + 1}) }}}}",
    "{% for i in range(1000) %}{% for j in range(1000) %}{{ j }}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ 10**9 * 'x' }}",
    "{{ [0] * 10**9 }}",
    "{{ (1,) * 10**9 }}",
    "{{ 10 ** 10000000 }}",
    "{{ 2 ** (2 ** 40) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%.999999999f' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '%(a)999999999s' % {'a': 1} }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:{w}}'.format(1, w=999999999) }}",
    "{{ '{a:>999999999}'.format_map({'a': 1}) }}",
    "{{ '%999999999d' | format(1) }}",
    "{{ 'x' | center(999999999) }}",
    "{{ 'x' | indent(999999999, true) }}",
    "{{ range(1000) | join('x' * 100000) }}",
    "{{ ('a' * 100000) | replace('a', 'a' * 100) }}",
    "{{ [1] | batch(999999999, 'x') }}",
    "{{ [1] | slice(999999999) }}",
    "{{ ('a ' * 400000) | wordwrap(1, wrapstring='b' * 100) }}",
    "{{ [1] | tojson(indent=999999999) }}",
    "{{ 'x'.ljust(999999999) }}",
    "{{ 'x'.rjust(999999999) }}",
    "{{ 'x'.center(999999999) }}",
    "{{ 'x'.zfill(999999999) }}",
    "{{ ('\t' * 1000).expandtabs(999999999) }}",
    "{{ ('a' * 100000).replace('a', 'a' * 100) }}",
    "{{ ('x' * 100000).join(range(100)) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}"
    "{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}",
    "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% call range(3) %}{% endcall %}",
]


@pytest.mark.parametrize("source", RESOURCE_ABUSE)
def test_resource_abuse_is_refused(renderer: Renderer, ctx: dict[str, Any], source: str) -> None:
    with pytest.raises(TemplateError):
        renderer.render(source, ctx)


def test_refusals_say_what_the_sandbox_refused(renderer: Renderer, ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match=r"refused by the sandbox: .*__class__.* is unsafe"):
        renderer.render("{{ ''.__class__ }}", ctx)
    with pytest.raises(TemplateError, match=r"refused by the sandbox: range\(\) calls"):
        renderer.render("{{ range(10**9) }}", ctx)
    with pytest.raises(TemplateError, match=r"'\{% macro %\}' is not allowed"):
        renderer.render("{% macro m() %}{% endmacro %}", ctx)


def test_limits_leave_ordinary_templates_alone(renderer: Renderer, ctx: dict[str, Any]) -> None:
    assert renderer.render("{{ range(3) | list }}", ctx) == [0, 1, 2]
    assert renderer.render("{{ 'ab' * 3 }}", ctx) == "ababab"
    assert renderer.render("{{ 2 ** 10 }}", ctx) == 1024
    assert renderer.render("{{ 2 ** 0.5 > 1.41 }}", ctx) is True
    assert renderer.render("{{ '%05.1f|%s' % (3.14159, 'x') }}", ctx) == "003.1|x"
    assert renderer.render("{{ 7 % 3 }}", ctx) == 1
    assert renderer.render("{{ '{:>5}'.format('a') }}", ctx) == "    a"
    assert renderer.render("{{ 'a' | center(5) }}", ctx) == "  a  "
    assert renderer.render("{{ 'a\nb' | indent(2) }}", ctx) == "a\n  b"
    assert renderer.render("{{ [1, 2] | join('-') }}", ctx) == "1-2"
    assert renderer.render("{{ 'aXa' | replace('a', 'bb') }}", ctx) == "bbXbb"
    assert renderer.render("{{ '-'.join(['a', 'b']) }}", ctx) == "a-b"
    assert renderer.render("{{ 'x'.ljust(3, '.') }}", ctx) == "x.."
    assert renderer.render("{{ '%s-%s' | format('a', 'b') }}", ctx) == "a-b"
    # a range budget is per render, not per renderer
    for _ in range(3):
        assert renderer.render(f"{{{{ range({MAX_RANGE}) | length }}}}", ctx) == MAX_RANGE
    assert (
        renderer.render(
            "{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}ok", ctx
        )
        == "ok"
    )


def test_self_is_harmless(renderer: Renderer, ctx: dict[str, Any]) -> None:
    # `self` exists in every Jinja template; it only renders blocks, its internals are private.
    assert renderer.render("{% block b %}B{% endblock %}{{ self.b() }}", ctx) == "BB"
