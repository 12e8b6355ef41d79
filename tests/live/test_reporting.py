"""KPIs from real calls with controlled timings, read back through the report API and compared with what the
test itself saw on AMI (times within 1 s): answered after known waits, abandoned, short-abandoned, held, a
repeat caller within the FCR window, a disposition, the agent paused for a reason; and a call that times out
in one queue and is answered in the next (two queue calls, one linkedid)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from reporting.projection import load_events, load_extras
from sim.baresip import BaresipPhone
from tests.live.scene import start_trunk_caller
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import acd, api, phone_for  # noqa: F401  (acd: a fixture, used by name)
from tests.live_stack import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]

WRAPUP_S = 2


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


async def record_fixture(db: asyncpg.Connection, linkedid: str, name: str) -> None:
    """With CCPBX_RECORD_FIXTURES=<folder>: keep this real call's stored events, the after-call work and the
    facts the live run stored, for the projector's replay tests (tests/unit/test_projector.py)."""
    folder = os.environ.get("CCPBX_RECORD_FIXTURES")
    if not folder:
        return
    evs = await load_events(db, linkedid)
    agents = {e.get("MemberName") or "" for e in evs if e.name == "AgentConnect"} - {""}
    extras = await load_extras(db, linkedid, agents, time.time())
    facts = await db.fetch("SELECT outcome, queue, wait_s, agent, ring_s, talk_s, hold_s, acw_s, transferred "
                           "FROM queue_calls WHERE linkedid = $1 ORDER BY entered_at", linkedid)
    data = {"events": [{"name": e.name, "ts": e.ts, "uniqueid": e.uniqueid, "linkedid": e.linkedid,
                        "queue": e.queue, "fields": dict(e.fields)} for e in evs],
            "acw": [[a, lid, v] for (a, lid), v in extras.acw.items()],
            "facts": [dict(r) for r in facts]}
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(path.write_text, json.dumps(data, indent=1, sort_keys=True))


async def facts_final(db: asyncpg.Connection, queue: str, n: int) -> list[asyncpg.Record]:
    async def check() -> list[asyncpg.Record] | None:
        rows = await db.fetch("SELECT * FROM queue_calls WHERE queue = $1 ORDER BY entered_at", queue)
        return rows if len(rows) == n and all(r["final"] for r in rows) else None
    return await eventually(check, timeout=15, what=f"{n} final queue calls in {queue}")


