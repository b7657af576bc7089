// Tasklane dashboard: plain JavaScript, no dependencies.
// The API key lives in sessionStorage (this tab only) and travels in X-API-Key,
// never in a URL.  Every value from the API reaches the page through textContent.
"use strict";

(() => {
  const KEY = "tasklane.apiKey";
  const REFRESH_MS = 5000;
  const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
  // The page is served at <base>dashboard; the API lives at <base>api/v1/...
  const BASE = new URL(".", window.location.href);

  const $ = (id) => document.getElementById(id);
  const state = { timer: null, cursor: null, tasks: [], dlq: [], detailId: null, busy: false, types: null };

  // --- helpers --------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} m ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} m`;
  }

  function ago(iso) {
    if (!iso) return "–";
    const s = (Date.now() - Date.parse(iso)) / 1000;
    if (s < 5) return "just now";
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(iso).toISOString().slice(0, 16).replace("T", " ");
  }

  const shortId = (id) => id.slice(0, 8);
  const fmtTs = (iso) => (iso ? `${iso.slice(0, 10)} ${iso.slice(11, 23)} UTC` : "–");
  const pill = (status) => el("span", { class: `pill s-${status}`, text: status });
  const prio = (p) => el("span", { class: `prio p-${p}`, text: p });

  function runTime(t) {
    if (!t.started_at || !t.finished_at) return "–";
    return fmtSeconds((Date.parse(t.finished_at) - Date.parse(t.started_at)) / 1000);
  }

  function toast(message, bad) {
    const t = $("toast");
    t.textContent = message;
    t.className = bad ? "toast bad" : "toast";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 3500);
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || `HTTP ${status}`);
      this.status = status;
    }
  }

  async function api(path, options) {
    const key = sessionStorage.getItem(KEY);
    const init = { method: "GET", ...(options || {}), headers: { "X-API-Key": key || "" } };
    if (init.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(init.body);
    }
    const response = await fetch(new URL(path, BASE), init);
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (response.status === 401) {
      signOut("That key was refused (unknown, revoked or expired). Paste a valid key.");
      throw new ApiError(401, body);
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // --- session --------------------------------------------------------------------------

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    stopTimer();
    $("app").hidden = true;
    $("session").hidden = true;
    $("detail").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("api-key").value = "";
    $("api-key").focus();
  }

  async function connect(key) {
    sessionStorage.setItem(KEY, key);
    $("login-error").textContent = "";
    try {
      await refresh();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) $("login-error").textContent = err.message;
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("session").hidden = false;
    startTimer();
  }

  function startTimer() {
    stopTimer();
    if ($("auto").checked) state.timer = setInterval(() => { if (!document.hidden) refresh().catch(report); }, REFRESH_MS);
  }

  function stopTimer() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  function report(err) {
    if (err instanceof ApiError && err.status === 401) return;
    toast(err.message || String(err), true);
  }

  // --- data -----------------------------------------------------------------------------

  function taskQuery(cursor) {
    const q = new URLSearchParams({ limit: "25" });
    for (const [field, id] of [["status", "f-status"], ["name", "f-name"], ["priority", "f-priority"]]) {
      if ($(id).value) q.set(field, $(id).value);
    }
    if (cursor) q.set("cursor", cursor);
    return `api/v1/tasks?${q}`;
  }

  async function refresh() {
    if (state.busy) return;
    state.busy = true;
    try {
      // Every task type the deployment runs (built-ins, team modules, declared targets),
      // read once: the name filter offers them before any such task has run.
      if (!state.types) state.types = (await api("api/v1/task-types")).task_types;
      const [stats, tasks, dlq, batches] = await Promise.all([
        api("api/v1/stats"),
        api(taskQuery(null)),
        api("api/v1/dead-letters?limit=50"),
        api("api/v1/batches?limit=10"),
      ]);
      renderStats(stats);
      state.tasks = tasks.items;
      state.cursor = tasks.next_cursor;
      renderTasks();
      state.dlq = dlq.items;
      renderDlq(stats.totals.dead_letters);
      renderBatches(batches.items);
      if (state.detailId && !$("detail").hidden) await showDetail(state.detailId, true);
      $("updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
    } finally {
      state.busy = false;
    }
  }

  // --- rendering ------------------------------------------------------------------------

  function renderStats(stats) {
    const t = stats.totals;
    $("tenant").textContent = `tenant ${stats.tenant}`;
    const fs = stats.fair_share || {};
    const quota = (used, max) => (max === null || max === undefined ? "no quota" : `${fmtInt(used ?? 0)} / ${fmtInt(max)}`);
    $("fair").textContent =
      `weight ${fs.weight ?? 1} · queued ${quota(fs.queued, fs.max_queued)} · running ${quota(fs.running, fs.max_running)}`;
    $("kpi-submitted").textContent = fmtInt(t.submitted);
    $("kpi-completed").textContent = fmtInt(t.completed);
    $("kpi-failed").textContent = fmtInt(t.failed);
    $("kpi-failed-note").textContent = `${fmtInt(t.cancelled)} cancelled · ${fmtInt(t.expired)} expired`;
    $("kpi-queue").textContent = fmtInt(t.queue_size);
    $("kpi-queue-note").textContent = `${fmtInt(t.queued)} ready · ${fmtInt(t.pending)} delayed`
      + (t.waiting ? ` · ${fmtInt(t.waiting)} waiting for parents` : "");
    $("kpi-processing").textContent = fmtInt(t.processing);
    $("kpi-dead").textContent = fmtInt(t.dead_letters);
    $("kpi-run").textContent = fmtSeconds(t.avg_run_seconds);
    $("kpi-wait").textContent = t.avg_wait_seconds === null ? "" : `waited ${fmtSeconds(t.avg_wait_seconds)} on average`;

    const sw = stats.sweeper || { status: "UNKNOWN" };
    const sweeper = $("sweeper");
    sweeper.className = `sweeper ${String(sw.status).toLowerCase()}`;
    sweeper.textContent = sw.status === "UP" ? `sweeper ${fmtSeconds(sw.age_seconds)} ago` : `sweeper ${sw.status}`;
    sweeper.title = sw.message || "sweeper freshness";

    const max = Math.max(1, ...stats.by_priority.map((p) => p.queued));
    $("priority-rows").replaceChildren(...stats.by_priority.map((p) => {
      const fill = el("span");
      fill.style.width = `${(100 * p.queued) / max}%`;
      return el("tr", { "data-priority": p.priority },
        el("td", {}, prio(p.priority)),
        el("td", { class: p.queued ? "num" : "num zero", "data-testid": `ready-${p.priority}`, text: fmtInt(p.queued) }),
        el("td", {}, el("div", { class: "bar" }, fill)),
        el("td", { class: p.pending ? "num" : "num zero", "data-testid": `delayed-${p.priority}`, text: fmtInt(p.pending) }),
        el("td", { class: p.processing ? "num" : "num zero", "data-testid": `running-${p.priority}`, text: fmtInt(p.processing) }),
        el("td", { class: "num muted", text: p.oldest_queued_age_seconds === null ? "–" : fmtSeconds(p.oldest_queued_age_seconds) }));
    }));

    // A paused type shows even without tasks today, so it can be resumed from here.
    const paused = new Map();
    for (const p of stats.paused || []) paused.set(p.name, [...(paused.get(p.name) || []), p]);
    const rows = [...stats.by_name];
    for (const name of paused.keys()) if (!rows.some((n) => n.name === name)) rows.push({ name });
    rows.sort((a, b) => a.name.localeCompare(b.name));
    $("name-rows").replaceChildren(...(rows.length ? rows.map((n) => el("tr", { "data-name": n.name, "data-paused": paused.has(n.name) ? "yes" : "no" },
      el("td", {}, el("code", { text: n.name })),
      ...["submitted", "completed", "failed", "queue_size", "processing", "dead_letters"].map((k) =>
        el("td", { class: n[k] ? "num" : "num zero", "data-testid": `name-${n.name}-${k}`, text: fmtInt(n[k] || 0) })),
      el("td", { class: "num", text: fmtSeconds(n.avg_run_seconds ?? null) }),
      el("td", { class: "num muted", text: fmtSeconds(n.avg_wait_seconds ?? null) }),
      el("td", { class: "state" }, ...pauseControl(n.name, paused.get(n.name) || [])))) : [emptyRow(10, "no tasks yet today")]));

    const nameSelect = $("f-name");
    const chosen = nameSelect.value;
    const targets = new Map((state.types || []).map((t) => [t.name, t.target]));
    const names = [...new Set([...targets.keys(), ...stats.by_name.map((n) => n.name)])];
    if (chosen && !names.includes(chosen)) names.push(chosen);
    const label = (n) => (targets.get(n) && targets.get(n) !== "python" ? `${n} (${targets.get(n)})` : n);
    nameSelect.replaceChildren(el("option", { value: "", text: "any name" }),
      ...names.sort().map((n) => el("option", { value: n, text: label(n) })));
    nameSelect.value = chosen;

    renderChart(stats.per_minute);
  }

  // Paused: a badge; the tenant's own pause can be lifted here, an operator's global one
  // only with the CLI.  Running: a Pause button for the task types this deployment runs.
  function pauseControl(name, pauses) {
    const own = pauses.find((p) => p.scope === "tenant");
    const global = pauses.find((p) => p.scope === "global");
    const out = [];
    if (pauses.length) {
      out.push(el("span", { class: "badge paused", "data-testid": `paused-${name}`, text: global ? "paused by operator" : "paused",
        title: pauses.map((p) => `${p.scope} pause by ${p.paused_by} since ${p.paused_at}`).join("\n") }));
    }
    if (own) {
      out.push(el("button", { type: "button", class: "btn small", "data-testid": `resume-${name}`, text: "Resume",
        onclick: (e) => pauseType(name, false, e.target) }));
    } else if (!global && (state.types || []).some((t) => t.name === name)) {
      out.push(el("button", { type: "button", class: "btn small ghost", "data-testid": `pause-${name}`, text: "Pause",
        onclick: (e) => pauseType(name, true, e.target) }));
    }
    return out;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function renderChart(series) {
    const W = 640, H = 210, L = 40, R = 10, T = 10, B = 26;
    const innerW = W - L - R, innerH = H - T - B;
    const peak = Math.max(1, ...series.map((m) => Math.max(m.completed + m.failed, m.submitted)));
    const step = niceStep(peak);
    const top = Math.ceil(peak / step) * step;
    const y = (v) => T + innerH - (innerH * v) / top;
    const slot = innerW / series.length;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "tasks per minute, last hour" });
    for (let v = 0; v <= top; v += step) {
      root.append(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmtInt(v)));
    }
    series.forEach((m, i) => {
      const x = L + i * slot + 1;
      const w = Math.max(slot - 2, 1);
      const label = `${new Date(m.minute).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" })}: `
        + `${m.completed} completed, ${m.failed} failed, ${m.submitted} submitted`;
      const group = svg("g", {});
      group.append(svg("title", {}, label));
      if (m.completed) group.append(svg("rect", { x, width: w, y: y(m.completed), height: y(0) - y(m.completed), fill: "#16a34a", rx: 1 }));
      if (m.failed) group.append(svg("rect", { x, width: w, y: y(m.completed + m.failed), height: y(0) - y(m.failed), fill: "#dc2626", rx: 1 }));
      group.append(svg("rect", { x: L + i * slot, width: slot, y: T, height: innerH, fill: "transparent" }));
      root.append(group);
    });
    const points = series.map((m, i) => `${(L + (i + 0.5) * slot).toFixed(1)},${y(m.submitted).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points, fill: "none", stroke: "#2563eb", "stroke-width": 1.8, "stroke-linejoin": "round" }));
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(0), y2: y(0) }));
    [[0, "−60 min"], [30, "−30 min"], [59, "now"]].forEach(([i, text]) => {
      root.append(svg("text", { x: L + (i + 0.5) * slot, y: H - 8, "text-anchor": i === 0 ? "start" : i === 59 ? "end" : "middle" }, text));
    });
    $("chart").replaceChildren(root);
  }

  function niceStep(peak) {
    const rough = peak / 4;
    const mag = 10 ** Math.floor(Math.log10(rough || 1));
    for (const m of [1, 2, 5, 10]) if (m * mag >= rough) return Math.max(1, m * mag);
    return Math.max(1, 10 * mag);
  }

  function emptyRow(span, text) {
    return el("tr", { class: "empty" }, el("td", { colspan: span, text }));
  }

  function renderTasks() {
    $("task-rows").replaceChildren(...(state.tasks.length ? state.tasks.map(taskRow) : [emptyRow(8, "no tasks match")]));
    $("more").hidden = !state.cursor;
  }

  function taskRow(t) {
    const actions = el("td", { class: "num" });
    if (!FINAL.has(t.status)) {
      actions.append(el("button", { type: "button", class: "btn small cancel", "data-testid": `cancel-${t.id}`, text: "Cancel",
        onclick: (e) => { e.stopPropagation(); cancelTask(t.id, e.target); } }));
    }
    return el("tr", { "data-task-id": t.id, "data-status": t.status, onclick: () => showDetail(t.id).catch(report) },
      el("td", {}, el("code", { text: shortId(t.id), title: t.id })),
      el("td", { text: t.name }),
      el("td", {}, pill(t.status),
        t.status === "PROCESSING" && t.progress !== null && t.progress !== undefined
          ? el("span", { class: "muted", text: ` ${t.progress}%`, title: t.progress_message || "" }) : ""),
      el("td", {}, prio(t.priority)),
      el("td", { class: "num", text: `${t.attempts}/${t.max_retries + 1}` }),
      el("td", { class: "muted", text: ago(t.created_at), title: t.created_at }),
      el("td", { class: "num", text: runTime(t) }),
      actions);
  }

  function renderDlq(total) {
    $("dlq-count").textContent = total ? `(${fmtInt(total)})` : "";
    $("redrive-all").hidden = state.dlq.length === 0;
    $("dlq-rows").replaceChildren(...(state.dlq.length ? state.dlq.map((t) => el("tr",
      { "data-task-id": t.id, onclick: () => showDetail(t.id).catch(report) },
      el("td", {}, el("code", { text: shortId(t.id), title: t.id })),
      el("td", { text: t.name }),
      el("td", { class: "num", text: String(t.attempts) }),
      el("td", { class: "err", text: t.last_error ? `${t.last_error_type || "Error"}: ${t.last_error}` : "–", title: t.last_error || "" }),
      el("td", { class: "muted", text: ago(t.finished_at), title: t.finished_at }),
      el("td", { class: "num" }, el("button", { type: "button", class: "btn small redrive", "data-testid": `redrive-${t.id}`, text: "Redrive",
        onclick: (e) => { e.stopPropagation(); redrive(t.id, e.target); } }))))
      : [emptyRow(6, "the dead-letter queue is empty")]));
  }

  function renderBatches(items) {
    $("batch-rows").replaceChildren(...(items.length ? items.map((b) => {
      const c = b.counts;
      const fill = el("span");
      fill.style.width = `${b.progress}%`;
      return el("tr", { "data-batch-id": b.id, "data-status": b.status },
        el("td", {}, el("code", { text: shortId(b.id), title: b.id })),
        // Shown in the colours of the task states it stands for.
        el("td", {}, el("span", { class: `pill s-${b.status === "COMPLETED" ? "COMPLETED" : "PROCESSING"}`, text: b.status })),
        el("td", {}, el("div", { class: "bar", title: `${b.progress}%` }, fill)),
        el("td", { class: "num", "data-testid": `batch-done-${b.id}`, text: `${b.total - b.remaining}/${b.total}` }),
        el("td", { class: "muted", text: `${c.COMPLETED} completed · ${c.FAILED} failed · ${c.CANCELLED} cancelled` }),
        el("td", { class: "muted", text: ago(b.created_at), title: b.created_at }));
    }) : [emptyRow(6, "no batches")]));
  }

  async function showDetail(id, quiet) {
    const [task, history] = await Promise.all([api(`api/v1/tasks/${id}`), api(`api/v1/tasks/${id}/events`)]);
    state.detailId = id;
    $("d-title").replaceChildren(el("span", { text: `${task.name} ` }), pill(task.status));
    $("d-id").textContent = task.id;
    const fields = [
      ["Priority", prio(task.priority)],
      ["Attempts", `${task.attempts} of ${task.max_retries + 1}`],
      ["Timeout", `${task.timeout_seconds} s`],
      ["Created", fmtTs(task.created_at)],
      ["Run at", fmtTs(task.run_at)],
      ["Started", fmtTs(task.started_at)],
      ["Finished", fmtTs(task.finished_at)],
      ["Run time", runTime(task)],
      ["Progress", task.progress === null || task.progress === undefined
        ? "–" : `${task.progress}%${task.progress_message ? " · " + task.progress_message : ""}`],
      ["Idempotency key", task.idempotency_key || "–"],
      ["Unique key", task.unique_key
        ? `${task.unique_key} · ${task.unique_until ? "held until " + fmtTs(task.unique_until) : "held while active"}` : "–"],
      ["Expires", task.expires_at ? fmtTs(task.expires_at) + (task.last_error_type === "Expired" ? " · expired" : "") : "–"],
      ["Snoozes", String(task.snoozes || 0)],
      ["Callback", task.callback_url || "–"],
      ["Batch", task.batch_id ? batchSummary(task.batch_id) : "–"],
    ];
    // Dependencies: the tasks it waits (or waited) for and those that wait for it.
    const links = (ids) => ids.flatMap((tid, i) => [i ? ", " : "", el("a", { href: "#", class: "mono", text: shortId(tid), title: tid,
      onclick: (e) => { e.preventDefault(); showDetail(tid).catch(report); } })]);
    if (task.depends_on) fields.push(["Waits for", el("span", { "data-testid": "d-parents" }, ...links(task.depends_on),
      task.waiting_on ? ` (${task.waiting_on} open)` : "")]);
    if (task.dependents) fields.push(["Dependents", el("span", { "data-testid": "d-children" }, ...links(task.dependents))]);
    $("d-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
    $("d-errors").replaceChildren(...(task.errors.length ? task.errors.map((e) => el("li", {},
      el("strong", { text: `attempt ${e.attempt} · ${e.error_type || "Error"}: ` }), e.error, " ", el("span", { class: "mono", text: fmtTs(e.at) })))
      : [el("li", { class: "muted", text: "none" })]));
    $("d-events").replaceChildren(...history.events.map((e) => el("tr", {},
      el("td", { class: "muted nowrap", text: e.at.slice(11, 23), title: e.at }),
      el("td", { class: "nowrap" }, e.from_status ? pill(e.from_status) : el("span", { class: "muted", text: "new" }), " → ", pill(e.to_status)),
      el("td", { class: "num", text: String(e.attempt) }),
      el("td", { class: "muted", text: e.actor }),
      el("td", { class: "err wrap", text: e.error ? `${e.error_type || "Error"}: ${e.error}` : "" }))));
    $("d-payload").textContent = JSON.stringify(task.payload, null, 2);
    $("d-result").textContent = task.result === null || task.result === undefined ? "–" : JSON.stringify(task.result, null, 2);
    const actions = [];
    if (task.status === "FAILED") {
      actions.push(el("button", { type: "button", class: "btn redrive", "data-testid": "detail-redrive", text: "Redrive",
        onclick: (e) => redrive(task.id, e.target) }));
    }
    if (!FINAL.has(task.status)) {
      actions.push(el("button", { type: "button", class: "btn cancel", "data-testid": "detail-cancel", text: "Cancel",
        onclick: (e) => cancelTask(task.id, e.target) }));
    }
    $("d-actions").replaceChildren(...actions);
    if (!quiet) $("detail").hidden = false;
  }

  // The task's batch (GET /api/v1/batches/{id}): its state, how many of its tasks are
  // final, and the final ones by outcome; filled in when the batch arrives.
  function batchSummary(batchId) {
    const out = el("span", { "data-testid": "detail-batch", title: batchId, text: shortId(batchId) });
    api(`api/v1/batches/${batchId}`).then((b) => {
      const c = b.counts;
      out.textContent = `${shortId(b.id)} · ${b.status} · ${b.total - b.remaining}/${b.total} final (${b.progress}%)` +
        ` · ${c.COMPLETED} completed, ${c.FAILED} failed, ${c.CANCELLED} cancelled`;
    }).catch(() => {});
    return out;
  }

  // --- actions --------------------------------------------------------------------------

  async function redrive(id, button) {
    if (button) button.disabled = true;
    try {
      await api(`api/v1/dead-letters/${id}/redrive`, { method: "POST" });
      toast(`Redriven ${shortId(id)}: back in the queue`);
      await refresh();
    } catch (err) {
      report(err);
      if (button) button.disabled = false;
    }
  }

  async function redriveAll(button) {
    const ids = state.dlq.map((t) => t.id);
    if (!ids.length || !window.confirm(`Redrive ${ids.length} dead-lettered task(s)?`)) return;
    button.disabled = true;
    try {
      const result = await api("api/v1/dead-letters/redrive", { method: "POST", body: { ids } });
      toast(`Redriven ${result.redriven} task(s)`);
      await refresh();
    } catch (err) {
      report(err);
    } finally {
      button.disabled = false;
    }
  }

  async function cancelTask(id, button) {
    if (button) button.disabled = true;
    try {
      const task = await api(`api/v1/tasks/${id}/cancel`, { method: "POST" });
      toast(task.status === "CANCELLED" ? `Cancelled ${shortId(id)}` : `Cancellation requested for ${shortId(id)}`);
      await refresh();
    } catch (err) {
      report(err);
      if (button) button.disabled = false;
    }
  }

  async function pauseType(name, pause, button) {
    if (button) button.disabled = true;
    try {
      const done = await api(`api/v1/task-types/${encodeURIComponent(name)}/${pause ? "pause" : "resume"}`, { method: "POST" });
      toast(pause ? `Paused ${name}: none of its tasks starts until resumed`
        : `Resumed ${name}: ${done.requeued} waiting task(s) back in the queue${done.paused ? " (still paused by an operator)" : ""}`);
      await refresh();
    } catch (err) {
      report(err);
      if (button) button.disabled = false;
    }
  }

  // Cancels what the task filters select (live tasks only; at least one filter), 500 a click.
  async function cancelMatching(button) {
    const body = {};
    for (const [field, id] of [["status", "f-status"], ["name", "f-name"], ["priority", "f-priority"]]) {
      if ($(id).value) body[field] = $(id).value;
    }
    if (!Object.keys(body).length) { toast("Choose a name, status or priority to cancel by", true); return; }
    if (body.status && !["WAITING", "PENDING", "QUEUED", "PROCESSING"].includes(body.status)) {
      toast("Only WAITING, PENDING, QUEUED or PROCESSING tasks can be cancelled", true);
      return;
    }
    const what = Object.entries(body).map(([k, v]) => `${k} ${v}`).join(", ");
    if (!window.confirm(`Cancel every live task with ${what}?`)) return;
    button.disabled = true;
    try {
      const done = await api("api/v1/tasks/cancel", { method: "POST", body });
      toast(`Cancelled ${done.cancelled}, asked ${done.cancel_requested} running to stop${done.more ? "; more match: click again" : ""}`);
      await refresh();
    } catch (err) {
      report(err);
    } finally {
      button.disabled = false;
    }
  }

  async function loadMore() {
    if (!state.cursor) return;
    const page = await api(taskQuery(state.cursor));
    state.tasks = state.tasks.concat(page.items);
    state.cursor = page.next_cursor;
    renderTasks();
  }

  // --- wiring ---------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("api-key").value.trim();
      if (key) connect(key);
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("refresh").addEventListener("click", () => refresh().catch(report));
    $("auto").addEventListener("change", startTimer);
    $("more").addEventListener("click", () => loadMore().catch(report));
    $("redrive-all").addEventListener("click", (e) => redriveAll(e.target));
    $("cancel-matching").addEventListener("click", (e) => cancelMatching(e.target));
    $("d-close").addEventListener("click", () => { $("detail").hidden = true; state.detailId = null; });
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") $("detail").hidden = true; });
    for (const id of ["f-status", "f-name", "f-priority"]) $(id).addEventListener("change", () => refresh().catch(report));
    const saved = sessionStorage.getItem(KEY);
    if (saved) connect(saved); else signOut("");
  });
})();
