// The web console: a small single-page app on the public HTTP API (SPEC 9) and nothing else.
// Views are functions of the URL hash; each gets an AbortSignal that is fired when the user leaves,
// which stops its polling and its event stream.
import { render as renderGraph, STATUS_COLORS } from "./graph.js";

const API = "/api/v1";
const TERMINAL = new Set(["succeeded", "failed", "timeout", "canceled", "abandoned"]);
const FILTERS = ["", "running", "pending", "paused", "succeeded", "failed", "canceled", "timeout"];
const view = document.getElementById("view");

// ---- plumbing -------------------------------------------------------------------------------

const token = {
  get: () => localStorage.getItem("attune.token") || "",
  set: (t) => (t ? localStorage.setItem("attune.token", t) : localStorage.removeItem("attune.token")),
};

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body, { signal, text = false, contentType } = {}) {
  const headers = {};
  if (token.get()) headers.Authorization = `Bearer ${token.get()}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType || "application/json";
    payload = contentType ? body : JSON.stringify(body);
  }
  const res = await fetch(API + path, { method, headers, body: payload, signal });
  if (res.status === 401) {
    // Several requests of one view may be refused at once: only the first one leaves a way back.
    if (!location.hash.startsWith("#/login")) {
      location.hash = "#/login?next=" + encodeURIComponent(location.hash || "#/executions");
    }
    throw new ApiError(401, "unauthorized", "a token is required");
  }
  if (!res.ok) {
    let code = String(res.status), message = res.statusText;
    try { const doc = await res.json(); code = doc.error?.code ?? code; message = doc.error?.message ?? message; }
    catch { /* not JSON: keep the status text */ }
    throw new ApiError(res.status, code, message);
  }
  if (res.status === 204) return null;
  return text ? res.text() : res.json();
}

// Server-sent events over fetch (EventSource cannot send an Authorization header).
async function streamEvents(path, onEvent, signal) {
  const headers = { Accept: "text/event-stream" };
  if (token.get()) headers.Authorization = `Bearer ${token.get()}`;
  const res = await fetch(API + path, { headers, signal });
  if (!res.ok || !res.body) throw new ApiError(res.status, String(res.status), "event stream refused");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) { try { onEvent(JSON.parse(data)); } catch { onEvent({ raw: data }); } }
    }
  }
}

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

const pill = (status) => h("span", { class: `status ${status || "none"}`, "data-status": status || "none" }, status || "not run");
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const json = (v) => (v === null || v === undefined ? "" : JSON.stringify(v, null, 2));
const shortId = (id) => id.slice(0, 8);

let toastTimer;
function toast(message, bad = false) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), 5000);
}

function every(ms, fn, signal) {
  const tick = async () => {
    if (signal.aborted) return;
    try { await fn(); } catch (e) { if (e.name !== "AbortError") console.warn(e); }
    if (!signal.aborted) setTimeout(tick, ms);
  };
  tick();
}

// ---- forms generated from a schema ------------------------------------------------------------

// Workflow parameters (`{name: {type, default, required, enum, description}}`) and an inquiry's JSON
// Schema (`{type: object, properties, required}`) both become {properties, required} here.
function fromWorkflowParameters(params) {
  const properties = {}, required = [];
  for (const [name, p] of Object.entries(params || {})) {
    properties[name] = p;
    if (p.required) required.push(name);
  }
  return { properties, required };
}

function schemaForm(schema, { submitLabel, onSubmit, id }) {
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  const fields = [];
  const form = h("form", { class: "params", id, novalidate: true });
  for (const [name, p] of Object.entries(properties)) {
    const type = Array.isArray(p.type) ? p.type[0] : p.type;
    const fid = `${id}-${name}`;
    let input;
    if (p.enum) {
      input = h("select", { id: fid, name },
        required.has(name) ? null : h("option", { value: "" }, ""),
        p.enum.map((v) => h("option", { value: JSON.stringify(v), selected: v === p.default }, String(v))));
    } else if (type === "boolean") {
      input = h("input", { id: fid, name, type: "checkbox", checked: p.default === true });
    } else if (type === "integer" || type === "number") {
      input = h("input", { id: fid, name, type: "number", step: type === "integer" ? "1" : "any",
        value: p.default ?? "" });
    } else if (type === "array" || type === "object") {
      input = h("textarea", { id: fid, name, placeholder: type === "array" ? "[ ... ] (JSON)" : "{ ... } (JSON)" });
      if (p.default !== undefined) input.value = JSON.stringify(p.default);
    } else {
      input = h("input", { id: fid, name, type: p.secret ? "password" : "text", value: p.default ?? "" });
    }
    fields.push({ name, type, p, input });
    form.append(h("label", { for: fid }, name + (required.has(name) ? " *" : "")), input);
    if (p.description) form.append(h("div", { class: "hint" }, p.description));
  }
  const error = h("div", { class: "error hint", role: "alert" });
  form.append(h("div", { class: "submit" }, h("button", { class: "primary", type: "submit" }, submitLabel)), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const value = {};
    try {
      for (const { name, type, p, input } of fields) {
        if (type === "boolean" && !p.enum) { value[name] = input.checked; continue; }
        const raw = input.value;
        if (raw === "") {
          if (required.has(name)) throw new Error(`${name} is required`);
          continue;
        }
        if (p.enum) value[name] = JSON.parse(raw);
        else if (type === "integer" || type === "number") {
          const n = Number(raw);
          if (Number.isNaN(n) || (type === "integer" && !Number.isInteger(n))) throw new Error(`${name} must be ${type === "integer" ? "an integer" : "a number"}`);
          value[name] = n;
        } else if (type === "array" || type === "object") {
          try { value[name] = JSON.parse(raw); } catch { throw new Error(`${name} must be JSON (${type})`); }
          if (type === "array" ? !Array.isArray(value[name]) : (typeof value[name] !== "object" || Array.isArray(value[name])))
            throw new Error(`${name} must be a JSON ${type}`);
        } else value[name] = raw;
      }
      await onSubmit(value);
    } catch (e) {
      error.textContent = e.message;
    }
  });
  return form;
}

// ---- views ----------------------------------------------------------------------------------

async function executionsView(signal, query) {
  const status = query.get("status") || "";
  const body = h("tbody");
  view.replaceChildren(
    h("h1", {}, "Executions"),
    h("div", { class: "filters", role: "group", "aria-label": "status filter" },
      FILTERS.map((s) => h("button", { class: s === status ? "on" : "", "data-filter": s || "all",
        onclick: () => (location.hash = "#/executions" + (s ? "?status=" + s : "")) }, s || "all"))),
    h("table", { id: "executions" },
      h("thead", {}, h("tr", {}, ["id", "workflow", "status", "started", "ended"].map((c) => h("th", {}, c)))),
      body));
  every(2000, async () => {
    const doc = await api("GET", `/workflow-executions?limit=100${status ? "&status=" + status : ""}`, undefined, { signal });
    body.replaceChildren(...(doc.executions.length ? doc.executions.map((e) => h("tr", { dataset: { id: e.id } },
      h("td", { class: "mono" }, h("a", { href: `#/executions/${e.id}`, title: e.id }, shortId(e.id))),
      h("td", {}, e.ref), h("td", {}, pill(e.status)),
      h("td", {}, when(e.started_at)), h("td", {}, when(e.ended_at)))) :
      [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No executions" + (status ? ` with status ${status}` : "") + "."))]));
  }, signal);
}

