"""Rules, triggers and sensors (SPEC section 10): workflows started by events, exactly once.

Public API: the engine's `emit`, `list_rules`, `get_rule`, `enable_rule`, `disable_rule`,
`list_triggers` and `enforcements` methods sit on `RulesService`; `post_webhook` is what the HTTP
API calls for `POST /api/v1/webhooks/{name}`. Timers and sensor backoff run on the engine's clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from attune_actors.errors import AttuneError
from attune_actors.rules.ledger import Enforcement, MemoryLedger, RuleLedger, SQLiteLedger
from attune_actors.rules.service import RulesService

if TYPE_CHECKING:
    from attune_actors.engine.engine import Engine
    from attune_actors.spec.packs import Catalog


async def start_rules(
    engine: Engine,
    problems: list[AttuneError],
    *,
    partition: tuple[int, int] | None = None,
    run_sources: bool = True,
) -> RulesService:
    """The rules service of a starting engine: its ledger in the engine's store, its invalid rules,
    its partition in a cluster, and whether it runs the timers and sensors now (see `RulesService`)."""
    settings = engine.settings
    ledger: RuleLedger
    has_rules = any(pack.rules or pack.sensors for pack in engine.catalog.packs.values())
    if not has_rules:  # nothing to record: no bucket or table is touched (nor permission needed)
        ledger = MemoryLedger()
    elif settings.store == "nats":
        from attune_actors.rules.kv_ledger import KVLedger

        ledger = KVLedger(settings.nats)
    elif settings.store == "memory":
        ledger = MemoryLedger()
    else:
        ledger = SQLiteLedger(settings.data_path / "attune.db")
    service = RulesService(
        engine.catalog,
        engine.renderer,
        ledger,
        engine.execute,
        settings,
        clock=engine.clock,
        invalid=_invalid_rules(engine.catalog, problems),
        partition=partition,
        run_sources=run_sources,
    )
    await service.start()
    return service


def _invalid_rules(catalog: Catalog, problems: list[AttuneError]) -> dict[str, list[AttuneError]]:
    """Rules with problems (by the file the problem is in), which the service loads but never runs."""
    by_file: dict[Path, list[AttuneError]] = {}
    for err in problems:
        if err.location is not None:
            by_file.setdefault(Path(err.location.file).resolve(), []).append(err)
    return {
        rule.ref: by_file[Path(rule.file).resolve()]
        for pack in catalog.packs.values()
        for rule in pack.rules
        if Path(rule.file).resolve() in by_file
    }


class Emitter(Protocol):
    """What emits trigger instances: an `Engine` (or what routes to one)."""

    async def emit(
        self, trigger_type: str, payload: Any = None, *, instance_id: str | None = None, **attributes: Any
    ) -> str: ...


async def post_webhook(
    engine: Emitter, name: str, payload: Any, headers: dict[str, str] | None = None
) -> str:
    """`POST /api/v1/webhooks/{name}`: emit a `core.webhook` instance; its id (202 trigger_instance_id).

    NotFoundError when no rule listens on `name` (404).
    """
    return await engine.emit("core.webhook", payload, name=name, headers=dict(headers or {}))


__all__ = [
    "Emitter",
    "Enforcement",
    "RulesService",
    "post_webhook",
    "start_rules",
]
