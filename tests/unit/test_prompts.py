"""Uploaded prompts with the real sox: converted to 8 kHz mono (the tone survives), garbage and odd names refused,
the REST API's roles and limits, and the executor's `custom/<name>` mapping."""

from __future__ import annotations

import asyncio
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from acd.config_store import ConfigStore
from ivr.executor import FlowExecutor, pbx_sound
from ivr.flow_model import Flow
from ivr.prompts import MAX_BYTES, PromptError, PromptStore, sniff
from reporting.live import LiveState
from reporting.migrate import migrate
from sim.tones import detect_tone, synth_samples, write_tone_wav
from telephony.fastagi import AgiResult, _check_sound
from web.app import create_app

ADMIN = "p" * 40
pytestmark = pytest.mark.asyncio
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")


def stereo_tone_16k(path: Path, freq: float = 1000.0, seconds: float = 1.0) -> bytes:
    import struct
    samples = synth_samples(freq, seconds, rate=16000)
    frames = b"".join(struct.pack("<hh", int(s * 32767), int(s * 32767)) for s in samples)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(frames)
    return path.read_bytes()


@needs_sox
async def test_wav_is_converted_to_8k_mono_and_keeps_its_tone(tmp_path: Path) -> None:
    store = PromptStore(tmp_path / "prompts")
    data = stereo_tone_16k(tmp_path / "in.wav")
    saved = await store.save("greet", data)
    out = tmp_path / "prompts" / "greet.wav"
    assert saved["name"] == "greet" and abs(saved["duration_s"] - 1.0) < 0.01 and saved["size"] == out.stat().st_size
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    assert detect_tone(out, 1000.0, min_share=0.9)
    assert not detect_tone(out, 600.0)
    assert [p["name"] for p in await store.list()] == ["greet"]
    assert [p.name for p in (tmp_path / "prompts").iterdir()] == ["greet.wav"]  # no temp files left
    # replacing keeps one file; deleting removes it; a second delete is 404
    write_tone_wav(tmp_path / "b.wav", 600, 0.5)
    assert abs((await store.save("greet", (tmp_path / "b.wav").read_bytes()))["duration_s"] - 0.5) < 0.01
    assert detect_tone(out, 600.0, min_share=0.9)
    await store.delete("greet")
    assert await store.list() == []
    with pytest.raises(PromptError) as exc:
        await store.delete("greet")
    assert exc.value.status == 404


@needs_sox
@pytest.mark.parametrize("data", [b"not audio at all" * 100, b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 4,
                                  b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 500])
async def test_garbage_is_refused_with_422(tmp_path: Path, data: bytes) -> None:
    store = PromptStore(tmp_path / "prompts")
    with pytest.raises(PromptError) as exc:
        await store.save("bad", data)
    assert exc.value.status == 422
    assert not list((tmp_path / "prompts").glob("*")) if (tmp_path / "prompts").exists() else True


@needs_sox
async def test_mp3_upload(tmp_path: Path) -> None:
    write_tone_wav(tmp_path / "t.wav", 1000, 1.0, rate=16000)
    mp3 = tmp_path / "t.mp3"
    proc = await asyncio.create_subprocess_exec("sox", str(tmp_path / "t.wav"), str(mp3),
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    if await proc.wait() != 0:
        pytest.skip("this sox cannot write MP3 (libsox-fmt-mp3 missing)")
    data = mp3.read_bytes()
    assert sniff(data) == "mp3"
    store = PromptStore(tmp_path / "prompts")
    saved = await store.save("mp3tone", data)
    assert saved["duration_s"] > 0.9
    assert detect_tone(tmp_path / "prompts" / "mp3tone.wav", 1000.0, min_share=0.8)


async def test_sniff_uses_the_bytes_only() -> None:
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "wav"
    assert sniff(b"ID3\x04rest") == "mp3"
    assert sniff(b"\xff\xfb\x90\x64" + b"\x00" * 10) == "mp3"
    assert sniff(b"\xff\xff\xff\xff") is None
    assert sniff(b"<html>") is None and sniff(b"") is None


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "A", "x" * 65, "", "a.wav", "a b", "-a",
                                  "/etc/passwd", "a\nb", "é"])
async def test_odd_names_are_refused(tmp_path: Path, name: str) -> None:
    store = PromptStore(tmp_path / "prompts")
    with pytest.raises(PromptError) as exc:
        await store.save(name, b"RIFF\x00\x00\x00\x00WAVE")
    assert exc.value.status == 422
    with pytest.raises(ValueError):
        store.path_in_pbx(name)
    with pytest.raises(ValueError):
        pbx_sound("custom/" + name)
    assert not (tmp_path / "prompts").exists() or not list((tmp_path / "prompts").iterdir())


async def test_too_large_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptError) as exc:
        await PromptStore(tmp_path).save("big", b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * MAX_BYTES)
    assert exc.value.status == 413


async def test_custom_prompt_names_map_to_the_pbx_folder() -> None:
    assert pbx_sound("custom/greet") == "/var/spool/asterisk/prompts/greet"
    assert pbx_sound("beep") == "beep" and pbx_sound("digits/1") == "digits/1"
    assert PromptStore.path_in_pbx("a-b_1") == "/var/spool/asterisk/prompts/a-b_1"


