"""Keeps `queue_calls` equal to what the projector makes of the stored events, live and on demand.

Live: a call's linkedid is marked dirty when one of its channels hangs up (or its disposition or survey
arrives); a worker projects dirty calls a few times a second, after the event writer committed what was
received before (so the projector reads every event of the call). Calls whose facts are not final yet (the
agent is still in after-call work) are projected again until they are. `rebuild(since, until)` re-projects every
call that entered a queue in a range: the same function, the same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from reporting.projector import ACW_CAP_S, CallExtras, Ev, QueueCall, project

log = logging.getLogger("reporting.projection")

DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
CATCH_UP_S = 5.0
TICK_S = 0.2
OPEN_RETRY_S = 1.0

Conn = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy

_EVENT_COLUMNS = "name, ts, uniqueid, linkedid, queue, fields"


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def load_events(conn: Conn, linkedid: str) -> list[Ev]:
    """A call's events, plus the AgentComplete events stored without a linkedid (Asterisk sends some without
    channel fields under load) of its queues during the call."""
    rows = await conn.fetch(f"SELECT {_EVENT_COLUMNS} FROM call_events WHERE linkedid = $1", linkedid)
    evs = [Ev.from_row(r) for r in rows]
    queues = sorted({e.queue for e in evs if e.name == "AgentConnect" and e.queue})
    if queues:
        first = min(e.ts for e in evs)
        last = max(e.ts for e in evs)
        orphans = await conn.fetch(
            f"""SELECT {_EVENT_COLUMNS} FROM call_events WHERE name = 'AgentComplete' AND linkedid IS NULL
                AND queue = ANY($1::text[]) AND ts BETWEEN $2 AND $3""", queues, _dt(first), _dt(last + 5))
        evs.extend(Ev.from_row(r) for r in orphans)
    return evs


async def load_extras(conn: Conn, linkedid: str, agents: Iterable[str],
                      now: float) -> CallExtras:
    """After-call work from the agents' state log, the disposition, the survey score."""
    acw: dict[tuple[str, str], float | None] = {}
    for agent in sorted(set(agents)):
        end = await conn.fetchrow(
            """SELECT at, to_state FROM agent_state_log WHERE agent = $1 AND linkedid = $2
               AND from_state IN ('on_call', 'on_hold') AND to_state NOT IN ('on_call', 'on_hold')
               ORDER BY at DESC, id DESC LIMIT 1""", agent, linkedid)
        if end is None:
            continue  # the state log does not tell yet
        if end["to_state"] != "acw":
            acw[(agent, linkedid)] = 0.0
            continue
        nxt = await conn.fetchval(
            "SELECT at FROM agent_state_log WHERE agent = $1 AND at >= $2 AND to_state <> 'acw' ORDER BY at, id "
            "LIMIT 1", agent, end["at"])
        started = end["at"].timestamp()
        if nxt is not None:
            acw[(agent, linkedid)] = nxt.timestamp() - started
        elif now - started >= ACW_CAP_S:
            acw[(agent, linkedid)] = ACW_CAP_S
    dispositions = {(r["agent"], linkedid): r["code"] for r in await conn.fetch(
        "SELECT agent, code FROM call_dispositions WHERE linkedid = $1", linkedid)}
    score = await conn.fetchval("SELECT score FROM call_surveys WHERE linkedid = $1 ORDER BY at DESC LIMIT 1",
                                linkedid)
    return CallExtras(acw, dispositions, {linkedid: score} if score is not None else {})


async def store_facts(conn: asyncpg.Connection | PoolConnectionProxy, node: str, linkedid: str,
                      calls: list[QueueCall]) -> None:
    async with conn.transaction():
        await conn.execute("DELETE FROM queue_calls WHERE node = $1 AND linkedid = $2", node, linkedid)
        await conn.executemany(
            """INSERT INTO queue_calls (node, linkedid, uniqueid, queue, caller_number, entered_at, outcome, wait_s,
                   agent, ring_s, talk_s, hold_s, acw_s, transferred, disposition, csat, ended_at, final)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
               ON CONFLICT (node, uniqueid, queue, entered_at) DO UPDATE SET linkedid = EXCLUDED.linkedid,
                   outcome = EXCLUDED.outcome, wait_s = EXCLUDED.wait_s, agent = EXCLUDED.agent,
                   ring_s = EXCLUDED.ring_s, talk_s = EXCLUDED.talk_s, hold_s = EXCLUDED.hold_s,
                   acw_s = EXCLUDED.acw_s, transferred = EXCLUDED.transferred, disposition = EXCLUDED.disposition,
                   csat = EXCLUDED.csat, ended_at = EXCLUDED.ended_at, final = EXCLUDED.final,
                   projected_at = now()""",
            [(node, c.linkedid, c.uniqueid, c.queue, c.caller_number, _dt(c.entered_at), c.outcome, c.wait_s,
              c.agent, c.ring_s, c.talk_s, c.hold_s, c.acw_s, c.transferred, c.disposition, c.csat,
              _dt(c.ended_at) if c.ended_at is not None else None, c.final) for c in calls])


