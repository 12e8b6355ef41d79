// The admin pages: one tab per configuration resource (a table of the rows and a create/edit form built from a
// per-resource field spec), business hours & holidays (they live on the IVR's time_condition nodes), prompts,
// users, and the visual IVR flow editor (flow_editor.js). Every write goes through the REST API, so the server's
// checks apply: a 422 shows each problem next to its field, a 409 its message on top of the form.
import { ApiError, act, api, clear, clearProblems, h, showProblems, table, tabs, toast } from "./common.js";
import { renderFlows } from "./flow_editor.js";

const root = document.getElementById("app");
const enc = encodeURIComponent;

// ------------------------------------------------------------------ field specs
// A field: {name, label, type: text|number|select|checkbox|skills|escalation, ref?: resource whose keys are the
// choices, options?: static choices, optional?: a "none" choice (null), nullable?: empty number = null,
// createOnly?: the key (not editable), hint?}
const STRATEGIES = ["ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom"];
const NAME_HINT = "lower-case letters, digits, _ and -";

// partial: PUT takes only the fields sent (an update model) and never the key; otherwise PUT is a full
// replacement whose key must match the path (acd/config_store.py).
const RESOURCES = {
  agents: {
    label: "Agents", one: "agent", key: "name", partial: true,
    fields: [
      { name: "name", label: "Name", type: "text", createOnly: true, hint: NAME_HINT },
      { name: "display_name", label: "Display name", type: "text" },
      { name: "phone", label: "Phone", type: "select", ref: "phones", optional: true },
      { name: "team", label: "Team", type: "select", ref: "teams", optional: true },
      { name: "skills", label: "Skills (level 1 novice … 5 expert)", type: "skills" },
    ],
    columns: [
      { key: "name", label: "Name" }, { key: "display_name", label: "Display name" },
      { key: "phone", label: "Phone" }, { key: "team", label: "Team" },
      { key: "skills", label: "Skills", fmt: (v) => fmtSkills(v) },
    ],
  },
  phones: {
    label: "Phones", one: "phone", key: "name",
    fields: [
      { name: "name", label: "Name (SIP user)", type: "text", createOnly: true, hint: NAME_HINT },
      { name: "kind", label: "Kind", type: "select", options: ["agent", "supervisor"] },
      { name: "webrtc", label: "Browser phone (WebRTC)", type: "checkbox" },
    ],
    columns: [{ key: "name", label: "Name (SIP user)" }, { key: "kind", label: "Kind" },
      { key: "webrtc", label: "Browser phone", fmt: yesNo }],
  },
  skills: {
    label: "Skills", one: "skill", key: "name", noEdit: true,
    fields: [{ name: "name", label: "Name", type: "text", createOnly: true, hint: NAME_HINT }],
    columns: [{ key: "name", label: "Name" }],
  },
  teams: {
    label: "Teams", one: "team", key: "name", noEdit: true,
    fields: [{ name: "name", label: "Name", type: "text", createOnly: true, hint: NAME_HINT }],
    columns: [{ key: "name", label: "Name" }],
  },
  queues: {
    label: "Queues", one: "queue", key: "name", partial: true,
    fields: [
      { name: "name", label: "Name", type: "text", createOnly: true, hint: NAME_HINT },
      { name: "strategy", label: "Ring strategy", type: "select", options: STRATEGIES, default: "rrmemory" },
      { name: "required_skill", label: "Required skill", type: "select", ref: "skills", optional: true },
      { name: "sl_threshold_s", label: "Service-level threshold (s)", type: "number", default: 20 },
      { name: "ring_timeout_s", label: "Ring timeout (s)", type: "number", default: 15 },
      { name: "max_wait_s", label: "Max wait (s, empty = none)", type: "number", nullable: true },
      { name: "max_len", label: "Max callers (0 = no limit)", type: "number", default: 0 },
      { name: "overflow_queue", label: "Overflow queue", type: "select", ref: "queues", optional: true },
      { name: "wrapup_s", label: "Wrap-up (s)", type: "number", default: 0 },
      { name: "recording", label: "Recording", type: "select", options: ["all", "on_demand", "none"], default: "all" },
      { name: "recording_retention_days", label: "Keep recordings (days)", type: "number", default: 90 },
      { name: "announce_position", label: "Announce position", type: "checkbox" },
      { name: "announce_holdtime", label: "Announce hold time", type: "checkbox" },
      { name: "callback_enabled", label: "Callers may ask for a callback", type: "checkbox" },
      { name: "escalation", label: "Skill escalation (after s → minimum level)", type: "escalation" },
    ],
    columns: [
      { key: "name", label: "Name" }, { key: "strategy", label: "Strategy" },
      { key: "required_skill", label: "Skill" },
      { key: "escalation", label: "Escalation", fmt: (v) => (v || []).map((s) => `${s.after_s}s→L${s.min_level}`).join(", ") || "–" },
      { key: "sl_threshold_s", label: "SL s", cls: "num" }, { key: "ring_timeout_s", label: "Ring s", cls: "num" },
      { key: "max_wait_s", label: "Max wait", cls: "num" }, { key: "overflow_queue", label: "Overflow" },
      { key: "wrapup_s", label: "Wrap-up", cls: "num" }, { key: "recording", label: "Recording" },
      { key: "callback_enabled", label: "Callback", fmt: yesNo },
    ],
  },
  routes: {
    label: "Inbound routes", one: "route", key: "did",
    fields: [
      { name: "did", label: "DID (dialled number)", type: "text", createOnly: true, hint: "1-20 digits" },
      { name: "queue", label: "Queue", type: "select", ref: "queues", optional: true },
      { name: "ivr_flow", label: "IVR flow", type: "select", ref: "flows", optional: true, hint: "or a queue, not both" },
    ],
    columns: [{ key: "did", label: "DID" }, { key: "queue", label: "Queue" }, { key: "ivr_flow", label: "IVR flow" }],
    note: "Each DID goes to exactly one queue or one IVR flow (its published version).",
  },
  "pause-reasons": {
    label: "Pause reasons", one: "pause reason", key: "code",
    fields: [
      { name: "code", label: "Code", type: "text", createOnly: true, hint: "lower-case letters, digits, _ and - (max 32)" },
      { name: "label", label: "Label", type: "text" },
    ],
    columns: [{ key: "code", label: "Code" }, { key: "label", label: "Label" }],
  },
  dispositions: {
    label: "Dispositions", one: "disposition", key: "code",
    fields: [
      { name: "code", label: "Code", type: "text", createOnly: true, hint: "lower-case letters, digits, _ and - (max 32)" },
      { name: "label", label: "Label", type: "text" },
    ],
    columns: [{ key: "code", label: "Code" }, { key: "label", label: "Label" }],
  },
  "vip-callers": {
    label: "VIP callers", one: "VIP caller", key: "number",
    fields: [
      { name: "number", label: "Number", type: "text", createOnly: true, hint: "+ and 2-20 digits" },
      { name: "priority", label: "Queue priority (1-100)", type: "number", default: 10 },
    ],
    columns: [{ key: "number", label: "Number" }, { key: "priority", label: "Priority", cls: "num" }],
  },
  users: {
    label: "Users", one: "user", key: "name",
    fields: [
      { name: "name", label: "User name", type: "text", createOnly: true, hint: "lower-case letters, digits, ., _ and -" },
      { name: "role", label: "Role", type: "select", options: ["agent", "supervisor", "admin"] },
      { name: "agent", label: "Agent", type: "select", ref: "agents", optional: true, hint: "required for role agent" },
      { name: "team", label: "Team", type: "select", ref: "teams", optional: true, hint: "a supervisor sees this team only" },
      { name: "phone", label: "Own phone", type: "select", ref: "phones", optional: true, hint: "supervision sessions ring it" },
    ],
    columns: [
      { key: "name", label: "User" }, { key: "role", label: "Role" }, { key: "agent", label: "Agent" },
      { key: "team", label: "Team" }, { key: "phone", label: "Phone" },
    ],
  },
};

