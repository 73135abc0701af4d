"""The template renderer: native values, filters, lookup rules, strict undefined, the API the engine
and the validator use (SPEC sections 4 and 7)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from markupsafe import Markup

from attune_actors.errors import TemplateError
from attune_actors.templates import (
    KVView,
    Renderer,
    Scope,
    TaskViews,
    build_context,
    is_template,
    run_functions,
)

WHERE = "packs/x/workflows/y.yaml:12:7 task build, input.tag"


class FakeKV:
    """A datastore with the two methods templates use, plus internals they must not reach."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {"flags.on": True, "a.b": 5}
        self.cipher_key = "do-not-leak"

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def get_secret(self, key: str) -> Any:
        return f"secret:{key}"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@pytest.fixture
def ctx() -> dict[str, Any]:
    return build_context(
        parameters={
            "app_name": "  shop ",
            "x": "12345",
            "n": 7,
            "flag": False,
            "nothing": None,
            "regions": ["eu", "us", "ap"],
            "items": ["i1", "i2"],
            "spec": {"replicas": 3},
            "payload": "{{ 7*7 }}",
        },
        vars={
            "success": True,
            "keys": "the keys var",
            "values": "the values var",
            "json_string": '{"a": [1, 2], "b": null}',
            "large_list": list(range(7)),
            "region": "eu-west-1",
        },
        task={
            "build": {
                "status": "succeeded",
                "result": {"image": "shop:1", "items": "result items", "keys": [1]},
                "error": None,
            },
            "get": {"status": "succeeded", "result": "the task named get"},
        },
        pack={"config": {"base_url": "https://api", "api_key": "k"}},
        system={"execution_id": "e-1", "identity": {"login": "bob"}},
        kv=KVView.of(FakeKV()),
    )


def render(renderer: Renderer, source: Any, ctx: Mapping[str, Any]) -> Any:
    return renderer.render(source, ctx, where=WHERE)


# -- native values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ parameters.x }}", "12345"),  # a string stays a string: no literal evaluation
        ("{{ parameters.n }}", 7),
        ("{{ parameters.flag }}", False),
        ("{{ parameters.nothing }}", None),
        ("{{ parameters.regions }}", ["eu", "us", "ap"]),
        ("{{ parameters.spec }}", {"replicas": 3}),
        ("{{ parameters.n * 6 }}", 42),
        ("{{ 42 }}", 42),
        ("{{ '42' }}", "42"),
        ("{{ [1, 'a', none, true] }}", [1, "a", None, True]),
        ("{{ {'a': 1} }}", {"a": 1}),
        ("{{ (1, 2) }}", [1, 2]),
        ("{{ range(3) }}", [0, 1, 2]),
        ("  {{ parameters.n }}\n", 7),  # whitespace around a single expression is ignored
        ("{{- parameters.n -}}", 7),
        ("{# a comment #}{{ parameters.n }}", 7),
        ("{{ parameters.regions | map('upper') }}", ["EU", "US", "AP"]),  # no generator leaks
        ("{{ parameters.regions | select('ne', 'us') }}", ["eu", "ap"]),
        ("{{ parameters.spec.items() }}", [("replicas", 3)]),
    ],
)
def test_single_expression_renders_the_native_value(
    renderer: Renderer, ctx: dict[str, Any], source: str, expected: Any
) -> None:
    value = render(renderer, source, ctx)
    assert value == expected
    assert type(value) is type(expected)


def test_native_value_is_the_object_itself_not_a_copy(
    renderer: Renderer, ctx: dict[str, Any]
) -> None:
    assert render(renderer, "{{ parameters.regions }}", ctx) is ctx["parameters"]["regions"]


def test_a_scope_renders_as_a_plain_dict(renderer: Renderer, ctx: dict[str, Any]) -> None:
    value = render(renderer, "{{ pack.config }}", ctx)
    assert value == {"base_url": "https://api", "api_key": "k"}
    scope = render(renderer, "{{ system }}", ctx)
    assert type(scope) is dict
    assert scope["execution_id"] == "e-1"


