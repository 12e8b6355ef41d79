"""Agent state store against a real PostgreSQL: log + sessions round trip, idempotency, dispositions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from acd.agent_figures import agent_figures
from acd.agent_state import AgentBook, Disposition, State, Transition
from acd.state_store import AgentStateStore, UnknownDisposition
from reporting.migrate import migrate
from telephony.ami.events import parse_event

S = State
T0 = 1_732_370_000.123456  # µs precision


@pytest_asyncio.fixture
async def pool(pg_db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(pg_db, min_size=1, max_size=4)
    try:
        await migrate(p)
        yield p
    finally:
        await p.close()


def same(a: list[Transition], b: list[Transition]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.at == pytest.approx(y.at, abs=1e-6)
        assert (x.agent, x.from_state, x.to_state, x.reason, x.cause, x.linkedid, x.queue, x.uniqueid) == (
            y.agent, y.from_state, y.to_state, y.reason, y.cause, y.linkedid, y.queue, y.uniqueid)


def a_call(b: AgentBook, at: float) -> list[Transition]:
    hdr = {"Channel": "PJSIP/trunk-1", "Uniqueid": "1.1", "Linkedid": "L1", "Queue": "support",
           "MemberName": "agent1", "Interface": "PJSIP/agent1", "DestChannel": "PJSIP/agent1-2",
           "DestUniqueid": "1.2"}
    out: list[Transition] = []
    for name, dt in (("AgentCalled", 0.0), ("AgentConnect", 2.000001), ("AgentComplete", 30.5)):
        out += b.on_event(parse_event({**hdr, "Event": name, "Timestamp": f"{at + dt:.6f}"}, at + dt))
    return out


@pytest.mark.asyncio
async def test_record_sessions_history_round_trip(pool: asyncpg.Pool) -> None:
    store = AgentStateStore(pool, "pbx1")
    b = AgentBook({"support": 10})
    b.register("alice", "PJSIP/agent1")
    log = b.login("alice", T0) + b.login("bob", T0 + 1) + b.pause("bob", "lunch", T0 + 2)
    log += a_call(b, T0 + 10)
    assert await store.record(log) == len(log) == 6
    sessions = await store.sessions()
    assert set(sessions) == {"alice", "bob"}
    alice = sessions["alice"]
    assert (alice.state, alice.linkedid, alice.queue, alice.uniqueid) == (S.ACW, "L1", "support", "1.1")
    assert alice.since == pytest.approx(T0 + 40.5, abs=1e-6)
    assert alice.logged_in_at == pytest.approx(T0, abs=1e-6)
    bob = sessions["bob"]
    assert (bob.state, bob.reason, bob.linkedid) == (S.PAUSED, "lunch", None)
    assert bob.logged_in_at == pytest.approx(T0 + 1, abs=1e-6)
    same(await store.history("alice", T0, T0 + 100), [t for t in log if t.agent == "alice"])
    same(await store.history("alice", T0 + 10, T0 + 40.5), [t for t in log if t.agent == "alice"][1:3])
    # the last transition before the interval comes first with include_prior
    hist = await store.history("alice", T0 + 20, T0 + 100, include_prior=True)
    assert [t.to_state for t in hist] == [S.ON_CALL, S.ACW]
    assert agent_figures(hist, T0 + 20, T0 + 40.5).talk_s == 20.5
    assert await store.history("nobody", T0, T0 + 100, include_prior=True) == []
    # µs survive the round trip
    row = await pool.fetchval("SELECT at FROM agent_state_log WHERE cause = 'AgentConnect'")
    assert row.microsecond == 123457  # T0 + 12.000001 -> .123457


@pytest.mark.asyncio
async def test_record_is_idempotent_and_never_moves_a_session_back(pool: asyncpg.Pool) -> None:
    store = AgentStateStore(pool, "pbx1")
    b = AgentBook({"support": 0})
    b.register("alice", "PJSIP/agent1")
    first = b.login("alice", T0) + b.on_event(parse_event(
        {"Event": "AgentCalled", "Timestamp": f"{T0 + 5:.6f}", "Uniqueid": "1.1", "Queue": "support",
         "Interface": "PJSIP/agent1"}, T0 + 5))
    rna = b.on_event(parse_event(
        {"Event": "AgentRingNoAnswer", "Timestamp": f"{T0 + 20:.6f}", "Uniqueid": "1.1", "Queue": "support",
         "Interface": "PJSIP/agent1", "RingTime": "15000"}, T0 + 20))
    assert [t.to_state for t in rna] == [S.AVAILABLE, S.PAUSED]  # two transitions at one instant
    assert await store.record(first) == 2
    assert await store.record(rna[:1]) == 1
    assert await store.record(rna[1:]) == 1
    assert await store.record(first + rna) == 0  # a full replay
    assert await store.record(rna[:1]) == 0  # an older batch again: the session stays paused
    assert await store.record([]) == 0
    assert await pool.fetchval("SELECT count(*) FROM agent_state_log") == 4
    s = (await store.sessions())["alice"]
    assert (s.state, s.reason) == (S.PAUSED, "missed")
    assert s.since == pytest.approx(T0 + 20, abs=1e-6)


@pytest.mark.asyncio
async def test_logout_clears_logged_in_at_and_nodes_are_separate(pool: asyncpg.Pool) -> None:
    store, other = AgentStateStore(pool, "pbx1"), AgentStateStore(pool, "pbx2")
    b = AgentBook()
    await store.record(b.login("bob", T0))
    await store.record(b.logout("bob", T0 + 60))
    s = (await store.sessions())["bob"]
    assert (s.state, s.logged_in_at) == (S.LOGGED_OUT, None)
    await store.record(b.login("bob", T0 + 100))
    s = (await store.sessions())["bob"]
    assert s.state == S.AVAILABLE and s.logged_in_at == pytest.approx(T0 + 100, abs=1e-6)
    assert await other.sessions() == {}
    assert await other.history("bob", T0, T0 + 200) == []


@pytest.mark.asyncio
async def test_restart_restores_the_book_from_sessions(pool: asyncpg.Pool) -> None:
    store = AgentStateStore(pool, "pbx1")
    b1 = AgentBook({"support": 10})
    b1.register("alice", "PJSIP/agent1")
    log = b1.login("alice", T0) + b1.login("bob", T0) + b1.pause("bob", "break", T0 + 5)
    log += a_call(b1, T0 + 10)
    await store.record(log)
    b2 = AgentBook({"support": 10})  # the service restarted
    b2.register("alice", "PJSIP/agent1")
    for agent, status in (await store.sessions()).items():
        b2.restore(agent, status)
    bob = b2.state("bob")
    assert (bob.state, bob.reason, bob.linkedid) == (S.PAUSED, "break", None)
    assert bob.since == pytest.approx(T0 + 5, abs=1e-6) and bob.logged_in_at == pytest.approx(T0, abs=1e-6)
    d = b2.set_disposition("alice", "resolved", T0 + 45)
    assert (d.linkedid, d.queue) == ("L1", "support")
    timeout = b2.tick(T0 + 100)
    assert [(t.agent, t.to_state, t.cause) for t in timeout] == [("alice", S.AVAILABLE, "acw_timeout")]
    assert timeout[0].at == pytest.approx(T0 + 50.5, abs=1e-6)
    await store.record(timeout)
    assert (await store.sessions())["alice"].state == S.AVAILABLE


@pytest.mark.asyncio
async def test_dispositions_refuse_unknown_codes_and_replace(pool: asyncpg.Pool) -> None:
    store = AgentStateStore(pool, "pbx1")
    with pytest.raises(UnknownDisposition):
        await store.record_disposition(Disposition("alice", "L1", "support", "no-such-code", T0))
    assert await store.dispositions("L1") == []
    await store.record_disposition(Disposition("alice", "L1", "support", "resolved", T0))
    await store.record_disposition(Disposition("alice", "L1", "support", "follow-up", T0 + 3))  # corrected
    await store.record_disposition(Disposition("bob", "L1", None, "escalated", T0 + 9))
    got = await store.dispositions("L1")
    assert [(d.agent, d.code, d.queue) for d in got] == [("alice", "follow-up", "support"), ("bob", "escalated", None)]
    assert got[0].at == pytest.approx(T0 + 3, abs=1e-6)
    # a code in use cannot be deleted from the configuration
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute("DELETE FROM dispositions WHERE code = 'escalated'")


@pytest.mark.asyncio
async def test_schema_checks_states(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO agent_state_log (node, agent, from_state, to_state, at, cause) "
            "VALUES ('n', 'a', 'available', 'napping', now(), 'x')")
    with pytest.raises(asyncpg.CheckViolationError):  # a pause always has a reason
        await pool.execute(
            "INSERT INTO agent_state_log (node, agent, from_state, to_state, at, cause) "
            "VALUES ('n', 'a', 'available', 'paused', now(), 'x')")
