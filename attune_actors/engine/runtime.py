"""Runtime: the services every supervisor of one engine shares.

Supervisors call it to build conductors, save snapshot steps and publish events. The index of live
executions (`executions`, engine/index.py) and the inquiries (`inquiries`, engine/inquiry.py) are
owned by their own objects; the runtime only holds them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from attune_actors.clock import Clock, RealClock
from attune_actors.codec import decode, encode
from attune_actors.config import LimitSettings
from attune_actors.engine.conductor import Conductor
from attune_actors.engine.events import EventBus
from attune_actors.engine.execution import Execution
from attune_actors.engine.graphdoc import RunMark, graph_document
from attune_actors.engine.index import ExecutionIndex
from attune_actors.engine.inquiry import Inquiries, InquiryRecord
from attune_actors.engine.state import ITEM_INPUT, STATUSES, ItemRun, TaskRun, iso
from attune_actors.engine.task import AttemptsInFlight
from attune_actors.errors import NotFoundError, StoreError
from attune_actors.kv import Masker
from attune_actors.kv.secrets import Cipher
from attune_actors.observability.metrics import EngineMetrics
from attune_actors.observability.tracing import Tracing
from attune_actors.spec.graph import TaskGraph
from attune_actors.spec.model import ActionSpec, WorkflowSpec
from attune_actors.spec.packs import Catalog, load_workflow_text
from attune_actors.spec.params import apply_params
from attune_actors.statuses import TERMINAL
from attune_actors.store.base import HeaderBase, Snapshot, Store
from attune_actors.templates import Renderer
from attune_actors.transport.base import Transport

log = logging.getLogger("attune_actors.engine")

SEALED = "__attune_sealed__"  # marks a stored value encrypted with the data dir's secret key
# Executions whose `_Saved` the runtime keeps (~0.6 KiB each): enough for the executions that step
# at once, not one per parked execution (RSS); one dropped is built again when needed.
_SAVED_KEPT = 2048
# The active runs a header carries, and the largest record it carries: a run record rewritten with
# every header costs more than its own row once there are many, or once it is large (an input).
_ACTIVE_KEPT = 8
_ACTIVE_BYTES = 1024


class _Saved:
    """What `Runtime.save_step` keeps of one execution between its steps."""

    __slots__ = ("active", "base", "conductor", "owner", "version")

    def __init__(self, conductor: Conductor, base: HeaderBase, version: int, owner: str | None) -> None:
        self.conductor = conductor  # a restored execution's new conductor starts afresh
        self.base = base
        # The masker's version and the owner `base` was built with (a change of either: built again).
        self.version = version
        self.owner = owner
        # Run id -> encoded record, for the active runs the header carries.
        self.active: dict[str, bytes] = {}


class Runtime:
    """Shared services of one engine's supervisors."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        renderer: Renderer,
        transport: Transport,
        store: Store,
        masker: Masker,
        kv: Any,
        events: EventBus,
        cipher: Cipher,
        clock: Clock | None = None,
        new_id: Callable[[], str] | None = None,
        metrics: EngineMetrics | None = None,
        tracing: Tracing | None = None,
        limits: LimitSettings | None = None,
    ) -> None:
        self.catalog = catalog
        self._action = catalog.action  # one bound method for every conductor
        self._identities: dict[str | None, dict[str, Any]] = {}  # login -> `system.identity`, shared
        self._digests: dict[int, tuple[WorkflowSpec, str]] = {}  # id(spec) -> it, its digest
        # Ids of new executions (nested ones too): a cluster's partition engines name their
        # partition in them (`attune_actors.nats.cluster`).
        self.new_id: Callable[[], str] = new_id or _random_id
        self.renderer = renderer
        self.transport = transport
        self.store = store
        self.masker = masker
        self.kv = kv
        self.events = events
        self.cipher = cipher
        self.clock: Clock = clock or RealClock()
        self.attempts = AttemptsInFlight()
        self.metrics = metrics if metrics is not None else EngineMetrics()
        self.tracing = tracing  # None: tracing is off (observability.tracing)
        self.limits = limits or LimitSettings()  # what each conductor enforces per execution
        self._specs: dict[str, WorkflowSpec] = {}  # definition digest -> spec
        self._graphs: dict[int, tuple[WorkflowSpec, TaskGraph]] = {}
        self.executions = ExecutionIndex()
        self.inquiries = Inquiries(self.executions, events, masker)
        self.owner: str | None = None  # the token of this process on a shared data dir (store.owners)
        # Execution id -> what save_step keeps of it, for the latest executions saved and not ended.
        self._saved: dict[str, _Saved] = {}

    # -- building executions -------------------------------------------------------------------

    def graph(self, spec: WorkflowSpec) -> TaskGraph:
        """The graph of a definition, built once per definition object."""
        cached = self._graphs.get(id(spec))
        if cached is None or cached[0] is not spec:
            cached = (spec, TaskGraph.build(spec))
            self._graphs[id(spec)] = cached
        return cached[1]

    def new_conductor(
        self,
        action: ActionSpec,
        parameters: dict[str, Any] | None,
        *,
        execution_id: str | None = None,
        parent_id: str | None = None,
        parent_run: tuple[str, int] | None = None,
        identity: Any = None,
    ) -> Conductor:
        """Validate parameters and build the conductor of a new execution of a workflow action."""
        spec = action.workflow
        if spec is None:
            raise NotFoundError(f"'{action.ref}' is an action, not a workflow")
        params = apply_params(spec.parameters, parameters, owner=spec.ref)
        for p in spec.parameters:
            if p.secret and params.get(p.name) is not None:
                self.masker.add(params[p.name])
        execution_id = execution_id or self.new_id()
        login = identity.get("login") if isinstance(identity, dict) else identity
        if len(self._identities) > 1024:
            self._identities.clear()
        shown = (
            self._identities.setdefault(login, {"login": login})
            if login is None or isinstance(login, str) else {"login": login}
        )
        system = {
            "execution_id": execution_id,
            "workflow_execution_id": execution_id,
            "parent_execution_id": parent_id,
            "timestamp": None,
            "workflow_ref": spec.ref,
            "pack": spec.pack,
            "identity": shown,
        }
        return self._conductor(
            spec,
            execution_id,
            params,
            system,
            parent_id,
            parent_run,
            self._remember_source(spec),
            self.clock.now(),
        )

    def _conductor(
        self,
        spec: WorkflowSpec,
        execution_id: str,
        params: dict[str, Any],
        system: dict[str, Any],
        parent_id: str | None,
        parent_run: tuple[str, int] | None,
        definition: str,
        created_at: float,
    ) -> Conductor:
        pack = self.catalog.packs.get(spec.pack)
        return Conductor(
            execution_id=execution_id,
            spec=spec,
            graph=self.graph(spec),
            actions=self._action,
            renderer=self.renderer,
            parameters=params,
            pack_config=pack.config if pack is not None else {},
            system=system,
            kv=self.kv,
            parent_id=parent_id,
            parent_run=parent_run,
            definition=definition,
            created_at=created_at,
            limits=self.limits,
        )

    def _remember_source(self, spec: WorkflowSpec) -> str:
        """Store the definition an execution starts with (once per distinct source)."""
        known = self._digests.get(id(spec))
        if known is not None and known[0] is spec:
            return known[1]  # one string for all its executions, and no hashing per execution
        digest = hashlib.sha256(f"{spec.ref}\n{spec.source}".encode()).hexdigest()[:32]
        if digest not in self._specs:
            self.store.put_source(digest, spec.pack, spec.source)
            self._specs[digest] = spec
        if len(self._digests) > 1024:
            self._digests.clear()
        self._digests[id(spec)] = (spec, digest)  # once stored
        return digest

    def _started_spec(self, h: dict[str, Any]) -> WorkflowSpec:
        """The definition an execution started with (its snapshot header names it by digest)."""
        spec = self._specs.get(h["definition"])
        if spec is None:
            stored = self.store.get_source(h["definition"])
            if stored is None:
                raise StoreError(f"execution {h['id']}: its workflow definition is missing from the store")
            pack, source = stored
            problems: list[Any] = []
            spec = load_workflow_text(
                source, pack=pack, file=f"<{h['ref']} as started>", default_ref=h["ref"], problems=problems
            )
            if spec is None or problems:
                raise StoreError(
                    f"execution {h['id']}: its stored definition no longer loads: "
                    f"{problems[0] if problems else 'empty'}"
                )
            self._specs[h["definition"]] = spec
        return spec

    def graph_document(
        self, execution_id: str, status: str, spec: WorkflowSpec, runs: list[RunMark]
    ) -> dict[str, Any]:
        """The graph document of an execution (engine.graphdoc), node kinds from this catalog."""
        return graph_document(execution_id, status, spec, runs, self.catalog.actions.get)

    def graph_from_store(self, execution_id: str) -> dict[str, Any] | None:
        """The graph document of an execution no supervisor holds, from its snapshot."""
        snap = self.store.load(execution_id)
        if snap is None:
            return None
        marks = [
            RunMark(rec["task"], rec["status"], tuple(rec.get("fired") or ()))
            for rec in sorted(snap.runs.values(), key=lambda r: r["seq"])
        ]
        spec = self._started_spec(snap.header)
        return self.graph_document(execution_id, snap.header["status"], spec, marks)

    def restore_conductor(self, snap: Snapshot) -> Conductor:
        """Rebuild an execution's conductor from its snapshot, with the definition it started with."""
        h = snap.header
        spec = self._started_spec(h)
        params = dict(h.get("parameters") or {})
        if h.get("sealed_parameters"):
            params.update(self._unseal(h["sealed_parameters"]))
        for p in spec.parameters:
            if p.secret and params.get(p.name) is not None:
                self.masker.add(params[p.name])
        system = dict(h["system"])
        system["timestamp"] = None
        parent_run = (h["parent_run"][0], h["parent_run"][1]) if h.get("parent_run") else None
        conductor = self._conductor(
            spec,
            h["id"],
            params,
            system,
            h["parent_id"],
            parent_run,
            h["definition"],
            h.get("created_at") or 0.0,
        )
        runs = [dict(rec, input=self._unseal(rec["input"])) for rec in snap.runs.values()]
        items = []
        for run_id, idx, rec in snap.item_records():
            rec = list(rec)
            rec[ITEM_INPUT] = self._unseal(rec[ITEM_INPUT])
            items.append((run_id, idx, rec))
        conductor.restore(h, runs, items)
        return conductor

    # -- steps and ends --------------------------------------------------------------------------

    def save_step(
        self, conductor: Conductor, runs: list[TaskRun], items: Iterable[tuple[str, int, ItemRun]]
    ) -> None:
        """Save a step's snapshot delta: the header and the runs and items that changed.

        The header carries the records of the execution's active runs (up to `_ACTIVE_KEPT`
        small ones, `store.base.ACTIVE_RUNS`); a run gets a row of its own when it ends (or does
        not fit there), so a run that starts and ends is written as a row once.

        Nothing stored holds a secret in clear: values that contain one are masked (results,
        vars, errors), except what recovery must send again (inputs, secret parameters), which is
        encrypted with the data dir's secret key.
        """
        masker = self.masker
        saved = self._saved.get(conductor.id)
        if (
            saved is None
            or saved.conductor is not conductor
            or saved.version != masker.version
            or saved.owner != self.owner
        ):
            saved = self._start_saving(conductor)
            changed = {run.id for run in runs}
            runs = runs + [conductor.runs[r] for r in conductor.active if r not in changed]
        mask, seal = (masker.mask, self._seal_if_secret) if masker else (None, None)
        active, rows = saved.active, []
        try:
            for run in runs:
                blob = encode(run.record(mask, seal))
                rid = run.id
                if (
                    run.status not in TERMINAL
                    and len(blob) <= _ACTIVE_BYTES
                    and (rid in active or len(active) < _ACTIVE_KEPT)
                ):
                    active[rid] = blob
                else:
                    active.pop(rid, None)
                    rows.append((rid, run.seq, run.task, run.status, blob))
            step = conductor.header_step()
            if mask is not None:
                for key in ("vars", "output", "error"):
                    step[key] = mask(step[key])
            base = saved.base
            header = base.record(step, active.values())
            item_rows = [((run_id, idx), encode(it.to_record(mask, seal))) for run_id, idx, it in items]
        except BaseException:  # a value that cannot be encoded: `active` is no longer what is stored
            self._saved.pop(conductor.id, None)
            raise
        status = step["status"]
        listing = (status, step["started_at"], step["ended_at"], base.parent_id, base.ref)
        self.store.save_encoded(conductor.id, header, listing, rows, item_rows)
        if status in TERMINAL:
            self._saved.pop(conductor.id, None)

    def _start_saving(self, conductor: Conductor) -> _Saved:
        """What `save_step` keeps of `conductor` between steps, built again: the part of its
        header no step changes, built, masked, sealed and encoded once per execution (again when
        the owner or the secrets to mask change), and no active run yet (`save_step` adds them)."""
        fields = conductor.header_base()
        if self.owner is not None:
            fields["owner"] = self.owner
        fields["parameters"] = self.shown_parameters(conductor)
        secret_names = conductor.secret_parameters
        if secret_names:
            params = conductor.parameters
            fields["sealed_parameters"] = self._seal({k: params[k] for k in secret_names})
        kept = self._saved
        kept.pop(conductor.id, None)
        if len(kept) >= _SAVED_KEPT:
            del kept[next(iter(kept))]  # the oldest: parked executions make way for busy ones
        saved = kept[conductor.id] = _Saved(conductor, HeaderBase(fields), self.masker.version, self.owner)
        return saved

    def shown_parameters(self, conductor: Conductor) -> dict[str, Any]:
        """The parameters as stored and shown: secret ones as `***` (whatever their length), masked."""
        mask, secret_names, params = self.masker.mask, conductor.secret_parameters, conductor.parameters
        if not secret_names:
            shown: dict[str, Any] = mask(params)
            return shown
        return {k: "***" if k in secret_names and v is not None else mask(v) for k, v in params.items()}

    def end_document(self, conductor: Conductor) -> dict[str, Any]:
        """An ended execution's document, as `document_from_store` would read it back (unmasked)."""
        doc = conductor.document()
        doc["parameters"] = self.shown_parameters(conductor)
        return doc

    def execution(self, conductor: Conductor) -> Execution:
        """`end_document` as the masked `Execution` that `Engine.execute` and `Engine.wait` return
        (built directly when no secret is known)."""
        if self.masker:  # secrets known: mask the document as a whole, as `Engine.get` does
            return Execution.from_dict(self.masker.mask(self.end_document(conductor)))
        c = conductor
        return Execution(
            c.id,
            c.spec.ref,
            STATUSES[c.status],
            self.shown_parameters(c),
            c.output,
            c.error,
            iso(c.started_at),
            iso(c.ended_at),
            c.parent_id,
            [run.info() for run in c.runs.values()],
            c.rerun_of,
        )

    def _seal_if_secret(self, value: Any) -> Any:
        if value is None or self.masker.mask(value) is value:
            return value
        return self._seal(value)

    def _seal(self, value: Any) -> dict[str, str]:
        return {SEALED: self.cipher.encrypt(encode(value))}

    def _unseal(self, value: Any) -> Any:
        if isinstance(value, dict) and SEALED in value:
            return decode(self.cipher.decrypt(value[SEALED], what="a stored secret value"))
        return value

    def idle(self) -> bool:
        """Nothing but timers to wait for: no action attempt doing real work, no event unread.

        A pending inquiry does not count: time passes while nobody answers (that is what its
        expiry is for); whoever answers it reads its event first, and an unread event counts.
        Attempts the transport ends on the clock (scripted outcomes) are timers too.
        """
        return (
            self.attempts.count <= self.transport.waiting_on_clock() and not self.events.unread()
        )

    def publish(self, event: dict[str, Any]) -> None:
        """Hand an event to subscribers, with secrets masked."""
        self.events.publish(self.masker.mask(event))

    # -- documents -------------------------------------------------------------------------------

    def document_from_store(self, execution_id: str) -> dict[str, Any] | None:
        snap = self.store.load(execution_id)
        return None if snap is None else document_from_snapshot(snap)


