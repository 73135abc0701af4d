"""Rule and sensor documents (SPEC section 10): `rules/<name>.yaml` and `sensors/<name>.yaml` of a pack.

Parsing checks each document on its own (keys, trigger shape, criteria operators, regexes, the
parameters of built-in trigger types); `validate_rules` then checks rules against the catalog: the
action exists, the trigger type is built in or emitted by a sensor, and the rule's parameters fit
the action's (names, literal types, required ones, template syntax, only `trigger.*` and
`pack.config.*` referenced). Every problem is a located `AttuneError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import meta

from attune_actors.errors import AttuneError, Location
from attune_actors.spec.params import check_value
from attune_actors.spec.suggest import closest, unknown_key
from attune_actors.spec.yamlsrc import YMap, location_of, plain

if TYPE_CHECKING:
    from attune_actors.spec.packs import Catalog
    from attune_actors.templates import Renderer

RULE_KEYS = ("ref", "name", "description", "enabled", "trigger", "criteria", "action", "parameters")
SENSOR_KEYS = (
    "name",
    "description",
    "enabled",
    "entry_point",
    "class_name",
    "poll_interval",
    "trigger_types",
)
TRIGGER_TYPE_KEYS = ("name", "description", "payload_schema")

OPERATORS = (
    "equals",
    "nequals",
    "lt",
    "lte",
    "gt",
    "gte",
    "contains",
    "ncontains",
    "startswith",
    "endswith",
    "regex",
    "exists",
    "nexists",
    "in",
    "nin",
)

# Built-in trigger types: parameter name -> (required, description).
BUILTIN_TRIGGERS: dict[str, dict[str, tuple[bool, str]]] = {
    "core.nats": {"subject": (True, "NATS subject (wildcards allowed), read through JetStream")},
    "core.webhook": {"name": (True, "the {name} of POST /api/v1/webhooks/{name}")},
    "core.interval": {
        "seconds": (True, "period in seconds"),
        "catchup": (False, "seconds a fire missed while the engine was down may be late (default 60)"),
    },
    "core.cron": {
        "expression": (True, "5-field cron expression"),
        "timezone": (False, "IANA time zone (default UTC)"),
        "catchup": (False, "seconds a fire missed while the engine was down may be late (default 60)"),
    },
    "core.datetime": {
        "at": (True, "ISO 8601 date and time with an offset (or `timezone`)"),
        "timezone": (False, "IANA time zone for an `at` without offset (default UTC)"),
        "catchup": (False, "seconds a fire missed while the engine was down may be late (default 60)"),
    },
}
TIMER_TRIGGERS = ("core.interval", "core.cron", "core.datetime")
TEMPLATE_NAMES = frozenset({"trigger", "pack"})  # what a rule's parameters may reference


@dataclass(frozen=True)
class RuleSpec:
    """A loaded rule. `criteria` is `[(path, operator, pattern)]`; `locations` by key label."""

    ref: str
    pack: str
    file: str
    trigger_type: str
    trigger_parameters: dict[str, Any]
    action: str
    criteria: tuple[tuple[str, str, Any], ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    description: str = ""
    locations: dict[str, Location] = field(default_factory=dict, compare=False)

    def at(self, label: str) -> Location:
        return self.locations.get(label) or Location(self.file, 1, 1)


@dataclass(frozen=True)
class TriggerTypeSpec:
    """A trigger type a sensor declares (`<pack>.<name>`)."""

    ref: str
    description: str = ""
    payload_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class SensorSpec:
    """A sensor: a Python class in `sensors/<entry_point>` with `run(emit)` or `poll(emit)`."""

    ref: str
    pack: str
    file: str
    entry_point: str
    class_name: str
    trigger_types: tuple[TriggerTypeSpec, ...]
    poll_interval: float = 60.0
    enabled: bool = True
    description: str = ""
    pack_path: str = ""


def parse_rule(data: Any, file: str, pack: str, problems: list[AttuneError]) -> RuleSpec | None:
    """One rule document; None (with problems) when it cannot be used at all."""
    top = Location(file, 1, 1)
    if not isinstance(data, dict):
        problems.append(AttuneError("a rule must be a mapping", location=top))
        return None
    found: list[AttuneError] = []
    at = _locator(data, top)
    for key in data:
        if key not in RULE_KEYS:
            found.append(AttuneError(unknown_key(key, RULE_KEYS, "rule"), location=at(key)))
    stem = file.rsplit("/", 1)[-1].removesuffix(".yaml")
    ref = data.get("ref")
    if ref is None:
        name = data.get("name", stem)
        ref = f"{pack}.{name}"
    if not isinstance(ref, str) or not ref.startswith(f"{pack}.") or not ref[len(pack) + 1 :]:
        found.append(AttuneError(f"rule 'ref' must be '{pack}.<name>', got {ref!r}", location=at("ref")))
        ref = f"{pack}.{stem}"
    what = f"rule '{ref}'"
    locations: dict[str, Location] = {"ref": at("ref")}
    trigger = data.get("trigger")
    trigger_type, trigger_params = "", {}
    if trigger is None:
        found.append(AttuneError(f"{what} needs 'trigger' ({{type, parameters}})", location=top))
    elif not isinstance(trigger, dict):
        found.append(
            AttuneError(f"{what}: 'trigger' must be a mapping {{type, parameters}}", location=at("trigger"))
        )
    else:
        t_at = _locator(trigger, at("trigger"))
        for key in trigger:
            if key not in ("type", "parameters"):
                found.append(
                    AttuneError(unknown_key(key, ("type", "parameters"), "trigger"), location=t_at(key))
                )
        raw_type = trigger.get("type")
        locations["trigger.type"] = t_at("type")
        trigger_type = raw_type if isinstance(raw_type, str) and "." in raw_type else ""
        if not trigger_type:
            found.append(
                AttuneError(
                    f"{what}: trigger 'type' must be '<pack>.<trigger>' (e.g. core.nats), got {raw_type!r}",
                    location=t_at("type"),
                )
            )
        raw_params = trigger.get("parameters") or {}
        if not isinstance(raw_params, dict):
            found.append(
                AttuneError(f"{what}: trigger 'parameters' must be a mapping", location=t_at("parameters"))
            )
        else:
            trigger_params = plain(raw_params)
            p_at = _locator(raw_params, t_at("parameters"))
            locations["trigger.parameters"] = t_at("parameters")
            if trigger_type in BUILTIN_TRIGGERS:
                found.extend(check_trigger_parameters(trigger_type, trigger_params, what, p_at))
    action = data.get("action")
    locations["action"] = at("action")
    if not isinstance(action, str) or not action:
        found.append(AttuneError(f"{what} needs 'action' (a workflow or action ref)", location=at("action")))
        action = ""
    criteria = _parse_criteria(data.get("criteria"), what, at("criteria"), found)
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        found.append(AttuneError(f"{what}: 'parameters' must be a mapping", location=at("parameters")))
        parameters = {}
    else:
        p_at = _locator(parameters, at("parameters"))
        for key in parameters:
            locations[f"parameters.{key}"] = p_at(key)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        found.append(AttuneError(f"{what}: 'enabled' must be true or false", location=at("enabled")))
        enabled = True
    problems.extend(found)
    if not trigger_type or not action:
        return None
    return RuleSpec(
        ref=ref,
        pack=pack,
        file=file,
        trigger_type=trigger_type,
        trigger_parameters=trigger_params,
        action=action,
        criteria=criteria,
        parameters=plain(parameters),
        enabled=enabled,
        description=str(data.get("description") or ""),
        locations=locations,
    )


def check_trigger_parameters(
    trigger_type: str, params: dict[str, Any], what: str, at: Any
) -> list[AttuneError]:
    """The parameters of a built-in trigger type: names, required ones, and each value's shape."""
    declared = BUILTIN_TRIGGERS[trigger_type]
    found: list[AttuneError] = []
    for key in params:
        if key not in declared:
            found.append(AttuneError(f"{what}: {unknown_key(key, declared, trigger_type)}", location=at(key)))
    for key, (required, _) in declared.items():
        if required and key not in params:
            found.append(AttuneError(f"{what}: {trigger_type} needs parameter '{key}'", location=at(None)))
    for key, value in params.items():
        err = _trigger_value_error(trigger_type, key, value, params)
        if err:
            found.append(AttuneError(f"{what}: {trigger_type} '{key}' {err}", location=at(key)))
    return found


