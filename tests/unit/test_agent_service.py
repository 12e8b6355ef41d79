"""The agent effects layer against a real PostgreSQL and a recording AMI stand-in: which AMI actions each
command and event leads to, in which order, and what is stored. (The live tests run the same code against a
real Asterisk; this one pins the exact actions quickly.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from acd.agent_service import AgentService
from acd.agent_state import IllegalCommand, State
from acd.membership import QueueMembership
from reporting.migrate import migrate
from telephony.ami import parse_event

pytestmark = pytest.mark.asyncio


class RecordingAmi:
    """Answers every action with success and remembers it."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, dict[str, Any]]] = []

    async def action(self, name: str, fields: Mapping[str, Any] | None = None, *, as_list: bool,
                     timeout: float | None = None) -> Any:
        self.actions.append((name, dict(fields or {})))
        return {"Response": "Success"}


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest_asyncio.fixture
async def svc(pg_db: str) -> AsyncIterator[tuple[AgentService, RecordingAmi, Clock, asyncpg.Pool]]:
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=3)
    await migrate(pool)
    await pool.execute("INSERT INTO skills (name) VALUES ('billing')")
    await pool.execute("INSERT INTO phones (name, password) VALUES ('desk1', 'p' || repeat('x', 20))")
    await pool.execute("INSERT INTO agents (name, phone) VALUES ('ann', 'desk1')")
    await pool.execute("INSERT INTO agent_skills (agent, skill, level) VALUES ('ann', 'billing', 4)")
    await pool.execute("INSERT INTO queues (name, required_skill, wrapup_s) VALUES ('billing', 'billing', 10)")
    await pool.execute("INSERT INTO queues (name) VALUES ('general')")
    await pool.execute("INSERT INTO queues (name, required_skill) VALUES ('other', NULL)")
    ami = RecordingAmi()
    clock = Clock(1_800_000_000.0)
    membership = QueueMembership(ami, pool, "n1", set())  # type: ignore[arg-type]
    service = AgentService(ami, pool, "n1", membership, clock=clock)  # type: ignore[arg-type]
    await service.start()
    yield service, ami, clock, pool
    await service.stop()
    await pool.close()


def ev(name: str, ts: float, **fields: str) -> Any:
    return parse_event({"Event": name, "Timestamp": f"{ts:.6f}", **fields}, ts)


async def drained(service: AgentService) -> None:
    """Wait until the effects worker has run everything queued so far."""
    done = asyncio.get_running_loop().create_future()
    service._queue_effect(_noop, done)
    await asyncio.wait_for(done, 5)


async def _noop() -> None:
    return None


async def test_login_joins_queues_by_skill_with_penalty(svc: Any) -> None:
    service, ami, _, pool = svc
    status = await service.login("ann")
    assert status.state == State.AVAILABLE
    adds = {f["Queue"]: f for n, f in ami.actions if n == "QueueAdd"}
    assert set(adds) == {"billing", "general", "other"}  # skill queue + the queues with no required skill
    assert adds["billing"]["Penalty"] == "1" and adds["general"]["Penalty"] == "0"  # level 4 -> penalty 1
    assert {f["Interface"] for f in adds.values()} == {"PJSIP/desk1"}
    assert {f["MemberName"] for f in adds.values()} == {"ann"}
    assert await pool.fetchval("SELECT state FROM agent_sessions WHERE agent = 'ann'") == "available"


async def test_call_with_wrapup_pauses_at_connect_and_unpauses_when_acw_ends(svc: Any) -> None:
    service, ami, clock, pool = svc
    await service.login("ann")
    t = clock.t + 1
    call = {"Queue": "billing", "Interface": "PJSIP/desk1", "MemberName": "ann", "Uniqueid": "c.1",
            "Linkedid": "c.1", "Channel": "PJSIP/carrier-1", "DestChannel": "PJSIP/desk1-1", "DestUniqueid": "a.1"}
    ami.actions.clear()
    service.on_event(ev("AgentCalled", t, **call))
    service.on_event(ev("AgentConnect", t + 2, HoldTime="2", RingTime="2", **call))
    await drained(service)
    # Paused right at connect, so nothing can be offered between the hang-up and after-call work.
    assert ami.actions == [("QueuePause", {"Interface": "PJSIP/desk1", "Paused": "true", "Reason": "ccpbx:acw"})]
    service.on_event(ev("AgentComplete", t + 32, TalkTime="30", HoldTime="2", Reason="caller", **call))
    assert service.status("ann").state == State.ACW
    clock.t = t + 32 + 10.5  # the queue's wrap-up time (10 s) has passed
    service._tick_wake.set()
    for _ in range(50):
        if service.status("ann").state == State.AVAILABLE:
            break
        await asyncio.sleep(0.02)
    await drained(service)
    assert service.status("ann").state == State.AVAILABLE
    assert ami.actions[-1] == ("QueuePause", {"Interface": "PJSIP/desk1", "Paused": "false",
                                              "Reason": "ccpbx:ready"})
    rows = await pool.fetch("SELECT to_state, cause, at FROM agent_state_log WHERE agent = 'ann' ORDER BY at, id")
    assert [r["to_state"] for r in rows] == ["available", "ringing", "on_call", "acw", "available"]
    assert rows[-1]["cause"] == "acw_timeout"
    assert rows[-1]["at"].timestamp() == pytest.approx(t + 42, abs=1e-3)  # exactly wrap-up after the call


async def test_ring_no_answer_pauses_as_missed_and_commands_check_state(svc: Any) -> None:
    service, ami, clock, _ = svc
    await service.login("ann")
    t = clock.t + 1
    call = {"Queue": "general", "Interface": "PJSIP/desk1", "MemberName": "ann", "Uniqueid": "c.2",
            "Linkedid": "c.2", "Channel": "PJSIP/carrier-2"}
    ami.actions.clear()
    service.on_event(ev("AgentCalled", t, **call))
    with pytest.raises(IllegalCommand) as refused:
        await service.logout("ann")
    assert refused.value.current == State.RINGING
    service.on_event(ev("AgentRingNoAnswer", t + 15, RingTime="15000", **call))
    await drained(service)
    assert service.status("ann").state == State.PAUSED and service.status("ann").reason == "missed"
    assert ("QueuePause", {"Interface": "PJSIP/desk1", "Paused": "true", "Reason": "ccpbx:missed"}) in ami.actions
    # The echo of our own pause changes nothing.
    service.on_event(ev("QueueMemberPause", t + 15.01, Queue="general", Interface="PJSIP/desk1",
                        MemberName="ann", Paused="1", PausedReason="ccpbx:missed"))
    assert service.status("ann").reason == "missed"
    clock.t = t + 20
    assert (await service.ready("ann")).state == State.AVAILABLE
    clock.t = t + 21
    await service.logout("ann")
    assert [f["Queue"] for n, f in ami.actions if n == "QueueRemove"] == ["billing", "general", "other"]
