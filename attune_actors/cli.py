"""`attune-actors`: run, re-run and validate workflows, read history, manage the KV datastore, and run
engines (`serve`) and workers (`worker`) on NATS.

Every user error ends as one line on stderr and exit status 2 (no traceback); a workflow that ran
but did not succeed exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from attune_actors.config import configure_logging, load_settings
from attune_actors.errors import AttuneError, Location, ParameterError, ValidationError
from attune_actors.kv import command as kv_command
from attune_actors.spec.yamlsrc import load_yaml, plain

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code: int = args.func(args)
    except ValidationError as exc:
        for err in exc.errors:
            print(_located(err), file=sys.stderr)
        return EXIT_BAD_INPUT
    except AttuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attune-actors", description=__doc__)
    parser.add_argument("--config", help="settings file (default: $ATTUNE_CONFIG, else built-in defaults)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(title="commands")

    run = sub.add_parser("run", help="run one workflow in an embedded engine and wait for it")
    run.add_argument("ref", help="workflow ref, e.g. examples.deploy")
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter, converted to its declared type (JSON for arrays/objects)",
    )
    run.add_argument("--params-file", help="JSON or YAML file of parameters (-p wins)")
    run.add_argument("--packs", action="append", metavar="DIR", help="folder of pack folders (repeatable)")
    run.add_argument("--data-dir", help="data directory (default .attune)")
    run.add_argument("--json", action="store_true", help="print the execution document as JSON on stdout")
    run.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    run.add_argument("--answer", action="append", default=[], metavar="INQUIRY=JSON",
                     help="answer the inquiry with this id (or of this task) when it is pending; "
                     "without it, pending inquiries are asked for on a terminal")
    run.set_defaults(func=_run)

    val = sub.add_parser("validate", help="check packs, workflows and actions")
    val.add_argument("paths", nargs="+", help="pack folders, folders of packs, or workflow/action files")
    val.set_defaults(func=_validate)

    # The command's logic lives in attune_actors.testing.rehearsal; this only parses its arguments.
    test = sub.add_parser("test", help="run the rehearsals (workflow tests in YAML) found under PATHs")
    test.add_argument("paths", nargs="+", metavar="PATH",
                      help="rehearsal files, or folders searched for rehearsals/*.yaml")
    test.add_argument("--packs", action="append", metavar="DIR",
                      help="folder of pack folders (default: the packs beside each rehearsal's pack)")
    test.set_defaults(func=_test)

    kv_command.register(sub)
    _register_distributed(sub)

    rerun = sub.add_parser("rerun", help="run a failed or canceled execution again, keeping what completed")
    rerun.add_argument("id", help="execution id")
    rerun.add_argument("--tasks", help="comma-separated tasks to run again (default: the failed ones)")
    rerun.add_argument("--reset-items", action="store_true",
                       help="with_items tasks run all their items again, not only the failed ones")
    rerun.add_argument("--packs", action="append", metavar="DIR", help="folder of pack folders (repeatable)")
    rerun.add_argument("--data-dir", help="data directory (default .attune)")
    rerun.add_argument("--json", action="store_true", help="print the execution document as JSON on stdout")
    rerun.set_defaults(func=_rerun)

    history = sub.add_parser("executions", help="executions recorded in the data dir")
    hsub = history.add_subparsers(title="executions commands", required=True)
    for name, helptext in (("list", "list executions, newest first"), ("get", "show one execution"),
                           ("tasks", "show one execution's task runs")):
        p = hsub.add_parser(name, help=helptext)
        if name != "list":
            p.add_argument("id", help="execution id")
        else:
            p.add_argument("--status", help="only executions with this status")
            p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
        p.add_argument("--data-dir", help="data directory (default .attune)")
        p.add_argument("--json", action="store_true", help="JSON on stdout")
        p.set_defaults(func=_history, what=name)
    return parser


# ---------------------------------------------------------------------------------------- run


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(
        args.config,
        overrides={
            "packs": args.packs,
            "data_dir": args.data_dir,
            "logging": {"level": args.log_level},
        },
    )
    configure_logging(settings)
    return asyncio.run(_run_async(args, settings))


async def _run_async(args: argparse.Namespace, settings: Any) -> int:
    from attune_actors.engine.engine import Engine
    from attune_actors.progress import Progress

    answers = _answers(args.answer)
    async with Engine(settings=settings, rules=False) as engine:  # one-shot: no triggers, no timers
        info = await engine.get_workflow(args.ref)
        params = _parameters(args, {p.name: p for p in info.parameters})
        execution = await engine.execute(args.ref, params)
        progress = Progress()
        wait = asyncio.ensure_future(engine.wait(execution.id, timeout=args.timeout))
        asked: set[str] = set()
        while not wait.done():
            progress.update(await engine.get(execution.id))
            for inquiry in await engine.inquiries(execution_id=execution.id):
                await _handle_inquiry(engine, inquiry, answers, asked, progress)
            await asyncio.wait({wait}, timeout=0.1)
        final = wait.result()
        progress.done(final)
    if args.json:
        json.dump(final.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    return EXIT_OK if final.status == "succeeded" else EXIT_FAILED


def _answers(items: list[str]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ParameterError(f"--answer {item!r}: expected INQUIRY=JSON")
        try:
            answers[key] = json.loads(text)
        except ValueError as exc:
            raise ParameterError(f"--answer {key}: not JSON: {exc}") from None
    return answers


async def _handle_inquiry(engine: Any, inquiry: dict[str, Any], answers: dict[str, Any], asked: set[str],
                          progress: Any) -> None:
    """Answer a pending inquiry from --answer, or ask on the terminal; otherwise say how to answer."""
    from attune_actors.errors import InquiryResponseError

    key = next((k for k in (inquiry["id"], inquiry["task"]) if k in answers), None)
    if key is not None:
        try:
            await engine.respond(inquiry["id"], answers.pop(key))
        except InquiryResponseError as exc:
            print(f"error: {exc}", file=sys.stderr)
        return
    if inquiry["id"] in asked:
        return
    asked.add(inquiry["id"])
    schema = json.dumps(inquiry["schema"])
    if not sys.stdin.isatty():
        print(f"inquiry {inquiry['id']} ({inquiry['task']}): {inquiry['prompt']} schema {schema}; "
              f"answer with --answer {inquiry['task']}=JSON", file=sys.stderr)
        return
    progress.pause()
    loop = asyncio.get_running_loop()
    while True:
        prompt = f"{inquiry['task']}: {inquiry['prompt']} (JSON matching {schema}) > "
        text = await loop.run_in_executor(None, input, prompt)
        try:
            await engine.respond(inquiry["id"], json.loads(text))
            break
        except ValueError as exc:
            print(f"not JSON: {exc}", file=sys.stderr)
        except InquiryResponseError as exc:
            print(f"refused: {exc.message}", file=sys.stderr)
    progress.resume()


def _parameters(args: argparse.Namespace, declared: dict[str, Any]) -> dict[str, Any]:
    from attune_actors.spec.params import coerce_cli_value

    params: dict[str, Any] = {}
    if args.params_file:
        path = Path(args.params_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ParameterError(f"cannot read params file {path}: {exc.strerror}") from None
        value, problems = load_yaml(text, str(path))  # YAML is a superset of JSON
        if problems:
            raise ParameterError(str(problems[0]))
        if not isinstance(value, dict):
            raise ParameterError(f"{path}: the params file must hold a mapping")
        params.update(plain(value))
    for item in args.param:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ParameterError(f"-p {item!r}: expected KEY=VALUE")
        params[key] = coerce_cli_value(key, declared.get(key), text)
    return params


def _register_distributed(sub: Any) -> None:
    """`serve` and `worker`: the NATS runtime's processes (their modules import nats lazily)."""
    from attune_actors.nats import serve, worker

    serve.register(sub)
    worker.register(sub)


