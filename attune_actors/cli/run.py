"""`run` and `rerun`, and following an execution live (shared with `executions watch|resume` and
`inquiries respond`): progress on stderr, pending inquiries answered or asked for, then the status
and the output (or the error)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attune_actors.cli.common import (
    add_data_dir,
    add_json,
    add_packs,
    engine_of,
    exit_status,
    print_json,
    settings_of,
    short,
)
from attune_actors.errors import AttuneError, InquiryResponseError, ParameterError
from attune_actors.spec.yamlsrc import load_yaml, plain

if TYPE_CHECKING:
    from attune_actors.engine.engine import Engine
    from attune_actors.engine.execution import Execution
    from attune_actors.progress import Progress

_TICK = 0.1  # seconds between looks at an execution another process runs
following: list[str] = []  # the execution being followed, for the message when Ctrl-C stops us


class Detached(AttuneError):
    """Following stopped before the execution ended (timeout, end of input, nobody runs it)."""


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run a workflow or an action in an embedded engine and wait for it",
                         description="Run a workflow or a single action (attune-actors run core.local "
                         "cmd=date) and wait; progress on stderr, then the status and output.")
    run.add_argument("ref", help="workflow or action ref, e.g. examples.deploy or core.local")
    run.add_argument("assignments", nargs="*", metavar="KEY=VALUE", help="parameters, as with -p")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="a parameter, converted to its declared type (JSON for arrays/objects)")
    run.add_argument("--params-file", help="JSON or YAML file of parameters (-p wins)")
    add_packs(run)
    add_data_dir(run)
    add_json(run, "the execution document")
    run.add_argument("--timeout", type=float, default=None, metavar="S",
                     help="cancel the execution if it has not ended after S seconds (exit 1)")
    run.add_argument("--answer", action="append", default=[], metavar="INQUIRY=JSON",
                     help="answer the inquiry with this id (or of this task) when it is pending; "
                     "without it, pending inquiries are asked for on a terminal")
    run.set_defaults(func=_run)

    rerun = sub.add_parser("rerun", help="run an ended execution again as a new execution, keeping what "
                           "completed (the original stays as it was)")
    rerun.add_argument("id", help="execution id (or a unique prefix)")
    rerun.add_argument("--tasks", help="comma-separated tasks to run again (default: the failed ones)")
    rerun.add_argument("--reset-items", action="store_true",
                       help="with_items tasks run all their items again, not only the failed ones")
    add_packs(rerun)
    add_data_dir(rerun)
    add_json(rerun, "the execution document")
    rerun.set_defaults(func=_rerun)


# ---------------------------------------------------------------------------------------- run


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_run_async(args))


async def _run_async(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    answers = _answers(args.answer)
    async with engine_of(settings) as engine:
        action = engine.catalog.action(args.ref) if args.ref in engine.catalog.actions else None
        declared = {p.name: p for p in action.parameters} if action is not None else {}
        params = _parameters(args, declared)
        execution = await engine.execute(args.ref, params)
        await hint_interrupted(engine)
        final = await follow(engine, execution.id, timeout=args.timeout, answers=answers)
    return finish(final, args.json)


async def hint_interrupted(engine: Engine) -> None:
    """Name the executions a process that died left unfinished, and how to end that state."""
    left = await engine.interrupted()
    if not left:
        return
    shown = ", ".join(f"{short(e.id)} {e.ref} ({e.status.value})" for e in left[:3])
    more = f" and {len(left) - 3} more" if len(left) > 3 else ""
    print(f"note: {len(left)} execution(s) left unfinished by a process that ended: {shown}{more}; "
          "`attune-actors executions resume ID` continues one, `executions cancel ID` ends it",
          file=sys.stderr)


def finish(final: Execution, as_json: bool) -> int:
    """Print the ended execution (the document, or its status and output) and return run's exit status."""
    if as_json:
        print_json(final.to_dict())
        if final.error:
            print(f"error: {final.error.get('message')}", file=sys.stderr)
        print(f"{final.ref} {short(final.id)}: {final.status.value}", file=sys.stderr)
    else:
        print(f"{final.ref} {short(final.id)}: {final.status.value}")
        if final.error:
            print(f"error: {final.error.get('message')}")
        if final.output is not None:
            print(json.dumps(final.output, indent=2, default=str, ensure_ascii=False))
    return exit_status(final.status.value)


