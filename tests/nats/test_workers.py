"""The distributed runtime end to end: an engine with the NATS transport, real worker processes, a real
nats-server. Workers run `python -m attune_actors.nats.worker` over tests/nats/worker_packs, whose
actions report the pid that ran them (and leave marker files when they start).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers import eventually as until
from nats.aio.client import Client
from nats.aio.msg import Msg

from attune_actors import Engine, codec
from attune_actors.config import NatsSettings
from attune_actors.nats.connection import connect
from attune_actors.nats.subjects import Subjects
from attune_actors.nats.transport import NatsTransport

WORKER_PACKS = Path(__file__).parent / "worker_packs"
HEARTBEAT = 0.25  # worker heartbeat interval in these tests
HEARTBEAT_TIMEOUT = 1.5  # the engine abandons attempts of a worker silent this long
T = TypeVar("T")


@dataclass
class WorkerProc:
    id: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Heartbeats:
    """Every heartbeat seen, by worker id."""

    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    async def on_msg(self, msg: Msg) -> None:
        body = codec.decode(msg.data)
        self.seen[body["worker"]] = body
        self.history.append(body)

    def released(self, worker: str, key: str) -> bool:
        """Whether a heartbeat of `worker` listed `key` and a later one did not (its outcome is stored)."""
        held = False
        for body in self.history:
            if body["worker"] != worker:
                continue
            listed = any(key in keys for keys in body["running"].values())
            if listed:
                held = True
            elif held:
                return True
        return False

    async def ready(self, *workers: WorkerProc) -> None:
        for w in workers:
            await until(lambda w=w: w.id in self.seen or w.proc.poll() is not None, f"worker {w.id} to start")  # type: ignore[misc]
            assert w.proc.poll() is None, w.output()


class Proxy:
    """A TCP relay to the nats-server; `cut()` drops every connection and refuses new ones until `mend()`."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.refusing = False
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"nats://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.pipes.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        self.refusing = True
        for writer in self.pipes:
            writer.close()
        self.pipes.clear()

    def mend(self) -> None:
        self.refusing = False

    async def close(self) -> None:
        await self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class Cluster:
    server: Any
    tmp: Path
    nc: Client
    heartbeats: Heartbeats
    engine: Engine = field(init=False)
    transport: NatsTransport = field(init=False)
    workers: list[WorkerProc] = field(default_factory=list)

    async def open_engine(
        self, *, nc: Client | None = None, engine_id: str = "test-engine", data_dir: Path | None = None
    ) -> Engine:
        """A started engine (by default the same id and data dir every time: a restart of it)."""
        engine: Engine | None = None

        def action(ref: str) -> Any:
            assert engine is not None
            return engine.catalog.action(ref)

        transport = NatsTransport(
            nc or self.nc, Subjects(), engine_id=engine_id, actions=action,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
        )
        engine = Engine(packs=[WORKER_PACKS], data_dir=data_dir or self.tmp / "data", transport=transport)
        await engine.start()
        if nc is None:
            self.engine, self.transport = engine, transport
        return engine

    def worker(self, name: str, *extra: str) -> WorkerProc:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "attune_actors.nats.worker", "--nats", self.server.url,
                 "--packs", str(WORKER_PACKS), "--worker-id", name, "--heartbeat", str(HEARTBEAT), *extra],
                stdout=subprocess.DEVNULL, stderr=err, cwd=self.tmp,
                env={**os.environ, "ATTUNE_NATS__CONNECT_TIMEOUT": "2"},
            )
        w = WorkerProc(name, proc, log)
        self.workers.append(w)
        return w

    async def workers_ready(self, *names: str, extra: tuple[str, ...] = ()) -> list[WorkerProc]:
        started = [self.worker(n, *extra) for n in names]
        await self.heartbeats.ready(*started)
        return started


