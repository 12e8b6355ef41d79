"""GET /api/v1/agents/{agent}/softphone: what the agent desktop's browser phone (JsSIP) needs to register.

Why its own endpoint: the phone's SIP password is otherwise shown once, to an admin, when the phone is made. A
browser phone must get it at every page load, so it is handed out here only to the signed-in agent whose phone it
is (or to an admin), only for a phone marked `webrtc`, and never cached. The WebSocket URL uses the host name the
browser itself used to reach this service (so the same page works on 127.0.0.1, a LAN address or a DNS name;
the certificate must be valid for it) and the WSS port of Asterisk's TLS HTTP server (`sip.wss_port`).
"""

from __future__ import annotations

import ipaddress
import re

import asyncpg
from aiohttp import web

from web.auth import guard, principal
from web.errors import error

K_SOFTPHONE_POOL = web.AppKey("softphone_pool", asyncpg.Pool)
K_WSS_PORT = web.AppKey("softphone_wss_port", int)
ERROR_REF = {"$ref": "#/components/schemas/Error"}
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$")


def _ws_host(request: web.Request) -> str | None:
    """The host name of this request's URL, safe to put in a URL (IPv6 in brackets); None when it is not."""
    host = request.url.host or ""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host if _HOSTNAME.match(host) else None
    return f"[{ip}]" if ip.version == 6 else str(ip)


async def softphone(request: web.Request) -> web.Response:
    agent = request.match_info["agent"]
    p = principal(request)
    if not (p.role == "admin" or (p.role == "agent" and p.agent == agent)):
        return error(403, "forbidden", "only the agent themself (or an admin) may get this phone's credentials")
    row = await request.app[K_SOFTPHONE_POOL].fetchrow(
        "SELECT a.phone, p.password, p.webrtc FROM agents a LEFT JOIN phones p ON p.name = a.phone "
        "WHERE a.name = $1", agent)
    if row is None:
        return error(404, "not_found", f"agent {agent!r} is not configured")
    if row["phone"] is None:
        return error(404, "no_phone", f"agent {agent!r} has no phone")
    if not row["webrtc"]:
        return error(409, "not_webrtc", f"phone {row['phone']!r} is not a browser phone (webrtc is false)")
    port = request.app.get(K_WSS_PORT)
    host = _ws_host(request)
    if port is None or host is None:
        return error(503, "unavailable", "the WSS port or the request's host name is not known")
    body = {"ws_url": f"wss://{host}:{port}/ws", "sip_uri": f"sip:{row['phone']}@{host}",
            "user": row["phone"], "password": row["password"], "display_name": agent, "ice_servers": []}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def add_softphone_routes(app: web.Application, pool: asyncpg.Pool, wss_port: int | None) -> None:
    app[K_SOFTPHONE_POOL] = pool
    if wss_port is not None:
        app[K_WSS_PORT] = wss_port
    app.router.add_get("/api/v1/agents/{agent}/softphone", guard(softphone, "agent", "admin"))


def openapi_paths(paths: dict[str, object]) -> None:
    paths["/api/v1/agents/{agent}/softphone"] = {"get": {
        "summary": "The browser phone's registration (JsSIP in the agent desktop): WebSocket URL (the host the "
                   "request used, the WSS port of Asterisk), SIP URI, user and password of the agent's phone. Only "
                   "for a phone with webrtc = true, and only to that agent or an admin; never cached. "
                   "Roles: agent (own), admin",
        "parameters": [{"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "the registration", "content": {"application/json": {"schema": {
                "type": "object", "required": ["ws_url", "sip_uri", "user", "password", "ice_servers"],
                "properties": {
                    "ws_url": {"type": "string", "example": "wss://127.0.0.1:55089/ws"},
                    "sip_uri": {"type": "string", "example": "sip:agent7@127.0.0.1"},
                    "user": {"type": "string"}, "password": {"type": "string"},
                    "display_name": {"type": "string"},
                    "ice_servers": {"type": "array", "items": {"type": "object"},
                                    "description": "RTCIceServer objects (none: host candidates only)"}}}}}},
            **{status: {"description": desc, "content": {"application/json": {"schema": ERROR_REF}}}
               for status, desc in (("401", "no or wrong token"), ("403", "another agent's phone, or role not allowed"),
                                    ("404", "no such agent, or the agent has no phone"),
                                    ("409", "the agent's phone is not a browser phone (webrtc = false)"),
                                    ("503", "the WSS port is not configured"))}}}}
