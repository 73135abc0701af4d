"""Several `serve --store nats` engines share one deployment: routing, failover, joining, fencing,
and executions a single engine (`--no-cluster`) left.

Real processes (three engines, two workers) against a real nats-server. Every action run appends
its key to a file, so "no action runs twice" is read from what the workers actually did.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from test_serve import Served, error_lines, run_serve, wait_ready

from attune_actors.nats.cluster import cluster_status, owner_of, partition_of
from attune_actors.nats.subjects import Subjects

PARTITIONS = 6
NAMES = ("alpha", "beta", "gamma")  # rendezvous gives each 2 of the 6 partitions (alpha 4 of 2 engines')
ENV = {"ATTUNE_CLUSTER__PARTITIONS": str(PARTITIONS), "ATTUNE_CLUSTER__LEASE_TTL": "2"}

MARK_YAML = """\
name: mark
runner_type: python
entry_point: mark.py
description: Appends `tag` to the file `log`, then sleeps `seconds`.
parameters:
  log: {type: string, required: true}
  tag: {type: string, required: true}
  seconds: {type: number, default: 0.0}
"""
MARK_PY = """\
import asyncio


async def run(log, tag, seconds=0.0):
    with open(log, "a") as f:
        f.write(tag + "\\n")
    await asyncio.sleep(seconds)  # deliberate: the action's work
    return tag
"""
STEPS = """
    parameters:
      log: {type: string, required: true}
      name: {type: string, required: true}
      seconds: {type: number, default: 0.0}
    tasks:
      - name: one
        action: testpack.mark
        input:
          {log: "{{ parameters.log }}", tag: "{{ parameters.name }}-one", seconds: "{{ parameters.seconds }}"}
        on_success: two
      - name: two
        action: testpack.mark
        input:
          {log: "{{ parameters.log }}", tag: "{{ parameters.name }}-two", seconds: "{{ parameters.seconds }}"}
        on_success: three
      - name: three
        action: testpack.mark
        input: {log: "{{ parameters.log }}", tag: "{{ parameters.name }}-three"}
    output_map:
      last: "{{ task.three.result }}"
"""
OUTER = """
    parameters:
      log: {type: string, required: true}
      name: {type: string, required: true}
    tasks:
      - name: inner
        action: testpack.steps
        input: {log: "{{ parameters.log }}", name: "{{ parameters.name }}", seconds: 1.0}
    output_map:
      last: "{{ task.inner.result.last }}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, url: str, packs: Path, tmp: Path, served: list[Served]) -> None:
        self.url = url
        self.packs = packs
        self.tmp = tmp
        self.served = served
        self.engines: dict[str, Served] = {}

    async def engine(self, name: str, *options: str) -> Served:
        proc = Served(
            ["--nats", self.url, "--packs", str(self.packs), "--store", "nats",  # (a cluster by default)
             "--engine-id", name, "--data-dir", str(self.tmp / name), *options],
            self.tmp, env=ENV,
        )
        self.served.append(proc)
        self.engines[name] = proc
        await wait_ready(self.url, name, proc)
        return proc

    async def single(self, name: str = "single") -> Served:
        """An engine serving the prefix alone (`--no-cluster`), as before clusters."""
        proc = Served(
            ["--nats", self.url, "--packs", str(self.packs), "--store", "nats", "--no-cluster",
             "--engine-id", name, "--data-dir", str(self.tmp / name)],
            self.tmp, env=ENV,
        )
        self.served.append(proc)
        await wait_ready(self.url, name, proc)
        return proc

    def worker(self, name: str) -> Served:
        proc = Served(["--nats", self.url, "--packs", str(self.packs), "--worker-id", name], self.tmp,
                      "attune_actors.nats.worker")
        self.served.append(proc)
        return proc


async def request(nc: Any, operation: str, body: dict[str, Any]) -> Any:
    msg = await nc.request(f"attune.api.{operation}", json.dumps(body).encode(), timeout=30)
    reply = json.loads(msg.data)
    assert not isinstance(reply.get("error"), dict), reply
    return reply


