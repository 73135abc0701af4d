"""The rules service: trigger instances in, enforcement records and started executions out.

The engine starts one (`Engine(rules=True)`, the default) after its executions are recovered. It
owns the loaded rules and their sources: a `TimerActor` per timer rule, a `SensorSupervisor` for
the packs' sensors, a `NatsTriggerSource` for the `core.nats` subjects (connected in the background:
an engine without NATS serves everything else), and `emit` for everything programmatic
(`Engine.emit`, webhooks over HTTP or NATS).

For each instance, every enabled rule listening to its type (and subject or webhook name) is
evaluated: criteria, then the action's parameters rendered from `trigger.*` and `pack.config.*` in
the template sandbox. One enforcement record per evaluated rule is then *claimed* in the ledger
before anything starts; a matched rule's record carries the execution id it will start (derived
from the record id), so a redelivered instance, or the same timer fire seen twice, starts nothing
new: the existing record is found, and the engine is only asked to make sure its execution exists.
A rule disabled at run time is skipped from the next instance on, and its timer stops.

In a cluster every partition's engine runs a rules service (`partition`). Each timer rule and each
sensor then runs in one of them only, the engine of the partition its ref hashes to (and so on
the partition's next owner when an engine dies): run in every one, each fire or event was a
trigger instance per partition, with ids of their own, so as many executions. A rule's execution
is named after the partition whose engine claimed its record (`p<n>-<record id>`), so the cluster
finds it there; a claim found made by another partition's engine is left to that partition. A
`core.nats` instance is enforced by the partition its id hashes to, which reads every message
through a consumer of its own (`NatsTriggerSource`): a redelivery reaches the same partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from pykka import ActorDeadError, ActorRef

from attune_actors.clock import Clock, RealClock
from attune_actors.config import Settings
from attune_actors.errors import AttuneError, NotFoundError, ParameterError
from attune_actors.rules.criteria import Predicate, compile_criteria
from attune_actors.rules.ledger import Enforcement, RuleLedger, new_record
from attune_actors.rules.sensors import Backoff, SensorState, SensorSupervisor
from attune_actors.rules.timers import TimerActor, TimerState, timer_instance
from attune_actors.spec.packs import Catalog
from attune_actors.spec.rules import BUILTIN_TRIGGERS, TIMER_TRIGGERS, RuleSpec, SensorSpec, trigger_types
from attune_actors.templates import Renderer

log = logging.getLogger("attune_actors.rules")

NATS_RETRY = (1.0, 30.0)  # first and longest wait between attempts to reach NATS


class Starter(Protocol):
    """What the service needs from the engine: start an execution under a chosen id (idempotent)."""

    async def __call__(
        self, ref: str, parameters: dict[str, Any], *, identity: str, execution_id: str
    ) -> Any: ...


@dataclasses.dataclass
class _Rule:
    spec: RuleSpec
    matches: Predicate
    enabled: bool
    pack_config: dict[str, Any]
    fired: int = 0  # enforcements that started an execution, since this process started


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


class RulesService:
    """Evaluates rules for trigger instances; see the module doc."""

    def __init__(
        self,
        catalog: Catalog,
        renderer: Renderer,
        ledger: RuleLedger,
        start_execution: Starter,
        settings: Settings,
        *,
        clock: Clock | None = None,
        invalid: Mapping[str, list[AttuneError]] | None = None,
        backoff: Backoff | None = None,
        partition: tuple[int, int] | None = None,
        run_sources: bool = True,
    ) -> None:
        self.catalog = catalog
        self.renderer = renderer
        self.ledger = ledger
        self.start_execution = start_execution
        self.settings = settings
        self.clock: Clock = clock or RealClock()
        self.backoff = backoff or Backoff()
        self.invalid = dict(invalid or {})
        self._partition = partition  # (this engine's, of how many) in a cluster
        # How a cluster names a partition's executions (`attune_actors.nats.cluster.partition_of`).
        self._id_prefix = "" if partition is None else f"p{partition[0]}-"
        # A cluster's partition engines all load the same rules and read the same subjects: their
        # start-up lines, once per partition adopted, would be noise.
        self._said = logging.INFO if partition is None else logging.DEBUG
        self._run_sources = run_sources  # run timers and sensors from start() (else: start_sources)
        self.sources_running = False
        self._rules: dict[str, _Rule] = {}
        self._types = trigger_types(catalog)
        self._timers: dict[str, ActorRef[Any]] = {}
        self._sensors: ActorRef[SensorSupervisor] | None = None
        self._sensor_states: list[SensorState] = []
        self._timer_states: dict[str, TimerState] = {}
        self._nats_task: asyncio.Task[None] | None = None
        self._nats_status = "off"
        self._nats_source: Any = None
        self._nc: Any = None
        self._stopping = False
        self._changing = asyncio.Lock()  # set_enabled and refresh, one at a time

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.ledger.open()
        specs: dict[str, tuple[RuleSpec, Any]] = {}
        for pack in self.catalog.packs.values():
            for spec in pack.rules:
                if spec.ref not in self.invalid:
                    specs.setdefault(spec.ref, (spec, pack.config))
        stored = await self.ledger.states(list(specs), "enabled")
        for ref, (spec, config) in specs.items():
            self._rules[ref] = _Rule(spec, compile_criteria(spec.criteria), _enabled(spec, stored), config)
        if self._run_sources:
            await self.start_sources()
        if self._nats_subjects():
            self._nats_status = "connecting"
            self._nats_task = asyncio.create_task(self._run_nats(), name="attune-rules-nats")
        if self._rules:
            log.log(
                self._said,
                "rules: %d loaded (%d enabled), %d invalid",
                len(self._rules),
                sum(r.enabled for r in self._rules.values()),
                len(self.invalid),
            )

    async def start_sources(self) -> None:
        """Start the timer rules and the sensors that run here (once): at start, or when this
        process takes them over from another on a shared data dir (`Owners.lead_sources`)."""
        if self.sources_running or self._stopping:
            return
        self.sources_running = True
        for rule in self._rules.values():
            if rule.enabled and rule.spec.trigger_type in TIMER_TRIGGERS and self._runs_here(rule.spec.ref):
                await self._start_timer(rule)
        sensors = [
            (SensorState(s), self.catalog.packs[s.pack].config)
            for p in self.catalog.packs.values()
            for s in p.sensors
            if s.enabled and self._runs_here(s.ref)
        ]
        if sensors:
            self._sensor_states = [state for state, _ in sensors]
            self._sensors = SensorSupervisor.start(sensors, self._sensor_emit, self.clock, self.backoff)

    async def stop(self) -> None:
        for ref in list(self._timers):
            self._stop_timer(ref)
        if self._sensors is not None:
            with contextlib.suppress(ActorDeadError):
                await self._sensors.stop(block=False)
            self._sensors = None
        self._stopping = True
        if self._nats_task is not None:
            # nats-py's connect may swallow a cancellation: the flag ends the retry loop too.
            self._nats_task.cancel()
            await asyncio.wait({self._nats_task}, timeout=5)
        if self._nats_source is not None:
            await self._nats_source.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        await self.ledger.close()

    def _nats_subjects(self) -> list[str]:
        return sorted(
            {
                r.spec.trigger_parameters["subject"]
                for r in self._rules.values()
                if r.spec.trigger_type == "core.nats"
            }
        )

    async def _run_nats(self) -> None:
        delay = NATS_RETRY[0]
        while not self._stopping:
            try:
                from attune_actors.nats.connection import connect
                from attune_actors.rules.nats_source import NatsTriggerSource

                self._nc = await connect(self.settings.nats, name="attune-rules")
                source = NatsTriggerSource(
                    self._nc, self.settings.nats.subject_prefix, self._nats_subjects(), self._nats_handle,
                    # In a cluster every partition's engine reads every message (a consumer each)
                    # and enforces those whose instance id hashes to its partition. So the same
                    # partition claims an event however often it is delivered, and when its engine
                    # dies between the claim and the start, the partition's next engine gets the
                    # message again from that consumer and starts it.
                    partition=None if self._partition is None else (self._partition[0], self._runs_here),
                )
                await source.start()
                log.log(self._said, "reading %d NATS trigger subject(s) through JetStream",
                        len(source.subjects))
                self._nats_source = source
                self._nats_status = "running"
                return
            except Exception as exc:
                self._nats_status = (
                    f"retrying: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                )
                log.warning("core.nats rules are waiting for NATS (%s); retrying in %g s", exc, delay)
                if self._nc is not None:
                    with contextlib.suppress(Exception):
                        await self._nc.close()
                    self._nc = None
                await asyncio.sleep(delay)  # deliberate: reconnect backoff
                delay = min(NATS_RETRY[1], delay * 2)

    # ------------------------------------------------------------------ timers

    async def _start_timer(self, rule: _Rule) -> None:
        state = self._timer_states.setdefault(rule.spec.ref, TimerState())
        state.last_fire = await self.ledger.get_state(rule.spec.ref, "last_fire")
        self._timers[rule.spec.ref] = TimerActor.start(rule.spec, self.clock, self._timer_fire, state)

    def _stop_timer(self, ref: str) -> None:
        actor = self._timers.pop(ref, None)
        if actor is not None:
            with contextlib.suppress(ActorDeadError):
                actor.stop(block=False)

    async def _timer_fire(self, spec: RuleSpec, nominal: float) -> bool:
        rule = self._rules.get(spec.ref)
        if rule is None or not rule.enabled:
            return False
        await self.dispatch(timer_instance(spec, nominal, self.clock.now()), only=rule)
        await self.ledger.put_state(spec.ref, "last_fire", nominal)
        return rule.enabled

    # ------------------------------------------------------------------ instances in

    async def emit(
        self,
        trigger_type: str,
        payload: Any = None,
        *,
        instance_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> tuple[str, list[Enforcement]]:
        """Evaluate every rule on a new instance of `trigger_type`; its id and the records written."""
        if trigger_type not in self._types:
            raise NotFoundError(f"unknown trigger type '{trigger_type}'")
        if trigger_type in TIMER_TRIGGERS:
            raise ParameterError(f"{trigger_type} instances come from the rule's schedule, not emit()")
        extra = dict(attributes or {})
        if trigger_type == "core.webhook":
            name = extra.get("name")
            if not any(
                r.spec.trigger_type == "core.webhook" and r.spec.trigger_parameters.get("name") == name
                for r in self._rules.values()
            ):
                raise NotFoundError(f"no rule listens on webhook '{name}'")
        if trigger_type == "core.nats" and not isinstance(extra.get("subject"), str):
            raise ParameterError("a core.nats instance needs a 'subject'")
        spec = self._types[trigger_type]
        if spec is not None and spec.payload_schema is not None:
            import jsonschema  # imported here: ~50 ms at start-up, needed only for a payload schema

            try:
                jsonschema.validate(payload, spec.payload_schema)
            except jsonschema.ValidationError as exc:
                raise ParameterError(f"{trigger_type} payload: {exc.message}") from None
        instance = {
            **extra,
            "id": instance_id or uuid.uuid4().hex,
            "type": trigger_type,
            "payload": payload,
            "occurred_at": datetime.fromtimestamp(self.clock.now(), tz=UTC).isoformat(),
        }
        return instance["id"], await self.dispatch(instance)

    async def _nats_handle(self, instance: dict[str, Any], subject: str) -> None:
        await self.dispatch(instance, subject=subject)

    async def _sensor_emit(self, trigger_type: str, payload: Any, sensor: SensorSpec) -> str:
        full = trigger_type if "." in trigger_type else f"{sensor.pack}.{trigger_type}"
        if full not in {t.ref for t in sensor.trigger_types}:
            declared = ", ".join(t.ref for t in sensor.trigger_types)
            raise ParameterError(
                f"sensor {sensor.ref} emitted '{full}', which it does not declare ({declared})"
            )
        instance_id, _ = await self.emit(full, payload)
        return instance_id

    def _candidates(self, instance: dict[str, Any], subject: str | None) -> list[_Rule]:
        kind = instance["type"]
        found = []
        for rule in self._rules.values():
            spec = rule.spec
            if spec.trigger_type != kind or not rule.enabled:
                continue
            if kind == "core.nats":
                wanted = spec.trigger_parameters["subject"]
                if (
                    (wanted != subject)
                    if subject is not None
                    else not subject_matches(wanted, instance["subject"])
                ):
                    continue
            elif kind == "core.webhook" and spec.trigger_parameters.get("name") != instance.get("name"):
                continue
            found.append(rule)
        return found

    async def dispatch(
        self, instance: dict[str, Any], *, subject: str | None = None, only: _Rule | None = None
    ) -> list[Enforcement]:
        """Evaluate the rules for one instance, claim their records, start what matched (once)."""
        rules = [only] if only is not None else self._candidates(instance, subject)
        if not rules:
            return []
        planned: list[tuple[Enforcement, _Rule, dict[str, Any] | None]] = []
        now = time.time()
        for rule in rules:
            params: dict[str, Any] | None = None
            error = None
            try:
                matched = rule.matches(instance)
            except Exception as exc:  # a bug in an operator must not lose the other rules
                matched, error = False, f"criteria failed: {exc}"
            if matched:
                try:
                    context = {"trigger": instance, "pack": {"config": rule.pack_config}}
                    params = self.renderer.render(
                        rule.spec.parameters, context, where=f"rule {rule.spec.ref} parameters"
                    )
                except AttuneError as exc:
                    error = str(exc)
            record = new_record(
                instance, rule.spec.ref, matched, error=error, start=params is not None, now=now
            )
            if self._id_prefix and record.execution_id is not None:
                record = record._replace(execution_id=self._id_prefix + record.execution_id)
            planned.append((record, rule, params))
        claimed = await self.ledger.claim([p[0] for p in planned])
        out: list[Enforcement] = []
        for (_, rule, params), (stored, fresh) in zip(planned, claimed, strict=True):
            if (
                stored.execution_id is not None
                and params is not None
                and stored.error is None
                and (fresh or self._claimed_here(stored.execution_id))
            ):
                stored = await self._start(stored, rule, params, fresh)
            out.append(stored)
        return out

    def _runs_here(self, key: str) -> bool:
        """Whether the timer rule or sensor `key` runs in this engine, or the `core.nats` instance
        of that id is enforced here: always, but in a cluster in one partition's engine."""
        if self._partition is None:
            return True
        mine, partitions = self._partition
        return zlib.crc32(key.encode()) % partitions == mine

    def _claimed_here(self, execution_id: str) -> bool:
        """Whether a rule's execution someone claimed before belongs to this engine: always, but
        in a cluster only if this partition's engine claimed it (its id says which); the others
        would start a copy in their own partition, where the cluster does not look for it."""
        return execution_id.startswith(self._id_prefix)

    async def _start(
        self, record: Enforcement, rule: _Rule, params: dict[str, Any], fresh: bool
    ) -> Enforcement:
        assert record.execution_id is not None
        try:
            await self.start_execution(
                rule.spec.action, params, identity=f"rule:{rule.spec.ref}", execution_id=record.execution_id
            )
        except AttuneError as exc:
            record = record._replace(execution_id=None, error=str(exc).splitlines()[0])
            await self.ledger.update(record)
            log.warning("rule %s: %s not started: %s", rule.spec.ref, rule.spec.action, record.error)
            return record
        if fresh:
            rule.fired += 1
            log.info(
                "rule %s started %s (execution %s)", rule.spec.ref, rule.spec.action, record.execution_id
            )
        return record

    # ------------------------------------------------------------------ queries and admin

    def rule_refs(self) -> list[str]:
        return sorted(self._rules)

    def describe(self, ref: str) -> dict[str, Any]:
        rule = self._rules.get(ref)
        if rule is None:
            if ref in self.invalid:
                return {"ref": ref, "valid": False, "errors": [str(e) for e in self.invalid[ref]]}
            raise NotFoundError(f"no rule '{ref}'")
        spec = rule.spec
        doc: dict[str, Any] = {
            "ref": spec.ref,
            "pack": spec.pack,
            "description": spec.description,
            "enabled": rule.enabled,
            "valid": True,
            "trigger": {"type": spec.trigger_type, "parameters": spec.trigger_parameters},
            "criteria": {path: {op: pattern} for path, op, pattern in spec.criteria},
            "action": spec.action,
            "parameters": spec.parameters,
            "file": spec.file,
            "started": rule.fired,
        }
        timer = self._timer_states.get(ref)
        if timer is not None:
            doc["timer"] = {"last_fire": _iso(timer.last_fire), "missed": timer.missed}
        return doc

    def list_rules(self, pack: str | None = None) -> list[dict[str, Any]]:
        refs = sorted({*self._rules, *self.invalid})
        return [self.describe(r) for r in refs if pack is None or r.startswith(f"{pack}.")]

    async def set_enabled(self, ref: str, enabled: bool) -> dict[str, Any]:
        rule = self._rules.get(ref)
        if rule is None:
            if ref in self.invalid:
                raise ParameterError(f"rule '{ref}' is invalid and cannot be enabled: {self.invalid[ref][0]}")
            raise NotFoundError(f"no rule '{ref}'")
        async with self._changing:
            await self.ledger.put_state(ref, "enabled", enabled)
            await self._set_enabled(rule, enabled)
        log.info("rule %s %s", ref, "enabled" if enabled else "disabled")
        return self.describe(ref)

    async def refresh(self) -> None:
        """Take up what other processes sharing the ledger enabled or disabled.

        `set_enabled` changes this process's rules and the ledger; on a shared data dir the
        engine calls this about once a second, so the process running the timers stops a rule
        disabled through another process's API, and every process matches events alike.
        """
        async with self._changing:  # not between another set_enabled's write and its change
            stored = await self.ledger.states(list(self._rules), "enabled")
            for ref, rule in self._rules.items():
                enabled = _enabled(rule.spec, stored)
                if enabled != rule.enabled:
                    await self._set_enabled(rule, enabled)
                    log.info("rule %s %s (by another process)", ref, "enabled" if enabled else "disabled")

    async def _set_enabled(self, rule: _Rule, enabled: bool) -> None:
        rule.enabled = enabled
        ref = rule.spec.ref
        if rule.spec.trigger_type in TIMER_TRIGGERS:
            if enabled and ref not in self._timers and self.sources_running and self._runs_here(ref):
                await self._start_timer(rule)
            elif not enabled:
                self._stop_timer(ref)

    def triggers(self) -> list[dict[str, Any]]:
        sensors = {t.ref: s for s in self._sensor_states for t in s.spec.trigger_types}
        out = []
        for ref, spec in sorted(self._types.items()):
            doc: dict[str, Any] = {
                "type": ref,
                "source": "builtin" if ref in BUILTIN_TRIGGERS else "sensor",
                "description": spec.description if spec is not None else "",
                "rules": sorted(r for r, rule in self._rules.items() if rule.spec.trigger_type == ref),
            }
            if ref in BUILTIN_TRIGGERS:
                doc["parameters"] = {
                    k: {"required": req, "description": d} for k, (req, d) in BUILTIN_TRIGGERS[ref].items()
                }
            if ref == "core.nats":
                doc["status"] = self._nats_status
                doc["subjects"] = self._nats_subjects()
            state = sensors.get(ref)
            if state is not None:
                doc["sensor"] = state.to_dict()
            out.append(doc)
        return out

    async def enforcements(
        self, rule: str | None = None, trigger_instance_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        found = await self.ledger.list(rule=rule, trigger_instance_id=trigger_instance_id, limit=limit)
        return [r.to_dict() for r in found]


def _enabled(spec: RuleSpec, stored: Mapping[str, Any]) -> bool:
    """Whether a rule is enabled: as enable/disable stored it, else as its file says."""
    value = stored.get(spec.ref)
    return spec.enabled if value is None else bool(value)


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, tz=UTC).isoformat()


__all__ = ["RulesService", "Starter", "subject_matches"]