async def project_call(pool: asyncpg.Pool, node: str, linkedid: str, now: float | None = None) -> list[QueueCall]:
    """Project one call from what is stored and replace its facts."""
    async with pool.acquire() as conn:
        evs = await load_events(conn, linkedid)
        agents = {e.get("MemberName") or "" for e in evs if e.name == "AgentConnect"} - {""}
        extras = await load_extras(conn, linkedid, agents, time.time() if now is None else now)
        calls = [c for c in project(evs, extras) if c.linkedid == linkedid]
        await store_facts(conn, node, linkedid, calls)
    return calls


async def rebuild(pool: asyncpg.Pool, node: str, since: float, until: float) -> int:
    """Re-project every call that entered a queue in [since, until) from its stored events; returns the calls."""
    rows = await pool.fetch(
        """SELECT DISTINCT linkedid FROM call_events WHERE name = 'QueueCallerJoin' AND ts >= $1 AND ts < $2
           AND linkedid IS NOT NULL""", _dt(since), _dt(until))
    for r in rows:
        await project_call(pool, node, r["linkedid"])
    return len(rows)


class ProjectionService:
    def __init__(self, pool: asyncpg.Pool, node: str, *, flush: Callable[[], Awaitable[None]] | None = None,
                 on_projected: Callable[[str, list[QueueCall]], None] | None = None) -> None:
        self.pool = pool
        self.node = node
        self.flush = flush
        self.on_projected = on_projected
        self.dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_open_sweep = 0.0
        self._last_catch_up = 0.0
        self.stats = {"projected": 0, "failures": 0}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="projection")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def mark(self, linkedid: str | None) -> None:
        if linkedid:
            self.dirty.add(linkedid)
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), OPEN_RETRY_S)
            self._wake.clear()
            await asyncio.sleep(TICK_S)  # gather the other hang-ups of the same call into one projection
            try:
                await self._once()
            except Exception:  # never let the worker die: the next round retries
                self.stats["failures"] += 1
                log.exception("projection round failed")

    async def _once(self) -> None:
        now = time.time()
        if now - self._last_open_sweep >= OPEN_RETRY_S:
            self._last_open_sweep = now
            with contextlib.suppress(*DB_ERRORS):
                for r in await self.pool.fetch(
                        "SELECT DISTINCT linkedid FROM queue_calls WHERE node = $1 AND NOT final "
                        "AND projected_at < now() - interval '0.5 second' LIMIT 500", self.node):
                    self.dirty.add(r["linkedid"])
        if now - self._last_catch_up >= CATCH_UP_S:
            # Calls with stored events but no facts (their marks were lost: a restart, a database outage).
            self._last_catch_up = now
            with contextlib.suppress(*DB_ERRORS):
                for r in await self.pool.fetch(
                        """SELECT DISTINCT e.linkedid FROM call_events e
                           WHERE e.name = 'QueueCallerJoin' AND e.node = $1 AND e.linkedid IS NOT NULL
                             AND e.ts > now() - interval '1 day' AND e.ts < now() - interval '2 seconds'
                             AND NOT EXISTS (SELECT 1 FROM queue_calls q WHERE q.linkedid = e.linkedid)
                           LIMIT 500""", self.node):
                    self.dirty.add(r["linkedid"])
        if not self.dirty:
            return
        if self.flush is not None:
            try:
                await self.flush()
            except Exception as exc:  # TimeoutError, the writer stopped...: keep the calls marked, retry
                log.warning("events not committed yet, projection waits: %s", exc)
                return
        batch, self.dirty = self.dirty, set()
        for linkedid in sorted(batch):
            try:
                calls = await project_call(self.pool, self.node, linkedid)
                self.stats["projected"] += 1
                if self.on_projected is not None:
                    self.on_projected(linkedid, calls)
            except DB_ERRORS as exc:
                self.stats["failures"] += 1
                self.dirty.add(linkedid)
                log.warning("projection of %s failed (retried): %s", linkedid, exc)
            except Exception:
                self.stats["failures"] += 1
                log.exception("projection of %s failed", linkedid)


def fact_json(row: Any) -> dict[str, Any]:
    """A queue_calls row as the API shows it."""
    out = {k: row[k] for k in ("linkedid", "uniqueid", "queue", "caller_number", "outcome", "wait_s", "agent",
                               "ring_s", "talk_s", "hold_s", "acw_s", "transferred", "disposition", "csat",
                               "final")}
    out["entered_at"] = row["entered_at"].isoformat()
    out["ended_at"] = row["ended_at"].isoformat() if row["ended_at"] else None
    return out
