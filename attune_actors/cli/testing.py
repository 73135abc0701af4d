"""`test`: run the rehearsals (workflow tests in YAML); the logic lives in
attune_actors.testing.rehearsal, this only parses its arguments."""

from __future__ import annotations

import argparse
from typing import Any

from attune_actors.config import load_settings


def register(sub: Any) -> None:
    test = sub.add_parser("test", help="run the rehearsals (workflow tests in YAML) found under PATHs")
    test.add_argument("paths", nargs="+", metavar="PATH",
                      help="rehearsal files, or folders searched for rehearsals/*.yaml")
    test.add_argument("--packs", action="append", metavar="DIR",
                      help="folder of pack folders (default: the packs beside each rehearsal's pack)")
    test.set_defaults(func=_test)


def _test(args: argparse.Namespace) -> int:
    from attune_actors.testing.rehearsal import main as rehearse_main

    settings = load_settings(args.config) if args.config else None
    return rehearse_main(args.paths, packs=args.packs, settings=settings)
