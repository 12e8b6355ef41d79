"""Live supervision over REST: start a session (the service rings the supervisor's phone), switch its mode,
end it, list the live ones and the audited history.

Who: supervisors of the agent's team (a supervisor without a team: every team) and admins; agents never.
The supervisor's phone is the one stored with their user (`phone`), or one named in the request, which must be
a configured phone of kind `supervisor` (an agent's phone cannot be made to listen in).
"""

from __future__ import annotations

import json
import uuid
from typing import Literal

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from acd.supervision import SupervisionError, SupervisionService
from web.api_agents import K_AGENTS, allowed
from web.api_config import read_model
from web.auth import guard, principal
from web.errors import error

K_SUPERVISION = web.AppKey("supervision", SupervisionService)
K_SUPERVISION_POOL = web.AppKey("supervision_pool", asyncpg.Pool)

Mode = Literal["listen", "whisper", "barge", "takeover"]


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    agent: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    mode: Mode = "listen"
    phone: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
                              description="the supervisor's phone; default: the one stored with the user")


class ModeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Mode


def _sid(request: web.Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        return None


async def begin(request: web.Request) -> web.StreamResponse:
    body = await read_model(request, SessionIn)
    if isinstance(body, web.Response):
        return body
    assert isinstance(body, SessionIn)
    p = principal(request)
    if body.agent not in request.app[K_AGENTS].teams:
        return error(404, "not_found", f"agent {body.agent!r} does not exist")
    if not allowed(request, body.agent):
        return error(403, "forbidden", f"agent {body.agent!r} is not in your team")
    phone = body.phone or p.phone
    if phone is None:
        return error(422, "invalid_field", "phone: you have no phone stored; name one in the request",
                     problems=[{"field": "phone", "message": "required"}])
    kind = await request.app[K_SUPERVISION_POOL].fetchval("SELECT kind FROM phones WHERE name = $1", phone)
    if kind != "supervisor":
        return error(422, "invalid_field", f"phone: {phone!r} is not a configured supervisor phone",
                     problems=[{"field": "phone", "message": "not a supervisor phone"}])
    try:
        s = await request.app[K_SUPERVISION].begin(p.name, body.agent, body.mode, phone)
    except SupervisionError as exc:
        return error(exc.status, exc.code, str(exc))
    return web.json_response(s.public(), status=201)


def _visible(request: web.Request, agent: str) -> bool:
    return allowed(request, agent)


async def list_live(request: web.Request) -> web.StreamResponse:
    return web.json_response([s.public() for s in request.app[K_SUPERVISION].live() if _visible(request, s.agent)])


async def _session(request: web.Request) -> tuple[SupervisionService, uuid.UUID] | web.Response:
    sid = _sid(request)
    svc = request.app[K_SUPERVISION]
    s = svc.sessions.get(sid) if sid else None
    if s is None or not _visible(request, s.agent):
        return error(404, "not_found", "no such supervision session")
    assert sid is not None
    return svc, sid


async def get_one(request: web.Request) -> web.StreamResponse:
    found = await _session(request)
    if isinstance(found, web.Response):
        return found
    svc, sid = found
    return web.json_response(svc.get(sid).public())


async def switch(request: web.Request) -> web.StreamResponse:
    found = await _session(request)
    if isinstance(found, web.Response):
        return found
    body = await read_model(request, ModeIn)
    if isinstance(body, web.Response):
        return body
    assert isinstance(body, ModeIn)
    svc, sid = found
    try:
        s = await svc.switch(sid, body.mode)
    except SupervisionError as exc:
        return error(exc.status, exc.code, str(exc))
    return web.json_response(s.public())


async def end(request: web.Request) -> web.StreamResponse:
    found = await _session(request)
    if isinstance(found, web.Response):
        return found
    svc, sid = found
    return web.json_response((await svc.end(sid)).public())


async def history(request: web.Request) -> web.StreamResponse:
    """Every session with its modes, newest first (the audit trail: who, whom, mode, from-to)."""
    try:
        limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
    except ValueError:
        return error(422, "invalid_field", "limit: an integer from 1 to 1000")
    rows = await request.app[K_SUPERVISION_POOL].fetch(
        """SELECT s.*, coalesce((SELECT json_agg(json_build_object('mode', m.mode, 'from', m.started_at,
                                                                    'to', m.ended_at) ORDER BY m.started_at)
                                 FROM supervision_modes m WHERE m.session_id = s.id), '[]'::json) AS modes
           FROM supervision_sessions s ORDER BY s.requested_at DESC LIMIT $1""", limit)
    out = []
    for r in rows:
        if not _visible(request, r["agent"]):
            continue
        modes = r["modes"]
        out.append({"id": str(r["id"]), "supervisor": r["supervisor"], "agent": r["agent"], "phone": r["phone"],
                    "linkedid": r["linkedid"], "status": r["status"],
                    "requested_at": r["requested_at"].isoformat(),
                    "started_at": r["started_at"].isoformat() if r["started_at"] else None,
                    "ended_at": r["ended_at"].isoformat() if r["ended_at"] else None,
                    "end_reason": r["end_reason"],
                    "modes": json.loads(modes) if isinstance(modes, str) else modes})
    return web.json_response(out)


def add_supervision_routes(app: web.Application, service: SupervisionService) -> None:
    app[K_SUPERVISION] = service
    app[K_SUPERVISION_POOL] = service.pool
    roles = ("supervisor", "admin")
    app.router.add_post("/api/v1/supervision", guard(begin, *roles))
    app.router.add_get("/api/v1/supervision", guard(list_live, *roles))
    app.router.add_get("/api/v1/supervision/history", guard(history, *roles))
    app.router.add_get("/api/v1/supervision/{id}", guard(get_one, *roles))
    app.router.add_patch("/api/v1/supervision/{id}", guard(switch, *roles))
    app.router.add_delete("/api/v1/supervision/{id}", guard(end, *roles))