@pytest.fixture
async def cluster(nats_server: Any, tmp_path: Path) -> AsyncIterator[Cluster]:
    nc = await connect(NatsSettings(url=nats_server.url), name="test engine")
    heartbeats = Heartbeats()
    await nc.subscribe(Subjects().heartbeats, cb=heartbeats.on_msg)
    c = Cluster(nats_server, tmp_path, nc, heartbeats)
    await c.open_engine()
    try:
        yield c
    finally:
        await c.engine.close()
        await nc.close()
        for w in c.workers:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait()


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder


def started_runs(folder: Path) -> list[tuple[str, int, int]]:
    """(run id, attempt, pid) of every slow run that started, from its marker file."""
    out = []
    for marker in folder.iterdir():
        run_id, attempt, pid = marker.name.rsplit(".", 2)
        starts = marker.read_text().count("started")  # one line per start
        out.extend([(run_id, int(attempt), int(pid))] * starts)
    return sorted(out, key=lambda r: r[1])


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    await until(lambda: proc.poll() is not None, "a worker to exit", timeout)
    return proc.returncode


# ------------------------------------------------------------------------------------------ tests


async def test_two_workers_share_the_load(cluster: Cluster) -> None:
    # one on asyncio's own loop, one on the default (uvloop, a dependency except on Windows)
    w1, w2 = cluster.worker("w1", "--loop", "asyncio"), cluster.worker("w2")
    await cluster.heartbeats.ready(w1, w2)
    execution = await cluster.engine.execute("natstest.share", {"n": 40, "seconds": 0.05})
    chain = await cluster.engine.execute("natstest.chain", {"n": 20})
    final = await cluster.engine.wait(execution.id, timeout=30)
    assert final.status == "succeeded", final.error
    assert set(final.output["pids"]) == {w1.pid, w2.pid}
    final_chain = await cluster.engine.wait(chain.id, timeout=30)
    assert final_chain.status == "succeeded", final_chain.error
    assert final_chain.output == {"left": 1}
    assert len(final_chain.tasks) == 1 + 3 * 20
    # submit -> worker start is measured for every attempt
    assert len(cluster.transport.dispatch_latencies) >= 40 + 3 * 20
    assert "concurrency 16, loop asyncio" in w1.log.read_text()
    default = "asyncio" if sys.platform == "win32" else "uvloop"
    assert f"concurrency 16, loop {default}" in w2.log.read_text()


async def test_killed_worker_run_is_retried_on_the_other(cluster: Cluster, markers: Path) -> None:
    w1, w2 = await cluster.workers_ready("w1", "w2")
    execution = await cluster.engine.execute(
        "natstest.slow_retry", {"seconds": 1.0, "marker_dir": str(markers)}
    )
    _, attempt, pid = (await until(lambda: started_runs(markers), "the slow run to start"))[0]
    assert attempt == 1
    victim, survivor = (w1, w2) if pid == w1.pid else (w2, w1)
    victim.proc.send_signal(signal.SIGKILL)
    final = await cluster.engine.wait(execution.id, timeout=20)
    assert final.status == "succeeded", final.error
    assert final.output["attempts"] == 2
    assert final.output["result"] == {"pid": survivor.pid, "attempt": 2}
    assert [(a, p) for _, a, p in started_runs(markers)] == [(1, victim.pid), (2, survivor.pid)]


async def test_killed_worker_run_without_retry_is_abandoned(cluster: Cluster, markers: Path) -> None:
    (w1,) = await cluster.workers_ready("w1")
    execution = await cluster.engine.execute(
        "natstest.slow_once", {"seconds": 30, "marker_dir": str(markers)}
    )
    await until(lambda: started_runs(markers), "the slow run to start")
    w1.proc.send_signal(signal.SIGKILL)
    final = await cluster.engine.wait(execution.id, timeout=20)
    assert final.status == "failed"
    (task,) = final.tasks
    assert task.status == "abandoned"
    assert task.error is not None
    assert "worker w1 stopped responding" in task.error


