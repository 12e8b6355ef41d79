"""IVR flows on real calls: RFC 4733 DTMF through a two-level menu and a collect into a queue, the collected
value attached to the call; publishing a new version changes the next call while the call in progress keeps
its version; every step stored."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import pytest
from aiohttp import web

from ivr.flow_model import WEEKDAYS
from ops.generate import free_port
from sim.baresip import BaresipPhone
from sim.tones import detect_tone
from telephony.ami import AmiEvent
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import acd, api, phone_for  # noqa: F401  (acd is a fixture)
from tests.live.test_call_flow import start_caller
from tests.live.test_callback import carrier_gateway, trunk_caller
from tests.live_stack import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]


def flow(queue: str, option2: str) -> dict[str, Any]:
    menu = {"type": "menu", "prompt": "beep", "timeout_ms": 6000, "retries": 1, "timeout": "bye", "invalid": "bye"}
    return {"start": "main", "nodes": {
        "main": {**menu, "options": {"1": "bye", "2": option2, "9": "sub"}},
        "sub": {**menu, "options": {"3": "acct"}},
        "acct": {"type": "collect", "prompt": "beep", "var": "account", "min_digits": 4, "max_digits": 6,
                 "terminator": "#", "pattern": "[0-9]{4,6}", "timeout_ms": 6000, "retries": 0, "next": "q",
                 "invalid": "bye"},
        "q": {"type": "queue", "queue": queue, "vars": ["account"]},
        "bye": {"type": "hangup"}}}


def get_data(e: AmiEvent, channel_uid: str) -> bool:
    return e.uniqueid == channel_uid and e.fields.get("Command", "").upper().startswith("GET DATA")


async def dial_flow(live_stack: LiveStack, ami: EventRecorder, caller: BaresipPhone, did: str) -> tuple[str, int]:
    """Dial and wait for the first menu; returns the caller channel's uniqueid and the event mark."""
    mark = ami.mark()
    await caller.dial(f"sip:{did}@{live_stack.sip_registrar}", timeout=15)
    first = await ami.wait_for("AGIExecStart", lambda e: e.fields.get("Command", "").upper().startswith("GET DATA"),
                               since=mark)
    assert first.uniqueid
    return first.uniqueid, mark


async def press(ami: EventRecorder, caller: BaresipPhone, uid: str, digits: str, *, nth: int, mark: int) -> None:
    """Wait until the IVR is at its nth GET DATA on this call, then send the digits as RFC 4733 events."""
    await eventually(lambda: _nth(ami, uid, nth, mark), timeout=15, what=f"GET DATA #{nth}")
    await caller.send_dtmf(digits)


async def _nth(ami: EventRecorder, uid: str, nth: int, mark: int) -> bool:
    return len(ami.find("AGIExecStart", lambda e: get_data(e, uid), since=mark)) >= nth


async def steps(db: asyncpg.Connection, uid: str) -> list[tuple[int, str, str | None, str]]:
    rows = await db.fetch("SELECT version, node_id, input, outcome FROM ivr_steps WHERE uniqueid = $1 ORDER BY step",
                          uid)
    return [(r["version"], r["node_id"], r["input"], r["outcome"]) for r in rows]


