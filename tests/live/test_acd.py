"""ACD with real phones: agent states follow what the phones do and are stored; skills decide who rings."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web

from sim.baresip import BaresipPhone
from tests.live.support import EventRecorder, eventually
from tests.live.test_call_flow import start_caller
from tests.live_stack import AGENT_TONE, LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]


@dataclass
class Setup:
    queue: str
    did: str
    skill: str
    agents: dict[str, str]  # agent -> phone


async def api(live_stack: LiveStack, method: str, path: str, body: dict[str, Any] | None = None,
              expect: int | None = 200) -> Any:
    status, out = await asyncio.to_thread(live_stack.api, method, path, body)
    if expect is not None:
        assert status == expect, (method, path, status, out)
    return out


@pytest_asyncio.fixture
async def acd(live_stack: LiveStack) -> AsyncIterator[Any]:
    """Creates a skill, a queue with a route, and agents on the session's phones; removes them afterwards."""
    made: list[Setup] = []

    async def make(agents: dict[str, tuple[str, int]], **queue: Any) -> Setup:
        tag = secrets.token_hex(3)
        skill, qname, did = f"sk-{tag}", f"q-{tag}", f"3{secrets.randbelow(10**6):06d}"
        await api(live_stack, "POST", "/api/v1/skills", {"name": skill}, 201)
        await api(live_stack, "POST", "/api/v1/queues", {"name": qname, "required_skill": skill, **queue}, 201)
        await api(live_stack, "POST", "/api/v1/routes", {"did": did, "queue": qname}, 201)
        names = {}
        for role, (phone, level) in agents.items():
            name = f"{role}-{tag}"
            await api(live_stack, "POST", "/api/v1/agents", {"name": name, "phone": phone, "skills": {skill: level}},
                      201)
            names[name] = phone
        s = Setup(qname, did, skill, names)
        made.append(s)
        return s

    yield make
    failures = []
    for s in reversed(made):  # a later queue may overflow into an earlier one
        steps = [("POST", f"/api/v1/agents/{a}/force", {"state": "logged_out"}, 200) for a in s.agents]
        steps += [("DELETE", f"/api/v1/agents/{a}", None, 204) for a in s.agents]
        steps += [("DELETE", f"/api/v1/routes/{s.did}", None, 204), ("DELETE", f"/api/v1/queues/{s.queue}", None, 204),
                  ("DELETE", f"/api/v1/skills/{s.skill}", None, 204)]
        for method, path, body, want in steps:
            status, out = await asyncio.to_thread(live_stack.api, method, path, body)
            if status != want:
                failures.append((method, path, status, out))
    assert not failures, f"clean-up failed: {failures}"


async def phone_for(live_stack: LiveStack, phones: list[BaresipPhone], user: str, tone: float = AGENT_TONE,
                    auto_answer: bool = True) -> BaresipPhone:
    p = BaresipPhone(f"{user}-acd", workdir=live_stack.runtime / "phones" / f"acd-{user}-{secrets.token_hex(2)}",
                     sip_user=user, sip_password=live_stack.cfg.phone(user).password,
                     registrar=live_stack.sip_registrar, tone_hz=tone, auto_answer=auto_answer)
    phones.append(p)
    await p.start()
    await p.wait_registered(10)
    return p


async def transitions(db: asyncpg.Connection, agent: str) -> list[tuple[str, str, str | None, str]]:
    rows = await db.fetch("SELECT from_state, to_state, reason, cause FROM agent_state_log WHERE agent = $1 "
                          "ORDER BY at, id", agent)
    return [(r["from_state"], r["to_state"], r["reason"], r["cause"]) for r in rows]


