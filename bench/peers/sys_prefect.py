"""Prefect 3: local flows whose tasks return at once, on Prefect's ephemeral local API.

Set-up, before prefect is imported: `PREFECT_HOME` in a fresh temporary directory (its SQLite
database lives there), `PREFECT_API_URL` unset, so Prefect starts its temporary local server
(a subprocess on 127.0.0.1; nothing leaves the machine), telemetry off
(`PREFECT_SERVER_ANALYTICS_ENABLED=false`), log level WARNING (each task run would otherwise log a
line; attune_actors runs at WARNING too). Everything else is Prefect's default: the default
`ThreadPoolTaskRunner`, default cache policy, results not persisted.

Shapes:
- chain: a flow calling N tasks one after the other (`noop()`, each waits for the one before);
- fan-out: `start = noop.submit()`, four `noop.submit(wait_for=[start])`, then
  `noop.submit(wait_for=branches).result()` (the join waits for all four);
- with_items: `noop.map(items)`, then the results of all futures;
- concurrent: async flows of 10 async tasks awaited in turn, N of them at once with
  `asyncio.gather` on one event loop (Prefect's own way to run flows concurrently; cheaper than N
  threads each running a sync flow).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from importlib.metadata import version
from typing import Any

from bench.peers.shapes import Shape

_home = tempfile.mkdtemp(prefix="bench-prefect-")
os.environ["PREFECT_HOME"] = _home
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_API_KEY", None)
os.environ.pop("PREFECT_PROFILES_PATH", None)
os.environ["PREFECT_PROFILES_PATH"] = os.path.join(_home, "profiles.toml")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_UI_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["DO_NOT_TRACK"] = "1"

from prefect import flow, flow_engine, task  # noqa: E402 - after the environment is set

# Flow-run heartbeats off. Their thread sleeps in 1 s steps and a sync flow joins it on exit, so with
# them on every sync flow run idles up to 1 s (1.1 s for an empty flow here): waiting, not engine
# work, and it would dwarf the fan-out shape. Prefect's settings cannot express "off" (>= 30 s or
# unset), so the engine's property is patched. This favours Prefect.
flow_engine.BaseFlowRunEngine.heartbeat_seconds = property(lambda self: None)  # type: ignore[assignment]


@task
def noop(x: Any = None) -> Any:
    return x


@task
async def anoop() -> None:
    return None


@flow
def chain_flow(n: int, deadline: float) -> int:
    for i in range(n):
        noop()
        if time.perf_counter() > deadline:
            return i + 1
    return n


@flow
def fanout_flow(width: int) -> int:
    start = noop.submit()
    branches = [noop.submit(wait_for=[start]) for _ in range(width)]
    noop.submit(wait_for=branches).result()
    return width + 2


@flow
def items_flow(items: list[int]) -> int:
    results = noop.map(items).result()
    return len(results)


@flow
async def async_chain_flow(n: int) -> int:
    for _ in range(n):
        await anoop()
    return n


async def concurrent(width: int, tasks: int) -> int:
    done = await asyncio.gather(*(async_chain_flow(tasks) for _ in range(width)))
    return sum(done)


class Adapter:
    name = "prefect"
    label = "Prefect 3 (local, ephemeral API)"

    def versions(self) -> dict[str, str]:
        return {"prefect": version("prefect"), "pydantic": version("pydantic")}

    def warm_up(self) -> None:
        chain_flow(5, time.perf_counter() + 120)  # starts the temporary server
        fanout_flow(4)
        items_flow(list(range(10)))
        asyncio.run(concurrent(5, 10))

    def prepare(self, shape: Shape) -> None:
        self.items = list(range(shape.size)) if shape.kind == "items" else []

    def run(self, shape: Shape, deadline: float) -> int:
        if shape.kind == "chain":
            return chain_flow(shape.size, deadline)
        if shape.kind == "fanout":
            return sum(fanout_flow(shape.size) for _ in range(shape.reps))
        if shape.kind == "items":
            return items_flow(self.items)

        async def waves() -> int:
            done = 0
            for _ in range(shape.reps):
                done += await concurrent(shape.size, shape.wf_tasks)
                if time.perf_counter() > deadline:
                    break
            return done

        return asyncio.run(waves())

    def cleanup(self) -> None:
        pass

    def close(self) -> None:
        pass