async def test_queue_and_agent_figures_match_what_happened(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    t0 = time.time()
    s = await acd({"kim": ("agent1", 3)}, wrapup_s=WRAPUP_S, sl_threshold_s=2)
    (agent,) = s.agents
    phone = await phone_for(live_stack, phones, "agent1")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/pause", {"reason": "break"})
    repeat = "+4940100200"

    async def enter(number: str) -> tuple[BaresipPhone, Any]:
        caller = await start_trunk_caller(live_stack, phones, number)
        mark = ami.mark()
        await caller.dial_nowait(f"sip:{s.did}@{live_stack.sip_registrar}")
        join = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)
        return caller, join

    # 1. Answered after a ~3 s wait (the agent was paused), put on hold ~1.5 s, disposition set in wrap-up.
    c1, join1 = await enter(repeat)
    await asyncio.sleep(3.0)  # the caller waits a known time: nothing to await, the wait is the scenario
    mark = ami.mark()
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/ready")
    conn1 = await ami.wait_for("AgentConnect", lambda e: e.queue == s.queue, since=mark)
    await phone.wait_event("CALL_ESTABLISHED", 10)
    await asyncio.sleep(1.0)
    await phone.command("hold")
    hold = await ami.wait_for("Hold", since=mark)
    await asyncio.sleep(1.5)
    await phone.command("resume")
    unhold = await ami.wait_for("Unhold", since=mark)
    await asyncio.sleep(1.0)
    await c1.hangup()
    end1 = await ami.wait_for("AgentComplete", lambda e: e.queue == s.queue, since=mark)
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/disposition", {"code": "resolved"})
    await eventually(lambda: _state(live_stack, agent, "available"), timeout=10, what="wrap-up over")
    # 2. Abandoned after ~6 s, 3. short-abandoned after ~1.5 s (the agent paused meanwhile).
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/pause", {"reason": "lunch"})
    c2, join2 = await enter("+4940100300")
    await asyncio.sleep(6.0)
    mark = ami.mark()
    await c2.hangup()
    ab2 = await ami.wait_for("QueueCallerAbandon", lambda e: e.queue == s.queue, since=mark)
    c3, join3 = await enter("+4940100400")
    await asyncio.sleep(1.5)
    mark = ami.mark()
    await c3.hangup()
    ab3 = await ami.wait_for("QueueCallerAbandon", lambda e: e.queue == s.queue, since=mark)
    assert ab3.timestamp - join3.timestamp < 5
    # 4. The first caller again, answered at once: a repeat within the FCR window.
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/ready")
    c4, join4 = await enter(repeat)
    mark4 = ami.mark()
    conn4 = await ami.wait_for("AgentConnect", lambda e: e.queue == s.queue and e.uniqueid == join4.uniqueid)
    await asyncio.sleep(1.0)
    await c4.hangup()
    end4 = await ami.wait_for("AgentComplete", lambda e: e.queue == s.queue, since=mark4)
    rows = await facts_final(db, s.queue, 4)
    t1 = time.time()
    for r, name in zip(rows, ("answered-held", "abandoned", "short-abandoned", "answered-repeat"), strict=True):
        await record_fixture(db, r["linkedid"], name)

    outcomes = [r["outcome"] for r in rows]
    assert outcomes == ["answered", "abandoned", "short_abandoned", "answered"], outcomes
    wait1, wait4 = conn1.timestamp - join1.timestamp, conn4.timestamp - join4.timestamp
    held = unhold.timestamp - hold.timestamp
    talk1 = end1.timestamp - conn1.timestamp - held
    talk4 = end4.timestamp - conn4.timestamp
    f1, f2, f3, f4 = rows
    assert abs(f1["wait_s"] - wait1) < 1 and wait1 > 2.5
    assert abs(f1["hold_s"] - held) < 1 and held > 1.0
    assert abs(f1["talk_s"] - talk1) < 1
    assert abs(f1["acw_s"] - WRAPUP_S) < 1 and f1["disposition"] == "resolved"
    assert abs(f2["wait_s"] - (ab2.timestamp - join2.timestamp)) < 1 and f2["wait_s"] > 5
    assert abs(f3["wait_s"] - (ab3.timestamp - join3.timestamp)) < 1
    assert f1["agent"] == f4["agent"] == agent and f1["linkedid"] == join1.linkedid

    # The report API: the same figures for the range and for the one interval of a day.
    since = datetime.fromtimestamp(t0, UTC).replace(minute=0, second=0, microsecond=0)
    until = since + timedelta(days=1)
    report = await api(live_stack, "GET", f"/api/v1/reports/queues?from={since.isoformat().replace('+', '%2B')}"
                                          f"&to={until.isoformat().replace('+', '%2B')}&interval=1d&queue={s.queue}")
    (q,) = report["queues"]
    total = q["total"]
    assert (total["offered"], total["answered"], total["abandoned"], total["short_abandoned"]) == (4, 2, 1, 1)
    assert abs(total["asa_s"] - (wait1 + wait4) / 2) < 1
    assert abs(total["max_wait_s"] - max(wait1, wait4, f2["wait_s"], f3["wait_s"])) < 1
    assert abs(total["avg_abandon_wait_s"] - f2["wait_s"]) < 0.01
    within = sum(1 for w in (wait1, wait4) if w <= 2)
    assert total["service_level"] == pytest.approx(within / 3)
    assert total["abandon_rate"] == pytest.approx(1 / 3)
    assert abs(total["avg_hold_s"] - held / 2) < 1
    assert abs(total["aht_s"] - (talk1 + held + f1["acw_s"] + talk4 + f4["acw_s"]) / 2) < 1
    assert total["fcr_rate"] == 0.0  # call 1 was repeated; call 4's window has not elapsed: left out
    assert q["intervals"][0]["offered"] == 4
    assert t1 - t0 < 120

    # The agent report: the pause reasons and state times add up to the logged-in time.
    agents = await api(live_stack, "GET", f"/api/v1/reports/agents?from={since.isoformat().replace('+', '%2B')}"
                                          f"&to={until.isoformat().replace('+', '%2B')}&interval=1d&agent={agent}")
    (a,) = agents["agents"]
    at = a["total"]
    parts = at["available_s"] + at["ringing_s"] + at["talk_s"] + at["hold_s"] + at["acw_s"] + at["paused_s"]
    assert abs(parts - at["logged_in_s"]) < 0.01
    assert at["handled"] == 2 and set(at["paused_by_reason"]) >= {"break", "lunch"}
    assert abs(at["paused_by_reason"]["lunch"] - (join4.timestamp - ab2.timestamp) - 7.5) < 3


