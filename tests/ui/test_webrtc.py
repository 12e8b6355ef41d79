"""The agent desktop's browser phone (WebRTC) on real calls: Chromium registers over secure WebSocket with the
agent's own phone (a phone marked webrtc), answers a real queue call from a SIP caller on the trunk, and audio is
proven both ways and through the recording; a supervisor's whisper is measured inside the page.

The browser's microphone is a WAV file with the agent's tone (Chromium's fake capture device); the caller plays
its own tone and records what it receives; the supervisor's phone plays a third one. What reaches the browser is
measured with a WebAudio AnalyserNode that this test attaches to the remote stream of the page's <audio> element
(nothing of it is in the product's code).
"""

from __future__ import annotations

import array
import asyncio
import math
import secrets
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from sim.baresip import BaresipPhone
from tests.live.scene import SUP_TONE, start_trunk_caller, tone_seconds
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import acd, api, phone_for  # noqa: F401  (acd: a fixture, used by name)
from tests.live.test_recording import http_get
from tests.live_stack import AGENT_TONE, CALLER_TONE, LiveStack
from tests.ui.conftest import CHROMIUM, Ui

pytestmark = [pytest.mark.live, pytest.mark.ui, pytest.mark.asyncio]

CALLER = "+493055507777"
BROWSER_TONE = AGENT_TONE  # 1300 Hz: what the browser's (fake) microphone plays
TALK_S = 3.0
WHISPER_S = 3.0
FRAME_S = 0.1  # the in-page meter's period

# Attached to the page's remote stream by the test (page.evaluate): every 100 ms the power around the supervisor's,
# the caller's and the browser's own frequency, and the power of the whole spectrum.
METER_JS = """([sup, caller, own]) => {
  const audio = document.getElementById('sp-audio');
  const ctx = new AudioContext();
  const an = ctx.createAnalyser();
  an.fftSize = 4096;
  an.smoothingTimeConstant = 0;
  ctx.createMediaStreamSource(audio.srcObject).connect(an);
  const buf = new Float32Array(an.frequencyBinCount);
  const binHz = ctx.sampleRate / an.fftSize;
  const band = (f) => { const i = Math.round(f / binHz); let p = 0;
    for (let k = i - 2; k <= i + 2; k++) p += 10 ** (buf[k] / 10); return p; };
  window.__meter = [];
  window.__meterTimer = setInterval(() => {
    an.getFloatFrequencyData(buf);
    let total = 0;
    for (let k = 2; k < buf.length; k++) total += 10 ** (buf[k] / 10);
    window.__meter.push({ t: Date.now() / 1000, sup: band(sup), caller: band(caller), own: band(own), total });
  }, 100);
  return ctx.resume().then(() => ctx.state);
}"""


def _burst_wav(path: Path, seconds: float = 120.0, rate: int = 48000) -> Path:
    """The browser's microphone: bursts of the browser's tone (250 ms on, 150 ms off), 16-bit mono.

    Bursts, not a steady tone: the browser's noise suppression (on, as for every real agent) takes a steady tone
    for background noise and lowers it by about 20 dB within 2 s (measured); with pauses it passes like speech.
    """
    on, off = round(0.25 * rate), round(0.15 * rate)
    ramp = round(0.005 * rate)  # no clicks at the edges
    block = array.array("h", [0] * (on + off))
    for i in range(on):
        gain = min(1.0, i / ramp, (on - 1 - i) / ramp)
        block[i] = int(0.6 * 32767 * gain * math.sin(2 * math.pi * BROWSER_TONE * i / rate))
    data = block.tobytes() * math.ceil(seconds * rate / len(block))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def _share(frames: list[dict[str, float]], key: str, t0: float, t1: float, min_share: float = 0.25) -> float:
    """Seconds in [t0, t1] where `key`'s band holds at least `min_share` of all the power received."""
    hits = [f for f in frames if t0 <= f["t"] <= t1 and f["total"] > 0 and f[key] / f["total"] >= min_share]
    return len(hits) * FRAME_S


