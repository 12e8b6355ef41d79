"""Configuration resources in PostgreSQL: one generic create/read/update/delete, a few special cases.

Why generic: teams, phones, skills, queues, routes, codes and users differ only in table, key and columns, so
one piece of code holds the error rules for all of them: a duplicate is a 409, a reference to something
missing is a 422 naming the field, deleting something in use is a 409 saying what uses it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic import BaseModel

from acd import config_models as m


class ConfigError(Exception):
    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(ConfigError):
    status = 404


class Conflict(ConfigError):
    status = 409


class Invalid(ConfigError):
    status = 422


@dataclass(frozen=True)
class Resource:
    path: str  # URL segment under /api/v1
    table: str
    key: str
    create: type[BaseModel]
    columns: tuple[str, ...]
    update: type[BaseModel] | None = None
    json_columns: frozenset[str] = field(default_factory=frozenset)
    hidden: frozenset[str] = field(default_factory=frozenset)  # stored, never returned


QUEUE_COLUMNS = ("name", "strategy", "required_skill", "escalation", "sl_threshold_s", "ring_timeout_s", "max_wait_s",
                 "max_len", "overflow_queue", "wrapup_s", "announce_position", "announce_holdtime",
                 "callback_enabled", "recording", "recording_retention_days")

RESOURCES: dict[str, Resource] = {r.path: r for r in (
    Resource("teams", "teams", "name", m.TeamIn, ("name",)),
    Resource("phones", "phones", "name", m.PhoneIn, ("name", "kind", "webrtc", "password"),
             hidden=frozenset({"password"})),
    Resource("skills", "skills", "name", m.SkillIn, ("name",)),
    Resource("agents", "agents", "name", m.AgentIn, ("name", "display_name", "phone", "team"), update=m.AgentUpdate),
    Resource("queues", "queues", "name", m.QueueIn, QUEUE_COLUMNS, update=m.QueueFields,
             json_columns=frozenset({"escalation"})),
    Resource("routes", "inbound_routes", "did", m.RouteIn, ("did", "queue", "ivr_flow")),
    Resource("pause-reasons", "pause_reasons", "code", m.CodeIn, ("code", "label")),
    Resource("dispositions", "dispositions", "code", m.CodeIn, ("code", "label")),
    Resource("vip-callers", "vip_callers", "number", m.VipIn, ("number", "priority")),
    Resource("users", "api_users", "name", m.UserIn, ("name", "role", "agent", "team", "phone", "token_sha256"),
             hidden=frozenset({"token_sha256"})),
)}

_FK_DETAIL = re.compile(r'Key \((?P<col>[a-z_]+)\)=\((?P<val>[^)]*)\) is (?P<what>not present|still referenced) '
                        r'(?:in|from) table "(?P<table>[a-z_]+)"')


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    """A phone password or API token: 32 URL-safe characters (~190 bits)."""
    return secrets.token_urlsafe(24)


def _translate(exc: asyncpg.PostgresError, res: Resource, action: str) -> ConfigError:
    detail = getattr(exc, "detail", "") or ""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return Conflict(f"{res.path}: already exists ({detail})", res.key)
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        fk = _FK_DETAIL.search(detail)
        if fk and fk.group("what") == "still referenced":
            return Conflict(f"{res.path} {fk.group('val')!r} is in use by {fk.group('table')} ({action} refused)")
        col = fk.group("col") if fk else None
        val = fk.group("val") if fk else "?"
        return Invalid(f"{col or 'reference'}: {val!r} does not exist", col)
    if isinstance(exc, asyncpg.CheckViolationError):
        return Invalid(f"{res.path}: a value breaks a rule ({exc.constraint_name})")
    raise exc


ChangeHook = Callable[[str], Awaitable[None]]


class ConfigStore:
    """`on_change(resource_path)` runs after every successful write, so the PBX can pick changes up."""

    def __init__(self, pool: asyncpg.Pool, on_change: ChangeHook | None = None) -> None:
        self.pool = pool
        self.on_change = on_change

    async def _changed(self, res: Resource) -> None:
        if self.on_change is not None:
            await self.on_change(res.path)

    # ------------------------------------------------------------------ read
    def _public(self, res: Resource, row: Any) -> dict[str, Any]:
        out = {c: row[c] for c in res.columns if c not in res.hidden}
        for c in res.json_columns:
            if isinstance(out.get(c), str):
                out[c] = json.loads(out[c])
        return out

    async def _agent_skills(self, conn: Any, names: list[str]) -> dict[str, dict[str, int]]:
        rows = await conn.fetch("SELECT agent, skill, level FROM agent_skills WHERE agent = ANY($1::text[])", names)
        out: dict[str, dict[str, int]] = {n: {} for n in names}
        for r in rows:
            out[r["agent"]][r["skill"]] = r["level"]
        return out

    async def list(self, res: Resource) -> list[dict[str, Any]]:
        cols = ", ".join(res.columns)
        rows = await self.pool.fetch(f"SELECT {cols} FROM {res.table} ORDER BY {res.key}")  # names from RESOURCES
        items = [self._public(res, r) for r in rows]
        if res.path == "agents":
            skills = await self._agent_skills(self.pool, [i["name"] for i in items])
            for i in items:
                i["skills"] = skills[i["name"]]
        return items

    async def get(self, res: Resource, key: str) -> dict[str, Any]:
        cols = ", ".join(res.columns)
        row = await self.pool.fetchrow(f"SELECT {cols} FROM {res.table} WHERE {res.key} = $1", key)
        if row is None:
            raise NotFound(f"{res.path}: {key!r} not found")
        item = self._public(res, row)
        if res.path == "agents":
            item["skills"] = (await self._agent_skills(self.pool, [key]))[key]
        return item

    # ------------------------------------------------------------------ write
    def _values(self, res: Resource, body: BaseModel) -> dict[str, Any]:
        data = body.model_dump(mode="json", exclude={"skills"})
        for c in res.json_columns:
            if c in data:
                data[c] = json.dumps(data[c])
        return data

    async def create(self, res: Resource, body: BaseModel) -> dict[str, Any]:
        """Insert; a phone gets a generated password and a user a token, each returned only here."""
        values = self._values(res, body)
        once: dict[str, str] = {}
        if res.path == "phones":
            values["password"] = once["password"] = new_secret()
        if res.path == "users":
            once["token"] = new_secret()
            values["token_sha256"] = token_hash(once["token"])
        cols = list(values)
        sql = (f"INSERT INTO {res.table} ({', '.join(cols)}) VALUES "
               f"({', '.join(f'${i + 1}' for i in range(len(cols)))})")
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(sql, *values.values())
                if isinstance(body, m.AgentIn):
                    await self._set_skills(conn, body.name, body.skills)
        except asyncpg.PostgresError as exc:
            raise _translate(exc, res, "create") from exc
        await self._changed(res)
        return {**await self.get(res, str(values[res.key])), **once}

    async def update(self, res: Resource, key: str, body: BaseModel) -> dict[str, Any]:
        """PATCH-like with the update model (only the fields sent); with the create model (no update model) a
        full replacement whose key must match the path."""
        values = self._values(res, body)
        if res.update is None:
            if str(values.get(res.key)) != key:
                raise Invalid(f"{res.key}: the body says {values.get(res.key)!r}, the path {key!r}", res.key)
        else:
            values = {k: v for k, v in values.items() if k in body.model_fields_set}
        values.pop(res.key, None)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if values:
                    sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(values))
                    found = await conn.execute(f"UPDATE {res.table} SET {sets} WHERE {res.key} = $1", key,
                                               *values.values()) != "UPDATE 0"
                else:
                    found = bool(await conn.fetchval(f"SELECT 1 FROM {res.table} WHERE {res.key} = $1", key))
                if not found:
                    raise NotFound(f"{res.path}: {key!r} not found")
                skills = getattr(body, "skills", None)
                if skills is not None and "skills" in body.model_fields_set:
                    await self._set_skills(conn, key, skills)
        except asyncpg.PostgresError as exc:
            raise _translate(exc, res, "update") from exc
        await self._changed(res)
        return await self.get(res, key)

    async def delete(self, res: Resource, key: str) -> None:
        try:
            status = await self.pool.execute(f"DELETE FROM {res.table} WHERE {res.key} = $1", key)
        except asyncpg.PostgresError as exc:
            raise _translate(exc, res, "delete") from exc
        if status == "DELETE 0":
            raise NotFound(f"{res.path}: {key!r} not found")
        await self._changed(res)

    async def _set_skills(self, conn: Any, agent: str, skills: Mapping[str, int]) -> None:
        await conn.execute("DELETE FROM agent_skills WHERE agent = $1", agent)
        if skills:
            await conn.executemany("INSERT INTO agent_skills (agent, skill, level) VALUES ($1, $2, $3)",
                                   [(agent, s, lvl) for s, lvl in skills.items()])

    async def rotate_phone_password(self, name: str) -> dict[str, Any]:
        password = new_secret()
        status = await self.pool.execute("UPDATE phones SET password = $2 WHERE name = $1", name, password)
        if status == "UPDATE 0":
            raise NotFound(f"phones: {name!r} not found")
        return {"name": name, "password": password}

    async def user_for_token(self, token: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT name, role, agent, team, phone FROM api_users WHERE token_sha256 = $1",
                                       token_hash(token))
        return dict(row) if row else None
