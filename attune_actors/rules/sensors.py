"""Sensors: pack Python classes that emit trigger instances, each run by a supervised actor.

A sensor class (`sensors/<entry_point>`, class `class_name`) is built with the pack's config and
has either `async run(emit)` (runs until stopped) or `async poll(emit)` (called every
`poll_interval` seconds). `await emit(type, payload)` emits an instance of one of the trigger types
the sensor declares (`name` or `<pack>.<name>`); any other type raises `ParameterError`.

`SensorSupervisor` is the parent of one `SensorActor` per sensor. A sensor that raises (in its
constructor, `run` or `poll`) fails its actor; the supervisor logs it and restarts it through the
actor layer (`Directive.RESTART`) and the new actor waits out a backoff first: `backoff_first`
seconds, doubled after each failure up to `backoff_max`, back to the start once a sensor has run
for `backoff_reset` seconds. A sensor never takes the engine down, however often it fails.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pykka import ActorRef

from attune_actors.actors import AsyncioActor, Directive
from attune_actors.clock import Clock
from attune_actors.errors import ParameterError
from attune_actors.rules.timers import sleep
from attune_actors.spec.rules import SensorSpec

log = logging.getLogger("attune_actors.rules.sensors")

Emit = Callable[[str, dict[str, Any] | Any], Awaitable[str]]
Dispatch = Callable[[str, Any, SensorSpec], Awaitable[str]]


@dataclass
class SensorState:
    """What the supervisor knows about one sensor, across restarts (shared by its actors)."""

    spec: SensorSpec
    status: str = "starting"  # starting | running | backoff | stopped
    restarts: int = 0
    failures: int = 0  # consecutive; sets the next backoff
    last_error: str | None = None
    started_at: float | None = None
    delays: list[float] = field(default_factory=list)  # every backoff waited, for operators (last 20)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensor": self.spec.ref,
            "status": self.status,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "trigger_types": [t.ref for t in self.spec.trigger_types],
        }


@dataclass(frozen=True)
class Backoff:
    first: float = 1.0
    max: float = 60.0
    reset: float = 60.0

    def delay(self, failures: int) -> float:
        return 0.0 if failures <= 0 else min(self.max, self.first * 2 ** (failures - 1))


def load_sensor_class(spec: SensorSpec) -> type[Any]:
    """Import `sensors/<entry_point>` of the sensor's pack and return its class."""
    file = Path(spec.pack_path) / "sensors" / spec.entry_point
    name = f"attune_sensor_{spec.ref.replace('.', '_')}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    if module_spec is None or module_spec.loader is None:
        raise ParameterError(f"sensor {spec.ref}: cannot load {file}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    cls = getattr(module, spec.class_name, None)
    if not isinstance(cls, type):
        raise ParameterError(f"sensor {spec.ref}: {file} has no class '{spec.class_name}'")
    if not (callable(getattr(cls, "run", None)) or callable(getattr(cls, "poll", None))):
        raise ParameterError(f"sensor {spec.ref}: class '{spec.class_name}' needs run(emit) or poll(emit)")
    return cls


class SensorActor(AsyncioActor):
    """Runs one sensor instance in a task; the task's failure is this actor's failure."""

    use_actor_registry = False

    def __init__(
        self, state: SensorState, config: dict[str, Any], dispatch: Dispatch, clock: Clock, backoff: Backoff
    ) -> None:
        super().__init__()
        self.state = state
        self.config = config
        self.dispatch = dispatch
        self.clock = clock
        self.backoff = backoff
        self._task: asyncio.Task[None] | None = None

    def on_start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sensor {self.state.spec.ref}")

    def on_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.state.status = "stopped"

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, BaseException):  # the sensor's task failed: fail this actor
            raise message
        return self.state.to_dict()

    async def _run(self) -> None:
        state = self.state
        try:
            delay = self.backoff.delay(state.failures)
            if delay:
                state.status = "backoff"
                state.delays = [*state.delays[-19:], delay]
                await sleep(self.clock, delay)
            state.status, state.started_at = "running", self.clock.now()
            sensor = load_sensor_class(state.spec)(self.config)
            emit = self._emit
            if callable(getattr(sensor, "run", None)):
                await _maybe_await(sensor.run(emit))
            else:
                while True:
                    await _maybe_await(sensor.poll(emit))
                    if self.clock.now() - state.started_at >= self.backoff.reset:
                        state.failures = 0
                    await sleep(self.clock, state.spec.poll_interval)
            state.status = "stopped"  # run() returned: the sensor is done
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if state.started_at is not None and self.clock.now() - state.started_at >= self.backoff.reset:
                state.failures = 0
            state.failures += 1
            state.last_error = f"{type(exc).__name__}: {exc}"
            self.actor_ref.tell(exc)

    async def _emit(self, trigger_type: str, payload: Any = None) -> str:
        return await self.dispatch(trigger_type, payload, self.state.spec)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class SensorSupervisor(AsyncioActor):
    """Parent of the sensor actors: restarts a failed one (with the backoff its new actor waits)."""

    max_restarts = sys.maxsize  # never escalate: a failing sensor must not stop the engine
    use_actor_registry = False

    def __init__(
        self,
        sensors: list[tuple[SensorState, dict[str, Any]]],
        dispatch: Dispatch,
        clock: Clock,
        backoff: Backoff,
    ) -> None:
        super().__init__()
        self.states = {state.spec.ref: state for state, _ in sensors}
        self._configs = {state.spec.ref: config for state, config in sensors}
        self._actors: dict[ActorRef[Any], str] = {}
        self._restarting = ""  # the sensor whose actor is being restarted (between the two hooks)
        self.dispatch = dispatch
        self.clock = clock
        self.backoff = backoff

    def on_start(self) -> None:
        for ref, state in self.states.items():
            child = self.spawn(
                SensorActor, state, self._configs[ref], self.dispatch, self.clock, self.backoff
            )
            self._actors[child] = ref

    def on_child_failure(self, child: ActorRef[Any], error: BaseException) -> Directive:
        ref = self._actors.pop(child, "?")
        state = self.states.get(ref)
        if state is not None:
            state.restarts += 1
            log.error(
                "sensor %s failed (%s); restarting in %g s",
                ref,
                state.last_error,
                self.backoff.delay(state.failures),
            )
            self._restarting = ref
        return Directive.RESTART

    def on_child_restarted(self, old: ActorRef[Any], new: ActorRef[Any]) -> None:
        self._actors[new] = self._restarting

    def on_receive(self, message: Any) -> Any:
        return [s.to_dict() for s in self.states.values()]


__all__ = ["Backoff", "SensorState", "SensorSupervisor", "load_sensor_class"]
