"""Engine: the single door every front end (Python API, CLI, NATS service) goes through.

`async with Engine(packs=["packs"], data_dir=".attune") as engine:` loads and validates packs,
starts the store and transport, and from then on runs executions as supervisor actors on the
running event loop. Its methods are coroutines; they never block the loop.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import json
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from pykka import ActorDeadError

from attune_actors.clock import Clock, RealClock, VirtualClock
from attune_actors.config import Settings, load_settings
from attune_actors.engine.events import EventBus, Subscription
from attune_actors.engine.execution import Execution
from attune_actors.engine.messages import Control, GetDocument, GetGraph, Rerun, Start
from attune_actors.engine.quarantine import RecoveryGuard, fail_stored
from attune_actors.engine.runtime import Runtime, rerun_snapshot
from attune_actors.engine.supervisor import WorkflowSupervisor
from attune_actors.errors import (
    AttuneError,
    ConfigError,
    ConflictError,
    EngineClosedError,
    InquiryResponseError,
    NotFoundError,
    ParameterError,
    StoreError,
    ValidationError,
)
from attune_actors.kv import KVScope, KVStore, Masker
from attune_actors.kv.secrets import Cipher
from attune_actors.observability.metrics import EngineMetrics
from attune_actors.observability.tracing import resolve as resolve_tracing
from attune_actors.rules import RulesService, start_rules
from attune_actors.runners import RunnerLimits, RunnerSet
from attune_actors.spec.model import MISSING, ActionSpec, ParamSpec
from attune_actors.spec.packs import Catalog, load_packs, load_workflow_text, workflow_action
from attune_actors.spec.validate import validate_catalog, validate_workflow
from attune_actors.spec.yamlsrc import YamlLimits, use_yaml_limits
from attune_actors.statuses import TERMINAL
from attune_actors.store.base import MemoryStore, Snapshot, Store, resolve_id
from attune_actors.store.datadir import DB_FILE_NAME, prepare_data_dir
from attune_actors.store.owners import Owner, Owners
from attune_actors.templates import Renderer
from attune_actors.transport.base import Transport
from attune_actors.transport.inprocess import InProcessTransport

log = logging.getLogger("attune_actors.engine")
packs_log = logging.getLogger("attune_actors.engine.packs")  # what is wrong in the packs loaded
_ACTION_PROBLEM = re.compile(r"action '([^']+)': ")  # the problems load_packs finds in an action

_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_ACTION_WORKFLOWS_KEPT = 256  # one-task workflows of actions, by action and extra parameter names
_REQUEST_POLL = 0.1  # seconds between looks for other processes' requests
# Request polls (~1 s) between looks at the rules other processes changed, and tries to take
# the timers and sensors over.
_RULES_POLL = 10
_ASK_TIMEOUT = 10.0  # seconds another process's owner has to answer a request
_REMOTE_ERRORS: dict[str, type[AttuneError]] = {
    cls.__name__: cls
    for cls in (NotFoundError, ParameterError, ConflictError, InquiryResponseError, ValidationError)
}


@dataclass(frozen=True)
class WorkflowInfo:
    """A workflow definition as the engine knows it."""

    ref: str
    pack: str
    label: str
    description: str
    version: str
    parameters: tuple[ParamSpec, ...]
    source: str
    file: str
    runtime_defined: bool

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> WorkflowInfo:
        """The workflow `to_dict` described (a parameter whose default is null has none)."""
        parameters = tuple(
            ParamSpec(
                name, p.get("type"), bool(p.get("required")),
                MISSING if p.get("default") is None else p["default"],
                tuple(p["enum"]) if p.get("enum") is not None else None,
                p.get("description") or "", bool(p.get("secret")),
            )
            for name, p in (doc.get("parameters") or {}).items()
        )
        return cls(doc["ref"], doc["pack"], doc.get("label") or "", doc.get("description") or "",
                   doc.get("version") or "", parameters, doc.get("source") or "", doc.get("file") or "",
                   bool(doc.get("runtime_defined")))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "pack": self.pack,
            "label": self.label,
            "description": self.description,
            "version": self.version,
            "file": self.file,
            "runtime_defined": self.runtime_defined,
            "parameters": {
                p.name: {
                    "type": p.type,
                    "required": p.required,
                    "default": None if not p.has_default else p.default,
                    "enum": list(p.enum) if p.enum is not None else None,
                    "description": p.description,
                    "secret": p.secret,
                }
                for p in self.parameters
            },
            "source": self.source,
        }


class Engine:
    """Runs workflow executions; embedded by default (in-process workers, local data dir)."""

    def __init__(
        self,
        packs: Sequence[str | Path] | None = None,
        data_dir: str | Path | None = None,
        *,
        settings: Settings | None = None,
        store: Store | None = None,
        transport: Transport | None = None,
        recover: bool = True,
        clock: Clock | None = None,
        new_id: Callable[[], str] | None = None,
        tracer_provider: Any = None,
        rules: bool = True,
        partition: tuple[int, int] | None = None,
    ) -> None:
        """`recover`: on start, adopt and continue every unfinished execution that no live process
        owns (the default, for long-lived engines); with False, only what this engine is asked to
        run (and `adopt`, `resume`, `cancel`, ... of a named one) runs here. `tracer_provider`: an
        OpenTelemetry `TracerProvider` for this engine's spans (default: as the OTEL_* variables
        configure it, or the application's global one; else no tracing). `partition`: (this
        engine's partition, of how many), for the engines of a cluster's partitions: rules then run
        each timer and sensor in one partition's engine of the deployment, and start executions
        that belong to the partition that started them (`attune_actors.rules`)."""
        overrides: dict[str, Any] = {}
        if packs is not None:
            overrides["packs"] = [str(p) for p in packs]
        if data_dir is not None:
            overrides["data_dir"] = str(data_dir)
        if settings is None:
            settings = load_settings(overrides=overrides)
        elif overrides:
            settings = load_settings(overrides={**dataclasses.asdict(settings), **overrides}, environ={})
        self.settings = settings
        self._store_override = store
        self._transport_override = transport
        self._recover_all = recover
        self._owners: Owners | None = None  # who runs what on a shared data dir (SQLite store)
        self._sweeper: asyncio.Task[None] | None = None
        # Where the engine reads the time and sets its timers (attune_actors.clock): a test passes a
        # VirtualClock to skip retry delays and timeouts.
        self.clock: Clock = clock or RealClock()
        self._new_id = new_id  # ids of new executions (default: random hex)
        self._rt: Runtime | None = None
        self._kv: KVStore | None = None
        self.catalog = Catalog()
        limits = settings.limits
        self.renderer = Renderer(
            max_loop_steps=limits.template_loop_steps, max_output=limits.template_output_bytes
        )
        self._yaml_limits = YamlLimits(max_bytes=limits.yaml_bytes, max_values=limits.yaml_values)
        self.masker = Masker()
        self._runtime_refs: set[str] = set()
        self._action_workflows: dict[tuple[str, tuple[str, ...]], tuple[ActionSpec, ActionSpec]] = {}
        self._invalid: dict[str, builtins.list[AttuneError]] = {}  # workflow ref -> its problems
        self._events = EventBus(self.settings.limits.event_buffer)
        # Its own registry: several engines in one process never mix their series.
        self.metrics = EngineMetrics()
        self._tracing = resolve_tracing(tracer_provider)
        self._rules_wanted = rules
        self._partition = partition
        self._rules: RulesService | None = None  # rules, triggers, sensors (attune_actors.rules)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Load and validate packs, open the store, start the transport, resume unfinished executions.

        An invalid workflow does not stop the engine: it is logged and left out, and executing it
        raises ValidationError with its problems; everything else is served.
        """
        if self._rt is not None:
            return
        data = prepare_data_dir(self.settings.data_path)
        self._kv = KVStore(data / DB_FILE_NAME, secret_key=self.settings.secret_key)
        try:
            self._kv.check_key()
            with use_yaml_limits(self._yaml_limits):
                catalog, problems = load_packs(self.settings.packs)
                problems.extend(validate_catalog(catalog, self.renderer))
                self._quarantine(catalog, problems)
                self.catalog = catalog
                store = self._store_override or self._make_store()
                store.instrument(self.metrics)
                await store.open()
                for ref, pack, source in store.definitions():
                    self._load_runtime_definition(ref, pack, source)
        except BaseException:
            self._kv.close()
            raise
        if self._store_override is None and self.settings.store == "sqlite":
            self._owners = Owners(data)
        transport = self._transport_override or self.in_process_transport()
        transport.instrument(self.metrics, self._tracing)
        await transport.start()
        cipher = Cipher(secret_key=self.settings.secret_key, key_file=data / "secret.key")
        self._rt = Runtime(
            catalog=self.catalog,
            renderer=self.renderer,
            transport=transport,
            store=store,
            masker=self.masker,
            kv=KVScope(self._kv, self.masker),
            events=self._events,
            cipher=cipher,
            clock=self.clock,
            new_id=self._new_id,
            metrics=self.metrics,
            tracing=self._tracing,
            limits=self.settings.limits,
        )
        self._gauges(self._rt)
        if isinstance(self.clock, VirtualClock):
            self.clock.attach(self._rt.idle)
        if self._owners is not None:
            self._rt.owner = self._owners.token
        if self._recover_all:
            await self._adopt(self._rt, self._rt.store.unfinished())
        if self._owners is not None:
            self._sweeper = asyncio.get_running_loop().create_task(self._housekeeping())
        if self._rules_wanted:
            # On a shared data dir, one process runs the timer rules and sensors (`_housekeeping`
            # takes them over when that process ends).
            leads = self._owners is None or self._owners.lead_sources()
            self._rules = await start_rules(self, problems, partition=self._partition, run_sources=leads)

    def in_process_transport(self) -> InProcessTransport:
        """The transport this engine runs actions on by default: in-process, with its settings.

        For a transport that wraps it (the scripted one of `attune_actors.testing`); call it
        from the wrapper's `start()`, once the engine has loaded its packs.
        """
        return InProcessTransport(
            self.catalog.action,
            RunnerSet(limits=RunnerLimits.from_settings(self.settings.limits), masker=self.masker),
            max_inflight=self.settings.limits.max_inflight_runs,
            clock=self.clock,
        )

    def _gauges(self, rt: Runtime) -> None:
        m = self.metrics
        m.gauge("attune_executions_running", "Executions being run by this engine (nested ones included).",
                lambda: len(rt.executions.supervisors()))
        m.gauge("attune_runs_inflight", "Action attempts handed to the transport and not ended.",
                lambda: rt.attempts.count)
        m.gauge("attune_inquiries_pending", "Inquiries waiting for an answer.",
                lambda: len(rt.inquiries.list()))
        m.gauge("attune_event_subscribers", "Subscribers to the engine's events (SSE, NATS, API).",
                lambda: self._events.subscribers())
        m.counter_from("attune_events_dropped_total", "Events a slow subscriber missed (gap markers).",
                       lambda: self._events.dropped)

    def _quarantine(self, catalog: Catalog, problems: builtins.list[AttuneError]) -> None:
        """Take workflows with problems out of the catalog; remember why, for execute() to say.

        A workflow is invalid when its file has problems, or when it uses an action whose files
        have some (a python entry point that does not parse, ...): what `validate` reports is
        refused before anything runs, not found half-way through a run.
        """
        by_file: dict[Path, builtins.list[AttuneError]] = {}
        broken: dict[str, builtins.list[AttuneError]] = {}  # action ref -> its problems
        for err in problems:
            if err.location is not None:
                by_file.setdefault(Path(err.location.file).resolve(), []).append(err)
            named = _ACTION_PROBLEM.match(err.message)
            if named:
                broken.setdefault(named[1], []).append(err)
        for action in catalog.workflows():
            assert action.workflow is not None
            found = by_file.pop(Path(action.workflow.file).resolve(), None) or []
            for task in (*action.workflow.tasks, *(s for t in action.workflow.tasks for s in t.tasks)):
                for err in broken.get(task.action or "", ()):
                    found.append(AttuneError(f"task '{task.name}': {err.message}", location=err.location))
            if found:
                catalog.remove(action.ref)
                self._invalid[action.ref] = found
        for pack in catalog.packs.values():
            for file in sorted((Path(pack.path) / "workflows").glob("*.yaml")):
                loose = by_file.pop(file.resolve(), None)
                if loose:
                    self._invalid[f"{pack.ref}.{file.stem}"] = loose
        for ref in broken:
            if ref in catalog.actions:
                self._invalid[ref] = broken[ref]
        for err in problems:
            packs_log.debug("%s", err)
        if self._invalid:
            # Once and briefly: executing one of them says why; `validate` lists every problem.
            packs_log.warning("%d invalid workflow(s) or action(s) will not run (`attune-actors validate` "
                              "says why): %s", len(self._invalid), ", ".join(sorted(self._invalid)))

    def _make_store(self) -> Store:
        kind = self.settings.store
        if kind == "memory":
            return MemoryStore()
        if kind == "sqlite":
            from attune_actors.store.sqlite import SQLiteStore

            return SQLiteStore(self.settings.data_path / DB_FILE_NAME)
        raise ConfigError(f"store {kind!r} needs the distributed runtime (`attune-actors serve`)")

    async def _adopt(self, rt: Runtime, execution_ids: builtins.list[str], *, cancel: bool = False) -> bool:
        """Continue the unfinished top-level executions among `execution_ids` that no live process
        runs; whether the last one runs here now.

        The others are not that (nested, ended, unknown, run by a live process) or cannot be
        restored. With `cancel`, they are canceled (forced) instead: nothing they were running
        goes out again.
        """
        owners = self._owners
        started = False
        live: dict[object, bool] = {}  # owner token -> whether its process lives (asked once each)
        async with owners.claiming() if owners is not None else contextlib.nullcontext():
            # One at a time under a recovery marker: one whose recovery wedged or kept killing the
            # engine last time fails instead (see `engine.quarantine`).
            guard = RecoveryGuard(
                self.settings.data_path, stall=self.settings.limits.recovery_stall, order=execution_ids
            )
            left = guard.left_over()
            if left is not None and left.quarantine:
                (culprit,) = left.execution_ids
                if fail_stored(rt.store, culprit, left.reason, self.clock.now()):
                    log.error("execution %s failed: %s", culprit, left.reason)
            for execution_id in execution_ids:
                if execution_id in rt.executions:
                    started = True
                    continue
                # Read under the claim lock: another process may just have adopted it.
                snap = rt.store.load(execution_id)
                token = snap.header.get("owner") if snap is not None else None
                if owners is not None and token is not None and token not in live:
                    live[token] = owners.alive(token) is not None
                if live.get(token):
                    started = False  # a live process runs it
                    continue
                started = await self._restart(rt, snap, guard, cancel=cancel)
            guard.clear()
            await rt.store.flush()  # the headers name this process now: others see they are taken
        return started

    async def _restart(
        self, rt: Runtime, snap: Snapshot | None, guard: RecoveryGuard, *, cancel: bool
    ) -> bool:
        if snap is None or snap.header["parent_id"] is not None or snap.header["status"] in TERMINAL:
            return False
        execution_id = snap.header["id"]
        try:
            conductor = rt.restore_conductor(snap)
        except AttuneError as exc:
            log.error("cannot resume execution %s: %s", execution_id, exc)
            return False
        rt.save_step(conductor, [], [])  # records the new owner
        guard.mark(execution_id)
        ref = WorkflowSupervisor.start(rt, conductor)
        rt.executions.add(conductor.id, ref)
        if cancel:
            ref.tell(Control("cancel", True))
        else:
            # Embedded, the attempts it had in flight died with the process that ran them.
            ref.tell(Start(recovered=True, new_attempts=self._transport_override is None))
        try:
            await ref.ask(GetDocument(), block=False)  # answered once the first message is handled
        except ActorDeadError:
            pass
        if not cancel:
            log.info("resumed execution %s (%s, %s)", execution_id, conductor.spec.ref, conductor.status)
        return True

    async def _housekeeping(self) -> None:
        """Carry out other processes' requests on executions run here; take up the rules they
        enabled or disabled, and the timer rules and sensors when the process that ran them ended."""
        assert self._owners is not None
        owners = self._owners
        turns = 0
        while True:
            await asyncio.sleep(_REQUEST_POLL)  # other processes write files: nothing to await
            rt = self._rt
            if rt is None:
                return
            for token, execution_id, request in owners.requests(rt.executions.__contains__):
                owners.reply(token, await self._serve_request(execution_id, request))
            turns += 1
            rules = self._rules
            if rules is None or turns % _RULES_POLL:
                continue
            data = self.settings.data_path
            try:
                await rules.refresh()
                if not rules.sources_running and owners.lead_sources():
                    log.info("this process runs the timer rules and sensors of %s now", data)
                    await rules.start_sources()
            except Exception:  # the requests above must still be served
                log.exception("taking up the rules of %s failed", data)

    async def _serve_request(self, execution_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """One request from another process (see `Owners.ask`): a document, or an error."""
        try:
            op = request.get("op")
            if op in ("cancel", "pause", "resume"):
                done = await self._control(execution_id, Control(op, bool(request.get("force"))))
                return {"ok": done.to_dict()}
            if op == "respond":
                answered = await self.respond(
                    str(request["inquiry_id"]), request.get("response"), request.get("identity")
                )
                return {"ok": answered}
            return {"error": {"type": "ParameterError", "message": f"unknown request {op!r}"}}
        except AttuneError as exc:
            return {"error": {"type": type(exc).__name__, "message": exc.message}}
        except Exception as exc:  # a bug here must not stop the housekeeping of this engine
            log.exception("request %r on execution %s failed", request, execution_id)
            return {"error": {"type": "AttuneError", "message": f"internal error: {exc!r}"}}

    async def _ask_owner(self, execution_id: str, request: dict[str, Any]) -> Any:
        """Have the live process that owns the execution carry out `request`; its reply."""
        assert self._owners is not None
        owner = self.owner(execution_id)
        try:
            reply = await self._owners.ask(execution_id, request, _ASK_TIMEOUT)
        except TimeoutError:
            who = owner.describe() if owner is not None else "its owner"
            raise ConflictError(
                f"execution '{execution_id}' is run by {who}, which did not answer within "
                f"{_ASK_TIMEOUT:g} s"
            ) from None
        if "error" in reply:
            kind = _REMOTE_ERRORS.get(reply["error"].get("type"), AttuneError)
            raise kind(reply["error"].get("message", "error"))
        return reply["ok"]

    async def close(self) -> None:
        """Stop every execution's actors, the transport and the store."""
        rt, self._rt = self._rt, None
        if rt is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        rules, self._rules = self._rules, None
        if rules is not None:
            await rules.stop()
        stopping = []
        for ref in rt.executions.supervisors():
            try:
                stopping.append(ref.stop(block=False))
            except ActorDeadError:
                pass
        # Only this engine's actors: other engines of the process (a cluster's partitions) run on.
        try:
            async with asyncio.timeout(10):
                for stopped in stopping:
                    with contextlib.suppress(ActorDeadError):
                        await stopped
        except TimeoutError:
            log.warning("some actors did not stop within 10 s")
        self._events.close()
        await rt.transport.close()
        try:
            await rt.store.close()
        except StoreError as exc:  # e.g. the disk is still full: say what is lost, once
            log.error("%s", exc)
        finally:
            # Only now may another process adopt what this one leaves unfinished.
            if self._owners is not None:
                self._owners.close()
        if self._kv is not None:
            self._kv.close()
        rt.executions.cancel_waiters()

    def _runtime(self) -> Runtime:
        if self._rt is None:
            raise EngineClosedError("the engine is not started (use `async with Engine(...)`)")
        return self._rt

    # ------------------------------------------------------------------ executions

    async def execute(
        self,
        ref: str,
        parameters: dict[str, Any] | None = None,
        identity: str | None = None,
        *,
        execution_id: str | None = None,
    ) -> Execution:
        """Start an execution of workflow `ref`; parameters are validated before anything runs.

        With `execution_id`, starting is idempotent: if that execution exists, it is returned and
        nothing new starts (the rules service relies on this to start each enforcement once).
        """
        rt = self._runtime()
        if execution_id is not None and (
            execution_id in rt.executions or rt.store.load(execution_id) is not None
        ):
            return await self.get(execution_id)
        if ref in self._invalid:
            raise ValidationError(self._invalid[ref])
        action = self.catalog.action(ref)
        if action.workflow is None:
            extra = sorted(set(parameters or ()) - {p.name for p in action.parameters})
            bad = [name for name in extra if not _PARAMETER_NAME.match(str(name))]
            if bad and action.additional_parameters:
                raise ParameterError(f"{action.ref}: {bad[0]!r} is not a parameter name")
            action = self._action_workflow(action, tuple(extra) if action.additional_parameters else ())
        conductor = rt.new_conductor(action, parameters, identity=identity, execution_id=execution_id)
        # Accepted means durable: the execution is in the store before execute() returns, so a
        # crash right after cannot lose it (the group commit makes this cheap under load).
        try:
            rt.save_step(conductor, [], [])
            await rt.store.flush()
        except StoreError as exc:
            # Refused; the store keeps retrying what it buffered, so buffer it failed, not runnable.
            conductor.fail(f"not started: {exc}", self.clock.now())
            with contextlib.suppress(StoreError):
                rt.save_step(conductor, *conductor.take_dirty())
            raise
        ref_ = WorkflowSupervisor.start(rt, conductor)
        rt.executions.add(conductor.id, ref_)
        started = rt.execution(conductor)  # before Start: as it was accepted
        ref_.tell(Start())
        return started

    def _action_workflow(self, action: ActionSpec, extra: tuple[str, ...]) -> ActionSpec:
        """A one-task workflow running `action`: what executing an action runs.

        It has the action's ref and parameters (and the `extra` ones given to an action that takes
        additional parameters), and its output is `{"result": the action's result}`.
        """
        cached = self._action_workflows.get((action.ref, extra))
        if cached is not None and cached[0] is action:
            return cached[1]

        def param(p: ParamSpec) -> dict[str, Any]:
            doc: dict[str, Any] = {"required": p.required, "secret": p.secret}
            if p.type is not None:
                doc["type"] = p.type
            if p.has_default:
                doc["default"] = p.default
            if p.enum is not None:
                doc["enum"] = list(p.enum)
            return doc

        task = "action"
        text = yaml.safe_dump({
            "ref": action.ref,
            "description": action.description,
            "parameters": {**{p.name: param(p) for p in action.parameters}, **{name: {} for name in extra}},
            "tasks": [{
                "name": task,
                "action": action.ref,
                "input": {
                    name: "{{ parameters[" + json.dumps(name) + "] }}"
                    for name in (*(p.name for p in action.parameters), *extra)
                },
            }],
            "output_map": {"result": "{{ task." + task + ".result }}"},
        }, sort_keys=False)
        problems: builtins.list[Any] = []
        spec = load_workflow_text(
            text, pack=action.pack, file=f"<action {action.ref}>", default_ref=action.ref, problems=problems
        )
        if spec is None or problems:
            raise ValidationError(problems or f"action '{action.ref}' cannot run on its own")
        wrapped = workflow_action(spec, action.pack_path)
        if len(self._action_workflows) >= _ACTION_WORKFLOWS_KEPT:
            self._action_workflows.clear()  # bounded: extra parameter names come from callers
        self._action_workflows[(action.ref, extra)] = (action, wrapped)
        return wrapped

    def resolve(self, id_or_prefix: str) -> str:
        """The execution id that `id_or_prefix` names (ids may be abbreviated to a unique prefix)."""
        return resolve_id(self._runtime().store, id_or_prefix)

    def running_here(self, execution_id: str) -> bool:
        """Whether this engine runs the (top-level) execution now."""
        return execution_id in self._runtime().executions

    async def get(self, execution_id: str) -> Execution:
        """The execution as it is now, whatever its status."""
        return Execution.from_dict(await self._document(execution_id))

    async def wait(self, execution_id: str, timeout: float | None = None) -> Execution:
        """Wait until the execution is terminal; TimeoutError after `timeout` seconds."""
        rt = self._runtime()
        fut = rt.executions.end_of(execution_id)
        if fut is not None:
            try:
                # The future is this caller's own: a timeout may cancel it (nothing else waits on it).
                final = await (fut if timeout is None else asyncio.wait_for(fut, timeout))
            except TimeoutError:
                raise TimeoutError(f"execution {execution_id} did not end within {timeout} s") from None
            if final is not None:  # from the ending supervisor: no read back from the store
                return final
        return await self.get(execution_id)

    async def list(self, status: str | None = None, limit: int | None = None) -> builtins.list[Execution]:
        """Executions started from the API (not nested ones), newest first."""
        rt = self._runtime()
        headers = rt.store.headers(status=status, limit=limit, roots_only=True)
        return [await self.get(h["id"]) for h in headers]

    async def tasks(self, execution_id: str) -> builtins.list[Any]:
        """The task runs of an execution, in the order they started."""
        return list((await self.get(execution_id)).tasks)

    async def rerun(
        self, execution_id: str, tasks: Sequence[str] | None = None, *, reset_items: bool = False
    ) -> Execution:
        """Run a failed, timed-out or canceled execution again, keeping what completed.

        The rerun is a new execution (`rerun_of` names the original, which stays as it was): it
        starts with the original's task runs and results, then runs again from the task runs whose
        failure ended it, or from the named `tasks`. A with_items task keeps its succeeded items
        unless `reset_items`.
        """
        rt = self._runtime()
        snap = rt.store.load(execution_id)
        if snap is None:
            raise NotFoundError(f"no execution '{execution_id}'")
        status = snap.header["status"]
        if status not in TERMINAL:
            raise ConflictError(
                f"execution '{execution_id}' is still {status}; only ended ones can be re-run"
            )
        if status not in ("failed", "timeout", "canceled"):
            raise ConflictError(
                f"execution '{execution_id}' {status}: only failed, timed-out or canceled "
                "executions can be re-run"
            )
        if snap.header["parent_id"] is not None:
            raise ParameterError(
                f"execution '{execution_id}' is nested; re-run its parent '{snap.header['parent_id']}'"
            )
        copy = rerun_snapshot(snap, uuid.uuid4().hex, self.clock.now())
        conductor = rt.restore_conductor(copy)
        if tasks is not None:
            unknown = [t for t in tasks if conductor.spec.task(t) is None]
            if unknown:
                raise ParameterError(f"{conductor.spec.ref} has no task {', '.join(map(repr, unknown))}")
        if rt.owner is not None:
            copy.header["owner"] = rt.owner
        rt.store.save(conductor.id, copy.header, list(copy.runs.values()), copy.item_records())
        await rt.store.flush()
        ref = WorkflowSupervisor.start(rt, conductor)
        rt.executions.add(conductor.id, ref)
        ref.tell(Rerun(tuple(tasks) if tasks is not None else None, reset_items))
        return await self.get(conductor.id)

    async def adopt(self, execution_id: str) -> Execution:
        """Continue here an unfinished execution that no live process runs (its process died).

        ConflictError when another live process runs it or it has ended.
        """
        rt = self._runtime()
        if not await self._adopt(rt, [execution_id]):
            raise self._not_adoptable(rt, execution_id)
        return await self.get(execution_id)

    async def interrupted(self) -> builtins.list[Execution]:
        """Unfinished top-level executions that no live process runs: left by a process that died.

        Nothing is resumed; `adopt`, `resume` or `cancel` one to end that state.
        """
        rt = self._runtime()
        found = []
        for execution_id in rt.store.unfinished():
            if execution_id in rt.executions or self.owner(execution_id) is not None:
                continue
            doc = rt.document_from_store(execution_id)
            if doc is not None and doc["parent_id"] is None:
                found.append(Execution.from_dict(self.masker.mask(doc)))
        return found

    def owner(self, execution_id: str) -> Owner | None:
        """The live process that runs the (top-level) execution; None when none does, or when no
        data dir is shared."""
        rt = self._runtime()
        if self._owners is None:
            return None
        if execution_id in rt.executions:
            return self._owners.alive(self._owners.token)
        snap = rt.store.load(execution_id)
        return None if snap is None else self._owners.alive(snap.header.get("owner"))

    def _not_adoptable(self, rt: Runtime, execution_id: str) -> AttuneError:
        snap = rt.store.load(execution_id)
        if snap is None:
            return NotFoundError(f"no execution '{execution_id}'")
        if snap.header["parent_id"] is not None:
            return ParameterError(
                f"execution '{execution_id}' is nested; use its parent '{snap.header['parent_id']}'"
            )
        if snap.header["status"] in TERMINAL:
            return ConflictError(f"execution '{execution_id}' has ended ({snap.header['status']})")
        owner = self.owner(execution_id)
        if owner is not None:
            return ConflictError(f"execution '{execution_id}' is run by {owner.describe()}; control it there")
        return ConflictError(f"execution '{execution_id}' cannot be resumed (see the log)")

    async def pause(self, execution_id: str) -> Execution:
        return await self._control(execution_id, Control("pause"))

    async def resume(self, execution_id: str) -> Execution:
        return await self._control(execution_id, Control("resume"))

    async def cancel(self, execution_id: str, *, force: bool = False) -> Execution:
        return await self._control(execution_id, Control("cancel", force))

    async def _control(self, execution_id: str, message: Control) -> Execution:
        rt = self._runtime()
        if execution_id not in rt.executions:
            snap = rt.store.load(execution_id)
            if snap is None:
                raise NotFoundError(f"no execution '{execution_id}'")
            if snap.header["status"] in TERMINAL or snap.header["parent_id"] is not None:
                return await self.get(execution_id)
            if self.owner(execution_id) is not None:
                request = {"op": message.op, "force": message.force}
                return Execution.from_dict(await self._ask_owner(execution_id, request))
            # Left unfinished by a process that died: adopt it here to carry out the request.
            # Canceling it sends nothing out again; its runs end canceled at once.
            cancel = message.op == "cancel"
            if not await self._adopt(rt, [execution_id], cancel=cancel):
                raise self._not_adoptable(rt, execution_id)
            if cancel:
                return await self.get(execution_id)
        rt.executions.tell(execution_id, message)
        return await self.get(execution_id)

    async def _document(self, execution_id: str) -> dict[str, Any]:
        rt = self._runtime()
        doc = await self._ask(execution_id, GetDocument()) or rt.document_from_store(execution_id)
        if doc is None:
            raise NotFoundError(f"no execution '{execution_id}'")
        masked: dict[str, Any] = self.masker.mask(doc)
        return masked

    async def _ask(self, execution_id: str, message: GetDocument | GetGraph) -> dict[str, Any] | None:
        """The answer of the supervisor holding the execution; None when none does (it has ended)."""
        ref = self._runtime().executions.supervisor(execution_id)
        if ref is None:
            return None
        try:
            answer: dict[str, Any] | None = await ref.ask(message, block=False)
        except ActorDeadError:
            return None
        return answer

    async def graph(self, execution_id: str) -> dict[str, Any]:
        """The execution's graph document (`attune_actors.engine.graphdoc`): its workflow's tasks and
        transitions as it started with them, each node's latest status and run count, each edge taken
        or not. `render_graph(doc, "mermaid" | "dot")` turns it into a picture."""
        rt = self._runtime()
        doc = await self._ask(execution_id, GetGraph()) or rt.graph_from_store(execution_id)
        if doc is None:
            raise NotFoundError(f"no execution '{execution_id}'")
        return doc

    # ------------------------------------------------------------------ inquiries and events

    async def inquiries(
        self, status: str | None = "pending", execution_id: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Inquiries (default: the pending ones), optionally of one execution and its nested ones.

        Pending inquiries of executions that other processes run (or that wait unowned) are listed
        too, from the store.
        """
        rt = self._runtime()
        found = [self.masker.mask(r.to_dict()) for r in rt.inquiries.list(status, execution_id)]
        if status in (None, "pending") and (execution_id is None or execution_id not in rt.executions):
            found.extend(
                self.masker.mask(i)
                for i in self._stored_inquiries()
                if rt.inquiries.get(i["id"]) is None
                and (execution_id is None or execution_id in (i["execution_id"], _root_id(i["execution_id"])))
            )
        return found

    async def respond(self, inquiry_id: str, response: Any, identity: str | None = None) -> dict[str, Any]:
        """Answer a pending inquiry; the response must validate against its schema.

        Raises InquiryResponseError (schema violation, identity not allowed, not pending) and
        leaves the inquiry pending; NotFoundError for an unknown id.
        """
        rt = self._runtime()
        if rt.inquiries.get(inquiry_id) is None and not await self._inquiry_here(rt, inquiry_id):
            answered: dict[str, Any] = await self._ask_owner(
                _root_id(inquiry_id),
                {"op": "respond", "inquiry_id": inquiry_id, "response": response, "identity": identity},
            )
            return answered
        record = rt.inquiries.answer(inquiry_id, response, identity)
        return self.masker.mask(record.to_dict())  # type: ignore[no-any-return]

    async def _inquiry_here(self, rt: Runtime, inquiry_id: str) -> bool:
        """Make an inquiry not open here answerable here: False when a live process runs its
        execution (ask it); otherwise its execution is adopted, which opens the inquiry again."""
        root = _root_id(inquiry_id)
        snap = rt.store.load(root) if root not in rt.executions else None
        if snap is None or snap.header["status"] in TERMINAL or not self._pending_inquiry(inquiry_id):
            raise NotFoundError(f"no pending inquiry '{inquiry_id}'")
        if self.owner(root) is not None:
            return False
        if not await self._adopt(rt, [root]):
            raise self._not_adoptable(rt, root)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ASK_TIMEOUT
        while rt.inquiries.get(inquiry_id) is None:  # nested executions reopen theirs once started
            if loop.time() > deadline:
                raise NotFoundError(f"inquiry '{inquiry_id}' was not opened again")
            await asyncio.sleep(0.01)  # deliberate: polling supervisors started by messages
        return True

    def _pending_inquiry(self, inquiry_id: str) -> dict[str, Any] | None:
        """The stored pending inquiry `inquiry_id` (of any execution), as `inquiries` lists it."""
        return next((i for i in self._stored_inquiries() if i["id"] == inquiry_id), None)

    def _stored_inquiries(self) -> builtins.list[dict[str, Any]]:
        """Pending inquiries of unfinished executions, read from the store (any process)."""
        rt = self._runtime()
        found = []
        for execution_id in rt.store.unfinished():
            if _root_id(execution_id) in rt.executions:
                continue  # run here: its inquiries are open here
            snap = rt.store.load(execution_id)
            if snap is None:
                continue
            for rec in sorted(snap.runs.values(), key=lambda r: r["seq"]):
                if rec["status"] != "pending" or not rec.get("inquiry_id"):
                    continue
                inp = rec.get("input")
                if not isinstance(inp, dict):
                    inp = {}
                found.append({
                    "id": rec["inquiry_id"],
                    "execution_id": execution_id,
                    "task": rec["task"],
                    "prompt": str(inp.get("prompt") or ""),
                    "schema": inp.get("schema") or {},
                    "users": list(inp.get("users") or ()),
                    "roles": list(inp.get("roles") or ()),
                    "expires_at": None,
                    "status": "pending",
                    "response": None,
                })
        return found

    def events(self, execution_id: str | None = None) -> Subscription:
        """Status changes of executions, task runs and inquiries, as an async iterator of dicts.

        With `execution_id`, only that execution's events (nested executions included). The
        buffer is bounded (`limits.event_buffer`): a consumer that falls behind receives a
        `{"type": "gap", "missed": N}` marker instead of making the engine hold everything.
        Call `.close()` on the subscription when done.
        """
        self._runtime()
        return self._events.subscribe(execution_id)

    # ------------------------------------------------------------------ rules and triggers

    def _rules_service(self) -> RulesService:
        self._runtime()
        if self._rules is None:
            raise EngineClosedError("this engine runs no rules (it was started with rules=False)")
        return self._rules

    async def emit(
        self, trigger_type: str, payload: Any = None, *, instance_id: str | None = None, **attributes: Any
    ) -> str:
        """Emit a trigger instance (e.g. `emit("core.webhook", body, name="release")`); its id.

        Every enabled rule on `trigger_type` is evaluated and its enforcement recorded before this
        returns; matching rules' executions are started. `instance_id` makes a retried emit
        harmless (the same id enforces once); `attributes` become fields of the instance.
        """
        found, _ = await self._rules_service().emit(
            trigger_type, payload, instance_id=instance_id, attributes=attributes
        )
        return found

    async def list_rules(self, pack: str | None = None) -> builtins.list[dict[str, Any]]:
        """Every rule (invalid ones too, with their errors)."""
        return self._rules_service().list_rules(pack)

    async def get_rule(self, ref: str) -> dict[str, Any]:
        return self._rules_service().describe(ref)

    async def enable_rule(self, ref: str) -> dict[str, Any]:
        """Enable a rule now and across restarts."""
        return await self._rules_service().set_enabled(ref, True)

    async def disable_rule(self, ref: str) -> dict[str, Any]:
        """Disable a rule now (its timer stops at once) and across restarts."""
        return await self._rules_service().set_enabled(ref, False)

    async def list_triggers(self) -> builtins.list[dict[str, Any]]:
        """Trigger types (built-in and sensor-emitted), their rules and their sources' state."""
        return self._rules_service().triggers()

    async def enforcements(
        self, rule: str | None = None, trigger_instance_id: str | None = None, limit: int = 50
    ) -> builtins.list[dict[str, Any]]:
        """Enforcement records, newest first."""
        return await self._rules_service().enforcements(rule, trigger_instance_id, limit)

    # ------------------------------------------------------------------ workflow definitions

    async def put_workflow(self, pack: str, yaml_text: str, *, ref: str | None = None) -> str:
        """Create or update a workflow of `pack` from YAML; validated first. Returns its ref.

        With `ref`, the YAML may leave out its `ref` key, and must not name another. Parsing and
        validation run on a thread, so a large or hostile document (within the `limits.yaml_*`
        settings) does not stop the engine from serving everything else.
        """
        rt = self._runtime()
        if pack not in self.catalog.packs:
            raise NotFoundError(f"no pack '{pack}'")
        catalog = Catalog(packs=dict(self.catalog.packs), actions=dict(self.catalog.actions))
        action = await asyncio.to_thread(
            self._checked_workflow, pack, yaml_text, ref, catalog, frozenset(self._runtime_refs)
        )
        self.catalog.put(action)
        rt.store.put_definition(action.ref, pack, yaml_text)
        await rt.store.flush()  # a definition is durable once put_workflow returns
        self._runtime_refs.add(action.ref)
        return action.ref

    def _checked_workflow(
        self,
        pack: str,
        yaml_text: str,
        ref: str | None,
        catalog: Catalog,
        runtime_refs: frozenset[str],
    ) -> ActionSpec:
        """Parse and validate a put workflow against a copy of the catalog (on a thread)."""
        problems: list[Any] = []
        spec = load_workflow_text(
            yaml_text,
            pack=pack,
            file=f"<{pack} workflow>",
            default_ref=ref or f"{pack}.",
            problems=problems,
            limits=self._yaml_limits,
        )
        if spec is not None and spec.ref == f"{pack}.":
            problems.append(ValidationError("a workflow put at run time needs a 'ref' key").errors[0])
        if spec is not None and ref is not None and spec.ref != ref:
            problems.append(
                ValidationError(f"the definition's ref '{spec.ref}' is not '{ref}', the one it is put as")
                .errors[0]
            )
        if (
            spec is not None
            and not problems
            and spec.ref in catalog.actions
            and spec.ref not in runtime_refs
        ):
            problems.append(
                ValidationError(f"'{spec.ref}' is defined by a pack file; change that file instead").errors[0]
            )
        if problems or spec is None:
            raise ValidationError(problems)
        action = workflow_action(spec, catalog.packs[pack].path)
        catalog.put(action)
        found = validate_workflow(spec, catalog, self.renderer)
        if found:
            raise ValidationError(found)
        return action

    async def get_workflow(self, ref: str) -> WorkflowInfo:
        """The definition of workflow `ref`; ValidationError (its problems) if it is invalid."""
        if ref in self._invalid:
            raise ValidationError(self._invalid[ref])
        action = self.catalog.action(ref)
        spec = action.workflow
        if spec is None:
            raise NotFoundError(f"'{ref}' is an action, not a workflow")
        return WorkflowInfo(
            ref=spec.ref,
            pack=spec.pack,
            label=spec.label,
            description=spec.description,
            version=spec.version,
            parameters=spec.parameters,
            source=spec.source,
            file=spec.file,
            runtime_defined=ref in self._runtime_refs,
        )

    async def list_workflows(self, pack: str | None = None) -> builtins.list[WorkflowInfo]:
        """Every valid workflow (of `pack`: NotFoundError if there is no such pack), by ref."""
        if pack is not None and pack not in self.catalog.packs:
            raise NotFoundError(f"no pack '{pack}'")
        return [await self.get_workflow(a.ref) for a in self.catalog.workflows(pack)]

    async def delete_workflow(self, ref: str) -> None:
        rt = self._runtime()
        if ref not in self._runtime_refs:
            if ref in self.catalog.actions:
                raise ValidationError(f"'{ref}' is defined by a pack file; remove that file instead")
            raise NotFoundError(f"no workflow '{ref}'")
        rt.store.delete_definition(ref)
        await rt.store.flush()
        self.catalog.remove(ref)
        self._runtime_refs.discard(ref)

    def _load_runtime_definition(self, ref: str, pack: str, source: str) -> None:
        problems: list[Any] = []
        spec = load_workflow_text(
            source, pack=pack, file=f"<{pack} workflow>", default_ref=ref, problems=problems
        )
        if spec is None or problems or pack not in self.catalog.packs:
            log.error(
                "stored workflow %s no longer loads: %s",
                ref,
                problems[0] if problems else "no pack",
            )
            return
        self.catalog.put(workflow_action(spec, self.catalog.packs[pack].path))
        self._runtime_refs.add(ref)


def _root_id(inquiry_or_run_id: str) -> str:
    """The top-level execution of an inquiry or run id (`<root>.<seq>[-<attempt>.<seq>...]`)."""
    return inquiry_or_run_id.split(".", 1)[0]


__all__ = ["Engine", "WorkflowInfo"]