function yesNo(v) { return v ? "yes" : "no"; }
function fmtSkills(v) {
  const e = Object.entries(v || {});
  return e.length ? e.map(([s, l]) => `${s} ${l}`).join(", ") : "–";
}

// ------------------------------------------------------------------ lookups (choices of select fields)
async function keysOf(path) {
  if (path === "flows") return (await api("GET", "/api/v1/flows")).map((f) => f.name);
  const key = RESOURCES[path]?.key || "name";
  return (await api("GET", `/api/v1/${path}`)).map((r) => r[key]);
}

async function lookups(spec) {
  const refs = new Set(spec.fields.filter((f) => f.ref).map((f) => f.ref));
  if (spec.fields.some((f) => f.type === "skills" || f.type === "escalation")) refs.add("skills");
  const out = {};
  await Promise.all([...refs].map(async (r) => { out[r] = await keysOf(r).catch(() => []); }));
  return out;
}

// ------------------------------------------------------------------ form building and reading
function fieldInput(f, value, choices) {
  const id = `f-${f.name}`;
  if (f.type === "checkbox") {
    return h("label", { class: "check" }, h("input", { type: "checkbox", name: f.name, id, checked: !!value }), f.label);
  }
  if (f.type === "select") {
    const opts = f.options || choices[f.ref] || [];
    const cur = value ?? (f.optional ? "" : f.default ?? opts[0]);
    const all = [...opts];
    if (cur && !all.includes(cur)) all.push(cur);
    return h("label", {}, f.label,
      h("select", { name: f.name, id },
        f.optional ? h("option", { value: "" }, "— none —") : null,
        all.map((o) => h("option", { value: o, selected: o === cur }, o))),
      f.hint ? h("span", { class: "hint" }, f.hint) : null);
  }
  if (f.type === "skills") return skillsEditor(f, value || {}, choices.skills || []);
  if (f.type === "escalation") return escalationEditor(f, value || []);
  return h("label", {}, f.label,
    h("input", { name: f.name, id, type: f.type === "number" ? "number" : "text", autocomplete: "off",
      value: value ?? (f.type === "number" && f.default !== undefined ? String(f.default) : "") }),
    f.hint ? h("span", { class: "hint" }, f.hint) : null);
}

