"""The execution graph: node kinds, statuses and run counts, taken edges, kept across a restart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from attune_actors import Engine
from attune_actors.engine.graphdoc import render_graph
from attune_actors.errors import NotFoundError

WorkflowWriter = Callable[..., str]
EngineFactory = Callable[..., object]


async def test_parallel_group_loop_and_kinds(workflow: WorkflowWriter, engine_factory: EngineFactory) -> None:
    workflow(
        "child",
        """
        tasks:
          - {name: inner, action: core.noop}
        """,
    )
    ref = workflow(
        "shape",
        """
        vars:
          round: 0
        tasks:
          - name: checks
            type: parallel
            tasks:
              - {name: a, action: core.noop}
              - {name: b, action: core.echo, input: {x: 1}}
            on_success: again
          - name: again
            action: testpack.child
            next:
              - when: "{{ vars.round < 1 }}"
                publish:
                  - round: "{{ vars.round + 1 }}"
                do: again
              - when: "{{ vars.round >= 1 }}"
                do: [done, noop]
              - when: "{{ failed() }}"
                do: fail
          - {name: done, action: core.noop, on_failure: never}
          - {name: never, action: core.noop, join: all}
        """,
    )
    engine: Engine = await engine_factory()  # type: ignore[assignment, misc]
    execution = await engine.execute(ref)
    final = await engine.wait(execution.id, timeout=10)
    assert final.status == "succeeded"
    graph = await engine.graph(execution.id)
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert [(n["id"], n["group"]) for n in graph["nodes"]] == [
        ("checks", None),
        ("a", "checks"),
        ("b", "checks"),
        ("again", None),
        ("done", None),
        ("never", None),
    ]
    assert (nodes["checks"]["kind"], nodes["checks"]["action"]) == ("parallel", None)
    again_node = nodes["again"]
    assert (again_node["kind"], again_node["runs"], again_node["status"]) == ("workflow", 2, "succeeded")
    assert (nodes["never"]["status"], nodes["never"]["runs"], nodes["never"]["join"]) == (None, 0, "all")
    # Engine commands (noop, fail) have no edges; a loop edge is taken once, and so is its exit.
    assert [(e["from"], e["to"], e["taken"]) for e in graph["edges"]] == [
        ("checks", "again", True),
        ("again", "again", True),
        ("again", "done", True),
        ("done", "never", False),
    ]
    # The same graph after a restart, from the store: what fired is kept with each run.
    await engine.close()
    again: Engine = await engine_factory()  # type: ignore[assignment, misc]
    assert await again.graph(execution.id) == graph
    with pytest.raises(NotFoundError):
        await again.graph("nope")


def test_renderers_escape_and_mark_taken_edges() -> None:
    doc = {
        "execution_id": "x",
        "ref": 'p."quoted"',
        "status": "failed",
        "nodes": [
            {"id": "a", "kind": "inquiry", "action": "core.inquiry", "status": "failed", "runs": 3,
             "join": None, "group": None},
            {"id": "b", "kind": "action", "action": "p.b", "status": None, "runs": 0, "join": None,
             "group": None},
        ],
        "edges": [
            {"from": "a", "to": "b", "when": '{{ result().msg == "<b>#1</b>" }}', "taken": False},
            {"from": "a", "to": "b", "when": None, "taken": True},
        ],
    }
    mermaid = render_graph(doc, "mermaid")
    assert 'n0{{"a<br/><small>core.inquiry</small><br/><i>failed, 3 runs</i>"}}' in mermaid
    assert 'n0 -.->|"result().msg == #34;#60;b#62;#35;1#60;/b#62;#34;"| n1' in mermaid
    assert "n0 ==> n1" in mermaid
    assert "linkStyle 1 stroke" in mermaid
    dot = render_graph(doc, "dot")
    assert dot.startswith('digraph "p.\\"quoted\\"" {')
    assert '"a" -> "b" [label="result().msg == \\"<b>#1</b>\\"", style=dashed, color=gray50];' in dot
    assert '"a" -> "b" [style=bold, penwidth=2];' in dot
    assert render_graph(doc).startswith("{")
    with pytest.raises(ValueError, match="unknown graph format 'png'"):
        render_graph(doc, "png")


def test_graph_of_nothing_run_yet_lists_every_task(tmp_path: Path) -> None:
    from attune_actors.engine.graphdoc import RunMark, graph_document
    from attune_actors.spec.packs import load_workflow_text

    problems: list[object] = []
    spec = load_workflow_text(
        "tasks:\n  - {name: a, action: core.noop, on_success: b}\n  - {name: b, action: core.noop}\n",
        pack="p", file="w.yaml", default_ref="p.w", problems=problems,  # type: ignore[arg-type]
    )
    assert spec is not None
    assert not problems
    doc = graph_document("x", "running", spec, [RunMark("a", "running")], lambda ref: None)
    assert [(n["id"], n["status"], n["runs"]) for n in doc["nodes"]] == [("a", "running", 1), ("b", None, 0)]
    assert doc["edges"] == [{"from": "a", "to": "b", "when": "{{ succeeded() }}", "taken": False}]
