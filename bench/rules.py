"""Rules benchmarks (issue #17): trigger instances/s from NATS to started executions, rule evaluation cost.

    .venv/bin/python -m bench.rules            # the recorded run (~1 min)
    .venv/bin/python -m bench.rules --quick    # smoke run

1. NATS throughput: N messages published (JetStream, with message ids) on the subject of one
   `core.nats` rule; time from the first publish until every instance has its enforcement record
   and its execution started (stored), on the SQLite store. Baseline in the same process: the same
   N instances through `Engine.emit` (no NATS), so the ratio is the cost of the JetStream path.
   Then the same through a cluster's 16 partition engines in one process (each reads every
   message through a consumer of its own and enforces the instances that hash to it).
2. Rule evaluation: one instance against 1,000 rules listening on the same webhook (each with two
   criteria, none matching), with the in-memory ledger: microseconds per instance for criteria
   only, and for the full dispatch (criteria + 1,000 enforcement records claimed). Baseline: 1 rule.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from attune_actors import Engine
from attune_actors.config import NatsSettings, Settings
from attune_actors.rules.criteria import compile_criteria
from attune_actors.rules.ledger import MemoryLedger
from attune_actors.rules.nats_source import durable_name, stream_name
from attune_actors.rules.service import RulesService
from attune_actors.spec.packs import load_packs
from attune_actors.templates import Renderer
from bench._common import start_nats_server

WORKFLOW = "parameters: {tag: {type: string}}\ntasks: [{name: a, action: core.noop}]\n"


def make_pack(root: Path, rules: int) -> Path:
    pack = root / "packs" / "bench"
    (pack / "workflows").mkdir(parents=True)
    (pack / "rules").mkdir()
    (pack / "pack.yaml").write_text("ref: bench\n")
    (pack / "workflows" / "job.yaml").write_text(WORKFLOW)
    (pack / "rules" / "nats.yaml").write_text(
        "trigger: {type: core.nats, parameters: {subject: bench.ev}}\n"
        "criteria: {trigger.payload.kind: {equals: go}}\naction: bench.job\n"
        "parameters: {tag: 'n{{ trigger.payload.n }}'}\n"
    )
    for i in range(rules):
        (pack / "rules" / f"r{i:04d}.yaml").write_text(
            "trigger: {type: core.webhook, parameters: {name: many}}\n"
            f"criteria: {{trigger.payload.kind: {{equals: k{i}}}, trigger.payload.n: {{gt: {i}}}}}\n"
            "action: bench.job\nparameters: {tag: 'n{{ trigger.payload.n }}'}\n"
        )
    return pack.parent


PARTITIONS = 16  # a cluster's default


async def until_acknowledged(js: Any, n: int, partitions: int | None = None) -> None:
    """Until the rule's consumer (or each partition's) has acknowledged `n` messages: each one's
    enforcement recorded and its execution started (a consumer acknowledges only then)."""
    stream = stream_name("bench")
    for p in [None] if partitions is None else range(partitions):
        durable = durable_name("bench", "bench.ev", p)
        while (await js.consumer_info(stream, durable)).ack_floor.consumer_seq < n:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # deliberate: polling the bench's end condition


async def _reading(engine: Engine) -> None:
    while not any(  # noqa: ASYNC110 - polling the consumer's readiness
        t["status"] == "running" for t in await engine.list_triggers() if t["type"] == "core.nats"
    ):
        await asyncio.sleep(0.01)  # deliberate: waiting for the consumer


async def throughput(n: int, url: str, root: Path, packs: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for label in ("emit", "nats", "cluster"):
        data = root / f"data-{label}"
        settings = Settings(
            packs=(str(packs),), data_dir=str(data), nats=NatsSettings(url=url, subject_prefix="bench")
        )
        if label == "cluster":
            out[label] = await _partitioned(n, url, settings)
            continue
        async with Engine(settings=settings) as engine:
            if label == "nats":
                await _reading(engine)
                nc = await nats.connect(url)
                js = nc.jetstream()
                start = time.perf_counter()
                acks = [
                    js.publish(
                        "bench.ev",
                        json.dumps({"kind": "go", "n": i}).encode(),
                        headers={"Nats-Msg-Id": f"m{i}"},
                    )
                    for i in range(n)
                ]
                await asyncio.gather(*acks)
                await until_acknowledged(js, n)
                out[label] = n / (time.perf_counter() - start)
                await nc.close()
            else:
                start = time.perf_counter()
                await asyncio.gather(
                    *(engine.emit("core.nats", {"kind": "go", "n": i}, subject="bench.ev") for i in range(n))
                )
                out[label] = n / (time.perf_counter() - start)
            for execution in await engine.list(limit=5):
                await engine.wait(execution.id, timeout=60)
    return out


async def _partitioned(n: int, url: str, settings: Settings) -> float:
    """As the NATS row, read by a cluster's partition engines in one process (what one cluster
    engine serving every partition runs): each reads every message through a consumer of its own
    and enforces the instances that hash to its partition. Each has a data dir of its own here
    (a cluster keeps them all in JetStream): the messages' path is what is measured."""
    engines = [
        Engine(settings=dataclasses.replace(settings, data_dir=f"{settings.data_dir}/p{p}"),
               partition=(p, PARTITIONS))
        for p in range(PARTITIONS)
    ]
    for engine in engines:
        await engine.start()
    try:
        for engine in engines:
            await _reading(engine)
        nc = await nats.connect(url)
        js = nc.jetstream()
        start = time.perf_counter()
        events = [(json.dumps({"kind": "go", "n": i}).encode(), {"Nats-Msg-Id": f"c{i}"}) for i in range(n)]
        await asyncio.gather(*(js.publish("bench.ev", data, headers=headers) for data, headers in events))
        await until_acknowledged(js, n, PARTITIONS)
        rate = n / (time.perf_counter() - start)
        await nc.close()
    finally:
        for engine in engines:
            await engine.close()
    return rate


