"""IVR flows in PostgreSQL: a draft per flow, immutable published versions, rollback by pointing back.

Why versions are immutable: a call in progress keeps the version it started with, and reports name the
version a step belongs to; publishing or rolling back only changes which version the next call gets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg


class FlowError(Exception):
    status = 400


class FlowNotFound(FlowError):
    status = 404


class FlowConflict(FlowError):
    status = 409


@dataclass(frozen=True)
class FlowVersion:
    flow: str
    version: int
    document: dict[str, Any]


def _doc(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


class FlowStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT f.name, f.published_version, f.draft_updated_at,
                      (SELECT max(version) FROM ivr_flow_versions v WHERE v.flow = f.name) AS latest_version
               FROM ivr_flows f ORDER BY f.name""")
        return [{"name": r["name"], "published_version": r["published_version"],
                 "latest_version": r["latest_version"], "draft_updated_at": r["draft_updated_at"].isoformat()}
                for r in rows]

    async def get(self, name: str) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT * FROM ivr_flows WHERE name = $1", name)
        if row is None:
            raise FlowNotFound(f"flow {name!r} not found")
        versions = await self.pool.fetch(
            "SELECT version, published_at, published_by FROM ivr_flow_versions WHERE flow = $1 ORDER BY version",
            name)
        return {"name": name, "draft": _doc(row["draft"]), "published_version": row["published_version"],
                "versions": [{"version": v["version"], "published_at": v["published_at"].isoformat(),
                              "published_by": v["published_by"]} for v in versions]}

    async def create(self, name: str, document: dict[str, Any]) -> dict[str, Any]:
        try:
            await self.pool.execute("INSERT INTO ivr_flows (name, draft) VALUES ($1, $2)", name,
                                    json.dumps(document))
        except asyncpg.UniqueViolationError as exc:
            raise FlowConflict(f"flow {name!r} already exists") from exc
        return await self.get(name)

    async def save_draft(self, name: str, document: dict[str, Any]) -> dict[str, Any]:
        status = await self.pool.execute(
            "UPDATE ivr_flows SET draft = $2, draft_updated_at = now() WHERE name = $1", name, json.dumps(document))
        if status == "UPDATE 0":
            raise FlowNotFound(f"flow {name!r} not found")
        return await self.get(name)

    async def delete(self, name: str) -> None:
        try:
            status = await self.pool.execute("DELETE FROM ivr_flows WHERE name = $1", name)
        except asyncpg.ForeignKeyViolationError as exc:
            raise FlowConflict(f"flow {name!r} is in use by inbound_routes (delete refused)") from exc
        if status == "DELETE 0":
            raise FlowNotFound(f"flow {name!r} not found")

    async def publish(self, name: str, document: dict[str, Any], by: str) -> int:
        """Store `document` (the validated draft) as the next version and make it the published one."""
        async with self.pool.acquire() as conn, conn.transaction():
            exists = await conn.fetchval("SELECT 1 FROM ivr_flows WHERE name = $1 FOR UPDATE", name)
            if not exists:
                raise FlowNotFound(f"flow {name!r} not found")
            version = await conn.fetchval(
                "SELECT coalesce(max(version), 0) + 1 FROM ivr_flow_versions WHERE flow = $1", name)
            await conn.execute(
                "INSERT INTO ivr_flow_versions (flow, version, document, published_by) VALUES ($1, $2, $3, $4)",
                name, version, json.dumps(document), by)
            await conn.execute("UPDATE ivr_flows SET published_version = $2 WHERE name = $1", name, version)
        return int(version)

    async def rollback(self, name: str, version: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT 1 FROM ivr_flow_versions WHERE flow = $1 AND version = $2",
                                       name, version):
                raise FlowNotFound(f"flow {name!r} has no version {version}")
            await conn.execute("UPDATE ivr_flows SET published_version = $2 WHERE name = $1", name, version)

    async def version(self, name: str, version: int | None = None) -> FlowVersion:
        """A given version, or the published one (what the next call runs)."""
        if version is None:
            row = await self.pool.fetchrow(
                """SELECT v.version, v.document FROM ivr_flows f
                   JOIN ivr_flow_versions v ON v.flow = f.name AND v.version = f.published_version
                   WHERE f.name = $1""", name)
        else:
            row = await self.pool.fetchrow(
                "SELECT version, document FROM ivr_flow_versions WHERE flow = $1 AND version = $2", name, version)
        if row is None:
            raise FlowNotFound(f"flow {name!r}: no {'published version' if version is None else version}")
        return FlowVersion(name, int(row["version"]), _doc(row["document"]))

    async def record_step(self, node: str, step: Any) -> None:
        """One executed IVR step (ivr.executor.Step): the raw material of IVR path and containment reports."""
        await self.pool.execute(
            """INSERT INTO ivr_steps (node, flow, version, uniqueid, linkedid, step, node_id, node_type, input, outcome)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING""",
            node, step.flow, step.version, step.uniqueid, step.linkedid, step.index, step.node_id, step.node_type,
            step.input, step.outcome)
