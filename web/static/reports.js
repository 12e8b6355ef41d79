// The Reports page (roles supervisor, admin): queue, agent, abandoned-call and IVR reports for a range of days,
// in intervals aligned to a chosen time zone, as tables, KPI cards and charts, each downloadable as CSV.
// Everything shown comes from the report API (web/api_reports.py); figures and names are those of KPIS.md.

import { ApiError, api, clear, fmtDur, fmtPct, h, table, tabs, toast } from "/static/common.js";

const app = document.getElementById("app");
const BROWSER_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const INTERVALS = [["15m", "15 minutes"], ["30m", "30 minutes"], ["1h", "1 hour"], ["1d", "1 day"]];
const COLORS = {
  offered: "#1f5fbf", answered: "#1e8e4e", abandoned: "#c0392b", sl: "#1e8e4e", asa: "#c27c0e",
  available: "#7fc8a0", ringing: "#f0b541", talk: "#2c7be5", hold: "#7d4cc2", acw: "#19a3b5", paused: "#d9685b",
};

// ---------------------------------------------------------------------------------------------------------------
// Time zones: the wall-clock day of a zone as UTC instants (the API wants instants with an offset).

function zoneParts(tz, ms) {
  const parts = new Intl.DateTimeFormat("en-US", { timeZone: tz, hourCycle: "h23", year: "numeric",
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" }).formatToParts(new Date(ms));
  const get = (t) => Number(parts.find((p) => p.type === t)?.value);
  return { y: get("year"), m: get("month"), d: get("day"), hh: get("hour") % 24, mm: get("minute"), ss: get("second") };
}

function zoneOffsetMs(tz, ms) {
  const p = zoneParts(tz, ms);
  return Date.UTC(p.y, p.m - 1, p.d, p.hh, p.mm, p.ss) - Math.floor(ms / 1000) * 1000;
}

/** The UTC instant (ms) of local midnight starting the day `ymd` ("2025-03-30") in `tz`. */
function zoneMidnight(ymd, tz) {
  const [y, m, d] = ymd.split("-").map(Number);
  const wall = Date.UTC(y, m - 1, d);
  const t = wall - zoneOffsetMs(tz, wall);
  const t2 = wall - zoneOffsetMs(tz, t);  // the offset may differ on the day of a clock change
  return t2 !== t && zoneOffsetMs(tz, t2) === zoneOffsetMs(tz, t) ? t2 : t;
}

function todayIn(tz) {
  const p = zoneParts(tz, Date.now());
  return `${p.y}-${String(p.m).padStart(2, "0")}-${String(p.d).padStart(2, "0")}`;
}

function addDays(ymd, n) {
  const [y, m, d] = ymd.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}

function validZone(tz) {
  try { new Intl.DateTimeFormat("en-US", { timeZone: tz }); return true; } catch { return false; }
}

/** An instant (ISO text) as the wall-clock date and time in `tz`. */
function fmtAt(iso, tz) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  try {
    return d.toLocaleString(undefined, { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit" });
  } catch { return d.toLocaleString(); }
}

// ---------------------------------------------------------------------------------------------------------------
// Chart.js (UMD, sets window.Chart): loaded once, on first use.

let chartLib = null;
function loadChart() {
  if (window.Chart) return Promise.resolve(window.Chart);
  if (!chartLib) {
    chartLib = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = "/static/vendor/chart.umd.min.js";
      s.onload = () => (window.Chart ? resolve(window.Chart) : reject(new Error("Chart.js did not load")));
      s.onerror = () => { chartLib = null; reject(new Error("Chart.js could not be loaded")); };
      document.head.append(s);
    });
  }
  return chartLib;
}

const charts = [];
function destroyCharts() { while (charts.length) charts.pop().destroy(); }

/** A chart in a .chart-box; drawn once Chart.js is there (the canvas is in place at once). */
function chartBox(id, title, config, cls = "") {
  const canvas = h("canvas", { id, role: "img", "aria-label": title });
  const box = h("div", { class: `chart-box ${cls}`.trim() }, canvas);
  loadChart().then((Chart) => {
    if (!canvas.isConnected) return;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    const options = config.options || {};
    options.responsive = true;
    options.maintainAspectRatio = false;
    options.animation = false;
    options.plugins = { ...(options.plugins || {}),
      title: { display: true, text: title, font: { size: 14, weight: "600" } },
      legend: { display: true, position: "bottom", ...(options.plugins?.legend || {}) } };
    charts.push(new Chart(canvas, { ...config, options }));
  }).catch((err) => {
    box.replaceChildren(h("p", { class: "form-error" }, `Chart unavailable: ${err.message}`));
  });
  return box;
}

const axisTitle = (text) => ({ display: true, text, font: { weight: "600" } });
/** m:ss ticks on whole seconds only (sub-second steps would all read 0:00). */
const wholeSecondTicks = { precision: 0, callback: (v) => (Number.isInteger(v) ? fmtDur(v) : null) };

// ---------------------------------------------------------------------------------------------------------------
// State: the form's parameters and the last answers.

const state = {
  params: null,     // {fromDay, toDay, interval, queue, tz, sl, short}
  queues: null, agents: null, calls: null, ivr: null, errors: {},
  current: "queues",
};
let tabCtl = null;

function rangeOf(p) {
  const zone = validZone(p.tz) ? p.tz : "UTC";
  return { from: new Date(zoneMidnight(p.fromDay, zone)).toISOString(),
    to: new Date(zoneMidnight(addDays(p.toDay, 1), zone)).toISOString() };
}

function url(path, query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  return `${path}?${q}`;
}

function queueQuery(p, extra = {}) {
  return { ...rangeOf(p), interval: p.interval, tz: p.tz, queue: p.queue, sl_threshold_s: p.sl, ...extra };
}
const agentQuery = (p, extra = {}) => ({ ...rangeOf(p), interval: p.interval, tz: p.tz, ...extra });
const callsQuery = (p, outcome, extra = {}) => ({ ...rangeOf(p), queue: p.queue, outcome, limit: 1000, ...extra });
const ivrQuery = (p) => ({ ...rangeOf(p) });

/** The intervals' labels: the wall-clock time the API gives in the zone (start text carries its offset). */
function intervalLabel(start, p) {
  if (p.interval === "1d") return start.slice(0, 10);
  if (p.fromDay !== p.toDay) return `${start.slice(5, 10)} ${start.slice(11, 16)}`;
  return start.slice(11, 16);
}

function intervalSpan(row, p) {
  if (row.start === "total") return "Total";
  const end = row.end ? (p.interval === "1d" ? row.end.slice(0, 10) : row.end.slice(11, 16)) : "";
  return p.interval === "1d" ? intervalLabel(row.start, p) : `${intervalLabel(row.start, p)}–${end}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Page.

async function main() {
  const errorBox = h("p", { class: "form-error", role: "alert", id: "report-error", hidden: true });
  const queueSel = h("select", { name: "queue", id: "r-queue" }, h("option", { value: "" }, "All queues"));
  const zones = (typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : []);
  const today = todayIn(BROWSER_TZ);
  const form = h("form", { class: "card report-controls", id: "report-form", novalidate: true },
    h("div", { class: "inline" },
      h("label", {}, "From (day)", h("input", { type: "date", name: "from", id: "r-from", value: today, required: true })),
      h("label", {}, "To (day, included)", h("input", { type: "date", name: "to", id: "r-to", value: today,
        required: true })),
      h("label", {}, "Interval", h("select", { name: "interval", id: "r-interval" },
        INTERVALS.map(([v, t]) => h("option", { value: v, selected: v === "1h" }, t)))),
      h("label", {}, "Queue", queueSel),
      h("label", {}, "Time zone", h("input", { name: "tz", id: "r-tz", value: BROWSER_TZ, list: "r-zones",
        size: 18, maxlength: 64, autocomplete: "off" })),
      h("datalist", { id: "r-zones" }, ["UTC", ...zones].map((z) => h("option", { value: z }))),
      h("label", {}, "SL threshold (s)", h("input", { type: "number", name: "sl_threshold_s", id: "r-sl", min: 1,
        max: 3600, step: "any", placeholder: "queue's", size: 8 })),
      h("div", { class: "checks" },
        h("label", { class: "check" }, h("input", { type: "checkbox", name: "short", id: "r-short" }),
          "List short abandons too"),
        h("label", { class: "check" }, h("input", { type: "checkbox", name: "empty", id: "r-empty", checked: true,
          on: { change: () => state.params && tabCtl.show(state.current) } }), "Hide empty intervals in tables")),
      h("button", { type: "submit", class: "primary", id: "r-run" }, "Run")),
    errorBox);
  const status = h("p", { class: "muted report-status", id: "report-status" }, "Choose a range and press Run.");
  clear(app, h("h1", {}, "Reports"), form, status);

  api("GET", "/api/v1/queues").then((qs) => {
    for (const q of (qs || []).map((x) => x.name).sort()) queueSel.append(h("option", { value: q }, q));
  }).catch((err) => toast(`Queues could not be loaded: ${err.message}`, "error"));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const p = {
      fromDay: String(f.get("from") || ""), toDay: String(f.get("to") || ""), interval: String(f.get("interval")),
      queue: String(f.get("queue") || ""), tz: String(f.get("tz") || "").trim() || "UTC",
      sl: String(f.get("sl_threshold_s") || "").trim(), short: f.get("short") === "on",
    };
    errorBox.hidden = true;
    form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
    if (!/^\d{4}-\d{2}-\d{2}$/.test(p.fromDay) || !/^\d{4}-\d{2}-\d{2}$/.test(p.toDay)) {
      showError(form, errorBox, "Enter both days of the range.");
      return;
    }
    const button = form.querySelector("#r-run");
    button.disabled = true;
    status.textContent = "Running…";
    try {
      await run(p);
      const failed = Object.values(state.errors);
      if (failed.length) {
        const err = failed[0];
        showError(form, errorBox, tidy(err instanceof ApiError ? err.message : err), err);
        status.textContent = "The report could not be run.";
      } else {
        status.textContent = `Report for ${p.fromDay === p.toDay ? p.fromDay : `${p.fromDay} to ${p.toDay}`}`
          + ` · ${p.queue || "all queues"} · intervals of ${INTERVALS.find(([v]) => v === p.interval)[1]}`
          + ` · ${p.tz}`;
      }
    } finally {
      button.disabled = false;
    }
    tabCtl.show(state.current);
  });

  tabCtl = tabs(app, [
    { id: "queues", label: "Queues", render: (b) => render(b, "queues", renderQueues) },
    { id: "agents", label: "Agents", render: (b) => render(b, "agents", renderAgents) },
    { id: "abandoned", label: "Abandoned calls", render: (b) => render(b, "abandoned", renderAbandoned) },
    { id: "ivr", label: "IVR paths", render: (b) => render(b, "ivr", renderIvr) },
  ]);
}

function showError(form, box, message, err) {
  box.textContent = message;
  box.hidden = false;
  toast(message, "error");
  const names = { from: "from", to: "to", since: "from", until: "to", tz: "tz", queue: "queue",
    sl_threshold_s: "sl_threshold_s", interval: "interval" };
  for (const pr of err?.problems || []) {
    const name = names[String(pr.field || "").split(".")[0]];
    form.querySelector(`[name="${name}"]`)?.classList.add("invalid");
  }
}

async function run(p) {
  state.params = p;
  state.errors = {};
  const short = p.short ? api("GET", url("/api/v1/calls", callsQuery(p, "short_abandoned"))) : Promise.resolve(null);
  const [queues, agents, abandoned, shorts, ivr] = await Promise.allSettled([
    api("GET", url("/api/v1/reports/queues", queueQuery(p))),
    api("GET", url("/api/v1/reports/agents", agentQuery(p))),
    api("GET", url("/api/v1/calls", callsQuery(p, "abandoned"))),
    short,
    api("GET", url("/api/v1/reports/ivr", ivrQuery(p))),
  ]);
  const take = (key, r) => {
    if (r.status === "fulfilled") return r.value;
    state.errors[key] = r.reason;
    return null;
  };
  state.queues = take("queues", queues);
  state.agents = take("agents", agents);
  const ab = take("abandoned", abandoned), sh = take("abandoned", shorts);
  state.calls = ab ? { ...ab, calls: [...ab.calls, ...(sh?.calls || [])]
    .sort((a, b) => a.entered_at.localeCompare(b.entered_at)), truncated: ab.calls.length >= 1000
      || (sh?.calls.length || 0) >= 1000 } : null;
  state.ivr = take("ivr", ivr);
}

/** Append the nodes that are there (helpers answer null for "nothing to show"). */
function put(el, ...nodes) { el.append(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false)); }

/** pydantic's "Value error, " prefix says nothing to a supervisor. */
const tidy = (message) => String(message).replace(/Value error, /g, "");

function render(body, id, fn) {
  state.current = id;
  destroyCharts();
  if (!state.params) {
    body.append(h("p", { class: "empty" }, "Press Run to see the report."));
    return;
  }
  const err = state.errors[id];
  if (err) {
    body.append(h("p", { class: "form-error", role: "alert" }, tidy(err instanceof ApiError ? err.message : err)));
    return;
  }
  fn(body, state.params);
}

function csvLink(href, label = "Download CSV", id) {
  return h("a", { class: "button csv-link", href, download: "", id }, label);
}

function incomplete(report) {
  const gaps = report?.incomplete_ranges || [];
  if (!gaps.length) return null;
  const tz = state.params.tz;
  return h("div", { class: "incomplete", role: "status", "data-incomplete": gaps.length },
    h("strong", {}, "Incomplete range: "),
    "the PBX connection was down, so calls or agent states may be missing for ",
    gaps.map((g, i) => [i ? "; " : "", `${fmtAt(g.since, tz)} – ${g.until ? fmtAt(g.until, tz) : "now (still down)"}`,
      ` (node ${g.node}${g.reconciled ? ", queue calls rebuilt from queue_log" : ""})`]),
    ".");
}

function toolbar(title, ...items) {
  return h("div", { class: "report-head" }, h("h2", {}, title), h("div", { class: "buttons" }, items));
}

// ---------------------------------------------------------------------------------------------------------------
// Queues.

const KPI_CARDS = [
  ["offered", "Offered", "n"], ["answered", "Answered", "n"], ["abandoned", "Abandoned", "n"],
  ["short_abandoned", "Short abandoned (< 5 s)", "n"], ["timeout", "Timeout / no agents", "n"],
  ["service_level", "Service level", "%"], ["abandon_rate", "Abandon rate", "%"], ["asa_s", "ASA (avg answer)", "t"],
  ["max_wait_s", "Longest wait", "t"], ["avg_abandon_wait_s", "Avg wait to abandon", "t"], ["aht_s", "AHT", "t"],
  ["avg_talk_s", "Avg talk", "t"], ["avg_hold_s", "Avg hold", "t"], ["avg_acw_s", "Avg after-call work", "t"],
  ["transfer_rate", "Transfer rate", "%"], ["fcr_rate", "First-contact resolution", "%"],
  ["csat", "CSAT (score ≥ 4)", "%"], ["csat_avg", "CSAT average (1–5)", "x"],
];

function fmtKind(kind, v) {
  if (kind === "%") return fmtPct(v);
  if (kind === "t") return fmtDur(v);
  if (kind === "x") return v === null || v === undefined ? "–" : Number(v).toFixed(2);
  return v === null || v === undefined ? "–" : String(v);
}

const QUEUE_COLUMNS = [
  ["offered", "Offered", "n"], ["answered", "Answered", "n"], ["abandoned", "Abandoned", "n"],
  ["short_abandoned", "Short aband.", "n"], ["timeout", "Timeout", "n"], ["service_level", "Service level", "%"],
  ["abandon_rate", "Abandon rate", "%"], ["asa_s", "ASA", "t"], ["max_wait_s", "Max wait", "t"],
  ["avg_abandon_wait_s", "Abandon wait", "t"], ["aht_s", "AHT", "t"], ["avg_talk_s", "Talk", "t"],
  ["avg_hold_s", "Hold", "t"], ["avg_acw_s", "ACW", "t"], ["transfer_rate", "Transfer", "%"],
  ["fcr_rate", "FCR", "%"], ["csat", "CSAT", "%"],
];
const UNIT = { n: "calls", "%": "%", t: "m:ss", x: "" };
const unit = (text) => (text ? h("small", { class: "unit" }, text) : null);

function renderQueues(body, p) {
  const report = state.queues;
  put(body, toolbar("Queue figures", csvLink(url("/api/v1/reports/queues", queueQuery(p, { format: "csv" })),
    "Download CSV", "csv-queues")), incomplete(report));
  const items = report.queues || [];
  const idle = items.filter((q) => !q.total.offered && !p.queue);
  const shown = items.filter((q) => q.total.offered || p.queue);
  if (!shown.length) body.append(h("p", { class: "empty" }, "No queue calls in this range."));
  for (const q of shown) body.append(queueSection(q, p));
  if (idle.length) {
    body.append(h("p", { class: "muted" }, `No calls in this range: ${idle.map((q) => q.queue).join(", ")}.`));
  }
}

function queueSection(q, p) {
  const t = q.total;
  const cards = h("div", { class: "kpis" }, KPI_CARDS.map(([k, label, kind]) =>
    h("div", { class: "kpi", dataset: { kpi: k } }, h("div", { class: "label" }, label),
      h("div", { class: "value" }, fmtKind(kind, t[k])))));
  const rows = q.intervals.filter((i) => i.offered > 0 || !document.getElementById("r-empty")?.checked);
  const labels = q.intervals.map((i) => intervalLabel(i.start, p));
  const slug = q.queue.replace(/[^a-z0-9_-]/g, "");
  const xTitle = `Interval start (${p.tz})`;
  const counts = chartBox(`chart-calls-${slug}`, `Calls per interval · ${q.queue}`, {
    type: "bar",
    data: { labels, datasets: [
      { label: "Offered", data: q.intervals.map((i) => i.offered), backgroundColor: COLORS.offered },
      { label: "Answered", data: q.intervals.map((i) => i.answered), backgroundColor: COLORS.answered },
      { label: "Abandoned", data: q.intervals.map((i) => i.abandoned), backgroundColor: COLORS.abandoned },
    ] },
    options: { scales: { x: { title: axisTitle(xTitle) },
      y: { beginAtZero: true, suggestedMax: 2, title: axisTitle("Calls"), ticks: { precision: 0 } } } },
  });
  const trend = chartBox(`chart-sl-${slug}`, `Service level and ASA · ${q.queue}`, {
    type: "line",
    data: { labels, datasets: [
      { label: "Service level (%)", data: q.intervals.map((i) => (i.service_level === null ? null : i.service_level * 100)),
        borderColor: COLORS.sl, backgroundColor: COLORS.sl, yAxisID: "ySl", spanGaps: true, tension: 0.2,
        pointRadius: 4, borderWidth: 2 },
      { label: "ASA (m:ss)", data: q.intervals.map((i) => i.asa_s), borderColor: COLORS.asa,
        backgroundColor: COLORS.asa, yAxisID: "yAsa", spanGaps: true, tension: 0.2, pointRadius: 5, borderWidth: 2,
        pointStyle: "rectRot" },
    ] },
    options: {
      scales: {
        x: { title: axisTitle(xTitle) },
        ySl: { type: "linear", position: "left", min: 0, max: 100, title: axisTitle("Service level (%)"),
          ticks: { callback: (v) => `${v} %` } },
        yAsa: { type: "linear", position: "right", beginAtZero: true, suggestedMax: 10,
          title: axisTitle("ASA (m:ss)"), grid: { drawOnChartArea: false }, ticks: wholeSecondTicks },
      },
      plugins: { legend: { labels: { usePointStyle: true } },
        tooltip: { callbacks: { label: (c) => (c.dataset.yAxisID === "yAsa"
        ? `ASA: ${fmtDur(c.parsed.y)}` : `Service level: ${c.parsed.y.toFixed(1)} %`) } } },
    },
  });
  const columns = [{ key: (r) => intervalSpan(r, p), label: ["Interval", unit(p.tz)], cls: "nowrap" },
    ...QUEUE_COLUMNS.map(([k, label, kind]) => ({ key: k, label: [label, unit(UNIT[kind])], cls: "num",
      fmt: (v) => fmtKind(kind, v) }))];
  const tableRows = [...rows, { ...t, start: "total", end: "" }];
  return h("section", { class: "card queue-report", dataset: { queue: q.queue } },
    h("h3", {}, `Queue ${q.queue}`), cards,
    h("div", { class: "cols-2 charts" }, counts, trend),
    h("h3", {}, "Per interval"),
    h("div", { class: "table-wrap" }, table(columns, tableRows, {
      id: `intervals-${slug}`, rowAttrs: (r) => (r.start === "total" ? { class: "total" } : {}) })));
}

// ---------------------------------------------------------------------------------------------------------------
// Agents.

const STATE_PARTS = [["available_s", "Available", "available"], ["ringing_s", "Ringing", "ringing"],
  ["talk_s", "Talk", "talk"], ["hold_s", "Hold", "hold"], ["acw_s", "After-call work", "acw"],
  ["paused_s", "Paused", "paused"]];

function renderAgents(body, p) {
  const report = state.agents;
  const all = report.agents || [];
  const active = all.filter((a) => a.total.logged_in_s > 0 || a.total.handled > 0 || a.total.missed > 0);
  put(body, toolbar("Agent figures", csvLink(url("/api/v1/reports/agents", agentQuery(p, { format: "csv" })),
    "Download CSV", "csv-agents")), incomplete(report),
  h("p", { class: "muted" }, "Agent figures cover every queue. ",
    all.length > active.length ? `${all.length - active.length} agents not logged in during the range are left out.`
      : ""));
  if (!active.length) {
    body.append(h("p", { class: "empty" }, "No agent was logged in during this range."));
    return;
  }
  const dur = (k, label) => ({ key: (r) => r.total[k], label, cls: "num", fmt: fmtDur });
  const columns = [
    { key: "agent", label: "Agent" }, dur("logged_in_s", "Logged in"), dur("available_s", "Available"),
    dur("ringing_s", "Ringing"), dur("talk_s", "Talk"), dur("hold_s", "Hold"), dur("acw_s", "ACW"),
    { key: (r) => r.total.paused_s, label: "Paused", cls: "num", fmt: (v, r) => [fmtDur(v),
      ...Object.entries(r.total.paused_by_reason || {}).map(([why, s]) => h("div", { class: "sub" },
        `${why} ${fmtDur(s)}`))] },
    { key: (r) => r.total.handled, label: "Handled", cls: "num" },
    { key: (r) => r.total.missed, label: "Missed", cls: "num" },
    { key: (r) => r.total.aht_s, label: "AHT", cls: "num", fmt: fmtDur },
    { key: (r) => r.total.occupancy, label: "Occupancy", cls: "num", fmt: fmtPct },
    { key: (r) => r.total.utilization, label: "Utilization", cls: "num", fmt: fmtPct },
  ];
  body.append(
    h("div", { class: "card" }, chartBox("chart-agents", "Time in state per agent", {
      type: "bar",
      data: { labels: active.map((a) => a.agent), datasets: STATE_PARTS.map(([k, label, c]) => ({
        label, data: active.map((a) => a.total[k] || 0), backgroundColor: COLORS[c], maxBarThickness: 90 })) },
      options: {
        scales: { x: { stacked: true, title: axisTitle("Agent") },
          y: { stacked: true, beginAtZero: true, suggestedMax: 10, title: axisTitle("Time (m:ss)"),
            ticks: wholeSecondTicks } },
        plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${fmtDur(c.parsed.y)}` } } },
      },
    }, "tall")),
    h("div", { class: "card table-wrap" }, h("p", { class: "muted" }, "Times in h:mm:ss or m:ss; occupancy = busy ÷ "
      + "(busy + available); utilization = handling ÷ logged in."), table(columns, active, { id: "agents-table" })));
}

