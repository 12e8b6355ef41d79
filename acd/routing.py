"""Inbound routing: which queue a DID goes to, with the queue's limits and the caller's priority.

Read from PostgreSQL on every call, so a route or queue changed over the API applies to the next call. The
last answer for every DID and VIP number is kept in memory (and all of them are loaded at start), so calls
keep being routed as before while the database is briefly unreachable.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

log = logging.getLogger("acd.routing")

VIP_NUMBER = re.compile(r"^\+?[0-9]{2,20}$")
DB_DOWN = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

_ROUTES_SQL = """SELECT r.did, q.name, q.max_wait_s, q.overflow_queue, q.escalation
                 FROM inbound_routes r JOIN queues q ON q.name = r.queue"""


@dataclass(frozen=True)
class RouteTarget:
    queue: str
    priority: int  # app_queue QUEUE_PRIO: higher is served first
    max_wait_s: int | None
    overflow_queue: str | None
    max_penalty: int | None  # skills routing: the penalty accepted at entry (5 - the first step's min_level)


def _target(row: Any, priority: int) -> RouteTarget:
    steps = row["escalation"]
    steps = json.loads(steps) if isinstance(steps, str) else steps
    max_penalty = 5 - int(steps[0]["min_level"]) if steps else None
    return RouteTarget(row["name"], priority, row["max_wait_s"], row["overflow_queue"], max_penalty)


class InboundRouter:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._routes: dict[str, RouteTarget | None] = {}
        self._vips: dict[str, int] = {}
        self._flows: dict[str, str | None] = {}
        self.fallbacks = 0

    async def warm(self) -> None:
        """Load every route and VIP number, so the fallback knows them before the first call."""
        for row in await self.pool.fetch(_ROUTES_SQL):
            self._routes[row["did"]] = _target(row, 0)
        for row in await self.pool.fetch("SELECT did, ivr_flow FROM inbound_routes WHERE ivr_flow IS NOT NULL"):
            self._flows[row["did"]] = row["ivr_flow"]
        self._vips = {r["number"]: r["priority"] for r in await self.pool.fetch("SELECT * FROM vip_callers")}

    async def flow_for(self, did: str) -> str | None:
        """The IVR flow the DID is routed to, if any (memory copy while the database is unreachable)."""
        try:
            flow = await self.pool.fetchval("SELECT ivr_flow FROM inbound_routes WHERE did = $1", did)
        except DB_DOWN:
            return self._flows.get(did)
        self._flows[did] = flow
        return str(flow) if flow else None

    async def queue_target(self, queue: str, caller_number: str, priority: int = 0) -> RouteTarget | None:
        """A queue chosen by an IVR flow: the queue's limits, and the higher of the flow's and the VIP priority."""
        vip = caller_number if VIP_NUMBER.match(caller_number) else None
        try:
            row = await self.pool.fetchrow(
                "SELECT name, max_wait_s, overflow_queue, escalation FROM queues WHERE name = $1", queue)
            vip_priority = (await self.pool.fetchval("SELECT priority FROM vip_callers WHERE number = $1", vip)
                            if vip else None) or 0
        except DB_DOWN:
            return RouteTarget(queue, max(priority, self._vips.get(vip or "", 0)), None, None, None)
        if row is None:
            return None
        return _target(row, max(priority, int(vip_priority)))

    async def target_for(self, did: str, caller_number: str) -> RouteTarget | None:
        vip = caller_number if VIP_NUMBER.match(caller_number) else None
        try:
            row = await self.pool.fetchrow(_ROUTES_SQL + " WHERE r.did = $1", did)
            priority = 0
            if vip is not None:
                priority = await self.pool.fetchval("SELECT priority FROM vip_callers WHERE number = $1", vip) or 0
                self._vips[vip] = priority
        except DB_DOWN as exc:
            self.fallbacks += 1
            cached = self._routes.get(did)
            log.warning("routing DID %s from memory (database unreachable: %s)", did, exc)
            if cached is None:
                return None
            return RouteTarget(cached.queue, self._vips.get(vip or "", 0), cached.max_wait_s,
                               cached.overflow_queue, cached.max_penalty)
        if row is None:
            self._routes.pop(did, None)
            return None
        target = _target(row, int(priority))
        self._routes[did] = RouteTarget(target.queue, 0, target.max_wait_s, target.overflow_queue,
                                        target.max_penalty)
        return target
