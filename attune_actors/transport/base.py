"""The transport: how task actors hand action runs to workers and get their outcomes back.

One small interface, two implementations chosen at engine construction (like httpx's transports):
`InProcessTransport` runs actions on this event loop (the embedded default) and the NATS transport
sends them to worker processes. Either way an attempt is identified by (run_id, item, attempt), the
idempotency key workers and the engine deduplicate on.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attune_actors.frozen import frozen

if TYPE_CHECKING:
    from attune_actors.observability.metrics import EngineMetrics
    from attune_actors.observability.tracing import Tracing


@frozen
class ActionRun:
    """One attempt of one action run, as a worker needs it."""

    execution_id: str
    run_id: str
    item: int | None
    attempt: int
    task: str
    action: str  # action ref
    parameters: dict[str, Any]
    deadline: float | None  # epoch seconds; the attempt ends `timeout` then
    # W3C trace context of the engine's task span (observability.tracing), when tracing is on
    trace: dict[str, str] | None = None

    @property
    def key(self) -> str:
        """The idempotency key of this attempt."""
        return f"{self.run_id}/{'' if self.item is None else self.item}/{self.attempt}"


@frozen
class RunOutcome:
    """How an attempt ended: status is succeeded, failed, timeout, canceled or abandoned."""

    run_id: str
    item: int | None
    attempt: int
    status: str
    result: Any = None
    error: str | None = None


OutcomeCallback = Callable[[RunOutcome], None]


class Transport(abc.ABC):
    """Carries action runs to workers and outcomes back.

    `submit` never blocks and never raises for a bad run: whatever goes wrong comes back as an
    outcome. `on_outcome` is called exactly once per submitted attempt (unless it was canceled
    with `cancel`, after which an outcome may or may not come), on the event loop's thread.
    """

    # Set by the engine before `start` (`instrument`).
    metrics: EngineMetrics | None = None
    tracing: Tracing | None = None

    def instrument(self, metrics: EngineMetrics, tracing: Tracing | None) -> None:
        """Report to `metrics`; with `tracing`, attempts are spans (and carry the trace context)."""
        self.metrics = metrics
        self.tracing = tracing

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect or allocate what the transport needs."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop running attempts and release resources."""

    @abc.abstractmethod
    def submit(self, run: ActionRun, on_outcome: OutcomeCallback) -> None:
        """Start the attempt; report its outcome through `on_outcome`."""

    @abc.abstractmethod
    def cancel(self, run: ActionRun) -> None:
        """Ask the worker running this attempt to stop it (processes get SIGTERM, then SIGKILL)."""

    def waiting_on_clock(self) -> int:
        """How many submitted attempts wait for nothing but the engine's clock.

        A transport that ends attempts on clock timers (the scripted outcomes of
        `attune_actors.testing`) counts them here, so a virtual clock may skip ahead while they
        are out; every other attempt does real work, and time waits for it.
        """
        return 0