async def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.1)  # deliberate: polling with a deadline


async def settled(nc: Any, members: int) -> dict[str, Any]:
    """Wait until `members` engines serve every partition, as rendezvous hashing says."""

    async def check() -> dict[str, Any] | None:
        status = await cluster_status(nc, Subjects())
        live = set(status.members)
        if len(live) != members:
            return None
        if any(status.owners.get(p) != owner_of(p, live) for p in range(PARTITIONS)):
            return None
        if not status.served():
            return None
        return status.to_dict()

    found: dict[str, Any] = await eventually(check, 30, f"{members} engines own every partition")
    return found


ENDED = ("succeeded", "failed", "canceled")


async def all_done(nc: Any, ids: list[str], timeout: float = 40) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        docs = {i: await request(nc, "executions.get", {"id": i}) for i in ids}
        if all(d["status"] in ENDED for d in docs.values()):
            return docs
        return None

    found: dict[str, Any] = await eventually(check, timeout, "every execution ended")
    return found


async def started_and_done(nc: Any, ids: list[str], timeout: float = 40) -> dict[str, Any]:
    """As `all_done`, for executions a rule starts: an id may name none for a while (the rule
    records the enforcement, then starts the execution)."""

    async def check() -> dict[str, Any] | None:
        docs = {}
        for i in ids:
            msg = await nc.request("attune.api.executions.get", json.dumps({"id": i}).encode(), timeout=30)
            docs[i] = json.loads(msg.data)
            if isinstance(docs[i].get("error"), dict) or docs[i]["status"] not in ENDED:
                return None
        return docs

    found: dict[str, Any] = await eventually(check, timeout, "the rules' executions started and ended")
    return found


@pytest.fixture
def served() -> Iterator[list[Served]]:
    """The processes; their logs are printed at the end (pytest shows them when a test fails)."""
    processes: list[Served] = []
    yield processes
    for p in processes:
        if p.proc.poll() is None:
            p.proc.kill()
        _, err = p.proc.communicate()
        print(f"--- {' '.join(p.proc.args[2:4])} {p.proc.args[-3:]}\n{err[-4000:]}")


@pytest.fixture
def cluster_packs(packs_dir: Path, workflow: Any) -> Path:
    actions = packs_dir / "testpack" / "actions"
    (actions / "mark.yaml").write_text(MARK_YAML, encoding="utf-8")
    (actions / "mark.py").write_text(MARK_PY, encoding="utf-8")
    workflow("steps", STEPS)
    workflow("outer", OUTER)
    return packs_dir