def test_markup_results_become_plain_str(renderer: Renderer, ctx: dict[str, Any]) -> None:
    value = render(renderer, "{{ '<b>' | escape }}", ctx)
    assert value == "&lt;b&gt;"
    assert type(value) is str
    assert not isinstance(value, Markup)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("hello {{ system.identity.login }}", "hello bob"),
        ("{{ parameters.n }}{{ parameters.n }}", "77"),
        ("n={{ parameters.n }}", "n=7"),
        ("{{ parameters.flag }} and {{ parameters.nothing }}", "False and None"),
        ("line\n{{ parameters.n }}\n", "line\n7\n"),  # trailing newline kept
        ("{% for r in parameters.regions %}{{ r }},{% endfor %}", "eu,us,ap,"),
        ("{% if vars.success %}yes{% else %}no{% endif %}", "yes"),
        ("{% raw %}{{ not rendered }}{% endraw %}", "{{ not rendered }}"),
        ("{% set total = parameters.n + 1 %}{{ total }}", "8"),
        (
            "{% set ns = namespace(c=0) %}{% for r in parameters.regions %}"
            "{% set ns.c = ns.c + 1 %}{% endfor %}{{ ns.c }}",
            "3",
        ),
    ],
)
def test_other_templates_render_to_strings(
    renderer: Renderer, ctx: dict[str, Any], source: str, expected: str
) -> None:
    assert render(renderer, source, ctx) == expected


@pytest.mark.parametrize(
    "value",
    [5, 1.5, True, False, None, "plain text", "a { brace } but no template", "", b"bytes"],
)
def test_values_that_are_not_templates_pass_through(
    renderer: Renderer, ctx: dict[str, Any], value: Any
) -> None:
    assert render(renderer, value, ctx) is value


class Text(str):
    """A str subclass, as some YAML loaders produce."""


def test_str_subclasses_render_like_str(renderer: Renderer, ctx: dict[str, Any]) -> None:
    assert render(renderer, Text("{{ parameters.n }}"), ctx) == 7
    assert render(renderer, {"a": [Text("n={{ parameters.n }}")]}, ctx) == {"a": ["n=7"]}
    plain = render(renderer, Text("no template"), ctx)
    assert plain == "no template"
    assert type(plain) is str


def test_dicts_and_lists_render_recursively_with_literal_keys(
    renderer: Renderer, ctx: dict[str, Any]
) -> None:
    value = {
        "app": "{{ parameters.app_name | trim }}",
        "{{ parameters.n }}": "{{ parameters.n }}",  # keys are never rendered
        "nested": [{"r": "{{ parameters.regions | first }}"}, "{{ parameters.n > 5 }}", 3],
        "plain": "text",
    }
    rendered = render(renderer, value, ctx)
    assert rendered == {
        "app": "shop",
        "{{ parameters.n }}": 7,
        "nested": [{"r": "eu"}, True, 3],
        "plain": "text",
    }
    assert value["app"] == "{{ parameters.app_name | trim }}"  # the input is not modified
    assert rendered["nested"] is not value["nested"]


def test_parameter_values_are_data_never_rendered(renderer: Renderer, ctx: dict[str, Any]) -> None:
    payload = "{{ 7*7 }}"
    assert render(renderer, "{{ parameters.payload }}", ctx) == payload
    assert render(renderer, "got {{ parameters.payload }}!", ctx) == f"got {payload}!"
    assert render(renderer, {"a": ["{{ parameters.payload }}"]}, ctx) == {"a": [payload]}
    assert render(renderer, "{{ parameters.payload | trim }}", ctx) == payload
    assert render(renderer, "{{ [parameters.payload] | to_json }}", ctx) == json.dumps([payload])
    assert render(renderer, "{{ parameters.payload ~ parameters.payload }}", ctx) == payload * 2
    data = build_context(vars={"doc": json.dumps({"t": payload})})
    assert render(renderer, "{{ (vars.doc | from_json).t }}", data) == payload
    # even when the value would render to something else, it comes out as it went in
    assert "49" not in str(render(renderer, {"k": "{{ parameters.payload }}"}, ctx))


