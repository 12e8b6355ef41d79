"""Recordings over REST: live control of an agent's call (start/stop on demand, PCI pause/resume), search,
metadata, playback/download with HTTP Range, retention purge, erasure by caller number, the audit trail.

Who sees what: an admin every recording, a supervisor those of their team's agents (a supervisor without a
team: all), an agent their own only if `recording.agents_play_own` is on. The rule is one SQL clause
(recording.store.Scope), used by search, metadata and audio alike. Every playback/download is audited.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acd.agent_service import AgentService
from recording import files
from recording.service import CallRef, RecordingError, RecordingService, caller_number
from recording.store import Scope, SearchFilter, public
from web.api_agents import K_AGENTS, allowed
from web.api_config import read_model, validation_response
from web.auth import guard, principal
from web.errors import error

K_RECORDINGS = web.AppKey("recordings", RecordingService)
K_AGENTS_PLAY_OWN: web.AppKey[bool] = web.AppKey("agents_play_own")
CallerLookup = Callable[[str], "str | None"]
K_CALLER_OF: web.AppKey[CallerLookup] = web.AppKey("caller_of")

Name = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: datetime | None = Field(default=None, alias="from")
    until: datetime | None = Field(default=None, alias="to")
    queue: str | None = Name
    agent: str | None = Name
    caller: str | None = Field(default=None, pattern=r"^\+?[0-9]{1,20}$")
    disposition: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    caller: str = Field(pattern=r"^\+?[0-9]{1,20}$", description="the caller's number, as stored with recordings")


class ControlIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    action: Literal["start", "stop", "pause", "resume"]


def scope_for(request: web.Request) -> Scope:
    p = principal(request)
    if p.role == "admin" or (p.role == "supervisor" and p.team is None):
        return Scope(everything=True)
    if p.role == "supervisor":
        return Scope(team=p.team)
    if p.role == "agent" and request.app[K_AGENTS_PLAY_OWN] and p.agent:
        return Scope(agent=p.agent)
    return Scope()


def _rec_id(request: web.Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        return None


async def search(request: web.Request) -> web.StreamResponse:
    try:
        q = SearchIn.model_validate(dict(request.query))
    except ValidationError as exc:
        return validation_response(exc)
    f = SearchFilter(q.since, q.until, q.queue, q.agent, q.caller, q.disposition, q.limit, q.offset)
    rows = await request.app[K_RECORDINGS].store.search(f, scope_for(request))
    return web.json_response([public(r) for r in rows])


async def get_one(request: web.Request) -> web.StreamResponse:
    rec_id = _rec_id(request)
    row = None if rec_id is None else await request.app[K_RECORDINGS].store.get(rec_id, scope_for(request))
    if row is None:
        return error(404, "not_found", "no such recording (or not one you may see)")
    return web.json_response(public(row))


async def audio(request: web.Request) -> web.StreamResponse:
    """The WAV file; `Range: bytes=...` gives 206 Partial Content (browsers seek with it)."""
    svc = request.app[K_RECORDINGS]
    rec_id = _rec_id(request)
    row = None if rec_id is None else await svc.store.get(rec_id, scope_for(request))
    if row is None:
        return error(404, "not_found", "no such recording (or not one you may see)")
    if row["status"] == "recording":
        return error(409, "still_recording", "the call is still being recorded; it can be played once it ended")
    try:
        path = svc.folder / files.safe_name(row["file"])
    except files.UnsafeName:
        return error(500, "internal_error", "the stored file name is not valid")
    if not path.is_file():
        return error(410, "gone", "the recording's file is no longer there")
    download = request.query.get("download") in ("1", "true")
    await svc.store.audit(principal(request).name, "play", row["id"], row["linkedid"],
                          download=download, range=request.headers.get("Range"))
    disposition = "attachment" if download else "inline"
    return web.FileResponse(path, headers={
        "Content-Type": "audio/wav", "Cache-Control": "private, no-store",
        "Content-Disposition": f'{disposition}; filename="recording-{row["id"]}.wav"'})


async def purge(request: web.Request) -> web.StreamResponse:
    n = await request.app[K_RECORDINGS].purge(actor=principal(request).name)
    return web.json_response({"purged": n})


async def erasure(request: web.Request) -> web.StreamResponse:
    body = await read_model(request, ErasureIn)
    if isinstance(body, web.Response):
        return body
    assert isinstance(body, ErasureIn)
    result = await request.app[K_RECORDINGS].erase(body.caller, principal(request).name)
    return web.json_response(result)


async def audit_log(request: web.Request) -> web.StreamResponse:
    try:
        limit = min(max(int(request.query.get("limit", "200")), 1), 1000)
    except ValueError:
        return error(422, "invalid_field", "limit: an integer from 1 to 1000")
    rows = await request.app[K_RECORDINGS].store.audit_log(limit)
    return web.json_response([
        {"id": r["id"], "at": r["at"].isoformat(), "actor": r["actor"], "action": r["action"],
         "recording_id": str(r["recording_id"]) if r["recording_id"] else None, "linkedid": r["linkedid"],
         "detail": r["detail"] if isinstance(r["detail"], dict) else json.loads(r["detail"])}
        for r in rows])


def _call_ref(agents: AgentService, recordings: RecordingService, agent: str) -> CallRef | None:
    """The agent's call in progress: from the ACD, else from a recording followed again after a restart."""
    call = agents.book.call_channels(agent)
    if call is not None:
        return CallRef(call.linkedid, call.caller_uniqueid, call.caller_channel, call.queue, agent)
    rec = recordings.for_agent(agent)
    return None if rec is None else CallRef(rec.linkedid, rec.uniqueid, rec.channel, rec.queue, agent)


