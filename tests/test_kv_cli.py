"""`attune-actors kv`, run as a process (`python -m attune_actors.kv.command`) and in-process."""

from __future__ import annotations

import argparse
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from attune_actors.kv import KVStore, generate_key
from attune_actors.kv.command import register

SECRET = "cli-s3cr3t-value"


def kv(
    cwd: Path, *args: str, input: str | None = None, ok: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """Run `attune-actors kv ARGS...` in `cwd`; check the exit status when `ok` is not None."""
    result = subprocess.run(
        [sys.executable, "-m", "attune_actors.kv.command", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if ok is not None:
        assert result.returncode == ok, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_set_get_list_delete_round_trip(tmp_path: Path) -> None:
    assert kv(tmp_path, "set", "app.name", "shop").stdout == ""
    kv(tmp_path, "set", "app.replicas", "3", "--json")
    kv(tmp_path, "set", "app.config", '{"debug": false, "tags": ["a"]}', "--json")
    kv(tmp_path, "set", "app.version", "3")  # without --json: the string "3"

    assert kv(tmp_path, "get", "app.name").stdout == "shop\n"
    assert kv(tmp_path, "get", "app.name", "--json").stdout == '"shop"\n'
    assert kv(tmp_path, "get", "app.replicas").stdout == "3\n"
    assert kv(tmp_path, "get", "app.version", "--json").stdout == '"3"\n'
    assert json.loads(kv(tmp_path, "get", "app.config").stdout) == {"debug": False, "tags": ["a"]}

    assert kv(tmp_path, "list", "--prefix", "app.r").stdout == "app.replicas\t3\n"
    assert kv(tmp_path, "list").stdout.splitlines() == [
        'app.config\t{"debug": false, "tags": ["a"]}',
        'app.name\t"shop"',
        "app.replicas\t3",
        'app.version\t"3"',
    ]

    kv(tmp_path, "delete", "app.name")
    missing = kv(tmp_path, "get", "app.name", ok=1)
    assert missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        f"error: no key 'app.name' in the datastore {Path('.attune', 'attune.db')}"
    ]
    assert "app.name" in kv(tmp_path, "delete", "app.name", ok=1).stderr

    with KVStore(tmp_path / ".attune" / "attune.db") as store:  # the CLI's data dir is the engine's
        assert store.get("app.replicas") == 3


def test_secrets(tmp_path: Path) -> None:
    created = kv(tmp_path, "set", "api.token", SECRET, "--secret")
    assert "generated a new secret key" in created.stderr
    key_file = tmp_path / ".attune" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    assert kv(tmp_path, "list").stdout == "api.token\t***\n"
    shown = kv(tmp_path, "get", "api.token")
    assert shown.stdout == "***\n"
    assert "--secret" in shown.stderr
    assert kv(tmp_path, "get", "api.token", "--secret").stdout == f"{SECRET}\n"
    listed = json.loads(kv(tmp_path, "list", "--json").stdout)
    assert [(e["key"], e["value"], e["secret"]) for e in listed] == [("api.token", "***", True)]
    assert SECRET.encode() not in (tmp_path / ".attune" / "attune.db").read_bytes()

    kv(tmp_path, "set", "plain", "value")
    assert "'plain' is not a secret" in kv(tmp_path, "get", "plain", "--secret", ok=1).stderr


def test_value_from_stdin_keeps_it_off_the_command_line(tmp_path: Path) -> None:
    kv(tmp_path, "set", "db.password", "--secret", input=f"{SECRET}\n")
    assert kv(tmp_path, "get", "db.password", "--secret").stdout == f"{SECRET}\n"
    kv(tmp_path, "set", "doc", "--json", input='{"multi":\n "line"}\n')
    assert kv(tmp_path, "get", "doc").stdout == '{"multi": "line"}\n'


def test_data_dir_and_key_file_options_on_either_side(tmp_path: Path) -> None:
    kv(tmp_path, "--data-dir", "one", "set", "k", "first")
    kv(tmp_path, "set", "k", "second", "--data-dir", "two")
    assert kv(tmp_path, "get", "k", "--data-dir", "one").stdout == "first\n"
    assert kv(tmp_path, "--data-dir", "two", "get", "k").stdout == "second\n"

    kv(tmp_path, "--key-file", "my.key", "set", "s", SECRET, "--secret")
    assert (tmp_path / "my.key").exists()
    assert not (tmp_path / ".attune" / "secret.key").exists()
    assert kv(tmp_path, "get", "s", "--secret", "--key-file", "my.key").stdout == f"{SECRET}\n"

    (tmp_path / "other.key").write_bytes(generate_key())
    (tmp_path / "other.key").chmod(0o640)
    wrong = kv(tmp_path, "get", "s", "--secret", "--key-file", "other.key", ok=2)
    assert wrong.stderr.strip().splitlines() == [
        "secret key file other.key is readable by other users (mode 640); chmod 600 it",
        "error: cannot decrypt secret 's': the secret key does not match the one it was written"
        " with (using the secret key file other.key)",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set", "bad key", "v"), "invalid key 'bad key'"),
        (("get", "bad key"), "invalid key 'bad key'"),
        (("set", "k", "{oops", "--json"), "VALUE is not valid JSON"),
        (("set", "k", "NaN", "--json"), "not a JSON value"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    kv(tmp_path, "set", "existing", "1")
    result = kv(tmp_path, *args, ok=2)
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert message in line


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert "COMMAND" in kv(tmp_path, ok=2).stderr
    assert "KEY" in kv(tmp_path, "get", ok=2).stderr


def test_an_unusable_data_dir_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = kv(tmp_path, "--data-dir", "file", "set", "k", "v", ok=2)
    assert result.stderr.splitlines() == ["error: cannot use the data dir file: it is not a folder"]


def test_reading_does_not_create_a_data_dir(tmp_path: Path) -> None:
    assert kv(tmp_path, "list").stdout == ""
    assert "no key 'k'" in kv(tmp_path, "get", "k", ok=1).stderr
    assert "no key 'k'" in kv(tmp_path, "delete", "k", ok=1).stderr
    assert not (tmp_path / ".attune").exists()


def test_register_into_a_parent_parser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """How `attune-actors` itself uses the module: `register` on its own sub-parsers."""
    parser = argparse.ArgumentParser(prog="attune-actors")
    register(parser.add_subparsers(dest="command", required=True))
    data_dir = str(tmp_path / "data")

    def run(*argv: str) -> int:
        args = parser.parse_args(["kv", "--data-dir", data_dir, *argv])
        status: int = args.func(args)
        return status

    assert run("set", "n", "[1, 2]", "--json") == 0
    assert run("get", "n") == 0
    assert run("get", "missing") == 1
    assert run("list") == 0
    out, err = capsys.readouterr()
    assert out == "[1, 2]\nn\t[1, 2]\n"
    assert err == f"error: no key 'missing' in the datastore {Path(data_dir, 'attune.db')}\n"
