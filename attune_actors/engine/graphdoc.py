"""The graph document of one execution: its workflow's tasks and transitions, with what its runs did.

    {"execution_id", "ref", "status",
     "nodes": [{"id", "kind", "action", "status", "runs", "join", "group"}],
     "edges": [{"from", "to", "when", "taken"}]}

Nodes are the workflow's tasks in definition order (a parallel group's sub-tasks follow it, with
`group` naming it); `kind` is action, parallel, workflow or inquiry; `status` is the latest run's
(null if the task never ran) and `runs` counts its runs. Edges are the transitions to other tasks,
one per target of each `next` entry (engine commands such as `noop` or `fail` are not tasks and have
no edge); `when` is the condition as written (null: on completion, whatever the status) and `taken`
says whether any run of the source fired it. `render_graph` gives the same document as JSON,
Mermaid or Graphviz DOT text. The HTTP API, the CLI and the web console all show this one shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from attune_actors.spec.model import ENGINE_COMMANDS, ActionSpec, TaskSpec, WorkflowSpec

GRAPH_FORMATS = ("json", "mermaid", "dot")


@dataclass(frozen=True, slots=True)
class RunMark:
    """What the graph needs of one task run: its task, its status and the `next` entries it fired."""

    task: str
    status: str
    fired: tuple[int, ...] = ()


def action_kind(action: ActionSpec | None) -> str:
    """The node kind of a task running `action` (an action the catalog no longer has counts as one)."""
    if action is None:
        return "action"
    if action.is_workflow:
        return "workflow"
    return "inquiry" if action.runner_type == "inquiry" else "action"


def graph_document(
    execution_id: str,
    status: str,
    spec: WorkflowSpec,
    runs: Iterable[RunMark],
    actions: Callable[[str], ActionSpec | None],
) -> dict[str, Any]:
    """Build the graph document from the definition the execution runs and its runs, in start order.

    `actions` looks up an action by ref (None when unknown), to tell workflows and inquiries apart.
    """
    latest: dict[str, str] = {}
    counts: dict[str, int] = {}
    fired: dict[str, set[int]] = {}
    for run in runs:
        latest[run.task] = run.status
        counts[run.task] = counts.get(run.task, 0) + 1
        fired.setdefault(run.task, set()).update(run.fired)

    def node(task: TaskSpec, group: str | None) -> dict[str, Any]:
        kind = "parallel" if task.is_parallel else action_kind(actions(task.action or ""))
        return {
            "id": task.name,
            "kind": kind,
            "action": task.action,
            "status": latest.get(task.name),
            "runs": counts.get(task.name, 0),
            "join": task.join,
            "group": group,
        }

    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for task in spec.tasks:
        nodes.append(node(task, None))
        nodes.extend(node(sub, task.name) for sub in task.tasks)
        for i, tr in enumerate(task.next):
            for target in tr.do:
                if target in ENGINE_COMMANDS:
                    continue
                edges.append(
                    {
                        "from": task.name,
                        "to": target,
                        # A decision branch shows its own condition, not the guards sugar adds.
                        "when": tr.written_when or tr.when,
                        "taken": i in fired.get(task.name, ()),
                    }
                )
    return {"execution_id": execution_id, "ref": spec.ref, "status": status, "nodes": nodes, "edges": edges}


def render_graph(doc: dict[str, Any], fmt: str = "json") -> str:
    """The graph document as text: `json`, `mermaid` (a flowchart) or `dot` (Graphviz)."""
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False)
    if fmt == "mermaid":
        return _mermaid(doc)
    if fmt == "dot":
        return _dot(doc)
    raise ValueError(f"unknown graph format {fmt!r}: use {', '.join(GRAPH_FORMATS)}")


# Fill colours by status; the same in both renderers so the pictures agree.
_COLOURS = {
    "succeeded": "#c8e6c9",
    "failed": "#ffcdd2",
    "timeout": "#ffcdd2",
    "abandoned": "#ffcdd2",
    "running": "#bbdefb",
    "pending": "#fff9c4",
    "paused": "#fff9c4",
    "pausing": "#fff9c4",
    "delayed": "#e1f5fe",
    "scheduled": "#e1f5fe",
    "requested": "#e1f5fe",
    "canceling": "#eeeeee",
    "canceled": "#eeeeee",
}
_NOT_RUN = "#ffffff"
_MERMAID_SHAPES = {"inquiry": ("{{", "}}"), "workflow": ("[[", "]]")}


def _label_when(when: str | None) -> str:
    """A short edge label: the expression without its `{{ }}`."""
    if when is None:
        return ""
    match = re.fullmatch(r"\s*\{\{(.*)\}\}\s*", when, re.DOTALL)
    return " ".join((match.group(1) if match else when).split())


def _node_text(node: dict[str, Any]) -> tuple[str, str]:
    detail = node["kind"] if node["action"] is None else f"{node['action']}"
    status = node["status"] or "not run"
    if node["runs"] > 1:
        status = f"{status}, {node['runs']} runs"
    return detail, status


def _mermaid(doc: dict[str, Any]) -> str:
    ids = {n["id"]: f"n{i}" for i, n in enumerate(doc["nodes"])}

    def text(s: str) -> str:
        # Inside a quoted label only these could end it or read as markup: Mermaid's entity codes.
        return "".join(f"#{ord(c)};" if c in '"#<>' else c for c in s)

    lines = ["flowchart TD"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for n in doc["nodes"]:
        if n["group"] is not None:
            groups.setdefault(n["group"], []).append(n)
    for n in doc["nodes"]:
        if n["group"] is not None:
            continue
        detail, status = _node_text(n)
        label = f'"{text(n["id"])}<br/><small>{text(detail)}</small><br/><i>{text(status)}</i>"'
        if n["kind"] == "parallel":
            lines.append(f"  subgraph {ids[n['id']]}[{label}]")
            for sub in groups.get(n["id"], ()):
                sdetail, sstatus = _node_text(sub)
                lines.append(
                    f'    {ids[sub["id"]]}["{text(sub["id"])}<br/><small>{text(sdetail)}</small>'
                    f'<br/><i>{text(sstatus)}</i>"]'
                )
            lines.append("  end")
        else:
            shape = _MERMAID_SHAPES.get(n["kind"], ("[", "]"))
            lines.append(f"  {ids[n['id']]}{shape[0]}{label}{shape[1]}")
    taken: list[str] = []  # Mermaid numbers links in the order they are written
    links = 0
    for e in doc["edges"]:
        if e["from"] not in ids or e["to"] not in ids:
            continue
        label = _label_when(e["when"])
        arrow = "==>" if e["taken"] else "-.->"
        middle = f'|"{text(label)}"|' if label else ""
        lines.append(f"  {ids[e['from']]} {arrow}{middle} {ids[e['to']]}")
        if e["taken"]:
            taken.append(str(links))
        links += 1
    for n in doc["nodes"]:
        colour = _COLOURS.get(n["status"] or "", _NOT_RUN)
        lines.append(f"  style {ids[n['id']]} fill:{colour}")
    if taken:
        lines.append(f"  linkStyle {','.join(taken)} stroke:#2e7d32,stroke-width:3px")
    return "\n".join(lines) + "\n"


def _dot(doc: dict[str, Any]) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [
        f"digraph {q(doc['ref'])} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]

    def node_line(n: dict[str, Any], indent: str) -> str:
        detail, status = _node_text(n)
        shape = {"inquiry": ", shape=hexagon", "workflow": ", peripheries=2"}.get(n["kind"], "")
        colour = _COLOURS.get(n["status"] or "", _NOT_RUN)
        label = q(f"{n['id']}\n{detail}\n{status}")
        return f"{indent}{q(n['id'])} [label={label}, fillcolor={q(colour)}{shape}];"

    for n in doc["nodes"]:
        if n["group"] is not None:
            continue
        if n["kind"] == "parallel":
            # A cluster cannot be an edge end, so the group is also a node inside its own cluster.
            lines.append(f"  subgraph {q('cluster_' + n['id'])} {{")
            lines.append(f"    label={q(n['id'] + ' (parallel)')}; style=dashed;")
            lines.append(node_line(n, "    "))
            lines.extend(node_line(s, "    ") for s in doc["nodes"] if s["group"] == n["id"])
            lines.append("  }")
        else:
            lines.append(node_line(n, "  "))
    for e in doc["edges"]:
        style = "style=bold, penwidth=2" if e["taken"] else "style=dashed, color=gray50"
        label = _label_when(e["when"])
        attrs = f"label={q(label)}, {style}" if label else style
        lines.append(f"  {q(e['from'])} -> {q(e['to'])} [{attrs}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = ["GRAPH_FORMATS", "RunMark", "action_kind", "graph_document", "render_graph"]
