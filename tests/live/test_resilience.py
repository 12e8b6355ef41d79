"""The service keeps running through bad input and outages, and loses no event it already received."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from sim.baresip import BaresipPhone
from tests.live.support import EventRecorder, eventually
from tests.live.test_call_flow import login, start_agent, start_caller
from tests.live_stack import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]


async def health(live_stack: LiveStack) -> dict:  # type: ignore[type-arg]
    h = await asyncio.to_thread(live_stack.stack.health)
    assert h is not None, "the service does not answer /healthz"
    return h


async def test_agi_client_that_disconnects_mid_header_does_not_hurt_the_service(live_stack: LiveStack) -> None:
    before = (await health(live_stack))["fastagi"]["bad_headers"]
    agi = live_stack.cfg.agi
    for payload in (b"agi_network: yes\nagi_request: agi://x/ivr\nagi_chan", b"\x00\xff garbage"):
        reader, writer = await asyncio.open_connection(agi.host, agi.port)
        writer.write(payload)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def counted() -> dict | None:  # type: ignore[type-arg]
        h = await health(live_stack)
        return h if h["fastagi"]["bad_headers"] >= before + 2 else None

    h = await eventually(counted, timeout=10, what="bad AGI headers counted")
    assert h["status"] == "ok"
    # A well-formed session is still served promptly: the server was not frozen.
    reader, writer = await asyncio.open_connection(agi.host, agi.port)
    writer.write(b"agi_network: yes\nagi_network_script: ivr?did=abc\nagi_uniqueid: 1.1\n\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    # An invalid DID makes the IVR refuse the call: it sets IVR_ACTION=hangup and nothing else.
    assert line.startswith(b"SET VARIABLE IVR_ACTION")
    assert b"hangup" in line
    writer.write(b"200 result=1\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the session ends cleanly
    writer.close()


async def test_database_outage_buffers_events_and_writes_them_after(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone],
) -> None:
    agent = await start_agent(live_stack, phones)
    await login(live_stack, ami, "agent1")
    caller = await start_caller(live_stack, phones)

    await asyncio.to_thread(live_stack.stack.pg.stop)
    try:
        h = await eventually(lambda: _degraded(live_stack), timeout=10, what="health reports the DB down")
        assert h["checks"] == {"ami": True, "fastagi": True, "db": False}
        mark = ami.mark()
        await caller.dial(f"sip:{live_stack.cfg.demo_inbound_number}@{live_stack.sip_registrar}", timeout=15)
        joined = await ami.wait_for("QueueCallerJoin", since=mark)
        await ami.wait_for("AgentConnect", lambda e: e.linkedid == joined.linkedid, since=mark)
        await caller.hangup()
        await agent.wait_event("CALL_CLOSED", 10)
        await ami.wait_for("Hangup", lambda e: e.uniqueid == joined.linkedid, since=mark)
        seen = [e for e in ami.events[mark:] if e.linkedid == joined.linkedid and e.name in
                ("QueueCallerJoin", "AgentConnect", "AgentComplete", "Hangup")]
        h = await health(live_stack)
        assert h["event_writer"]["buffered"] > 0
    finally:
        await asyncio.to_thread(live_stack.stack.pg.start)

    async def stored() -> list[asyncpg.Record] | None:
        conn = await asyncpg.connect(live_stack.cfg.database.dsn)
        try:
            rows = await conn.fetch("SELECT name, fields->>'Timestamp' AS ts FROM call_events WHERE linkedid = $1",
                                    joined.linkedid)
        finally:
            await conn.close()
        names = [r["name"] for r in rows]
        return rows if "AgentComplete" in names and names.count("Hangup") >= 2 else None

    rows = await eventually(stored, timeout=20, interval=0.25, what="buffered events written after the outage")
    stored_keys = {(r["name"], r["ts"]) for r in rows}
    # Every event the observer saw for this call during the outage reached the database exactly once.
    for e in seen:
        assert (e.name, e.fields.get("Timestamp")) in stored_keys, e.name
    assert len(stored_keys) == len(rows)
    assert (await health(live_stack))["status"] == "ok"


async def _degraded(live_stack: LiveStack) -> dict | None:  # type: ignore[type-arg]
    h = await health(live_stack)
    return h if not h["checks"]["db"] else None


async def test_membership_is_reapplied_after_asterisk_restarts(live_stack: LiveStack, ami: EventRecorder) -> None:
    await login(live_stack, ami, "agent2")
    before = (await health(live_stack))["ami"]["reconnects"]
    mark = ami.mark()
    await asyncio.to_thread(live_stack.stack.asterisk.stop)
    await asyncio.to_thread(live_stack.stack.asterisk.start)
    # Asterisk forgot its dynamic members; the service must add agent2 back after it reconnects.
    await ami.wait_for("AmiConnected", timeout=20, since=mark)

    async def member_back() -> bool:
        members = [e for e in await ami.client.list_events("QueueStatus") if e.name == "QueueMember"]
        return any(e.fields.get("Name") == "agent2" for e in members)

    await eventually(member_back, timeout=15, interval=0.2, what="agent2 back in queue support")
    h = await eventually(lambda: _healthy(live_stack), timeout=10, what="service healthy again")
    assert h["ami"]["reconnects"] > before


async def _healthy(live_stack: LiveStack) -> dict | None:  # type: ignore[type-arg]
    h = await health(live_stack)
    return h if h["status"] == "ok" else None