# -- filters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ parameters.app_name | upper | trim }}", "SHOP"),
        ("{{ parameters.regions | first }}", "eu"),
        ("{{ parameters.regions | last }}", "ap"),
        ("{{ parameters.regions | length }}", 3),
        ("{{ parameters.regions | join(',') }}", "eu,us,ap"),
        ("{{ parameters.regions | sort | list }}", ["ap", "eu", "us"]),
        ("{{ vars.missing_but_defaulted | default('d') }}", "d"),
        ("{{ parameters.nothing | default('d', true) }}", "d"),
        ("{{ '3' | int + 1 }}", 4),
        ("{{ 'a-b' | replace('-', '+') }}", "a+b"),
        ("{{ vars.json_string | from_json }}", {"a": [1, 2], "b": None}),
        ("{{ (vars.json_string | from_json).a[1] }}", 2),
        ("{{ parameters.spec | from_json }}", {"replicas": 3}),  # already parsed: passes through
        ("{{ parameters.spec | to_json }}", '{"replicas":3}'),
        ("{{ parameters.spec | to_json(pretty=true) }}", '{\n  "replicas": 3\n}'),
        ("{{ parameters.spec | json_encode }}", '{"replicas":3}'),
        ("{{ vars | to_json | from_json | length }}", 6),  # scopes serialise as objects
        ("{{ {'é': none} | to_json }}", '{"é":null}'),
        ("{{ vars.large_list | batch(size=3) }}", [[0, 1, 2], [3, 4, 5], [6]]),
        ("{{ vars.large_list | batch(3) }}", [[0, 1, 2], [3, 4, 5], [6]]),
        ("{{ vars.large_list | batch(3, 'x') }}", [[0, 1, 2], [3, 4, 5], [6, "x", "x"]]),
        ("{{ vars.large_list | batch(size=10) }}", [[0, 1, 2, 3, 4, 5, 6]]),
        ("{{ [] | batch(size=2) }}", []),
        ("{% for b in vars.large_list | batch(4) %}{{ b | sum }};{% endfor %}", "6;15;"),
        ("{{ vars.large_list | slice(2) }}", [[0, 1, 2, 3], [4, 5, 6]]),
        ("{{ [1, 1, 2] | unique }}", [1, 2]),
    ],
)
def test_filters(renderer: Renderer, ctx: dict[str, Any], source: str, expected: Any) -> None:
    assert render(renderer, source, ctx) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'not json' | from_json }}", "from_json: invalid JSON"),
        ("{{ [1] | batch(size=0) }}", "batch: size must be a positive integer"),
        ("{{ [1] | batch }}", "batch: size must be a positive integer"),
        ("{{ [1] | batch(2, size=2) }}", "give the size once"),
        ("{{ parameters | to_json(indent=100000) }}", "indent must be an integer"),
        ("{{ kv | to_json }}", "not JSON serializable"),
    ],
)
def test_filter_errors_are_template_errors(
    renderer: Renderer, ctx: dict[str, Any], source: str, message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        render(renderer, source, ctx)


# -- lookup: keys win over methods ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ parameters.items }}", ["i1", "i2"]),
        ("{{ vars.keys }}", "the keys var"),
        ("{{ vars.values }}", "the values var"),
        ("{{ task.get.result }}", "the task named get"),
        ("{{ task.build.result.items }}", "result items"),  # plain dicts from results too
        ("{{ task.build.result.keys }}", [1]),
        ("{{ task['get']['result'] }}", "the task named get"),
        ("{{ vars['keys'] }}", "the keys var"),
        # inside a scope, a plain dict without such a key still has its read-only methods
        ("{{ parameters.spec.items() | list }}", [("replicas", 3)]),
        ("{{ pack.config.keys() | list }}", ["base_url", "api_key"]),
        ("{{ pack.config.get('nope', 'fallback') }}", "fallback"),
    ],
)
def test_keys_win_over_methods(
    renderer: Renderer, ctx: dict[str, Any], source: str, expected: Any
) -> None:
    assert render(renderer, source, ctx) == expected


