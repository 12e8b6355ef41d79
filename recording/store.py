"""Recording rows in PostgreSQL: metadata, PCI pauses, the audit trail, search with who-may-see-what.

The authorization rule lives in the SQL (a `scope` turned into a WHERE clause), so search, playback and
download cannot disagree about which recordings a user may reach.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Scope:
    """Which recordings a caller of the API may see: everything (admin), an agent's team's (supervisor), an
    agent's own (agent, when allowed), or nothing."""

    everything: bool = False
    team: str | None = None
    agent: str | None = None

    def where(self, args: list[Any]) -> str:
        if self.everything:
            return "TRUE"
        if self.team is not None:
            args.append(self.team)
            return f"r.agent IN (SELECT name FROM agents WHERE team = ${len(args)})"
        if self.agent is not None:
            args.append(self.agent)
            return f"r.agent = ${len(args)}"
        return "FALSE"


@dataclass(frozen=True)
class SearchFilter:
    since: datetime | None = None
    until: datetime | None = None
    queue: str | None = None
    agent: str | None = None
    caller: str | None = None
    disposition: str | None = None
    limit: int = 100
    offset: int = 0


COLUMNS = """r.id, r.linkedid, r.uniqueid, r.queue, r.agent, r.caller, r.trigger, r.started_by, r.file,
             r.started_at, r.ended_at, r.duration_s, r.size_bytes, r.sha256, r.status, r.retention_days,
             (SELECT d.code FROM call_dispositions d WHERE d.linkedid = r.linkedid AND d.agent = r.agent
              ORDER BY d.at DESC LIMIT 1) AS disposition,
             (SELECT coalesce(json_agg(json_build_object('paused_at', p.paused_at, 'paused_by', p.paused_by,
                                                         'resumed_at', p.resumed_at, 'resumed_by', p.resumed_by)
                                       ORDER BY p.paused_at), '[]'::json)
              FROM recording_pauses p WHERE p.recording_id = r.id) AS pauses"""


def public(row: Any) -> dict[str, Any]:
    """A row as the API shows it (the file name stays inside: the audio has its own URL)."""
    out = {k: row[k] for k in ("linkedid", "uniqueid", "queue", "agent", "caller", "trigger", "started_by",
                               "duration_s", "size_bytes", "sha256", "status", "retention_days", "disposition")}
    out["id"] = str(row["id"])
    out["started_at"] = row["started_at"].isoformat()
    out["ended_at"] = row["ended_at"].isoformat() if row["ended_at"] else None
    pauses = row["pauses"]
    out["pauses"] = json.loads(pauses) if isinstance(pauses, str) else pauses
    return out


