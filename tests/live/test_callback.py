"""Queue callback with real phones: a caller presses 1, hangs up, and is called back at their turn, agent first."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

import asyncpg
import pytest

from sim.baresip import BaresipPhone
from sim.tones import detect_tone
from telephony.ami import AmiEvent
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import acd, api, phone_for  # noqa: F401  (acd: the fixture, used by name)
from tests.live_stack import AGENT_TONE, CALLER_TONE, LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]

CUSTOMER = "+15550001"  # caller C's number: the From user of its INVITE, authenticated as the trunk user
CUSTOMER_TONE = 900.0
TALK_S = 2.5  # the agent and the customer talk this long: what each heard is checked afterwards


async def _one_trunk_contact(live_stack: LiveStack) -> bool:
    """PJSIP/<number>@<trunk> goes to one contact of the trunk's AOR: the test's gateway must be the only one
    (phones of earlier tests un-REGISTER when they stop)."""
    out = (await asyncio.to_thread(live_stack.stack.asterisk.cli,
                                   f"pjsip show aor {live_stack.cfg.sip.trunk.user}")).stdout
    return len(re.findall(r"^\s*Contact:\s+(?!<Aor/ContactUri)\S+/sip:", out, re.M)) == 1


async def carrier_gateway(live_stack: LiveStack, phones: list[BaresipPhone], number: str,
                          tone_hz: float = CUSTOMER_TONE) -> BaresipPhone:
    """The carrier's network: registered as the trunk user (its only contact), it answers the calls Asterisk
    sends to PJSIP/<number>@<trunk> (the request-URI user is the number)."""
    trunk = live_stack.cfg.sip.trunk
    gateway = BaresipPhone(f"gw-{number}", workdir=live_stack.runtime / "phones" / f"gw-{secrets.token_hex(3)}",
                           sip_user=trunk.user, sip_password=trunk.password, registrar=live_stack.sip_registrar,
                           tone_hz=tone_hz, answer_users=(number,))
    phones.append(gateway)
    await gateway.start()
    await gateway.wait_registered(10)
    await eventually(lambda: _one_trunk_contact(live_stack), what="the gateway as the trunk's only contact")
    return gateway


async def trunk_caller(live_stack: LiveStack, phones: list[BaresipPhone], name: str,
                       number: str | None = None) -> BaresipPhone:
    """A call from the carrier that does not register (only the gateway below holds the trunk's contact)."""
    trunk = live_stack.cfg.sip.trunk
    p = BaresipPhone(f"cb-{name}", workdir=live_stack.runtime / "phones" / f"cb-{name}-{secrets.token_hex(2)}",
                     sip_user=trunk.user, sip_password=trunk.password, registrar=live_stack.sip_registrar,
                     tone_hz=CALLER_TONE, register=False, from_user=number)
    phones.append(p)
    await p.start()
    return p


async def test_callback_keeps_the_callers_place_and_calls_the_agent_first(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection,
    acd: Any,  # noqa: F811
) -> None:
    s = await acd({"cleo": ("agent3", 3)}, wrapup_s=0, callback_enabled=True)
    (agent,) = s.agents
    assert (await api(live_stack, "GET", f"/api/v1/queues/{s.queue}"))["callback_enabled"] is True
    agent_phone = await phone_for(live_stack, phones, "agent3")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/pause", {"reason": "break"})

    gateway = await carrier_gateway(live_stack, phones, CUSTOMER)

    # A, B, C, D wait in this order (the agent is paused); C has a real number.
    callers: dict[str, BaresipPhone] = {}
    joined: dict[str, AmiEvent] = {}
    for i, name in enumerate("ABCD", start=1):
        callers[name] = await trunk_caller(live_stack, phones, name, CUSTOMER if name == "C" else None)
        mark = ami.mark()
        await callers[name].dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
        joined[name] = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)
        assert joined[name].fields.get("Position") == str(i)
    assert joined["C"].fields.get("CallerIDNum") == CUSTOMER  # the From user, trunk found by auth_username

    # C presses 1 (twice: the second press must not make a second callback) and the call ends.
    mark = ami.mark()
    c_mark = callers["C"].mark()
    await callers["C"].send_dtmf("11")
    left = await ami.wait_for("QueueCallerLeave", lambda e: e.uniqueid == joined["C"].uniqueid, since=mark)
    assert left.fields.get("Position") == "3"
    request = await ami.wait_for("UserEvent", lambda e: e.fields.get("UserEvent") == "CallbackRequest", since=mark)
    assert (request.uniqueid, request.fields.get("Number"), request.fields.get("Queue")) == (
        joined["C"].uniqueid, CUSTOMER, s.queue)
    placeholder = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)
    assert placeholder.fields.get("Position") == "3", "the callback takes C's place, ahead of D"
    assert placeholder.fields.get("CallerIDNum") == CUSTOMER
    await callers["C"].wait_event("CALL_CLOSED", 15, since=c_mark)
    gone = await ami.wait_for("Hangup", lambda e: e.uniqueid == joined["C"].uniqueid, since=mark)
    request_to_placeholder = placeholder.timestamp - request.timestamp

    # E joins after the request: behind the callback.
    callers["E"] = await trunk_caller(live_stack, phones, "E")
    e_mark = ami.mark()
    await callers["E"].dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
    joined["E"] = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=e_mark)
    assert joined["E"].fields.get("Position") == "5"
    waiting = [e.uniqueid for e in await ami.client.list_events("QueueStatus", {"Queue": s.queue})
               if e.name == "QueueEntry"]
    assert waiting == [joined["A"].uniqueid, joined["B"].uniqueid, placeholder.uniqueid, joined["D"].uniqueid,
                       joined["E"].uniqueid]
    cb = await db.fetchrow("SELECT * FROM callbacks WHERE caller_uniqueid = $1", joined["C"].uniqueid)
    assert cb is not None and (cb["number"], cb["queue"], cb["position"], cb["status"]) == (
        CUSTOMER, s.queue, 3, "queued")
    assert cb["placeholder_uniqueid"] == placeholder.uniqueid
    assert not gateway.find_events({"CALL_INCOMING", "CALL_ESTABLISHED", "CALL_RINGING"})

    # The agent is ready: A, B, the callback (agent first, then the customer's phone), D, E.
    served: list[str | None] = []
    gateway_established = None
    dial_leg = (placeholder.uniqueid or "").removesuffix("-b") + "-a"  # the Local channel's other half
    assert placeholder.linkedid == dial_leg
    mark = ami.mark()
    agent_mark = agent_phone.mark()
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/ready")
    for expected in (joined["A"], joined["B"], placeholder, joined["D"], joined["E"]):
        connect = await ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == agent
                                     and e.uniqueid not in served, since=mark, timeout=25)
        served.append(connect.uniqueid)
        assert connect.uniqueid == expected.uniqueid, f"served {len(served)}th: {connect.uniqueid}"
        if expected is placeholder:
            begin = await ami.wait_for("DialBegin", lambda e: e.uniqueid == dial_leg, since=mark)
            end = await ami.wait_for("DialEnd", lambda e: e.uniqueid == dial_leg, since=mark)
            assert end.fields.get("DialStatus") == "ANSWER"
            # Agent first: in Asterisk's event order the customer is dialled only after the agent answered.
            assert _index(ami, connect) < _index(ami, begin) < _index(ami, end), "customer called first"
            assert connect.timestamp <= begin.timestamp <= end.timestamp
            gateway_established = await gateway.wait_event("CALL_ESTABLISHED", 10)
            assert gateway_established.raw.get("accountaor", "").startswith(f"sip:{CUSTOMER}@")
            # The customer sees the number they had called; the agent saw the customer's number.
            assert (gateway_established.peer_uri or "").startswith(f"sip:{s.did}@")
            agent_call = agent_phone.find_events("CALL_ESTABLISHED", since=agent_mark)[-1]
            assert (agent_call.peer_uri or "").startswith(f"sip:{CUSTOMER}@")
            connect_to_dial = begin.timestamp - connect.timestamp
            dial_to_answer = end.timestamp - begin.timestamp
            row = await eventually(lambda: _status_is(db, cb["id"], "completed"), what="callback completed")
            assert row["agent"] == agent and row["dial_status"] == "ANSWER"
            await asyncio.sleep(TALK_S)  # audio flows for a known time
        done = ami.mark()
        await agent_phone.hangup()
        await ami.wait_for("AgentComplete", lambda e: e.fields.get("MemberName") == agent, since=done)
    assert gateway_established is not None
    await gateway.wait_event("CALL_CLOSED", 10)
    # Audio both ways through the placeholder's Local channel.
    customer_heard = detect_tone(gateway.recordings()[-1], AGENT_TONE)
    assert customer_heard.share > 0.3, customer_heard
    agent_heard = max((detect_tone(r, CUSTOMER_TONE) for r in agent_phone.recordings()), key=lambda t: t.share)
    assert agent_heard.share > 0.3, agent_heard
    # One callback for one request, however often 1 was pressed.
    assert await db.fetchval("SELECT count(*) FROM callbacks WHERE linkedid = $1", joined["C"].linkedid) == 1
    assert len(ami.find("UserEvent", lambda e: e.fields.get("UserEvent") == "CallbackRequest")) == 1
    print(f"\ncallback: request -> placeholder in queue {request_to_placeholder * 1000:.1f} ms, agent answer -> "
          f"customer dialled {connect_to_dial * 1000:.1f} ms, customer ring -> answer {dial_to_answer * 1000:.1f} ms;"
          f" caller C hung up {gone.timestamp - request.timestamp:.2f} s after the request")


