// The operator page: plain script, no build step. Reads the JSON routes and follows the selected run
// live. Every call sends the key as a bearer token; the SSE stream is read with fetch (EventSource
// cannot set headers), so the key never appears in a URL.
"use strict";

const state = { key: sessionStorage.getItem("jax-api-key") || "", runId: null, stream: null };
const $ = (sel) => document.querySelector(sel);

function headers() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function status(text) {
  return el("span", { class: `s-${text}` }, text);
}

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function getJson(path) {
  const resp = await fetch(path, { headers: headers() });
  if (resp.status === 401 || resp.status === 403) {
    throw new Error(`${resp.status}: the API key is missing or lacks the read scope`);
  }
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// ------------------------------------------------------------------ flow control and service

async function refreshStatus() {
  const s = await getJson("/status");
  $("#service").textContent = `v${s.version} · up ${Math.round(s.uptime)} s`;
  const stats = {
    "queue depth": s.queueDepth,
    "in flight": s.inFlight,
    "active runs": Object.keys(s.activeRuns).length,
    concurrency: s.engine.concurrency,
    "queue size": s.engine.queueSize,
  };
  for (const [k, v] of Object.entries(s)) {
    if (k === "admission" && v && typeof v === "object") {  // shown when the service has admission control
      for (const [ak, av] of Object.entries(v)) if (typeof av !== "object") stats[`admission ${ak}`] = av;
    }
  }
  $("#flow-stats").replaceChildren(
    ...Object.entries(stats).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])
  );
  const res = s.resilience || {};
  fill($("#breakers tbody"), Object.entries(res.breakers || {}).map(([name, b]) =>
    el("tr", {}, el("td", {}, name), el("td", {}, status(b.state)),
      el("td", {}, b.failure_rate == null ? "" : `${Number(b.failure_rate).toFixed(1)} %`),
      el("td", {}, b.calls ?? ""), el("td", {}, b.not_permitted ?? ""))));
  const limiters = [];
  for (const [kind, group] of [["rate limit", res.rate_limits], ["bulkhead", res.bulkheads]]) {
    for (const [name, v] of Object.entries(group || {})) {
      const shown = Object.entries(v).map(([k, x]) => `${k}=${typeof x === "number" ? +x.toFixed(2) : x}`).join(" ");
      limiters.push(el("tr", {}, el("td", {}, name), el("td", {}, kind), el("td", { class: "mono" }, shown)));
    }
  }
  fill($("#limiters tbody"), limiters);
}

// ------------------------------------------------------------------ runs

async function refreshRuns() {
  const runs = await getJson("/runs?limit=20");
  fill($("#runs tbody"), runs.map((r) => {
    const counts = Object.entries(r.counts || {}).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", ");
    const row = el("tr", { "data-run": r.id, onclick: () => selectRun(r.id) },
      el("td", { class: "mono" }, r.id), el("td", {}, status(r.status)),
      el("td", {}, r.symbols.length), el("td", {}, new Date(r.startedAt).toLocaleString()),
      el("td", {}, counts));
    if (r.id === state.runId) row.classList.add("selected");
    return row;
  }));
  if (!state.runId && runs.length) selectRun(runs[0].id);
}

function stageCells(stages) {
  return stages.map((st) => el("span", { class: `stage s-${st.status}`, title: st.error || st.reason || "" },
    `${st.stage} ${Math.round(st.durationMs)}`));
}

function symbolRow(sym) {
  return el("tr", { "data-symbol": sym.symbol },
    el("td", { class: "mono" }, sym.symbol), el("td", {}, status(sym.status)),
    el("td", {}, ...stageCells(sym.stages || [])),
    el("td", {}, sym.events ? sym.events.length : (sym.counts ? sym.counts.events : "")),
    el("td", {}, sym.trades ? sym.trades.length : (sym.counts ? sym.counts.setups : "")),
    el("td", {}, sym.error || ""));
}

function tradeRow(t) {
  const c = t.risk.constraints;
  const allowed = t.risk.decision !== "candidate" && c.allowed;
  const why = allowed ? "allowed" : `rejected ${(c.violations || []).map((v) => v.code).join(",") || c.reason}`;
  return el("tr", {},
    el("td", { class: "mono" }, t.setup.id), el("td", {}, t.setup.direction),
    el("td", {}, t.setup.entry), el("td", {}, t.setup.stop), el("td", {}, t.risk.positionSize),
    el("td", {}, el("span", { class: allowed ? "s-allowed" : "s-rejected" }, why)));
}

async function loadRun(runId) {
  const detail = await getJson(`/runs/${encodeURIComponent(runId)}`);
  if (runId !== state.runId) return null;
  $("#run-id").textContent = runId;
  const badge = $("#run-status");
  badge.replaceChildren(status(detail.run.status));
  const err = $("#run-error");
  err.textContent = detail.run.error || "";
  err.hidden = !detail.run.error;
  fill($("#symbols tbody"), detail.symbols.map(symbolRow));
  const trades = await getJson(`/trades?runId=${encodeURIComponent(runId)}&limit=1000`);
  if (runId === state.runId) fill($("#trades tbody"), trades.map(tradeRow));
  return detail.run;
}

async function selectRun(runId) {
  state.runId = runId;
  for (const row of document.querySelectorAll("#runs tbody tr")) {
    row.classList.toggle("selected", row.dataset.run === runId);
  }
  if (state.stream) state.stream.abort();
  state.stream = null;
  try {
    const run = await loadRun(runId);
    if (run && run.status === "running") follow(runId);
  } catch (e) {
    showError(e.message);
  }
}

// ------------------------------------------------------------------ live: the run's SSE stream

function parseSse(buffer, onEvent) {
  let cut;
  while ((cut = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, cut);
    buffer = buffer.slice(cut + 2);
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;  // keep-alive comment
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) onEvent(name, JSON.parse(data.join("\n")));
  }
  return buffer;
}

async function follow(runId) {
  const controller = new AbortController();
  state.stream = controller;
  $("#live").hidden = false;
  try {
    const resp = await fetch(`/runs/${encodeURIComponent(runId)}/events`, { headers: headers(), signal: controller.signal });
    if (!resp.ok) throw new Error(`events: HTTP ${resp.status}`);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = parseSse(buffer + value, (name, data) => {
        if (runId !== state.runId) return;
        if (name === "symbol") {
          const rows = $("#symbols tbody");
          const old = rows.querySelector(`tr[data-symbol="${CSS.escape(data.symbol)}"]`);
          const row = symbolRow(data);
          if (old) old.replaceWith(row); else rows.append(row);
        } else if (name === "run") {
          $("#run-status").replaceChildren(status(data.status));
        }
      });
    }
    // The stream ends with the run: the stored results (stage durations, decisions) are now final.
    if (runId === state.runId) await loadRun(runId);
    await refreshRuns();
  } catch (e) {
    if (e.name !== "AbortError") showError(e.message);
  } finally {
    if (state.stream === controller) {
      state.stream = null;
      $("#live").hidden = true;
    }
  }
}

// ------------------------------------------------------------------ wiring

async function tick() {
  try {
    await Promise.all([refreshStatus(), refreshRuns()]);
    $("#conn").textContent = "connected";
    showError("");
  } catch (e) {
    $("#conn").textContent = "error";
    showError(e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#api-key").value = state.key;
  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("#api-key").value.trim();
    sessionStorage.setItem("jax-api-key", state.key);  // this tab only, gone when it closes
    tick();
    if (state.runId) selectRun(state.runId);
  });
  tick();
  setInterval(tick, 2000);
});