class RecordingStore:
    def __init__(self, pool: asyncpg.Pool, node: str) -> None:
        self.pool = pool
        self.node = node

    async def policies(self) -> dict[str, tuple[str, int]]:
        """queue -> (recording policy, retention days)."""
        rows = await self.pool.fetch("SELECT name, recording, recording_retention_days FROM queues")
        return {r["name"]: (r["recording"], r["recording_retention_days"]) for r in rows}

    async def insert(self, rec_id: uuid.UUID, *, linkedid: str, uniqueid: str, queue: str | None,
                     agent: str | None, caller: str, trigger: str, started_by: str | None, file: str,
                     started_at: datetime, retention_days: int) -> None:
        await self.pool.execute(
            """INSERT INTO recordings (id, node, linkedid, uniqueid, queue, agent, caller, trigger, started_by, file,
                                       started_at, retention_days)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (file) DO NOTHING""",
            rec_id, self.node, linkedid, uniqueid, queue, agent, caller, trigger, started_by, file, started_at,
            retention_days)

    async def describe(self, rec_id: uuid.UUID, *, queue: str | None, agent: str | None, caller: str,
                       retention_days: int) -> None:
        """What the AgentConnect after app_queue's MixMonitorStart tells: queue, agent, caller."""
        await self.pool.execute(
            "UPDATE recordings SET queue = $2, agent = $3, caller = $4, retention_days = $5 WHERE id = $1",
            rec_id, queue, agent, caller, retention_days)

    async def finish(self, rec_id: uuid.UUID, *, ended_at: datetime, status: str, size_bytes: int | None,
                     duration_s: float | None, sha256: str | None) -> None:
        await self.pool.execute(
            """UPDATE recordings SET ended_at = $2, status = $3, size_bytes = $4, duration_s = $5, sha256 = $6
               WHERE id = $1""", rec_id, ended_at, status, size_bytes, duration_s, sha256)

    async def pause(self, rec_id: uuid.UUID, at: datetime, by: str) -> None:
        await self.pool.execute(
            "INSERT INTO recording_pauses (recording_id, paused_at, paused_by) VALUES ($1, $2, $3)", rec_id, at, by)

    async def resume(self, rec_id: uuid.UUID, at: datetime, by: str) -> None:
        await self.pool.execute(
            """UPDATE recording_pauses SET resumed_at = $2, resumed_by = $3
               WHERE recording_id = $1 AND resumed_at IS NULL""", rec_id, at, by)

    async def audit(self, actor: str, action: str, rec_id: uuid.UUID | None = None, linkedid: str | None = None,
                    **detail: Any) -> None:
        await self.pool.execute(
            "INSERT INTO recording_audit (actor, action, recording_id, linkedid, detail) VALUES ($1, $2, $3, $4, $5)",
            actor, action, rec_id, linkedid, json.dumps(detail, default=str))

    async def get(self, rec_id: uuid.UUID, scope: Scope) -> Any | None:
        args: list[Any] = [rec_id]
        where = scope.where(args)
        return await self.pool.fetchrow(f"SELECT {COLUMNS} FROM recordings r WHERE r.id = $1 AND {where}", *args)

    async def search(self, f: SearchFilter, scope: Scope) -> list[Any]:
        args: list[Any] = []
        clauses = [scope.where(args)]
        for column, value, op in (("r.started_at", f.since, ">="), ("r.started_at", f.until, "<"),
                                  ("r.queue", f.queue, "="), ("r.agent", f.agent, "="), ("r.caller", f.caller, "=")):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} {op} ${len(args)}")
        if f.disposition is not None:
            args.append(f.disposition)
            clauses.append(f"""EXISTS (SELECT 1 FROM call_dispositions d WHERE d.linkedid = r.linkedid
                                       AND d.agent = r.agent AND d.code = ${len(args)})""")
        args.extend((f.limit, f.offset))
        sql = (f"SELECT {COLUMNS} FROM recordings r WHERE {' AND '.join(clauses)} "
               f"ORDER BY r.started_at DESC, r.id LIMIT ${len(args) - 1} OFFSET ${len(args)}")
        return await self.pool.fetch(sql, *args)

    async def expired(self, limit: int = 500) -> list[Any]:
        """Finished recordings past their queue's retention (the queue's current setting; the one stored with
        the recording if the queue is gone)."""
        return await self.pool.fetch(
            """SELECT r.id, r.file, r.linkedid, r.started_at FROM recordings r LEFT JOIN queues q ON q.name = r.queue
               WHERE r.status <> 'recording'
                 AND r.started_at < now() - make_interval(days => coalesce(q.recording_retention_days,
                                                                            r.retention_days))
               ORDER BY r.started_at LIMIT $1""", limit)

    async def of_caller(self, caller: str) -> list[Any]:
        return await self.pool.fetch(
            "SELECT id, file, linkedid, status FROM recordings WHERE caller = $1 ORDER BY started_at", caller)

    async def delete(self, rec_id: uuid.UUID) -> bool:
        return (await self.pool.execute("DELETE FROM recordings WHERE id = $1", rec_id)) == "DELETE 1"

    async def audit_log(self, limit: int = 200, since: datetime | None = None) -> list[Any]:
        return await self.pool.fetch(
            """SELECT id, at, actor, action, recording_id, linkedid, detail FROM recording_audit
               WHERE $2::timestamptz IS NULL OR at >= $2 ORDER BY id DESC LIMIT $1""", limit, since)