async def test_states_follow_the_phone_and_are_stored(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection, acd: Any,
) -> None:
    s = await acd({"ann": ("agent1", 3)}, wrapup_s=4, ring_timeout_s=15)
    (agent,) = s.agents
    await phone_for(live_stack, phones, "agent1")
    state = await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    assert state["state"] == "available"
    # An illegal command is refused with the current state.
    status, err = await asyncio.to_thread(live_stack.api, "POST", f"/api/v1/agents/{agent}/ready")
    assert status == 200  # ready while available is a no-op
    status, err = await asyncio.to_thread(live_stack.api, "POST", f"/api/v1/agents/{agent}/pause",
                                          {"reason": "no-such-reason"})
    assert status == 422

    caller = await start_caller(live_stack, phones)
    mark = ami.mark()
    await caller.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
    connect = await ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == agent, since=mark)
    await eventually(lambda: _state_is(live_stack, agent, "on_call"), what="on_call")
    status, err = await asyncio.to_thread(live_stack.api, "POST", f"/api/v1/agents/{agent}/logout")
    assert status == 409 and err["current_state"] == "on_call"
    await caller.hangup()
    await ami.wait_for("AgentComplete", lambda e: e.fields.get("MemberName") == agent, since=mark)
    st = await eventually(lambda: _state_is(live_stack, agent, "acw"), what="acw")
    d = await api(live_stack, "POST", f"/api/v1/agents/{agent}/disposition", {"code": "resolved"})
    assert d["linkedid"] == connect.linkedid
    # A call arriving during after-call work waits: the agent is offered it only when ACW ends by itself
    # after the queue's wrap-up time (4 s).
    waiting = await start_caller(live_stack, phones)
    mark = ami.mark()
    await waiting.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
    called = await ami.wait_for("AgentCalled", lambda e: e.fields.get("MemberName") == agent, since=mark,
                                timeout=10)
    back = await eventually(lambda: _acw_timeout_at(db, agent), what="acw ended by its timer")
    assert 3.5 <= back - st["since"] <= 5.0, back - st["since"]
    assert called.timestamp >= back - 0.05, "rung during after-call work"
    await ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == agent, since=mark)
    await waiting.hangup()
    await eventually(lambda: _state_is(live_stack, agent, "acw"), what="acw again")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/ready")
    # A paused agent is not offered calls; ready makes the waiting call ring.
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/pause", {"reason": "break"})
    caller2 = await start_caller(live_stack, phones)
    mark = ami.mark()
    await caller2.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
    joined = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)
    with pytest.raises(TimeoutError):
        await ami.wait_for("AgentCalled", lambda e: e.fields.get("MemberName") == agent, since=mark, timeout=3)
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/ready")
    called = await ami.wait_for("AgentCalled", lambda e: e.fields.get("MemberName") == agent, since=mark)
    assert called.linkedid == joined.linkedid
    await ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == agent, since=mark)
    await caller2.hangup()
    await eventually(lambda: _state_is(live_stack, agent, "acw"), what="acw 2")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/ready")

    call = [("available", "ringing"), ("ringing", "on_call"), ("on_call", "acw")]
    got = await eventually(lambda: _stored_until(db, agent, 15), what="stored transitions")
    assert [(f, t) for f, t, _, _ in got] == [
        ("logged_out", "available"), *call, ("acw", "available"), *call, ("acw", "available"),
        ("available", "paused"), ("paused", "available"), *call, ("acw", "available"),
    ]
    assert ("acw", "available", None, "acw_timeout") in got
    assert ("available", "paused", "break", "cmd:pause") in got
    assert await db.fetchval("SELECT code FROM call_dispositions WHERE linkedid = $1", connect.linkedid) == "resolved"


async def test_ring_no_answer_pauses_the_agent_as_missed(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection, acd: Any,
) -> None:
    s = await acd({"ben": ("agent2", 3)}, ring_timeout_s=5)
    (agent,) = s.agents
    await phone_for(live_stack, phones, "agent2", auto_answer=False)
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    caller = await start_caller(live_stack, phones)
    mark = ami.mark()
    await caller.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
    await ami.wait_for("AgentRingNoAnswer", lambda e: e.fields.get("MemberName") == agent, since=mark, timeout=15)
    st = await eventually(lambda: _state_is(live_stack, agent, "paused"), what="auto-paused")
    assert st["reason"] == "missed"
    # Paused in Asterisk too: the caller is not offered to this agent again.
    mark = ami.mark()
    with pytest.raises(TimeoutError):
        await ami.wait_for("AgentCalled", lambda e: e.fields.get("MemberName") == agent, since=mark, timeout=3)
    await caller.hangup()
    got = await eventually(lambda: _stored_until(db, agent, 4), what="stored")
    assert ("ringing", "available", None, "ring_no_answer") in got
    assert ("available", "paused", "missed", "ring_no_answer") in got


async def _state_is(live_stack: LiveStack, agent: str, state: str) -> dict[str, Any] | None:
    status, body = await asyncio.to_thread(live_stack.api, "GET", f"/api/v1/agents/{agent}/state")
    assert status == 200, body
    return body if body["state"] == state else None


async def _acw_timeout_at(db: asyncpg.Connection, agent: str) -> float | None:
    at = await db.fetchval("SELECT at FROM agent_state_log WHERE agent = $1 AND from_state = 'acw' "
                           "AND cause = 'acw_timeout' ORDER BY at LIMIT 1", agent)
    return at.timestamp() if at else None


async def _stored_until(db: asyncpg.Connection, agent: str, n: int) -> list[tuple[str, str, str | None, str]] | None:
    got = await transitions(db, agent)
    return got if len(got) >= n else None


