// The supervisor console: the wallboard (per queue: waiting, longest wait, service level, ASA, today's offered /
// answered / abandoned; agents with state, reason and time in state), listen / whisper / barge / take over on
// each live call, force an agent's state, the supervision sessions, and a recordings search with playback.
// Live over the feed: queue figures arrive pushed (each with its event's instant); agent changes are applied at
// once and the snapshot re-read shortly after for the details (caller, queue).
import {
  act, api, clear, connectFeed, everySecond, fmtDur, fmtPct, fmtTime, h, stateBadge, table, tabs, toast,
} from "./common.js";

const root = document.getElementById("app");
// forceReason: the pause reason picked per agent, kept across the re-render every agent event causes.
const view = { queues: new Map(), agents: new Map(), sessions: [], reasons: [], forceReason: new Map() };
const feedStatus = h("span", { id: "feed-status", class: "conn down" }, "connecting…");
const board = h("div", { id: "wallboard", class: "kpi-board" });
const agentsBox = h("div", { id: "agents-box", class: "table-wrap" });
const sessionsBox = h("div", { id: "sessions" });

let reloadTimer = null;
const reloadSoon = () => { clearTimeout(reloadTimer); reloadTimer = setTimeout(() => loadLive().catch(() => {}), 250); };

async function loadLive() {
  const live = await api("GET", "/api/v1/live");
  for (const q of live.queues || []) view.queues.set(q.queue, { ...view.queues.get(q.queue), ...q, at: Date.now() / 1000 });
  view.agents = new Map((live.agents || []).map((a) => [a.agent, a]));
  renderBoard();
  renderAgents();
}

async function loadSessions() {
  view.sessions = await api("GET", "/api/v1/supervision");
  renderSessions();
}

function kpi(label, value, key, alert = false) {
  return h("div", { class: `kpi${alert ? " alert" : ""}`, dataset: { kpi: key } },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value));
}

function renderBoard() {
  const now = Date.now() / 1000;
  const cards = [...view.queues.values()].sort((a, b) => a.queue.localeCompare(b.queue)).map((q) => {
    const longest = q.waiting ? (q.longest_wait_s || 0) + Math.max(0, now - (q.at || now)) : 0;
    const states = Object.entries(q.agents_by_state || {}).map(([s, n]) => h("span", {}, stateBadge(s), ` ${n} `));
    return h("section", { class: "card queue-card", dataset: { queue: q.queue } },
      h("h2", {}, `Queue ${q.queue}`),
      h("div", { class: "kpis" },
        kpi("Waiting", q.waiting ?? 0, "waiting", (q.waiting || 0) > 0),
        kpi("Longest wait", fmtDur(longest), "longest_wait", longest > 60),
        kpi("Service level", fmtPct(q.service_level), "service_level", q.service_level !== null && q.service_level < 0.8),
        kpi("ASA", fmtDur(q.asa_s), "asa"),
        kpi("Offered today", q.offered ?? 0, "offered"),
        kpi("Answered", q.answered ?? 0, "answered"),
        kpi("Abandoned", q.abandoned ?? 0, "abandoned", (q.abandoned || 0) > 0)),
      states.length ? h("p", { class: "muted agents-by-state" }, "Agents: ", states) : null);
  });
  clear(board, cards.length ? cards : h("p", { class: "empty" }, "No queues yet."));
}

function supervise(agent, mode) {
  return (ev) => act(ev.currentTarget, async () => {
    const s = await api("POST", "/api/v1/supervision", { agent, mode });
    toast(`Your phone rings: answer it to ${mode} ${agent}`, "ok");
    view.sessions = [s, ...view.sessions.filter((x) => x.id !== s.id)];
    renderSessions();
  });
}

function force(agent, state) {
  return (ev) => {
    const body = { state };
    if (state === "paused") body.reason = document.getElementById(`force-reason-${agent}`)?.value || "break";
    act(ev.currentTarget, async () => {
      await api("POST", `/api/v1/agents/${encodeURIComponent(agent)}/force`, body);
      reloadSoon();
    }, `${agent}: ${state.replace("_", " ")}`);
  };
}

