"""Settings: one typed object, from defaults <- config file <- environment <- explicit overrides.

`config/attune.yaml` documents every key with its embedded default. Each key can be overridden by an
environment variable `ATTUNE_<SECTION>__<KEY>` (or `ATTUNE_<KEY>` at top level; lists are
`os.pathsep`-separated) and by CLI flags. Unknown keys are errors, wherever they come from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attune_actors import logctx
from attune_actors.errors import ConfigError, Location
from attune_actors.observability.jsonlog import JSON_FORMAT, JsonFormatter
from attune_actors.spec.suggest import unknown_key
from attune_actors.spec.yamlsrc import YMap, load_yaml

ENV_PREFIX = "ATTUNE_"


@dataclass(frozen=True)
class NatsSettings:
    """How the distributed runtime reaches NATS (used by `serve` and `worker`)."""

    url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = "attune"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: str | None = None
    creds_file: str | None = None
    connect_timeout: float = 5.0
    # Replies (request/reply, JetStream deliveries and acks) arrive under this prefix; give each
    # role its own and allow it only its own in the subject permissions (docs/distributed.md).
    inbox_prefix: str = "_INBOX"
    # 32 bytes (base64 or hex) shared by the engine and its workers: run parameters and results
    # cross NATS encrypted with it. Or a file holding it (`payload_key_file`).
    payload_key: str | None = None
    payload_key_file: str | None = None


@dataclass(frozen=True)
class ClusterSettings:
    """How `serve --store nats` engines share a deployment (docs/distributed.md, "Several engines")."""

    # `serve --store nats` joins the cluster of engines on its subject prefix; off (`--no-cluster`),
    # it holds the exclusive engine lease instead (one engine per deployment), as `--store sqlite` does.
    enabled: bool = True
    # The execution space is split into this many partitions, each owned by one live engine at a
    # time. Every engine of a deployment must use the same number (the first one records it).
    partitions: int = 16
    # Seconds a dead engine keeps its partitions: its member entry and leases expire this soon.
    lease_ttl: float = 6.0


@dataclass(frozen=True)
class LimitSettings:
    """Bounds that keep one engine process healthy under load."""

    python_workers: int = 8  # processes running Python actions
    max_inflight_runs: int = 10000  # in-process action runs at once; more wait their turn
    kill_grace: float = 5.0  # seconds between SIGTERM and SIGKILL for stopped commands
    event_buffer: int = 1000  # events buffered per subscriber before it gets a gap marker
    # -- what one request, document or template may cost (SPEC 12); the error names the setting --
    request_bytes: int = 1024 * 1024  # one API request body (NATS or HTTP); 413 before any work
    yaml_bytes: int = 1024 * 1024  # one YAML document: a workflow file or a put workflow
    yaml_values: int = 100_000  # values in one YAML document once its aliases are expanded
    template_loop_steps: int = 100_000  # `{% for %}` iterations in one render, all loops together
    template_output_bytes: int = 1024 * 1024  # characters one render (or one value it builds) may hold
    recovery_stall: float = 10.0  # seconds resuming one execution may take before it counts as stuck
    # -- runners: what one action run may take (runners.RunnerLimits reads these) --
    max_result_bytes: int = 1024 * 1024  # a run's result as JSON; larger fails the run
    max_output_bytes: int = 256 * 1024  # kept of each captured output stream; the rest dropped
    http_max_seconds: float = 300.0  # largest total `timeout` of a core.http request
    http_max_body_bytes: int = 1024 * 1024  # a longer core.http response body fails the run
    # -- per execution (SPEC 12): past these, the execution fails with an error naming the limit --
    max_task_runs: int = 10000  # task runs of one execution (a cycle with no exit stops here)
    max_items: int = 100000  # items of one with_items task run


ROLES = ("viewer", "operator", "admin")  # each may do what the one before may, and more


@dataclass(frozen=True)
class HttpToken:
    """Who presents a token: the identity (a login) and its role, one of ROLES."""

    identity: str = ""
    role: str = "viewer"


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP API (`serve --http`). Without tokens it listens on loopback addresses only."""

    # sha256 hex digest of a bearer token -> who presents it (the token itself is never stored)
    tokens: dict[str, HttpToken] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    # a `logging` format string, or `json`: one JSON object per line (observability/jsonlog.py)
    format: str = "%(asctime)s %(levelname)s %(name)s [%(execution_id)s %(task)s] %(message)s"