/** skill -> level rows; the hidden input named like the field receives the server's problems. */
function skillsEditor(f, value, skills) {
  const rows = h("div", { class: "map-rows" });
  const addRow = (skill = "", level = 3) => {
    const all = skill && !skills.includes(skill) ? [...skills, skill] : skills;
    rows.append(h("div", { class: "map-row" },
      h("select", { class: "skill-name", "aria-label": "skill" }, h("option", { value: "" }, "— skill —"),
        all.map((s) => h("option", { value: s, selected: s === skill }, s))),
      h("select", { class: "skill-level", "aria-label": "level" },
        [1, 2, 3, 4, 5].map((l) => h("option", { value: String(l), selected: l === level }, `level ${l}`))),
      h("button", { type: "button", class: "small", title: "remove", on: { click: (e) => e.currentTarget.parentElement.remove() } }, "✕")));
  };
  for (const [s, l] of Object.entries(value)) addRow(s, l);
  return h("label", { class: "wide", dataset: { kind: "skills" } }, f.label,
    h("input", { type: "hidden", name: f.name }), rows,
    h("span", {}, h("button", { type: "button", class: "small add-skill", on: { click: () => addRow() } },
      skills.length ? "+ skill" : "+ skill (create skills first)")));
}

function escalationEditor(f, value) {
  const rows = h("div", { class: "map-rows" });
  const addRow = (after = "", level = 1) => {
    rows.append(h("div", { class: "map-row" },
      h("span", { class: "muted" }, "after"),
      h("input", { type: "number", class: "esc-after", value: String(after), "aria-label": "after seconds", min: "0" }),
      h("span", { class: "muted" }, "s, level ≥"),
      h("select", { class: "esc-level", "aria-label": "minimum level" },
        [1, 2, 3, 4, 5].map((l) => h("option", { value: String(l), selected: l === level }, String(l)))),
      h("button", { type: "button", class: "small", title: "remove", on: { click: (e) => e.currentTarget.parentElement.remove() } }, "✕")));
  };
  for (const s of value) addRow(s.after_s, s.min_level);
  return h("label", { class: "wide", dataset: { kind: "escalation" } }, f.label,
    h("input", { type: "hidden", name: f.name }), rows,
    h("span", {}, h("button", { type: "button", class: "small", on: { click: () => addRow() } }, "+ step")));
}

function num(raw) {
  const n = Number(raw);
  return raw !== "" && Number.isFinite(n) ? n : raw; // a non-number goes as typed: the server names the field
}