function renderAgents() {
  const rows = [...view.agents.values()].sort((a, b) => a.agent.localeCompare(b.agent));
  const now = Date.now() / 1000;
  clear(agentsBox, table([
    { key: "agent", label: "Agent" },
    { key: "state", label: "State", fmt: (s, r) => stateBadge(s, r.reason) },
    { key: "since", label: "In state", cls: "num", fmt: (t) => h("span", { class: "tick", dataset: { since: t ?? "" } },
      t ? fmtDur(now - t) : "–") },
    { key: "queue", label: "Queue" },
    { key: "caller", label: "Caller" },
    { key: (r) => r, label: "Live call", fmt: (r) => {
      const live = r.state === "on_call" || r.state === "on_hold";
      return h("div", { class: "buttons" }, ["listen", "whisper", "barge", "takeover"].map((m) =>
        h("button", { class: `small btn-${m}`, disabled: !live, dataset: { agent: r.agent },
          title: live ? `${m} on ${r.agent}'s call` : "no call in progress", on: { click: supervise(r.agent, m) } },
        m === "takeover" ? "Take over" : m[0].toUpperCase() + m.slice(1))));
    } },
    { key: (r) => r, label: "Force", fmt: (r) => h("div", { class: "buttons" },
      h("button", { class: "small btn-force-ready", dataset: { agent: r.agent }, on: { click: force(r.agent, "available") } }, "Ready"),
      h("select", { id: `force-reason-${r.agent}`, class: "small", "aria-label": `pause reason for ${r.agent}`,
        on: { change: (ev) => view.forceReason.set(r.agent, ev.currentTarget.value) } },
        view.reasons.map((p) => h("option", { value: p.code, selected: view.forceReason.get(r.agent) === p.code },
          p.label))),
      h("button", { class: "small btn-force-pause", dataset: { agent: r.agent }, on: { click: force(r.agent, "paused") } }, "Pause"),
      h("button", { class: "small danger btn-force-logout", dataset: { agent: r.agent },
        on: { click: force(r.agent, "logged_out") } }, "Log out")) },
  ], rows, { empty: "No agents known yet.", id: "agents", rowAttrs: (r) => ({ dataset: { agent: r.agent, state: r.state } }) }));
}

function renderSessions() {
  const live = view.sessions.filter((s) => s.status === "ringing" || s.status === "active");
  clear(sessionsBox, h("h2", {}, "Your supervision sessions"), table([
    { key: "agent", label: "Agent" }, { key: "status", label: "Status" }, { key: "mode", label: "Mode" },
    { key: "requested_at", label: "Since", fmt: fmtTime },
    { key: (s) => s, label: "", fmt: (s) => h("div", { class: "buttons" },
      ["listen", "whisper", "barge", "takeover"].filter((m) => m !== s.mode).map((m) => h("button", {
        class: `small btn-mode-${m}`, disabled: s.status !== "active", dataset: { session: s.id },
        on: { click: (ev) => act(ev.currentTarget, async () => {
          const r = await api("PATCH", `/api/v1/supervision/${s.id}`, { mode: m });
          view.sessions = view.sessions.map((x) => (x.id === s.id ? r : x));
          renderSessions();
        }, `Now: ${m}`) } }, m === "takeover" ? "Take over" : m)),
      h("button", { class: "small danger btn-end", dataset: { session: s.id }, on: { click: (ev) => act(ev.currentTarget,
        async () => { await api("DELETE", `/api/v1/supervision/${s.id}`); await loadSessions(); }, "Session ended") } },
      "End")) },
  ], live, { empty: "None: use Listen, Whisper, Barge or Take over on an agent's call.", id: "sessions-table",
    rowAttrs: (s) => ({ dataset: { session: s.id, status: s.status, mode: s.mode } }) }));
}

