"""A real call end to end: carrier → FastAGI IVR → queue → agent's phone, audio both ways, events stored."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from reporting.event_store import EventWriter, count_events
from reporting.ingest import to_stored
from sim.baresip import BaresipPhone
from sim.tones import detect_tone
from telephony.ami import parse_event
from tests.live.support import EventRecorder, eventually
from tests.live_stack import AGENT_TONE, CALLER_TONE, LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]

TALK_S = 2.5  # long enough for 50 ms tone frames to be counted many times over


async def start_agent(live_stack: LiveStack, phones: list[BaresipPhone], user: str = "agent1") -> BaresipPhone:
    agent = live_stack.phone(user, AGENT_TONE)
    phones.append(agent)
    await agent.start()
    await agent.wait_registered(10)
    return agent


async def start_caller(live_stack: LiveStack, phones: list[BaresipPhone]) -> BaresipPhone:
    caller = live_stack.phone(live_stack.cfg.sip.trunk.user, CALLER_TONE)
    phones.append(caller)
    await caller.start()
    await caller.wait_registered(10)
    return caller


async def login(live_stack: LiveStack, ami: EventRecorder, user: str, queue: str = "support") -> None:
    mark = ami.mark()
    status, body = await asyncio.to_thread(live_stack.api, "PUT", f"/api/v1/queues/{queue}/members/{user}", {})
    assert status == 200, body
    await ami.wait_for("QueueMemberAdded", lambda e: e.fields.get("MemberName") == user, since=mark)


async def test_queue_call_reaches_agent_with_audio_both_ways_and_events_stored(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection,
) -> None:
    agent = await start_agent(live_stack, phones)
    await login(live_stack, ami, "agent1")
    caller = await start_caller(live_stack, phones)

    mark = ami.mark()
    await caller.dial(f"sip:{live_stack.cfg.demo_inbound_number}@{live_stack.sip_registrar}", timeout=15)
    # The IVR answered over FastAGI: Asterisk reports each AGI command the service sent.
    agi = await ami.wait_for("AGIExecEnd", lambda e: "ANSWER" in e.fields.get("Command", "").upper(), since=mark)
    joined = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == "support", since=mark)
    connect = await ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == "agent1", since=mark)
    await agent.wait_event("CALL_ESTABLISHED", 10)
    linkedid = joined.linkedid
    assert linkedid and agi.linkedid == linkedid and connect.linkedid == linkedid

    await asyncio.sleep(TALK_S)  # audio flows for a known time: what each phone hears is checked below
    await caller.hangup()
    await ami.wait_for("AgentComplete", lambda e: e.fields.get("MemberName") == "agent1", since=mark)
    await agent.wait_event("CALL_CLOSED", 10)
    await ami.wait_for("Hangup", lambda e: e.linkedid == linkedid and e.uniqueid == linkedid, since=mark)
    await ami.wait_for("Hangup", lambda e: e.linkedid == linkedid and e.uniqueid != linkedid, since=mark)

    # Audio both ways: the agent heard the caller's tone, the caller heard the agent's tone (and not its own).
    agent_heard = detect_tone(agent.recordings()[-1], CALLER_TONE)
    caller_heard = detect_tone(caller.recordings()[-1], AGENT_TONE)
    assert agent_heard.share > 0.3, agent_heard
    assert caller_heard.share > 0.3, caller_heard
    assert detect_tone(agent.recordings()[-1], AGENT_TONE).share < 0.1

    # The stored events of the call: queue join, agent connect and completion, both hangups.
    wanted = {"QueueCallerJoin", "AgentConnect", "AgentComplete", "Hangup"}

    async def stored_names() -> list[str] | None:
        rows = await db.fetch("SELECT name FROM call_events WHERE linkedid = $1 ORDER BY id", linkedid)
        names = [r["name"] for r in rows]
        ok = wanted <= set(names) and names.count("Hangup") >= 2
        return names if ok else None

    names = await eventually(stored_names, timeout=10, what=f"stored events of {linkedid}")
    # AgentComplete may carry no Uniqueid/Linkedid under load (DESIGN §7): it is still stored, by queue.
    assert names.index("QueueCallerJoin") < names.index("AgentConnect") < names.index("AgentComplete")

    # Re-ingesting the very same frames adds no row.
    rows = await db.fetch("SELECT fields, received_at FROM call_events WHERE linkedid = $1", linkedid)
    writer = EventWriter(live_stack.cfg.database.dsn)
    await writer.start()
    for r in rows:
        fields = r["fields"] if isinstance(r["fields"], dict) else json.loads(r["fields"])
        writer.submit(to_stored(parse_event(fields, r["received_at"].timestamp()), live_stack.cfg.node))
    await writer.flush(10)
    await writer.stop()
    assert writer.stats.written == 0
    assert writer.stats.duplicates_skipped == len(rows)
    assert await count_events(db, linkedid=linkedid) == len(rows)