async def agent_recording(request: web.Request) -> web.StreamResponse:
    """GET: the recording of the agent's call in progress; POST {action}: start, stop, pause, resume."""
    agent = request.match_info["agent"]
    if not allowed(request, agent):
        return error(403, "forbidden", f"you may not act on agent {agent!r}")
    agents, svc = request.app[K_AGENTS], request.app[K_RECORDINGS]
    call = _call_ref(agents, svc, agent)
    if request.method == "GET":
        rec = svc.for_channel(call.uniqueid) if call else None
        return web.json_response({"agent": agent, "on_call": call is not None,
                                  "recording": rec.summary() if rec else None})
    body = await read_model(request, ControlIn)
    if isinstance(body, web.Response):
        return body
    assert isinstance(body, ControlIn)
    if call is None:
        return error(409, "not_on_call", f"agent {agent!r} is not on a call")
    who = principal(request)
    try:
        if body.action == "start":
            caller = caller_number(request.app[K_CALLER_OF](call.uniqueid))
            rec = await svc.start_on_demand(call, caller, who.name)
        elif body.action == "stop":
            current = svc.for_channel(call.uniqueid)
            if current is not None and current.trigger == "policy" and who.role == "agent":
                return error(403, "forbidden", "this queue records every call: only a supervisor may stop it "
                                               "(pause it for card data instead)")
            rec = await svc.stop_recording(call.uniqueid, who.name)
        elif body.action == "pause":
            rec = await svc.pause(call.uniqueid, who.name)
        else:
            rec = await svc.resume(call.uniqueid, who.name)
    except RecordingError as exc:
        return error(409, exc.code, str(exc))
    return web.json_response({"agent": agent, "action": body.action, "recording": rec.summary()})


def add_recording_routes(app: web.Application, service: RecordingService, *, agents_play_own: bool,
                         caller_of: CallerLookup) -> None:
    """`caller_of(uniqueid)`: the caller's number of a live channel, as Asterisk reported it."""
    app[K_RECORDINGS] = service
    app[K_AGENTS_PLAY_OWN] = agents_play_own
    app[K_CALLER_OF] = caller_of
    everyone = ("agent", "supervisor", "admin")
    app.router.add_get("/api/v1/recordings", guard(search, *everyone))
    app.router.add_post("/api/v1/recordings/purge", guard(purge, "admin"))
    app.router.add_post("/api/v1/recordings/erasure", guard(erasure, "admin"))
    app.router.add_get("/api/v1/recordings/audit", guard(audit_log, "admin"))
    app.router.add_get("/api/v1/recordings/{id}", guard(get_one, *everyone))
    app.router.add_get("/api/v1/recordings/{id}/audio", guard(audio, *everyone))
    app.router.add_get("/api/v1/agents/{agent}/recording", guard(agent_recording, *everyone))
    app.router.add_post("/api/v1/agents/{agent}/recording", guard(agent_recording, *everyone))