@pytest.mark.timeout(120)
async def test_three_engines_share_executions_and_survive_a_sigkill(
    nats_server: Any, cluster_packs: Path, tmp_path: Path, served: list[Served]
) -> None:
    cluster = Cluster(nats_server.url, cluster_packs, tmp_path, served)
    cluster.worker("w1")
    cluster.worker("w2")
    for name in NAMES:
        await cluster.engine(name)
    log = tmp_path / "runs.log"
    nc = await nats.connect(nats_server.url)
    try:
        status = await settled(nc, 3)
        assert all(info["partitions"] for info in status["members"].values()), status  # each owns a share
        shown = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "attune_actors.cli", "cluster", "--nats", nats_server.url],
            capture_output=True, text=True, timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        assert sorted(line.split()[0] for line in shown.stdout.splitlines()[1:]) == sorted(NAMES)

        # Created through any engine (the queue group spreads the requests), every partition's.
        ids = []
        for i in range(12):
            doc = await request(nc, "executions.create", {
                "ref": "testpack.steps", "parameters": {"log": str(log), "name": f"x{i}", "seconds": 0.6}})
            ids.append(doc["id"])
        assert len({partition_of(i, PARTITIONS) for i in ids}) > 1

        # Controlled through any engine: pause one, see it paused, resume it.
        paused = await request(nc, "executions.pause", {"id": ids[0]})
        assert paused["status"] in ("pausing", "paused")

        # SIGKILL the engine that owns the most of them, mid-run.
        owners = await cluster_status(nc, Subjects())
        victims = Counter(owners.owners[partition_of(i, PARTITIONS)] for i in ids)
        victim = victims.most_common(1)[0][0]
        assert victim is not None
        cluster.engines[victim].proc.send_signal(signal.SIGKILL)
        cluster.engines[victim].proc.wait()
        died = time.monotonic()

        await request(nc, "executions.resume", {"id": ids[0]})  # routed to whoever owns it now
        await settled(nc, 2)
        took_over = time.monotonic() - died
        docs = await all_done(nc, ids)
    finally:
        await nc.close()

    assert {d["status"] for d in docs.values()} == {"succeeded"}, docs
    assert {d["output"]["last"] for d in docs.values()} == {f"x{i}-three" for i in range(12)}
    runs = Counter(log.read_text().split())
    twice = {tag: n for tag, n in runs.items() if n > 1}
    assert not twice, f"actions ran more than once: {twice}"
    assert set(runs) == {f"x{i}-{step}" for i in range(12) for step in ("one", "two", "three")}
    assert took_over < 30


@pytest.mark.timeout(120)
async def test_a_joining_engine_takes_partitions_over_and_a_paused_one_stops_acting(
    nats_server: Any, cluster_packs: Path, tmp_path: Path, served: list[Served]
) -> None:
    cluster = Cluster(nats_server.url, cluster_packs, tmp_path, served)
    cluster.worker("w1")
    cluster.worker("w2")
    await cluster.engine("alpha")
    await cluster.engine("beta")
    log = tmp_path / "runs.log"
    nc = await nats.connect(nats_server.url)
    try:
        await settled(nc, 2)
        ids = []
        for i in range(8):
            doc = await request(nc, "executions.create", {
                "ref": "testpack.steps", "parameters": {"log": str(log), "name": f"y{i}", "seconds": 0.5}})
            ids.append(doc["id"])

        await cluster.engine("gamma")  # joins mid-run: takes its share from the others
        status = await settled(nc, 3)
        assert status["members"]["gamma"]["partitions"]

        # alpha stops (SIGSTOP: no renewals, no NATS traffic) until its leases expire and the others
        # take its partitions; when it runs again it must not act on them.
        alpha = cluster.engines["alpha"].proc
        alpha.send_signal(signal.SIGSTOP)
        try:
            async def alpha_gone() -> bool:
                return "alpha" not in (await cluster_status(nc, Subjects())).members

            await eventually(alpha_gone, 20, "alpha's member key expired")
            await settled(nc, 2)
        finally:
            alpha.send_signal(signal.SIGCONT)
        await settled(nc, 3)  # back, it rejoins and is given a share again
        docs = await all_done(nc, ids)
    finally:
        await nc.close()

    assert {d["status"] for d in docs.values()} == {"succeeded"}, docs
    runs = Counter(log.read_text().split())
    twice = {tag: n for tag, n in runs.items() if n > 1}
    assert not twice, f"actions ran more than once: {twice}"
    assert set(runs) == {f"y{i}-{step}" for i in range(8) for step in ("one", "two", "three")}