@pytest.mark.parametrize(
    ("source", "missing"),
    [
        ("{{ system.get('execution_id') }}", "system.get"),
        ("{{ parameters.update }}", "parameters.update"),
        ("{{ task.values }}", "task.values"),
        ("{{ vars['items'] }}", "vars['items']"),
        ("{{ pack.keys }}", "pack.keys"),
    ],
)
def test_a_scope_shows_keys_only_never_a_method(
    renderer: Renderer, source: str, missing: str
) -> None:
    """SPEC 7, Lookup: a name a context scope does not hold is undefined, never the dict's method."""
    ctx = build_context(parameters={"a": 1}, vars={"a": 1}, task={}, system={"execution_id": "e"})
    with pytest.raises(TemplateError, match=re.escape(f"{missing} is undefined")):
        render(renderer, source, ctx)
    assert renderer.truthy("{{ vars.keys is not defined and vars.a is defined }}", ctx)


def test_a_method_is_never_a_value(renderer: Renderer) -> None:
    ctx = build_context(vars={"d": {"a": 1}})
    with pytest.raises(TemplateError, match="renders to a function, not a value"):
        render(renderer, "{{ vars.d.items }}", ctx)


def test_a_task_that_has_not_run_reads_as_nulls(renderer: Renderer) -> None:
    ctx = build_context(task=TaskViews(["later", "done"]))
    assert render(renderer, "{{ task.later }}", ctx) == {
        "status": None,
        "result": None,
        "error": None,
        "attempts": 0,
        "started_at": None,
        "ended_at": None,
    }
    assert render(renderer, "{{ task.later.result is none and task.later.attempts == 0 }}", ctx)
    with pytest.raises(TemplateError, match=r"task\.nope is undefined"):
        render(renderer, "{{ task.nope }}", ctx)


class EngineView(Mapping[str, Any]):
    """A mapping view over an engine object, like a task run: keys shown, attributes private."""

    def __init__(self) -> None:
        self.deadline = 123.0  # public attribute that is not part of the view

    def __getitem__(self, key: str) -> Any:
        if key == "status":
            return "running"
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(["status"])

    def __len__(self) -> int:
        return 1


def test_custom_mappings_show_keys_and_mapping_methods_only(renderer: Renderer) -> None:
    ctx = build_context(task={"t": EngineView()})
    assert render(renderer, "{{ task.t.status }}", ctx) == "running"
    assert render(renderer, "{{ task.t.keys() | list }}", ctx) == ["status"]
    with pytest.raises(TemplateError, match=r"task\.t\.deadline is undefined"):
        render(renderer, "{{ task.t.deadline }}", ctx)


# -- strict undefined ----------------------------------------------------------------------------