async def _state(live_stack: LiveStack, agent: str, state: str) -> bool:
    body = await api(live_stack, "GET", f"/api/v1/agents/{agent}/state")
    return bool(body["state"] == state)


async def test_a_call_that_times_out_in_one_queue_and_is_answered_in_the_next_is_two_queue_calls(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    spill = await acd({"lea": ("agent2", 3)})
    front = await acd({}, max_wait_s=5, overflow_queue=spill.queue)
    (agent,) = spill.agents
    await phone_for(live_stack, phones, "agent2")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    caller = await start_trunk_caller(live_stack, phones, "+4940100500")
    mark = ami.mark()
    await caller.dial_nowait(f"sip:{front.did}@{live_stack.sip_registrar}")
    join = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == front.queue, since=mark)
    conn = await ami.wait_for("AgentConnect", lambda e: e.queue == spill.queue, since=mark, timeout=20)
    await asyncio.sleep(1.0)
    await caller.hangup()
    (first,) = await facts_final(db, front.queue, 1)
    (second,) = await facts_final(db, spill.queue, 1)
    await record_fixture(db, join.linkedid, "timeout-then-overflow-answered")
    assert first["outcome"] == "timeout" and abs(first["wait_s"] - 5) < 1.5
    assert second["outcome"] == "answered" and second["agent"] == agent
    assert first["linkedid"] == second["linkedid"] == join.linkedid == conn.linkedid
    listed = await api(live_stack, "GET", f"/api/v1/calls?caller=%2B4940100500&from={iso(join.timestamp - 60)}"
                                          f"&to={iso(join.timestamp + 600)}".replace("+00:00", "Z"))
    assert [c["queue"] for c in listed["calls"]] == [front.queue, spill.queue], listed