@pytest.mark.timeout(120)
async def test_executions_a_single_engine_stored_are_resumed_by_the_cluster(
    nats_server: Any, cluster_packs: Path, tmp_path: Path, served: list[Served]
) -> None:
    cluster = Cluster(nats_server.url, cluster_packs, tmp_path, served)
    cluster.worker("w1")
    single = await cluster.single()
    log = tmp_path / "runs.log"
    nc = await nats.connect(nats_server.url)
    try:
        # The single engine parks a workflow whose nested workflow is mid-run (both paused).
        doc = await request(nc, "executions.create", {
            "ref": "testpack.outer", "parameters": {"log": str(log), "name": "z"}})
        root = doc["id"]
        assert not root.startswith("p")  # a single engine's id names no partition

        async def first_step_ran() -> bool:
            return log.exists() and "z-one" in log.read_text()

        await eventually(first_step_ran, 30, "the nested workflow's first action ran")
        await request(nc, "executions.pause", {"id": root})

        async def paused() -> bool:
            return (await request(nc, "executions.get", {"id": root}))["status"] == "paused"

        await eventually(paused, 30, "the workflow paused")
        # A cluster engine does not join while a single engine holds the prefix.
        refused = await asyncio.to_thread(
            run_serve, "--nats", nats_server.url, "--packs", str(cluster_packs), "--store", "nats",
            "--engine-id", "early", "--data-dir", "early", cwd=tmp_path, env=ENV)
        assert refused.returncode == 2
        assert "serves prefix attune alone" in error_lines(refused.stderr)[0]
        code, err = single.stop()
        assert code == 0, err

        # Two cluster engines: the execution's partition owner adopts it, any engine routes to it.
        await cluster.engine("alpha")
        await cluster.engine("beta")
        await settled(nc, 2)
        # ...nor does a single engine while a cluster serves it.
        refused = await asyncio.to_thread(
            run_serve, "--nats", nats_server.url, "--packs", str(cluster_packs), "--store", "nats",
            "--no-cluster", "--engine-id", "late", "--data-dir", "late", cwd=tmp_path, env=ENV)
        assert refused.returncode == 2
        assert "engines of a cluster serve prefix attune (alpha, beta)" in error_lines(refused.stderr)[0]
        child = (await request(nc, "executions.tasks", {"id": root}))["tasks"][0]
        assert child["name"] == "inner"
        shown = await request(nc, "executions.get", {"id": root})
        assert shown["status"] == "paused"
        assert root in {e["id"] for e in (await request(nc, "executions.list", {}))["executions"]}
        await request(nc, "executions.resume", {"id": root})
        docs = await all_done(nc, [root])
    finally:
        await nc.close()

    assert docs[root]["status"] == "succeeded", docs
    assert docs[root]["output"] == {"last": "z-three"}
    assert Counter(log.read_text().split()) == {"z-one": 1, "z-two": 1, "z-three": 1}