function readForm(form, spec, editing) {
  const body = {};
  for (const f of spec.fields) {
    if (editing && f.createOnly && spec.partial) continue;
    if (editing && f.createOnly) { body[f.name] = editing[f.name]; continue; }
    const el = form.elements[f.name];
    if (f.type === "checkbox") body[f.name] = el.checked;
    else if (f.type === "skills") {
      const skills = {};
      for (const row of el.closest("label").querySelectorAll(".map-row")) {
        const s = row.querySelector(".skill-name").value;
        if (s) skills[s] = Number(row.querySelector(".skill-level").value);
      }
      body[f.name] = skills;
    } else if (f.type === "escalation") {
      body[f.name] = [...el.closest("label").querySelectorAll(".map-row")].map((row) => ({
        after_s: num(row.querySelector(".esc-after").value), min_level: Number(row.querySelector(".esc-level").value),
      }));
    } else if (f.type === "number") {
      const v = el.value.trim();
      if (v === "") { if (f.nullable) body[f.name] = null; } else body[f.name] = num(v);
    } else if (f.type === "select") {
      body[f.name] = el.value === "" ? null : el.value;
    } else {
      body[f.name] = el.value.trim();
    }
  }
  return body;
}

// ------------------------------------------------------------------ a config tab
function configTab(path) {
  const spec = RESOURCES[path];
  return async (container) => {
    const formCard = h("section", { class: "card", id: `form-card-${path}` });
    const listCard = h("section", { class: "card" });
    container.append(formCard, listCard);
    let choices = {};
    let rows = [];

    const showForm = (editing = null, secret = null) => {
      const fields = spec.fields.filter((f) => !(editing && f.createOnly));
      const form = h("form", { id: `form-${path}`, class: "config-form", novalidate: true });
      form.append(
        h("div", { class: "form-grid" }, fields.map((f) => fieldInput(f, editing ? editing[f.name] : undefined, choices))),
        h("div", { class: "buttons" },
          h("button", { type: "submit", class: "primary" }, editing ? "Save changes" : `Create ${spec.one}`),
          editing ? h("button", { type: "button", on: { click: () => showForm() } }, "Cancel") : null));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        clearProblems(form);
        const body = readForm(form, spec, editing);
        const btn = form.querySelector("button[type=submit]");
        btn.disabled = true;
        try {
          const out = editing
            ? await api("PUT", `/api/v1/${path}/${enc(editing[spec.key])}`, body)
            : await api("POST", `/api/v1/${path}`, body);
          toast(editing ? `Saved ${spec.one} ${out[spec.key]}.` : `Created ${spec.one} ${out[spec.key]}.`, "ok");
          await reload();
          showForm(null, editing ? null : await secretFor(path, out));
        } catch (err) {
          showFormProblems(form, err);
        } finally {
          btn.disabled = false;
        }
      });
      clear(formCard,
        h("h2", {}, editing ? `Edit ${spec.one} ${editing[spec.key]}` : `New ${spec.one}`),
        spec.note ? h("p", { class: "muted" }, spec.note) : null,
        secret, form);
      if (editing) formCard.scrollIntoView({ block: "nearest" });
    };

    const actions = (row) => {
      const key = row[spec.key];
      return h("span", { class: "row-actions" },
        spec.noEdit ? null : h("button", { type: "button", class: "small", on: { click: () => showForm(row) } }, "Edit"),
        path === "phones" ? h("button", { type: "button", class: "small", on: { click: (ev) => act(ev.currentTarget, async () => {
          const out = await api("POST", `/api/v1/phones/${enc(key)}/password`);
          showForm(null, await secretFor("phones", out, true));
        }) } }, "New password") : null,
        path === "users" ? h("button", { type: "button", class: "small", on: { click: () => passwordForm(formCard, key, () => showForm()) } }, "Set password") : null,
        h("button", { type: "button", class: "small danger", on: { click: (ev) => {
          if (!confirm(`Delete ${spec.one} ${key}?`)) return;
          act(ev.currentTarget, async () => {
            await api("DELETE", `/api/v1/${path}/${enc(key)}`);
            await reload();
          }, `Deleted ${spec.one} ${key}.`);
        } } }, "Delete"));
    };

    const reload = async () => {
      [rows, choices] = await Promise.all([api("GET", `/api/v1/${path}`), lookups(spec)]);
      clear(listCard, h("h2", {}, `${spec.label} `, h("span", { class: "muted count" }, `(${rows.length})`)),
        h("div", { class: "table-wrap" }, table([...spec.columns, { key: () => "", label: "", cls: "actions", fmt: (_, r) => actions(r) }],
          rows, { id: `table-${path}`, empty: `No ${spec.label.toLowerCase()} yet.`, rowAttrs: (r) => ({ dataset: { key: r[spec.key] } }) })));
    };

    try {
      await reload();
    } catch (err) {
      clear(listCard, h("p", { class: "form-error" }, err.message));
    }
    showForm();
  };
}

