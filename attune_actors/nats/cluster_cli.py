"""`attune-actors cluster`: the engines of a deployment and the partitions each one owns.

    attune-actors cluster [--nats URL] [--subject-prefix PREFIX] [--json]

Reads the members and partition-lease buckets (`attune_actors.nats.cluster`); changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from attune_actors.config import NatsSettings, configure_logging, load_settings
from attune_actors.errors import AttuneError, TransportError
from attune_actors.nats.cluster import ClusterStatus, cluster_status
from attune_actors.nats.connection import connect
from attune_actors.nats.subjects import Subjects

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("cluster", help="show the engines of a deployment and the partitions they own")
    p.add_argument("--nats", metavar="URL", help="NATS server URL(s) (default: setting nats.url)")
    p.add_argument("--subject-prefix", metavar="PREFIX", help="subject prefix (default: nats.subject_prefix)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(
            getattr(args, "config", None),
            overrides={"nats": {"url": args.nats, "subject_prefix": args.subject_prefix}},
        )
        configure_logging(settings)
        status = asyncio.run(_status(settings.nats, Subjects(settings.nats.subject_prefix)))
    except AttuneError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        print(render(status))
    return 0


async def _status(nats_settings: NatsSettings, subjects: Subjects) -> ClusterStatus:
    try:
        nc = await asyncio.wait_for(connect(nats_settings, name="attune-cluster-status"), 10)
    except TimeoutError:
        raise TransportError("cannot connect to NATS (gave up after 10 s)") from None
    try:
        return await cluster_status(nc, subjects)
    finally:
        await nc.close()


def render(status: ClusterStatus) -> str:
    doc = status.to_dict()
    if not doc["members"]:
        return "no engines in the cluster"
    lines = [f"{'ENGINE':<28} {'HOST':<16} {'PID':>7}  PARTITIONS"]
    for member, info in doc["members"].items():
        parts = ",".join(str(p) for p in info["partitions"]) or "-"
        lines.append(f"{member:<28} {info.get('host', '?')!s:<16} {info.get('pid', '?')!s:>7}  {parts}")
    if doc["unowned"]:
        lines.append(f"unowned (changing hands): {','.join(str(p) for p in doc['unowned'])}")
    return "\n".join(lines)