@pytest_asyncio.fixture
async def webrtc_phone(live_stack: LiveStack) -> AsyncIterator[dict[str, Any]]:
    """A browser phone made over the API (set up before the `acd` fixture, so removed after its agent)."""
    name = f"web-{secrets.token_hex(3)}"
    phone = await api(live_stack, "POST", "/api/v1/phones", {"name": name, "webrtc": True}, 201)
    assert phone["webrtc"] is True and len(phone["password"]) >= 24, phone
    yield phone
    await api(live_stack, "DELETE", f"/api/v1/phones/{name}", None, 204)


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    """Chromium with a fake microphone that plays the browser's tone, the self-signed WSS certificate accepted."""
    folder = Path(tempfile.mkdtemp(prefix="ccpbx-webrtc-"))
    wav = _burst_wav(folder / "mic.wav")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--ignore-certificate-errors",
            "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required"])
        try:
            yield b
        finally:
            await b.close()
    shutil.rmtree(folder, ignore_errors=True)


async def test_browser_phone_registers_answers_a_queue_call_with_audio_both_ways_and_hears_a_whisper(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], webrtc_phone: dict[str, Any],
    acd: Any, browser: Browser,  # noqa: F811
) -> None:
    live = live_stack
    tag = secrets.token_hex(3)
    phone = webrtc_phone["name"]
    team = f"t-{tag}"
    await api(live, "POST", "/api/v1/teams", {"name": team}, 201)
    s = await acd({"web": (phone, 3)})
    (agent,) = s.agents
    await api(live, "PUT", f"/api/v1/agents/{agent}", {"team": team})
    ui = Ui(live, browser)
    made_users: list[str] = []
    try:
        agent_user = await api(live, "POST", "/api/v1/users", {"name": f"a-{tag}", "role": "agent", "agent": agent},
                               201)
        made_users.append(agent_user["name"])
        sup_user = await api(live, "POST", "/api/v1/users",
                             {"name": f"s-{tag}", "role": "supervisor", "team": team, "phone": "super1"}, 201)
        made_users.append(sup_user["name"])
        password = f"pw-{tag}-0123456789"
        await api(live, "PUT", f"/api/v1/users/a-{tag}/password", {"password": password})

        # The credentials go to this agent (and admins) only, and only for a browser phone.
        status, conf = await asyncio.to_thread(live.api, "GET", f"/api/v1/agents/{agent}/softphone", None,
                                               agent_user["token"])
        assert status == 200 and conf["user"] == phone and conf["password"] == webrtc_phone["password"], conf
        assert conf["ws_url"] == f"wss://127.0.0.1:{live.cfg.sip.wss_port}/ws", conf
        status, _ = await asyncio.to_thread(live.api, "GET", f"/api/v1/agents/{agent}/softphone", None,
                                            sup_user["token"])
        assert status == 403

        # Sign in: the page registers the browser phone over WSS (Asterisk reports the new contact).
        sup_phone = await phone_for(live, phones, "super1", SUP_TONE)
        mark = ami.mark()
        page: Page = await ui.sign_in(f"a-{tag}", password)
        card = page.locator("#softphone")
        await expect(card).to_have_attribute("data-state", "registered", timeout=20000)
        reg = await ami.wait_for("ContactStatus", lambda e: e.fields.get("AOR") == phone, since=mark, timeout=10)
        assert "transport=ws" in (reg.fields.get("URI") or "").lower(), reg.fields
        await ami.wait_for("ContactStatus", lambda e: e.fields.get("AOR") == phone
                           and e.fields.get("ContactStatus") == "Reachable", since=mark, timeout=10)
        assert await page.locator("#sp-mic option").count() >= 1
        await ui.shot(page, "webrtc-registered")

        # A real queue call from the trunk rings in the page; the agent answers there.
        await api(live, "POST", f"/api/v1/agents/{agent}/login")
        await expect(page.locator("#state")).to_contain_text("Ready")
        caller = await start_trunk_caller(live, phones, CALLER)
        mark = ami.mark()
        await caller.dial(f"sip:{s.did}@{live.sip_registrar}", timeout=15)
        answer = page.locator("#sp-answer")
        await expect(answer).to_be_visible(timeout=20000)
        await expect(page.locator("#sp-caller")).to_contain_text(CALLER)
        await ui.shot(page, "webrtc-ringing")
        await answer.click()
        connect = await ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == agent, since=mark)
        await expect(card).to_have_attribute("data-call", "talking", timeout=10000)
        await expect(page.locator("#state")).to_contain_text("On call")
        await expect(page.locator("#call-caller")).to_have_text(CALLER)

        async def recording() -> dict[str, Any] | None:
            status, body = await asyncio.to_thread(live.api, "GET", f"/api/v1/agents/{agent}/recording", None,
                                                   agent_user["token"])
            assert status == 200, body
            return body["recording"]
        rec = await eventually(recording, timeout=10, what="the call's recording")

        state = await page.evaluate(METER_JS, [SUP_TONE, CALLER_TONE, BROWSER_TONE])
        assert state == "running", state
        await asyncio.sleep(TALK_S)
        dtmf_mark = ami.mark()
        await page.locator('#sp-keypad button[data-digit="5"]').click()  # DTMF over RTP (RFC 4733)
        await ami.wait_for("DTMFEnd", lambda e: e.fields.get("Digit") == "5"
                           and (e.fields.get("Channel") or "").startswith(f"PJSIP/{phone}-"),
                           since=dtmf_mark, timeout=5)
        await ui.shot(page, "webrtc-on-call")

        # A supervisor whispers: the browser agent hears the supervisor's tone.
        status, sess = await asyncio.to_thread(live.api, "POST", "/api/v1/supervision",
                                               {"agent": agent, "mode": "whisper"}, sup_user["token"])
        assert status == 201, sess

        async def active() -> dict[str, Any] | None:
            status, body = await asyncio.to_thread(live.api, "GET", f"/api/v1/supervision/{sess['id']}", None,
                                                   sup_user["token"])
            assert status == 200 and body["status"] in ("ringing", "active"), body
            return body if body["status"] == "active" else None
        await eventually(active, timeout=15, what="the whisper session answered")
        spy = await ami.wait_for("ChanSpyStart", since=mark, timeout=15)
        whisper_from = max(time.time(), spy.timestamp) + 0.5
        await asyncio.sleep(WHISPER_S)
        whisper_to = time.time()
        status, _ = await asyncio.to_thread(live.api, "DELETE", f"/api/v1/supervision/{sess['id']}", None,
                                            sup_user["token"])
        assert status == 200
        await asyncio.sleep(1.0)

        # Hold and resume from the browser phone (a re-INVITE), then the caller hangs up.
        await page.locator("#sp-hold").click()
        await expect(card).to_have_attribute("data-call", "held", timeout=5000)
        await page.locator("#sp-hold").click()
        await expect(card).to_have_attribute("data-call", "talking", timeout=5000)
        frames: list[dict[str, float]] = await page.evaluate(
            "() => { clearInterval(window.__meterTimer); return window.__meter; }")
        hangup_mark = ami.mark()
        await caller.hangup()
        await ami.wait_for("Hangup", lambda e: e.uniqueid == connect.linkedid, since=hangup_mark)
        await expect(card).to_have_attribute("data-call", "idle", timeout=10000)
        await expect(page.locator("#state")).not_to_contain_text("On call")

        # What the browser received: the caller throughout, the supervisor during the whisper only.
        t_first = frames[0]["t"]
        heard_sup = _share(frames, "sup", whisper_from, whisper_to)
        sup_before = _share(frames, "sup", t_first, whisper_from - 1.0)
        heard_caller = _share(frames, "caller", t_first, whisper_from - 1.0)
        print(f"browser heard: supervisor {heard_sup:.1f} s of {whisper_to - whisper_from:.1f} s of whisper, "
              f"{sup_before:.1f} s before it; caller {heard_caller:.1f} s of {whisper_from - 1.0 - t_first:.1f} s")
        assert heard_sup > 1.5, f"the whisper reached the browser for {heard_sup:.1f} s"
        assert sup_before < 0.3, f"the supervisor's tone was in the browser before the whisper ({sup_before:.1f} s)"
        assert heard_caller > 2.0, f"the caller reached the browser for {heard_caller:.1f} s"

        # What the caller received: the browser's microphone, and never the whisper.
        caller_wav = caller.recordings()[-1]
        heard_browser = tone_seconds(caller_wav, BROWSER_TONE)
        print(f"caller heard the browser's tone for {heard_browser:.2f} s")
        assert heard_browser > 3.0, f"the caller heard the browser for {heard_browser:.2f} s"
        assert tone_seconds(caller_wav, SUP_TONE) < 0.2

        # The call's recording holds both parties.
        async def finished() -> dict[str, Any] | None:
            status, body = await asyncio.to_thread(live.api, "GET", f"/api/v1/recordings/{rec['id']}", None,
                                                   sup_user["token"])
            return body if status == 200 and body.get("duration_s") else None
        stored = await eventually(finished, timeout=15, what="the recording finished")
        status, _, audio = await asyncio.to_thread(http_get, live, f"/api/v1/recordings/{rec['id']}/audio",
                                                   sup_user["token"])
        assert status == 200 and len(audio) > 44, status
        wav = live.runtime / f"webrtc-{tag}.wav"
        wav.write_bytes(audio)
        rec_caller, rec_browser = tone_seconds(wav, CALLER_TONE), tone_seconds(wav, BROWSER_TONE)
        print(f"recording {stored['duration_s']:.1f} s: caller {rec_caller:.1f} s, browser {rec_browser:.1f} s")
        assert rec_caller > 3.0 and rec_browser > 3.0, (rec_caller, rec_browser)
        assert sup_phone.recordings(), "the supervisor's phone took the whisper call"
    finally:
        await api(live, "POST", f"/api/v1/agents/{agent}/force", {"state": "logged_out"}, None)
        for name in made_users:
            await api(live, "DELETE", f"/api/v1/users/{name}", None, 204)
    assert not ui.errors, f"JavaScript errors on the page: {ui.errors}"