function taskRows(tasks) {
  return tasks.map((t) => {
    let progress = null;
    if (Array.isArray(t.items)) {
      const done = t.items.filter((i) => TERMINAL.has(i.status)).length;
      const pct = t.items.length ? Math.round((100 * done) / t.items.length) : 100;
      progress = h("div", {}, h("span", { class: "progress" }, h("span", { style: `width:${pct}%` })),
        `${done}/${t.items.length} items`);
    }
    return h("tr", { dataset: { task: t.name, status: t.status } },
      h("td", {}, t.name), h("td", {}, pill(t.status)), h("td", {}, String(t.attempts ?? "")),
      h("td", {}, when(t.started_at)), h("td", {}, when(t.ended_at)),
      h("td", { class: "mono" }, progress, t.error ? h("pre", { class: "error" }, typeof t.error === "string" ? t.error : json(t.error)) :
        h("pre", {}, json(t.result))));
  });
}

function inquiryCard(inq, onAnswered) {
  const schema = inq.schema || { type: "object", properties: {} };
  return h("div", { class: "card inquiry", dataset: { inquiry: inq.id } },
    h("div", {}, h("strong", {}, inq.prompt || inq.description || `Inquiry for task ${inq.task ?? ""}`)),
    h("div", { class: "muted mono" }, `${inq.id}` + (inq.execution_id ? ` · execution ${shortId(inq.execution_id)}` : "") +
      (inq.task ? ` · task ${inq.task}` : "")),
    schemaForm(schema, {
      id: `inq-${inq.id.slice(0, 8)}`, submitLabel: "Respond",
      onSubmit: async (response) => {
        await api("POST", `/inquiries/${inq.id}/respond`, { response });
        toast("Response accepted");
        onAnswered();
      },
    }));
}

