"""SIP sources blocked for password guessing (acd/sip_guard.py, docs/security-sip.md): list and lift (admins).

The guard is the one the service runs: it sets ``app[K_SIP_GUARD]`` (service/main.py). Without it (the service
started with `sip_guard.enabled = false`, or an app built for tests) both routes answer 503.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web

from acd.sip_guard import SipGuard
from web.auth import guard, principal
from web.errors import error

K_SIP_GUARD = web.AppKey("sip_guard", SipGuard)
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _guard(request: web.Request) -> SipGuard | None:
    return request.app.get(K_SIP_GUARD)


async def list_bans(request: web.Request) -> web.Response:
    g = _guard(request)
    if g is None:
        return error(503, "unavailable", "the SIP guard is not running (sip_guard.enabled = false?)")
    include_past = request.query.get("all", "") in ("1", "true", "yes")
    return web.json_response({"bans": await g.bans(include_past), "guard": g.status()})


async def delete_ban(request: web.Request) -> web.Response:
    raw = request.match_info["ip"]
    try:
        address = ipaddress.ip_address(raw) if len(raw) <= 45 else None
    except ValueError:
        address = None
    if address is None:
        return error(422, "invalid_field", "ip: an IPv4 or IPv6 address")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    g = _guard(request)
    if g is None:
        return error(503, "unavailable", "the SIP guard is not running (sip_guard.enabled = false?)")
    lifted = await g.unban(address, by=principal(request).name)
    if lifted is None:
        return error(404, "not_found", f"{address} is not banned")
    return web.json_response(lifted)


def add_security_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/security/bans", guard(list_bans, "admin"))
    app.router.add_delete("/api/v1/security/bans/{ip}", guard(delete_ban, "admin"))


def openapi_paths(paths: dict[str, Any]) -> None:
    ban = {"type": "object", "properties": {
        "id": {"type": "integer"}, "address": {"type": "string", "description": "the blocked source (IPv4/IPv6)"},
        "banned_at": {"type": "string", "format": "date-time"}, "expires_at": {"type": "string", "format": "date-time"},
        "failures": {"type": "integer", "description": "failed authentications within the window that caused it"},
        "reason": {"type": "string", "description": "the AMI security event of the last failure"},
        "accounts": {"type": "array", "items": {"type": "string"}, "description": "SIP accounts tried (up to 10)"},
        "enforced": {"type": "boolean", "description": "false: recorded only (no firewall, or it refused)"},
        "lifted_at": {"type": "string", "format": "date-time", "nullable": True},
        "lifted_by": {"type": "string", "nullable": True}, "active": {"type": "boolean"}}}

    def err(desc: str) -> dict[str, Any]:
        return {"description": desc, "content": {"application/json": {"schema": ERROR_REF}}}

    common = {"401": err("no or wrong token"), "403": err("role not allowed"),
              "503": err("the SIP guard is not running")}
    paths["/api/v1/security/bans"] = {"get": {
        "summary": "SIP sources blocked for password guessing (threshold failed authentications within the window; "
                   "docs/security-sip.md): the active bans, or with `all=true` the last 500 including expired and "
                   "lifted ones, and the guard's settings and counters. Roles: admin",
        "parameters": [{"name": "all", "in": "query", "required": False,
                        "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}}],
        "responses": {"200": {"description": "the bans", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"bans": {"type": "array", "items": ban}, "guard": {"type": "object"}}}}}},
            **common}}}
    paths["/api/v1/security/bans/{ip}"] = {"delete": {
        "summary": "Lift a ban before it expires: the source reaches the SIP port again at once and its failure "
                   "count starts afresh; the ban's row keeps who lifted it. Roles: admin",
        "parameters": [{"name": "ip", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "the banned IPv4 or IPv6 address"}],
        "responses": {"200": {"description": "lifted", "content": {"application/json": {"schema": ban}}},
                      **common, "404": err("the address is not banned"), "422": err("not an IP address")}}}