async def follow(
    engine: Engine,
    execution_id: str,
    *,
    timeout: float | None = None,
    answers: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Execution:
    """Show the execution live until it ends; answer or ask for its pending inquiries.

    With `timeout`, the execution is canceled (forced) at the deadline and `Detached` raised.
    An execution another live process runs is watched from the store.
    """
    from attune_actors.progress import Progress

    progress = progress or Progress()
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    asked: set[str] = set()
    answers = dict(answers or {})
    following[:] = [execution_id]
    while True:
        execution = await engine.get(execution_id)
        progress.update(execution)
        if execution.terminal:
            progress.done(execution)
            return execution
        here = engine.running_here(execution_id)
        if not here and engine.owner(execution_id) is None:
            raise Detached(f"execution {execution_id} is not running: the process that ran it ended; "
                           f"`attune-actors executions resume {short(execution_id)}` continues it")
        if here:
            for inquiry in await engine.inquiries(execution_id=execution_id):
                await _handle_inquiry(engine, inquiry, answers, asked, progress)
        if deadline is not None and loop.time() >= deadline:
            await engine.cancel(execution_id, force=True)
            raise Detached(f"timed out after {timeout:g} s: execution {execution_id} canceled")
        step = _TICK if deadline is None else max(0.0, min(_TICK, deadline - loop.time()))
        if here:
            try:
                await engine.wait(execution_id, timeout=step)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(step)  # deliberate: another process writes the store, we read it


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


async def _handle_inquiry(engine: Engine, inquiry: dict[str, Any], answers: dict[str, Any], asked: set[str],
                          progress: Progress) -> None:
    """Answer a pending inquiry from --answer, or ask on the terminal; otherwise say how to answer."""
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
              f"waiting for `attune-actors inquiries respond {inquiry['id']} JSON`", file=sys.stderr)
        return
    progress.pause()
    while True:
        text = await read_line(f"{inquiry['task']}: {inquiry['prompt']} (JSON matching {schema}) > ")
        if text is None:
            raise Detached(f"no answer (end of input); the execution waits: "
                           f"`attune-actors inquiries respond {inquiry['id']} JSON` answers it")
        try:
            await engine.respond(inquiry["id"], json.loads(text))
            break
        except ValueError as exc:
            print(f"not JSON: {exc}", file=sys.stderr)
        except InquiryResponseError as exc:
            print(f"refused: {exc.message}", file=sys.stderr)
    progress.resume()


async def read_line(prompt: str) -> str | None:
    """A line typed on stdin (None at end of input), read without blocking the loop or a thread:
    Ctrl-C while waiting interrupts at once."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    line = sys.stdin.readline()
    return line.rstrip("\n") if line else None


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
    for flag, item in [("", a) for a in args.assignments] + [("-p ", p) for p in args.param]:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ParameterError(f"{flag}{item!r}: expected KEY=VALUE")
        params[key] = coerce_cli_value(key, declared.get(key), text)
    return params


# -------------------------------------------------------------------------------------- rerun


def _rerun(args: argparse.Namespace) -> int:
    return asyncio.run(_rerun_async(args))


async def _rerun_async(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    async with engine_of(settings_of(args)) as engine:
        original = engine.resolve(args.id)
        execution = await engine.rerun(original, tasks, reset_items=args.reset_items)
        print(f"rerun of {short(original)}: execution {execution.id}", file=sys.stderr)
        final = await follow(engine, execution.id)
    return finish(final, args.json)


__all__ = ["Detached", "finish", "follow", "hint_interrupted", "read_line", "register"]