async function executionView(signal, id) {
  const header = h("h1", {});
  const controls = h("div", { class: "actions" });
  const graph = h("div", { id: "graph" });
  const tasks = h("tbody");
  const outcome = h("div", { id: "outcome" });
  const inquiries = h("div", { id: "inquiries" });
  const legend = h("div", { class: "legend" }, Object.entries({ succeeded: 1, failed: 1, running: 1, pending: 1, canceled: 1, none: 1 })
    .map(([s]) => h("span", {}, h("i", { style: `background:${STATUS_COLORS[s]}` }), s === "none" ? "not run" : s)),
    h("span", {}, "— taken edge, ┄ not taken"));
  view.replaceChildren(header, controls, inquiries,
    h("div", { class: "card" }, graph, legend), outcome,
    h("h2", {}, "Task runs"),
    h("table", { id: "tasks" }, h("thead", {}, h("tr", {}, ["task", "status", "attempts", "started", "ended", "result / error"].map((c) => h("th", {}, c)))), tasks));

  let current = null;
  const control = (verb, label, body, cls) => h("button", { class: cls || "", "data-action": verb, onclick: async (ev) => {
    ev.target.disabled = true;
    try {
      const doc = await api("POST", `/workflow-executions/${id}/${verb}`, body);
      if (verb === "rerun" && doc?.id) { location.hash = `#/executions/${doc.id}`; return; }
      toast(`${label}: ${doc?.status ?? "requested"}`);
      refresh();
    } catch (e) { toast(`${label} refused: ${e.message}`, true); }
    finally { ev.target.disabled = false; }
  } }, label);
  const buttons = {
    pause: control("pause", "Pause"), resume: control("resume", "Resume"),
    cancel: control("cancel", "Cancel", { force: false }, "danger"), rerun: control("rerun", "Rerun"),
  };
  controls.append(...Object.values(buttons));

  let pendingRefresh = null;
  async function refresh() {
    const [doc, g, inq] = await Promise.all([
      api("GET", `/workflow-executions/${id}`, undefined, { signal }),
      api("GET", `/workflow-executions/${id}/graph`, undefined, { signal }),
      api("GET", `/inquiries?execution_id=${encodeURIComponent(id)}`, undefined, { signal }).catch(() => ({ inquiries: [] })),
    ]);
    current = doc;
    header.replaceChildren(doc.ref, pill(doc.status), h("span", { class: "muted mono", title: doc.id }, doc.id));
    header.dataset.status = doc.status;
    const terminal = TERMINAL.has(doc.status);
    buttons.pause.disabled = terminal || ["paused", "pausing", "canceling"].includes(doc.status);
    buttons.resume.disabled = !["paused", "pausing"].includes(doc.status);
    buttons.cancel.disabled = terminal;
    buttons.rerun.disabled = !terminal;
    renderGraph(graph, g);
    tasks.replaceChildren(...taskRows(doc.tasks || []));
    outcome.replaceChildren(
      doc.error ? h("div", { class: "card error" }, h("strong", {}, "Error: "), doc.error.message ?? json(doc.error),
        doc.error.task ? ` (task ${doc.error.task})` : "") : "",
      doc.output && Object.keys(doc.output).length ? h("div", { class: "card" }, h("strong", {}, "Output"), h("pre", { class: "mono", id: "output" }, json(doc.output))) : "",
      h("div", { class: "card muted" }, "Parameters: ", h("span", { class: "mono" }, JSON.stringify(doc.parameters ?? {}))));
    const open = (inq.inquiries || []).filter((i) => !i.status || i.status === "pending");
    inquiries.replaceChildren(...open.map((i) => inquiryCard(i, refresh)));
    return doc;
  }
  const soon = () => {
    if (pendingRefresh) return;
    pendingRefresh = setTimeout(() => { pendingRefresh = null; refresh().catch(() => {}); }, 150);
  };

  const doc = await refresh();
  if (TERMINAL.has(doc.status)) return;
  // Follow the execution live; if the stream breaks, poll until the execution ends.
  try {
    await streamEvents(`/workflow-executions/${id}/events`, soon, signal);
    if (!signal.aborted) await refresh();
  } catch (e) {
    if (signal.aborted) return;
    every(2000, async () => { if (!current || !TERMINAL.has(current.status)) await refresh(); }, signal);
  }
}