/** showProblems, plus problems of composite editors (skills, escalation) and of the whole body (field null). */
function showFormProblems(form, err) {
  showProblems(form, err);
  if (!(err instanceof ApiError) || err.status !== 422) return;
  for (const p of err.problems) {
    if (!p.field) continue;
    const el = form.querySelector(`[name="${CSS.escape(String(p.field).split(".")[0])}"]`);
    if (!el) form.querySelector(".form-error")?.append(h("br"), `${p.field}: ${p.message}`);
  }
}

async function secretFor(path, out, rotated = false) {
  if (path === "phones" && out.password) {
    let sip = null;
    try { sip = await api("GET", "/api/v1/sip-info"); } catch { sip = null; }
    const loopback = !sip?.host || ["127.0.0.1", "::1", "localhost", "0.0.0.0"].includes(sip.host);
    const host = loopback ? location.hostname : sip.host;
    const server = sip ? `${host}:${sip.port}` : `${location.hostname} (SIP port: see ccpbx-ctl softphone)`;
    return secretBox(`${rotated ? "New softphone password" : "Softphone credentials"} for ${out.name}`, [
      ["SIP user", out.name], ["Password", out.password], ["Server", server],
      ["Transport", sip ? sip.transport.toUpperCase() : "UDP"], ["Codec", sip ? sip.codec : "G.711 u-law"],
    ]);
  }
  if (path === "users" && out.token) {
    return secretBox(`API token of ${out.name}`, [["Bearer token", out.token]],
      "Use “Set password” to let the user sign in to the web pages.");
  }
  return null;
}

function secretBox(title, pairs, extra = "") {
  const box = h("div", { class: "secret-card", role: "status" },
    h("h3", {}, title),
    h("p", { class: "muted" }, "Shown only now: copy it before you leave this page. ", extra),
    h("dl", { class: "facts secret" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { secret: k } }, v)])),
    h("button", { type: "button", class: "small", on: { click: () => box.remove() } }, "I have noted it"));
  return box;
}

function passwordForm(card, user, done) {
  const form = h("form", { id: "form-password", novalidate: true },
    h("div", { class: "inline" },
      h("label", {}, "New password", h("input", { type: "password", name: "password", autocomplete: "new-password" })),
      h("button", { type: "submit", class: "primary" }, "Set password"),
      h("button", { type: "button", on: { click: done } }, "Cancel")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearProblems(form);
    try {
      await api("PUT", `/api/v1/users/${enc(user)}/password`, { password: form.elements.password.value });
      toast(`Password set for ${user}; their sessions ended.`, "ok");
      done();
    } catch (err) {
      showProblems(form, err);
    }
  });
  clear(card, h("h2", {}, `Set the sign-in password of ${user}`), form);
  form.elements.password.focus();
}

// ------------------------------------------------------------------ business hours & holidays
const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

