"""How task actors relay outcomes: at once from the transport's callback, or queued when a
transport answers inside `submit`; duplicates and outcomes of released runs change nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from attune_actors import Engine
from attune_actors.store.base import MemoryStore
from attune_actors.transport.base import ActionRun, OutcomeCallback, RunOutcome, Transport

FLOW = """
parameters:
  names: {type: array}
tasks:
  - name: start
    action: core.echo
    input: {who: start}
    on_complete: [each, flaky]
  - name: each
    action: core.echo
    with_items: "{{ parameters.names }}"
    input: {who: "{{ item }}"}
    on_success: join
  - name: flaky
    action: core.noop
    retry: {count: 2}
    on_complete: join
  - name: join
    action: core.noop
    join: all
"""


class _Scripted(Transport):
    """Every attempt succeeds with its input as result, except the first attempt of `flaky`.

    `inline`: the outcome is given back inside `submit` (a transport breaking the "never
    re-entrantly" rule of the in-process one). `twice`: each outcome comes again a turn later.
    """

    def __init__(self, *, inline: bool, twice: bool) -> None:
        self.inline, self.twice = inline, twice
        self.submitted: list[tuple[str, int | None, int]] = []

    async def close(self) -> None:
        pass

    def submit(self, run: ActionRun, on_outcome: OutcomeCallback) -> None:
        self.submitted.append((run.task, run.item, run.attempt))
        failed = run.task == "flaky" and run.attempt == 1
        outcome = RunOutcome(
            run.run_id, run.item, run.attempt, "failed" if failed else "succeeded",
            None if failed else dict(run.parameters), "flaked" if failed else None,
        )
        loop = asyncio.get_running_loop()
        if self.inline:
            on_outcome(outcome)
        else:
            loop.call_soon(on_outcome, outcome)
        if self.twice:
            loop.call_soon(loop.call_soon, on_outcome, outcome)

    def cancel(self, run: ActionRun) -> None:
        pass


async def _run(workflow: Any, packs_dir: Path, tmp_path: Path, transport: _Scripted) -> tuple[Any, list[Any]]:
    ref = workflow("relay", FLOW)
    engine = Engine(packs=[packs_dir], data_dir=tmp_path / "data", store=MemoryStore(), transport=transport)
    async with engine:
        final = await engine.wait((await engine.execute(ref, {"names": ["a", "b", "c"]})).id, timeout=10)
        again = await engine.execute(ref, {"names": ["d"]})  # the engine goes on serving
        assert (await engine.wait(again.id, timeout=10)).status == "succeeded"
    return final, sorted(transport.submitted, key=str)


async def test_outcomes_given_inside_submit_or_twice_end_the_same_way(workflow, packs_dir, tmp_path) -> None:
    plain = _Scripted(inline=False, twice=False)
    reference, submitted = await _run(workflow, packs_dir, tmp_path / "ref", plain)
    assert reference.status == "succeeded"
    for inline, twice in ((True, False), (False, True), (True, True)):
        transport = _Scripted(inline=inline, twice=twice)
        final, sent = await _run(workflow, packs_dir, tmp_path / f"{inline}-{twice}", transport)
        assert final.status == "succeeded"
        assert sent == submitted  # no attempt dispatched twice, none lost
        for task in ("start", "each", "flaky", "join"):
            mine, theirs = final.task(task), reference.task(task)
            assert (mine.status, mine.attempts, mine.result) == (
                theirs.status, theirs.attempts, theirs.result
            )
        assert final.task("flaky").attempts == 2
        assert [i["result"] for i in final.task("each").items] == [{"who": n} for n in "abc"]
