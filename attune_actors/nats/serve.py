"""`attune-actors serve`: one engine process on NATS (control service, events, actions run by workers).

    attune-actors serve [--nats URL] [--packs DIR]... [--data-dir DIR] [--store sqlite|nats]
                        [--subject-prefix PREFIX] [--engine-id ID] [--cluster | --no-cluster]
                        [--http HOST:PORT] [--metrics-port [HOST:]PORT] [--loop auto|uvloop|asyncio]

`--http HOST:PORT` also serves the HTTP API (`attune_actors.api`, docs/http.md); `--http` without
`--nats` runs an embedded engine instead: actions in this process, no NATS at all.

The engine sends action attempts to `attune-actors worker` processes through the NATS transport
(there are no in-process workers), answers the control API (`attune_actors.nats.service`) and
publishes every status change on `<prefix>.events.executions.<id>`. Executions are kept in SQLite
under the data dir (`--store sqlite`, the default) or in JetStream (`--store nats`).

With `--store nats` (unless `--no-cluster`, setting `cluster.enabled`), several engines share the
deployment: each owns a share of the partitions, takes over those of an engine that dies, and any
of them answers any request, on NATS or HTTP (`serve_cluster`; `attune_actors.nats.cluster`,
`attune_actors.nats.partitions`, `attune_actors.nats.routed`).

Otherwise (`--store sqlite`, or `--no-cluster`) one engine per deployment: `serve` holds an
exclusive lease, renewed while it runs, on its subject prefix (a JetStream KV entry, so it covers
the `nats` store and the control API alike); with `--store sqlite` it also locks the data dir
(`<data_dir>/engine.lock`, released by the OS when the process dies). A second engine against the
same prefix or data dir refuses to start, and so do a single engine and a cluster on one prefix.
After a crash the prefix lease expires within its TTL.

The lease renewals and the control service run on a sidecar thread with its own NATS connection
(`attune_actors.nats.sidecar`), so they go on while the engine's loop is busy; the lease is given
up only when the engine's loop has not answered for `STALL` seconds (it is wedged), and if it then
cannot even stop, the process exits with status 1 so that another engine can take over.

It runs until SIGTERM or SIGINT, then stops answering, closes the engine (unfinished executions are
resumed by the next `serve`), releases the lease and exits 0; if it loses the lease (it could not
renew it for its TTL, and another engine may have taken over), it stops the same way and exits 1.
Startup errors (cannot connect, lease held, data dir locked, bad settings) are one line on stderr
and exit status 2. Invalid workflows do not stop it: the engine leaves them out and says why when
they are executed. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from nats.aio.client import Client

from attune_actors.config import Settings, configure_logging, load_settings
from attune_actors.engine.engine import Engine
from attune_actors.errors import AttuneError, ConfigError, StoreError, TransportError
from attune_actors.kv.secrets import KEY_FILE_NAME, generate_key
from attune_actors.nats import loop as event_loop
from attune_actors.nats.cluster import ClusterMember, cluster_status, new_execution_id
from attune_actors.nats.connection import connect
from attune_actors.nats.lease import EngineLease
from attune_actors.nats.partitions import ClusterRouter, PartitionHost
from attune_actors.nats.payload import PayloadCipher
from attune_actors.nats.routed import RoutedEngine
from attune_actors.nats.service import ControlService
from attune_actors.nats.sidecar import Heartbeat, Sidecar
from attune_actors.nats.store import NatsStore
from attune_actors.nats.subjects import Subjects
from attune_actors.nats.transport import NatsTransport
from attune_actors.observability.metrics import MergedMetrics, listen_address, serve_metrics
from attune_actors.spec.model import ActionSpec

if TYPE_CHECKING:
    from attune_actors.api import HttpServer
    from attune_actors.api.deps import EngineApi

log = logging.getLogger("attune_actors.nats.serve")

EXIT_OK, EXIT_LEASE_LOST, EXIT_BAD_INPUT = 0, 1, 2
LEASE_TTL = 10.0  # seconds; renewed well within, so a crashed engine's lease lapses this soon
STALL = 30.0  # seconds the engine's loop may not answer before the lease is given up
LOCK_FILE = "engine.lock"
# Seconds an outcome a partition's previous owner took but did not acknowledge waits before it is
# delivered again: a new owner waits up to this long before it resumes the partition.
PARTITION_ACK_WAIT = 3.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `serve` command; its parser sets `func(args) -> exit status`."""
    p = subparsers.add_parser(
        "serve",
        help="run an engine on NATS: control service, events, actions run by workers",
        description=DESCRIPTION,
    )
    _add_arguments(p)


