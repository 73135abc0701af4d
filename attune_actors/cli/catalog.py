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
        else:
            entries = pack.rules if args.kind == "rules" else _triggers(pack)
            for entry in entries:
                name = entry.get("ref") or entry.get("name") or "?"
                ref = name if "." in str(name) else f"{pack.ref}.{name}"
                rows.append({"ref": ref, "pack": pack.ref, "description": entry.get("description") or "",
                             **({"enabled": entry.get("enabled", True),
                                 "trigger": (entry.get("trigger") or {}).get("type")
                                 if isinstance(entry.get("trigger"), dict) else entry.get("trigger"),
                                 "action": (entry.get("action") or {}).get("ref")
                                 if isinstance(entry.get("action"), dict) else entry.get("action")}
                                if args.kind == "rules" else {})})
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


def _triggers(pack: Any) -> list[dict[str, Any]]:
    """Trigger types: those the pack's sensors emit and its rules use (SPEC section 10), and the
    built-in ones under the core pack."""
    found: dict[str, dict[str, Any]] = {}
    if pack.ref == "core":
        for ref, text in _BUILT_IN_TRIGGERS.items():
            found[ref] = {"ref": ref, "description": text}
    for sensor in pack.sensors:
        declared = sensor.get("trigger_types") or [sensor.get("trigger")]
        for trigger in declared:
            name = trigger.get("name") if isinstance(trigger, dict) else trigger
            if name:
                found.setdefault(str(name), {"ref": str(name), "description":
                                             f"emitted by sensor {sensor.get('name') or '?'}"})
    for rule in pack.rules:
        trigger = rule.get("trigger")
        name = trigger.get("type") if isinstance(trigger, dict) else trigger
        if name and str(name) not in _BUILT_IN_TRIGGERS:
            found.setdefault(str(name), {"ref": str(name), "description": "used by a rule"})
    return list(found.values())


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