class RawSession:
    """An AgiSession stand-in that records what is played (and any raw AGI line)."""

    def __init__(self, typed: list[str]) -> None:
        self.typed = list(typed)
        self.played: list[str] = []
        self.lines: list[str] = []
        self.env = {"agi_uniqueid": "u.1"}
        self.params: dict[str, str] = {}

    async def get_data(self, prompt: str, timeout_ms: int = 5000, max_digits: int = 1) -> str:
        self.played.append(prompt)
        return self.typed.pop(0) if self.typed else ""

    async def stream_file(self, name: str, escape_digits: str = "") -> str:
        self.played.append(name)
        return ""

    async def command(self, cmd: str) -> AgiResult:
        self.lines.append(cmd)
        if cmd.startswith("GET DATA"):
            return AgiResult(200, self.typed.pop(0) if self.typed else "", "")
        return AgiResult(200, "0", "", "endpos=100")


async def test_executor_plays_custom_prompts_from_the_pbx_folder() -> None:
    flow = Flow.model_validate({"start": "hi", "nodes": {
        "hi": {"type": "play", "prompt": "custom/greet", "next": "m"},
        "m": {"type": "menu", "prompt": "custom/menu-1", "options": {"1": "q"}, "timeout": "bye", "invalid": "bye"},
        "q": {"type": "queue", "queue": "sales"}, "bye": {"type": "hangup"}}})
    session = RawSession(["1"])
    out = await FlowExecutor().run(session, flow, "f", 1, {})  # type: ignore[arg-type]
    assert out.kind == "queue" and out.queue == "sales"
    assert session.played == ["/var/spool/asterisk/prompts/greet", "/var/spool/asterisk/prompts/menu-1"]


@pytest.mark.parametrize(("name", "ok"), [
    ("/var/spool/asterisk/prompts/greet", True), ("hello-world", True), ("custom/x", True),
    ("/var/spool/asterisk/prompts/../../etc/passwd", False), ("/etc/passwd", False),
    ("/var/spool/asterisk/prompts/Greet", False), ("../x", False), ("a b", False),
])
async def test_agi_accepts_only_stock_names_and_the_prompt_folder(name: str, ok: bool) -> None:
    if ok:
        _check_sound(name)
    else:
        with pytest.raises(ValueError):
            _check_sound(name)


# --------------------------------------------------------------------------------------------------- REST


@pytest_asyncio.fixture
async def api(pg_db: str, tmp_path: Path) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=2)
    await migrate(pool)

    async def healthy() -> dict[str, Any]:
        return {"checks": {}}

    app = create_app(admin_token=ADMIN, health=healthy, membership=None,  # type: ignore[arg-type]
                     live_state=LiveState(), pool=pool, config_store=ConfigStore(pool),
                     prompts=PromptStore(tmp_path / "prompts"))
    async with TestClient(TestServer(app)) as client:
        yield client
    await pool.close()


def hdr(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@needs_sox
async def test_api_upload_list_delete_and_roles(api: TestClient, tmp_path: Path) -> None:  # type: ignore[type-arg]
    data = stereo_tone_16k(tmp_path / "in.wav", seconds=2.0)  # 128 KB: more than the app's 64 KiB body limit
    assert len(data) > 64 * 1024
    resp = await api.put("/api/v1/prompts/greet", data=data, headers=hdr())
    body = await resp.json()
    assert resp.status == 200, body
    assert body["name"] == "greet" and body["flow_name"] == "custom/greet" and abs(body["duration_s"] - 2) < 0.01

    r = await api.post("/api/v1/users", json={"name": "sam", "role": "supervisor"}, headers=hdr())
    sup = (await r.json())["token"]
    await api.post("/api/v1/agents", json={"name": "dee"}, headers=hdr())
    r = await api.post("/api/v1/users", json={"name": "dee", "role": "agent", "agent": "dee"}, headers=hdr())
    agent = (await r.json())["token"]

    for token in (ADMIN, sup):
        r = await api.get("/api/v1/prompts", headers=hdr(token))
        assert r.status == 200 and [p["name"] for p in await r.json()] == ["greet"]
    assert (await api.get("/api/v1/prompts", headers=hdr(agent))).status == 403
    assert (await api.get("/api/v1/prompts")).status == 401
    r = await api.put("/api/v1/prompts/other", data=data, headers=hdr(sup))
    assert r.status == 403 and (await r.json())["error"] == "forbidden"
    assert (await api.delete("/api/v1/prompts/greet", headers=hdr(sup))).status == 403

    r = await api.put("/api/v1/prompts/junk", data=b"hello world" * 10, headers=hdr())
    assert r.status == 422 and set(await r.json()) >= {"error", "message"}
    r = await api.put("/api/v1/prompts/Bad.Name", data=data, headers=hdr())
    assert r.status == 422 and (await r.json())["error"] == "invalid_name"
    r = await api.put("/api/v1/prompts/empty", data=b"", headers=hdr())
    assert r.status == 422

    assert (await api.delete("/api/v1/prompts/greet", headers=hdr())).status == 204
    r = await api.delete("/api/v1/prompts/greet", headers=hdr())
    assert r.status == 404 and (await r.json())["error"] == "not_found"
    assert await (await api.get("/api/v1/prompts", headers=hdr())).json() == []


async def test_api_refuses_more_than_10_mb(api: TestClient) -> None:  # type: ignore[type-arg]
    big = b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * MAX_BYTES

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length, so the streaming bound is used
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]

    r = await api.put("/api/v1/prompts/big", data=big, headers=hdr())
    assert r.status == 413 and (await r.json())["error"] == "too_large"
    r = await api.put("/api/v1/prompts/big", data=chunks(), headers=hdr())
    assert r.status == 413