async def test_calls_that_ran_through_a_service_outage_are_restored_from_queue_log(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    s = await acd({"max": ("agent3", 3)})
    (agent,) = s.agents
    await phone_for(live_stack, phones, "agent3")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")

    async def enter(number: str) -> tuple[BaresipPhone, Any]:
        caller = await start_trunk_caller(live_stack, phones, number)
        mark = ami.mark()
        await caller.dial_nowait(f"sip:{s.did}@{live_stack.sip_registrar}")
        return caller, await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)

    # A is answered before the outage; B and C wait (the agent is busy with A).
    a, join_a = await enter("+4940100700")
    conn_a = await ami.wait_for("AgentConnect", lambda e: e.uniqueid == join_a.uniqueid)
    b, join_b = await enter("+4940100800")
    c, join_c = await enter("+4940100900")
    mark = ami.mark()
    await asyncio.to_thread(live_stack.stack.service.kill)
    # During the outage (this test's own AMI session keeps watching): A ends, C gives up, B is answered and ends.
    await asyncio.sleep(1.0)
    await a.hangup()
    end_a = await ami.wait_for("AgentComplete", lambda e: e.uniqueid == join_a.uniqueid, since=mark)
    await asyncio.sleep(max(0.0, join_c.timestamp + 6.0 - time.time()))  # C waits over the short-abandon limit
    await c.hangup()
    ab_c = await ami.wait_for("QueueCallerAbandon", lambda e: e.uniqueid == join_c.uniqueid, since=mark)
    conn_b = await ami.wait_for("AgentConnect", lambda e: e.uniqueid == join_b.uniqueid, since=mark)
    await asyncio.sleep(1.5)
    await b.hangup()
    end_b = await ami.wait_for("AgentComplete", lambda e: e.uniqueid == join_b.uniqueid, since=mark)
    assert ab_c.timestamp - join_c.timestamp > 5
    await asyncio.to_thread(live_stack.stack.service.start)
    await asyncio.to_thread(live_stack.stack.wait_healthy, 30)

    fa, fb, fc = await facts_final(db, s.queue, 3)
    assert [f["outcome"] for f in (fa, fb, fc)] == ["answered", "answered", "abandoned"]
    assert [f["linkedid"] for f in (fa, fb, fc)] == [join_a.linkedid, join_b.linkedid, join_c.linkedid]
    # queue_log says what happened (whole seconds); CEL gives the instants: the facts are as exact as live ones.
    assert abs(fa["wait_s"] - (conn_a.timestamp - join_a.timestamp)) < 0.1
    assert abs(fa["talk_s"] - (end_a.timestamp - conn_a.timestamp)) < 0.1
    assert abs(fb["wait_s"] - (conn_b.timestamp - join_b.timestamp)) < 0.1
    assert abs(fb["talk_s"] - (end_b.timestamp - conn_b.timestamp)) < 0.1
    assert abs(fc["wait_s"] - (ab_c.timestamp - join_c.timestamp)) < 0.1
    assert fa["agent"] == fb["agent"] == agent
    # The gap is recorded and reconciled: the queue report is whole again and says so.
    gap = await db.fetchrow("SELECT * FROM event_gaps WHERE node = $1 ORDER BY id DESC LIMIT 1",
                            live_stack.cfg.node)
    assert gap is not None and gap["until"] is not None and gap["reconciled_at"] is not None
    since = datetime.fromtimestamp(join_a.timestamp - 3600, UTC).isoformat().replace("+00:00", "Z")
    until = datetime.fromtimestamp(join_a.timestamp + 3600, UTC).isoformat().replace("+00:00", "Z")
    report = await api(live_stack, "GET", f"/api/v1/reports/queues?from={since}&to={until}&interval=1h"
                                          f"&queue={s.queue}")
    total = report["queues"][0]["total"]
    assert (total["offered"], total["answered"], total["abandoned"]) == (3, 2, 1)


async def test_the_wallboard_feed_pushes_queue_figures_stamped_with_their_event(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,  # noqa: F811
) -> None:
    s = await acd({"wally": ("agent2", 3)}, sl_threshold_s=30)
    (agent,) = s.agents
    await phone_for(live_stack, phones, "agent2")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/pause", {"reason": "break"})
    http = live_stack.cfg.http
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"http://{http.host}:{http.port}/api/v1/feed?token={http.admin_token}") as ws:
        received: list[dict[str, Any]] = []

        async def until(pred: Any) -> dict[str, Any]:
            for m in received:
                if pred(m):
                    return m
            while True:
                m = json.loads((await asyncio.wait_for(ws.receive(), 15)).data)
                m["_received"] = time.time()
                received.append(m)
                if pred(m):
                    return m

        caller = await start_trunk_caller(live_stack, phones, "+4940101000")
        mark = ami.mark()
        await caller.dial_nowait(f"sip:{s.did}@{live_stack.sip_registrar}")
        join = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)
        waiting = await until(lambda m: m.get("type") == "queue_realtime" and m["queue"] == s.queue)
        assert waiting["waiting"] == 1 and waiting["offered"] == 1 and waiting["event_ts"] == join.timestamp
        snap = await api(live_stack, "GET", "/api/v1/live")
        (q,) = [q for q in snap["queues"] if q["queue"] == s.queue]
        assert q["waiting"] == 1 and q["longest_wait_s"] >= 0 and q["agents_by_state"] == {"paused": 1}
        await api(live_stack, "POST", f"/api/v1/agents/{agent}/ready")
        conn = await ami.wait_for("AgentConnect", lambda e: e.queue == s.queue, since=mark)
        answered = await until(lambda m: m.get("type") == "queue_realtime" and m["queue"] == s.queue
                               and m["answered"] == 1)
        assert answered["event_ts"] == conn.timestamp and answered["waiting"] == 0
        assert abs(answered["asa_s"] - (conn.timestamp - join.timestamp)) < 0.01
        assert answered["service_level"] == 1.0
        on_call = await until(lambda m: m.get("type") == "agent_state" and m["agent"] == agent
                              and m["to_state"] == "on_call")
        assert on_call["caller"] == "+4940101000" and on_call["queue"] == s.queue
        assert on_call["event_ts"] == conn.timestamp
        # Pushed within a second of the event (this machine: a few ms).
        assert answered["_received"] - conn.timestamp < 1.0
        snap = await api(live_stack, "GET", "/api/v1/live")
        (me,) = [a for a in snap["agents"] if a["agent"] == agent]
        assert (me["state"], me["caller"], me["queue"]) == ("on_call", "+4940101000", s.queue)
        await caller.hangup()


