// The agent desktop's browser phone ("Browser phone" card): a WebRTC softphone (JsSIP, served from
// /static/vendor/jssip.js) registered with the agent's own phone when that phone is a browser phone
// (phones.webrtc). SIP goes over secure WebSocket to Asterisk, media is DTLS-SRTP; everything else (states,
// recording, supervision, reports) is the same as for a desk phone, since Asterisk sees an ordinary endpoint.
//
// Incoming queue calls ring here (answer / decline), and a call can be held, muted, hung up and sent DTMF digits.
// The microphone and the speaker are chosen from the browser's devices (setSinkId for the output). A denied
// microphone, a dropped connection or a failed registration is shown as such; JsSIP reconnects the WebSocket by
// itself (and registers again), and a failed registration is retried with a backoff.
import { ApiError, api, clear, h, toast } from "./common.js";

const STATES = {
  loading: ["Starting…", "state-logged_out"],
  connecting: ["Connecting…", "state-ringing"],
  registered: ["Registered", "state-available"],
  unregistered: ["Not registered", "state-paused"],
  failed: ["Registration failed", "state-paused"],
  disconnected: ["Connection lost: reconnecting…", "state-paused"],
  "mic-denied": ["Microphone blocked", "state-paused"],
  unavailable: ["Unavailable", "state-paused"],
};
const RETRY_MIN_S = 2;
const RETRY_MAX_S = 30;
const PREFS = "ccpbx-softphone-devices";

function loadJsSIP() {
  if (window.JsSIP) return Promise.resolve(window.JsSIP);
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "/static/vendor/jssip.js";
    s.onload = () => (window.JsSIP ? resolve(window.JsSIP) : reject(new Error("JsSIP did not load")));
    s.onerror = () => reject(new Error("the phone library (JsSIP) is missing: run scripts/setup.sh"));
    document.head.append(s);
  });
}

function prefs() {
  try { return JSON.parse(localStorage.getItem(PREFS) || "{}"); } catch { return {}; }
}

/** Mount the card into `container` (kept hidden unless the agent's phone is a browser phone). */
export async function mountSoftphone(container, agent) {
  let conf;
  try {
    conf = await api("GET", `/api/v1/agents/${encodeURIComponent(agent)}/softphone`);
  } catch (err) {
    if (err instanceof ApiError && ["not_webrtc", "no_phone"].includes(err.code)) return null;  // a desk phone
    container.hidden = false;
    clear(container, h("h2", {}, "Browser phone"), h("p", { class: "form-error" }, err.message));
    return null;
  }
  const phone = new Softphone(container, conf);
  container.hidden = false;
  await phone.start();
  return phone;
}