@pytest.mark.timeout(120)
async def test_the_http_api_and_metrics_of_a_cluster_engine(
    nats_server: Any, cluster_packs: Path, tmp_path: Path, served: list[Served]
) -> None:
    cluster = Cluster(nats_server.url, cluster_packs, tmp_path, served)
    cluster.worker("w1")
    http_port, metrics_ports = free_port(), {"alpha": free_port(), "beta": free_port()}
    await cluster.engine("alpha", "--http", f"127.0.0.1:{http_port}", "--metrics-port",
                         str(metrics_ports["alpha"]))
    await cluster.engine("beta", "--metrics-port", str(metrics_ports["beta"]))
    log = tmp_path / "runs.log"
    nc = await nats.connect(nats_server.url)
    try:
        status = await settled(nc, 2)
        beta_owns = set(status["members"]["beta"]["partitions"])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}/api/v1", timeout=30) as http:
            # Executions started through alpha's HTTP API land on every partition, beta's too.
            ids = []
            while len(ids) < 4 or not any(partition_of(i, PARTITIONS) in beta_owns for i in ids):
                started = await http.post("/workflows/testpack.steps/execute", json={
                    "parameters": {"log": str(log), "name": f"h{len(ids)}", "seconds": 1.0}})
                assert started.status_code == 201, started.text
                ids.append(started.json()["id"])
            on_beta = next(i for i in ids if partition_of(i, PARTITIONS) in beta_owns)

            # Its live events come from beta, through alpha's server-sent events.
            seen = []
            async with http.stream("GET", f"/workflow-executions/{on_beta}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
            assert seen[-1]["type"] == "execution"
            assert seen[-1]["status"] == "succeeded"
            assert seen[0]["status"] == "running"  # (each of its first two steps takes a second)
            assert ("three", "succeeded") in [(e["name"], e["status"]) for e in seen if e["type"] == "task"]

            docs = await all_done(nc, ids)
            shown = (await http.get(f"/workflow-executions/{on_beta}")).json()
            assert shown == docs[on_beta]  # the HTTP and NATS APIs answer alike
            tasks = (await http.get(f"/workflow-executions/{on_beta}/tasks")).json()["tasks"]
            assert [t["name"] for t in tasks] == ["one", "two", "three"]
            graph = (await http.get(f"/workflow-executions/{on_beta}/graph")).json()
            assert {n["id"] for n in graph["nodes"]} >= {"one", "two", "three"}
            listed = (await http.get("/workflow-executions", params={"limit": 100})).json()["executions"]
            assert set(ids) <= {e["id"] for e in listed}
            missing = await http.get("/workflow-executions/p0-00000000000000000000000000000000")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "not_found"
            workflow = (await http.get("/workflows/testpack.steps")).json()
            assert workflow["parameters_schema"]["required"] == ["log", "name"]

        # Each engine's metrics add up its partitions' engines; together, every execution.
        ended = 0.0
        for name, port in metrics_ports.items():
            async with httpx.AsyncClient() as scrape:
                text = (await scrape.get(f"http://127.0.0.1:{port}/metrics")).text
            assert f"attune_cluster_partitions {float(len(status['members'][name]['partitions']))}" in text
            for line in text.splitlines():
                if line.startswith('attune_executions_total{ref="testpack.steps",status="succeeded"}'):
                    ended += float(line.split()[-1])
        assert ended == len(ids)
    finally:
        await nc.close()



ONCE_SENSOR_YAML = """\
name: once
entry_point: once.py
class_name: Once
trigger_types:
  - name: ping
"""
ONCE_SENSOR_PY = """\
import asyncio
from pathlib import Path


class Once:
    def __init__(self, config):
        pass

    async def run(self, emit):
        with open(Path(__file__).parent / "starts.log", "a") as f:
            f.write("started\\n")
        await emit("ping", {"n": 1})
        await asyncio.Event().wait()
"""


def rule_yaml(name: str, trigger: str, tag: str) -> str:
    """A rule running testpack.steps, which appends `<tag>-one` .. `<tag>-three` to the file LOG."""
    return (f"ref: testpack.{name}\ntrigger: {trigger}\naction: testpack.steps\n"
            f'parameters: {{log: "LOG", name: "{tag}"}}\n')


RULES = {
    "on_ping": rule_yaml("on_ping", "{type: testpack.ping}", "ping"),
    "every": rule_yaml("every", "{type: core.interval, parameters: {seconds: 1}}", "tick"),
}


@pytest.mark.timeout(120)
async def test_timers_and_sensors_run_once_in_a_cluster_not_once_per_partition(
    nats_server: Any, cluster_packs: Path, tmp_path: Path, served: list[Served]
) -> None:
    """One engine serves all six partitions (six engines in one process). The sensor and the
    interval rule run in one partition's engine, so an event or a fire starts one execution (they
    started six), and the cluster finds the executions rules started by their ids."""
    pack = cluster_packs / "testpack"
    (pack / "sensors").mkdir()
    (pack / "sensors" / "once.yaml").write_text(ONCE_SENSOR_YAML, encoding="utf-8")
    (pack / "sensors" / "once.py").write_text(ONCE_SENSOR_PY, encoding="utf-8")
    (pack / "rules").mkdir(exist_ok=True)
    log = tmp_path / "runs.log"
    for name, text in RULES.items():
        (pack / "rules" / f"{name}.yaml").write_text(text.replace("LOG", str(log)), encoding="utf-8")
    cluster = Cluster(nats_server.url, cluster_packs, tmp_path, served)
    cluster.worker("w1")
    await cluster.engine("alpha")
    nc = await nats.connect(nats_server.url)
    try:
        await settled(nc, 1)  # every partition's engine has started (and its rules with it)

        async def enforced(rule: str, at_least: int) -> list[Any] | None:
            found: list[Any] = (await request(nc, "enforcements.list", {"rule": rule, "limit": 100}))[
                "enforcements"]
            return found if len(found) >= at_least else None

        pings = await eventually(lambda: enforced("testpack.on_ping", 1), 30, "the sensor's event enforced")
        assert len(pings) == 1, pings  # (one per partition before)
        ping = pings[0]
        ticks = await eventually(lambda: enforced("testpack.every", 3), 30, "three fires of the timer")
        docs = await started_and_done(nc, [ping["execution_id"], *(t["execution_id"] for t in ticks)])
        assert {d["status"] for d in docs.values()} == {"succeeded"}
        assert (pack / "sensors" / "starts.log").read_text().split() == ["started"]
        assert len(await enforced("testpack.on_ping", 1) or []) == 1
        # One timer keeps one phase: its fires are whole seconds apart (six had six phases).
        # (an instance id is `core.interval:<rule>:<scheduled time, ISO 8601>`)
        fired = sorted(datetime.fromisoformat(t["trigger_instance_id"].split(":", 2)[2]) for t in ticks)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fired)]
        assert all(g >= 1 and g == round(g) for g in gaps), fired
        assert Counter(log.read_text().split())["ping-three"] == 1

        # Whichever partition's engine answers: the sensor's state, and a rule disabled everywhere.
        for _ in range(3):
            listed = (await request(nc, "triggers.list", {}))["triggers"]
            assert "sensor" in next(t for t in listed if t["type"] == "testpack.ping")
        await request(nc, "rules.disable", {"ref": "testpack.every"})
        seen = [(await request(nc, "rules.get", {"ref": "testpack.every"}))["enabled"] for _ in range(12)]
        assert seen == [False] * 12  # (each on a partition picked at random)
    finally:
        await nc.close()


