"""Settings: one typed object, from defaults <- config file <- environment <- explicit overrides.

`config/attune.yaml` documents every key with its embedded default. Each key can be overridden by an
environment variable `ATTUNE_<SECTION>__<KEY>` (or `ATTUNE_<KEY>` at top level; lists are
`os.pathsep`-separated) and by CLI flags. Unknown keys are errors, wherever they come from.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attune_actors.errors import ConfigError
from attune_actors.spec.suggest import unknown_key
from attune_actors.spec.yamlsrc import load_yaml, plain

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


@dataclass(frozen=True)
class LimitSettings:
    """Bounds that keep one engine process healthy under load."""

    python_workers: int = 8  # threads for blocking (sync) Python actions
    max_inflight_runs: int = 10000  # in-process action runs at once; more wait their turn
    kill_grace: float = 5.0  # seconds between SIGTERM and SIGKILL for stopped commands
    event_buffer: int = 1000  # events buffered per subscriber before it gets a gap marker


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "%(asctime)s %(levelname)s %(name)s %(message)s"


@dataclass(frozen=True)
class Settings:
    """Everything an engine, worker or CLI command is configured by."""

    packs: tuple[str, ...] = ("packs",)
    data_dir: str = ".attune"
    store: str = "sqlite"  # memory | sqlite | nats
    transport: str = "inprocess"  # inprocess | nats
    secret_key: str | None = None  # Fernet key for KV secrets; default: <data_dir>/secret.key
    nats: NatsSettings = field(default_factory=NatsSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    def __post_init__(self) -> None:
        if self.store not in ("memory", "sqlite", "nats"):
            raise ConfigError(f"store must be memory, sqlite or nats, got {self.store!r}")
        if self.transport not in ("inprocess", "nats"):
            raise ConfigError(f"transport must be inprocess or nats, got {self.transport!r}")
        if self.limits.python_workers < 1 or self.limits.max_inflight_runs < 1:
            raise ConfigError("limits.python_workers and limits.max_inflight_runs must be at least 1")

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
        raise ConfigError(str(problems[0]))
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: the config file must be a mapping")
    return typing.cast(dict[str, Any], plain(value))


def _from_env(environ: typing.Mapping[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _EnvText(value)
    return result


class _EnvText(str):
    """A value that came from the environment: converted to the field's type when built."""


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
        raise ConfigError(f"{prefix.rstrip('.') or 'settings'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(unknown_key(f"{prefix}{key}", [f"{prefix}{f}" for f in fields], "settings"))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(typing.cast(type[Any], hint), value, f"{prefix}{key}.")
        else:
            kwargs[key] = _convert(hint, value, f"{prefix}{key}")
    return cls(**kwargs)


def _convert(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, _EnvText) and value == ""):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if isinstance(value, _EnvText):
            value = [p for p in value.split(os.pathsep) if p]
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"setting {name} must be a list, got {value!r}")
        return tuple(str(v) for v in value)
    try:
        if hint is bool and isinstance(value, _EnvText):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if hint in (int, float) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return hint(value)
        if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    except ValueError:
        pass
    if isinstance(value, hint):
        return value
    raise ConfigError(f"setting {name} must be {hint.__name__}, got {value!r}")


def configure_logging(settings: Settings) -> None:
    """Route our loggers through the standard `logging` module at the configured level."""
    level = logging.getLevelName(settings.logging.level.upper())
    if not isinstance(level, int):
        raise ConfigError(f"logging.level {settings.logging.level!r} is not a logging level")
    logging.basicConfig(level=level, format=settings.logging.format)