async def test_browser_phone_registers_again_after_the_connection_drops_and_shows_a_blocked_microphone(
    live_stack: LiveStack, ami: EventRecorder, webrtc_phone: dict[str, Any], browser: Browser,
) -> None:
    live = live_stack
    tag = secrets.token_hex(3)
    agent, user, password = f"w-{tag}", f"a-{tag}", f"pw-{tag}-0123456789"
    await api(live, "POST", "/api/v1/agents", {"name": agent, "phone": webrtc_phone["name"]}, 201)
    await api(live, "POST", "/api/v1/users", {"name": user, "role": "agent", "agent": agent}, 201)
    await api(live, "PUT", f"/api/v1/users/{user}/password", {"password": password})
    ui = Ui(live, browser)
    try:
        page = await ui.sign_in(user, password)
        card = page.locator("#softphone")
        await expect(card).to_have_attribute("data-state", "registered", timeout=20000)
        # Drop the WebSocket under both ends (as a network failure would): the page says so, JsSIP reconnects
        # and registers again by itself.
        mark = ami.mark()
        port = str(live.cfg.sip.wss_port)
        for side in ("sport", "dport"):
            await asyncio.to_thread(subprocess.run, ["ss", "-K", "-t", side, "=", f":{port}"], capture_output=True,
                                    check=False)
        await expect(card).to_have_attribute("data-state", "disconnected", timeout=5000)
        await ui.shot(page, "webrtc-disconnected")
        await expect(card).to_have_attribute("data-state", "registered", timeout=30000)
        await ami.wait_for("ContactStatus", lambda e: e.fields.get("AOR") == webrtc_phone["name"]
                           and e.fields.get("ContactStatus") in ("Created", "Reachable"), since=mark, timeout=10)

        # A browser that refuses the microphone (no fake permission prompt: headless denies it) shows that state.
        async with async_playwright() as pw:
            strict = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--use-fake-device-for-media-stream",
                "--ignore-certificate-errors"])
            try:
                denied = Ui(live, strict)
                other = await denied.sign_in(user, password)
                await expect(other.locator("#softphone")).to_have_attribute("data-state", "mic-denied", timeout=15000)
                await expect(other.locator("#sp-status")).to_have_text("Microphone blocked")
                await denied.shot(other, "webrtc-mic-denied")
                assert not denied.errors, denied.errors
            finally:
                await strict.close()
    finally:
        await api(live, "DELETE", f"/api/v1/users/{user}", None, 204)
        await api(live, "DELETE", f"/api/v1/agents/{agent}", None, 204)
    assert not ui.errors, f"JavaScript errors on the page: {ui.errors}"