class Softphone {
  constructor(container, conf) {
    this.root = container;
    this.conf = conf;
    this.ua = null;
    this.session = null;        // the call ringing or in progress
    this.incoming = false;
    this.state = "loading";
    this.everConnected = false;
    this.detail = "";
    this.retry = RETRY_MIN_S;
    this.retryTimer = null;
    this.held = false;
    this.muted = false;
    this.devices = { input: [], output: [] };
    const saved = prefs();
    this.micId = saved.mic || "";
    this.speakerId = saved.speaker || "";
    this.el = {
      status: h("span", { id: "sp-status", class: "badge" }),
      detail: h("div", { id: "sp-detail", class: "muted" }),
      call: h("div", { id: "sp-call" }),
      buttons: h("div", { class: "buttons", id: "sp-buttons" }),
      keypad: h("div", { id: "sp-keypad", style: "display: grid; grid-template-columns: repeat(3, 3rem); gap: .3rem; margin-top: .5rem" }),
      mic: h("select", { id: "sp-mic", "aria-label": "Microphone", on: { change: () => this.chooseMic() } }),
      speaker: h("select", { id: "sp-speaker", "aria-label": "Speaker", on: { change: () => this.chooseSpeaker() } }),
      audio: h("audio", { id: "sp-audio", autoplay: true }),
    };
    this.el.audio.autoplay = true;
    for (const d of "123456789*0#") {
      this.el.keypad.append(h("button", { type: "button", class: "sp-key", dataset: { digit: d }, disabled: true,
        on: { click: () => this.dtmf(d) } }, d));
    }
    clear(this.root,
      h("div", { class: "inline", style: "justify-content: space-between" }, h("h2", {}, "Browser phone"), this.el.status),
      h("div", { class: "muted", id: "sp-identity" }, `${conf.user} · ${conf.ws_url}`),
      this.el.detail, this.el.call, this.el.buttons, this.el.keypad,
      h("div", { class: "inline", style: "margin-top: .6rem; gap: .5rem; flex-wrap: wrap" },
        h("label", {}, "Microphone ", this.el.mic), h("label", {}, "Speaker ", this.el.speaker)),
      this.el.audio);
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.listDevices());
    window.addEventListener("pagehide", () => { try { this.ua?.stop(); } catch { /* page is going */ } });
    this.render();
  }

  setState(state, detail = "") {
    this.state = state;
    this.detail = detail;
    this.render();
  }

  async start() {
    if (!navigator.mediaDevices?.getUserMedia || !window.RTCPeerConnection) {
      this.setState("unavailable", "This browser cannot make WebRTC calls here (a page outside localhost needs https).");
      return;
    }
    // Ask for the microphone now: a denial is shown before a call rings, and the device names become readable.
    if (!(await this.probeMic())) return;
    await this.listDevices();
    let JsSIP;
    try {
      JsSIP = await loadJsSIP();
    } catch (err) {
      this.setState("unavailable", err.message);
      return;
    }
    const socket = new JsSIP.WebSocketInterface(this.conf.ws_url);
    this.ua = new JsSIP.UA({
      sockets: [socket], uri: this.conf.sip_uri, authorization_user: this.conf.user, password: this.conf.password,
      display_name: this.conf.display_name || this.conf.user, register: true, register_expires: 300,
      session_timers: false, connection_recovery_min_interval: RETRY_MIN_S,
      connection_recovery_max_interval: RETRY_MAX_S, user_agent: "ccpbx-desktop (JsSIP)",
    });
    this.ua.on("connecting", () => { if (this.state !== "registered") this.setState("connecting"); });
    this.ua.on("connected", () => { this.everConnected = true; this.setState("connecting", "Connected: registering…"); });
    this.ua.on("disconnected", () => this.setState("disconnected", this.everConnected
      ? "The connection to the PBX dropped: reconnecting and registering again by itself."
      : `Cannot reach ${this.conf.ws_url}: is the PBX up, and does this browser trust its certificate?`));
    this.ua.on("registered", () => { this.retry = RETRY_MIN_S; this.setState("registered"); });
    this.ua.on("unregistered", () => { if (this.state === "registered") this.setState("unregistered"); });
    this.ua.on("registrationFailed", (e) => {
      this.setState("failed", `${e?.cause || "error"}: retrying in ${this.retry} s`);
      this.scheduleRegister();
    });
    this.ua.on("newRTCSession", (e) => this.onSession(e));
    this.setState("connecting");
    this.ua.start();
  }

  scheduleRegister() {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => { if (this.ua?.isConnected()) this.ua.register(); }, this.retry * 1000);
    this.retry = Math.min(this.retry * 2, RETRY_MAX_S);
  }

  async probeMic() {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(this.audioConstraints());
      stream.getTracks().forEach((t) => t.stop());
      return true;
    } catch (err) {
      this.setState("mic-denied", `The browser refused the microphone (${err.name}): allow it for this site and reload.`);
      return false;
    }
  }

  audioConstraints() {
    return { audio: this.micId ? { deviceId: { exact: this.micId } } : true, video: false };
  }

  async listDevices() {
    let all = [];
    try { all = await navigator.mediaDevices.enumerateDevices(); } catch { /* none listed */ }
    this.devices.input = all.filter((d) => d.kind === "audioinput");
    this.devices.output = all.filter((d) => d.kind === "audiooutput");
    const fill = (sel, list, chosen, fallback) => {
      clear(sel, h("option", { value: "" }, fallback),
        list.filter((d) => d.deviceId && d.deviceId !== "default").map((d, i) => h("option", {
          value: d.deviceId, selected: d.deviceId === chosen }, d.label || `${fallback} ${i + 1}`)));
    };
    fill(this.el.mic, this.devices.input, this.micId, "Default microphone");
    fill(this.el.speaker, this.devices.output, this.speakerId, "Default speaker");
    this.el.speaker.disabled = typeof this.el.audio.setSinkId !== "function";
    if (this.speakerId) await this.applySpeaker();
  }

  savePrefs() {
    try { localStorage.setItem(PREFS, JSON.stringify({ mic: this.micId, speaker: this.speakerId })); } catch { /* private mode */ }
  }

  async chooseMic() {
    this.micId = this.el.mic.value;
    this.savePrefs();
    const pc = this.session?.connection;
    if (!pc || !this.session.isEstablished()) return;
    try {  // switch the microphone of the call in progress
      const stream = await navigator.mediaDevices.getUserMedia(this.audioConstraints());
      const [track] = stream.getAudioTracks();
      const sender = pc.getSenders().find((s) => s.track?.kind === "audio" || s.track === null);
      const old = sender?.track;
      await sender?.replaceTrack(track);
      track.enabled = !this.muted;
      old?.stop();
    } catch (err) {
      toast(`Microphone: ${err.message}`, "error");
    }
  }

  async chooseSpeaker() {
    this.speakerId = this.el.speaker.value;
    this.savePrefs();
    await this.applySpeaker();
  }

  async applySpeaker() {
    if (typeof this.el.audio.setSinkId !== "function") return;
    try { await this.el.audio.setSinkId(this.speakerId || ""); } catch (err) { toast(`Speaker: ${err.message}`, "error"); }
  }

  onSession({ session, originator, request }) {
    if (originator !== "remote") return;
    if (this.session) {  // one call at a time: the PBX's queue offers the next one later
      session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
      return;
    }
    this.session = session;
    this.incoming = true;
    this.held = false;
    this.muted = false;
    this.caller = request?.from?.display_name || request?.from?.uri?.user || "unknown";
    this.callNumber = request?.from?.uri?.user || "";
    const attach = (pc) => {
      pc.addEventListener("track", (ev) => {
        const stream = ev.streams?.[0] || new MediaStream([ev.track]);
        if (this.el.audio.srcObject !== stream) this.el.audio.srcObject = stream;
        this.el.audio.play?.().catch(() => {});
      });
    };
    if (session.connection) attach(session.connection);
    session.on("peerconnection", (e) => attach(e.peerconnection));
    session.on("accepted", () => { this.incoming = false; this.render(); });
    session.on("confirmed", () => { this.incoming = false; this.render(); });
    session.on("hold", () => { this.held = true; this.render(); });
    session.on("unhold", () => { this.held = false; this.render(); });
    session.on("muted", () => { this.muted = true; this.render(); });
    session.on("unmuted", () => { this.muted = false; this.render(); });
    const done = (e) => {
      if (this.session !== session) return;
      this.session = null;
      this.incoming = false;
      this.el.audio.srcObject = null;
      if (e?.cause === window.JsSIP?.C?.causes?.USER_DENIED_MEDIA_ACCESS) {
        this.setState("mic-denied", "The browser refused the microphone: the call could not be answered.");
      }
      this.lastEnd = e?.cause || "ended";
      this.render();
    };
    session.on("ended", done);
    session.on("failed", done);
    this.render();
  }

  answer() {
    const s = this.session;
    if (!s || !this.incoming) return;
    s.answer({ mediaConstraints: this.audioConstraints(),
      pcConfig: { iceServers: this.conf.ice_servers || [], rtcpMuxPolicy: "require", bundlePolicy: "max-bundle" } });
  }

  hangup() {
    try { this.session?.terminate(); } catch { /* already ended */ }
  }

  toggleHold() {
    const s = this.session;
    if (!s?.isEstablished()) return;
    if (this.held) s.unhold(); else s.hold();
  }

  toggleMute() {
    const s = this.session;
    if (!s?.isEstablished()) return;
    if (this.muted) s.unmute({ audio: true }); else s.mute({ audio: true });
  }

  dtmf(digit) {
    const s = this.session;
    if (!s?.isEstablished()) return;
    try { s.sendDTMF(digit, { transportType: "RFC2833", duration: 120 }); } catch (err) { toast(`DTMF: ${err.message}`, "error"); }
  }

  render() {
    const [label, cls] = STATES[this.state] || [this.state, ""];
    this.el.status.textContent = label;
    this.el.status.className = `badge ${cls}`;
    this.root.dataset.state = this.state;
    this.el.detail.textContent = this.detail;
    const s = this.session;
    const live = Boolean(s?.isEstablished());
    this.root.dataset.call = s ? (this.incoming ? "ringing" : live ? (this.held ? "held" : "talking") : "connecting") : "idle";
    this.root.classList.toggle("ringing", Boolean(s && this.incoming));
    clear(this.el.call, s
      ? h("p", {}, this.incoming ? "Incoming call from " : "Call with ", h("strong", { id: "sp-caller" }, this.caller),
        this.held ? " · on hold" : "", this.muted ? " · muted" : "")
      : h("p", { class: "empty" }, this.state === "registered" ? "Ready for calls." : "No call."));
    const items = [];
    if (s && this.incoming) {
      items.push(h("button", { id: "sp-answer", class: "primary", type: "button", on: { click: () => this.answer() } }, "Answer"));
    }
    if (s) {
      items.push(h("button", { id: "sp-hangup", class: "danger", type: "button", on: { click: () => this.hangup() } },
        this.incoming ? "Decline" : "Hang up"));
    }
    if (live) {
      items.push(h("button", { id: "sp-hold", type: "button", on: { click: () => this.toggleHold() } }, this.held ? "Resume" : "Hold"));
      items.push(h("button", { id: "sp-mute", type: "button", on: { click: () => this.toggleMute() } }, this.muted ? "Unmute" : "Mute"));
    }
    clear(this.el.buttons, items);
    for (const key of this.el.keypad.children) key.disabled = !live;
  }
}
