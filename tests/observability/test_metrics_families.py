"""The metric families as Prometheus reads them: counts, cumulative buckets, sums."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from attune_actors.errors import ConfigError
from attune_actors.observability.metrics import ActionStats, EngineMetrics, listen_address


def samples(metrics: EngineMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }


def test_task_run_durations_fold_into_cumulative_buckets() -> None:
    metrics = EngineMetrics()
    stats = metrics.action("pack.act")
    durations = [0.0001] * 2000 + [0.3] * 500 + [1000.0] * 3  # more than one fold's worth
    for seconds in durations:
        stats.pending.append(seconds)
        if len(stats.pending) >= ActionStats.FOLD_EVERY:
            stats.fold()
    assert stats.pending  # some are still pending: a scrape counts them too
    m = samples(metrics)
    label = ("action", "pack.act")
    assert m[("attune_task_run_seconds_count", (label,))] == 2503
    assert m[("attune_task_run_seconds_bucket", (label, ("le", "0.0005")))] == 2000
    assert m[("attune_task_run_seconds_bucket", (label, ("le", "0.5")))] == 2500
    assert m[("attune_task_run_seconds_bucket", (label, ("le", "+Inf")))] == 2503
    assert abs(m[("attune_task_run_seconds_sum", (label,))] - sum(durations)) < 1e-6


def test_metrics_address_is_loopback_unless_a_host_is_named() -> None:
    assert listen_address("9100") == (9100, "127.0.0.1")
    assert listen_address("0.0.0.0:9100") == (9100, "0.0.0.0")
    for bad in ("nine", "0", "70000", "host:"):
        with pytest.raises(ConfigError, match="--metrics-port"):
            listen_address(bad, "--metrics-port")
