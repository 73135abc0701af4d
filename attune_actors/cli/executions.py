"""`executions list|get|tasks|watch|cancel|pause|resume|graph`: ids may be abbreviated to a unique prefix.

`list`, `get` and `tasks` only read the data dir (no engine starts, packs are not loaded). The
others start an embedded engine that runs nothing unless asked: an execution another live process
runs is controlled by that process (it receives the request), one left unfinished by a process
that ended is adopted here first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from attune_actors.cli.common import (
    EXIT_OK,
    add_data_dir,
    add_json,
    add_packs,
    engine_of,
    print_json,
    settings_of,
    short,
)
from attune_actors.cli.run import finish, follow
from attune_actors.engine.graphdoc import GRAPH_FORMATS as FORMATS
from attune_actors.engine.graphdoc import render_graph
from attune_actors.errors import NotFoundError

if TYPE_CHECKING:
    from attune_actors.engine.execution import Execution
    from attune_actors.store.owners import Owner, Owners
    from attune_actors.store.sqlite import SQLiteStore


def register(sub: Any) -> None:
    group = sub.add_parser("executions", help="list, inspect and control executions")
    cmds = group.add_subparsers(title="executions commands", metavar="COMMAND", required=True)

    p = cmds.add_parser("list", help="list executions, newest first")
    p.add_argument("--status", help="only executions with this status")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    add_data_dir(p)
    add_json(p, "the execution documents")
    p.set_defaults(func=_read, what="list")

    for name, text in (("get", "show one execution"), ("tasks", "show one execution's task runs")):
        p = cmds.add_parser(name, help=text)
        p.add_argument("id", help="execution id (or a unique prefix)")
        add_data_dir(p)
        add_json(p, "the document")
        p.set_defaults(func=_read, what=name)

    for name, text in (
        ("watch", "follow a running execution live; exits as `run` does"),
        ("cancel", "cancel an execution"),
        ("pause", "pause an execution (running task runs end first)"),
        ("resume", "resume a paused execution, or continue one whose process ended, and follow it"),
        ("graph", "the workflow graph of an execution, with what ran"),
    ):
        p = cmds.add_parser(name, help=text)
        p.add_argument("id", help="execution id (or a unique prefix)")
        if name == "cancel":
            p.add_argument("--force", action="store_true", help="stop running task runs now")
        if name == "graph":
            p.add_argument("--format", choices=FORMATS, default="json", help="json (default), mermaid or dot")
        else:
            add_json(p, "the execution document")
        add_packs(p)
        add_data_dir(p)
        p.set_defaults(func=_act, what=name)


# ------------------------------------------------------------------------- reading the store


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[tuple[SQLiteStore, Owners]]:
    from attune_actors.store.datadir import DB_FILE_NAME
    from attune_actors.store.owners import Owners
    from attune_actors.store.sqlite import SQLiteStore

    data = settings_of(args, log=False).data_path
    if not (data / DB_FILE_NAME).is_file():
        raise NotFoundError(f"no executions in {data} (no {DB_FILE_NAME})")
    store = SQLiteStore(data / DB_FILE_NAME)
    try:
        yield store, Owners(data, hold=False)
    finally:
        store.close_sync()


def _read(args: argparse.Namespace) -> int:
    from attune_actors.engine.execution import Execution
    from attune_actors.engine.runtime import document_from_snapshot
    from attune_actors.store.base import resolve_id

    with _store(args) as (store, owners):
        if args.what == "list":
            snaps = [
                snap
                for snap in (store.load(h["id"]) for h in store.headers(
                    status=args.status, limit=args.limit, roots_only=True))
                if snap is not None
            ]
            if args.json:
                print_json([document_from_snapshot(snap) for snap in snaps])
                return EXIT_OK
            for snap in snaps:
                execution = Execution.from_dict(document_from_snapshot(snap))
                print(f"{short(execution.id)}  {execution.status.value:<10} {execution.ref:<32} "
                      f"{execution.started_at or '-':<27} {execution.ended_at or '-':<27}"
                      f"{_marks(execution, owners.alive(snap.header.get('owner')))}".rstrip())
            return EXIT_OK
        found = store.load(resolve_id(store, args.id))
        if found is None:
            raise NotFoundError(f"no execution '{args.id}'")
        doc = document_from_snapshot(found)
        if args.json:
            print_json(doc if args.what == "get" else doc["tasks"])
            return EXIT_OK
        execution = Execution.from_dict(doc)
        if args.what == "get":
            owner = owners.alive(found.header.get("owner"))
            print(f"{execution.id} {execution.ref}: {execution.status.value}{_marks(execution, owner)}")
            print(f"  started {execution.started_at or '-'}  ended {execution.ended_at or '-'}")
            if execution.error:
                print(f"  error: {execution.error.get('message')}")
            print(f"  output: {json.dumps(execution.output, default=str, ensure_ascii=False)}")
        _print_tasks(execution)
        return EXIT_OK


def _marks(execution: Execution, owner: Owner | None) -> str:
    marks = []
    if execution.rerun_of:
        marks.append(f"rerun of {short(execution.rerun_of)}")
    if not execution.terminal:
        marks.append(f"run by {owner.describe()}" if owner else
                     "interrupted: `executions resume ID` continues it, `executions cancel ID` ends it")
    return f"  ({'; '.join(marks)})" if marks else ""


def _print_tasks(execution: Execution) -> None:
    for run in execution.tasks:
        items = f" [{len(run.items)} items]" if run.items is not None else ""
        inquiry = f" inquiry {run.inquiry_id}" if run.inquiry_id and run.status == "pending" else ""
        print(f"  {run.name:<24} {run.status.value:<10} attempts {run.attempts}{items}{inquiry}"
              + (f"  {run.error}" if run.error else ""))


# --------------------------------------------------------------------- acting on executions


def _act(args: argparse.Namespace) -> int:
    return asyncio.run(_act_async(args))


async def _act_async(args: argparse.Namespace) -> int:
    async with engine_of(settings_of(args)) as engine:
        execution_id = engine.resolve(args.id)
        what = args.what
        if what == "graph":
            doc = await engine.graph(execution_id)
            sys.stdout.write(render_graph(doc, args.format) + "\n")
            return EXIT_OK
        if what == "watch":
            return finish(await follow(engine, execution_id), args.json)
        if what == "cancel":
            execution = await engine.cancel(execution_id, force=args.force)
        elif what == "pause":
            execution = await engine.pause(execution_id)
        else:
            before = await engine.get(execution_id)
            if before.terminal:
                return _report(before, args.json)
            execution = await engine.resume(execution_id)
            if engine.running_here(execution_id):
                print(f"continuing execution {execution_id} here (Ctrl-C leaves it unfinished)",
                      file=sys.stderr)
            return finish(await follow(engine, execution_id), args.json)
        if engine.running_here(execution_id):
            # Adopted to carry out the request: see it through before this process ends.
            execution = await _settle(engine, execution_id, "paused" if what == "pause" else None)
        return _report(execution, args.json)


async def _settle(engine: Any, execution_id: str, until: str | None) -> Execution:
    """Wait for the execution to end (or to reach status `until`)."""
    while True:
        execution: Execution = await engine.get(execution_id)
        if execution.terminal or execution.status == until:
            return execution
        try:
            await engine.wait(execution_id, timeout=0.05)
        except TimeoutError:
            pass


def _report(execution: Execution, as_json: bool) -> int:
    if as_json:
        print_json(execution.to_dict())
    else:
        print(f"{short(execution.id)} {execution.ref}: {execution.status.value}")
    return EXIT_OK
