"""Prefect 3: local flows whose tasks return at once, on Prefect's ephemeral local API.

Set-up, before prefect is imported: `PREFECT_HOME` in a fresh temporary directory (its SQLite
database lives there), `PREFECT_API_URL` unset, so Prefect starts its temporary local server
(a subprocess on 127.0.0.1; nothing leaves the machine), telemetry off
(`PREFECT_SERVER_ANALYTICS_ENABLED=false`), log level WARNING (each task run would otherwise log a
line; attune_actors runs at WARNING too). Four departures from Prefect's defaults, each explained
where it is made below and each in Prefect's favour: flow-run heartbeats off, the server's event
persister and task-run recorder off (`--prefect-services default` keeps them), 20 client retries
instead of 5, and a 16-thread task pool instead of an unbounded one. Otherwise defaults: default
cache policy, results not persisted.

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
os.environ["PREFECT_PROFILES_PATH"] = os.path.join(_home, "profiles.toml")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_UI_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["DO_NOT_TRACK"] = "1"
# Many concurrent flow runs make the API's SQLite database busy; the server answers 503 and the client
# backs off and retries, 5 times by default, then the flow run crashes. 20 lets them finish.
os.environ["PREFECT_CLIENT_MAX_RETRIES"] = "20"
# The default thread pool is unbounded: `noop.map(10_000 items)` starts 10,000 threads. 16 threads
# run as fast here (the client is CPU-bound, about 4.6 ms of CPU per mapped task either way) and let
# a run cut at the cap drop its queued tasks.
os.environ["PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS"] = "16"
if os.environ.get("BENCH_PEERS_PREFECT_SERVICES", "lean") != "default":
    # The server's event persister and task-run recorder write every task run's events to the
    # database after the flow has returned (about 21 ms of server CPU per task here, 20 s for 1,000
    # items), which would bleed into the next measurements. Off: Prefect does less than by default,
    # and the ratios are conservative. `--prefect-services default` measures with them on.
    os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED"] = "false"
    os.environ["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED"] = "false"

from prefect import flow, flow_engine, task  # noqa: E402 - after the environment is set
from prefect.futures import wait  # noqa: E402

# Flow-run heartbeats off. Their thread sleeps in 1 s steps and a sync flow joins it on exit, so with
# them on every sync flow run idles up to 1 s (1.1 s for an empty flow here): waiting, not engine
# work, and it would dwarf the fan-out shape. Prefect's settings cannot express "off" (>= 30 s or
# unset), so the engine's property is patched. This favours Prefect.
flow_engine.BaseFlowRunEngine.heartbeat_seconds = property(lambda self: None)  # type: ignore[assignment]


RAN: list[int] = []  # one entry per task body run (list.append is atomic): progress of a cut run


@task
def noop(x: Any = None) -> Any:
    RAN.append(1)
    return x


@task
async def anoop() -> None:
    RAN.append(1)


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
def items_flow(items: list[int], deadline: float) -> int:
    futures = noop.map(items)
    _, not_done = wait(futures, timeout=max(0.001, deadline - time.perf_counter()))
    if not_done:  # cut: drop the queued items, let the running ones end
        for f in not_done:
            f.wrapped_future.cancel()
        wait([f for f in not_done if not f.wrapped_future.cancelled()], timeout=60)
        return -1
    return len([f.result() for f in futures])


@flow
async def async_chain_flow(n: int) -> int:
    for _ in range(n):
        await anoop()
    return n


async def concurrent(width: int, tasks: int, deadline: float) -> int:
    flows = asyncio.gather(*(async_chain_flow(tasks) for _ in range(width)))
    try:
        done = await asyncio.wait_for(flows, max(0.001, deadline - time.perf_counter()))
    except TimeoutError:
        return -1
    return sum(done)


class Adapter:
    name = "prefect"
    label = "Prefect 3 (local, ephemeral API)"

    def versions(self) -> dict[str, str]:
        return {"prefect": version("prefect"), "pydantic": version("pydantic")}

    def warm_up(self) -> None:
        chain_flow(5, time.perf_counter() + 120)  # starts the temporary server
        fanout_flow(4)
        items_flow(list(range(10)), time.perf_counter() + 120)
        asyncio.run(concurrent(5, 10, time.perf_counter() + 120))

    def prepare(self, shape: Shape) -> None:
        self.items = list(range(shape.size)) if shape.kind == "items" else []

    def run(self, shape: Shape, deadline: float) -> int:
        """Transitions done: all of the shape's, or (cut at the deadline) the task bodies that ran."""
        start = len(RAN)
        if shape.kind == "chain":
            chain_flow(shape.size, deadline)
        elif shape.kind == "fanout":
            for _ in range(shape.reps):
                fanout_flow(shape.size)
                if time.perf_counter() > deadline:
                    break
        elif shape.kind == "items":
            items_flow(self.items, deadline)
        else:

            async def waves() -> None:
                for _ in range(shape.reps):
                    if await concurrent(shape.size, shape.wf_tasks, deadline) < 0:
                        break
                    if time.perf_counter() > deadline:
                        break

            asyncio.run(waves())
        return len(RAN) - start

    def cleanup(self) -> None:
        pass

    def close(self) -> None:
        pass
