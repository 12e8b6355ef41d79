"""SIP attacks against the real PBX, with SIPp from other loopback addresses (Linux routes all of 127/8 to lo):

(a) REGISTER password guessing from 127.0.0.2: Asterisk's AMI security events arrive, the service blocks the
    source (nftables) at the threshold, the source then gets no answer at all while a real phone on 127.0.0.1
    registers and calls; the ban ends by itself after `sip_guard.ban_s`, and an admin can lift one early;
(b) dialled strings carrying dialplan separators from the authenticated trunk never make a second leg;
(c) an INVITE without valid credentials is challenged and refused and never becomes a channel.

Every SIPp run is bounded (-m, -l, -timeout, -recv_timeout) and modest (20 calls/s at most).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sim.baresip import BaresipPhone
from telephony.ami import AmiEvent
from telephony.ami.events import SECURITY_FAILURE_EVENTS, SecurityEvent
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import phone_for
from tests.live_stack import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
ATTACKER = "127.0.0.2"  # (a)
TRUNK_SOURCE = "127.0.0.3"  # (b)
INTRUDER = "127.0.0.4"  # (c)


@dataclass
class SippRun:
    rc: int
    log: Path

    @property
    def all_succeeded(self) -> bool:
        return self.rc == 0


def _free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


async def sipp(live: LiveStack, scenario: str, *, source: str, service: str, calls: int = 1, rate: int = 20,
               limit: int = 5, timeout_s: int = 20, recv_timeout_ms: int = 2000, auth: tuple[str, str] | None = None,
               keys: dict[str, str] | None = None) -> SippRun:
    """Run one bounded SIPp scenario from `source` (bound there: -i/-mi with -bind_local); its exit status:
    0 every call succeeded, 1 at least one failed (unexpected message, receive timeout)."""
    logdir = live.runtime / "sipp"
    logdir.mkdir(exist_ok=True)
    tag = f"{Path(scenario).stem}-{secrets.token_hex(3)}"
    argv = ["sipp", live.sip_registrar, "-sf", str(SIPP_DIR / scenario), "-i", source, "-mi", source,
            "-bind_local", "-p", str(_free_port(source)), "-mp", str(_free_port(source)), "-t", "u1",
            "-s", service, "-m", str(calls), "-l", str(limit), "-r", str(rate),
            "-timeout", f"{timeout_s}s", "-timeout_error", "-recv_timeout", str(recv_timeout_ms), "-nostdin",
            "-trace_err", "-error_file", str(logdir / f"{tag}.errors.log")]
    if auth is not None:
        argv += ["-au", auth[0], "-ap", auth[1]]
    for k, v in (keys or {}).items():
        argv += ["-key", k, v]
    out = logdir / f"{tag}.log"
    with out.open("wb") as fh:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=fh,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            rc = await asyncio.wait_for(proc.wait(), timeout_s + 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    assert rc in (0, 1), f"sipp {scenario} exited {rc}: {out.read_text(errors='replace')[-2000:]}"
    return SippRun(rc, out)


def from_source(ip: str) -> Any:
    def match(e: AmiEvent) -> bool:
        return isinstance(e, SecurityEvent) and str(e.remote_ip) == ip
    return match


def failures_from(ami: EventRecorder, ip: str, since: int) -> list[AmiEvent]:
    return [e for e in ami.events[since:] if e.name in SECURITY_FAILURE_EVENTS and from_source(ip)(e)]


async def fence(ami: EventRecorder) -> None:
    """Every event Asterisk raised before this call has been received (AMI delivers in order)."""
    name = f"fence-{secrets.token_hex(4)}"
    mark = ami.mark()
    await ami.client.action("UserEvent", {"UserEvent": name}, as_list=False, timeout=5)
    await ami.wait_for("UserEvent", lambda e: e.get("UserEvent") == name, since=mark, timeout=5)


async def api(live: LiveStack, method: str, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(live.api, method, path)


async def active_ban(live: LiveStack, ip: str) -> dict[str, Any] | None:
    status, body = await api(live, "GET", "/api/v1/security/bans")
    assert status == 200, body
    return next((b for b in body["bans"] if b["address"] == ip and b["active"]), None)


async def probe(live: LiveStack, source: str) -> bool:
    """True when the PBX answers a REGISTER from `source` at all."""
    run = await sipp(live, "register_probe.xml", source=source, service="probe", timeout_s=5, recv_timeout_ms=1500)
    return run.all_succeeded


@pytest_asyncio.fixture
async def no_bans(live_stack: LiveStack) -> AsyncIterator[None]:
    """No test source stays blocked after a test."""
    yield
    for ip in (ATTACKER, TRUNK_SOURCE, INTRUDER):
        status, _ = await api(live_stack, "DELETE", f"/api/v1/security/bans/{ip}")
        assert status in (200, 404)


async def guess_passwords(live: LiveStack, calls: int) -> SippRun:
    return await sipp(live, "register_wrong_password.xml", source=ATTACKER, service="agent1", calls=calls,
                      rate=20, limit=5, timeout_s=30, recv_timeout_ms=1500,
                      auth=("agent1", "wrong-" + secrets.token_hex(8)))


async def test_register_password_guessing_is_blocked_then_unblocked(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], no_bans: None,
) -> None:
    guard = live_stack.cfg.sip_guard
    threshold = guard.threshold
    phone = await phone_for(live_stack, phones, "agent1")  # the real agent1, on 127.0.0.1
    assert await probe(live_stack, ATTACKER), "the PBX must answer the attacker's address before the attack"

    mark = ami.mark()
    burst = threshold + 6
    run = await guess_passwords(live_stack, burst)
    assert not run.all_succeeded  # the calls after the ban got no answer
    await fence(ami)
    failures = failures_from(ami, ATTACKER, mark)
    # Asterisk reported the wrong digests as security events naming the source and the account tried ...
    assert failures and {e.name for e in failures} <= SECURITY_FAILURE_EVENTS
    first = failures[0]
    assert isinstance(first, SecurityEvent) and first.service == "PJSIP" and first.account_id == "agent1"
    assert first.remote_address is not None and first.remote_address.startswith(f"IPV4/UDP/{ATTACKER}/")
    # ... and the source was blocked at the threshold: at most a request or two in flight got through after it.
    assert threshold <= len(failures) <= threshold + 2, [e.name for e in failures]

    ban = await eventually(lambda: active_ban(live_stack, ATTACKER), timeout=5, what="the ban listed")
    assert ban["failures"] == threshold and ban["enforced"] is True and ban["accounts"] == ["agent1"]
    assert ban["reason"] in SECURITY_FAILURE_EVENTS

    # Blocked: no answer at all, and Asterisk does not even see the requests (no challenge sent to the source).
    mark = ami.mark()
    assert not await probe(live_stack, ATTACKER)
    await fence(ami)
    assert not ami.find("ChallengeSent", from_source(ATTACKER), since=mark)
    assert not failures_from(ami, ATTACKER, mark)

    # The PBX's own phones are untouched: a phone registers now and calls; the one registered before is rung.
    agent2 = await phone_for(live_stack, phones, "agent2")
    await agent2.dial(f"sip:600@{live_stack.sip_registrar}", timeout=10)  # echo test: answered
    await agent2.hangup()
    assert phone.running

    # The ban ends by itself (the firewall element's timeout): answered again.
    assert await eventually(lambda: probe(live_stack, ATTACKER), timeout=guard.ban_s + 10, interval=0.2,
                            what="the ban's end")
    assert await active_ban(live_stack, ATTACKER) is None

    # A second burst is blocked again; an admin lifts that ban at once.
    run = await guess_passwords(live_stack, threshold + 2)
    ban = await eventually(lambda: active_ban(live_stack, ATTACKER), timeout=5, what="the second ban")
    assert not await probe(live_stack, ATTACKER)
    status, lifted = await api(live_stack, "DELETE", f"/api/v1/security/bans/{ATTACKER}")
    assert status == 200 and lifted["lifted_by"] == "admin" and lifted["active"] is False, lifted
    assert await probe(live_stack, ATTACKER)
    status, body = await api(live_stack, "GET", "/api/v1/security/bans?all=true")
    mine = [b for b in body["bans"] if b["address"] == ATTACKER]
    assert len(mine) >= 2 and mine[0]["lifted_by"] == "admin"
    status, _ = await api(live_stack, "DELETE", f"/api/v1/security/bans/{ATTACKER}")
    assert status == 404
    status, _ = await api(live_stack, "DELETE", "/api/v1/security/bans/not-an-ip")
    assert status == 422


# Dialled strings from the carrier that try to smuggle a second destination into the dialplan. res_pjsip
# URI-decodes the Request-URI user, so %XX reaches ${EXTEN} decoded.
SMUGGLED = [
    "2000&Local/600%40agents",  # Dial()'s "&" between destinations
    "2000%26Local%2F600%40agents",  # the same, URI-encoded
    "2000,Local/600%40agents",  # an argument separator
    "2000%7CLocal%2F600%40agents",  # the old "|" separator
    "2000$%7BEXTEN%7D",  # ${EXTEN}
    "2000)%26Local%2F600%40agents",  # closing an application's argument list
    "1%22%20%26%20%22",  # 1" & " : breaks out of a quoted $[...] expression
    "2000%22%20=%20%222000",  # 2000" = "2000
    "Local%2F600%40agents",  # no digits first: matches no extension at all
]


@pytest.mark.parametrize("dialled", SMUGGLED)
async def test_separators_in_the_dialled_number_never_make_a_second_leg(
    live_stack: LiveStack, ami: EventRecorder, dialled: str, no_bans: None,
) -> None:
    trunk = live_stack.cfg.sip.trunk
    mark = ami.mark()
    run = await sipp(live_stack, "invite_trunk.xml", source=TRUNK_SOURCE, service=dialled, timeout_s=15,
                     auth=(trunk.user, trunk.password), keys={"from_user": trunk.user})
    assert run.all_succeeded, f"the call was not refused: {run.log.read_text(errors='replace')[-1500:]}"
    await fence(ami)
    created = ami.find("Newchannel", since=mark)
    # At most the trunk's own (rejected) channel; nothing dialled, no Local channel, no IVR.
    assert all((e.channel or "").startswith(f"PJSIP/{trunk.user}-") for e in created), created
    # The INVITE authenticated and reached the dialplan (one channel) unless nothing could match it at all.
    assert len(created) == (0 if dialled.startswith("Local") else 1), created
    assert not ami.find("DialBegin", since=mark)
    assert not ami.find("AGIExecStart", since=mark)
    if created:
        uid = created[0].uniqueid
        hangup = await ami.wait_for("Hangup", lambda e: e.uniqueid == uid, since=mark, timeout=5)
        assert hangup.fields.get("Cause") == "1", hangup.fields  # [from-trunk] reject: unallocated number
        assert all(e.uniqueid == uid for e in ami.find("Newstate", since=mark))
    assert not failures_from(ami, TRUNK_SOURCE, mark)  # the trunk authenticated fine


@pytest.mark.parametrize(("from_user", "password"), [("intruder", "guess"), ("agent1", None), ("carrier", None)])
async def test_invite_without_valid_credentials_is_challenged_and_never_a_call(
    live_stack: LiveStack, ami: EventRecorder, from_user: str, password: str | None, no_bans: None,
) -> None:
    mark = ami.mark()
    run = await sipp(live_stack, "invite_unauthenticated.xml", source=INTRUDER, service="2000", timeout_s=15,
                     auth=(from_user, password or "wrong-" + secrets.token_hex(6)), keys={"from_user": from_user})
    assert run.all_succeeded, f"not refused as expected: {run.log.read_text(errors='replace')[-1500:]}"
    await fence(ami)
    assert ami.find("ChallengeSent", from_source(INTRUDER), since=mark), "no challenge seen"
    assert not ami.find("Newchannel", since=mark)
    assert not ami.find("DialBegin", since=mark)
    # the wrong answer to the challenge is a failure the guard counts (below the threshold: not banned)
    assert failures_from(ami, INTRUDER, mark)
