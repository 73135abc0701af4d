"""The graph document of an execution (SPEC section 9): its workflow's tasks and transitions, with
what ran, as JSON, Mermaid or Graphviz dot.

Built from the definition the execution started with and its execution document; a pure function
of both, so the CLI, the HTTP API and the console draw the same graph.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attune_actors.spec.model import ENGINE_COMMANDS, TaskSpec, WorkflowSpec

__all__ = ["FORMATS", "graph_document", "render_graph"]

FORMATS = ("json", "mermaid", "dot")


def graph_document(
    spec: WorkflowSpec, execution: dict[str, Any], is_workflow: Callable[[str], bool]
) -> dict[str, Any]:
    """`{"execution_id", "ref", "status", "nodes": [...], "edges": [...]}` for one execution.

    A node's `status` is its latest run's (null if it never ran), `runs` how many runs it had. An
    edge is `taken` when its target ran after its source ended (a transition into it fired).
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    for run in execution.get("tasks") or ():
        runs.setdefault(run["name"], []).append(run)
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []

    def add(task: TaskSpec) -> None:
        own = runs.get(task.name, [])
        if task.is_parallel:
            kind = "parallel"
        elif task.action == "core.inquiry":
            kind = "inquiry"
        elif task.action is not None and is_workflow(task.action):
            kind = "workflow"
        else:
            kind = "action"
        nodes.append({
            "id": task.name,
            "kind": kind,
            "action": task.action,
            "status": own[-1]["status"] if own else None,
            "runs": len(own),
            "join": task.join,
        })

    for task in spec.tasks:
        add(task)
        for sub in task.tasks:
            add(sub)
            edges.append({"from": task.name, "to": sub.name, "when": None,
                          "taken": bool(runs.get(sub.name))})
    for task in (*spec.tasks, *(s for t in spec.tasks for s in t.tasks)):
        for tr in task.next:
            for target in tr.do:
                if target in ENGINE_COMMANDS:
                    continue
                edges.append({"from": task.name, "to": target, "when": tr.when,
                              "taken": _taken(runs.get(task.name, []), runs.get(target, []))})
    return {
        "execution_id": execution["id"],
        "ref": execution["ref"],
        "status": execution["status"],
        "nodes": nodes,
        "edges": edges,
    }


def _taken(sources: list[dict[str, Any]], targets: list[dict[str, Any]]) -> bool:
    ended = [r["ended_at"] for r in sources if r.get("ended_at")]
    started = [r["started_at"] for r in targets if r.get("started_at")]
    # ISO timestamps of one clock compare as strings.
    return bool(ended and started and max(started) >= min(ended))


def render_graph(doc: dict[str, Any], fmt: str) -> str:
    """The graph document as `json`, `mermaid` (flowchart) or `dot` text."""
    if fmt == "json":
        return json.dumps(doc, indent=2)
    ids = {node["id"]: f"n{i}" for i, node in enumerate(doc["nodes"])}
    if fmt == "mermaid":
        lines = ["flowchart TD"]
        for node in doc["nodes"]:
            label = _label(node).replace('"', "'")
            lines.append(f'  {ids[node["id"]]}["{label}"]')
            if node["status"]:
                lines.append(f"  class {ids[node['id']]} {node['status']}")
        for edge in doc["edges"]:
            arrow = "==>" if edge["taken"] else "-.->"
            when = f'|"{_short(edge["when"]).replace(chr(34), chr(39))}"|' if edge["when"] else ""
            lines.append(f"  {ids[edge['from']]} {arrow}{when} {ids[edge['to']]}")
        for status, colour in _COLOURS.items():
            lines.append(f"  classDef {status} fill:{colour}")
        return "\n".join(lines)
    if fmt == "dot":
        lines = [f"digraph {json.dumps(doc['ref'])} {{", "  node [shape=box, style=rounded];"]
        for node in doc["nodes"]:
            colour = _COLOURS.get(node["status"] or "", "#ffffff")
            lines.append(f"  {ids[node['id']]} [label={json.dumps(_label(node))}, "
                         f'style="rounded,filled", fillcolor="{colour}"];')
        for edge in doc["edges"]:
            attrs = [] if edge["taken"] else ["style=dashed"]
            if edge["when"]:
                attrs.append(f"label={json.dumps(_short(edge['when']))}")
            lines.append(f"  {ids[edge['from']]} -> {ids[edge['to']]}"
                         + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
        lines.append("}")
        return "\n".join(lines)
    raise ValueError(f"unknown graph format {fmt!r} (one of {', '.join(FORMATS)})")


_COLOURS = {"succeeded": "#c8f7c5", "failed": "#f7c5c5", "timeout": "#f7d9c5", "canceled": "#dddddd",
            "running": "#c5daf7", "pending": "#f7f0c5", "paused": "#e6d5f7", "abandoned": "#f7c5c5"}


def _label(node: dict[str, Any]) -> str:
    status = f" ({node['status']}{', ' + str(node['runs']) + ' runs' if node['runs'] > 1 else ''})"
    return f"{node['id']}{status if node['status'] else ''}"


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