async def test_menus_collect_queue_and_version_pinning(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection, acd: Any,  # noqa: F811
) -> None:
    s = await acd({"ivy": ("agent3", 3)})
    (agent,) = s.agents
    await phone_for(live_stack, phones, "agent3")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    name, did = f"f-{secrets.token_hex(3)}", f"4{secrets.randbelow(10**6):06d}"
    await api(live_stack, "POST", "/api/v1/flows", {"name": name, "document": flow(s.queue, "sub")}, 201)
    assert (await api(live_stack, "POST", f"/api/v1/flows/{name}/publish"))["published_version"] == 1
    await api(live_stack, "POST", "/api/v1/routes", {"did": did, "ivr_flow": name}, 201)
    try:
        # Call 1 starts on version 1 and is at the first menu when version 2 is published.
        c1 = await start_caller(live_stack, phones)
        uid1, mark1 = await dial_flow(live_stack, ami, c1, did)
        await api(live_stack, "PUT", f"/api/v1/flows/{name}", {"document": flow(s.queue, "bye")})
        assert (await api(live_stack, "POST", f"/api/v1/flows/{name}/publish"))["published_version"] == 2
        await press(ami, c1, uid1, "2", nth=1, mark=mark1)   # v1: 2 -> sub (v2 would hang up)
        await press(ami, c1, uid1, "3", nth=2, mark=mark1)   # sub: 3 -> account
        await press(ami, c1, uid1, "4321#", nth=3, mark=mark1)
        called = await ami.wait_for("AgentCalled", lambda e: e.linkedid == uid1 or e.uniqueid == uid1, since=mark1)
        inputs = parse_qs(called.chan_variables.get("IVR_INPUTS", ""))
        assert inputs == {"did": [did], "account": ["4321"]}, called.fields
        await ami.wait_for("AgentConnect", lambda e: e.uniqueid == uid1, since=mark1)
        await c1.hangup()
        assert await eventually(lambda: _steps_n(db, uid1, 4), what="steps of call 1") == [
            (1, "main", "2", "option 2"), (1, "sub", "3", "option 3"), (1, "acct", "4321", "collected"),
            (1, "q", None, "queued")]

        # Call 2 gets version 2: the same key now ends the call.
        c2 = await start_caller(live_stack, phones)
        uid2, mark2 = await dial_flow(live_stack, ami, c2, did)
        await press(ami, c2, uid2, "2", nth=1, mark=mark2)
        await c2.wait_event("CALL_CLOSED", 15)
        assert await eventually(lambda: _steps_n(db, uid2, 2), what="steps of call 2") == [
            (2, "main", "2", "option 2"), (2, "bye", None, "hangup")]
        assert not ami.find("QueueCallerJoin", lambda e: e.uniqueid == uid2, since=mark2)
    finally:
        await api(live_stack, "DELETE", f"/api/v1/routes/{did}", None, 204)
        await api(live_stack, "DELETE", f"/api/v1/flows/{name}", None, 204)


async def _steps_n(db: asyncpg.Connection, uid: str, n: int) -> list[tuple[int, str, str | None, str]] | None:
    got = await steps(db, uid)
    return got if len(got) >= n else None


async def test_survey_after_the_agent_hangs_up_stores_the_score_against_the_call(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection, acd: Any,  # noqa: F811
) -> None:
    s = await acd({"sam": ("agent3", 3)})
    (agent,) = s.agents
    agent_phone = await phone_for(live_stack, phones, "agent3")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    name, did = f"f-{secrets.token_hex(3)}", f"4{secrets.randbelow(10**6):06d}"
    document = {"start": "csat", "nodes": {
        "csat": {"type": "survey", "prompt": "beep", "var": "csat", "next": "q"},
        "q": {"type": "queue", "queue": s.queue}}}
    await api(live_stack, "POST", "/api/v1/flows", {"name": name, "document": document}, 201)
    await api(live_stack, "POST", f"/api/v1/flows/{name}/publish")
    await api(live_stack, "POST", "/api/v1/routes", {"did": did, "ivr_flow": name}, 201)
    try:
        caller = await start_caller(live_stack, phones)
        mark = ami.mark()
        await caller.dial(f"sip:{did}@{live_stack.sip_registrar}", timeout=15)
        connect = await ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == agent, since=mark)
        await agent_phone.hangup()  # the agent ends the call; the caller stays for the survey
        survey = await ami.wait_for("AGIExecStart", lambda e: e.uniqueid == connect.uniqueid and e.fields.get(
            "Command", "").upper().startswith("GET DATA"), since=mark, timeout=15)
        assert survey.linkedid == connect.linkedid
        await caller.send_dtmf("4")
        row = await eventually(lambda: db.fetchrow("SELECT score, flow, version FROM call_surveys WHERE linkedid = $1",
                                                   connect.linkedid), what="the survey score")
        assert (row["score"], row["flow"], row["version"]) == (4, name, 1)
        await caller.wait_event("CALL_CLOSED", 15)
        # The score reaches the call's facts and the queue report (KPIS.md csat, csat_avg).
        fact = await eventually(lambda: db.fetchrow("SELECT csat FROM queue_calls WHERE linkedid = $1 AND final "
                                                    "AND csat IS NOT NULL", connect.linkedid), timeout=3,
                                what="the call's facts with the score (within a second or so)")
        assert fact["csat"] == 4
        since = datetime.fromtimestamp(connect.timestamp - 3600, UTC).isoformat().replace("+00:00", "Z")
        until = datetime.fromtimestamp(connect.timestamp + 3600, UTC).isoformat().replace("+00:00", "Z")
        report = await api(live_stack, "GET", f"/api/v1/reports/queues?from={since}&to={until}&queue={s.queue}")
        total = report["queues"][0]["total"]
        assert (total["csat"], total["csat_avg"]) == (1.0, 4.0)
    finally:
        await api(live_stack, "DELETE", f"/api/v1/routes/{did}", None, 204)
        await api(live_stack, "DELETE", f"/api/v1/flows/{name}", None, 204)


