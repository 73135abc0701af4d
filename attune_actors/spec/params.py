"""Parameter declarations and the values given for them.

One set of rules for workflow parameters, action parameters and literal task inputs: declared types,
`required`, `enum` and defaults. Values are checked, never rendered: a parameter value is data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from attune_actors.errors import AttuneError, Location, ParameterError
from attune_actors.spec.model import MISSING, PARAMETER_TYPES, ParamSpec
from attune_actors.spec.suggest import closest, unknown_key
from attune_actors.spec.yamlsrc import YMap, plain

PARAM_KEYS = ("type", "required", "default", "enum", "description", "secret")


def type_matches(type_name: str | None, value: Any) -> bool:
    """Whether a JSON value is of a declared parameter type (None accepts anything)."""
    if type_name is None:
        return True
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and not (isinstance(value, float) and math.isnan(value))
        )
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "array":
        return isinstance(value, (list, tuple))
    if type_name == "object":
        return isinstance(value, Mapping)
    return False


def describe(value: Any) -> str:
    """The JSON type name of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def parse_params(data: Any, where: Location, problems: list[AttuneError]) -> tuple[ParamSpec, ...]:
    """Parse a `parameters:` mapping (name -> declaration); problems are appended, never raised."""
    if data is None:
        return ()
    if not isinstance(data, dict):
        problems.append(AttuneError("'parameters' must be a mapping of name to declaration", location=where))
        return ()
    specs: list[ParamSpec] = []
    for name, decl in data.items():
        loc = data.loc(name) if isinstance(data, YMap) else where
        if not isinstance(name, str) or not name.isidentifier():
            problems.append(AttuneError(f"parameter name '{name}' must be an identifier", location=loc))
            continue
        if decl is None:
            decl = {}
        if not isinstance(decl, dict):
            problems.append(AttuneError(f"parameter '{name}' must be a mapping", location=loc))
            continue

        def at(key: str, decl: dict[str, Any] = decl, loc: Location = loc) -> Location:
            return decl.loc(key) if isinstance(decl, YMap) and key in decl else loc

        for key in decl:
            if key not in PARAM_KEYS:
                problems.append(
                    AttuneError(unknown_key(key, PARAM_KEYS, f"parameter '{name}'"), location=at(key))
                )
        type_name = decl.get("type")
        if type_name is not None and (not isinstance(type_name, str) or type_name not in PARAMETER_TYPES):
            guess = closest(str(type_name), PARAMETER_TYPES)
            hint = f"did you mean '{guess}'?" if guess else f"one of {', '.join(PARAMETER_TYPES)}"
            problems.append(
                AttuneError(f"parameter '{name}': unknown type {type_name!r} ({hint})", location=at("type"))
            )
            type_name = None
        enum = decl.get("enum")
        if enum is not None and not isinstance(enum, list):
            problems.append(AttuneError(f"parameter '{name}': 'enum' must be a list", location=at("enum")))
            enum = None
        for flag in ("required", "secret"):
            if flag in decl and not isinstance(decl[flag], bool):
                problems.append(
                    AttuneError(f"parameter '{name}': '{flag}' must be true or false", location=at(flag))
                )
        spec = ParamSpec(
            name=name,
            type=type_name,
            required=decl.get("required") is True,
            default=plain(decl["default"]) if "default" in decl else MISSING,
            enum=tuple(plain(enum)) if enum is not None else None,
            description=str(decl.get("description") or ""),
            secret=decl.get("secret") is True,
            location=loc,
        )
        if spec.has_default and spec.default is not None:
            err = check_value(spec, spec.default)
            if err:
                problems.append(AttuneError(f"parameter '{name}': default {err}", location=at("default")))
        specs.append(spec)
    return tuple(specs)


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why `value` is not acceptable for `spec`, or None when it is."""
    if not type_matches(spec.type, value):
        return f"must be of type {spec.type}, got {describe(value)} {_short(value)}"
    if spec.enum is not None and value not in spec.enum:
        allowed = ", ".join(repr(v) for v in spec.enum)
        return f"must be one of {allowed}, got {_short(value)}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def apply_params(
    specs: tuple[ParamSpec, ...],
    values: Mapping[str, Any] | None,
    *,
    owner: str,
    allow_extra: bool = False,
) -> dict[str, Any]:
    """Validate input values against declarations and apply defaults.

    Raises ParameterError listing every problem (missing, unknown, wrong type, outside enum), each
    naming the parameter, so nothing runs on bad input.
    """
    values = dict(values or {})
    known = {s.name: s for s in specs}
    errors: list[str] = []
    result: dict[str, Any] = {}
    for name in values:
        if name not in known and not allow_extra:
            guess = closest(name, known)
            errors.append(f"unknown parameter '{name}'" + (f" (did you mean '{guess}'?)" if guess else ""))
    for spec in specs:
        if spec.name in values:
            value = values[spec.name]
            if value is None and not spec.required:
                result[spec.name] = spec.default if spec.has_default else None
                continue
            err = check_value(spec, value)
            if err:
                errors.append(f"parameter '{spec.name}' {err}")
            result[spec.name] = value
        elif spec.has_default:
            result[spec.name] = spec.default
        elif spec.required:
            errors.append(f"missing required parameter '{spec.name}'")
        else:
            result[spec.name] = None
    if allow_extra:
        for name, value in values.items():
            result.setdefault(name, value)
    if errors:
        raise ParameterError(f"{owner}: " + "; ".join(errors))
    return result


def coerce_cli_value(name: str, spec: ParamSpec | None, text: str) -> Any:
    """Convert a `-p KEY=VALUE` string to the parameter's declared type (JSON for arrays/objects).

    An undeclared or untyped parameter takes the JSON value when the text is JSON, else the string.
    """
    type_name = spec.type if spec is not None else None
    if type_name == "string":
        return text
    if type_name is None:
        try:
            return json.loads(text)
        except ValueError:
            return text
    if type_name == "integer":
        try:
            return int(text)
        except ValueError:
            raise ParameterError(f"parameter '{name}' must be an integer, got {text!r}") from None
    if type_name == "number":
        try:
            number = float(text)
        except ValueError:
            raise ParameterError(f"parameter '{name}' must be a number, got {text!r}") from None
        if not math.isfinite(number):  # nan and inf are no JSON numbers
            raise ParameterError(f"parameter '{name}' must be a finite number, got {text!r}")
        return int(text) if _is_int_text(text) else number
    if type_name == "boolean":
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ParameterError(f"parameter '{name}' must be true or false, got {text!r}")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ParameterError(f"parameter '{name}' must be JSON ({type_name}): {exc}") from None


def _is_int_text(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
