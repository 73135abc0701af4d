"""Every NATS subject, stream and bucket name the runtime uses, derived from one prefix.

Keeping them in one place is what lets operators write subject permissions (docs/operations.md)
and lets several deployments share a server under different prefixes (`nats.subject_prefix`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


def token(text: str) -> str:
    """`text` as one subject token: NATS forbids '.', '*', '>' and whitespace inside one."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text) or "_"


_KEPT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"
# byte (as a latin-1 character) -> itself if kept, else `_XX`
_ESCAPE = {b: (chr(b) if b in _KEPT else f"_{b:02X}") for b in range(256)}


def key_token(key: str) -> str:
    """An attempt key as one subject token, one-to-one (unlike `token`): letters, digits and '-' stay,
    every other byte is `_` and two hex digits, so two keys never share a runs subject."""
    return key.encode().decode("latin-1").translate(_ESCAPE)


def _wild(text: str) -> str:
    return "*" if text == "*" else token(text)


@dataclass(frozen=True)
class Subjects:
    """Names under `prefix` (default `attune`)."""

    prefix: str = "attune"

    # -- action runs: engines -> workers (JetStream work queue), outcomes back to the engine
    @property
    def runs_stream(self) -> str:
        return f"{token(self.prefix).upper()}_RUNS"

    @property
    def runs_all(self) -> str:
        return f"{self.prefix}.runs.>"

    def runs(self, pack: str, runner: str, key: str) -> str:
        """Where an attempt (`key`) of an action of `pack` with `runner` is queued: one subject per
        attempt, so the stream can tell whether that attempt is still queued; workers may specialise
        on pack and runner."""
        return f"{self.runs_of(pack, runner)}.{key_token(key)}"

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - a few (pack, runner) pairs; Subjects is frozen
    def runs_of(self, pack: str, runner: str) -> str:
        """The subject prefix of the attempts of actions of `pack` with `runner`."""
        return f"{self.prefix}.runs.{token(pack)}.{token(runner)}"

    def runs_filter(self, pack: str, runner: str) -> str:
        """The runs subjects a worker may take, where `pack` and `runner` are names or the wildcard `*`."""
        return f"{self.prefix}.runs.{_wild(pack)}.{_wild(runner)}.>"

    @property
    def workers_consumer(self) -> str:
        """The durable consumer every worker that takes all runs subjects shares."""
        return "workers"

    @property
    def results_stream(self) -> str:
        """The JetStream stream that keeps outcomes until their engine has taken them."""
        return f"{token(self.prefix).upper()}_RESULTS"

    @property
    def results_all(self) -> str:
        return f"{self.prefix}.results.>"

    def results(self, engine_id: str) -> str:
        """Outcomes and progress of the attempts one engine dispatched."""
        return f"{self.prefix}.results.{token(engine_id)}"

    def results_consumer(self, engine_id: str) -> str:
        """The durable consumer through which one engine takes its outcomes."""
        return f"engine_{token(engine_id)}"

    def cancel(self, worker_id: str) -> str:
        """Stop requests for attempts running on one worker."""
        return f"{self.prefix}.cancel.{token(worker_id)}"

    @property
    def heartbeats(self) -> str:
        return f"{self.prefix}.workers.heartbeat"

    # -- control service and events
    def api(self, operation: str) -> str:
        """e.g. api("executions.create") -> attune.api.executions.create"""
        return f"{self.prefix}.api.{operation}"

    def events(self, execution_id: str) -> str:
        return f"{self.prefix}.events.executions.{token(execution_id)}"

    @property
    def executions_events(self) -> str:
        """Every execution's events (one subject per top-level execution)."""
        return f"{self.prefix}.events.executions.*"

    @property
    def events_all(self) -> str:
        return f"{self.prefix}.events.>"

    @property
    def service_events(self) -> str:
        """Events about the runtime itself, not one execution: bad input (`error`), missed events (`gap`)."""
        return f"{self.prefix}.events.service"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.deadletter"

    # -- JetStream storage of the `nats` store
    @property
    def snapshot_bucket(self) -> str:
        return f"{token(self.prefix)}_snapshots"

    @property
    def lease_bucket(self) -> str:
        return f"{token(self.prefix)}_lease"

    # -- a cluster of engines (attune_actors.nats.cluster)
    @property
    def members_bucket(self) -> str:
        """Live engines: one key per engine, expiring unless renewed."""
        return f"{token(self.prefix)}_members"

    @property
    def partitions_bucket(self) -> str:
        """Partition leases: key `p<n>` names the engine that owns partition n, expiring unless renewed."""
        return f"{token(self.prefix)}_partitions"

    def partition_api(self, partition: int) -> str:
        """Requests forwarded to the owner of a partition (only the owner listens)."""
        return f"{self.prefix}.cluster.p{partition}"

    def partition_engine_id(self, partition: int) -> str:
        """The transport identity of a partition: its results subject and durable consumer, so that
        whoever owns the partition receives the outcomes of the attempts it dispatched; also its
        key namespace in `snapshot_bucket`."""
        return f"p{partition}"