async def _end_of(db: asyncpg.Connection, uid: str, node_id: str) -> str | None:
    return await db.fetchval("SELECT outcome FROM ivr_steps WHERE uniqueid = $1 AND node_id = $2", uid, node_id)


async def test_time_conditions_route_open_closed_and_holiday(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection,
) -> None:
    # Windows built around the real clock (UTC): one containing now, one that does not, and today a holiday.
    now = datetime.now(UTC)
    day = WEEKDAYS[now.weekday()]
    inside = [[f"{max(0, now.hour - 1):02d}:00", f"{min(24, now.hour + 2):02d}:00"]]
    outside = [["00:00", "00:01"]] if now.hour >= 1 else [["23:00", "23:59"]]
    cases = {"open": ({day: inside}, []), "closed": ({day: outside}, []),
             "holiday": ({day: inside}, [now.date().isoformat()])}
    created: list[tuple[str, str]] = []
    try:
        for expected, (hours, holidays) in cases.items():
            name, did = f"t-{secrets.token_hex(3)}", f"5{secrets.randbelow(10**6):06d}"
            doc = {"start": "hours", "nodes": {
                "hours": {"type": "time_condition", "timezone": "UTC", "hours": hours, "holidays": holidays,
                          "open": "o", "closed": "c", "holiday": "h"},
                "o": {"type": "hangup"}, "c": {"type": "hangup"}, "h": {"type": "hangup"}}}
            await api(live_stack, "POST", "/api/v1/flows", {"name": name, "document": doc}, 201)
            await api(live_stack, "POST", f"/api/v1/flows/{name}/publish")
            await api(live_stack, "POST", "/api/v1/routes", {"did": did, "ivr_flow": name}, 201)
            created.append((name, did))
            caller = await start_caller(live_stack, phones)
            mark = ami.mark()
            await caller.dial(f"sip:{did}@{live_stack.sip_registrar}", timeout=15)
            ans = await ami.wait_for("AGIExecStart", lambda e: "ANSWER" in e.fields.get("Command", "").upper(),
                                     since=mark)
            assert ans.uniqueid
            outcome = await eventually(lambda uid=ans.uniqueid: _end_of(db, uid, "hours"), what="time branch")
            assert outcome == expected
            await caller.wait_event("CALL_CLOSED", 15)
    finally:
        for name, did in created:
            await api(live_stack, "DELETE", f"/api/v1/routes/{did}", None, 204)
            await api(live_stack, "DELETE", f"/api/v1/flows/{name}", None, 204)


