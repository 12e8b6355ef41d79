// The visual IVR flow editor: the flow document ({start, nodes: {id: {type, ...}}}, ivr/flow_model.py) drawn as
// boxes and arrows with Drawflow. The document is the one source of truth: every output of a box is one branch
// of its node (next, a menu digit, timeout, invalid, open/closed/holiday, a lookup branch, default, failure, …),
// an arrow is that branch's target, and the graph is redrawn from the document whenever its shape changes. The
// model forbids extra fields, so box positions are kept in this browser (localStorage) and laid out left to
// right by distance from the start node when there are none.
import { ApiError, act, api, clear, h, table, toast } from "./common.js";

const enc = encodeURIComponent;
const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const DIGITS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "*", "#"];
const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const STOCK_PROMPTS = ["hello-world", "beep", "vm-goodbye", "demo-congrats", "queue-thankyou", "pls-hold-while-try",
  "agent-loginok", "vm-intro", "silence/1"];

// ---------------------------------------------------------------- node types
// fields: {name, kind, label, def?} with kind text|prompt|int|bool|digit|terminator|target|options|branches|hours|
// dates|params|list|queue|var. "target" fields (and the options / branches maps) are the box's outputs.
const F = (name, kind, label, def) => ({ name, kind, label, def });
const TYPES = {
  play: { label: "Play", help: "plays a prompt, then goes on",
    fields: [F("prompt", "prompt", "Prompt"), F("next", "target", "Next")] },
  menu: { label: "Menu", help: "plays a prompt and waits for one digit",
    fields: [F("prompt", "prompt", "Prompt"), F("options", "options", "Digit → node"),
      F("timeout_ms", "int", "Timeout (ms)", 5000), F("retries", "int", "Retries", 2),
      F("invalid_prompt", "prompt", "Invalid-choice prompt (optional)"),
      F("timeout", "target", "On timeout"), F("invalid", "target", "On invalid digit")] },
  collect: { label: "Collect digits", help: "reads digits into a variable",
    fields: [F("prompt", "prompt", "Prompt"), F("var", "var", "Variable"), F("min_digits", "int", "Min digits", 1),
      F("max_digits", "int", "Max digits"), F("terminator", "terminator", "Terminator"),
      F("pattern", "text", "Pattern (optional, regex on digits)"), F("timeout_ms", "int", "Timeout (ms)", 5000),
      F("retries", "int", "Retries", 2), F("invalid_prompt", "prompt", "Invalid-input prompt (optional)"),
      F("secure", "bool", "Secure (card numbers: masked, never stored)"),
      F("next", "target", "Next"), F("invalid", "target", "On invalid input")] },
  time_condition: { label: "Time condition", help: "business hours and holidays",
    fields: [F("timezone", "text", "Time zone (IANA, e.g. Europe/Berlin)"), F("hours", "hours", "Opening hours"),
      F("holidays", "dates", "Holidays (YYYY-MM-DD, one per line)"),
      F("open", "target", "When open"), F("closed", "target", "When closed"),
      F("holiday", "target", "On a holiday (optional; else closed)")] },
  http_lookup: { label: "HTTP lookup", help: "asks a web service, branches on a field of the answer",
    fields: [F("url", "text", "URL (an allowed host)"), F("params", "params", "Query parameters (name=value or ${var})"),
      F("timeout_ms", "int", "Timeout (ms)", 2000), F("field", "text", "Answer field (e.g. customer.tier)"),
      F("branches", "branches", "Field value → node"), F("default", "target", "Other value"),
      F("failure", "target", "On failure / timeout")] },
  set_variable: { label: "Set variable", help: "var = literal or ${other}",
    fields: [F("var", "var", "Variable"), F("value", "text", "Value"), F("next", "target", "Next")] },
  language: { label: "Language", help: "sets the lang variable",
    fields: [F("lang", "text", "Language (e.g. en, de_DE)"), F("next", "target", "Next")] },
  queue: { label: "Queue", help: "hands the call to a queue (ends the flow)",
    fields: [F("queue", "queue", "Queue"), F("priority", "int", "Priority (0-100)", 0),
      F("vars", "list", "Variables for the agent's screen-pop (comma separated)")] },
  transfer: { label: "Transfer", help: "dials an extension or a number (ends the flow)",
    fields: [F("extension", "text", "Extension (2-8 digits)"), F("number", "text", "or number (+ and digits)")] },
  message: { label: "Message", help: "records a message (ends the flow)",
    fields: [F("prompt", "prompt", "Prompt"), F("max_seconds", "int", "Max seconds", 120)] },
  voicemail: { label: "Voicemail", help: "same as message",
    fields: [F("prompt", "prompt", "Prompt"), F("max_seconds", "int", "Max seconds", 120)] },
  callback_offer: { label: "Callback offer", help: "caller presses a digit to be called back",
    fields: [F("prompt", "prompt", "Prompt"), F("digit", "digit", "Digit", "1"), F("timeout_ms", "int", "Timeout (ms)", 5000),
      F("accepted", "target", "Accepted"), F("declined", "target", "Declined")] },
  survey: { label: "Survey", help: "arms a post-call survey (1-5)",
    fields: [F("prompt", "prompt", "Prompt"), F("var", "var", "Variable"), F("next", "target", "Next")] },
  hangup: { label: "Hang up", help: "optionally plays a prompt, ends the call",
    fields: [F("prompt", "prompt", "Prompt (optional)")] },
};