async def test_server_restart_mid_run_every_execution_completes(cluster: Cluster, markers: Path) -> None:
    w1, w2 = await cluster.workers_ready("w1", "w2")
    engine = cluster.engine
    executions = [
        await engine.execute("natstest.share", {"n": 60, "seconds": 0.1}),
        await engine.execute("natstest.chain", {"n": 200}),
        await engine.execute("natstest.slow_once", {"seconds": 1.5, "marker_dir": str(markers)}),
    ]
    await until(lambda: started_runs(markers), "the slow run to start")
    for execution in executions:
        assert (await engine.get(execution.id)).status == "running"
    await asyncio.to_thread(cluster.server.stop)
    # work submitted while the server is down is sent when it is back
    executions.append(await engine.execute("natstest.share", {"n": 10, "seconds": 0.0}))
    await asyncio.to_thread(cluster.server.start)
    for execution in executions:
        final = await engine.wait(execution.id, timeout=40)
        assert final.status == "succeeded", (final.ref, final.error)
    assert final.output["pids"]
    assert w1.proc.poll() is None
    assert w2.proc.poll() is None
    assert "connection back" in w1.output()


async def test_outcomes_wait_in_the_stream_while_the_engine_is_cut_off(
    cluster: Cluster, markers: Path
) -> None:
    (w1,) = await cluster.workers_ready("w1")
    proxy = Proxy(cluster.server.port)
    await proxy.start()
    nc = await connect(NatsSettings(url=proxy.url), name="proxied engine")
    try:
        engine = await cluster.open_engine(nc=nc, engine_id="proxied", data_dir=cluster.tmp / "data2")
        execution = await engine.execute("natstest.slow_once", {"seconds": 1.0, "marker_dir": str(markers)})
        ((run_id, _, _),) = await until(lambda: started_runs(markers), "the slow run to start")
        cut_at = time.monotonic()
        await proxy.cut()
        # the worker finishes and reports meanwhile, and the engine hears no heartbeat for longer than
        # its heartbeat timeout: after the outage the attempt is not abandoned, its outcome is applied
        await until(
            lambda: cluster.heartbeats.released("w1", f"{run_id}//1")
            and time.monotonic() - cut_at > HEARTBEAT_TIMEOUT + 0.5,
            "the outcome to be stored while the engine is cut off",
        )
        assert not nc.is_connected
        proxy.mend()
        final = await engine.wait(execution.id, timeout=15)
        assert final.status == "succeeded", final.error
        assert final.tasks[0].result == {"pid": w1.pid, "attempt": 1}
        assert len(started_runs(markers)) == 1
        await engine.close()
    finally:
        await nc.close()
        await proxy.close()


async def test_a_restarted_engine_runs_again_what_its_shutdown_canceled(
    cluster: Cluster, markers: Path
) -> None:
    (w1,) = await cluster.workers_ready("w1")
    execution = await cluster.engine.execute(
        "natstest.slow_once", {"seconds": 0.5, "marker_dir": str(markers)}
    )
    await until(lambda: started_runs(markers), "the slow run to start")
    await cluster.engine.close()  # its task actors stop their attempts: the worker reports `canceled`
    await until(lambda: "canceling" in w1.output(), "the attempt to be canceled")
    engine = await cluster.open_engine()  # recovers the execution and re-submits the attempt
    final = await engine.wait(execution.id, timeout=15)
    assert final.status == "succeeded", final.error  # the stale `canceled` outcome was not applied
    assert [attempt for _, attempt, _ in started_runs(markers)] == [1, 1]


