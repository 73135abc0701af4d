"""Prometheus metrics of one engine (or worker): counted on the hot path, exposed at scrape time.

Every engine gets its own `CollectorRegistry` (`Metrics.registry`), so several engines in one
process (tests, a CLI that embeds one) never mix their series; a scrape reads one engine.

Why not `prometheus_client.Counter` for each series: a labelled child's `inc()` takes a lock and
costs ~0.7 µs, a histogram's `observe()` ~1.5 µs, which is 5 % of a noop task run (55 µs). Here
the hot path (event-loop thread only) adds one to a plain dict entry (~0.2 µs) and a `Collector`
turns the dicts into metric families when Prometheus scrapes. What other threads record (the
SQLite writer's commits) goes through `observe_threadsafe`, under a lock; commits are batched, so
that is rare. Gauges are functions read at scrape time (`gauge`, `counter_from`): what is already
counted elsewhere (live executions, attempts in flight, NATS reconnects, lease renewals) costs
nothing between scrapes.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from attune_actors.errors import ConfigError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a noop task run (tens of µs) to long actions (minutes).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 300.0)
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)

Labels = tuple[str, ...]


class Counter:
    """A counter family: label values -> count. `inc` on one thread (the event loop) only."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name = name
        self.doc = doc
        self.labels = tuple(labels)
        self.values: dict[Labels, float] = {}

    def inc(self, key: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def value(self, *key: str) -> float:
        return self.values.get(key, 0.0)

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in list(self.values.items()):
            family.add_metric(key, value)
        return family


class Histogram:
    """A histogram family: label values -> bucket counts, sum. `observe` on one thread only,
    `observe_threadsafe` from any."""

    __slots__ = ("_lock", "bounds", "doc", "labels", "name", "series")

    def __init__(self, name: str, doc: str, labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.name = name
        self.doc = doc
        self.labels = tuple(labels)
        self.bounds = tuple(bounds)
        # per label key: [count in bucket 0, ..., count above the last bound, sum]
        self.series: dict[Labels, list[float]] = {}
        self._lock = threading.Lock()

    def observe(self, key: Labels, value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0.0] * (len(self.bounds) + 2)
        series[bisect.bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def observe_threadsafe(self, key: Labels, value: float) -> None:
        with self._lock:
            self.observe(key, value)

    def count(self, *key: str) -> int:
        series = self.series.get(key)
        return 0 if series is None else int(sum(series[:-1]))

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        with self._lock:
            items = [(key, list(series)) for key, series in self.series.items()]
        for key, series in items:
            family.add_metric(key, *_buckets(self.bounds, series))
        return family


class _Uncounted(Counter):
    __slots__ = ()

    def inc(self, key: Labels, amount: float = 1.0) -> None:
        pass


class _Unobserved(Histogram):
    __slots__ = ()

    def observe(self, key: Labels, value: float) -> None:
        pass


class Metrics(Collector):
    """One registry's families; subclasses declare them. Scraped through `exposition()`.

    `counting=False` keeps every call and counts nothing: the baseline `bench/observability.py`
    measures the cost of counting against.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, counting: bool = True) -> None:
        self._counting = counting
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self._families: list[Counter | Histogram] = []
        self._readers: list[Callable[[], Metric | None]] = []
        self.registry.register(self)

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        family = (Counter if self._counting else _Uncounted)(name, doc, labels)
        self._families.append(family)
        return family

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), bounds: Sequence[float] = DURATION_BUCKETS
    ) -> Histogram:
        family = (Histogram if self._counting else _Unobserved)(name, doc, labels, bounds)
        self._families.append(family)
        return family

    def gauge(self, name: str, doc: str, read: Callable[[], float | None]) -> None:
        """A gauge whose value `read()` gives at scrape time (None: not exported this time)."""
        self._readers.append(lambda: _one(GaugeMetricFamily, name, doc, read()))

    def counter_from(self, name: str, doc: str, read: Callable[[], float | None]) -> None:
        """A counter kept elsewhere (a library's statistics), read at scrape time."""
        self._readers.append(lambda: _one(CounterMetricFamily, name, doc, read()))

    def collect(self) -> Iterable[Metric]:
        for family in self._families:
            yield family.family()
        for read in self._readers:
            try:
                metric = read()
            except Exception:  # a source that went away (closed connection) is left out
                metric = None
            if metric is not None:
                yield metric

    def exposition(self) -> bytes:
        """The Prometheus text format of this registry (what `/metrics` serves)."""
        return generate_latest(self.registry)


class MergedMetrics(Metrics):
    """The metrics of several engines of one process (a cluster's partitions) as one: samples with
    the same name and labels are added up (counters, histogram buckets and sums, gauges of counts),
    next to this registry's own families. `sources()` gives the engines' metrics at scrape time."""

    def __init__(self, sources: Callable[[], Iterable[Metrics]]) -> None:
        super().__init__()
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        yield from super().collect()
        families: dict[str, Metric] = {}
        sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for source in self._sources():
            for family in source.collect():
                if family.name not in families:
                    families[family.name] = Metric(family.name, family.documentation, family.type)
                    sums[family.name] = {}
                found = sums[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    found[key] = found.get(key, 0.0) + sample.value
        for name, merged in families.items():
            for (sample_name, labels), value in sums[name].items():
                merged.add_sample(sample_name, dict(labels), value)
            yield merged


def _one(kind: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str, doc: str,
         value: float | None) -> Metric | None:
    return None if value is None else kind(name, doc, value=value)


class ActionStats:
    """What one engine counted about one action's task runs and attempts (event loop thread only).

    The observer of each execution holds these per task and counts into them directly: a task run
    costs a dict increment and a list append. Durations wait in `pending` and are sorted into the
    histogram's buckets `FOLD_EVERY` at a time (and, read-only, when scraped).
    """

    FOLD_EVERY = 1024

    __slots__ = ("attempts", "pending", "ref", "retries", "runs", "seconds")

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.attempts: dict[str, int] = {}  # status -> attempts ended so
        self.runs: dict[str, int] = {}  # status -> task runs ended so
        self.retries = 0
        self.seconds = [0.0] * (len(DURATION_BUCKETS) + 2)  # bucket counts, then the sum
        self.pending: list[float] = []  # durations not yet in `seconds`

    def fold(self) -> None:
        """Move the pending durations into the buckets (event loop thread)."""
        pending, self.pending = self.pending, []
        self.seconds = _folded(self.seconds, pending)

    def histogram(self) -> list[float]:
        """The buckets with the pending durations in, without changing anything (any thread)."""
        return _folded(list(self.seconds), list(self.pending))


def _folded(series: list[float], values: list[float]) -> list[float]:
    find = bisect.bisect_left
    for value in values:
        series[find(DURATION_BUCKETS, value)] += 1
    series[-1] += sum(values)
    return series


class EngineMetrics(Metrics):
    """The series of an engine (docs/observability.md lists them)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, counting: bool = True) -> None:
        super().__init__(registry, counting=counting)
        self._actions: dict[str, ActionStats] = {}
        self._by_task: dict[int, tuple[object, dict[str, ActionStats]]] = {}
        self.executions_started = self.counter(
            "attune_executions_started_total", "Executions started (nested ones included).", ["ref"])
        self.executions = self.counter(
            "attune_executions_total", "Executions ended, by workflow and final status.", ["ref", "status"])
        self.store_commit_seconds = self.histogram(
            "attune_store_commit_seconds", "Store group commits: time to write one batch.",
            bounds=COMMIT_BUCKETS)
        self.store_commit_rows = self.histogram(
            "attune_store_commit_rows", "Store group commits: rows (executions, runs, items) per batch.",
            bounds=SIZE_BUCKETS)
        self.store_commit_failures = self.counter(
            "attune_store_commit_failures_total", "Store commits that failed (their rows are retried).")
        self.nats_dispatch_seconds = self.histogram(
            "attune_nats_dispatch_seconds", "NATS dispatch latency: attempt submitted to a worker "
            "reporting it started.", bounds=DURATION_BUCKETS)

    def action(self, ref: str) -> ActionStats:
        """The stats of action `ref` (created on first use; a throwaway one when not counting)."""
        stats = self._actions.get(ref)
        if stats is None:
            stats = ActionStats(ref)
            if self._counting:
                self._actions[ref] = stats
        return stats

    def by_task(self, workflow: object) -> dict[str, ActionStats]:
        """A task name -> stats cache shared by every execution of one workflow definition
        (`workflow`, kept alive here): each execution would otherwise look every task up again."""
        found = self._by_task.get(id(workflow))
        if found is None or found[0] is not workflow:
            found = self._by_task[id(workflow)] = (workflow, {})
        return found[1]

    def collect(self) -> Iterable[Metric]:
        yield from super().collect()
        runs = CounterMetricFamily("attune_task_runs", "Task runs ended, by action and status.",
                                   labels=("action", "status"))
        seconds = HistogramMetricFamily("attune_task_run_seconds", "Task run duration, first attempt to "
                                        "end (retries included).", labels=("action",))
        attempts = CounterMetricFamily("attune_attempts", "Action attempts ended, by action and status "
                                       "(abandoned: the worker vanished).", labels=("action", "status"))
        retries = CounterMetricFamily("attune_retries", "Attempts that failed and are retried, by action.",
                                      labels=("action",))
        for ref, stats in list(self._actions.items()):
            for status, count in list(stats.runs.items()):
                runs.add_metric((ref, status), count)
            for status, count in list(stats.attempts.items()):
                attempts.add_metric((ref, status), count)
            if stats.retries:
                retries.add_metric((ref,), stats.retries)
            seconds.add_metric((ref,), *_buckets(DURATION_BUCKETS, stats.histogram()))
        yield from (runs, seconds, attempts, retries)

    def store_committed(self, seconds: float, rows: int) -> None:
        """A store commit (any thread)."""
        self.store_commit_seconds.observe_threadsafe((), seconds)
        self.store_commit_rows.observe_threadsafe((), rows)

    def store_commit_failed(self) -> None:
        """A failed store commit (any thread)."""
        self.store_commit_failures.inc(())  # only the store's writer thread counts these


def _buckets(bounds: Sequence[float], series: list[float]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs and the sum, from per-bucket counts followed by the sum."""
    buckets: list[tuple[str, float]] = []
    total = 0.0
    for bound, count in zip((*map(repr, bounds), "+Inf"), series[:-1], strict=True):
        total += count
        buckets.append((bound, total))
    return buckets, series[-1]


class WorkerMetrics(Metrics):
    """The series of a NATS worker process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.attempts = self.counter(
            "attune_worker_attempts_total", "Attempts this worker ran, by action and outcome.",
            ["action", "status"])
        self.attempt_seconds = self.histogram(
            "attune_worker_attempt_seconds", "Attempt duration on this worker, by action.", ["action"])


def listen_address(text: str, option: str = "the metrics address") -> tuple[int, str]:
    """`PORT` or `HOST:PORT` -> (port, host); loopback unless a host is named, like the HTTP API
    without tokens: what runs where is not for everyone on the network to read."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise ConfigError(f"{option}: {text!r} is not PORT or HOST:PORT (a port from 1 to 65535)")
    return number, host.strip("[]") or "127.0.0.1"


def serve_metrics(metrics: Metrics, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
    """Serve `metrics` at http://host:port/metrics (a daemon thread); returns what stops it.

    ConfigError when the address cannot be bound (in use, not ours).
    """
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


__all__ = [
    "CONTENT_TYPE",
    "ActionStats",
    "Counter",
    "EngineMetrics",
    "Histogram",
    "MergedMetrics",
    "Metrics",
    "WorkerMetrics",
    "listen_address",
    "serve_metrics",
]