def test_undefined_error_names_where_the_template_and_the_path(
    renderer: Renderer, ctx: dict[str, Any]
) -> None:
    with pytest.raises(TemplateError) as caught:
        render(renderer, "{{ vars.nope }}", ctx)
    message = str(caught.value)
    assert message.startswith(WHERE + ": ")
    assert "vars.nope is undefined" in message
    assert "'{{ vars.nope }}'" in message
    assert "success" in message  # the keys that do exist are listed
    assert caught.value.__cause__ is not None


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("{{ vars.nope }}", "vars.nope is undefined"),
        ("{{ vars['nope'] }}", "vars['nope'] is undefined"),
        ("x {{ vars.nope }} y", "vars.nope is undefined"),
        ("{{ vars.nope.deeper }}", "vars.nope is undefined"),
        ("{{ vars.nope | upper }}", "vars.nope is undefined"),
        ("{{ nope }}", "nope is undefined"),
        ("{{ task.missing.result }}", "task.missing is undefined"),
        ("{{ task.build.result.nope }}", "task.build.result.nope is undefined"),
        ("{{ task.build.result.image.nope }}", "task.build.result.image.nope is undefined"),
        ("{{ task.build.error.message }}", "task.build.error.message is undefined"),
        ("{{ parameters.regions[7] }}", "parameters.regions[7] is undefined"),
        ("{% if vars.nope %}a{% endif %}", "vars.nope is undefined"),
        ("{{ vars.region }}-{{ vars.nope }}", "vars.nope is undefined"),
        ("{{ vars.absent | default('ok') }}{{ vars.nope }}", "vars.nope is undefined"),
        ("{{ [vars.nope] }}", "vars.nope is undefined"),  # not hidden inside a container
        ("{{ {'k': vars.nope} }}", "vars.nope is undefined"),
        ("{{ dict(k=vars.nope) }}", "vars.nope is undefined"),
        ("{{ vars.success ? vars.nope : 1 }}", "vars.nope is undefined"),
        ("{{ item }}", "item is undefined"),
        ("{{ kv.nope('a') }}", "nope"),
    ],
)
def test_undefined_names_are_errors(
    renderer: Renderer, ctx: dict[str, Any], source: str, path: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        render(renderer, source, ctx)
    assert path in str(caught.value)


def test_undefined_hint_describes_the_parent(renderer: Renderer, ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match=r"task\.build\.result has: image, items, keys"):
        render(renderer, "{{ task.build.result.nope }}", ctx)
    with pytest.raises(TemplateError, match=r"task\.build\.error is null"):
        render(renderer, "{{ task.build.error.message }}", ctx)
    with pytest.raises(TemplateError, match=r"parameters\.regions has 3 items"):
        render(renderer, "{{ parameters.regions[7] }}", ctx)


def test_undefined_in_a_loop_variable_still_errors(renderer: Renderer, ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match="has no attribute 'nope'"):
        render(renderer, "{% for r in parameters.regions %}{{ r.nope }}{% endfor %}", ctx)


def test_defined_tests_and_default_do_not_raise(renderer: Renderer, ctx: dict[str, Any]) -> None:
    assert render(renderer, "{{ vars.nope is defined }}", ctx) is False
    assert render(renderer, "{{ vars.success is defined }}", ctx) is True
    assert render(renderer, "{{ vars.nope | default(none) }}", ctx) is None


def test_error_location_includes_the_key_path_inside_rendered_values(
    renderer: Renderer, ctx: dict[str, Any]
) -> None:
    value = {"ok": "{{ parameters.n }}", "deep": {"list": ["fine", "{{ vars.nope }}"]}}
    with pytest.raises(TemplateError) as caught:
        renderer.render(value, ctx, where="wf.yaml:3:5 task t, input")
    assert str(caught.value).startswith("wf.yaml:3:5 task t, input.deep.list[1]: vars.nope")
    with pytest.raises(TemplateError) as caught:
        renderer.render(["{{ nope }}"], ctx)
    assert str(caught.value).startswith("[0]: nope is undefined")


def test_multi_line_templates_report_the_line(renderer: Renderer, ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match=r"vars\.nope is undefined .*, line 3\)"):
        render(renderer, "a\nb {{ vars.region }}\nc {{ vars.nope }}\n", ctx)
    with pytest.raises(TemplateError, match=r"syntax error: .*, line 2\)"):
        render(renderer, "first\n{{ x }\n", ctx)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ x }", "syntax error"),
        ("{% if %}", "syntax error"),
        ("{{ parameters.n | no_such_filter }}", "No filter named 'no_such_filter'"),
        ("{{ parameters.regions + 1 }}", "TypeError"),
    ],
)
def test_other_failures_are_template_errors(
    renderer: Renderer, ctx: dict[str, Any], source: str, message: str
) -> None:
    with pytest.raises(TemplateError, match=message) as caught:
        render(renderer, source, ctx)
    assert str(caught.value).startswith(WHERE)


def test_exceptions_of_context_functions_become_template_errors(renderer: Renderer) -> None:
    def boom() -> None:
        raise RuntimeError("datastore offline")

    with pytest.raises(TemplateError, match="RuntimeError: datastore offline"):
        renderer.render("{{ boom() }}", {"boom": boom})


# -- context objects -----------------------------------------------------------------------------


