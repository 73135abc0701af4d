"""The `attune-actors kv` command line: set, get, delete and list keys of a data dir's datastore.

    attune-actors kv [--data-dir DIR] [--key-file FILE] set KEY [VALUE] [--secret] [--json]
    attune-actors kv get KEY [--secret] [--json]
    attune-actors kv delete KEY
    attune-actors kv list [--prefix P] [--json]

`set` without VALUE reads it from standard input (without echo on a terminal), which keeps secrets
out of shell history and process lists. `get` prints a string as is and any other value as JSON
(`--json`: always JSON); a secret prints as `***` unless `--secret` asks for it decrypted. `list`
prints `KEY<TAB>VALUE` lines, VALUE as JSON or `***` for a secret. The common options may also
follow the sub-command.

Exit status: 0 done, 1 no such key (or `get --secret` of a plain value), 2 bad input or unusable
data dir, with one line on stderr and no traceback. `main(argv)` runs the `kv` command alone, for
`python -m attune_actors.kv.command set KEY VALUE ...`.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attune_actors.errors import AttuneError, NotFoundError, ParameterError
from attune_actors.kv.store import KVStore

__all__ = ["DB_FILE_NAME", "DEFAULT_DATA_DIR", "main", "register"]

DB_FILE_NAME = "attune.db"
DEFAULT_DATA_DIR = Path(".attune")

_Command = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `kv` command and its sub-commands; each sets `func(args) -> exit status`."""
    kv = subparsers.add_parser(
        "kv",
        help="read and write the key-value datastore",
        description="Read and write the key-value datastore; secrets are encrypted at rest.",
    )
    _add_common_options(kv, DEFAULT_DATA_DIR, None)
    # The common options are also accepted after the sub-command. There they have no default, so
    # a sub-command only overrides what it was given. (A separate parent parser: argparse shares
    # a parent's action objects, and their defaults, with every child.)
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, argparse.SUPPRESS, argparse.SUPPRESS)
    commands = kv.add_subparsers(dest="kv_command", metavar="COMMAND", required=True)

    p = commands.add_parser("set", parents=[common], help="set a key")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE", nargs="?", help="the value (default: read stdin)")
    p.add_argument("--secret", action="store_true", help="store the value encrypted")
    p.add_argument("--json", action="store_true", help="VALUE is JSON (default: a string)")
    p.set_defaults(func=_set)

    p = commands.add_parser("get", parents=[common], help="print the value of a key")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--secret", action="store_true", help="decrypt and print a secret")
    p.add_argument("--json", action="store_true", help="print the value as JSON, strings too")
    p.set_defaults(func=_get)

    p = commands.add_parser("delete", parents=[common], help="delete a key")
    p.add_argument("key", metavar="KEY")
    p.set_defaults(func=_delete)

    p = commands.add_parser("list", parents=[common], help="list keys (secrets shown as ***)")
    p.add_argument("--prefix", metavar="P", help="only keys starting with P")
    p.add_argument("--json", action="store_true", help="print one JSON array of entries")
    p.set_defaults(func=_list)


def _add_common_options(parser: argparse.ArgumentParser, data_dir: Any, key_file: Any) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=data_dir,
        metavar="DIR",
        help=f"data directory holding {DB_FILE_NAME} (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=key_file,
        metavar="FILE",
        help="secret key file (default: DIR/secret.key, created with mode 0600 on first need)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run `attune-actors kv` with `argv` (the arguments after `kv`); the exit status."""
    parser = argparse.ArgumentParser(prog="attune-actors")
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(["kv", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.func(args)
    return status


def _reports_errors(command: _Command) -> _Command:
    """Turn our errors into one line on stderr and exit status 1 (no such key) or 2."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except AttuneError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1 if isinstance(e, NotFoundError) else 2

    return run


def _store(args: argparse.Namespace) -> KVStore:
    from attune_actors.store.datadir import prepare_data_dir

    return KVStore(prepare_data_dir(args.data_dir) / DB_FILE_NAME, key_file=args.key_file)


def _require_store(args: argparse.Namespace) -> None:
    """Refuse to read a data dir without a datastore, rather than create one as a side effect."""
    if not (args.data_dir / DB_FILE_NAME).exists():
        raise NotFoundError(f"no key {args.key!r}: no datastore in {args.data_dir}")


@_reports_errors
def _set(args: argparse.Namespace) -> int:
    value: Any = args.value
    if value is None:
        if sys.stdin.isatty():
            value = getpass.getpass(f"value of {args.key}: ")
        else:
            value = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if args.json:
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ParameterError(
                f"VALUE is not valid JSON ({e}); drop --json to store a string"
            ) from None
    with _store(args) as store:
        store.set(args.key, value, secret=args.secret)
    return 0


@_reports_errors
def _get(args: argparse.Namespace) -> int:
    _require_store(args)
    with _store(args) as store:
        if args.secret:
            value = store.get_secret(args.key)
        else:
            entry = store.entry(args.key)
            if entry is None:
                raise NotFoundError(f"no key {args.key!r} in the datastore {store.path}")
            if entry.secret:
                print(f"note: {args.key!r} is a secret; add --secret to print it", file=sys.stderr)
            value = entry.value
    print(
        json.dumps(value, ensure_ascii=False) if args.json or not isinstance(value, str) else value
    )
    return 0


@_reports_errors
def _delete(args: argparse.Namespace) -> int:
    _require_store(args)
    with _store(args) as store:
        if not store.delete(args.key):
            raise NotFoundError(f"no key {args.key!r} in the datastore {store.path}")
    return 0


@_reports_errors
def _list(args: argparse.Namespace) -> int:
    if (args.data_dir / DB_FILE_NAME).exists():
        with _store(args) as store:
            entries = store.list(args.prefix)
    else:
        entries = []
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], ensure_ascii=False, indent=2))
        return 0
    for e in entries:
        print(f"{e.key}\t{e.value if e.secret else json.dumps(e.value, ensure_ascii=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
