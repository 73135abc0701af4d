"""`attune-actors`: run workflows and actions, inspect and control executions, answer inquiries,
list what packs define, validate them, manage the KV datastore, and run engines (`serve`),
workers (`worker`) and show a cluster of engines (`cluster`).

Exit status: 0 succeeded, 1 the execution failed, timed out or was canceled (or following it
stopped: `--timeout`, end of input), 2 a user error (one line on stderr, never a traceback),
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys

from attune_actors import __version__
from attune_actors.cli import catalog, enforcements, executions, inquiries, run, testing
from attune_actors.cli.catalog import located, validate_paths
from attune_actors.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, short
from attune_actors.errors import AttuneError, ValidationError

__all__ = ["located", "main", "validate_paths"]

_located = located  # the name tests and tools used before the CLI became a package


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            parser.print_help(sys.stderr)
            return EXIT_BAD_INPUT
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except ValidationError as exc:
        for err in exc.errors:
            print(located(err), file=sys.stderr)
        return EXIT_BAD_INPUT
    except run.Detached as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except AttuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        left = run.following[0] if run.following else None
        print("interrupted" + (f": execution {left} left unfinished; `attune-actors executions resume "
                               f"{short(left)}` continues it, `executions cancel {short(left)}` ends it"
                               if left else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read our output stopped (`| head`): nothing more can be written there.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        print("error: the output was closed before everything was written", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error:{where} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attune-actors", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"attune-actors {__version__}")
    parser.add_argument("--config", help="settings file (default: $ATTUNE_CONFIG, else built-in defaults)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    run.register(sub)
    executions.register(sub)
    inquiries.register(sub)
    catalog.register(sub)
    enforcements.register(sub)
    testing.register(sub)
    from attune_actors.kv import command as kv_command
    from attune_actors.nats import cluster_cli, serve, worker  # they import nats lazily

    kv_command.register(sub)
    serve.register(sub)
    worker.register(sub)
    cluster_cli.register(sub)
    return parser