function renderRecordings(box) {
  const form = h("form", { class: "inline", id: "recordings-form" },
    h("label", {}, "From", h("input", { type: "datetime-local", name: "from" })),
    h("label", {}, "To", h("input", { type: "datetime-local", name: "to" })),
    h("label", {}, "Queue", h("input", { name: "queue", maxlength: "64" })),
    h("label", {}, "Agent", h("input", { name: "agent", maxlength: "64" })),
    h("label", {}, "Caller", h("input", { name: "caller", maxlength: "21", placeholder: "+4930…" })),
    h("button", { type: "submit", class: "primary" }, "Search"));
  const results = h("div", { id: "recordings", class: "table-wrap" });
  const player = h("audio", { id: "player", controls: true, preload: "none" });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (!v) continue;
      q.set(k, k === "from" || k === "to" ? new Date(v).toISOString() : v);
    }
    try {
      const rows = await api("GET", `/api/v1/recordings?${q}`);
      clear(results, table([
        { key: "started_at", label: "Started", fmt: fmtTime }, { key: "queue", label: "Queue" },
        { key: "agent", label: "Agent" }, { key: "caller", label: "Caller" },
        { key: "duration_s", label: "Length", cls: "num", fmt: fmtDur }, { key: "disposition", label: "Code" },
        { key: "pauses", label: "PCI pauses", cls: "num", fmt: (p) => (p || []).length },
        { key: (r) => r, label: "", fmt: (r) => r.status === "finished" || r.ended_at ? h("button", {
          class: "small btn-play", dataset: { recording: r.id }, on: { click: () => {
            player.src = `/api/v1/recordings/${r.id}/audio`;
            player.play().catch(() => {});
          } } }, "Play") : h("span", { class: "muted" }, r.status) },
      ], rows, { empty: "No recordings match." }));
    } catch (err) {
      clear(results, h("p", { class: "form-error" }, err.message));
    }
  });
  box.append(h("section", { class: "card" }, h("h2", {}, "Recordings"), form, player, results));
  form.requestSubmit();
}

function onMessage(m) {
  if (m.type === "queue_realtime") {
    const old = view.queues.get(m.queue) || {};
    view.queues.set(m.queue, { ...old, ...m, at: m.event_ts || Date.now() / 1000 });
    renderBoard();
  } else if (m.type === "agent_state") {
    const a = view.agents.get(m.agent) || { agent: m.agent };
    view.agents.set(m.agent, { ...a, state: m.to_state, since: m.at, reason: m.reason, queue: m.queue ?? a.queue });
    renderAgents();
    reloadSoon();
  }
}

async function start() {
  root.append(h("div", { class: "inline", style: "justify-content: space-between" },
    h("h1", {}, "Supervisor console"), feedStatus));
  tabs(root, [
    { id: "wallboard", label: "Wallboard", render: (box) => {
      box.append(board, h("section", { class: "card" }, h("h2", {}, "Agents"), agentsBox), h("section", { class: "card" }, sessionsBox));
      renderBoard(); renderAgents(); renderSessions();
    } },
    { id: "recordings", label: "Recordings", render: renderRecordings },
  ]);
  view.reasons = await api("GET", "/api/v1/pause-reasons").catch(() => []);
  await Promise.all([loadLive(), loadSessions()]).catch((e) => toast(e.message, "error"));
  connectFeed(onMessage, (up) => {
    feedStatus.className = `conn ${up ? "up" : "down"}`;
    feedStatus.textContent = up ? "live" : "reconnecting…";
    if (up) loadLive().catch(() => {});
  });
  everySecond(() => {
    const now = Date.now() / 1000;
    document.querySelectorAll(".tick").forEach((e) => { if (e.dataset.since) e.textContent = fmtDur(now - Number(e.dataset.since)); });
    if ([...view.queues.values()].some((q) => q.waiting)) renderBoard();
  });
  setInterval(() => loadSessions().catch(() => {}), 3000);
}

start();