async def evaluation(packs: Path, rounds: int) -> dict[str, float]:
    catalog, problems = load_packs([packs])
    assert not problems, problems
    out: dict[str, float] = {}

    async def starter(ref: str, parameters: dict[str, Any], *, identity: str, execution_id: str) -> None:
        return None

    pack = catalog.packs["bench"]
    webhook_rules = tuple(r for r in pack.rules if r.trigger_type == "core.webhook")
    for count in (1, 1000):
        kept = webhook_rules[:count]
        catalog.packs["bench"] = dataclasses.replace(pack, rules=kept)
        service = RulesService(catalog, Renderer(), MemoryLedger(), starter, Settings())
        await service.start()
        instance = {"id": "x", "type": "core.webhook", "name": "many", "payload": {"kind": "none", "n": 5}}
        predicates = [compile_criteria(r.criteria) for r in kept]
        start = time.perf_counter()
        for _ in range(rounds):
            for p in predicates:
                p(instance)
        out[f"criteria_{count}"] = (time.perf_counter() - start) / rounds * 1e6
        start = time.perf_counter()
        for i in range(rounds):
            await service.dispatch({**instance, "id": f"i{i}"})
        out[f"dispatch_{count}"] = (time.perf_counter() - start) / rounds * 1e6
        await service.stop()
    return out


async def main() -> None:
    import logging

    logging.disable(logging.WARNING)
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 100 if args.quick else 1000
    rounds = 20 if args.quick else 200
    root = Path(tempfile.mkdtemp(prefix="attune-bench-rules-"))
    proc, url = start_nats_server(root / "js")
    try:
        ev = await evaluation(make_pack(root / "many", 1000), rounds)
        tp = await throughput(n, url, root, make_pack(root / "one", 0))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    print(f"trigger instances -> started executions (SQLite store, {n} instances)")
    print(f"  Engine.emit (baseline)   {tp['emit']:8.0f} /s")
    print(f"  NATS JetStream           {tp['nats']:8.0f} /s   ratio {tp['nats'] / tp['emit']:.2f}")
    cluster = tp["cluster"]
    print(f"  NATS, {PARTITIONS} partitions      {cluster:8.0f} /s   ratio {cluster / tp['emit']:.2f}"
          "   (every partition reads every message)")
    print("rule evaluation per instance (no rule matches)")
    for what in ("criteria", "dispatch"):
        one, many = ev[f"{what}_1"], ev[f"{what}_1000"]
        print(f"  {what:9s} 1 rule {one:9.1f} us   1,000 rules {many:9.1f} us   ratio {many / one:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
