"""`enforcements list`: what each rule did with each trigger instance (SPEC section 10).

Reads the records the engines sharing this data dir wrote; nothing is started, no trigger is
consumed and no timer fires (a listing must not act on the rules it lists).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from attune_actors.cli.common import EXIT_OK, add_data_dir, add_json, print_json, settings_of
from attune_actors.store.datadir import DB_FILE_NAME


def register(sub: Any) -> None:
    group = sub.add_parser("enforcements", help="what rules did with trigger instances")
    cmds = group.add_subparsers(title="enforcements commands", metavar="COMMAND", required=True)
    p = cmds.add_parser("list", help="enforcement records, newest first")
    p.add_argument("--rule", metavar="REF", help="only this rule's")
    p.add_argument("--instance", metavar="ID", help="only those of this trigger instance")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    add_data_dir(p)
    add_json(p, "the records")
    p.set_defaults(func=_list)


def _list(args: argparse.Namespace) -> int:
    rows = asyncio.run(_records(args))
    if args.json:
        print_json(rows)
        return EXIT_OK
    for row in rows:
        outcome = (
            f"started {row['execution_id']}" if row["execution_id"]
            else (f"error: {row['error']}" if row["error"] else "did not match")
        )
        print(f"{row['created_at']}  {row['rule']:<32} {row['trigger_type']:<16} "
              f"{row['trigger_instance_id']:<34} {outcome}")
    return EXIT_OK


async def _records(args: argparse.Namespace) -> list[dict[str, Any]]:
    from attune_actors.rules.ledger import SQLiteLedger

    path = settings_of(args).data_path / DB_FILE_NAME
    if not path.exists():  # no engine ever ran here: nothing was enforced
        return []
    ledger = SQLiteLedger(path)
    await ledger.open()
    try:
        found = await ledger.list(rule=args.rule, trigger_instance_id=args.instance, limit=max(args.limit, 1))
    finally:
        await ledger.close()
    return [record.to_dict() for record in found]