def _index(ami: EventRecorder, event: AmiEvent) -> int:
    return next(i for i, e in enumerate(ami.events) if e is event)


async def _status_is(db: asyncpg.Connection, cb_id: int, status: str) -> asyncpg.Record | None:
    row = await db.fetchrow("SELECT * FROM callbacks WHERE id = $1", cb_id)
    return row if row is not None and row["status"] == status else None


async def test_a_caller_without_a_number_stays_in_the_queue_at_the_same_place(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection,
    acd: Any,  # noqa: F811
) -> None:
    s = await acd({"nico": ("agent3", 3)}, callback_enabled=True)
    (agent,) = s.agents
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")  # no phone registered: callers wait
    joined: dict[str, AmiEvent] = {}
    for name in ("A", "X", "B"):  # X calls from the trunk without a number (From user "carrier")
        caller = await trunk_caller(live_stack, phones, name)
        mark = ami.mark()
        await caller.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
        joined[name] = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)
        if name == "X":
            x = caller
    assert joined["X"].fields.get("CallerIDNum") in (None, "", "<unknown>")
    mark = ami.mark()
    x_mark = x.mark()
    await x.send_dtmf("1")
    left = await ami.wait_for("QueueCallerLeave", lambda e: e.uniqueid == joined["X"].uniqueid, since=mark)
    back = await ami.wait_for("QueueCallerJoin", lambda e: e.uniqueid == joined["X"].uniqueid, since=mark)
    assert left.fields.get("Position") == back.fields.get("Position") == "2"
    assert not ami.find("UserEvent", lambda e: e.fields.get("UserEvent") == "CallbackRequest", since=mark)
    assert not x.find_events("CALL_CLOSED", since=x_mark)
    assert await db.fetchval("SELECT count(*) FROM callbacks WHERE caller_uniqueid = $1", joined["X"].uniqueid) == 0
    # Callbacks switched off over the API (the service reloads the queue): 1 does nothing for a caller who joins
    # afterwards; a caller already waiting keeps the option (app_queue keeps it per waiting caller: measured).
    await api(live_stack, "PUT", f"/api/v1/queues/{s.queue}", {"callback_enabled": False})
    late = await trunk_caller(live_stack, phones, "W")
    mark = ami.mark()
    await late.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
    joined["W"] = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)
    await late.send_dtmf("1")
    await x.send_dtmf("1")
    await ami.wait_for("QueueCallerLeave", lambda e: e.uniqueid == joined["X"].uniqueid, since=mark)
    with pytest.raises(TimeoutError):
        await ami.wait_for("QueueCallerLeave", lambda e: e.uniqueid == joined["W"].uniqueid, since=mark, timeout=3)
    print(f"\nno number: back in the queue {back.timestamp - left.timestamp:.2f} s after leaving it (prompt played)")