def _trigger_value_error(kind: str, key: str, value: Any, params: dict[str, Any]) -> str | None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if key in ("subject", "name", "expression", "at", "timezone") and not (isinstance(value, str) and value):
        return "must be a non-empty string"
    if key == "seconds" and not (number and value > 0):
        return f"must be a number of seconds above 0, got {value!r}"
    if key == "catchup" and not (number and value >= 0):
        return f"must be a number of seconds, zero or more, got {value!r}"
    if key == "subject" and not _valid_subject(value):
        return f"is not a valid NATS subject: {value!r}"
    if key == "name" and not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        return f"may hold only letters, digits, '_', '-' and '.', got {value!r}"
    if key == "timezone":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            return f"is not a known time zone: {value!r}"
    if key == "expression":
        from croniter import croniter

        if not croniter.is_valid(value):
            return f"is not a valid cron expression: {value!r}"
    if key == "at":
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return f"must be an ISO 8601 date and time, got {value!r}"
        if moment.tzinfo is None and "timezone" not in params:
            return "needs an offset (e.g. +00:00) or a 'timezone' parameter"
    return None


def _valid_subject(subject: str) -> bool:
    tokens = subject.split(".")
    if any(not t or any(c.isspace() for c in t) for t in tokens):
        return False
    return all(t == ">" or ">" not in t for t in tokens[:-1]) and all(
        t in ("*", ">") or ("*" not in t and ">" not in t) for t in tokens
    )


