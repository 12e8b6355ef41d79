"""Calls Asterisk lost (it died under them: no queue_log or CEL line records their end) are closed at the gap's
start after a reconnect, so their facts end instead of staying open for ever; calls still up, or whose end is
recorded, are left alone. Real PostgreSQL, real projection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from reporting.migrate import migrate
from reporting.projection import project_call
from reporting.reconcile import close_lost_calls

pytestmark = pytest.mark.asyncio
NODE = "n1"
T0 = 1_795_459_100.0
CUT = T0 + 40.0  # the AMI connection dropped (Asterisk killed) here


@pytest_asyncio.fixture
async def pool(pg_db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(pg_db, min_size=1, max_size=2)
    await migrate(p)
    yield p
    await p.close()


async def _event(pool: asyncpg.Pool, name: str, at: float, uid: str, **fields: str) -> None:
    f = {"Event": name, "Timestamp": f"{at:.6f}", "Uniqueid": uid, "Linkedid": uid, "Queue": "sales", **fields}
    ts = datetime.fromtimestamp(at, UTC)
    await pool.execute(
        """INSERT INTO call_events (node, event_key, name, ts, received_at, uniqueid, linkedid, queue, fields)
           VALUES ($1, $2, $3, $4, $4, $5, $5, 'sales', $6::jsonb)""",
        NODE, f"{uid}-{name}-{at}", name, ts, uid, json.dumps(f))


async def _fact(pool: asyncpg.Pool, uid: str) -> dict[str, Any]:
    await project_call(pool, NODE, uid, now=CUT + 3600)
    row = await pool.fetchrow("SELECT * FROM queue_calls WHERE uniqueid = $1", uid)
    assert row is not None
    return dict(row)


async def test_waiting_and_talking_calls_asterisk_lost_are_ended_at_the_gap_start(pool: asyncpg.Pool) -> None:
    # waiting since T0 + 10; answered at T0 + 5 (joined T0); waiting but still up; abandoned (recorded); a short wait
    await _event(pool, "QueueCallerJoin", T0 + 10, "wait", CallerIDNum="+4930100")
    await _event(pool, "QueueCallerJoin", T0, "talk", CallerIDNum="+4930200")
    await _event(pool, "AgentConnect", T0 + 5, "talk", MemberName="max", DestUniqueid="agentleg")
    await _event(pool, "QueueCallerJoin", T0 + 12, "alive", CallerIDNum="+4930300")
    await _event(pool, "QueueCallerJoin", T0 + 1, "gone", CallerIDNum="+4930400")
    await _event(pool, "QueueCallerAbandon", T0 + 20, "gone")
    await _event(pool, "QueueCallerJoin", CUT - 2, "short", CallerIDNum="+4930500")
    for uid in ("wait", "talk", "alive", "gone", "short"):
        before = await _fact(pool, uid)
    assert before["outcome"] is None and not before["final"]

    touched = await close_lost_calls(pool, NODE, frozenset({"alive"}), CUT)
    assert touched == ["short", "talk", "wait"]
    wait, talk, alive, gone, short = [await _fact(pool, u) for u in ("wait", "talk", "alive", "gone", "short")]
    assert (wait["outcome"], wait["wait_s"], wait["final"]) == ("abandoned", 30.0, True)
    assert (short["outcome"], short["wait_s"]) == ("short_abandoned", 2.0)
    assert (talk["outcome"], talk["wait_s"], talk["talk_s"], talk["final"]) == ("answered", 5.0, 35.0, True)
    assert (alive["outcome"], alive["final"]) == (None, False)  # still up in Asterisk: not touched
    assert (gone["outcome"], gone["wait_s"]) == ("abandoned", 19.0)  # its recorded end stands
    # A second reconnect adds nothing (same keys), and the facts stay as they are.
    assert await close_lost_calls(pool, NODE, frozenset({"alive"}), CUT) == []
    n = await pool.fetchval("SELECT count(*) FROM call_events WHERE fields->>'Source' = 'pbx_lost'")
    assert n == 3


async def test_a_lost_call_is_ended_at_its_last_event_when_that_is_after_the_gap_start(pool: asyncpg.Pool) -> None:
    await _event(pool, "QueueCallerJoin", CUT + 1, "late", CallerIDNum="+4930600")
    await _fact(pool, "late")
    # It entered after the cut: not a call the cut can have lost.
    assert await close_lost_calls(pool, NODE, frozenset(), CUT) == []
    await _event(pool, "QueueCallerJoin", CUT - 10, "held", CallerIDNum="+4930700")
    await _event(pool, "AgentConnect", CUT - 8, "held", MemberName="eva", DestUniqueid="leg2")
    await _event(pool, "Hold", CUT + 3, "held")  # an event after the gap opened (received during the reconnect)
    await _fact(pool, "held")
    assert await close_lost_calls(pool, NODE, frozenset(), CUT) == ["held"]
    held = await _fact(pool, "held")
    assert held["talk_s"] is not None and held["hold_s"] == 0.0 and abs(held["talk_s"] - 11.0) < 0.01, held
