"""WorkflowTest: a real engine over your packs, with mocked actions, virtual time and answers.

The engine, its supervisors, task actors, conductor and store are the ones that run in
production; only the transport is scripted (`ScriptedTransport`) and the clock is virtual, so a
workflow that retries for an hour finishes in milliseconds with the same route.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from attune_actors.clock import VirtualClock
from attune_actors.config import Settings
from attune_actors.engine.engine import Engine
from attune_actors.engine.events import Subscription
from attune_actors.engine.execution import Execution, TaskRunInfo
from attune_actors.errors import AttuneError, ParameterError
from attune_actors.runners import ENGINE_RUNNER_TYPES
from attune_actors.store.base import MemoryStore
from attune_actors.testing._expect import Expect, differences
from attune_actors.testing._script import Call, Mock, Outcome, Predicate
from attune_actors.testing._transport import ScriptedTransport

__all__ = ["Answer", "Run", "WorkflowTest"]

# A response to an inquiry, or a function of the inquiry (its dict: task, prompt, schema, ...).
Answer = Any | Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Run:
    """A finished execution as a test sees it: the document plus vars, events and calls."""

    execution: Execution
    vars: dict[str, Any]
    events: list[dict[str, Any]]
    calls: list[Call]
    elapsed: float  # engine seconds from start to end

    @property
    def status(self) -> str:
        return self.execution.status.value

    @property
    def output(self) -> Any:
        return self.execution.output

    @property
    def route(self) -> list[str]:
        """The names of the execution's task runs, in the order they started."""
        return [t.name for t in self.execution.tasks]

    @property
    def attempts(self) -> dict[str, int]:
        """Task name -> attempts of its latest run."""
        return {t.name: t.attempts for t in self.execution.tasks}

    def task(self, name: str) -> TaskRunInfo:
        """The latest run of task `name` (KeyError if it never ran)."""
        return self.execution.task(name)

    def differences(self, expect: Expect | None = None, **fields: Any) -> list[str]:
        """How this run differs from `expect` (or from `Expect(**fields)`), one line each."""
        return differences(self, expect if expect is not None else Expect(**fields))

    def expect(self, expect: Expect | None = None, **fields: Any) -> None:
        """Raise AssertionError listing every difference from the expectation (see `Expect`)."""
        found = self.differences(expect, **fields)
        if found:
            head = f"{self.execution.ref} did not go as expected ({len(found)} difference(s)):"
            raise AssertionError("\n".join([head, *(f"  {line}" for line in found)]))