async def test_http_lookup_branches_and_a_slow_one_fails_in_time_while_another_call_proceeds(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection,
) -> None:
    async def customer(request: web.Request) -> web.Response:
        if request.query.get("slow") == "1":
            await asyncio.sleep(5)
        return web.json_response({"customer": {"tier": "gold"}})

    app = web.Application()
    app.router.add_get("/customer", customer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    created: list[tuple[str, str]] = []
    try:
        dids = {}
        for slow in ("0", "1"):
            name, did = f"h-{secrets.token_hex(3)}", f"6{secrets.randbelow(10**6):06d}"
            doc = {"start": "look", "nodes": {
                "look": {"type": "http_lookup", "url": f"http://127.0.0.1:{port}/customer",
                         "params": {"slow": slow, "did": "${did}"}, "timeout_ms": 800, "field": "customer.tier",
                         "branches": {"gold": "gold"}, "default": "other", "failure": "failed"},
                "gold": {"type": "hangup"}, "other": {"type": "hangup"}, "failed": {"type": "hangup"}}}
            await api(live_stack, "POST", "/api/v1/flows", {"name": name, "document": doc}, 201)
            await api(live_stack, "POST", f"/api/v1/flows/{name}/publish")
            await api(live_stack, "POST", "/api/v1/routes", {"did": did, "ivr_flow": name}, 201)
            created.append((name, did))
            dids[slow] = did
        slow_caller, fast_caller = await start_caller(live_stack, phones), await start_caller(live_stack, phones)
        mark = ami.mark()
        await slow_caller.dial(f"sip:{dids['1']}@{live_stack.sip_registrar}", timeout=15)
        slow_start = await ami.wait_for("AGIExecStart", lambda e: "ANSWER" in e.fields.get("Command", "").upper(),
                                        since=mark)
        mark2 = ami.mark()
        await fast_caller.dial(f"sip:{dids['0']}@{live_stack.sip_registrar}", timeout=15)
        fast_start = await ami.wait_for("AGIExecStart", lambda e: "ANSWER" in e.fields.get("Command", "").upper(),
                                        since=mark2)
        # The fast call is routed on the CRM's answer while the slow lookup is still pending.
        assert await eventually(lambda: _end_of(db, fast_start.uniqueid or "", "look"), what="fast lookup") == \
            "branch gold"
        assert await _end_of(db, slow_start.uniqueid or "", "look") is None
        # The slow one takes the failure branch within its timeout (0.8 s), not the CRM's 5 s.
        outcome = await eventually(lambda: _end_of(db, slow_start.uniqueid or "", "look"), timeout=3,
                                   what="slow lookup")
        assert outcome == "failure"
        at = await db.fetchval("SELECT at FROM ivr_steps WHERE uniqueid = $1 AND node_id = 'look'",
                               slow_start.uniqueid)
        assert at.timestamp() - slow_start.timestamp < 2.0
    finally:
        for name, did in created:
            await api(live_stack, "DELETE", f"/api/v1/routes/{did}", None, 204)
            await api(live_stack, "DELETE", f"/api/v1/flows/{name}", None, 204)
        await runner.cleanup()


async def test_transfer_node_rings_the_extension(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection,
) -> None:
    ext = f"7{secrets.randbelow(10**4):04d}"
    phone = await api(live_stack, "POST", "/api/v1/phones", {"name": ext}, 201)
    name, did = f"x-{secrets.token_hex(3)}", f"8{secrets.randbelow(10**6):06d}"
    doc = {"start": "t", "nodes": {"t": {"type": "transfer", "extension": ext}}}
    await api(live_stack, "POST", "/api/v1/flows", {"name": name, "document": doc}, 201)
    await api(live_stack, "POST", f"/api/v1/flows/{name}/publish")
    await api(live_stack, "POST", "/api/v1/routes", {"did": did, "ivr_flow": name}, 201)
    try:
        desk = BaresipPhone(f"desk-{ext}", workdir=live_stack.runtime / "phones" / f"ext-{ext}", sip_user=ext,
                            sip_password=phone["password"], registrar=live_stack.sip_registrar, tone_hz=1300.0)
        phones.append(desk)
        await desk.start()
        await desk.wait_registered(10)
        caller = await start_caller(live_stack, phones)
        await caller.dial(f"sip:{did}@{live_stack.sip_registrar}", timeout=15)
        await desk.wait_event("CALL_ESTABLISHED", 15)  # the extension's phone answered the transferred call
        await caller.hangup()
        await desk.wait_event("CALL_CLOSED", 10)
        assert await db.fetchval("SELECT outcome FROM ivr_steps WHERE flow = $1 AND node_id = 't'", name) == \
            "transferred"
    finally:
        await api(live_stack, "DELETE", f"/api/v1/routes/{did}", None, 204)
        await api(live_stack, "DELETE", f"/api/v1/flows/{name}", None, 204)
        await api(live_stack, "DELETE", f"/api/v1/phones/{ext}", None, 204)


async def test_transfer_node_calls_a_number_through_the_trunk(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection,
) -> None:
    number = f"+1555{secrets.randbelow(10**7):07d}"
    name, did = f"n-{secrets.token_hex(3)}", f"8{secrets.randbelow(10**6):06d}"
    doc = {"start": "t", "nodes": {"t": {"type": "transfer", "number": number}}}
    await api(live_stack, "POST", "/api/v1/flows", {"name": name, "document": doc}, 201)
    await api(live_stack, "POST", f"/api/v1/flows/{name}/publish")
    await api(live_stack, "POST", "/api/v1/routes", {"did": did, "ivr_flow": name}, 201)
    try:
        trunk = live_stack.cfg.sip.trunk
        gateway = await carrier_gateway(live_stack, phones, number)
        caller = await trunk_caller(live_stack, phones, "xfer")
        mark = ami.mark()
        await caller.dial(f"sip:{did}@{live_stack.sip_registrar}", timeout=15)
        dial = await ami.wait_for("DialBegin", lambda e: number in e.fields.get("DialString", ""), since=mark)
        assert dial.fields.get("DialString") == f"{number}@{trunk.user}"
        await gateway.wait_event("CALL_ESTABLISHED", 15)  # the carrier's side answered the transferred call
        await caller.hangup()
        assert await db.fetchval("SELECT outcome FROM ivr_steps WHERE flow = $1 AND node_id = 't'", name) == \
            "transferred"
    finally:
        await api(live_stack, "DELETE", f"/api/v1/routes/{did}", None, 204)
        await api(live_stack, "DELETE", f"/api/v1/flows/{name}", None, 204)


async def test_message_node_records_what_the_caller_says(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection,
) -> None:
    name, did = f"m-{secrets.token_hex(3)}", f"9{secrets.randbelow(10**6):06d}"
    doc = {"start": "vm", "nodes": {"vm": {"type": "voicemail", "prompt": "beep", "max_seconds": 5}}}
    await api(live_stack, "POST", "/api/v1/flows", {"name": name, "document": doc}, 201)
    await api(live_stack, "POST", f"/api/v1/flows/{name}/publish")
    await api(live_stack, "POST", "/api/v1/routes", {"did": did, "ivr_flow": name}, 201)
    try:
        caller = await start_caller(live_stack, phones)  # plays its 700 Hz tone all the time
        await caller.dial(f"sip:{did}@{live_stack.sip_registrar}", timeout=15)
        await caller.wait_event("CALL_CLOSED", 20)  # the recording ends after max_seconds, then the call
        row = await eventually(lambda: db.fetchrow("SELECT file, linkedid FROM ivr_messages WHERE flow = $1", name),
                               what="the message row")
        wav = live_stack.runtime / "asterisk" / "spool" / "messages" / row["file"]
        heard = detect_tone(wav, 700.0)
        assert heard.frames >= 60 and heard.share > 0.5, heard  # ~5 s of the caller's tone
    finally:
        await api(live_stack, "DELETE", f"/api/v1/routes/{did}", None, 204)
        await api(live_stack, "DELETE", f"/api/v1/flows/{name}", None, 204)


async def test_callback_offer_accepted_books_a_callback_served_agent_first(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection, acd: Any,  # noqa: F811
) -> None:
    s = await acd({"cara": ("agent3", 3)}, wrapup_s=0, callback_enabled=True)
    (agent,) = s.agents
    await phone_for(live_stack, phones, "agent3")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/pause", {"reason": "break"})
    number = f"+1555{secrets.randbelow(10**7):07d}"
    name, did = f"c-{secrets.token_hex(3)}", f"9{secrets.randbelow(10**6):06d}"
    doc = {"start": "offer", "nodes": {
        "offer": {"type": "callback_offer", "prompt": "beep", "digit": "1", "timeout_ms": 6000,
                  "accepted": "q", "declined": "q"},
        "q": {"type": "queue", "queue": s.queue}}}
    await api(live_stack, "POST", "/api/v1/flows", {"name": name, "document": doc}, 201)
    await api(live_stack, "POST", f"/api/v1/flows/{name}/publish")
    await api(live_stack, "POST", "/api/v1/routes", {"did": did, "ivr_flow": name}, 201)
    try:
        gateway = await carrier_gateway(live_stack, phones, number)
        caller = await trunk_caller(live_stack, phones, "cbo", number)
        uid, mark = await dial_flow(live_stack, ami, caller, did)
        await press(ami, caller, uid, "1", nth=1, mark=mark)
        await caller.wait_event("CALL_CLOSED", 15)  # thanked and hung up: no waiting on the line
        assert not ami.find("QueueCallerJoin", lambda e: e.uniqueid == uid, since=mark)
        row = await eventually(lambda: db.fetchrow(
            "SELECT id, status, number FROM callbacks WHERE caller_uniqueid = $1", uid), what="the callback booked")
        assert row["number"] == number
        await api(live_stack, "POST", f"/api/v1/agents/{agent}/ready")
        connect = await ami.wait_for("AgentConnect", lambda e: e.queue == s.queue, since=mark, timeout=20)
        dial = await ami.wait_for("DialBegin", lambda e: number in e.fields.get("DialString", ""), since=mark)
        assert dial.timestamp >= connect.timestamp  # the agent first, then the caller
        await gateway.wait_event("CALL_ESTABLISHED", 15)
        done = await eventually(lambda: db.fetchval("SELECT status FROM callbacks WHERE id = $1 AND status = "
                                                    "'completed'", row["id"]), what="callback completed")
        assert done == "completed"
        assert await db.fetchval("SELECT outcome FROM ivr_steps WHERE uniqueid = $1 AND node_id = 'offer'",
                                 uid) == "accepted"
    finally:
        await api(live_stack, "DELETE", f"/api/v1/routes/{did}", None, 204)
        await api(live_stack, "DELETE", f"/api/v1/flows/{name}", None, 204)
