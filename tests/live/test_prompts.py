"""An uploaded prompt played on a real call: a 1000 Hz tone uploaded as `greet` (16 kHz stereo WAV, converted to
8 kHz mono by the service), a flow `play custom/greet -> queue`, and the caller hears the tone."""

from __future__ import annotations

import asyncio
import json
import secrets
import struct
import urllib.error
import urllib.request
import wave
from pathlib import Path
from typing import Any

import pytest

from sim.baresip import BaresipPhone
from sim.tones import detect_tone, synth_samples
from tests.live.support import EventRecorder
from tests.live.test_acd import acd, api, phone_for  # noqa: F401  (acd is a fixture)
from tests.live.test_call_flow import start_caller
from tests.live_stack import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]
PROMPT_TONE = 1000.0


def put_raw(live_stack: LiveStack, path: str, data: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://{live_stack.cfg.http.host}:{live_stack.cfg.http.port}{path}", data=data, method="PUT",
        headers={"Authorization": f"Bearer {live_stack.cfg.http.admin_token}", "Content-Type": "audio/wav"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def tone_wav(path: Path, seconds: float) -> bytes:
    samples = synth_samples(PROMPT_TONE, seconds, rate=16000)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join(struct.pack("<hh", int(s * 32767), int(s * 32767)) for s in samples))
    return path.read_bytes()


async def test_uploaded_prompt_is_played_to_the_caller(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,  # noqa: F811
) -> None:
    s = await acd({"pat": ("agent3", 3)})
    (agent,) = s.agents
    await phone_for(live_stack, phones, "agent3")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    prompt = f"greet-{secrets.token_hex(3)}"
    data = tone_wav(live_stack.runtime / f"{prompt}.wav", 4.0)
    status, saved = await asyncio.to_thread(put_raw, live_stack, f"/api/v1/prompts/{prompt}", data)
    assert status == 200 and abs(saved["duration_s"] - 4.0) < 0.05, saved
    name, did = f"f-{secrets.token_hex(3)}", f"4{secrets.randbelow(10**6):06d}"
    document = {"start": "hi", "nodes": {"hi": {"type": "play", "prompt": f"custom/{prompt}", "next": "q"},
                                         "q": {"type": "queue", "queue": s.queue}}}
    await api(live_stack, "POST", "/api/v1/flows", {"name": name, "document": document}, 201)
    await api(live_stack, "POST", f"/api/v1/flows/{name}/publish")
    await api(live_stack, "POST", "/api/v1/routes", {"did": did, "ivr_flow": name}, 201)
    try:
        caller = await start_caller(live_stack, phones)
        mark = ami.mark()
        await caller.dial(f"sip:{did}@{live_stack.sip_registrar}", timeout=15)
        played = await ami.wait_for("AGIExecEnd", lambda e: e.fields.get("Command", "").upper().startswith(
            "STREAM FILE"), since=mark, timeout=20)
        assert f"/var/spool/asterisk/prompts/{prompt}" in played.fields.get("Command", ""), played.fields
        started = ami.find("AGIExecStart", lambda e: e.fields.get("CommandId") == played.fields.get("CommandId")
                           and e.uniqueid == played.uniqueid, since=mark)
        assert started and played.timestamp - started[-1].timestamp > 3.5  # a missing file ends at once
        await ami.wait_for("AgentConnect", lambda e: True, since=mark, timeout=20)
        await asyncio.sleep(1.0)
        await caller.hangup()
        heard = detect_tone(caller.recordings()[-1], PROMPT_TONE, min_share=0.2)
        assert heard, heard
    finally:
        await api(live_stack, "DELETE", f"/api/v1/routes/{did}", None, 204)
        await api(live_stack, "DELETE", f"/api/v1/flows/{name}", None, 204)
        await asyncio.to_thread(live_stack.api, "DELETE", f"/api/v1/prompts/{prompt}")