class WorkflowTest:
    """`async with WorkflowTest(packs=["packs"]) as t:` then `t.mock(...)` and `await t.run(...)`.

    `clock` defaults to a `VirtualClock` that skips ahead whenever the engine waits only for
    time (delays, retry backoff, timeouts, inquiry expiry). Actions without a mock run for
    real. Each `WorkflowTest` has its own engine, in-memory store and temporary data dir.
    """

    def __init__(
        self,
        packs: Sequence[str | Path],
        *,
        clock: VirtualClock | None = None,
        settings: Settings | None = None,
        data_dir: str | Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.clock = clock or VirtualClock()
        self.timeout = timeout  # real seconds a run may take before it is reported as stuck
        self._packs = list(packs)
        self._settings = settings
        self._data_dir = data_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._mocks: dict[str, Mock] = {}
        self._store = MemoryStore()
        self._engine: Engine | None = None
        self._transport: ScriptedTransport | None = None
        self._events: list[dict[str, Any]] = []
        self._answers: dict[str, dict[str, Answer]] = {}  # root execution id -> task -> answer
        self._answered: set[str] = set()
        self._problems: list[BaseException] = []
        self._roots: dict[str, str] = {}  # execution id -> its root execution's id
        self._subscription: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._news = asyncio.Event()  # an inquiry event was read
        self._caught_up = asyncio.Event()  # the reader has read every event published so far

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> WorkflowTest:
        data_dir = self._data_dir
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="attune-test-")
            data_dir = self._tmp.name
        engine: Engine
        # Real actions run on the engine's own in-process transport, made when the engine starts.
        self._transport = ScriptedTransport(
            lambda: engine.in_process_transport(), self._mocks, self.clock
        )
        engine = self._engine = Engine(
            self._packs,
            data_dir,
            settings=self._settings,
            store=self._store,
            transport=self._transport,
            clock=self.clock,
            rules=False,  # a rehearsal runs its workflow only: no trigger events, timers or sensors
        )
        try:
            await engine.start()
        except BaseException:
            await self._cleanup()
            raise
        self._subscription = engine.events()
        self._reader = asyncio.get_running_loop().create_task(self._read(self._subscription))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._engine is not None:
            await self._engine.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def engine(self) -> Engine:
        """The engine under test (started inside `async with`)."""
        if self._engine is None:
            raise RuntimeError("use the WorkflowTest inside `async with`")
        return self._engine

    # ------------------------------------------------------------------ scripting

    def mock(
        self,
        action: str,
        *outcomes: Outcome,
        item: int | None = None,
        task: str | None = None,
        when: Predicate | None = None,
    ) -> Mock:
        """Script the calls of `action` (a ref): the n-th matching call gets the n-th outcome.

        `item` limits the rule to one with_items item (0-based), `task` to the calls of one
        task, `when` to calls whose input it accepts. The last outcome repeats.
        """
        spec = self.engine.catalog.action(action)  # NotFoundError (with a suggestion) if unknown
        if spec.runner_type in ENGINE_RUNNER_TYPES:
            raise ParameterError(
                f"{action} is carried out by the engine ({spec.runner_type}), not by a worker, "
                "so it cannot be mocked: mock the actions it runs, or answer its inquiry"
            )
        mock = self._mocks.setdefault(action, Mock(action))
        return mock.add(tuple(outcomes), item=item, task=task, when=when)

    def reset_mocks(self) -> None:
        """Forget every mock: from now on, every action runs for real."""
        self._mocks.clear()

    def calls(self, action: str | None = None) -> list[Call]:
        """The attempts made so far (of `action` only, if given), mocked or real."""
        made = self._transport.calls if self._transport is not None else []
        return [c for c in made if action is None or c.action == action]

    # ------------------------------------------------------------------ running

    async def run(
        self,
        workflow: str,
        parameters: dict[str, Any] | None = None,
        *,
        answers: Mapping[str, Answer] | None = None,
    ) -> Run:
        """Execute `workflow` to its end; `answers` respond to inquiries by task name."""
        execution_id = await self.start(workflow, parameters, answers=answers)
        return await self.finish(execution_id)

    async def start(
        self,
        workflow: str,
        parameters: dict[str, Any] | None = None,
        *,
        answers: Mapping[str, Answer] | None = None,
    ) -> str:
        """Start an execution and return its id (the engine's errors for bad input propagate)."""
        execution = await self.engine.execute(workflow, parameters or {})
        self._answers[execution.id] = dict(answers or {})
        await self._answer_pending(execution.id)
        return execution.id

    async def answer(
        self, task: str, response: Any, *, execution_id: str | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Respond to the inquiry of `task` once it is pending (waits for it, up to `timeout`)."""
        async with asyncio.timeout(timeout):
            while True:
                self._news.clear()
                for inquiry in await self.engine.inquiries(execution_id=execution_id):
                    if inquiry["task"] == task and inquiry["id"] not in self._answered:
                        self._answered.add(inquiry["id"])
                        return await self.engine.respond(inquiry["id"], response)
                await self._news.wait()

    async def finish(self, execution_id: str) -> Run:
        """Wait for the execution's end and collect what a test checks."""
        try:
            final = await self.engine.wait(execution_id, timeout=self.timeout)
        except TimeoutError:
            now = await self.engine.get(execution_id)
            running = [t.name for t in now.tasks if not t.status.terminal]
            raise AssertionError(
                f"{now.ref} did not end within {self.timeout:g} s of real time "
                f"(status {now.status.value}; still running: {', '.join(running) or 'nothing'})"
            ) from None
        if self._problems:
            raise self._problems.pop(0)
        reading = self._reader is not None and not self._reader.done()
        if reading and self._subscription is not None and self._subscription.pending():
            self._caught_up.clear()
            await self._caught_up.wait()  # the reader takes the last events
        snapshot = self._store.load(execution_id)
        variables = dict(snapshot.header.get("vars") or {}) if snapshot is not None else {}
        return Run(
            execution=final,
            vars=variables,
            events=[e for e in self._events if e.get("root_id", e.get("execution_id")) == execution_id],
            calls=[c for c in self.calls() if self._root_of(c) == execution_id],
            elapsed=_seconds(final.started_at, final.ended_at),
        )

    def _root_of(self, call: Call) -> str:
        return self._roots.get(call.execution_id, call.execution_id)

    # ------------------------------------------------------------------ events and inquiries

    async def _read(self, subscription: Subscription) -> None:
        try:
            async for event in subscription:
                self._events.append(event)
                if not subscription.pending():
                    self._caught_up.set()
                if "root_id" in event:
                    self._roots[event["execution_id"]] = event["root_id"]
                if event.get("type") == "inquiry":
                    self._news.set()
                    if event.get("status") == "pending":
                        await self._answer_pending(event.get("root_id") or event["execution_id"])
        finally:
            subscription.close()

    async def _answer_pending(self, root_id: str) -> None:
        answers = self._answers.get(root_id)
        if not answers:
            return
        for inquiry in await self.engine.inquiries(execution_id=root_id):
            answer = answers.get(inquiry["task"], _NO_ANSWER)
            if answer is _NO_ANSWER or inquiry["id"] in self._answered:
                continue
            self._answered.add(inquiry["id"])
            # A bad answer is the test's mistake, reported by finish(); the reader goes on.
            task = inquiry["task"]
            try:
                response = answer(inquiry) if callable(answer) else answer
            except Exception as exc:
                self._problems.append(
                    AssertionError(f"the answer function for task '{task}' raised {exc!r}")
                )
                continue
            try:
                await self.engine.respond(inquiry["id"], response)
            except AttuneError as exc:
                self._problems.append(
                    AssertionError(f"answer to the inquiry of task '{task}' refused: {exc}")
                )


_NO_ANSWER = object()


def _seconds(start: str | None, end: str | None) -> float:
    if start is None or end is None:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
