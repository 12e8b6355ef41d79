"""Two real baresip phones calling each other directly (no PBX): call control, audio both ways, DTMF.

Needs Debian's ``baresip-core`` (skipped without it); takes ~5 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Any, cast

import pytest

from sim.baresip import BaresipError, BaresipPhone, CallFailed, baresip_available
from sim.tones import detect_tone, read_wav

pytestmark = pytest.mark.skipif(not baresip_available(), reason="baresip (baresip-core) not installed")

TALK_S = 2.0


def _phone(tmp_path: Path, name: str, tone: float, **kw: object) -> BaresipPhone:
    return BaresipPhone(
        name,
        workdir=tmp_path / name,
        sip_user=name,
        sip_password="",
        registrar=None,
        tone_hz=tone,
        register=False,
        tone_seconds=60,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.asyncio
async def test_direct_call_audio_and_dtmf(tmp_path: Path) -> None:
    a = _phone(tmp_path, "a", 440)
    b = _phone(tmp_path, "b", 1000)
    await asyncio.gather(a.start(), b.start())
    try:
        assert a.sip_port != b.sip_port
        est_a = await a.dial(b.uri, timeout=5)
        est_b = await b.wait_event("CALL_ESTABLISHED", timeout=5)
        assert est_a.call_id == est_b.call_id and est_a.call_id
        assert est_a.direction == "outgoing" and est_b.direction == "incoming"
        assert not b.find_events("CALL_INCOMING")  # auto-answer sends none (documented quirk)

        mark_b = b.mark()
        await a.send_dtmf("1*#")
        for _ in range(3):
            await b.wait_event("CALL_DTMF_END", timeout=3, since=mark_b)
            mark_b = b.find_events("CALL_DTMF_END", since=mark_b)[0].seq + 1
        assert b.received_dtmf(since=est_b.seq) == "1*#"

        await asyncio.sleep(TALK_S)  # audio must flow for a while: nothing to await here
        closed_a = await a.hangup(timeout=5)
        assert closed_a is not None and closed_a.type == "CALL_CLOSED"
        closed_b = await b.wait_event("CALL_CLOSED", timeout=5)
        assert "peer" in closed_b.param
        assert not a.in_call and not b.in_call
    finally:
        await asyncio.gather(a.stop(), b.stop())

    assert not a.running
    [rec_a] = a.recordings()
    [rec_b] = b.recordings()
    samples, rate = read_wav(rec_a)
    assert rate == 8000 and len(samples) > TALK_S * rate
    heard_by_a = detect_tone(rec_a, 1000)
    assert heard_by_a.detected and heard_by_a.share > 0.6, heard_by_a
    assert not detect_tone(rec_a, 440)
    heard_by_b = detect_tone(rec_b, 440)
    assert heard_by_b.detected and heard_by_b.share > 0.6, heard_by_b
    assert not detect_tone(rec_b, 1000)
    # What each phone sent is its own tone.
    assert detect_tone(a.sent_recordings()[0], 440)
    assert (tmp_path / "a" / "baresip.log").read_text().count("baresip is ready.") == 1
    assert "CALL_ESTABLISHED" in (tmp_path / "a" / "ctrl.log").read_text()


@pytest.mark.asyncio
async def test_failures_are_reported_not_hung(tmp_path: Path) -> None:
    a = _phone(tmp_path, "a", 440, record=False)
    b = _phone(tmp_path, "b", 1000, auto_answer=False)
    async with a, b:
        # Unknown user at B: 404, raised as CallFailed with the reason.
        with pytest.raises(CallFailed) as err:
            await a.dial(f"sip:nobody@127.0.0.1:{b.sip_port}", timeout=5)
        assert "404" in err.value.reason
        assert not a.in_call

        # Manual answer: B rings until answer(); A waits.
        mark = a.mark()
        await a.dial_nowait(b.uri)
        await a.wait_event("CALL_RINGING", timeout=5, since=mark)
        await b.answer(timeout=5)
        await a.wait_event("CALL_ESTABLISHED", timeout=5, since=mark)
        assert await b.hangup() is not None
        await a.wait_event("CALL_CLOSED", timeout=5)
        assert await a.hangup() is None  # no call: a no-op

        # Second call on the same phones sees only its own events.
        mark = a.mark()
        await a.dial_nowait(b.uri)
        ev = await a.wait_event("CALL_RINGING", timeout=5)
        assert ev.seq >= mark
        await b.answer(timeout=5)

        # One call per phone: a third party gets 486 while B talks to A.
        c = _phone(tmp_path, "c", 700, record=False)
        async with c:
            with pytest.raises(CallFailed, match="486"):
                await c.dial(b.uri, timeout=5)
        await a.hangup()

        with pytest.raises(TimeoutError):
            await a.wait_event("REGISTER_OK", timeout=0.2)
        with pytest.raises(BaresipError):
            await a.command("no_such_command")
    # Stopped: waiting fails at once instead of running into the timeout.
    with pytest.raises(BaresipError):
        await a.wait_event("CALL_CLOSED", timeout=30)


class _FakeRegistrar(asyncio.DatagramProtocol):
    """Just enough of a PBX over UDP: digest-checked REGISTER (401, then 200 or 403) and INVITE → 486."""

    REALM = "fake"
    NONCE = "n0nce"

    def __init__(self, passwords: dict[str, str]) -> None:
        self.passwords = passwords
        self.invites: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance-checked: 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        text = data.decode(errors="replace")
        head, _, _ = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        method, ruri = lines[0].split(" ")[:2]
        if method in ("ACK", "SIP/2.0"):
            return
        hdrs = [ln for ln in lines[1:] if re.match(r"(?i)^(via|from|to|call-id|cseq|contact):", ln)]
        if method == "REGISTER":
            auth = next((ln for ln in lines if ln.lower().startswith("authorization:")), None)
            if auth is None:
                self._reply(
                    addr,
                    "401 Unauthorized",
                    hdrs,
                    f'WWW-Authenticate: Digest realm="{self.REALM}", nonce="{self.NONCE}", algorithm=MD5',
                )
                return
            f = dict(re.findall(r'(\w+)="([^"]*)"', auth))
            ha1 = _md5(f"{f['username']}:{self.REALM}:{self.passwords.get(f['username'], '')}")
            expect = _md5(f"{ha1}:{self.NONCE}:{_md5('REGISTER:' + f['uri'])}")
            ok = f.get("response") == expect
            self._reply(addr, "200 OK" if ok else "403 Forbidden", hdrs, "Expires: 300" if ok else "")
        elif method == "INVITE":
            self.invites.append(ruri)
            self._reply(addr, "486 Busy Here", [h for h in hdrs if not h.lower().startswith("contact")])

    def _reply(self, addr: tuple[str | Any, int], status: str, hdrs: list[str], extra: str = "") -> None:
        out = [f"SIP/2.0 {status}"]
        out += [h + ";tag=fake1" if h.lower().startswith("to:") else h for h in hdrs]
        if extra:
            out.append(extra)
        out += ["Content-Length: 0", "", ""]
        assert self.transport is not None
        self.transport.sendto("\r\n".join(out).encode(), addr)


def _md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


@pytest.mark.asyncio
async def test_register_and_dial_a_number(tmp_path: Path) -> None:
    """Digest REGISTER, REGISTER_FAIL on a wrong password, a bare number dialled via the registrar."""
    fake = _FakeRegistrar({"1001": "s3cret", "1002": "right"})
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: fake, local_addr=("127.0.0.1", 0)
    )
    registrar = f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
    good = BaresipPhone(
        "good",
        workdir=tmp_path / "good",
        sip_user="1001",
        sip_password="s3cret",
        registrar=registrar,
        tone_hz=500,
        tone_seconds=60,
        record=False,
    )
    bad = BaresipPhone(
        "bad",
        workdir=tmp_path / "bad",
        sip_user="1002",
        sip_password="wrong",
        registrar=registrar,
        tone_hz=600,
        tone_seconds=60,
        record=False,
    )
    try:
        await asyncio.gather(good.start(), bad.start())
        ok = await good.wait_registered(timeout=5)
        assert ok.param == "200 OK"
        with pytest.raises(BaresipError, match="403"):
            await bad.wait_registered(timeout=5)
        with pytest.raises(CallFailed, match="486"):
            await good.dial("2000", timeout=5)
        assert fake.invites == [f"sip:2000@{registrar};transport=udp"]
    finally:
        await asyncio.gather(good.stop(), bad.stop())
        transport.close()