# -------------------------------------------------------------------------- rerun, history


def _rerun(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, overrides={"packs": args.packs, "data_dir": args.data_dir,
                                                     "logging": {"level": args.log_level}})
    configure_logging(settings)
    return asyncio.run(_rerun_async(args, settings))


async def _rerun_async(args: argparse.Namespace, settings: Any) -> int:
    from attune_actors.engine.engine import Engine
    from attune_actors.progress import Progress

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    async with Engine(settings=settings, rules=False) as engine:  # one-shot: no triggers, no timers
        execution = await engine.rerun(args.id, tasks, reset_items=args.reset_items)
        progress = Progress()
        wait = asyncio.ensure_future(engine.wait(execution.id))
        while not wait.done():
            progress.update(await engine.get(execution.id))
            await asyncio.wait({wait}, timeout=0.1)
        final = wait.result()
        progress.done(final)
    if args.json:
        json.dump(final.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    return EXIT_OK if final.status == "succeeded" else EXIT_FAILED


def _history(args: argparse.Namespace) -> int:
    """Read executions straight from the store: no engine starts, nothing is resumed."""
    from attune_actors.engine.execution import Execution
    from attune_actors.engine.runtime import document_from_snapshot
    from attune_actors.errors import NotFoundError
    from attune_actors.store.sqlite import SQLiteStore

    settings = load_settings(args.config, overrides={"data_dir": args.data_dir})
    db = settings.data_path / "attune.db"
    if not db.exists():
        raise NotFoundError(f"no data in {settings.data_path} (no attune.db)")
    store = SQLiteStore(db)
    try:
        if args.what == "list":
            headers = store.headers(status=args.status, limit=args.limit, roots_only=True)
            if args.json:
                docs = [document_from_snapshot(s) for s in map(store.load, (h["id"] for h in headers)) if s]
                json.dump(docs, sys.stdout, indent=2, default=str)
                sys.stdout.write("\n")
            else:
                for h in headers:
                    execution = Execution.from_dict(document_from_snapshot(store.load(h["id"])))  # type: ignore[arg-type]
                    print(f"{execution.id}  {execution.status.value:<10} {execution.ref:<32} "
                          f"{execution.started_at or '-'}  {execution.ended_at or '-'}")
            return EXIT_OK
        snap = store.load(args.id)
        if snap is None:
            raise NotFoundError(f"no execution '{args.id}' in {db}")
        doc = document_from_snapshot(snap)
        if args.json:
            json.dump(doc if args.what == "get" else doc["tasks"], sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
            return EXIT_OK
        execution = Execution.from_dict(doc)
        if args.what == "get":
            print(f"{execution.id} {execution.ref}: {execution.status.value}")
            print(f"  started {execution.started_at or '-'}  ended {execution.ended_at or '-'}")
            if execution.error:
                print(f"  error: {execution.error.get('message')}")
            print(f"  output: {json.dumps(execution.output, default=str)}")
        for run in execution.tasks:
            items = f" [{len(run.items)} items]" if run.items is not None else ""
            print(f"  {run.name:<24} {run.status.value:<10} attempts {run.attempts}{items}"
                  + (f"  {run.error}" if run.error else ""))
        return EXIT_OK
    finally:
        store.close_sync()


# ----------------------------------------------------------------------------------- test


def _test(args: argparse.Namespace) -> int:
    from attune_actors.testing.rehearsal import main as rehearse_main

    settings = load_settings(args.config) if args.config else None
    return rehearse_main(args.paths, packs=args.packs, settings=settings)


# ----------------------------------------------------------------------------------- validate


def _validate(args: argparse.Namespace) -> int:
    # stderr holds exactly one `FILE:LINE:COLUMN: message` line per problem, for editors and CI.
    problems = validate_paths(args.paths)
    for err in problems:
        print(_located(err), file=sys.stderr)
    if problems:
        return EXIT_BAD_INPUT
    print("valid", file=sys.stderr)
    return EXIT_OK


def validate_paths(paths: list[str]) -> list[AttuneError]:
    """Every problem in the named packs, folders of packs and files (files: their pack is loaded)."""
    from attune_actors.spec.validate import validate_paths as check

    return check(paths)


def _located(err: AttuneError) -> str:
    """`FILE:LINE:COLUMN: message`, with 1:1 when only the file is known."""
    from attune_actors.spec.suggest import printable

    loc: Location | None = err.location
    message = printable(err.message)  # one problem, one line: user text may hold newlines
    if loc is None:
        return f"error: {message}"
    return f"{loc.file}:{max(loc.line, 1)}:{max(loc.column, 1)}: {message}"


if __name__ == "__main__":
    sys.exit(main())
