// The agent desktop: state (ready / pause with a reason / log out) with the time in it, the ringing or current
// call with its screen-pop (caller, IVR inputs, earlier calls of that number), hold, blind transfer, PCI pause of
// the recording, the wrap-up code in after-call work. Live over the feed; every action is a REST call.
import {
  act, api, clear, connectFeed, everySecond, fmtDur, fmtTime, h, me, stateBadge, stateLabel, table, toast,
} from "./common.js";
import { mountSoftphone } from "./softphone.js";

const agent = me.agent;
const root = document.getElementById("app");
const view = { state: "logged_out", since: null, reason: null, call: null, pop: null, history: [], reasons: [],
  codes: [], recording: null, disposed: null,
  // What the agent has chosen or typed but not sent yet: a feed event re-renders the page at any moment and
  // must not undo a half-made choice (the wrap-up code picked just before "Save code", a number being typed).
  draft: { code: "", transfer: "", reason: "" } };

const el = {
  state: h("div", { id: "state", class: "state-big" }),
  time: h("div", { id: "state-time", class: "muted" }),
  actions: h("div", { class: "buttons", id: "state-actions" }),
  call: h("section", { id: "call", class: "card callbox" }),
  history: h("section", { class: "card", id: "history-card" }),
  feed: h("span", { id: "feed-status", class: "conn down" }, "connecting…"),
  softphone: h("section", { id: "softphone", class: "card", hidden: true }),  // shown for a browser phone
};

function layout() {
  if (!agent) {
    root.append(h("div", { class: "card" }, h("h1", {}, "No agent linked"),
      h("p", {}, "Your user is not linked to an agent: ask an administrator.")));
    return false;
  }
  root.append(
    h("div", { class: "row" },
      h("section", { class: "card", id: "state-card" },
        h("div", { class: "inline", style: "justify-content: space-between" },
          h("h2", {}, `Agent ${agent}`), el.feed),
        el.state, el.time, el.actions),
      el.call),
    el.softphone,
    el.history);
  return true;
}

async function refresh() {
  const d = await api("GET", `/api/v1/agents/${encodeURIComponent(agent)}/desktop`);
  view.state = d.state.state;
  view.since = d.state.since;
  view.reason = d.state.reason;
  view.reasons = d.pause_reasons;
  view.codes = d.dispositions;
  if (d.call?.linkedid !== view.call?.linkedid) {
    view.disposed = null;
    view.draft.code = "";
    view.draft.transfer = "";
  }
  view.call = d.call;
  view.history = d.history;
  if (!d.call) view.pop = null;
  if (d.call && ["on_call", "on_hold"].includes(view.state)) {
    const r = await api("GET", `/api/v1/agents/${encodeURIComponent(agent)}/recording`).catch(() => null);
    view.recording = r?.recording ?? null;
  } else {
    view.recording = null;
  }
  render();
}

const cmd = (path, body, okMsg) => (ev) => act(ev?.currentTarget, async () => {
  await api("POST", `/api/v1/agents/${encodeURIComponent(agent)}/${path}`, body);
  await refresh();
}, okMsg);

function renderActions() {
  const s = view.state;
  const reasonSelect = h("select", { id: "pause-reason", "aria-label": "Pause reason",
    on: { change: (ev) => { view.draft.reason = ev.currentTarget.value; } } },
    view.reasons.map((r) => h("option", { value: r.code, selected: view.draft.reason === r.code }, r.label)));
  const pause = h("button", { id: "btn-pause", type: "button",
    on: { click: (ev) => cmd("pause", { reason: reasonSelect.value }, "Paused")(ev) } }, "Pause");
  const items = [];
  if (s === "logged_out") items.push(h("button", { id: "btn-login", class: "primary", on: { click: cmd("login") } }, "Log in"));
  if (s === "paused" || s === "acw") items.push(h("button", { id: "btn-ready", class: "primary", on: { click: cmd("ready") } }, "Ready"));
  if (s === "available" || s === "paused") items.push(reasonSelect, pause);
  if (s !== "logged_out") items.push(h("button", { id: "btn-logout", on: { click: cmd("logout") } }, "Log out"));
  clear(el.actions, items);
}