async function hoursTab(container, tabsCtl) {
  const card = h("section", { class: "card" },
    h("h2", {}, "Business hours & holidays"),
    h("p", {}, "Opening hours and holidays are set on the IVR flows’ ", h("strong", {}, "time condition"),
      " nodes: each has its time zone, weekly hours and holiday dates, and sends the call on to its open, closed or holiday branch. ",
      "Below is every time condition of the published flows; edit one in the flow editor, then publish the flow."));
  const list = h("div", { id: "hours-list" }, h("p", { class: "muted" }, "Loading…"));
  container.append(card, h("section", { class: "card" }, list));
  const flows = await api("GET", "/api/v1/flows");
  const found = [];
  for (const f of flows) {
    if (!f.published_version) continue;
    const v = await api("GET", `/api/v1/flows/${enc(f.name)}/versions/${f.published_version}`);
    for (const [id, node] of Object.entries(v.document.nodes || {})) {
      if (node.type === "time_condition") found.push({ flow: f.name, version: f.published_version, id, node });
    }
  }
  const fmtHours = (hours) => h("div", {}, DAYS.map((d) => {
    const spans = hours?.[d];
    return h("div", { class: "hours-day" }, h("span", { class: "day" }, d), " ",
      spans?.length ? spans.map(([a, b]) => `${a}–${b}`).join(", ") : h("span", { class: "muted" }, "closed"));
  }));
  clear(list, h("h2", {}, "Time conditions in published flows"),
    table([
      { key: "flow", label: "Flow", fmt: (v, r) => `${v} (v${r.version})` },
      { key: "id", label: "Node" },
      { key: (r) => r.node.timezone, label: "Time zone" },
      { key: (r) => r.node.hours, label: "Weekly hours", fmt: fmtHours },
      { key: (r) => r.node.holidays, label: "Holidays", fmt: (v) => (v?.length ? v.join(", ") : "–") },
      { key: (r) => r.node, label: "Branches", fmt: (n) => `open → ${n.open}, closed → ${n.closed}${n.holiday ? `, holiday → ${n.holiday}` : ""}` },
      { key: () => "", label: "", fmt: (_, r) => h("button", { type: "button", class: "small", on: { click: () => {
        pendingFlow = { flow: r.flow, node: r.id };
        tabsCtl.show("flows");
      } } }, "Edit in flow editor") },
    ], found, { id: "table-hours", empty: "No published flow has a time condition yet: add one in the IVR flow editor." }));
}

// ------------------------------------------------------------------ prompts
async function promptsTab(container) {
  const listCard = h("section", { class: "card" });
  const nameIn = h("input", { name: "name", id: "prompt-name", placeholder: "e.g. welcome", autocomplete: "off" });
  const fileIn = h("input", { type: "file", name: "file", id: "prompt-file", accept: "audio/wav,audio/x-wav,audio/mpeg,.wav,.mp3" });
  const preview = h("audio", { controls: true, id: "prompt-preview", hidden: true });
  fileIn.addEventListener("change", () => {
    const file = fileIn.files[0];
    if (preview.src) URL.revokeObjectURL(preview.src);
    if (!file) { preview.hidden = true; return; }
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    if (!nameIn.value) nameIn.value = file.name.replace(/\.[^.]*$/, "").toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^[^a-z0-9]+/, "").slice(0, 64);
  });
  const form = h("form", { id: "form-prompts", novalidate: true },
    h("div", { class: "form-grid" }, h("label", {}, "Prompt name", nameIn), h("label", { class: "file-label" }, "WAV or MP3 file (up to 10 MB)", fileIn)),
    h("div", { class: "buttons" }, preview), h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Upload")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearProblems(form);
    const file = fileIn.files[0];
    if (!file) { showProblems(form, new Error("Choose a WAV or MP3 file.")); return; }
    const btn = form.querySelector("button[type=submit]");
    btn.disabled = true;
    try {
      const out = await api("PUT", `/api/v1/prompts/${enc(nameIn.value.trim())}`, file,
        { headers: { "Content-Type": file.type || "application/octet-stream" } });
      toast(`Uploaded: flows play it as ${out.flow_name}.`, "ok");
      form.reset();
      preview.hidden = true;
      await reload();
    } catch (err) {
      showProblems(form, err);
      if (err instanceof ApiError && err.code === "invalid_name") nameIn.classList.add("invalid");
    } finally {
      btn.disabled = false;
    }
  });
  const reload = async () => {
    const rows = await api("GET", "/api/v1/prompts");
    clear(listCard, h("h2", {}, "Uploaded prompts ", h("span", { class: "muted count" }, `(${rows.length})`)),
      h("p", { class: "muted" }, "Flows play an uploaded prompt as custom/<name>; stock Asterisk sounds (hello-world, beep, …) work by their names. ",
        "The service keeps them as 8 kHz mono WAV; it has no endpoint to play them back here, so the preview above plays the file you chose."),
      table([
        { key: "name", label: "Name" }, { key: "flow_name", label: "Name in flows" },
        { key: "duration_s", label: "Length", cls: "num", fmt: (v) => `${Number(v).toFixed(1)} s` },
        { key: "size", label: "Size", cls: "num", fmt: (v) => `${(v / 1024).toFixed(0)} KiB` },
        { key: () => "", label: "", fmt: (_, r) => h("button", { type: "button", class: "small danger", on: { click: (e) => {
          if (!confirm(`Delete prompt ${r.name}? Flows that play it will fail validation checks on playback.`)) return;
          act(e.currentTarget, async () => { await api("DELETE", `/api/v1/prompts/${enc(r.name)}`); await reload(); }, `Deleted ${r.name}.`);
        } } }, "Delete") },
      ], rows, { id: "table-prompts", empty: "No prompts uploaded yet." }));
  };
  container.append(h("section", { class: "card" }, h("h2", {}, "Upload a prompt"), form), listCard);
  await reload();
}