async def test_skills_expert_first_novice_only_after_the_escalation_wait(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,
) -> None:
    escalate_after = 4
    s = await acd({"expert": ("agent1", 5), "novice": ("agent2", 1)},
                  escalation=[{"after_s": 0, "min_level": 5}, {"after_s": escalate_after, "min_level": 1}])
    expert, novice = sorted(s.agents, key=lambda a: not a.startswith("expert"))
    await phone_for(live_stack, phones, "agent1")
    await phone_for(live_stack, phones, "agent2")
    for a in (expert, novice):
        assert (await api(live_stack, "POST", f"/api/v1/agents/{a}/login"))["state"] == "available"

    # Both free: the expert gets the call, the novice's phone never rings for it.
    c1 = await start_caller(live_stack, phones)
    mark = ami.mark()
    await c1.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
    first = await ami.wait_for("AgentConnect", lambda e: e.queue == s.queue, since=mark)
    assert first.fields.get("MemberName") == expert
    assert not ami.find("AgentCalled", lambda e: e.fields.get("MemberName") == novice, since=mark)

    # Expert busy: the next caller reaches the novice only once the escalation wait has passed.
    c2 = await start_caller(live_stack, phones)
    mark = ami.mark()
    await c2.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
    joined = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)
    called = await ami.wait_for("AgentCalled", lambda e: e.fields.get("MemberName") == novice, since=mark,
                                timeout=escalate_after + 10)
    waited = called.timestamp - joined.timestamp
    # app_queue checks penalty rules once a second on a whole-second clock: the step applies between T and T + 1 s.
    assert escalate_after - 0.1 <= waited <= escalate_after + 1.2, f"novice rung after {waited:.2f} s"
    await ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == novice, since=mark)
    await c1.hangup()
    await c2.hangup()


async def _member_paused(ami: EventRecorder, queue: str, agent: str) -> bool | None:
    """None while the agent is not a member of the queue, else whether Asterisk has it paused."""
    members = [e for e in await ami.client.list_events("QueueStatus", {"Queue": queue}) if e.name == "QueueMember"]
    for m in members:
        if m.fields.get("Name") == agent:
            return m.fields.get("Paused") == "1"
    return None


async def test_agents_are_back_in_their_queues_after_the_service_and_asterisk_restart(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,
) -> None:
    s = await acd({"ada": ("agent1", 4), "bo": ("agent2", 2)})
    ada, bo = sorted(s.agents)
    for a in (ada, bo):
        await api(live_stack, "POST", f"/api/v1/agents/{a}/login")
    await api(live_stack, "POST", f"/api/v1/agents/{bo}/pause", {"reason": "lunch"})

    async def both_back() -> bool:
        return await _member_paused(ami, s.queue, ada) is False and await _member_paused(ami, s.queue, bo) is True

    # The service is killed (no clean shutdown) and started again.
    await asyncio.to_thread(live_stack.stack.service.kill)
    await asyncio.to_thread(live_stack.stack.service.start)
    await asyncio.to_thread(live_stack.stack.wait_healthy, 30)
    await eventually(both_back, timeout=5, what="members as they were after a service restart")
    assert (await api(live_stack, "GET", f"/api/v1/agents/{bo}/state"))["reason"] == "lunch"

    # Asterisk restarts: it forgot its dynamic members; within 5 s of the service reconnecting they are back.
    mark = ami.mark()
    await asyncio.to_thread(live_stack.stack.asterisk.stop)
    await asyncio.to_thread(live_stack.stack.asterisk.start)
    await ami.wait_for("AmiConnected", since=mark, timeout=20)
    await eventually(lambda: _healthy_ami(live_stack), timeout=15, what="service reconnected")
    await eventually(both_back, timeout=5, what="members as they were after an Asterisk restart")


async def _healthy_ami(live_stack: LiveStack) -> bool:
    h = await asyncio.to_thread(live_stack.stack.health)
    return bool(h and h["checks"]["ami"])


