"""Parameters: declared types, required, enum and defaults; `-p` text converted to the declared type."""

from __future__ import annotations

from typing import Any

import pytest

from attune_actors.errors import ParameterError
from attune_actors.spec.model import ParamSpec
from attune_actors.spec.params import apply_params, check_value, coerce_cli_value, type_matches

SPECS = (
    ParamSpec("name", type="string", required=True),
    ParamSpec("count", type="integer", default=1),
    ParamSpec("mode", type="string", enum=("a", "b"), default="a"),
    ParamSpec("extra"),
)


@pytest.mark.parametrize(
    ("type_name", "good", "bad"),
    [
        ("string", ["", "x"], [1, None, True]),
        ("integer", [0, -3, 10**20], [1.0, True, "1", None]),
        ("number", [0, 1.5, -2], [True, "1", float("nan"), None]),
        ("boolean", [True, False], [0, 1, "true", None]),
        ("array", [[], [1, "a"]], [{}, "[]", None]),
        ("object", [{}, {"a": 1}], [[], "{}", None]),
        (None, [None, 1, "x", [], {}], []),
    ],
)
def test_type_matches(type_name: str | None, good: list[Any], bad: list[Any]) -> None:
    assert all(type_matches(type_name, v) for v in good)
    assert not any(type_matches(type_name, v) for v in bad)


def test_check_value_messages() -> None:
    assert check_value(SPECS[1], "3") == "must be of type integer, got string '3'"
    assert check_value(SPECS[2], "c") == "must be one of 'a', 'b', got 'c'"
    assert check_value(SPECS[2], "b") is None


def test_apply_params_applies_defaults() -> None:
    assert apply_params(SPECS, {"name": "x"}, owner="w") == {
        "name": "x",
        "count": 1,
        "mode": "a",
        "extra": None,
    }
    # None for an optional parameter means "use the default".
    assert apply_params(SPECS, {"name": "x", "count": None}, owner="w")["count"] == 1


def test_apply_params_lists_every_problem_naming_each_parameter() -> None:
    with pytest.raises(ParameterError) as caught:
        apply_params(SPECS, {"count": "many", "mode": "z", "cuont": 2}, owner="p.w")
    assert caught.value.message == (
        "p.w: unknown parameter 'cuont' (did you mean 'count'?); missing required parameter 'name'; "
        "parameter 'count' must be of type integer, got string 'many'; "
        "parameter 'mode' must be one of 'a', 'b', got 'z'"
    )


def test_apply_params_with_extra_inputs_allowed() -> None:
    assert apply_params((), {"anything": [1]}, owner="core.echo", allow_extra=True) == {"anything": [1]}


@pytest.mark.parametrize(
    ("type_name", "text", "value"),
    [
        ("string", "007", "007"),
        ("string", '{"a": 1}', '{"a": 1}'),
        ("integer", "42", 42),
        ("integer", " -3 ", -3),
        ("number", "2", 2),
        ("number", "0.25", 0.25),
        ("number", "1e3", 1000.0),
        ("boolean", "true", True),
        ("boolean", "No", False),
        ("boolean", "1", True),
        ("array", '["a", 1]', ["a", 1]),
        ("object", '{"k": null}', {"k": None}),
        (None, "[1, 2]", [1, 2]),
        (None, "12", 12),
        (None, "plain words", "plain words"),
    ],
)
def test_cli_values_take_the_declared_type(type_name: str | None, text: str, value: Any) -> None:
    converted = coerce_cli_value("p", ParamSpec("p", type=type_name), text)
    assert converted == value
    assert type(converted) is type(value)


def test_undeclared_cli_values_take_json_or_text() -> None:
    assert coerce_cli_value("p", None, "true") is True
    assert coerce_cli_value("p", None, "x") == "x"


@pytest.mark.parametrize(
    ("type_name", "text", "message"),
    [
        ("integer", "4.5", "parameter 'p' must be an integer, got '4.5'"),
        ("number", "fast", "parameter 'p' must be a number, got 'fast'"),
        ("number", "nan", "parameter 'p' must be a finite number, got 'nan'"),
        ("number", "-inf", "parameter 'p' must be a finite number, got '-inf'"),
        ("boolean", "maybe", "parameter 'p' must be true or false, got 'maybe'"),
        ("array", "[1,", "parameter 'p' must be JSON (array): "),
        ("object", "{a: 1}", "parameter 'p' must be JSON (object): "),
    ],
)
def test_cli_values_that_do_not_convert(type_name: str, text: str, message: str) -> None:
    with pytest.raises(ParameterError) as caught:
        coerce_cli_value("p", ParamSpec("p", type=type_name), text)
    assert caught.value.message.startswith(message)