// ---------------------------------------------------------------------------------------------------------------
// Abandoned calls: the list a supervisor calls back from.

const OUTCOME_LABEL = { abandoned: "Abandoned", short_abandoned: "Short abandon" };

function renderAbandoned(body, p) {
  const report = state.calls;
  const links = [csvLink(url("/api/v1/calls", callsQuery(p, "abandoned", { format: "csv" })),
    p.short ? "Download CSV (abandoned)" : "Download CSV", "csv-abandoned")];
  if (p.short) {
    links.push(csvLink(url("/api/v1/calls", callsQuery(p, "short_abandoned", { format: "csv" })),
      "Download CSV (short abandons)", "csv-short"));
  }
  put(body, toolbar(p.short ? "Abandoned and short-abandoned calls" : "Abandoned calls", ...links),
    incomplete(report));
  if (report.truncated) body.append(h("p", { class: "muted" }, "Showing the first 1000 calls of each kind: narrow "
    + "the range or pick a queue to see the rest."));
  const columns = [
    { key: "entered_at", label: `Entered (${p.tz})`, fmt: (v) => fmtAt(v, p.tz), cls: "nowrap" },
    { key: "queue", label: "Queue" },
    { key: "caller_number", label: "Caller number", fmt: (v) => (v ? h("a", { href: `tel:${v}`, class: "caller" }, v)
      : h("span", { class: "muted" }, "withheld")) },
    { key: "wait_s", label: "Waited (m:ss)", cls: "num", fmt: fmtDur },
    { key: "outcome", label: "Outcome", fmt: (v) => OUTCOME_LABEL[v] || v },
  ];
  body.append(h("div", { class: "card table-wrap" }, h("p", { class: "muted" },
    `${report.calls.length} call${report.calls.length === 1 ? "" : "s"}, oldest first.`),
  table(columns, report.calls, { id: "abandoned-table", empty: "No abandoned calls in this range." })));
}