ON_PUSH_RULE = rule_yaml(
    "on_push", "{type: core.nats, parameters: {subject: t.push}}", "{{ trigger.payload.n }}")


@pytest.mark.timeout(120)
async def test_a_core_nats_event_claimed_by_a_partition_that_died_is_started_by_its_successor(
    nats_server: Any, cluster_packs: Path, tmp_path: Path, served: list[Served]
) -> None:
    """A partition's engine claimed the records (its partition in the execution ids) and died
    before starting the executions, so JetStream redelivers the messages. The engine now serving
    that partition must get them and start the executions (only it stores executions with those
    ids): the engine that happened to fetch a message used to acknowledge it, and the execution
    never started."""
    from attune_actors.config import NatsSettings
    from attune_actors.rules.kv_ledger import KVLedger
    from attune_actors.rules.ledger import Enforcement, enforcement_id

    pack = cluster_packs / "testpack"
    (pack / "rules").mkdir(exist_ok=True)
    log = tmp_path / "runs.log"
    (pack / "rules" / "on_push.yaml").write_text(ON_PUSH_RULE.replace("LOG", str(log)), encoding="utf-8")
    rule = "testpack.on_push"
    instances = [f"push-{n}" for n in range(4)]
    # A cluster enforces an instance in the partition its id hashes to (as timers and sensors).
    claims = {i: f"p{zlib.crc32(i.encode()) % PARTITIONS}-{enforcement_id(i, rule)}" for i in instances}
    ledger = KVLedger(NatsSettings(url=nats_server.url))
    await ledger.open()
    try:
        await ledger.claim([
            Enforcement(enforcement_id(i, rule), rule, i, "core.nats", True, e) for i, e in claims.items()
        ])
    finally:
        await ledger.close()
    cluster = Cluster(nats_server.url, cluster_packs, tmp_path, served)
    cluster.worker("w1")
    await cluster.engine("alpha")
    nc = await nats.connect(nats_server.url)
    try:
        await settled(nc, 1)

        async def reading() -> bool:
            listed = (await request(nc, "triggers.list", {}))["triggers"]
            return next(t for t in listed if t["type"] == "core.nats")["status"] == "running"

        await eventually(reading, 30, "core.nats read")
        js = nc.jetstream()
        for n, instance in enumerate(instances):
            await js.publish("t.push", json.dumps({"n": f"e{n}"}).encode(), headers={"Nats-Msg-Id": instance})

        docs = await started_and_done(nc, list(claims.values()))
        assert {d["status"] for d in docs.values()} == {"succeeded"}
        assert Counter(log.read_text().split()) == {
            f"e{n}-{step}": 1 for n in range(len(instances)) for step in ("one", "two", "three")}
        records = (await request(nc, "enforcements.list", {"rule": rule}))["enforcements"]
        assert sorted(r["execution_id"] for r in records) == sorted(claims.values())
    finally:
        await nc.close()


