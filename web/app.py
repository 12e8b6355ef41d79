"""The HTTP face of the service: health, the REST API (v1) and its OpenAPI document.

Handlers only translate HTTP to calls on the acd/reporting objects handed in, so the web package holds no
telephony logic and can be tested with those objects alone.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from acd.agent_service import AgentService
from acd.config_store import ConfigStore
from acd.membership import MembershipError, PbxUnavailable, QueueMembership
from acd.supervision import SupervisionService
from ivr.flow_store import FlowStore
from ivr.prompts import PromptStore
from recording.service import RecordingService
from reporting.event_store import events_for_linkedid
from reporting.live import LiveState
from reporting.realtime import RealtimeBoard
from web.api_agents import K_AGENTS, add_agent_routes
from web.api_config import add_config_routes
from web.api_desktop import add_desktop_routes
from web.api_flows import ContextFactory, add_flow_routes
from web.api_prompts import add_prompt_routes
from web.api_recordings import add_recording_routes
from web.api_reports import add_report_routes
from web.api_security import add_security_routes
from web.api_sipinfo import add_sipinfo_routes
from web.api_softphone import add_softphone_routes
from web.api_supervision import add_supervision_routes
from web.auth import bearer_auth, guard
from web.errors import error, json_errors
from web.feed import FeedHub
from web.openapi import build as build_openapi
from web.pages import add_page_routes
from web.sessions import SessionStore

MAX_BODY = 64 * 1024

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]

K_HEALTH: web.AppKey[HealthCheck] = web.AppKey("health")
K_MEMBERSHIP = web.AppKey("membership", QueueMembership)
K_LIVE = web.AppKey("live", LiveState)
K_POOL = web.AppKey("pool", asyncpg.Pool)
K_BOARD = web.AppKey("board", RealtimeBoard)


async def healthz(request: web.Request) -> web.Response:
    report = await request.app[K_HEALTH]()
    ok = all(report["checks"].values())
    return web.json_response({"status": "ok" if ok else "degraded", **report}, status=200 if ok else 503)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi())


async def live(request: web.Request) -> web.Response:
    """The live snapshot: channels and members, and the KPIS.md real-time figures per queue and per agent."""
    out = request.app[K_LIVE].snapshot()
    board = request.app.get(K_BOARD)
    agents = request.app.get(K_AGENTS)
    states = agents.book.snapshot() if agents is not None else {}
    if board is not None:
        queues = board.snapshot()
        for q in queues:
            by_state: dict[str, int] = {}
            for m in out["queue_members"]:
                if m["queue"] == q["queue"]:
                    st = states.get(m["name"] or "")
                    key = str(st.state) if st is not None else "unknown"
                    by_state[key] = by_state.get(key, 0) + 1
            q["agents_by_state"] = by_state
        out["queues"] = queues
    live_state = request.app[K_LIVE]
    out["agents"] = [
        {"agent": a, "state": str(st.state), "since": st.since, "reason": st.reason, "queue": st.queue,
         "caller": (live_state.channels[st.uniqueid].caller if st.uniqueid in live_state.channels else None)}
        for a, st in sorted(states.items())]
    return web.json_response(out)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="request body must be a JSON object")
    return body


async def put_member(request: web.Request) -> web.Response:
    body = await _json_body(request)
    penalty = body.get("penalty", 0)
    if not isinstance(penalty, int) or isinstance(penalty, bool) or not 0 <= penalty <= 1000:
        return error(422, "invalid_field", "penalty: an integer from 0 to 1000")
    try:
        membership = request.app[K_MEMBERSHIP]
        m = await membership.login(request.match_info["phone"], request.match_info["queue"], penalty)
    except MembershipError as exc:
        return error(404 if "not configured" in str(exc) else 422, "invalid_member", str(exc))
    except PbxUnavailable as exc:
        return error(503, "pbx_unavailable", str(exc))
    return web.json_response({"queue": m.queue, "interface": m.interface, "member": m.member_name,
                              "penalty": m.penalty})


async def delete_member(request: web.Request) -> web.Response:
    try:
        await request.app[K_MEMBERSHIP].logout(request.match_info["phone"], request.match_info["queue"])
    except MembershipError as exc:
        return error(404 if "not configured" in str(exc) else 422, "invalid_member", str(exc))
    except PbxUnavailable as exc:
        return error(503, "pbx_unavailable", str(exc))
    return web.json_response({}, status=200)


async def list_members(request: web.Request) -> web.Response:
    members = await request.app[K_MEMBERSHIP].members()
    queue = request.match_info["queue"]
    return web.json_response([
        {"queue": m.queue, "interface": m.interface, "member": m.member_name, "penalty": m.penalty}
        for m in members if m.queue == queue
    ])


async def call_events(request: web.Request) -> web.Response:
    linkedid = request.match_info["linkedid"]
    if not 1 <= len(linkedid) <= 64 or not all(c.isalnum() or c in ".-_" for c in linkedid):
        return error(422, "invalid_field", "linkedid: 1-64 letters, digits, '.', '-' or '_'")
    rows = await events_for_linkedid(request.app[K_POOL], linkedid)
    return web.json_response([
        {"name": r["name"], "ts": r["ts"].isoformat(), "uniqueid": r["uniqueid"], "queue": r["queue"],
         "fields": json.loads(r["fields"]) if isinstance(r["fields"], str) else r["fields"]}
        for r in rows
    ])


def create_app(*, admin_token: str, health: HealthCheck, membership: QueueMembership, live_state: LiveState,
               pool: asyncpg.Pool, config_store: ConfigStore | None = None,
               feed: FeedHub | None = None, agents: AgentService | None = None,
               flows: tuple[FlowStore, ContextFactory] | None = None,
               prompts: PromptStore | None = None, recordings: RecordingService | None = None,
               supervision: SupervisionService | None = None, agents_play_own: bool = False,
               board: RealtimeBoard | None = None, sessions: SessionStore | None = None,
               secure_cookies: bool = False, sip: tuple[str, int] | None = None, wss_port: int | None = None,
               node: str = "pbx1") -> web.Application:
    lookup = config_store.user_for_token if config_store else None
    app = web.Application(middlewares=[json_errors, bearer_auth(admin_token, lookup, sessions)],
                          client_max_size=MAX_BODY)
    app[K_HEALTH] = health
    app[K_MEMBERSHIP] = membership
    app[K_LIVE] = live_state
    app[K_POOL] = pool
    if board is not None:
        app[K_BOARD] = board
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/live", guard(live, "supervisor", "admin"))
    app.router.add_get("/api/v1/queues/{queue}/members", guard(list_members, "supervisor", "admin"))
    app.router.add_put("/api/v1/queues/{queue}/members/{phone}", guard(put_member, "admin"))
    app.router.add_delete("/api/v1/queues/{queue}/members/{phone}", guard(delete_member, "admin"))
    app.router.add_get("/api/v1/calls/{linkedid}/events", guard(call_events, "supervisor", "admin"))
    add_report_routes(app, pool, node)
    add_security_routes(app)  # SIP bans (web/api_security.py; the service sets the guard)
    if config_store is not None:
        add_config_routes(app, config_store)
        add_sipinfo_routes(app, sip)
        add_softphone_routes(app, pool, wss_port)  # the agent desktop's browser phone (web/api_softphone.py)
    if agents is not None:
        add_agent_routes(app, agents)
        add_desktop_routes(app, pool, live_state)
    if flows is not None:
        add_flow_routes(app, *flows)
    if prompts is not None:
        add_prompt_routes(app, prompts)
    if recordings is not None and agents is not None:
        def caller_of(uniqueid: str) -> str | None:
            info = live_state.channels.get(uniqueid)
            return info.caller if info else None
        add_recording_routes(app, recordings, agents_play_own=agents_play_own, caller_of=caller_of)
    if supervision is not None and agents is not None:
        add_supervision_routes(app, supervision)
    if sessions is not None:
        add_page_routes(app, sessions, secure_cookies=secure_cookies)
    if feed is not None:
        app.router.add_get("/api/v1/feed", guard(feed.handle, "agent", "supervisor", "admin"))
    return app