def main(argv: list[str] | None = None) -> int:
    """`python -m attune_actors.nats.serve [--config FILE] [--log-level LEVEL] [serve options]`."""
    parser = argparse.ArgumentParser(prog="attune-actors serve", description=DESCRIPTION)
    parser.add_argument("--config", help="settings file (default: $ATTUNE_CONFIG, else built-in defaults)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:  # a second SIGINT while stopping
        return 130
    return code


DESCRIPTION = (
    "Run an engine on NATS until SIGTERM/SIGINT. Actions run on `attune-actors worker` processes; "
    "clients use the control service on <prefix>.api.* (see docs/distributed.md)."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nats", metavar="URL", help="NATS server URL(s), comma-separated (default: setting nats.url)"
    )
    p.add_argument("--packs", action="append", metavar="DIR", help="folder of pack folders (repeatable)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default .attune)")
    p.add_argument(
        "--store",
        choices=("sqlite", "nats"),
        help="where executions are kept: SQLite under the data dir (default) or JetStream",
    )
    p.add_argument(
        "--subject-prefix", metavar="PREFIX", help="subject prefix (default: setting nats.subject_prefix)"
    )
    p.add_argument(
        "--engine-id",
        metavar="ID",
        help="this engine's name on NATS (its results subject); default: the host name",
    )
    p.add_argument(
        "--cluster",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --store nats: share the deployment with other engines (partitions, failover; the "
        "default); --no-cluster: hold the exclusive engine lease instead (setting cluster.enabled)",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve the HTTP API there; without --nats, on an embedded engine (no NATS needed)",
    )
    p.add_argument(
        "--metrics-port",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (host default 127.0.0.1); "
        "with --http they are at /metrics there too",
    )
    event_loop.add_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The `serve` command: exit 0 after a signal, 1 if the lease was lost, 2 if it cannot start."""
    try:
        settings = serve_settings(args)
        configure_logging(settings)
        engine_id = args.engine_id or default_engine_id()
        metrics_at = getattr(args, "metrics_port", None)
        metrics_address = listen_address(metrics_at, "--metrics-port") if metrics_at else None
        return event_loop.run(getattr(args, "loop", "auto"), lambda: serve(
            settings, engine_id=engine_id, http=getattr(args, "http", None), metrics_address=metrics_address,
        ))
    except AttuneError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT


def serve_settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(
        getattr(args, "config", None),
        overrides={
            "packs": args.packs,
            "data_dir": args.data_dir,
            "store": args.store,
            # `--http` alone runs an embedded engine: actions in this process, no NATS.
            "transport": "inprocess" if getattr(args, "http", None) and not args.nats else "nats",
            "nats": {"url": args.nats, "subject_prefix": args.subject_prefix},
            "cluster": {"enabled": getattr(args, "cluster", None)},
            "logging": {"level": getattr(args, "log_level", None)},
        },
    )
    if getattr(args, "cluster", None) and settings.store != "nats":
        raise ConfigError("a cluster keeps executions in JetStream: use --store nats with --cluster")
    if settings.store not in ("sqlite", "nats"):
        raise ConfigError(
            f"serve keeps executions durable: store must be sqlite or nats, not {settings.store}"
        )
    PayloadCipher.from_settings(settings.nats)  # a bad key is an error before connecting
    return settings


def clustered(settings: Settings) -> bool:
    """Whether `serve` joins a cluster of engines (the default with the nats store)."""
    return settings.store == "nats" and settings.cluster.enabled


def default_engine_id() -> str:
    return socket.gethostname().split(".")[0] or "engine"


async def serve(
    settings: Settings,
    *,
    engine_id: str,
    stop: asyncio.Event | None = None,
    http: str | None = None,
    lease_ttl: float = LEASE_TTL,
    stall: float = STALL,
    metrics_address: tuple[int, str] | None = None,
) -> int:
    """Run one engine until `stop` is set (default: until SIGTERM or SIGINT); the exit status.

    With `http` ("HOST:PORT") it also serves the HTTP API there; with `settings.transport`
    "inprocess", it runs an embedded engine and no NATS at all (`serve_embedded`). With
    `metrics_address` (port, host), the engine's Prometheus metrics are served there.

    Raises AttuneError when it cannot start: StoreError for a held lease or a locked data dir,
    TransportError when NATS cannot be reached, ConfigError for an address it cannot or may not
    listen on. Returns 0 after a stop, 1 after losing the lease (another engine may have taken
    over: this one stops at once).
    """
    if stop is None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
    if settings.transport == "inprocess":
        return await serve_embedded(settings, stop=stop, http=http, metrics_address=metrics_address)
    if clustered(settings):
        return await serve_cluster(settings, engine_id=engine_id, stop=stop, stall=stall, http=http,
                                   metrics_address=metrics_address)
    lost: list[str] = []

    def lease_lost(reason: str) -> None:
        lost.append(reason)
        stop.set()

    subjects = Subjects(settings.nats.subject_prefix)
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:  # unwinds in reverse: service, engine, lease, ...
        if settings.store == "sqlite":
            stack.enter_context(DataDirLock(settings.data_path))
        nc, heartbeat, sidecar = await _connections(stack, settings, engine_id)

        def lost_on_sidecar(reason: str) -> None:
            loop.call_soon_threadsafe(lease_lost, reason)
            sidecar.loop.call_later(lease_ttl, _exit_if_stuck, heartbeat, lease_ttl)

        lease = EngineLease(
            sidecar.nc,
            subjects,
            holder=f"{engine_id}-{uuid.uuid4().hex[:8]}",
            ttl=lease_ttl,
            on_lost=lost_on_sidecar,
            alive=lambda: heartbeat.age() < stall,
        )
        await sidecar.run(lease.acquire())
        stack.push_async_callback(lambda: sidecar.run(lease.release()))
        await sidecar.run(_no_cluster_on(sidecar.nc, subjects))
        await sidecar.run(lease.start_renewing())
        engine = build_engine(settings, nc, subjects, engine_id)
        engine.metrics.counter_from("attune_lease_renewals_total", "Renewals of the engine lease.",
                                    lambda: lease.renewals)
        engine.metrics.gauge("attune_lease_held", "1 while this engine holds its lease.",
                             lambda: 1.0 if lease.held else 0.0)
        if metrics_address is not None:
            stack.callback(serve_metrics(engine.metrics, *metrics_address))
        server = _http_server(engine, http)
        stack.push_async_callback(engine.close)
        await engine.start()
        service = ControlService(engine, nc, subjects, engine_id=engine_id, sidecar=sidecar)
        stack.push_async_callback(service.stop)
        await service.start()
        await _start_http(stack, server)
        log.info(
            "engine %s serving on %s (subjects %s.*, store %s, data dir %s, loop %s)",
            engine_id,
            settings.nats.url,
            subjects.prefix,
            settings.store,
            settings.data_dir,
            event_loop.running_loop_name(),
        )
        await stop.wait()
        log.info("engine %s stopping", engine_id)
    log.info("engine %s stopped", engine_id)
    return EXIT_LEASE_LOST if lost else EXIT_OK


async def _connections(
    stack: contextlib.AsyncExitStack, settings: Settings, engine_id: str
) -> tuple[Client, Heartbeat, Sidecar]:
    """The engine's NATS connection, its loop heartbeat, and the sidecar thread with its own
    connection (lease renewals and the control service), each closed by `stack`."""
    nc = await _connect(settings, engine_id)
    stack.push_async_callback(_close, nc)
    heartbeat = Heartbeat()
    heartbeat.start()
    stack.push_async_callback(heartbeat.stop)
    sidecar = Sidecar(f"attune-sidecar {engine_id}")
    await sidecar.start(lambda: _connect(settings, f"{engine_id} control"))
    stack.push_async_callback(sidecar.stop)
    return nc, heartbeat, sidecar


async def serve_cluster(
    settings: Settings,
    *,
    engine_id: str,
    stop: asyncio.Event,
    stall: float,
    http: str | None = None,
    metrics_address: tuple[int, str] | None = None,
) -> int:
    """One engine of a cluster (docs/distributed.md, "Several engines") until `stop`.

    Its HTTP API (`http`) takes every call where the NATS service takes it (`RoutedEngine`); its
    metrics are those of the partition engines it runs, added up."""
    subjects = Subjects(settings.nats.subject_prefix)
    loop = asyncio.get_running_loop()
    ttl = settings.cluster.lease_ttl
    wedged: list[str] = []

    def lapsed(reason: str) -> None:
        wedged.append(reason)
        stop.set()

    async with contextlib.AsyncExitStack() as stack:
        nc, heartbeat, sidecar = await _connections(stack, settings, engine_id)
        secret_key = settings.secret_key or _shared_secret_key(settings.data_path)

        def lapsed_on_sidecar(reason: str) -> None:
            # As a standalone engine whose lease lapsed: stop once the loop answers again, or exit
            # now if it still does not (the others run its partitions already).
            loop.call_soon_threadsafe(lapsed, reason)
            sidecar.loop.call_later(ttl, _exit_if_stuck, heartbeat, ttl)

        def build(p: int) -> tuple[Engine, NatsTransport]:
            partition = dataclasses.replace(
                settings, data_dir=str(settings.data_path / "partitions" / f"p{p}"), secret_key=secret_key
            )
            store = NatsStore(nc, subjects, partition=(p, settings.cluster.partitions), owner=engine_id,
                              close_timeout=5.0)
            return _engine_on_nats(partition, nc, subjects, subjects.partition_engine_id(p), store,
                                   new_id=lambda: new_execution_id(p), owned=lambda: member.owns(p),
                                   partition=(p, settings.cluster.partitions))

        host = PartitionHost(nc, subjects, build=build, engine_id=engine_id)
        host.bind()
        stack.push_async_callback(host.close)
        metrics = MergedMetrics(lambda: [engine.metrics for engine in list(host.engines.values())])
        metrics.gauge("attune_cluster_partitions", "Partitions whose engine runs in this process.",
                      lambda: float(len(host.engines)))
        # The HTTP API's calls take the NATS service's routes, from this loop's connection.
        routed = RoutedEngine(ClusterRouter(nc, subjects, settings.cluster.partitions), nc, subjects,
                              settings, metrics)
        server = _http_server(routed, http)
        if metrics_address is not None:
            stack.callback(serve_metrics(metrics, *metrics_address))

        def gain(p: int) -> None:
            asyncio.run_coroutine_threadsafe(host.adopt(p), loop)

        member = ClusterMember(
            sidecar.nc, subjects, member_id=engine_id, partitions=settings.cluster.partitions,
            ttl=ttl, on_gain=gain, on_lose=host.drop, alive=lambda: heartbeat.age() < stall,
            serving=lambda: sorted(host.engines), on_wedged=lapsed_on_sidecar,
        )
        await sidecar.run(member.start())
        stack.push_async_callback(lambda: sidecar.run(member.stop()))
        router = ClusterRouter(sidecar.nc, subjects, settings.cluster.partitions)
        service = ControlService(None, nc, subjects, engine_id=engine_id, sidecar=sidecar, router=router,
                                 max_payload=settings.limits.request_bytes)
        stack.push_async_callback(service.stop)
        await service.start()
        stack.push_async_callback(routed.close)
        await _start_http(stack, server)
        log.info("engine %s serving in a cluster of %d partitions on %s", engine_id,
                 settings.cluster.partitions, settings.nats.url)
        await stop.wait()
        log.info("engine %s stopping", engine_id)
    log.info("engine %s stopped", engine_id)
    return EXIT_LEASE_LOST if wedged else EXIT_OK


async def _no_cluster_on(nc: Client, subjects: Subjects) -> None:
    """Refuse to serve alone a prefix that engines of a cluster serve."""
    members = sorted((await cluster_status(nc, subjects)).members)
    if members:
        raise StoreError(
            f"engines of a cluster serve prefix {subjects.prefix} ({', '.join(members)}): stop them, or "
            "start this one in their cluster (--store nats without --no-cluster)"
        )


def _shared_secret_key(data_dir: Path) -> str:
    """The data dir's secret key (made if missing), shared by this process's partition engines."""
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(generate_key())
    return path.read_text(encoding="utf-8").strip()


def _exit_if_stuck(heartbeat: Heartbeat, waited: float) -> None:
    """The lease is lost and the engine's loop did not stop within `waited` s: exit now, since
    another engine may be running these executions already (the next start quarantines an
    execution whose recovery got stuck, see `engine.quarantine`)."""
    if heartbeat.age() >= waited:
        log.critical("the engine's event loop is stuck and its lease is lost: exiting")
        logging.shutdown()
        os._exit(EXIT_LEASE_LOST)


async def serve_embedded(
    settings: Settings,
    *,
    stop: asyncio.Event,
    http: str | None,
    metrics_address: tuple[int, str] | None = None,
) -> int:
    """`serve --http` without NATS: one embedded engine (actions in this process) until `stop`."""
    async with contextlib.AsyncExitStack() as stack:
        if settings.store == "sqlite":
            stack.enter_context(DataDirLock(settings.data_path))
        engine = Engine(settings=settings)
        if metrics_address is not None:
            stack.callback(serve_metrics(engine.metrics, *metrics_address))
        server = _http_server(engine, http)
        stack.push_async_callback(engine.close)
        await engine.start()
        await _start_http(stack, server)
        log.info("embedded engine serving (store %s, data dir %s)", settings.store, settings.data_dir)
        await stop.wait()
    return EXIT_OK


def _http_server(engine: EngineApi, listen: str | None) -> HttpServer | None:
    """The HTTP API to serve, if asked for; an address it may not listen on is refused before
    anything starts."""
    if listen is None:
        return None
    from attune_actors.api import HttpServer  # FastAPI is imported only when it is asked for

    return HttpServer(engine, listen)


async def _start_http(stack: contextlib.AsyncExitStack, server: HttpServer | None) -> None:
    if server is not None:
        await server.start()
        stack.push_async_callback(server.stop)


async def _connect(settings: Settings, engine_id: str) -> Client:
    # `connect` retries the first connection forever too (reconnecting forever is right only once
    # connected): at startup an unreachable server is an error.
    limit = settings.nats.connect_timeout * 2
    try:
        return await asyncio.wait_for(connect(settings.nats, name=f"attune-engine {engine_id}"), limit)
    except TimeoutError:
        raise TransportError(
            f"cannot connect to NATS at {settings.nats.url} (gave up after {limit:g} s)"
        ) from None


def build_engine(settings: Settings, nc: Client, subjects: Subjects, engine_id: str) -> Engine:
    """An engine whose actions run on NATS workers, with the store `settings.store` names."""
    store = NatsStore(nc, subjects) if settings.store == "nats" else None
    return _engine_on_nats(settings, nc, subjects, engine_id, store)[0]


def _engine_on_nats(
    settings: Settings, nc: Client, subjects: Subjects, engine_id: str, store: NatsStore | None,
    new_id: Callable[[], str] | None = None,
    owned: Callable[[], bool] | None = None,
    partition: tuple[int, int] | None = None,
) -> tuple[Engine, NatsTransport]:
    def action(ref: str) -> ActionSpec:
        return engine.catalog.action(ref)  # engine.start() loads the catalog: look it up late

    def secrets_in(value: Any) -> list[str]:
        return engine.masker.found_in(value)

    transport = NatsTransport(
        nc, subjects, engine_id=engine_id, actions=action,
        cipher=PayloadCipher.from_settings(settings.nats), secrets_in=secrets_in, owned=owned,
        ack_wait=PARTITION_ACK_WAIT if owned is not None else 30.0,
    )
    engine = Engine(settings=settings, store=store, transport=transport, new_id=new_id, partition=partition)
    return engine, transport


def _stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set `stop`; a second signal acts as if we had not caught the first."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def stop_now(signum: signal.Signals) -> None:
        log.info("received %s", signum.name)
        for s in signals:
            loop.remove_signal_handler(s)
        stop.set()

    for s in signals:
        loop.add_signal_handler(s, stop_now, s)


async def _close(nc: Client) -> None:
    with contextlib.suppress(Exception):  # a server that is down cannot take our last messages
        await nc.flush(timeout=2)
    await nc.close()


class DataDirLock:
    """An exclusive lock on `<data_dir>/engine.lock` (flock: the OS releases it when the process dies)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def __enter__(self) -> DataDirLock:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            file = open(self.path, "a+", encoding="utf-8")  # held until __exit__
        except OSError as exc:
            raise StoreError(f"cannot use data dir {self.data_dir}: {exc.strerror}") from None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StoreError(
                    f"data dir {self.data_dir} is in use by another engine ({holder}); "
                    "one engine per data dir"
                ) from None
            raise StoreError(f"cannot lock data dir {self.data_dir}: {exc.strerror}") from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        file.flush()
        self._file = file
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None


__all__ = [
    "DataDirLock",
    "build_engine",
    "main",
    "register",
    "run",
    "serve",
    "serve_embedded",
    "serve_settings",
]

if __name__ == "__main__":
    sys.exit(main())