async def _ami_up(live_stack: LiveStack) -> bool:
    h = await asyncio.to_thread(live_stack.stack.health)
    return bool(h and h["checks"]["ami"])


async def _restart_service(live_stack: LiveStack) -> None:
    await asyncio.to_thread(live_stack.stack.service.kill)
    await asyncio.to_thread(live_stack.stack.service.start)
    await asyncio.to_thread(live_stack.stack.wait_healthy, 30)
    await eventually(lambda: _ami_up(live_stack), timeout=15, what="service connected to AMI")


async def test_a_pending_callback_is_originated_once_after_the_service_reconnects(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection,
    acd: Any,  # noqa: F811
) -> None:
    s = await acd({"pia": ("agent3", 3)}, wrapup_s=0, callback_enabled=True)
    (agent,) = s.agents
    agent_phone = await phone_for(live_stack, phones, "agent3")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/pause", {"reason": "break"})
    number = "+15550002"
    gateway = await carrier_gateway(live_stack, phones, number)
    # A request stored while the PBX was away (the row stays pending until the service is connected).
    cb_id = await db.fetchval(
        "INSERT INTO callbacks (node, queue, number, caller_uniqueid, position, requested_at) "
        "VALUES ($1, $2, $3, $4, 1, now()) RETURNING id", live_stack.cfg.node, s.queue, number,
        f"test-{secrets.token_hex(4)}")
    mark = ami.mark()
    await _restart_service(live_stack)
    placeholder = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark, timeout=20)
    assert placeholder.uniqueid == f"{live_stack.cfg.node}-cb{cb_id}-b"
    assert await db.fetchval("SELECT status FROM callbacks WHERE id = $1", cb_id) == "queued"
    # Restarted again while the placeholder waits: it is still there, nothing is originated a second time.
    mark = ami.mark()
    await _restart_service(live_stack)
    with pytest.raises(TimeoutError):
        await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark, timeout=3)
    assert await db.fetchval("SELECT status FROM callbacks WHERE id = $1", cb_id) == "queued"
    # The restarted service follows it to the end.
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/ready")
    await ami.wait_for("AgentConnect", lambda e: e.uniqueid == placeholder.uniqueid, since=mark)
    end = await ami.wait_for("DialEnd", lambda e: e.uniqueid == placeholder.linkedid, since=mark)
    assert end.fields.get("DialStatus") == "ANSWER"
    row = await eventually(lambda: _status_is(db, cb_id, "completed"), what="callback completed")
    assert row["agent"] == agent
    await agent_phone.hangup()
    await gateway.wait_event("CALL_CLOSED", 10)

