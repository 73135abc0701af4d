"""`actions|workflows|rules|triggers list` and `validate`: what the packs define."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from attune_actors.cli.common import EXIT_BAD_INPUT, EXIT_OK, add_json, add_packs, print_json, settings_of
from attune_actors.errors import AttuneError, Location


def register(sub: Any) -> None:
    val = sub.add_parser("validate", help="check packs, workflows and actions")
    val.add_argument("paths", nargs="+", help="pack folders, folders of packs, or workflow/action files")
    val.set_defaults(func=_validate)
    for kind in ("actions", "workflows", "rules", "triggers"):
        group = sub.add_parser(kind, help=f"the {kind} the packs define")
        cmds = group.add_subparsers(title=f"{kind} commands", metavar="COMMAND", required=True)
        p = cmds.add_parser("list", help=f"list {kind}")
        p.add_argument("--pack", help="only this pack's")
        add_packs(p)
        add_json(p, f"the {kind}")
        p.set_defaults(func=_list, kind=kind)


def _list(args: argparse.Namespace) -> int:
    from attune_actors.spec.packs import load_packs

    settings = settings_of(args)
    catalog, _ = load_packs(settings.packs)  # `validate` reports problems; listing shows what loads
    rows: list[dict[str, Any]] = []
    for pack in sorted(catalog.packs.values(), key=lambda p: p.ref):
        if args.pack and pack.ref != args.pack:
            continue
        if args.kind in ("actions", "workflows"):
            for action in sorted(pack.actions.values(), key=lambda a: a.ref):
                if (action.workflow is not None) != (args.kind == "workflows"):
                    continue
                rows.append({"ref": action.ref, "pack": pack.ref, "runner_type": action.runner_type,
                             "description": action.description,
                             "parameters": [p.name for p in action.parameters]})
        elif args.kind == "rules":
            for rule in sorted(pack.rules, key=lambda r: r.ref):
                rows.append({"ref": rule.ref, "pack": pack.ref, "description": rule.description,
                             "enabled": rule.enabled, "trigger": rule.trigger_type, "action": rule.action})
        else:
            rows.extend({"ref": ref, "pack": pack.ref, "description": text} for ref, text in _triggers(pack))
    if args.json:
        print_json(rows)
        return EXIT_OK
    for row in rows:
        extra = ""
        if args.kind == "rules":
            extra = f"  {row['trigger']} -> {row['action']}" + ("" if row["enabled"] else "  (disabled)")
        elif args.kind in ("actions", "workflows"):
            extra = f"  {row['runner_type']}" if args.kind == "actions" else ""
        print(f"{row['ref']:<36}{extra}  {row['description']}".rstrip())
    return EXIT_OK


_BUILT_IN_TRIGGERS = {
    "core.nats": "a message on a NATS subject {subject}",
    "core.webhook": "a POST to /api/v1/webhooks/{name}",
    "core.interval": "every {seconds}",
    "core.cron": "a cron {expression, timezone}",
    "core.datetime": "once, {at}",
}


def _triggers(pack: Any) -> list[tuple[str, str]]:
    """(ref, description) of the trigger types the pack's sensors emit (SPEC section 10); the
    built-in ones under the core pack."""
    found: dict[str, str] = dict(_BUILT_IN_TRIGGERS) if pack.ref == "core" else {}
    for sensor in pack.sensors:
        for trigger in sensor.trigger_types:
            found.setdefault(trigger.ref, trigger.description or f"emitted by sensor {sensor.ref}")
    return sorted(found.items())


def _validate(args: argparse.Namespace) -> int:
    # stderr holds exactly one `FILE:LINE:COLUMN: message` line per problem, for editors and CI.
    problems = validate_paths(args.paths)
    for err in problems:
        print(located(err), file=sys.stderr)
    if problems:
        return EXIT_BAD_INPUT
    print("valid", file=sys.stderr)
    return EXIT_OK


def validate_paths(paths: list[str]) -> list[AttuneError]:
    """Every problem in the named packs, folders of packs and files (files: their pack is loaded)."""
    from attune_actors.spec.validate import validate_paths as check

    return check(paths)


def located(err: AttuneError) -> str:
    """`FILE:LINE:COLUMN: message`, with 1:1 when only the file is known."""
    from attune_actors.spec.suggest import printable

    loc: Location | None = err.location
    message = printable(err.message)  # one problem, one line: user text may hold newlines
    if loc is None:
        return f"error: {message}"
    return f"{loc.file}:{max(loc.line, 1)}:{max(loc.column, 1)}: {message}"