function renderCall() {
  const c = view.call;
  const pop = view.pop && (!c || view.pop.linkedid === c.linkedid) ? view.pop : null;
  el.call.classList.toggle("ringing", view.state === "ringing");
  if (!c && !pop) {
    clear(el.call, h("h2", {}, "Call"), h("p", { class: "empty" },
      view.state === "available" ? "Ready: waiting for the next call." : "No call."));
    return;
  }
  const caller = pop?.caller_number || c?.caller_number || "withheld";
  const inputs = Object.entries(pop?.ivr_inputs || {});
  const body = [
    h("h2", {}, view.state === "ringing" ? "Incoming call" : view.state === "acw" ? "Wrap-up" : "Current call"),
    h("dl", { class: "facts" },
      h("dt", {}, "Caller"), h("dd", { id: "call-caller" }, caller),
      pop?.caller_name && pop.caller_name !== caller && !/^<.*>$/.test(pop.caller_name) ? [h("dt", {}, "Name"), h("dd", {}, pop.caller_name)] : null,
      h("dt", {}, "Queue"), h("dd", { id: "call-queue" }, pop?.queue || c?.queue || "–"),
      h("dt", {}, "Since"), h("dd", {}, fmtTime(view.since))),
    inputs.length ? h("div", { id: "ivr-inputs" }, h("h3", {}, "Entered in the IVR"),
      h("dl", { class: "facts" }, inputs.map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { input: k } }, v)]))) : null,
  ];
  const buttons = [];
  if (view.state === "on_call") buttons.push(h("button", { id: "btn-hold", on: { click: cmd("hold", undefined, "Caller on hold") } }, "Hold"));
  if (view.state === "on_hold") buttons.push(h("button", { id: "btn-unhold", class: "primary", on: { click: cmd("unhold") } }, "Resume call"));
  if (["on_call", "on_hold"].includes(view.state)) {
    const to = h("input", { id: "transfer-to", placeholder: "extension or number", inputmode: "tel", maxlength: "20",
      pattern: "[0-9]{2,20}", "aria-label": "Transfer to", value: view.draft.transfer,
      on: { input: (ev) => { view.draft.transfer = ev.currentTarget.value; } } });
    buttons.push(to, h("button", { id: "btn-transfer", on: { click: (ev) => {
      if (!/^[0-9]{2,20}$/.test(to.value)) { toast("Transfer to: 2 to 20 digits", "error"); return; }
      cmd("transfer", { to: to.value }, `Transferred to ${to.value}`)(ev);
    } } }, "Blind transfer"));
    const rec = view.recording;
    if (rec) {
      const paused = rec.paused || rec.state === "paused";
      buttons.push(h("button", { id: "btn-pci", class: paused ? "danger" : "", on: { click: (ev) => act(ev.currentTarget,
        async () => {
          const r = await api("POST", `/api/v1/agents/${encodeURIComponent(agent)}/recording`,
            { action: paused ? "resume" : "pause" });
          view.recording = r.recording;
          render();
        }, paused ? "Recording resumed" : "Recording paused for card details") } },
      paused ? "Resume recording" : "PCI pause recording"));
      buttons.push(h("span", { id: "rec-state", class: `badge ${paused ? "state-paused" : "state-on_call"}` },
        paused ? "recording paused" : "recording"));
    }
  }
  if (["on_call", "on_hold", "acw"].includes(view.state) && view.codes.length) {
    const chosen = view.draft.code || view.disposed;
    const sel = h("select", { id: "disposition", "aria-label": "Wrap-up code",
      on: { change: (ev) => { view.draft.code = ev.currentTarget.value; } } },
      h("option", { value: "" }, "Wrap-up code…"), view.codes.map((d) => h("option", { value: d.code,
        selected: chosen === d.code }, d.label)));
    buttons.push(sel, h("button", { id: "btn-disposition", on: { click: (ev) => {
      if (!sel.value) { toast("Choose a wrap-up code", "error"); return; }
      act(ev.currentTarget, async () => {
        await api("POST", `/api/v1/agents/${encodeURIComponent(agent)}/disposition`, { code: sel.value });
        view.disposed = sel.value;
        view.draft.code = "";
        render();
      }, "Wrap-up code saved");
    } } }, "Save code"));
    if (view.disposed) buttons.push(h("span", { id: "disposed", class: "badge state-available" }, `code: ${view.disposed}`));
  }
  clear(el.call, body, h("div", { class: "buttons" }, buttons));
}

function renderHistory() {
  clear(el.history, h("h2", {}, "Earlier calls from this number"),
    view.call || view.pop ? table([
      { key: "entered_at", label: "When", fmt: fmtTime }, { key: "queue", label: "Queue" },
      { key: "outcome", label: "Outcome" }, { key: "agent", label: "Agent" },
      { key: "talk_s", label: "Talk", fmt: fmtDur, cls: "num" }, { key: "disposition", label: "Code" },
    ], view.history, { empty: "No earlier calls from this number.", id: "history" })
      : h("p", { class: "empty" }, "Shown when a call comes in."));
}

function tickTime() {
  el.time.textContent = view.since ? `${stateLabel(view.state)} for ${fmtDur(Date.now() / 1000 - view.since)}` : "";
}

function render() {
  const focused = document.activeElement?.id;
  clear(el.state, stateBadge(view.state, view.reason));
  tickTime();
  el.state.dataset.state = view.state;
  renderActions();
  renderCall();
  renderHistory();
  // The re-rendered input or select is a new element: give the keyboard back to the one the agent was using.
  const again = focused && focused !== "app" ? document.getElementById(focused) : null;
  if (again && ["INPUT", "SELECT"].includes(again.tagName)) again.focus();
}

function onMessage(m) {
  if (m.agent !== agent) return;
  if (m.type === "screen_pop") {
    view.pop = m;
    renderCall();
    refresh().catch(() => {});
  } else if (m.type === "agent_state") {
    view.state = m.to_state;
    view.since = m.at;
    view.reason = m.reason;
    render();
    refresh().catch(() => {});
  }
}

if (layout()) {
  render();
  refresh().catch((e) => toast(e.message, "error"));
  connectFeed(onMessage, (up) => {
    el.feed.className = `conn ${up ? "up" : "down"}`;
    el.feed.textContent = up ? "live" : "reconnecting…";
    if (up) refresh().catch(() => {});
  });
  everySecond(tickTime);
  mountSoftphone(el.softphone, agent).catch((e) => toast(`Browser phone: ${e.message}`, "error"));
}