// ------------------------------------------------------------------ SIP security: blocked sources
async function bansTab(container) {
  const box = h("div", { id: "bans" });
  const showAll = h("input", { type: "checkbox", id: "bans-all" });
  const load = async () => {
    const out = await api("GET", `/api/v1/security/bans${showAll.checked ? "?all=true" : ""}`);
    const g = out.guard || {};
    clear(box,
      h("p", { class: "muted" }, `Sources with ${g.threshold} failed SIP sign-ins within ${g.window_s} s are blocked `
        + `for ${g.ban_s} s (${g.blocker}${g.ready ? "" : ", not enforcing"}). Banned now: ${g.banned_now ?? 0}.`),
      table([
        { key: "address", label: "Source" }, { key: "banned_at", label: "Blocked at", fmt: (v) => (v ? new Date(v).toLocaleString() : "–") },
        { key: "expires_at", label: "Until", fmt: (v) => (v ? new Date(v).toLocaleString() : "–") },
        { key: "failures", label: "Failures", cls: "num" }, { key: "accounts", label: "Accounts tried", fmt: (v) => (v || []).join(", ") || "–" },
        { key: "enforced", label: "Enforced", fmt: yesNo }, { key: "active", label: "Active", fmt: yesNo },
        { key: (r) => r, label: "", fmt: (r) => (r.active ? h("button", { class: "small danger", dataset: { ban: r.address },
          on: { click: (ev) => act(ev.currentTarget, async () => {
            await api("DELETE", `/api/v1/security/bans/${encodeURIComponent(r.address)}`);
            await load();
          }, `Unblocked ${r.address}`) } }, "Unblock") : "") },
      ], out.bans || [], { empty: "No source is blocked.", id: "table-bans" }));
  };
  showAll.addEventListener("change", () => load().catch((e) => toast(e.message, "error")));
  container.append(h("section", { class: "card" }, h("h2", {}, "Blocked SIP sources"),
    h("label", { class: "inline" }, showAll, "Show lifted and expired blocks too"), box));
  await load();
}

// ------------------------------------------------------------------ the page
let pendingFlow = null;
const guarded = (fn) => (container) => {
  const fail = (err) => container.append(h("p", { class: "form-error" }, err instanceof ApiError ? err.message : String(err)));
  try { Promise.resolve(fn(container)).catch(fail); } catch (err) { fail(err); }
};
const nav = { show: (id) => tabsCtl.show(id) }; // tabsCtl is set once tabs() returns

const tabsCtl = tabs(root, [
  ...["agents", "phones", "skills", "teams", "queues", "routes"].map((p) => ({ id: p, label: RESOURCES[p].label, render: guarded(configTab(p)) })),
  { id: "hours", label: "Business hours & holidays", render: guarded((c) => hoursTab(c, nav)) },
  ...["pause-reasons", "dispositions", "vip-callers"].map((p) => ({ id: p, label: RESOURCES[p].label, render: guarded(configTab(p)) })),
  { id: "prompts", label: "Prompts", render: guarded(promptsTab) },
  { id: "users", label: "Users", render: guarded(configTab("users")) },
  { id: "security", label: "SIP security", render: guarded(bansTab) },
  { id: "flows", label: "IVR flows", render: guarded((c) => { const open = pendingFlow; pendingFlow = null; return renderFlows(c, open); }) },
]);