def _parse_criteria(
    raw: Any, what: str, where: Location, found: list[AttuneError]
) -> tuple[tuple[str, str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        found.append(
            AttuneError(
                f"{what}: 'criteria' must be a mapping of trigger.<path> to {{operator: value}}",
                location=where,
            )
        )
        return ()
    at = _locator(raw, where)
    out: list[tuple[str, str, Any]] = []
    for path, tests in raw.items():
        if not isinstance(path, str) or not (path == "trigger" or path.startswith("trigger.")):
            found.append(
                AttuneError(
                    f"{what}: criteria key {path!r} must be a path into the trigger instance "
                    "(trigger.payload.<key>, trigger.subject, ...)",
                    location=at(path),
                )
            )
            continue
        if not isinstance(tests, dict) or not tests:
            found.append(
                AttuneError(
                    f"{what}: criteria '{path}' must be a mapping of operator to value, "
                    f"e.g. {{equals: main}}",
                    location=at(path),
                )
            )
            continue
        t_at = _locator(tests, at(path))
        for op, pattern in tests.items():
            err = operator_error(op, plain(pattern))
            if err:
                found.append(AttuneError(f"{what}: criteria '{path}': {err}", location=t_at(op)))
                continue
            out.append((path, op, plain(pattern)))
    return tuple(out)


def operator_error(op: Any, pattern: Any) -> str | None:
    """Why `{op: pattern}` is not a valid criterion, or None."""
    if op not in OPERATORS:
        guess = closest(str(op), OPERATORS)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        return f"unknown operator {op!r}{hint}; one of {', '.join(OPERATORS)}"
    if op == "regex":
        if not isinstance(pattern, str):
            return f"regex must be a string, got {pattern!r}"
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"bad regex {pattern!r}: {exc}"
    if op in ("exists", "nexists") and pattern is not True:
        return f"'{op}' takes true, got {pattern!r}"
    if op in ("in", "nin") and not isinstance(pattern, list):
        return f"'{op}' takes a list, got {pattern!r}"
    if op in ("startswith", "endswith") and not isinstance(pattern, str):
        return f"'{op}' takes a string, got {pattern!r}"
    return None


def parse_sensor(
    data: Any, file: str, pack: str, pack_path: str, problems: list[AttuneError]
) -> SensorSpec | None:
    """One sensor document; None (with problems) when it cannot be used."""
    top = Location(file, 1, 1)
    if not isinstance(data, dict):
        problems.append(AttuneError("a sensor must be a mapping", location=top))
        return None
    found: list[AttuneError] = []
    at = _locator(data, top)
    for key in data:
        if key not in SENSOR_KEYS:
            found.append(AttuneError(unknown_key(key, SENSOR_KEYS, "sensor"), location=at(key)))
    stem = file.rsplit("/", 1)[-1].removesuffix(".yaml")
    name = data.get("name", stem)
    what = f"sensor '{pack}.{name}'"
    for key in ("entry_point", "class_name"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            found.append(AttuneError(f"{what} needs '{key}' (a non-empty string)", location=at(key)))
    entry = data.get("entry_point")
    if isinstance(entry, str) and entry and not entry.endswith(".py"):
        found.append(
            AttuneError(f"{what}: 'entry_point' must be a .py file in sensors/", location=at("entry_point"))
        )
    elif isinstance(entry, str) and entry:
        from pathlib import Path

        folder = Path(pack_path) / "sensors"
        target = (folder / entry).resolve()
        if not target.is_relative_to(folder.resolve()):
            found.append(
                AttuneError(f"{what}: entry point '{entry}' is outside {folder}", location=at("entry_point"))
            )
        elif not target.is_file():
            found.append(
                AttuneError(
                    f"{what}: entry point '{entry}' not found in {folder}", location=at("entry_point")
                )
            )
    interval = data.get("poll_interval", 60)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        found.append(
            AttuneError(
                f"{what}: 'poll_interval' must be a number of seconds above 0", location=at("poll_interval")
            )
        )
        interval = 60
    types: list[TriggerTypeSpec] = []
    raw_types = data.get("trigger_types")
    if not isinstance(raw_types, list) or not raw_types:
        found.append(
            AttuneError(
                f"{what} needs 'trigger_types': a list of {{name, description}}", location=at("trigger_types")
            )
        )
    else:
        for item in raw_types:
            item_at = location_of(item, at("trigger_types"))
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                found.append(AttuneError(f"{what}: each trigger type needs a 'name'", location=item_at))
                continue
            for key in item:
                if key not in TRIGGER_TYPE_KEYS:
                    found.append(
                        AttuneError(unknown_key(key, TRIGGER_TYPE_KEYS, "trigger type"), location=item_at)
                    )
            type_name = item["name"]
            ref = type_name if type_name.startswith(f"{pack}.") else f"{pack}.{type_name}"
            schema = item.get("payload_schema")
            types.append(
                TriggerTypeSpec(
                    ref,
                    str(item.get("description") or ""),
                    plain(schema) if isinstance(schema, dict) else None,
                )
            )
    problems.extend(found)
    if found:
        return None
    return SensorSpec(
        ref=f"{pack}.{name}",
        pack=pack,
        file=file,
        entry_point=str(entry),
        class_name=str(data["class_name"]),
        trigger_types=tuple(types),
        poll_interval=float(interval),
        enabled=data.get("enabled", True) is not False,
        description=str(data.get("description") or ""),
        pack_path=pack_path,
    )


def trigger_types(catalog: Catalog) -> dict[str, TriggerTypeSpec | None]:
    """Every trigger type a rule may name: the built-in ones (None) and those sensors emit."""
    known: dict[str, TriggerTypeSpec | None] = dict.fromkeys(BUILTIN_TRIGGERS)
    for pack in catalog.packs.values():
        for sensor in pack.sensors:
            for t in sensor.trigger_types:
                known[t.ref] = t
    return known


def validate_rules(catalog: Catalog, renderer: Renderer) -> list[AttuneError]:
    """Every rule of the catalog against its trigger types, actions and the template language."""
    known = trigger_types(catalog)
    problems: list[AttuneError] = []
    seen: dict[str, str] = {}
    for pack in catalog.packs.values():
        for rule in pack.rules:
            if rule.ref in seen:
                problems.append(
                    AttuneError(
                        f"duplicate rule '{rule.ref}' (also in {seen[rule.ref]})", location=rule.at("ref")
                    )
                )
            seen.setdefault(rule.ref, rule.file)
            problems.extend(validate_rule(rule, catalog, renderer, known))
    return problems


def validate_rule(
    rule: RuleSpec, catalog: Catalog, renderer: Renderer, known: dict[str, TriggerTypeSpec | None]
) -> list[AttuneError]:
    what = f"rule '{rule.ref}'"
    problems: list[AttuneError] = []
    if rule.trigger_type not in known:
        guess = closest(rule.trigger_type, known)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        problems.append(
            AttuneError(
                f"{what}: unknown trigger type '{rule.trigger_type}'{hint}", location=rule.at("trigger.type")
            )
        )
    elif rule.trigger_type not in BUILTIN_TRIGGERS and rule.trigger_parameters:
        problems.append(
            AttuneError(
                f"{what}: trigger type '{rule.trigger_type}' takes no parameters (use criteria)",
                location=rule.at("trigger.parameters"),
            )
        )
    action = catalog.actions.get(rule.action)
    if action is None:
        guess = closest(rule.action, catalog.actions)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        problems.append(
            AttuneError(f"{what}: unknown action '{rule.action}'{hint}", location=rule.at("action"))
        )
    declared = {p.name: p for p in action.parameters} if action is not None else {}
    for key, value in rule.parameters.items():
        where = rule.at(f"parameters.{key}")
        spec = declared.get(key)
        if action is not None and spec is None and not action.additional_parameters:
            guess = closest(key, declared)
            hint = f" (did you mean '{guess}'?)" if guess else ""
            problems.append(
                AttuneError(f"{what}: unknown parameter '{key}' of {action.ref}{hint}", location=where)
            )
        templates = list(_templates(value))
        for source in templates:
            err = renderer.check(source)
            if err is not None:
                problems.append(AttuneError(f"{what}: parameters.{key}: {err.message}", location=where))
                continue
            names = _free_names(renderer, source) - TEMPLATE_NAMES
            if names:
                problems.append(
                    AttuneError(
                        f"{what}: parameters.{key}: unknown name {', '.join(sorted(names))} "
                        "(a rule's templates see trigger.* and pack.config.*)",
                        location=where,
                    )
                )
        if spec is not None and not templates and not (value is None and not spec.required):
            err_text = check_value(spec, value)
            if err_text:
                problems.append(AttuneError(f"{what}: parameter '{key}' {err_text}", location=where))
    for spec in declared.values():
        if spec.required and not spec.has_default and spec.name not in rule.parameters:
            problems.append(
                AttuneError(
                    f"{what}: missing required parameter '{spec.name}' of {rule.action}",
                    location=rule.at("action"),
                )
            )
    return problems


def _templates(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _templates(v)
    elif isinstance(value, list):
        for v in value:
            yield from _templates(v)


def _free_names(renderer: Renderer, source: str) -> set[str]:
    from attune_actors.templates import rewrite_ternary

    try:
        ast = renderer.env.parse(rewrite_ternary(source))
    except Exception:
        return set()
    return set(meta.find_undeclared_variables(ast)) - set(renderer.env.globals)


def _locator(mapping: Any, default: Location) -> Any:
    def at(key: Any) -> Location:
        if isinstance(mapping, YMap):
            return mapping.loc(key) if key is not None else mapping.location
        return default

    return at