async def test_cancel_running_kills_the_shell_command_on_the_worker(cluster: Cluster, tmp_path: Path) -> None:
    (w1,) = await cluster.workers_ready("w1")
    pid_file = tmp_path / "sleeper.pid"
    execution = await cluster.engine.execute("natstest.shell", {"pid_file": str(pid_file)})
    text = await until(lambda: pid_file.read_text().strip() if pid_file.exists() else None,
                       "the command to start")
    pid = int(text)
    os.kill(pid, 0)  # running
    await cluster.engine.cancel(execution.id)
    final = await cluster.engine.wait(execution.id, timeout=15)
    assert final.status == "canceled"
    assert final.tasks[0].status == "canceled"

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await until(gone, "the shell command to be killed", timeout=10)
    assert "canceling" in w1.output()


async def test_malformed_dispatch_is_dead_lettered_and_the_worker_keeps_serving(cluster: Cluster) -> None:
    (w1,) = await cluster.workers_ready("w1")
    subjects = Subjects()
    dead: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    async def on_dead(msg: Msg) -> None:
        dead.append(json.loads(msg.data))

    async def on_event(msg: Msg) -> None:
        events.append(json.loads(msg.data))

    await cluster.nc.subscribe(subjects.dead_letters, cb=on_dead)
    await cluster.nc.subscribe(subjects.service_events, cb=on_event)
    js = cluster.nc.jetstream()
    await js.publish(subjects.runs("natstest", "python", "r/1/1"), b"\xc1 not msgpack")
    await js.publish(subjects.runs("natstest", "python", "r/2/1"),
                     codec.encode({"v": 1, "engine": "e", "run": []}))
    await js.publish(subjects.runs("core", "noop", "r/3/1"), codec.encode(["a", "list"]))
    await until(lambda: len(dead) >= 3, "three dead-letter records")
    assert {d["code"] for d in dead} == {"bad_dispatch"}
    assert {d["worker_id"] for d in dead} == {"w1"}
    assert any("not a msgpack document" in d["reason"] for d in dead)
    await until(lambda: len(events) >= 3, "three error events")
    assert {e["type"] for e in events} == {"error"}
    # a cancel that makes no sense is reported the same way
    await cluster.nc.publish(subjects.cancel("w1"), b"{}")
    await until(lambda: any(d["code"] == "bad_cancel" for d in dead), "a bad_cancel record")

    execution = await cluster.engine.execute("natstest.share", {"n": 5, "seconds": 0.0})
    final = await cluster.engine.wait(execution.id, timeout=15)
    assert final.status == "succeeded"
    assert set(final.output["pids"]) == {w1.pid}
    assert w1.proc.poll() is None


async def test_sigterm_drains_the_running_attempt_then_exits_0(cluster: Cluster, markers: Path) -> None:
    (w1,) = await cluster.workers_ready("w1")
    execution = await cluster.engine.execute(
        "natstest.slow_once", {"seconds": 1.0, "marker_dir": str(markers)}
    )
    await until(lambda: started_runs(markers), "the slow run to start")
    w1.proc.send_signal(signal.SIGTERM)
    # while it drains, new work is not taken by it: it waits for the next worker
    later = await cluster.engine.execute("natstest.share", {"n": 3, "seconds": 0.0})
    assert await wait_exit(w1.proc) == 0, w1.output()
    final = await cluster.engine.wait(execution.id, timeout=10)
    assert final.status == "succeeded", final.error
    assert final.tasks[0].result == {"pid": w1.pid, "attempt": 1}
    assert (await cluster.engine.get(later.id)).status == "running"
    (w2,) = await cluster.workers_ready("w2")
    final_later = await cluster.engine.wait(later.id, timeout=15)
    assert final_later.status == "succeeded"
    assert set(final_later.output["pids"]) == {w2.pid}