async function workflowsView(signal) {
  const body = h("tbody");
  view.replaceChildren(h("h1", {}, "Workflows"),
    h("table", { id: "workflows" }, h("thead", {}, h("tr", {}, ["workflow", "description", ""].map((c) => h("th", {}, c)))), body));
  const doc = await api("GET", "/workflows", undefined, { signal });
  body.replaceChildren(...doc.workflows.map((w) => h("tr", { dataset: { ref: w.ref } },
    h("td", {}, h("a", { href: `#/workflows/${w.ref}` }, w.ref)),
    h("td", { class: "muted" }, w.description || w.label || ""),
    h("td", {}, h("a", { class: "btn", href: `#/workflows/${w.ref}` }, "Run…")))));
}

async function workflowView(signal, ref) {
  const w = await api("GET", `/workflows/${encodeURIComponent(ref)}`, undefined, { signal });
  const form = schemaForm(fromWorkflowParameters(w.parameters), {
    id: "execute", submitLabel: "Execute",
    onSubmit: async (parameters) => {
      const doc = await api("POST", `/workflows/${encodeURIComponent(ref)}/execute`, { parameters });
      location.hash = `#/executions/${doc.id}`;
    },
  });
  view.replaceChildren(h("h1", {}, w.ref),
    w.description ? h("p", { class: "muted" }, w.description) : "",
    h("div", { class: "card" }, h("h2", { style: "margin-top:0" }, "Run with parameters"), form),
    h("h2", {}, "Source"), h("pre", { class: "source", id: "source" }, w.source ?? ""));
}

async function inquiriesView(signal) {
  const list = h("div", { id: "inquiry-list" });
  view.replaceChildren(h("h1", {}, "Pending inquiries"), list);
  const load = async (answered = false) => {
    const doc = await api("GET", "/inquiries", undefined, { signal });
    const open = doc.inquiries.filter((i) => !i.status || i.status === "pending");
    if (!answered && list.querySelector("form:focus-within")) return; // don't redraw under someone typing
    list.replaceChildren(...(open.length ? open.map((i) => inquiryCard(i, () => load(true))) :
      [h("p", { class: "muted" }, "Nothing is waiting for an answer.")]));
  };
  every(3000, () => load(), signal);
}

function loginView(query) {
  const next = query.get("next") || "#/executions";
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "current-password" });
  const error = h("div", { class: "error", role: "alert" });
  view.replaceChildren(h("div", { class: "card login" }, h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "This server requires an API token (Authorization: Bearer)."),
    h("form", { class: "params", id: "login", onsubmit: async (ev) => {
      ev.preventDefault();
      token.set(input.value.trim());
      try {
        const res = await fetch(API + "/workflow-executions?limit=1", { headers: { Authorization: `Bearer ${token.get()}` } });
        if (res.status === 401) throw new Error("That token was not accepted.");
        location.hash = next;
      } catch (e) { token.set(""); error.textContent = e.message; }
    } }, h("label", { for: "token" }, "Token"), input,
    h("div", { class: "submit" }, h("button", { class: "primary", type: "submit" }, "Sign in")), error)));
}

// ---- router ---------------------------------------------------------------------------------

let leaving = new AbortController();
async function route() {
  leaving.abort();
  leaving = new AbortController();
  const signal = leaving.signal;
  const [path, qs] = (location.hash.slice(1) || "/executions").split("?");
  const query = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === parts[0]);
  const who = document.getElementById("who");
  if (parts[0] !== "login") {
    api("GET", "/whoami", undefined, { signal }).then((me) => who.replaceChildren(
      me.auth ? `${me.identity} (${me.role}) ` : "no sign-in needed (loopback) ",
      token.get() ? h("a", { href: "#/login", onclick: () => token.set("") }, "sign out") : "")).catch(() => {});
  } else who.replaceChildren();
  try {
    if (parts[0] === "login") return loginView(query);
    if (parts[0] === "executions" && parts[1]) return await executionView(signal, parts[1]);
    if (parts[0] === "workflows" && parts[1]) return await workflowView(signal, parts[1]);
    if (parts[0] === "workflows") return await workflowsView(signal);
    if (parts[0] === "inquiries") return await inquiriesView(signal);
    return await executionsView(signal, query);
  } catch (e) {
    if (signal.aborted || e.status === 401) return;
    view.replaceChildren(h("div", { class: "card error", role: "alert" }, e.message));
  }
}
window.addEventListener("hashchange", route);
route();