const DIGIT_ORDER = (a, b) => DIGITS.indexOf(a) - DIGITS.indexOf(b);

/** The outputs of a node, in order: [{field, label}]; `field` is the document path (next, options.1, …). */
export function ports(node) {
  const spec = TYPES[node?.type];
  if (!spec) return [];
  const out = [];
  for (const f of spec.fields) {
    if (f.kind === "target") out.push({ field: f.name, label: f.name });
    if (f.kind === "options") for (const k of Object.keys(node.options || {}).sort(DIGIT_ORDER)) out.push({ field: `options.${k}`, label: k });
    if (f.kind === "branches") for (const k of Object.keys(node.branches || {})) out.push({ field: `branches.${k}`, label: `= ${k}` });
  }
  return out;
}

function getTarget(node, field) {
  const dot = field.indexOf(".");
  if (dot < 0) return node[field] || "";
  return node[field.slice(0, dot)]?.[field.slice(dot + 1)] || "";
}

function setTarget(node, field, target) {
  const dot = field.indexOf(".");
  if (dot < 0) {
    if (target) node[field] = target; else delete node[field];
    return;
  }
  const map = field.slice(0, dot);
  node[map] = { ...(node[map] || {}), [field.slice(dot + 1)]: target || "" };
}

function defaults(type) {
  const node = { type };
  if (type === "menu") node.options = { 1: "" };
  if (type === "time_condition") {
    node.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    node.hours = Object.fromEntries(DAYS.slice(0, 5).map((d) => [d, [["09:00", "17:00"]]]));
    node.holidays = [];
  }
  if (type === "collect") node.max_digits = 4;
  if (type === "transfer") node.extension = "";
  return node;
}

function summary(node) {
  switch (node.type) {
    case "collect": return node.var ? `${node.var} ← digits` : "";
    case "time_condition": {
      const days = DAYS.filter((d) => node.hours?.[d]?.length);
      return `${node.timezone || "?"} · ${days.length ? days.join(" ") : "always closed"}${node.holidays?.length ? ` · ${node.holidays.length} holiday(s)` : ""}`;
    }
    case "http_lookup": try { return new URL(node.url).host; } catch { return node.url || ""; }
    case "set_variable": return `${node.var || "?"} = ${node.value ?? ""}`;
    case "language": return node.lang || "";
    case "queue": return node.queue ? `→ queue ${node.queue}` : "";
    case "transfer": return node.extension ? `→ ext ${node.extension}` : node.number ? `→ ${node.number}` : "";
    case "survey": return node.var ? `score → ${node.var}` : "";
    default: return node.prompt || "";
  }
}

// ---------------------------------------------------------------- Drawflow (vendor UMD, loaded once)
let drawflowLoading = null;
function loadDrawflow() {
  if (window.Drawflow) return Promise.resolve();
  if (!drawflowLoading) {
    drawflowLoading = new Promise((resolve, reject) => {
      // before app.css, so our rules win over the library's defaults of the same specificity
      const css = h("link", { rel: "stylesheet", href: "/static/vendor/drawflow.min.css" });
      document.head.insertBefore(css, document.querySelector('link[rel="stylesheet"]'));
      const script = document.createElement("script");
      script.src = "/static/vendor/drawflow.min.js";
      script.onload = () => resolve();
      script.onerror = () => { drawflowLoading = null; reject(new Error("the flow editor library did not load: run scripts/setup.sh (npm ci in web/ui)")); };
      document.head.append(script);
    });
  }
  return drawflowLoading;
}

const posKey = (name) => `ccpbx:flow-positions:${name}`;
function loadPositions(name) {
  try { return JSON.parse(localStorage.getItem(posKey(name)) || "{}") || {}; } catch { return {}; }
}