@dataclass(frozen=True)
class Settings:
    """Everything an engine, worker or CLI command is configured by."""

    packs: tuple[str, ...] = ("packs",)
    data_dir: str = ".attune"
    store: str = "sqlite"  # memory | sqlite | nats
    transport: str = "inprocess"  # inprocess | nats
    secret_key: str | None = None  # Fernet key for KV secrets; default: <data_dir>/secret.key
    nats: NatsSettings = field(default_factory=NatsSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    def __post_init__(self) -> None:
        if self.store not in ("memory", "sqlite", "nats"):
            raise ConfigError(f"store must be memory, sqlite or nats, got {self.store!r}")
        if not 1 <= self.cluster.partitions <= 1024:
            raise ConfigError(f"cluster.partitions must be 1 to 1024, got {self.cluster.partitions}")
        if not self.cluster.lease_ttl > 0:
            raise ConfigError(f"cluster.lease_ttl must be more than 0, got {self.cluster.lease_ttl}")
        if self.transport not in ("inprocess", "nats"):
            raise ConfigError(f"transport must be inprocess or nats, got {self.transport!r}")
        for name in (
            "python_workers",
            "max_inflight_runs",
            "event_buffer",
            "request_bytes",
            "max_result_bytes",
            "max_output_bytes",
            "http_max_body_bytes",
            "yaml_bytes",
            "yaml_values",
            "template_loop_steps",
            "template_output_bytes",
            "max_task_runs",
            "max_items",
        ):
            if getattr(self.limits, name) < 1:
                raise ConfigError(
                    f"setting limits.{name} must be at least 1, got {getattr(self.limits, name)}"
                )
        if not self.limits.recovery_stall > 0:
            raise ConfigError(
                f"setting limits.recovery_stall must be more than 0, got {self.limits.recovery_stall}"
            )
        if not self.limits.kill_grace >= 0:
            raise ConfigError(f"setting limits.kill_grace must be zero or more, got {self.limits.kill_grace}")
        if not self.limits.http_max_seconds > 0:
            raise ConfigError(
                f"setting limits.http_max_seconds must be more than 0, got {self.limits.http_max_seconds}"
            )
        if not self.nats.connect_timeout > 0:
            raise ConfigError(
                f"setting nats.connect_timeout must be more than 0, got {self.nats.connect_timeout}"
            )
        for digest, token in self.http.tokens.items():
            where = f"setting http.tokens.{digest[:12]}"
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigError(
                    f"{where}: a key must be the sha256 hex digest of a token (64 lowercase hex "
                    "characters), never the token itself"
                )
            if not token.identity:
                raise ConfigError(f"{where}.identity must name who presents the token")
            if token.role not in ROLES:
                raise ConfigError(f"{where}.role must be {', '.join(ROLES)}, got {token.role!r}")
        if not isinstance(logging.getLevelName(self.logging.level.upper()), int):
            raise ConfigError(
                "setting logging.level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                f"got {self.logging.level!r}"
            )

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


def load_settings(
    config_file: str | Path | None = None,
    *,
    environ: typing.Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Build Settings: defaults, then `config_file` (or $ATTUNE_CONFIG), then environment, then overrides.

    `overrides` uses the same nested shape as the file (`{"nats": {"url": ...}}`); keys whose value
    is None are ignored, so CLI flags that were not given can be passed through as they are.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    path = config_file or environ.get(f"{ENV_PREFIX}CONFIG")
    if path:
        merged = _read_file(Path(path))
    _merge(merged, _from_env(environ))
    _merge(merged, _drop_none(overrides or {}))
    settings: Settings = _build(Settings, merged, "")
    return settings


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    value, problems = load_yaml(text, str(path))
    if problems:
        raise ConfigError(problems[0].message, location=problems[0].location)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("the config file must be a mapping", location=Location(str(path), 1, 1))
    return typing.cast(dict[str, Any], value)  # a YMap: errors point at the key in the file


def _from_env(environ: typing.Mapping[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with {node.var}")
        if isinstance(node.get(path[-1]), dict):
            raise ConfigError(f"environment variable {name} names a section, not a setting")
        node[path[-1]] = _EnvText(value, name)
    return result


class _EnvText(str):
    """A value that came from the environment: converted to the field's type when built."""

    var: str

    def __new__(cls, value: str, var: str) -> _EnvText:
        text = super().__new__(cls, value)
        text.var = var
        return text


def _env_var(value: Any) -> str | None:
    """The environment variable a value (or the first value inside it) came from."""
    if isinstance(value, _EnvText):
        return value.var
    if isinstance(value, dict):
        return next((v for v in map(_env_var, value.values()) if v is not None), None)
    return None


def _source(value: Any) -> str:
    var = _env_var(value)
    return f" (from environment variable {var})" if var is not None else ""


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None}


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _build(cls: type[Any], data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        name = prefix.rstrip(".") or "settings"
        raise ConfigError(f"setting {name} must be a mapping (a section), got {data!r}{_source(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        # A key read from the config file is reported where it was written.
        where = data.loc(key) if isinstance(data, YMap) and _env_var(value) is None else None
        if key not in fields:
            message = unknown_key(f"{prefix}{key}", [f"{prefix}{f}" for f in fields], "settings")
            raise ConfigError(message + _source(value), location=where)
        hint = hints[key]
        try:
            if dataclasses.is_dataclass(hint):
                kwargs[key] = _build(typing.cast(type[Any], hint), value, f"{prefix}{key}.")
            else:
                kwargs[key] = _convert(hint, value, f"{prefix}{key}")
        except ConfigError as exc:
            if exc.location is None and where is not None:
                raise ConfigError(exc.message, location=where) from None
            raise
    return cls(**kwargs)


def _convert(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, _EnvText) and value == ""):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is dict:
        return _convert_mapping(args[1], value, name)
    if origin is tuple:
        if isinstance(value, _EnvText):
            value = [p for p in value.split(os.pathsep) if p]
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"setting {name} must be a list, got {value!r}{_source(value)}")
        if not all(isinstance(v, (str, Path)) for v in value):
            raise ConfigError(f"setting {name} must be a list of strings, got {value!r}")
        return tuple(str(v) for v in value)
    try:
        if hint is bool and isinstance(value, _EnvText):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return lowered in ("1", "true", "yes", "on")
        elif hint is int and isinstance(value, str):
            return int(value.strip())
        elif hint is float and isinstance(value, str):
            number = float(value.strip())
            if number == number:  # not NaN
                return number
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        elif hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    except ValueError:
        pass
    if isinstance(value, hint) and not (isinstance(value, bool) and hint is not bool):
        return value
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, hint.__name__
    )
    raise ConfigError(f"setting {name} must be {kind}, got {value!r}{_source(value)}")


def _convert_mapping(item: Any, value: Any, name: str) -> dict[str, Any]:
    """A mapping setting (keys are names, values built as `item`); from the environment, JSON text."""
    if isinstance(value, _EnvText):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(f"setting {name} must be a JSON object{_source(value)}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"setting {name} must be a mapping, got {value!r}{_source(value)}")
    if dataclasses.is_dataclass(item):
        return {str(k): _build(typing.cast(type[Any], item), v, f"{name}.{k}.") for k, v in value.items()}
    return {str(k): _convert(item, v, f"{name}.{k}") for k, v in value.items()}


def configure_logging(settings: Settings) -> None:
    """Route our loggers through the standard `logging` module at the configured level."""
    level = logging.getLevelName(settings.logging.level.upper())
    if not isinstance(level, int):
        raise ConfigError(f"logging.level {settings.logging.level!r} is not a logging level")
    json_lines = settings.logging.format == JSON_FORMAT
    line_format = logging.BASIC_FORMAT if json_lines else settings.logging.format
    logging.basicConfig(level=level, format=line_format, stream=sys.stderr)
    # basicConfig does nothing when the root logger already has handlers; the level still applies.
    root = logging.getLogger()
    root.setLevel(level)
    # Records name the execution and task they are about (see attune_actors.logctx).
    for handler in root.handlers:
        logctx.install(handler)
        if json_lines:  # `logging.format: json`: one JSON object per line
            handler.setFormatter(JsonFormatter())
