"""Durable agent states: the append-only transition log, current sessions and call dispositions.

``record`` inserts the transitions (``ON CONFLICT DO NOTHING``: re-recording is a no-op) and, in the same
transaction, re-derives ``agent_sessions`` of the agents concerned from the log's latest row per agent
(by instant, then insertion order), so a re-recorded older batch can never move a session backwards.
After a restart the service reads :meth:`AgentStateStore.sessions` and calls ``AgentBook.restore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from acd.agent_state import AgentStatus, Disposition, State, Transition

__all__ = ["AgentStateStore", "UnknownDisposition"]


class UnknownDisposition(ValueError):
    """The disposition code is not in the ``dispositions`` table."""


def _dt(at: float) -> datetime:
    return datetime.fromtimestamp(at, tz=UTC)


def _ts(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


_INSERT_LOG = """
INSERT INTO agent_state_log (node, agent, from_state, to_state, at, reason, cause, linkedid, queue, uniqueid)
SELECT $1, u.agent, u.from_state, u.to_state, u.at, u.reason, u.cause, u.linkedid, u.queue, u.uniqueid
FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::text[])
     AS u(agent, from_state, to_state, at, reason, cause, linkedid, queue, uniqueid)
ON CONFLICT (node, agent, at, to_state, cause) DO NOTHING
"""

_UPSERT_SESSIONS = """
INSERT INTO agent_sessions (node, agent, state, since, reason, linkedid, queue, uniqueid, logged_in_at)
SELECT l.node, l.agent, l.to_state, l.at, l.reason, l.linkedid, l.queue, l.uniqueid,
       CASE WHEN l.to_state = 'logged_out' THEN NULL ELSE (
           SELECT x.at FROM agent_state_log x
           WHERE x.node = l.node AND x.agent = l.agent AND x.from_state = 'logged_out'
             AND x.to_state <> 'logged_out' AND x.at <= l.at
           ORDER BY x.at DESC, x.id DESC LIMIT 1) END
FROM (SELECT DISTINCT ON (agent) * FROM agent_state_log
      WHERE node = $1 AND agent = ANY($2::text[])
      ORDER BY agent, at DESC, id DESC) AS l
ON CONFLICT (node, agent) DO UPDATE SET
    state = EXCLUDED.state, since = EXCLUDED.since, reason = EXCLUDED.reason, linkedid = EXCLUDED.linkedid,
    queue = EXCLUDED.queue, uniqueid = EXCLUDED.uniqueid, logged_in_at = EXCLUDED.logged_in_at
"""

_COLUMNS = "agent, from_state, to_state, at, reason, cause, linkedid, queue, uniqueid"


def _transition(r: asyncpg.Record) -> Transition:
    return Transition(
        agent=r["agent"], from_state=State(r["from_state"]), to_state=State(r["to_state"]),
        at=r["at"].timestamp(), reason=r["reason"], cause=r["cause"], linkedid=r["linkedid"],
        queue=r["queue"], uniqueid=r["uniqueid"],
    )


class AgentStateStore:
    def __init__(self, pool: asyncpg.Pool, node: str) -> None:
        self.pool = pool
        self.node = node

    async def record(self, transitions: Sequence[Transition]) -> int:
        """Store transitions (in order) and update the agents' sessions, in one transaction.

        Returns how many log rows were new (0 for a re-recorded batch).
        """
        if not transitions:
            return 0
        cols: list[list[object]] = [[] for _ in range(9)]
        for t in transitions:
            for col, value in zip(
                cols,
                (t.agent, str(t.from_state), str(t.to_state), _dt(t.at), t.reason, t.cause, t.linkedid,
                 t.queue, t.uniqueid),
                strict=True,
            ):
                col.append(value)
        agents = sorted({t.agent for t in transitions})
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(_INSERT_LOG, self.node, *cols)
            await conn.execute(_UPSERT_SESSIONS, self.node, agents)
        return int(status.rsplit(" ", 1)[-1])

    async def sessions(self) -> dict[str, AgentStatus]:
        """Every agent's current state on this node (logged-out agents included)."""
        rows = await self.pool.fetch(
            "SELECT agent, state, since, reason, linkedid, queue, uniqueid, logged_in_at "
            "FROM agent_sessions WHERE node = $1 ORDER BY agent",
            self.node,
        )
        return {
            r["agent"]: AgentStatus(
                state=State(r["state"]), since=r["since"].timestamp(), reason=r["reason"],
                linkedid=r["linkedid"], queue=r["queue"], uniqueid=r["uniqueid"],
                logged_in_at=_ts(r["logged_in_at"]),
            )
            for r in rows
        }

    async def history(
        self, agent: str, since: float, until: float, *, include_prior: bool = False
    ) -> list[Transition]:
        """The agent's transitions with ``since <= at < until``, in order.

        ``include_prior``: also the last transition before ``since`` (first in the list), so the state at
        ``since`` is known -- what :func:`acd.agent_figures.agent_figures` needs.
        """
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM agent_state_log WHERE node = $1 AND agent = $2 AND at >= $3 AND at < $4 "
            "ORDER BY at, id",
            self.node, agent, _dt(since), _dt(until),
        )
        out = [_transition(r) for r in rows]
        if include_prior:
            prior = await self.pool.fetchrow(
                f"SELECT {_COLUMNS} FROM agent_state_log WHERE node = $1 AND agent = $2 AND at < $3 "
                "ORDER BY at DESC, id DESC LIMIT 1",
                self.node, agent, _dt(since),
            )
            if prior is not None:
                out.insert(0, _transition(prior))
        return out

    async def record_disposition(self, d: Disposition) -> None:
        """Store (or replace) the agent's wrap-up code for the call. Unknown code -> :class:`UnknownDisposition`."""
        try:
            await self.pool.execute(
                """INSERT INTO call_dispositions (node, linkedid, queue, agent, code, at)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (node, linkedid, agent)
                   DO UPDATE SET code = EXCLUDED.code, queue = EXCLUDED.queue, at = EXCLUDED.at""",
                self.node, d.linkedid, d.queue, d.agent, d.code, _dt(d.at),
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise UnknownDisposition(f"unknown disposition code {d.code!r}") from exc

    async def dispositions(self, linkedid: str) -> list[Disposition]:
        """The wrap-up codes set for a call (one per agent who handled it)."""
        rows = await self.pool.fetch(
            "SELECT agent, linkedid, queue, code, at FROM call_dispositions WHERE node = $1 AND linkedid = $2 "
            "ORDER BY at, agent",
            self.node, linkedid,
        )
        return [Disposition(r["agent"], r["linkedid"], r["queue"], r["code"], r["at"].timestamp()) for r in rows]