def test_kv_methods_are_callable_from_templates(renderer: Renderer, ctx: dict[str, Any]) -> None:
    assert render(renderer, "{{ kv.get('a.b') }}", ctx) == 5
    assert render(renderer, "{{ kv.get('flags.new_feature', default=false) }}", ctx) is False
    assert render(renderer, "{{ kv.get('flags.on', default=false) }}", ctx) is True
    assert render(renderer, "{{ kv.get_secret('service.api_key') }}", ctx) == (
        "secret:service.api_key"
    )
    for leak in ("{{ kv.cipher_key }}", "{{ kv._get }}", "{{ kv.get.__self__ }}"):
        with pytest.raises(TemplateError):
            render(renderer, leak, ctx)


def test_run_functions(renderer: Renderer, ctx: dict[str, Any]) -> None:
    cases = {
        "succeeded": (True, False, False),
        "failed": (False, True, False),
        "timeout": (False, True, True),
        "canceled": (False, False, False),
    }
    for status, (ok, failed, timed_out) in cases.items():
        local = {**ctx, **run_functions(status, {"id": 9}, {"message": "m"})}
        assert render(renderer, "{{ succeeded() }}", local) is ok
        assert render(renderer, "{{ failed() }}", local) is failed
        assert render(renderer, "{{ timed_out() }}", local) is timed_out
        assert render(renderer, "{{ result().id }}", local) == 9
        assert render(renderer, "{{ error().message }}", local) == "m"


def test_scope_is_a_live_read_only_view() -> None:
    data: dict[str, Any] = {"a": 1, "items": 2}
    scope = Scope(data)
    data["b"] = 3  # no copy: later changes show through
    assert dict(scope) == {"a": 1, "items": 2, "b": 3}
    assert len(scope) == 3
    assert "b" in scope
    assert scope.get("zzz", 0) == 0
    assert scope["items"] == 2
    assert list(scope.items()) == [("a", 1), ("items", 2), ("b", 3)]  # in Python, a Mapping
    with pytest.raises(TypeError):
        scope["a"] = 5  # type: ignore[index]
    with pytest.raises(AttributeError):
        scope.a  # type: ignore[attr-defined]  # noqa: B018
    assert scope.to_dict() == data
    assert scope.to_dict() is not data
    assert str(scope) == str(data)
    assert "Scope(" in repr(scope)
    assert Scope() == {}


def test_build_context_wraps_scopes_without_copying() -> None:
    variables: dict[str, Any] = {"x": 1}
    ctx = build_context(vars=variables, item="it", index=0)
    assert set(ctx) == {"task", "vars", "parameters", "pack", "system", "item", "index"}
    assert isinstance(ctx["vars"], Scope)
    variables["x"] = 2
    assert Renderer().render("{{ vars.x }}/{{ item }}/{{ index }}", ctx) == "2/it/0"
    scope = Scope({"y": 1})
    assert build_context(vars=scope)["vars"] is scope
    assert "kv" in build_context(kv=KVView(lambda k, d=None: d, lambda k: k))


def test_context_may_be_any_mapping(renderer: Renderer) -> None:
    ctx = Scope({"parameters": {"x": 1}})
    assert renderer.render("{{ parameters.x }}", ctx) == 1
    assert renderer.render("{{ range(2) | list }}", {}) == [0, 1]  # globals still there


# -- API: compile, check, truthy, task_references, cache ---------------------------------------


def test_is_template() -> None:
    assert is_template("{{ x }}")
    assert is_template("{% if x %}{% endif %}")
    assert is_template("{# c #}")
    assert not is_template("{ x }")
    assert not is_template("plain")
    assert not is_template(5)
    assert not is_template(None)
    assert Renderer.is_template("a {{ b }}")


def test_compile_returns_a_cached_callable(ctx: dict[str, Any]) -> None:
    renderer = Renderer()
    first = renderer.compile("{{ parameters.n + 1 }}", where="w")
    second = renderer.compile("{{ parameters.n + 1 }}", where="other")
    assert first(ctx) == second(ctx) == 8
    info = renderer.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert renderer.render("{{ parameters.n + 1 }}", ctx) == 8
    assert renderer.cache_info().hits == 2
    constant = renderer.compile("no template")
    assert constant(ctx) == "no template"
    with pytest.raises(TemplateError, match=r"^here: vars\.nope is undefined"):
        renderer.compile("{{ vars.nope }}", where="here")(ctx)
    with pytest.raises(TemplateError, match=r"^there: syntax error"):
        renderer.compile("{{ x }", where="there")


