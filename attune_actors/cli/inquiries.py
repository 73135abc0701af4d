"""`inquiries list|respond`: pending questions of executions, and answers to them.

An answer goes to the process that runs the execution; when none does (the one that ran it
ended), this process adopts the execution and follows it, as `executions resume` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from attune_actors.cli.common import (
    EXIT_OK,
    add_data_dir,
    add_json,
    add_packs,
    engine_of,
    exit_status,
    print_json,
    settings_of,
)
from attune_actors.cli.run import finish, follow
from attune_actors.errors import ParameterError


def register(sub: Any) -> None:
    group = sub.add_parser("inquiries", help="list and answer pending inquiries")
    cmds = group.add_subparsers(title="inquiries commands", metavar="COMMAND", required=True)
    p = cmds.add_parser("list", help="pending inquiries")
    p.add_argument("--execution", metavar="ID", help="only those of this execution (or a unique prefix)")
    add_packs(p)
    add_data_dir(p)
    add_json(p, "the inquiries")
    p.set_defaults(func=_run, what="list")
    p = cmds.add_parser("respond", help="answer a pending inquiry with a JSON response")
    p.add_argument("id", help="inquiry id")
    p.add_argument("response", metavar="JSON", help='the response, e.g. \'{"approved": true}\'')
    add_packs(p)
    add_data_dir(p)
    add_json(p, "the answered inquiry")
    p.set_defaults(func=_run, what="respond")


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_list(args) if args.what == "list" else _respond(args))


async def _list(args: argparse.Namespace) -> int:
    async with engine_of(settings_of(args)) as engine:
        execution_id = engine.resolve(args.execution) if args.execution else None
        found = await engine.inquiries(execution_id=execution_id)
    if args.json:
        print_json(found)
        return EXIT_OK
    for inquiry in found:
        print(f"{inquiry['id']}  {inquiry['task']:<20} {inquiry['prompt']}  "
              f"schema {json.dumps(inquiry['schema'])}")
    return EXIT_OK


async def _respond(args: argparse.Namespace) -> int:
    try:
        response = json.loads(args.response)
    except ValueError as exc:
        raise ParameterError(f"the response is not JSON: {exc}") from None
    async with engine_of(settings_of(args)) as engine:
        answered = await engine.respond(args.id, response)
        if args.json:
            print_json(answered)
        else:
            print(f"inquiry {args.id}: answered", file=sys.stderr)
        execution_id = engine.resolve(args.id.split(".", 1)[0])
        if engine.running_here(execution_id):
            # Adopted to deliver the answer: carry the execution on here.
            final = await follow(engine, execution_id)
            return finish(final, False) if not args.json else exit_status(final.status.value)
    return EXIT_OK
