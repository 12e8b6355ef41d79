// Shared helpers of every page: the API client (session cookie + CSRF header), DOM building, the live feed
// with reconnects, formatting, tables, forms that show the server's problems next to their fields.

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
export const me = { user: meta("ccpbx-user"), role: meta("ccpbx-role"), agent: meta("ccpbx-agent") || null };
const csrf = meta("csrf-token");

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `request failed (${status})`);
    this.status = status;
    this.code = body?.error || "error";
    this.problems = Array.isArray(body?.problems) ? body.problems : [];
    this.body = body;
  }
}

/** Call the REST API as the signed-in user. JSON in and out; a non-2xx answer throws ApiError. */
export async function api(method, path, body, { raw = false, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrf;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) {
    toast("Your session has ended: sign in again.", "error");
    setTimeout(() => { location.href = `/login?next=${encodeURIComponent(location.pathname)}`; }, 1500);
  }
  if (raw && resp.ok) return resp;
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

/** h("div", {class: "x", on: {click: f}}, "text", child) — children may be strings, nodes, arrays, null. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) { el.replaceChildren(); append(el, children); return el; }

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const t = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

/** Run an action from a button: disables it meanwhile, shows the server's message on failure. */
export async function act(button, fn, okMessage) {
  if (button) button.disabled = true;
  try {
    const r = await fn();
    if (okMessage) toast(okMessage, "ok");
    return r;
  } catch (err) {
    toast(err instanceof ApiError ? err.message : String(err), "error");
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** The live feed over a WebSocket (the session cookie authenticates it); reconnects with backoff. */
export function connectFeed(onMessage, onStatus = () => {}) {
  let delay = 500;
  let closedByUs = false;
  let ws;
  const open = () => {
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/feed`);
    ws.onopen = () => { delay = 500; onStatus(true); };
    ws.onmessage = (ev) => { try { onMessage(JSON.parse(ev.data)); } catch (e) { console.error(e); } };
    ws.onclose = () => {
      onStatus(false);
      if (!closedByUs) setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  open();
  return { close() { closedByUs = true; ws?.close(); } };
}

export function fmtDur(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return hh ? `${hh}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
}

export function fmtPct(rate) {
  return rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(1)} %`;
}

export function fmtNum(x, digits = 1) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

/** A time as local HH:MM:SS (epoch seconds or ISO text), with the date when it is not today. */
export function fmtTime(t) {
  if (t === null || t === undefined || t === "") return "–";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

export const stateLabel = (s) => ({
  logged_out: "Logged out", available: "Ready", ringing: "Ringing", on_call: "On call", on_hold: "On hold",
  acw: "After-call work", paused: "Paused",
}[s] || s || "–");

export function stateBadge(state, reason) {
  return h("span", { class: `badge state-${state || "unknown"}` }, stateLabel(state), reason ? ` · ${reason}` : "");
}

/** A table: columns [{key, label, fmt?(value,row), cls?}], rows; `empty` text when there are none. */
export function table(columns, rows, { empty = "Nothing here yet.", id, rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("table", { class: "grid", id },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.cls }, c.label)))),
    h("tbody", {}, rows.map((r) => h("tr", rowAttrs ? rowAttrs(r) : {},
      columns.map((c) => {
        const v = typeof c.key === "function" ? c.key(r) : r[c.key];
        const shown = c.fmt ? c.fmt(v, r) : (v === null || v === undefined || v === "" ? "–" : v);
        return h("td", { class: c.cls }, shown);
      })))));
}

/** Show an ApiError on a form: the message on top, each problem next to the input named by its field. */
export function showProblems(form, err) {
  form.querySelectorAll(".field-error").forEach((e) => e.remove());
  form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
  const top = h("p", { class: "field-error form-error", role: "alert" },
    err instanceof ApiError ? err.message : String(err));
  form.prepend(top);
  for (const p of err?.problems || []) {
    const field = String(p.field || "").split(".")[0];
    const input = field && form.querySelector(`[name="${CSS.escape(field)}"]`);
    if (input) {
      input.classList.add("invalid");
      input.closest("label")?.append(h("span", { class: "field-error" }, p.message));
    }
  }
}

export function clearProblems(form) {
  form.querySelectorAll(".field-error").forEach((e) => e.remove());
  form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
}

/** Tabs: [{id, label, render(container)}]; the chosen tab is kept in the URL hash. */
export function tabs(root, items) {
  const bar = h("nav", { class: "tabs", role: "tablist" });
  const body = h("section", { class: "tab-body" });
  const show = (id) => {
    const item = items.find((i) => i.id === id) || items[0];
    bar.querySelectorAll("button").forEach((b) => b.classList.toggle("active", b.dataset.tab === item.id));
    history.replaceState(null, "", `#${item.id}`);
    clear(body);
    item.render(body);
  };
  for (const i of items) bar.append(h("button", { type: "button", role: "tab", dataset: { tab: i.id },
    on: { click: () => show(i.id) } }, i.label));
  root.append(bar, body);
  show(location.hash.slice(1));
  return { show };
}

/** A ticking clock for "time in state" figures: calls fn every second while the page is open. */
export function everySecond(fn) { fn(); return setInterval(fn, 1000); }