async def test_a_transferred_call_and_a_rebuild_from_events_gives_the_same_facts(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    s = await acd({"tess": ("agent1", 3)})
    (agent,) = s.agents
    await phone_for(live_stack, phones, "agent1")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    caller = await start_trunk_caller(live_stack, phones, "+4940101100")
    mark = ami.mark()
    await caller.dial_nowait(f"sip:{s.did}@{live_stack.sip_registrar}")
    conn = await ami.wait_for("AgentConnect", lambda e: e.queue == s.queue, since=mark)
    await asyncio.sleep(1.5)
    # The agent blind-transfers the caller away (to the echo test): the agent's talk ends at the transfer.
    await ami.client.action("BlindTransfer", {"Channel": conn.dest_channel or "", "Context": "agents",
                                              "Exten": "600"}, as_list=False)
    done = await ami.wait_for("AgentComplete", lambda e: e.queue == s.queue, since=mark)
    assert done.fields.get("Reason") == "transfer"
    await asyncio.sleep(1.0)
    await caller.hangup()
    (fact,) = await facts_final(db, s.queue, 1)
    assert fact["transferred"] and abs(fact["talk_s"] - (done.timestamp - conn.timestamp)) < 1
    since = datetime.fromtimestamp(conn.timestamp - 600, UTC).isoformat().replace("+00:00", "Z")
    until = datetime.fromtimestamp(conn.timestamp + 600, UTC).isoformat().replace("+00:00", "Z")
    report = await api(live_stack, "GET", f"/api/v1/reports/queues?from={since}&to={until}&queue={s.queue}")
    assert report["queues"][0]["total"]["transfer_rate"] == 1.0

    # Rebuilding this call's range from the stored events gives identical facts.
    columns = ("linkedid, uniqueid, queue, caller_number, entered_at, outcome, wait_s, agent, ring_s, talk_s, "
               "hold_s, acw_s, transferred, disposition, csat, ended_at, final")
    query = f"SELECT {columns} FROM queue_calls WHERE linkedid = $1 ORDER BY uniqueid, queue, entered_at"
    before = [dict(r) for r in await db.fetch(query, conn.linkedid)]
    around = (datetime.fromtimestamp(conn.timestamp - 30, UTC).isoformat().replace("+00:00", "Z"),
              datetime.fromtimestamp(time.time(), UTC).isoformat().replace("+00:00", "Z"))
    out = await api(live_stack, "POST", f"/api/v1/reports/rebuild?from={around[0]}&to={around[1]}")
    assert out["calls"] >= 1
    after = [dict(r) for r in await db.fetch(query, conn.linkedid)]
    assert after == before and len(before) >= 1