async def test_overflow_after_max_wait_and_when_the_queue_is_full(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,
) -> None:
    # "spill" has an agent; "front" has none, waits at most 4 s, holds at most 1 caller, and overflows to spill.
    spill = await acd({"sue": ("agent1", 3)})
    front = await acd({}, max_wait_s=5, max_len=1, overflow_queue=spill.queue)
    (sue,) = spill.agents
    await phone_for(live_stack, phones, "agent1")
    await api(live_stack, "POST", f"/api/v1/agents/{sue}/login")
    c1, c2 = await start_caller(live_stack, phones), await start_caller(live_stack, phones)

    mark = ami.mark()
    await c1.dial(f"sip:{front.did}@{live_stack.sip_registrar}", timeout=15)
    joined = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == front.queue, since=mark)
    # The queue is full (max_len 1): the second caller goes straight to the overflow queue.
    await c2.dial(f"sip:{front.did}@{live_stack.sip_registrar}", timeout=15)
    second = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == spill.queue, since=mark)
    assert second.linkedid != joined.linkedid
    assert not ami.find("QueueCallerJoin", lambda e: e.queue == front.queue and e.linkedid == second.linkedid,
                        since=mark)
    await ami.wait_for("AgentConnect", lambda e: e.linkedid == second.linkedid, since=mark)
    await c2.hangup()
    # The first caller leaves "front" after its max wait and is served in "spill".
    left = await ami.wait_for("QueueCallerLeave", lambda e: e.linkedid == joined.linkedid, since=mark, timeout=15)
    assert 4 <= left.timestamp - joined.timestamp <= 6.5
    await ami.wait_for("QueueCallerJoin", lambda e: e.queue == spill.queue and e.linkedid == joined.linkedid,
                       since=mark)
    await ami.wait_for("AgentConnect", lambda e: e.linkedid == joined.linkedid, since=mark, timeout=20)
    await c1.hangup()


async def test_screen_pop_webhook_fires_once_per_offered_call(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,
) -> None:
    url = live_stack.cfg.screenpop
    got: list[tuple[dict[str, Any], bool]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        good = request.headers.get("X-Ccpbx-Signature") == "sha256=" + hmac.new(
            url.secret.encode(), body, hashlib.sha256).hexdigest()
        got.append((await request.json(), good))
        arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = int(url.url.rsplit(":", 1)[1].split("/")[0])
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        s = await acd({"pam": ("agent2", 3)})
        (pam,) = s.agents
        await phone_for(live_stack, phones, "agent2")
        await api(live_stack, "POST", f"/api/v1/agents/{pam}/login")
        caller = await start_caller(live_stack, phones)
        mark = ami.mark()
        await caller.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
        called = await ami.wait_for("AgentCalled", lambda e: e.fields.get("MemberName") == pam, since=mark)
        await ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == pam, since=mark)
        await asyncio.wait_for(arrived.wait(), 5)
        await caller.hangup()
        await ami.wait_for("AgentComplete", lambda e: e.fields.get("MemberName") == pam, since=mark)
        pops = [p for p, _ in got if p["linkedid"] == called.linkedid]
        assert len(pops) == 1, got
        assert got[0][1], "bad signature"
        assert pops[0]["agent"] == pam and pops[0]["queue"] == s.queue
        assert pops[0]["ivr_inputs"] == {"did": s.did}
    finally:
        await runner.cleanup()


async def caller_with_number(live_stack: LiveStack, phones: list[BaresipPhone], number: str) -> BaresipPhone:
    """A carrier call presenting `number` as the caller (From user), authenticating as the trunk."""
    trunk = live_stack.cfg.sip.trunk
    p = BaresipPhone(f"caller-{number}", workdir=live_stack.runtime / "phones" / f"vip-{secrets.token_hex(3)}",
                     sip_user=trunk.user, sip_password=trunk.password, registrar=live_stack.sip_registrar,
                     tone_hz=700.0, register=False, from_user=number)
    phones.append(p)
    await p.start()
    return p


async def test_vip_caller_is_served_before_an_earlier_caller(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,
) -> None:
    vip, regular = f"+1555{secrets.randbelow(10**6):06d}", "+15550100"
    await api(live_stack, "POST", "/api/v1/vip-callers", {"number": vip, "priority": 50}, 201)
    try:
        s = await acd({"val": ("agent1", 3)})
        (agent,) = s.agents
        await phone_for(live_stack, phones, "agent1")
        await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
        await api(live_stack, "POST", f"/api/v1/agents/{agent}/pause", {"reason": "break"})
        first = await caller_with_number(live_stack, phones, regular)
        second = await caller_with_number(live_stack, phones, vip)
        mark = ami.mark()
        await first.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
        j1 = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)
        await second.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
        j2 = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue and e.linkedid != j1.linkedid,
                                since=mark)
        assert j1.fields.get("CallerIDNum") == regular and j2.fields.get("CallerIDNum") == vip
        assert j2.fields.get("Position") == "1"  # the VIP went ahead of the caller already waiting
        await api(live_stack, "POST", f"/api/v1/agents/{agent}/ready")
        served = await ami.wait_for("AgentConnect", lambda e: e.queue == s.queue, since=mark)
        assert served.linkedid == j2.linkedid
        await first.hangup()
        await second.hangup()
    finally:
        await api(live_stack, "DELETE", f"/api/v1/vip-callers/{vip.replace('+', '%2B')}", None, 204)