def test_cache_is_bounded(ctx: dict[str, Any]) -> None:
    renderer = Renderer(cache_size=2)
    for n in range(5):
        assert renderer.render(f"{{{{ {n} }}}}", ctx) == n
    assert renderer.cache_info().currsize == 2
    renderer.cache_clear()
    assert renderer.cache_info().currsize == 0


def test_check_reports_syntax_errors_only(renderer: Renderer) -> None:
    assert renderer.check("{{ vars.anything_undefined }}") is None  # names are runtime
    assert renderer.check("plain text") is None
    assert renderer.check(5) is None
    error = renderer.check("{{ x }", where="wf.yaml:1:1 task t, input.a")
    assert isinstance(error, TemplateError)
    assert str(error).startswith("wf.yaml:1:1 task t, input.a: syntax error")
    multi = renderer.check("one\ntwo {{ x ? }}\nthree")
    assert multi is not None
    assert "line 2" in str(multi)
    unknown = renderer.check("{{ x | frobnicate }}")
    assert unknown is not None
    assert "frobnicate" in str(unknown)
    macro = renderer.check("{% macro m() %}{% endmacro %}")
    assert macro is not None
    assert "not allowed" in str(macro)
    assert renderer.check("succeeded() and", condition=True) is not None
    assert renderer.check("succeeded()", condition=True) is None
    assert renderer.check("succeeded() and", condition=False) is None  # plain text otherwise


def test_truthy(renderer: Renderer, ctx: dict[str, Any]) -> None:
    local = {**ctx, **run_functions("failed")}
    assert renderer.truthy(None, local) is True
    assert renderer.truthy(True, local) is True
    assert renderer.truthy(False, local) is False
    assert renderer.truthy("{{ failed() }}", local) is True
    assert renderer.truthy("{{ succeeded() }}", local) is False
    assert renderer.truthy("{{ parameters.regions }}", local) is True
    assert renderer.truthy("{{ [] }}", local) is False
    assert renderer.truthy("{{ parameters.nothing }}", local) is False
    assert renderer.truthy("{{ parameters.n > 5 and vars.success }}", local) is True
    assert renderer.truthy("{{ vars.success ? 0 : 1 }}", local) is False
    # a bare string is an expression, as in `when: succeeded()`
    assert renderer.truthy("failed()", local) is True
    assert renderer.truthy("succeeded()", local) is False
    assert renderer.truthy("parameters.n == 7", local) is True
    # string results: false-like words are false
    for text, expected in [
        ("false", False),
        (" False ", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("none", False),
        ("null", False),
        ("", False),
        ("true", True),
        ("yes", True),
        ("anything", True),
    ]:
        assert renderer.truthy("{{ vars.s }}", build_context(vars={"s": text})) is expected
    assert renderer.truthy("value: {{ parameters.flag }}", local) is True
    with pytest.raises(TemplateError, match=r"^wf: vars\.nope is undefined"):
        renderer.truthy("{{ vars.nope }}", local, where="wf")
    with pytest.raises(TemplateError, match="nope is undefined"):
        renderer.truthy("nope", local)


def test_task_references(renderer: Renderer) -> None:
    source = (
        "{{ task.build.result.image }} {{ task['deploy'].status }} {{ vars.task.nottask }}"
        "{% if task.check.status == 'ok' %}{{ task.cond ? task.yes : task.no }}{% endif %}"
        "{{ task }} {{ task[vars.dynamic] }}"
    )
    assert renderer.task_references(source) == {"build", "deploy", "check", "cond", "yes", "no"}
    assert renderer.task_references("no template with task.x") == set()
    assert renderer.task_references("task.x.status == 'ok'", condition=True) == {"x"}
    assert renderer.task_references("{{ task.x }") == set()  # syntax errors are check()'s job
    assert renderer.task_references(None) == set()