def document_from_snapshot(snap: Snapshot) -> dict[str, Any]:
    """The execution document from stored records (the same shape `Conductor.document` gives)."""
    h = snap.header
    runs = {rid: TaskRun.from_record(rec) for rid, rec in snap.runs.items()}  # inputs are not shown
    for (rid, idx), rec in snap.items.items():
        run = runs.get(rid)
        if run is not None and run.item_state is not None and idx < len(run.item_state):
            run.item_state.load(idx, rec)
    return {
        "id": h["id"],
        "ref": h["ref"],
        "status": h["status"],
        "parameters": h.get("parameters") or {},
        "output": h["output"],
        "error": h["error"],
        "started_at": iso(h["started_at"]),
        "ended_at": iso(h["ended_at"]),
        "parent_id": h["parent_id"],
        "rerun_of": h.get("rerun_of"),
        "tasks": [r.document() for r in sorted(runs.values(), key=lambda r: r.seq)],
    }


def rerun_snapshot(snap: Snapshot, execution_id: str, now: float) -> Snapshot:
    """A new execution `execution_id` that starts as the ended `snap` was: same runs and results.

    Its conductor's `rerun` then runs again what is to be run again; the original is untouched.
    """
    h = dict(snap.header)
    h["rerun_of"] = h["id"]
    h["id"] = execution_id
    h["system"] = {**h["system"], "execution_id": execution_id, "workflow_execution_id": execution_id}
    h["started_at"] = h["created_at"] = now
    h["ended_at"] = None
    return Snapshot(h, dict(snap.runs), dict(snap.items))


def _random_id() -> str:
    """128 random bits in hex (the length of a UUID's hex): `uuid.uuid4().hex` took 2.2 µs, this
    0.3 µs, of an execution's ~250."""
    return os.urandom(16).hex()


__all__ = ["InquiryRecord", "Runtime", "document_from_snapshot", "rerun_snapshot"]
