"""What a supervisor hands out itself: the final document `wait()` returns (the one `get()` reads
back from the store), and the outcome of an attempt its transport could not take."""

from __future__ import annotations

from attune_actors import Engine
from attune_actors.store.base import MemoryStore
from attune_actors.transport.base import ActionRun, OutcomeCallback, Transport


async def test_wait_returns_the_stored_document_with_secret_parameters_hidden(
    workflow, engine_factory
) -> None:
    ref = workflow(
        "docs",
        """
        parameters:
          token: {type: string, secret: true}
          pin: {type: string, secret: true}
          name: {type: string}
        tasks:
          - {name: first, action: core.echo, input: {who: "{{ parameters.name }}"}, on_success: second}
          - {name: second, action: core.noop}
        output_map:
          greeting: "{{ task.first.result.who }}"
    """,
    )
    for store in (None, MemoryStore()):  # the default (SQLite in the data dir), then in memory
        engine: Engine = await engine_factory(**({} if store is None else {"store": store}))
        execution = await engine.execute(ref, {"token": "s3cr3t-token", "pin": "42", "name": "ada"})
        waited = await engine.wait(execution.id, timeout=10)
        assert waited.status == "succeeded"
        # "42" is too short for the masker to hide in text; as a secret parameter it is hidden whole.
        assert waited.parameters == {"token": "***", "pin": "***", "name": "ada"}
        assert waited.output == {"greeting": "ada"}
        assert [t.name for t in waited.tasks] == ["first", "second"]
        assert waited == await engine.get(execution.id)  # read back from the store: the same
        await engine.close()


async def test_wait_returns_the_stored_document_with_items_retries_and_failures(
    workflow, engine_factory
) -> None:
    # No secret known: `wait()` builds the execution without a document in between; it must be
    # the one `get()` reads back from the store, items, attempts and errors included.
    ref = workflow(
        "docs_items",
        """
        tasks:
          - name: squares
            action: testpack.square
            with_items: "{{ [2, 3, -1, 4] }}"
            input: {n: "{{ item }}"}
            batch_size: 1
            retry: {count: 1}
            on_failure: cleanup
          - {name: cleanup, action: core.echo, input: {done: true}}
    """,
    )
    for store in (None, MemoryStore()):
        engine: Engine = await engine_factory(**({} if store is None else {"store": store}))
        execution = await engine.execute(ref)
        waited = await engine.wait(execution.id, timeout=10)
        assert waited.status == "succeeded"
        squares = waited.task("squares")
        assert squares.status == "failed"
        assert squares.result == [4, 9, None, None]
        assert squares.items is not None
        assert [(it["index"], it["status"], it["attempts"]) for it in squares.items] == [
            (0, "succeeded", 1),
            (1, "succeeded", 1),
            (2, "failed", 2),  # retried once, failed again; item 3 never started
            (3, "canceled", 0),
        ]
        assert squares.attempts == 2
        assert waited.task("cleanup").result == {"done": True}
        assert waited == await engine.get(execution.id)
        await engine.close()


class _BrokenForTask(Transport):
    """The engine's own transport, except that `submit` raises for one task (a transport bug)."""

    def __init__(self, task: str) -> None:
        self.engine: Engine | None = None  # set once the engine is built
        self._task = task
        self._inner: Transport | None = None

    async def start(self) -> None:
        assert self.engine is not None
        self._inner = self.engine.in_process_transport()
        await self._inner.start()

    async def close(self) -> None:
        assert self._inner is not None
        await self._inner.close()

    def submit(self, run: ActionRun, on_outcome: OutcomeCallback) -> None:
        if run.task == self._task:
            raise RuntimeError("lost the connection")
        assert self._inner is not None
        self._inner.submit(run, on_outcome)

    def cancel(self, run: ActionRun) -> None:
        assert self._inner is not None
        self._inner.cancel(run)


async def test_a_transport_that_raises_fails_the_attempt_and_the_engine_goes_on(
    workflow, packs_dir, tmp_path
) -> None:
    ref = workflow(
        "broken",
        """
        tasks:
          - {name: boom, action: core.noop, on_failure: recover}
          - {name: recover, action: core.noop}
    """,
    )
    transport = _BrokenForTask("boom")
    engine = transport.engine = Engine(
        packs=[packs_dir], data_dir=tmp_path / "data", store=MemoryStore(), transport=transport
    )
    async with engine:
        final = await engine.wait((await engine.execute(ref)).id, timeout=10)
        assert final.task("boom").status == "failed"
        assert final.task("boom").error == "internal error: RuntimeError('lost the connection')"
        assert final.task("recover").status == "succeeded"
        assert final.status == "succeeded"
        again = await engine.wait((await engine.execute(ref)).id, timeout=10)
        assert again.task("recover").status == "succeeded"