// ---------------------------------------------------------------------------------------------------------------
// IVR paths.

function counts(obj) {
  const e = Object.entries(obj || {});
  if (!e.length) return "–";
  return h("ul", { class: "counts" }, e.map(([k, n]) => h("li", {}, h("span", {}, k), h("b", {}, n))));
}

function renderIvr(body, p) {
  const report = state.ivr;
  put(body, toolbar("IVR paths", csvLink(url("/api/v1/reports/ivr", { ...ivrQuery(p), format: "csv" }),
    "Download CSV", "csv-ivr")), incomplete(report));
  const flows = report.flows || [];
  if (!flows.length) {
    body.append(h("p", { class: "empty" }, "No IVR runs in this range."));
    return;
  }
  for (const f of flows) {
    const cards = h("div", { class: "kpis" }, [
      ["Calls", f.calls], ["Reached a queue", f.to_queue], ["Transferred", f.transferred], ["Hung up in IVR", f.hung_up],
      ["Contained", f.contained], ["Containment", fmtPct(f.containment)],
    ].map(([label, v]) => h("div", { class: "kpi" }, h("div", { class: "label" }, label), h("div", { class: "value" },
      String(v)))));
    const columns = [
      { key: "node_id", label: "Node" }, { key: "node_type", label: "Type" },
      { key: "entered", label: "Entered (calls)", cls: "num" }, { key: "steps", label: "Steps", cls: "num" },
      { key: "outcomes", label: "Exits by choice", fmt: counts }, { key: "next", label: "Went on to", fmt: counts },
      { key: "hung_up", label: "Hung up here", cls: "num" }, { key: "ended_here", label: "Ended here", cls: "num" },
    ];
    body.append(h("section", { class: "card ivr-flow", dataset: { flow: f.flow } }, h("h3", {}, `Flow ${f.flow}`),
      cards, h("div", { class: "table-wrap" }, table(columns, [...f.nodes].sort((x, y) => y.entered - x.entered
        || x.node_id.localeCompare(y.node_id)), { empty: "No steps." }))));
  }
}

main().catch((err) => {
  console.error(err);
  toast(`The reports page failed to start: ${err.message}`, "error");
});