@pytest.mark.timeout(120)
async def test_a_cluster_after_a_single_engine_reads_core_nats_events_where_it_stopped(
    nats_server: Any, cluster_packs: Path, tmp_path: Path, served: list[Served]
) -> None:
    """A single engine read the trigger stream through a consumer shared by every engine; a
    cluster's partitions read it through consumers of their own, which start where the shared one
    stopped: an event the single engine enforced is not met again by a rule added since."""
    pack = cluster_packs / "testpack"
    (pack / "rules").mkdir(exist_ok=True)
    log = tmp_path / "runs.log"
    (pack / "rules" / "on_push.yaml").write_text(ON_PUSH_RULE.replace("LOG", str(log)), encoding="utf-8")
    cluster = Cluster(nats_server.url, cluster_packs, tmp_path, served)
    cluster.worker("w1")
    single = await cluster.single()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()

    async def enforced(rule: str, count: int) -> list[Any] | None:
        found: list[Any] = (await request(nc, "enforcements.list", {"rule": rule}))["enforcements"]
        return found if len(found) >= count else None

    async def reading() -> bool:
        listed = (await request(nc, "triggers.list", {}))["triggers"]
        return next(t for t in listed if t["type"] == "core.nats")["status"] == "running"

    try:
        await eventually(reading, 30, "core.nats read by the single engine")
        await js.publish("t.push", b'{"n": "before"}', headers={"Nats-Msg-Id": "before"})
        first = await eventually(lambda: enforced("testpack.on_push", 1), 30, "the single engine enforced")
        await started_and_done(nc, [first[0]["execution_id"]])
        code, err = single.stop()
        assert code == 0, err

        (pack / "rules" / "also.yaml").write_text(
            ON_PUSH_RULE.replace("on_push", "also").replace("LOG", str(log)), encoding="utf-8")
        await cluster.engine("alpha")
        await settled(nc, 1)
        await eventually(reading, 30, "core.nats read by the cluster")
        await js.publish("t.push", b'{"n": "after"}', headers={"Nats-Msg-Id": "after"})
        also = await eventually(lambda: enforced("testpack.also", 1), 30, "the new rule's enforcement")
        on_push = await eventually(lambda: enforced("testpack.on_push", 2), 30, "the event after")
        await started_and_done(nc, [r["execution_id"] for r in [*also, *on_push]])
        # (what a replay of the stream would have added: the new rule's enforcement of "before")
        assert [r["trigger_instance_id"] for r in await enforced("testpack.also", 1) or []] == ["after"]
    finally:
        await nc.close()
    runs = {"before": 1, "after": 2}  # (the single engine's rule, then both rules)
    assert Counter(log.read_text().split()) == {
        f"{n}-{step}": count for n, count in runs.items() for step in ("one", "two", "three")}
