// Draws a graph document (SPEC 9: nodes with status, edges with `when` and `taken`) as SVG.
//
// A layered layout small enough to read in one sitting: back edges (loops) are found by a DFS and set
// aside, every other node goes one layer below its deepest predecessor, and two barycenter sweeps order
// each layer to cut crossings. Workflows are tens of tasks, so nothing here needs to be clever; a
// bundled graph library would be 100x the size of this file for the same picture.

const NODE_W = 150, NODE_H = 34, GAP_X = 40, GAP_Y = 64, PAD = 24;
const SVG = "http://www.w3.org/2000/svg";

export const STATUS_COLORS = {
  succeeded: "#16a34a", failed: "#dc2626", timeout: "#dc2626", abandoned: "#dc2626",
  running: "#2563eb", scheduled: "#2563eb", requested: "#2563eb", delayed: "#2563eb",
  pending: "#d97706", paused: "#d97706", pausing: "#d97706",
  canceled: "#6b7280", canceling: "#6b7280", none: "#e5e7eb",
};

export function layout(doc) {
  const ids = doc.nodes.map((n) => n.id);
  const out = new Map(ids.map((id) => [id, []]));
  const inbound = new Map(ids.map((id) => [id, 0]));
  for (const e of doc.edges) {
    if (!out.has(e.from) || !out.has(e.to)) continue;
    out.get(e.from).push(e.to);
    inbound.set(e.to, inbound.get(e.to) + 1);
  }
  // Back edges: an edge into a node still on the DFS stack closes a loop.
  const back = new Set(), state = new Map();
  const visit = (id) => {
    state.set(id, 1);
    for (const to of out.get(id)) {
      if (state.get(to) === 1) back.add(id + "\u0000" + to);
      else if (!state.has(to)) visit(to);
    }
    state.set(id, 2);
  };
  const roots = ids.filter((id) => inbound.get(id) === 0);
  for (const id of roots.length ? roots : ids.slice(0, 1)) if (!state.has(id)) visit(id);
  for (const id of ids) if (!state.has(id)) visit(id);

  // Longest path layering over forward edges, in topological order (Kahn).
  const fwd = new Map(ids.map((id) => [id, []]));
  const indeg = new Map(ids.map((id) => [id, 0]));
  for (const e of doc.edges) {
    if (!fwd.has(e.from) || !fwd.has(e.to) || back.has(e.from + "\u0000" + e.to) || e.from === e.to) continue;
    fwd.get(e.from).push(e.to);
    indeg.set(e.to, indeg.get(e.to) + 1);
  }
  const layer = new Map(ids.map((id) => [id, 0]));
  const queue = ids.filter((id) => indeg.get(id) === 0);
  while (queue.length) {
    const id = queue.shift();
    for (const to of fwd.get(id)) {
      layer.set(to, Math.max(layer.get(to), layer.get(id) + 1));
      indeg.set(to, indeg.get(to) - 1);
      if (indeg.get(to) === 0) queue.push(to);
    }
  }
  const layers = [];
  for (const id of ids) (layers[layer.get(id)] ||= []).push(id);
  const preds = new Map(ids.map((id) => [id, []]));
  for (const [from, tos] of fwd) for (const to of tos) preds.get(to).push(from);
  const pos = new Map();
  const index = () => layers.forEach((row) => row.forEach((id, i) => pos.set(id, i)));
  index();
  for (let sweep = 0; sweep < 2; sweep++) {
    for (let l = 1; l < layers.length; l++) {
      const bary = (id) => {
        const p = preds.get(id);
        return p.length ? p.reduce((s, q) => s + pos.get(q), 0) / p.length : pos.get(id);
      };
      layers[l].sort((a, b) => bary(a) - bary(b));
      index();
    }
  }
  const widest = Math.max(1, ...layers.map((row) => row.length));
  const width = widest * (NODE_W + GAP_X) - GAP_X + 2 * PAD + 60;
  const height = layers.length * (NODE_H + GAP_Y) - GAP_Y + 2 * PAD;
  const xy = new Map();
  layers.forEach((row, l) => {
    const rowWidth = row.length * (NODE_W + GAP_X) - GAP_X;
    const x0 = (width - 60 - rowWidth) / 2;
    row.forEach((id, i) => xy.set(id, { x: x0 + i * (NODE_W + GAP_X), y: PAD + l * (NODE_H + GAP_Y) }));
  });
  return { xy, back, width, height };
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

export function render(container, doc) {
  const { xy, back, width, height } = layout(doc);
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `graph of ${doc.ref}` });
  const defs = el("defs", {}, svg);
  for (const [name, color] of [["arrow", "#9ca3af"], ["arrow-taken", "#111827"]]) {
    // Sized in user units, so a thick (taken) edge does not get a bigger arrowhead.
    const m = el("marker", { id: name, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9,
      markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" }, defs);
    el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: color }, m);
  }
  const edges = el("g", {}, svg);
  doc.edges.forEach((e, i) => {
    const a = xy.get(e.from), b = xy.get(e.to);
    if (!a || !b) return;
    const g = el("g", { class: "edge" + (e.taken ? " taken" : ""), "data-from": e.from, "data-to": e.to,
      "data-taken": String(!!e.taken), "data-index": i }, edges);
    let d;
    if (back.has(e.from + "\u0000" + e.to) || e.from === e.to) {
      // A loop goes out of the right side of its source and into the right side of its target.
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x + NODE_W, y2 = b.y + NODE_H / 2;
      const bulge = Math.max(x1, x2) + 50;
      d = `M ${x1} ${y1} C ${bulge} ${y1}, ${bulge} ${y2}, ${x2} ${y2}`;
    } else {
      const x1 = a.x + NODE_W / 2, y1 = a.y + NODE_H, x2 = b.x + NODE_W / 2, y2 = b.y;
      const mid = (y1 + y2) / 2;
      d = `M ${x1} ${y1} C ${x1} ${mid}, ${x2} ${mid}, ${x2} ${y2}`;
    }
    el("path", { d, "marker-end": `url(#${e.taken ? "arrow-taken" : "arrow"})` }, g);
    const title = el("title", {}, g);
    title.textContent = `${e.from} → ${e.to}` + (e.when ? `\nwhen ${e.when}` : "") + (e.taken ? "\n(taken)" : "");
  });
  const nodes = el("g", {}, svg);
  for (const n of doc.nodes) {
    const p = xy.get(n.id);
    const status = n.status || "none";
    const g = el("g", { class: "node", "data-task": n.id, "data-status": status,
      transform: `translate(${p.x},${p.y})` }, nodes);
    el("rect", { width: NODE_W, height: NODE_H, fill: STATUS_COLORS[status] || "#6b7280" }, g);
    const label = el("text", { x: NODE_W / 2, y: NODE_H / 2 + 4, "text-anchor": "middle" }, g);
    const runs = n.runs > 1 ? ` ×${n.runs}` : "";
    const name = n.id.length > 18 ? n.id.slice(0, 17) + "…" : n.id;
    label.textContent = name + runs;
    const title = el("title", {}, g);
    title.textContent = `${n.id} (${n.kind}${n.action ? ": " + n.action : ""})\nstatus: ${n.status ?? "not run"}` +
      `\nruns: ${n.runs}` + (n.join != null ? `\njoin: ${n.join}` : "");
  }
  container.replaceChildren(svg);
}
