"""Settings: defaults <- config file <- environment <- overrides; unknown keys and wrong types refused."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from attune_actors.config import LimitSettings, NatsSettings, Settings, configure_logging, load_settings
from attune_actors.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.packs == ("packs",)
    assert settings.data_dir == ".attune"
    assert settings.data_path == Path(".attune")
    assert settings.store == "sqlite"
    assert settings.transport == "inprocess"
    assert settings.secret_key is None
    assert settings.limits == LimitSettings()
    assert settings.nats == NatsSettings()


def test_the_documented_config_file_holds_the_defaults() -> None:
    assert load_settings(REPO / "config" / "attune.yaml", environ={}) == Settings()


def test_config_file(tmp_path: Path) -> None:
    file = write(
        tmp_path / "attune.yaml",
        "packs: [a, b]\ndata_dir: /var/lib/attune\nstore: memory\nlimits:\n  python_workers: 2\n"
        "  kill_grace: 0.5\nnats:\n  url: nats://elsewhere:4222\n  token: secret\n",
    )
    settings = load_settings(file, environ={})
    assert settings.packs == ("a", "b")
    assert settings.data_dir == "/var/lib/attune"
    assert settings.store == "memory"
    assert settings.limits.python_workers == 2
    assert settings.limits.kill_grace == 0.5
    assert (
        settings.limits.max_inflight_runs == LimitSettings().max_inflight_runs
    )  # untouched keys keep defaults
    assert settings.nats.url == "nats://elsewhere:4222"
    assert settings.nats.token == "secret"
    assert settings.nats.subject_prefix == "attune"


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path / "empty.yaml", "# nothing\n"), environ={}) == Settings()


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    file = write(tmp_path / "attune.yaml", "data_dir: from-file\n")
    assert load_settings(environ={"ATTUNE_CONFIG": str(file)}).data_dir == "from-file"


def test_environment(tmp_path: Path) -> None:
    environ = {
        "ATTUNE_DATA_DIR": "/data",
        "ATTUNE_LIMITS__PYTHON_WORKERS": "16",
        "ATTUNE_LIMITS__KILL_GRACE": "1.5",
        "ATTUNE_PACKS": os.pathsep.join(["packs", "/opt/packs", ""]),
        "ATTUNE_NATS__USER": "me",
        "ATTUNE_SECRET_KEY": "",  # an empty optional value means "not set"
        "OTHER_VARIABLE": "ignored",
    }
    settings = load_settings(environ=environ)
    assert settings.data_dir == "/data"
    assert settings.limits.python_workers == 16
    assert settings.limits.kill_grace == 1.5
    assert settings.packs == ("packs", "/opt/packs")
    assert settings.nats.user == "me"
    assert settings.secret_key is None


def test_precedence_file_then_environment_then_overrides(tmp_path: Path) -> None:
    file = write(tmp_path / "attune.yaml", "data_dir: file\nstore: memory\nlimits: {python_workers: 2}\n")
    environ = {"ATTUNE_DATA_DIR": "env", "ATTUNE_LIMITS__PYTHON_WORKERS": "3"}
    settings = load_settings(file, environ=environ, overrides={"data_dir": "flag", "packs": None})
    assert settings.data_dir == "flag"
    assert settings.limits.python_workers == 3
    assert settings.store == "memory"
    assert settings.packs == ("packs",)  # None in overrides means "flag not given"


def test_overrides_nested_and_none_dropped() -> None:
    settings = load_settings(
        environ={},
        overrides={"limits": {"python_workers": 4, "kill_grace": None}, "logging": {"level": None}},
    )
    assert settings.limits.python_workers == 4
    assert settings.limits.kill_grace == LimitSettings().kill_grace
    assert settings.logging.level == "INFO"


def test_overrides_accept_a_settings_dict_round_trip() -> None:
    import dataclasses

    original = load_settings(environ={}, overrides={"packs": ["x"], "limits": {"event_buffer": 5}})
    again = load_settings(environ={}, overrides=dataclasses.asdict(original))
    assert again == original


# -- refused -------------------------------------------------------------------------------------


def test_unknown_key_in_the_file_is_located_with_a_suggestion(tmp_path: Path) -> None:
    file = write(tmp_path / "attune.yaml", "limits:\n  pyhton_workers: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(file, environ={})
    assert str(caught.value) == (
        f"{file}:2:3: unknown key 'limits.pyhton_workers' in settings (did you mean 'limits.python_workers'?)"
    )


def test_unknown_top_level_key_in_the_file(tmp_path: Path) -> None:
    file = write(tmp_path / "attune.yaml", "store: memory\ndatadir: x\n")
    with pytest.raises(
        ConfigError, match=r":2:1: unknown key 'datadir' in settings \(did you mean 'data_dir'\?\)"
    ):
        load_settings(file, environ={})


def test_unknown_key_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"ATTUNE_LIMITS__PYHTON_WORKERS": "3"})
    assert str(caught.value) == (
        "unknown key 'limits.pyhton_workers' in settings (did you mean 'limits.python_workers'?) "
        "(from environment variable ATTUNE_LIMITS__PYHTON_WORKERS)"
    )
    with pytest.raises(ConfigError, match=r"unknown key 'dta_dir' .*did you mean 'data_dir'.*ATTUNE_DTA_DIR"):
        load_settings(environ={"ATTUNE_DTA_DIR": "x"})


def test_unknown_key_in_overrides() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key 'nats.ulr' in settings \(did you mean 'nats.url'\?\)"
    ):
        load_settings(environ={}, overrides={"nats": {"ulr": "x"}})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "limits:\n  python_workers: many\n",
            ":2:3: setting limits.python_workers must be an integer, got 'many'",
        ),
        (
            "limits:\n  python_workers: 1.5\n",
            ":2:3: setting limits.python_workers must be an integer, got 1.5",
        ),
        (
            "limits:\n  python_workers: true\n",
            ":2:3: setting limits.python_workers must be an integer, got True",
        ),
        ("limits:\n  kill_grace: soon\n", ":2:3: setting limits.kill_grace must be a number, got 'soon'"),
        ("packs: packs\n", ":1:1: setting packs must be a list, got 'packs'"),
        ("packs: [{a: 1}]\n", ":1:1: setting packs must be a list of strings, got [{'a': 1}]"),
        ("data_dir: [x]\n", ":1:1: setting data_dir must be a string, got ['x']"),
        ("data_dir:\n", ":1:1: setting data_dir must be a string, got None"),
        ("limits: 4\n", ":1:1: setting limits must be a mapping (a section), got 4"),
        ("nats:\n  url: {a: 1}\n", ":2:3: setting nats.url must be a string, got {'a': 1}"),
    ],
)
def test_wrong_types_in_the_file(tmp_path: Path, text: str, message: str) -> None:
    file = write(tmp_path / "attune.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(file, environ={})
    assert str(caught.value) == f"{file}{message}"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "ATTUNE_LIMITS__PYTHON_WORKERS",
            "lots",
            "setting limits.python_workers must be an integer, got 'lots'",
        ),
        ("ATTUNE_LIMITS__KILL_GRACE", "nan", "setting limits.kill_grace must be a number, got 'nan'"),
        ("ATTUNE_NATS__CONNECT_TIMEOUT", "", "setting nats.connect_timeout must be a number, got ''"),
        ("ATTUNE_LIMITS", "4", "setting limits must be a mapping (a section), got '4'"),
    ],
)
def test_wrong_types_in_the_environment(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={name: value})
    assert str(caught.value) == f"{message} (from environment variable {name})"


def test_conflicting_environment_variables() -> None:
    with pytest.raises(ConfigError, match="ATTUNE_NATS__URL conflicts with ATTUNE_NATS"):
        load_settings(environ={"ATTUNE_NATS": "x", "ATTUNE_NATS__URL": "nats://y"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"store": "redis"}, "store must be memory, sqlite or nats, got 'redis'"),
        ({"transport": "carrier-pigeon"}, "transport must be inprocess or nats, got 'carrier-pigeon'"),
        ({"limits": {"python_workers": 0}}, "setting limits.python_workers must be at least 1, got 0"),
        (
            {"limits": {"max_inflight_runs": -1}},
            "setting limits.max_inflight_runs must be at least 1, got -1",
        ),
        ({"limits": {"event_buffer": 0}}, "setting limits.event_buffer must be at least 1, got 0"),
        ({"limits": {"kill_grace": -1}}, "setting limits.kill_grace must be zero or more, got -1.0"),
        ({"nats": {"connect_timeout": 0}}, "setting nats.connect_timeout must be more than 0, got 0.0"),
        (
            {"logging": {"level": "LOUD"}},
            "setting logging.level must be DEBUG, INFO, WARNING, ERROR or CRITICAL",
        ),
    ],
)
def test_values_out_of_range(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides=overrides)
    assert str(caught.value).startswith(message)


def test_missing_or_broken_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml: No such file or directory"):
        load_settings(tmp_path / "nope.yaml", environ={})
    broken = write(tmp_path / "broken.yaml", "limits: [1\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:2:1: invalid YAML"):
        load_settings(broken, environ={})
    listed = write(tmp_path / "list.yaml", "- 1\n")
    with pytest.raises(ConfigError, match=r"list\.yaml:1:1: the config file must be a mapping"):
        load_settings(listed, environ={})


def test_configure_logging_sets_the_level() -> None:
    root = logging.getLogger()
    before = root.level
    try:
        configure_logging(load_settings(environ={}, overrides={"logging": {"level": "warning"}}))
        # Even with handlers already installed (pytest's), where basicConfig alone does nothing.
        assert root.handlers
        assert root.level == logging.WARNING
    finally:
        root.setLevel(before)
