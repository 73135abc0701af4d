"""What every command shares: exit codes, common options, settings, output, ids by prefix."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from attune_actors.config import Settings, configure_logging, load_settings

if TYPE_CHECKING:
    from attune_actors.engine.engine import Engine

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130


def add_packs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--packs", action="append", metavar="DIR", help="folder of pack folders (repeatable)")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (default .attune)")


def add_json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")


def settings_of(args: argparse.Namespace, *, log: bool = True) -> Settings:
    """Settings from --config, the environment and the command's options."""
    settings = load_settings(
        args.config,
        overrides={
            "packs": getattr(args, "packs", None),
            "data_dir": getattr(args, "data_dir", None),
            "logging": {"level": args.log_level},
        },
    )
    if log:
        configure_logging(settings)
    return settings


@asynccontextmanager
async def engine_of(settings: Settings) -> AsyncIterator[Engine]:
    """An embedded engine that runs only what it is asked to (nothing is resumed behind the user).

    Problems in pack files the command does not use are not its business (`validate` lists them):
    only a ref that is itself invalid is reported, when it is named.
    """
    from attune_actors.engine.engine import Engine, packs_log

    if settings.logging.level.upper() != "DEBUG":
        packs_log.setLevel(logging.ERROR)
    async with Engine(settings=settings, recover=False, rules=False) as engine:  # one-shot: no triggers
        yield engine


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def exit_status(status: str) -> int:
    return EXIT_OK if status == "succeeded" else EXIT_FAILED


def short(execution_id: str) -> str:
    """An id as displayed: its first 12 characters, enough to name it (any unique prefix is)."""
    return execution_id[:12]