// ---------------------------------------------------------------- the tab
/** Render the IVR flows tab into `container`; `open` = {flow, node} opens that flow with that node selected. */
export async function renderFlows(container, open = null) {
  const st = {
    name: null, meta: null, doc: null, pos: {}, selected: null, problems: [], checked: false,
    editor: null, df2id: new Map(), id2df: new Map(), ports: new Map(), building: false, flows: [], queues: [], prompts: [],
  };
  const flowSelect = h("select", { id: "flow-select", "aria-label": "flow" });
  const newName = h("input", { id: "flow-new-name", placeholder: "new flow name", autocomplete: "off" });
  const title = h("span", { id: "flow-title", class: "flow-title" });
  const status = h("span", { id: "flow-status", class: "muted" });
  const btn = (id, label, fn, cls = "") => h("button", { type: "button", id, class: cls, disabled: true, on: { click: (e) => fn(e.currentTarget) } }, label);
  const bValidate = btn("flow-validate", "Validate", (b) => act(b, validate));
  const bSave = btn("flow-save", "Save draft", (b) => act(b, save));
  const bPublish = btn("flow-publish", "Publish", (b) => act(b, publish), "primary");
  const bDelete = btn("flow-delete", "Delete flow", (b) => remove(b), "danger");
  const problemsBox = h("div", { id: "flow-problems", class: "flow-problems" });
  const palette = h("div", { class: "palette", id: "palette" });
  const canvas = h("div", { class: "flow-canvas", id: "flow-canvas" });
  const panel = h("aside", { class: "card node-panel", id: "node-panel" });
  const versions = h("section", { class: "card", id: "flow-versions", hidden: true });
  const lists = h("div", {},
    h("datalist", { id: "dl-queues" }), h("datalist", { id: "dl-prompts" }));

  container.append(
    h("section", { class: "card" },
      h("div", { class: "flow-toolbar" },
        h("div", { class: "inline" }, h("label", {}, "Flow", flowSelect),
          h("button", { type: "button", id: "flow-open", on: { click: () => { if (flowSelect.value) openFlow(flowSelect.value); } } }, "Open")),
        h("div", { class: "inline" }, h("label", {}, "New flow", newName),
          h("button", { type: "button", id: "flow-new", on: { click: () => newFlow() } }, "Create")),
        h("div", { class: "flow-current" }, title, " ", status),
        h("div", { class: "buttons" }, bValidate, bSave, bPublish, bDelete)),
      problemsBox),
    h("div", { class: "flow-editor" },
      h("div", { class: "card palette-card" }, h("h3", {}, "Add a node"), palette,
        h("p", { class: "muted small-print" }, "Drag from a box's output dot (right) to another box's input dot (left) to connect. Select an arrow and press Delete to remove it.")),
      h("div", { class: "canvas-wrap" }, canvas,
        h("div", { class: "zoom-buttons" },
          h("button", { type: "button", class: "small", title: "zoom in", on: { click: () => st.editor?.zoom_in() } }, "+"),
          h("button", { type: "button", class: "small", title: "zoom out", on: { click: () => st.editor?.zoom_out() } }, "−"),
          h("button", { type: "button", class: "small", title: "back to 100 %", on: { click: () => st.editor?.zoom_reset() } }, "100 %"))),
      panel),
    versions, lists);

  for (const [type, spec] of Object.entries(TYPES)) {
    palette.append(h("button", { type: "button", title: spec.help, dataset: { type }, disabled: true, on: { click: () => addNode(type) } },
      h("span", { class: `type-dot t-${type}` }), spec.label));
  }
  // keys typed in the side panel must not reach Drawflow's document-wide Delete handler
  panel.addEventListener("keydown", (e) => e.stopPropagation());
  clear(panel, h("p", { class: "muted" }, "Open a flow or create one."));

  await loadDrawflow();
  const editor = new window.Drawflow(canvas);
  editor.reroute = false;
  editor.start();
  st.editor = editor;
  wireEditor();

  await Promise.all([refreshList(), loadChoices()]);
  if (open?.flow) await openFlow(open.flow, open.node);

  // ------------------------------------------------------------ loading
  async function refreshList() {
    st.flows = await api("GET", "/api/v1/flows");
    clear(flowSelect, h("option", { value: "" }, st.flows.length ? "— choose —" : "— no flows yet —"),
      st.flows.map((f) => h("option", { value: f.name, selected: f.name === st.name },
        `${f.name}${f.published_version ? ` (v${f.published_version} live)` : " (not published)"}`)));
  }

  async function loadChoices() {
    const [queues, prompts] = await Promise.all([
      api("GET", "/api/v1/queues").catch(() => []), api("GET", "/api/v1/prompts").catch(() => [])]);
    st.queues = queues.map((q) => q.name);
    st.prompts = [...prompts.map((p) => p.flow_name), ...STOCK_PROMPTS];
    clear(lists.querySelector("#dl-queues"), st.queues.map((q) => h("option", { value: q })));
    clear(lists.querySelector("#dl-prompts"), st.prompts.map((p) => h("option", { value: p })));
  }

  async function openFlow(name, node = null) {
    const meta = await api("GET", `/api/v1/flows/${enc(name)}`);
    start(name, meta, structuredClone(meta.draft), node);
  }

  function newFlow() {
    const name = newName.value.trim();
    if (!NAME_RE.test(name)) { toast("Flow name: lower-case letters, digits, _ and - (1-64, starting with a letter or digit).", "error"); newName.classList.add("invalid"); return; }
    if (st.flows.some((f) => f.name === name)) { toast(`Flow ${name} already exists: open it.`, "error"); return; }
    newName.classList.remove("invalid");
    newName.value = "";
    start(name, null, { start: "", nodes: {} });
    toast(`New flow ${name}: add nodes from the palette, then save the draft.`, "info");
  }

  function start(name, meta, doc, selected = null) {
    Object.assign(st, { name, meta, doc, pos: loadPositions(name), selected, problems: [], checked: false });
    if (!doc.nodes || typeof doc.nodes !== "object") doc.nodes = {};
    for (const b of [bValidate, bSave, bPublish, bDelete, ...palette.querySelectorAll("button")]) b.disabled = false;
    bDelete.disabled = !meta;
    flowSelect.value = meta ? name : "";
    render();
    renderPanel();
    renderProblems();
    renderVersions();
    renderStatus();
  }

  function renderStatus() {
    clear(title, h("strong", {}, st.name));
    const m = st.meta;
    status.textContent = !m ? "· new, not saved yet" : m.published_version ? `· version ${m.published_version} is live` : "· draft, not published";
  }

  // ------------------------------------------------------------ the graph
  function layout() {
    const ids = Object.keys(st.doc.nodes);
    const depth = {};
    const queue = st.doc.start && st.doc.nodes[st.doc.start] ? [st.doc.start] : [];
    if (queue.length) depth[st.doc.start] = 0;
    while (queue.length) {
      const id = queue.shift();
      for (const p of ports(st.doc.nodes[id])) {
        const t = getTarget(st.doc.nodes[id], p.field);
        if (t && st.doc.nodes[t] && depth[t] === undefined) { depth[t] = depth[id] + 1; queue.push(t); }
      }
    }
    const maxDepth = Math.max(-1, ...Object.values(depth));
    const colY = {};
    const out = {};
    for (const id of ids) {
      const d = depth[id] ?? maxDepth + 1;
      const y = colY[d] ?? 30;
      out[id] = [30 + d * 250, y];
      colY[d] = y + Math.max(90, 30 + 26 * ports(st.doc.nodes[id]).length) + 30;
    }
    return out;
  }

  function render() {
    const ed = st.editor;
    st.building = true;
    try {
      ed.clear();
      ed.node_selected = null;
      ed.connection_selected = null;
      st.df2id.clear(); st.id2df.clear(); st.ports.clear();
      const auto = layout();
      for (const [id, node] of Object.entries(st.doc.nodes)) {
        const ps = ports(node);
        st.ports.set(id, ps);
        const [x, y] = st.pos[id] || auto[id];
        const df = String(ed.addNode(String(node?.type || "unknown"), 1, ps.length, x, y, "ivr-node", {}, ""));
        st.df2id.set(df, id);
        st.id2df.set(id, df);
        const el = nodeEl(id);
        el.dataset.nodeId = id;
        ps.forEach((p, i) => {
          const out = el.querySelector(`.outputs .output_${i + 1}`);
          const self = getTarget(node, p.field) === id;
          out.dataset.port = p.field;
          out.dataset.label = self ? `${p.label} ↺` : p.label;
          out.title = self ? `${p.field} → back to this node` : p.field;
        });
        el.querySelector(".inputs .input")?.setAttribute("title", "in");
      }
      for (const [id, node] of Object.entries(st.doc.nodes)) {
        st.ports.get(id).forEach((p, i) => {
          const t = getTarget(node, p.field);
          if (t && st.id2df.has(t)) ed.addConnection(st.id2df.get(id), st.id2df.get(t), `output_${i + 1}`, "input_1");
        });
      }
    } finally {
      st.building = false;
    }
    for (const id of Object.keys(st.doc.nodes)) refreshNode(id);
  }

  function nodeEl(id) { return st.editor.container.querySelector(`#node-${st.id2df.get(id)}`); }

  function refreshNode(id) {
    const el = nodeEl(id);
    const node = st.doc.nodes[id];
    if (!el || !node) return;
    const probs = st.problems.filter((p) => p.node === id);
    el.classList.toggle("has-problem", probs.length > 0);
    el.classList.toggle("is-start", st.doc.start === id);
    el.classList.toggle("selected", st.selected === id);
    const spec = TYPES[node.type];
    clear(el.querySelector(".drawflow_content_node"),
      h("div", { class: "node-head" },
        h("span", { class: `type-dot t-${node.type}` }),
        h("span", { class: "node-title" }, id),
        st.doc.start === id ? h("span", { class: "start-badge", title: "the flow starts here" }, "start") : null),
      h("div", { class: "node-type" }, spec ? spec.label : `unknown type ${node.type}`),
      summary(node) ? h("div", { class: "node-sub" }, summary(node)) : null,
      probs.map((p) => h("div", { class: "node-problem" }, p.field ? `${p.field}: ${p.message}` : p.message)));
    st.editor.updateConnectionNodes(`node-${st.id2df.get(id)}`); // the box may have grown: its dots moved
  }

  function wireEditor() {
    const ed = st.editor;
    ed.on("nodeSelected", (df) => {
      st.selected = st.df2id.get(String(df)) || null;
      for (const id of Object.keys(st.doc?.nodes || {})) nodeEl(id)?.classList.toggle("selected", id === st.selected);
      renderPanel();
    });
    ed.on("nodeUnselected", () => {
      if (!st.doc) return;
      st.selected = null;
      for (const id of Object.keys(st.doc.nodes)) nodeEl(id)?.classList.remove("selected");
      renderPanel();
    });
    ed.on("nodeMoved", (df) => {
      const id = st.df2id.get(String(df));
      const info = ed.getNodeFromId(df);
      if (!id || !info) return;
      st.pos[id] = [Math.round(info.pos_x), Math.round(info.pos_y)];
      savePositions();
    });
    ed.on("connectionCreated", (c) => {
      if (st.building) return;
      const from = st.df2id.get(String(c.output_id));
      const to = st.df2id.get(String(c.input_id));
      const port = st.ports.get(from)?.[Number(c.output_class.replace("output_", "")) - 1];
      if (!from || !to || !port) return;
      // one target per branch: a new arrow from an output replaces the old one
      const conns = ed.getNodeFromId(c.output_id).outputs[c.output_class].connections;
      st.building = true;
      try {
        for (const old of [...conns]) {
          if (String(old.node) !== String(c.input_id)) ed.removeSingleConnection(c.output_id, old.node, c.output_class, old.output);
        }
      } finally { st.building = false; }
      setTarget(st.doc.nodes[from], port.field, to);
      edited(from, false);
    });
    ed.on("connectionRemoved", (c) => {
      if (st.building) return;
      const from = st.df2id.get(String(c.output_id));
      const to = st.df2id.get(String(c.input_id));
      const node = st.doc?.nodes[from];
      const port = st.ports.get(from)?.[Number(c.output_class.replace("output_", "")) - 1];
      if (!node || !port || getTarget(node, port.field) !== to) return;
      setTarget(node, port.field, "");
      edited(from, false);
    });
    ed.on("nodeRemoved", (df) => {
      if (st.building) return;
      const id = st.df2id.get(String(df));
      if (id) deleteNode(id, false);
    });
  }

  function savePositions() {
    try { localStorage.setItem(posKey(st.name), JSON.stringify(st.pos)); } catch { /* private mode: layout again next time */ }
  }

  /** After a change of node `id`: redraw the graph if its shape changed, else only the box; and the panel. */
  function edited(id, structural, panelToo = true) {
    st.checked = false;
    if (structural) render(); else refreshNode(id);
    if (panelToo) renderPanel();
  }

  function addNode(type) {
    const base = type.replace("_", "-");
    let n = 1;
    while (st.doc.nodes[`${base}-${n}`]) n += 1;
    const id = `${base}-${n}`;
    st.doc.nodes[id] = defaults(type);
    if (!st.doc.start || !st.doc.nodes[st.doc.start]) st.doc.start = id;
    // next to the selected box, else below the others
    const sel = st.selected && st.pos[st.selected];
    const ys = Object.values(st.pos).map((p) => p[1]);
    st.pos[id] = sel ? [sel[0] + 250, sel[1]] : [30 + 250 * (Object.keys(st.pos).length % 3), 30 + (ys.length ? Math.max(...ys) + 140 : 0)];
    for (const [other, p] of Object.entries(st.pos)) {
      if (other !== id && Math.abs(p[0] - st.pos[id][0]) < 60 && Math.abs(p[1] - st.pos[id][1]) < 80) st.pos[id][1] = p[1] + 130;
    }
    if (!st.pos[id][1] && ys.length === 0) st.pos[id] = [30, 30];
    savePositions();
    st.selected = id;
    edited(id, true);
  }

  function deleteNode(id, redraw = true) {
    delete st.doc.nodes[id];
    delete st.pos[id];
    for (const node of Object.values(st.doc.nodes)) {
      for (const p of ports(node)) if (getTarget(node, p.field) === id) setTarget(node, p.field, "");
    }
    if (st.doc.start === id) st.doc.start = Object.keys(st.doc.nodes)[0] || "";
    if (st.selected === id) st.selected = null;
    st.problems = st.problems.filter((p) => p.node !== id);
    savePositions();
    if (redraw) edited(null, true); else setTimeout(() => edited(null, true)); // Drawflow is mid-removal
  }

  function renameNode(old, neu) {
    if (!NAME_RE.test(neu)) throw new Error("node id: lower-case letters, digits, _ and - (max 64, starting with a letter or digit)");
    if (st.doc.nodes[neu]) throw new Error(`a node ${neu} already exists`);
    st.doc.nodes = Object.fromEntries(Object.entries(st.doc.nodes).map(([k, v]) => [k === old ? neu : k, v]));
    for (const node of Object.values(st.doc.nodes)) {
      for (const p of ports(node)) if (getTarget(node, p.field) === old) setTarget(node, p.field, neu);
    }
    if (st.doc.start === old) st.doc.start = neu;
    if (st.pos[old]) { st.pos[neu] = st.pos[old]; delete st.pos[old]; }
    st.problems = st.problems.map((p) => (p.node === old ? { ...p, node: neu } : p));
    st.selected = neu;
    savePositions();
    edited(neu, true);
    renderProblems();
  }

  // ------------------------------------------------------------ the side panel
  function renderPanel() {
    if (!st.doc) return;
    const id = st.selected;
    const node = id && st.doc.nodes[id];
    if (!node) {
      const count = Object.keys(st.doc.nodes).length;
      clear(panel, h("h3", {}, `Flow ${st.name}`),
        h("p", { class: "muted" }, count ? `${count} node${count === 1 ? "" : "s"}. Select a box to edit it.` : "Add the first node from the palette: it becomes the start."),
        count ? h("label", {}, "Start node", h("select", { id: "flow-start", on: { change: (e) => { st.doc.start = e.target.value; edited(null, true); } } },
          Object.keys(st.doc.nodes).map((n) => h("option", { value: n, selected: n === st.doc.start }, n)))) : null);
      return;
    }
    const spec = TYPES[node.type];
    const probs = st.problems.filter((p) => p.node === id);
    const idInput = h("input", { id: "node-id", value: id, autocomplete: "off" });
    const form = h("div", { class: "node-form", id: "node-form", dataset: { node: id } });
    clear(panel,
      h("h3", {}, spec ? spec.label : node.type, " ", h("span", { class: "muted" }, spec?.help || "")),
      probs.length ? h("ul", { class: "panel-problems" }, probs.map((p) => h("li", {}, p.field ? `${p.field}: ${p.message}` : p.message))) : null,
      h("div", { class: "inline" }, h("label", {}, "Node id", idInput),
        h("button", { type: "button", class: "small", id: "node-rename", on: { click: () => {
          try { if (idInput.value.trim() !== id) renameNode(id, idInput.value.trim()); } catch (err) { toast(err.message, "error"); }
        } } }, "Rename")),
      form,
      h("div", { class: "buttons" },
        st.doc.start === id ? h("span", { class: "start-badge" }, "start node")
          : h("button", { type: "button", class: "small", id: "node-make-start", on: { click: () => { st.doc.start = id; edited(id, true); } } }, "Make start node"),
        h("button", { type: "button", class: "small danger", id: "node-delete", on: { click: () => deleteNode(id) } }, "Delete node")));
    for (const f of spec ? spec.fields : []) form.append(control(id, node, f, probs));
  }

  function fieldProblem(probs, name) {
    const mine = probs.filter((p) => p.field && (p.field === name || p.field.startsWith(`${name}.`)));
    return mine.length ? h("span", { class: "field-error" }, mine.map((p) => `${p.field === name ? "" : `${p.field}: `}${p.message}`).join("; ")) : null;
  }

  function targetSelect(value, onChange, attrs = {}) {
    return h("select", { ...attrs, on: { change: (e) => onChange(e.target.value) } },
      h("option", { value: "" }, "— not connected —"),
      Object.keys(st.doc.nodes).map((n) => h("option", { value: n, selected: n === value }, n)));
  }

  function control(id, node, f, probs) {
    const err = fieldProblem(probs, f.name);
    const wrap = (...inner) => h("label", { dataset: { field: f.name }, class: err ? "has-error" : "" }, f.label, ...inner, err);
    const setPlain = (v, structural = false) => {
      if (v === undefined || v === "") delete node[f.name]; else node[f.name] = v;
      edited(id, structural, false);
    };
    const cls = err ? "invalid" : "";
    switch (f.kind) {
      case "target":
        return wrap(targetSelect(node[f.name] || "", (v) => { setTarget(node, f.name, v); edited(id, true); }, { name: f.name, class: cls }));
      case "int":
        return wrap(h("input", { type: "number", name: f.name, class: cls, value: node[f.name] ?? "", placeholder: f.def !== undefined ? `default ${f.def}` : "",
          on: { input: (e) => { const v = e.target.value.trim(); setPlain(v === "" ? undefined : Number.isInteger(Number(v)) ? Number(v) : v); } } }));
      case "bool":
        return h("label", { class: "check", dataset: { field: f.name } }, h("input", { type: "checkbox", name: f.name, checked: !!node[f.name],
          on: { change: (e) => setPlain(e.target.checked ? true : undefined) } }), f.label, err);
      case "digit":
        return wrap(h("select", { name: f.name, on: { change: (e) => setPlain(e.target.value) } },
          DIGITS.map((d) => h("option", { value: d, selected: d === (node[f.name] ?? f.def) }, d))));
      case "terminator":
        return wrap(h("select", { name: f.name, on: { change: (e) => { if (e.target.value === "#") delete node.terminator; else node.terminator = null; edited(id, false, false); } } },
          h("option", { value: "#", selected: node.terminator !== null }, "# ends the input"),
          h("option", { value: "none", selected: node.terminator === null }, "none")));
      case "options":
      case "branches":
        return mapEditor(id, node, f, err);
      case "hours":
        return h("div", { class: "hours-editor", dataset: { field: f.name } }, h("div", { class: "label-like" }, f.label,
          h("span", { class: "muted" }, " (e.g. 09:00-12:00, 13:00-17:00; empty = closed)")),
          DAYS.map((d) => h("label", { class: "hours-row" }, h("span", { class: "day" }, d),
            h("input", { name: `hours-${d}`, value: (node.hours?.[d] || []).map((s) => s.join("-")).join(", "), autocomplete: "off",
              on: { input: (e) => {
                const text = e.target.value.trim();
                const hours = { ...(node.hours || {}) };
                if (!text) delete hours[d];
                else hours[d] = text.split(",").map((s) => s.trim()).filter(Boolean).map((s) => s.split("-").map((x) => x.trim()));
                node.hours = Object.fromEntries(DAYS.filter((x) => hours[x]).map((x) => [x, hours[x]]));
                edited(id, false, false);
              } } }))), err);
      case "dates":
        return wrap(h("textarea", { name: f.name, rows: 3, class: cls, text: (node[f.name] || []).join("\n"),
          on: { input: (e) => { node[f.name] = e.target.value.split(/[\s,]+/).filter(Boolean); edited(id, false, false); } } }));
      case "params":
        return wrap(h("textarea", { name: f.name, rows: 3, class: cls, text: Object.entries(node.params || {}).map(([k, v]) => `${k}=${v}`).join("\n"),
          on: { input: (e) => {
            const params = {};
            for (const line of e.target.value.split("\n")) {
              const i = line.indexOf("=");
              if (line.trim()) params[(i < 0 ? line : line.slice(0, i)).trim()] = i < 0 ? "" : line.slice(i + 1).trim();
            }
            if (Object.keys(params).length) node.params = params; else delete node.params;
            edited(id, false, false);
          } } }));
      case "list":
        return wrap(h("input", { name: f.name, class: cls, value: (node[f.name] || []).join(", "), autocomplete: "off",
          on: { input: (e) => setPlain(e.target.value.split(/[\s,]+/).filter(Boolean).length ? e.target.value.split(/[\s,]+/).filter(Boolean) : undefined) } }));
      default: {
        const list = f.kind === "prompt" ? "dl-prompts" : f.kind === "queue" ? "dl-queues" : null;
        return wrap(h("input", { name: f.name, class: cls, value: node[f.name] ?? "", autocomplete: "off", list,
          on: { input: (e) => setPlain(e.target.value.trim()) } }));
      }
    }
  }

  /** menu options (digit → node) and lookup branches (value → node): one output per row. */
  function mapEditor(id, node, f, err) {
    const isDigits = f.kind === "options";
    const entries = Object.entries(node[f.name] || {});
    if (isDigits) entries.sort((a, b) => DIGIT_ORDER(a[0], b[0]));
    const update = (mut) => {
      const map = Object.fromEntries(Object.entries(node[f.name] || {}));
      mut(map);
      if (Object.keys(map).length || isDigits) node[f.name] = map; else delete node[f.name];
      edited(id, true);
    };
    const rename = (oldKey, newKey) => update((m) => {
      if (!newKey || newKey === oldKey || newKey in m) return;
      const rebuilt = Object.fromEntries(Object.entries(m).map(([k, v]) => [k === oldKey ? newKey : k, v]));
      for (const k of Object.keys(m)) delete m[k];
      Object.assign(m, rebuilt);
    });
    const rows = entries.map(([key, target]) => h("div", { class: "map-row", dataset: { key } },
      isDigits
        ? h("select", { class: "map-key", "aria-label": "digit", on: { change: (e) => rename(key, e.target.value) } },
          DIGITS.filter((d) => d === key || !(d in node.options)).map((d) => h("option", { value: d, selected: d === key }, d)))
        : h("input", { class: "map-key", "aria-label": "value", value: key, on: { change: (e) => rename(key, e.target.value.trim()) } }),
      h("span", { class: "muted" }, "→"),
      targetSelect(target, (v) => update((m) => { m[key] = v; }), { class: "map-target", "aria-label": `target of ${key}` }),
      h("button", { type: "button", class: "small", title: "remove", on: { click: () => update((m) => { delete m[key]; }) } }, "✕")));
    const add = () => update((m) => {
      if (isDigits) { const d = DIGITS.find((x) => !(x in m)); if (d) m[d] = ""; return; }
      let n = 1;
      while (`value${n}` in m) n += 1;
      m[`value${n}`] = "";
    });
    return h("div", { class: `map-editor${err ? " has-error" : ""}`, dataset: { field: f.name } },
      h("div", { class: "label-like" }, f.label), rows,
      h("button", { type: "button", class: "small", id: `add-${f.name}`, on: { click: add } }, isDigits ? "+ digit" : "+ branch"), err);
  }

  // ------------------------------------------------------------ problems, saving, versions
  function renderProblems(extra = null) {
    if (!st.problems.length) {
      clear(problemsBox, st.checked ? h("p", { class: "ok-note", id: "flow-ok" }, "✓ No problems: the flow can be published.") : null, extra);
      return;
    }
    clear(problemsBox, h("div", { class: "form-error", role: "alert" },
      h("strong", {}, `${st.problems.length} problem${st.problems.length === 1 ? "" : "s"}:`),
      h("ul", { id: "flow-problem-list" }, st.problems.map((p) => h("li", {},
        p.node && st.doc.nodes[p.node]
          ? h("a", { href: "#flows", on: { click: (e) => { e.preventDefault(); select(p.node); } } }, p.node)
          : h("strong", {}, p.node || "flow"),
        p.field ? ` · ${p.field}` : "", `: ${p.message}`)))));
  }

  function select(id) {
    st.selected = id;
    for (const n of Object.keys(st.doc.nodes)) nodeEl(n)?.classList.toggle("selected", n === id);
    renderPanel();
  }

  function applyProblems(problems) {
    st.problems = problems || [];
    st.checked = true;
    for (const id of Object.keys(st.doc.nodes)) refreshNode(id);
    renderProblems();
    renderPanel();
  }

  async function validate() {
    const out = await api("POST", `/api/v1/flows/${enc(st.name)}/validate`, { document: st.doc });
    applyProblems(out.problems);
    if (out.ok) toast("No problems found.", "ok");
    return out.ok;
  }

  async function save() {
    try {
      st.meta = st.meta
        ? await api("PUT", `/api/v1/flows/${enc(st.name)}`, { document: st.doc })
        : await api("POST", "/api/v1/flows", { name: st.name, document: st.doc });
    } catch (err) {
      if (err instanceof ApiError && err.status === 422 && err.problems.length) {
        applyProblems(err.problems);
        throw new Error(`Not saved: ${err.problems.length} problem${err.problems.length === 1 ? "" : "s"} (listed above the editor).`);
      }
      throw err;
    }
    applyProblems([]);
    bDelete.disabled = false;
    renderStatus();
    renderVersions();
    await refreshList();
    toast("Draft saved.", "ok");
    return true;
  }

  async function publish() {
    await save();
    const out = await api("POST", `/api/v1/flows/${enc(st.name)}/publish`);
    st.meta = await api("GET", `/api/v1/flows/${enc(st.name)}`);
    renderStatus();
    renderVersions();
    await refreshList();
    toast(`Published: version ${out.published_version} is live.`, "ok");
  }

  function remove(button) {
    if (!st.meta || !confirm(`Delete flow ${st.name} with all its versions?`)) return;
    act(button, async () => {
      await api("DELETE", `/api/v1/flows/${enc(st.name)}`);
      localStorage.removeItem(posKey(st.name));
      Object.assign(st, { name: null, meta: null, doc: null, selected: null, problems: [] });
      st.editor.clear();
      for (const b of [bValidate, bSave, bPublish, bDelete, ...palette.querySelectorAll("button")]) b.disabled = true;
      clear(title); status.textContent = "";
      clear(panel, h("p", { class: "muted" }, "Open a flow or create one."));
      clear(problemsBox); clear(versions); versions.hidden = true;
      await refreshList();
    }, "Flow deleted.");
  }

  function renderVersions() {
    const m = st.meta;
    versions.hidden = !st.name;
    if (!m) { clear(versions, h("h2", {}, "Versions"), h("p", { class: "empty" }, "Save the draft, then publish it to make version 1.")); return; }
    clear(versions, h("h2", {}, "Published versions"),
      h("p", { class: "muted" }, "Calls run the live version; publishing copies the saved draft into a new version. Rolling back makes an earlier version live again (the draft is kept)."),
      table([
        { key: "version", label: "Version", cls: "num" },
        { key: "published_at", label: "Published", fmt: (v) => new Date(v).toLocaleString() },
        { key: "published_by", label: "By" },
        { key: "version", label: "", fmt: (v) => (v === m.published_version ? h("span", { class: "badge state-available" }, "live") : "") },
        { key: "version", label: "", fmt: (v) => h("span", { class: "row-actions" },
          h("button", { type: "button", class: "small", on: { click: (e) => act(e.currentTarget, async () => {
            const out = await api("GET", `/api/v1/flows/${enc(st.name)}/versions/${v}`);
            st.doc = structuredClone(out.document);
            st.selected = null; st.problems = []; st.checked = false;
            render(); renderPanel(); renderProblems();
          }, `Version ${v} loaded into the editor: save the draft to keep it.`) } }, "Load into editor"),
          v === m.published_version ? null : h("button", { type: "button", class: "small", on: { click: (e) => {
            if (!confirm(`Make version ${v} of ${st.name} live again?`)) return;
            act(e.currentTarget, async () => {
              await api("POST", `/api/v1/flows/${enc(st.name)}/rollback`, { version: v });
              st.meta = await api("GET", `/api/v1/flows/${enc(st.name)}`);
              renderStatus(); renderVersions(); await refreshList();
            }, `Version ${v} is live again.`);
          } } }, "Roll back to this")) },
      ], [...m.versions].reverse(), { id: "table-versions", empty: "Not published yet." }));
  }
}