async def test_specialised_workers_take_only_their_subjects(cluster: Cluster) -> None:
    (python,) = await cluster.workers_ready("py", extra=("--subjects", "natstest.python"))
    (builtin,) = await cluster.workers_ready("core", extra=("--subjects", "core.*"))
    execution = await cluster.engine.execute("natstest.chain", {"n": 5})
    final = await cluster.engine.wait(execution.id, timeout=20)
    assert final.status == "succeeded", final.error
    middles = [t.result for t in final.tasks if t.name == "middle"]
    assert middles == [{"pid": python.pid}] * 5
    # a set that overlaps another set's subjects is refused: one line, exit 2
    overlapping = cluster.worker("bad", "--subjects", "natstest.*")
    assert await wait_exit(overlapping.proc) == 2
    lines = overlapping.output().strip().splitlines()
    assert lines[-1].startswith("error: cannot create consumer"), lines
    assert builtin.proc.poll() is None


def test_worker_command_errors_are_one_line_exit_2(nats_server: Any, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "attune_actors.nats.worker"]
    env = {**os.environ, "ATTUNE_NATS__CONNECT_TIMEOUT": "0.5"}
    down = subprocess.run([*base, "--nats", "nats://127.0.0.1:1"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=30)
    assert down.returncode == 2
    assert len(down.stderr.strip().splitlines()) == 1, down.stderr
    assert down.stderr.startswith("error: cannot connect to NATS at nats://127.0.0.1:1")
    packs = subprocess.run([*base, "--nats", nats_server.url, "--packs", str(tmp_path / "nope")],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert packs.returncode == 2
    assert packs.stderr.strip() == f"{tmp_path / 'nope'}: no such pack folder"
    loop = subprocess.run([*base, "--nats", nats_server.url, "--loop", "trio"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert loop.returncode == 2
    assert "--loop: invalid choice: 'trio'" in loop.stderr
    bad = subprocess.run([*base, "--nats", nats_server.url, "--subjects", "a.b.c"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert bad.returncode == 2
    assert "is not PACK.RUNNER" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1



def _start_engine_process(cluster: Cluster, markers: Path, engine_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "dispatch_and_hang.py"), cluster.server.url,
         str(WORKER_PACKS), str(cluster.tmp / "crashed"), engine_id, str(markers)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )


async def _engine_dies_with_an_attempt_queued(cluster: Cluster, markers: Path, engine_id: str) -> str:
    """SIGKILL an engine (a process of its own) once its attempt is queued and no worker runs: the
    execution id. Its executions are in cluster.tmp / "crashed" (SQLite)."""
    proc = _start_engine_process(cluster, markers, engine_id)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=30)
        assert line, "the engine exited before its attempt was queued"
    finally:
        proc.kill()
        proc.wait()
    return line.decode().strip()


@pytest.mark.parametrize("same_id", [True, False], ids=["same engine id", "another engine id"])
async def test_an_attempt_queued_by_a_dead_engine_runs_once(
    cluster: Cluster, markers: Path, same_id: bool
) -> None:
    execution_id = await _engine_dies_with_an_attempt_queued(cluster, markers, "crashy")
    js = cluster.nc.jetstream()
    assert (await js.stream_info(Subjects().runs_stream)).state.messages == 1
    # The next engine resumes the execution and submits the attempt again: with the same id, the
    # queued copy stands (its worker will report here); under another id, ours replaces it.
    engine = await cluster.open_engine(
        nc=cluster.nc, engine_id="crashy" if same_id else "renamed", data_dir=cluster.tmp / "crashed"
    )
    try:
        assert (await engine.get(execution_id)).status == "running"
        # one attempt at a time: a second copy would run after the first (not be taken as a redelivery)
        await cluster.workers_ready("w1", extra=("--concurrency", "1"))
        final = await engine.wait(execution_id, timeout=30)
        assert final.status == "succeeded", final.error
        assert final.tasks[0].attempts == 1

        async def settled() -> bool:  # nothing queued, nothing held: a second copy would have run
            held = cluster.heartbeats.seen["w1"]["running"]
            queued = (await js.stream_info(Subjects().runs_stream)).state.messages
            return queued == 0 and not any(held.values())

        await until(settled, "the runs stream to be empty and the worker idle")
        assert len(started_runs(markers)) == 1  # the action ran once
    finally:
        await engine.close()
