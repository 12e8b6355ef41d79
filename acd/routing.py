"""Inbound routing: which queue a DID goes to, with the queue's limits and the caller's priority.

Read from PostgreSQL on every call, so a route or queue changed over the API applies to the next call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import asyncpg

VIP_NUMBER = re.compile(r"^\+?[0-9]{2,20}$")


@dataclass(frozen=True)
class RouteTarget:
    queue: str
    priority: int  # app_queue QUEUE_PRIO: higher is served first
    max_wait_s: int | None
    overflow_queue: str | None
    max_penalty: int | None  # skills routing: the penalty accepted at entry (5 - the first step's min_level)


class InboundRouter:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def target_for(self, did: str, caller_number: str) -> RouteTarget | None:
        row = await self.pool.fetchrow(
            """SELECT q.name, q.max_wait_s, q.overflow_queue, q.escalation
               FROM inbound_routes r JOIN queues q ON q.name = r.queue WHERE r.did = $1""", did)
        if row is None:
            return None
        priority = 0
        if VIP_NUMBER.match(caller_number):
            priority = await self.pool.fetchval("SELECT priority FROM vip_callers WHERE number = $1",
                                                caller_number) or 0
        steps = row["escalation"]
        steps = json.loads(steps) if isinstance(steps, str) else steps
        max_penalty = 5 - int(steps[0]["min_level"]) if steps else None
        return RouteTarget(row["name"], int(priority), row["max_wait_s"], row["overflow_queue"], max_penalty)
