"""Who is calling: bearer tokens mapped to a principal with a role (agent, supervisor, admin).

The bootstrap admin token comes from the configuration file; every other token belongs to an API user stored
in PostgreSQL (only its SHA-256). Role checks happen server-side on every route (`guard`).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TokenLookup = Callable[[str], Awaitable[dict[str, Any] | None]]

PUBLIC_PATHS = frozenset({"/healthz", "/api/v1/openapi.json"})
# Browsers cannot send an Authorization header from a WebSocket or an <audio src>: these take ?token= too.
QUERY_TOKEN_PATHS = frozenset({"/api/v1/feed"})
QUERY_TOKEN_PATTERN = re.compile(r"^/api/v1/recordings/[0-9a-f-]{36}/audio$")
ROLES = ("agent", "supervisor", "admin")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    agent: str | None = None
    team: str | None = None
    phone: str | None = None  # a supervisor's own phone (supervision sessions ring it)


K_PRINCIPAL = web.RequestKey("principal", Principal)


def _unauthorized() -> web.Response:
    return web.json_response({"error": "unauthorized", "message": "send Authorization: Bearer <token>"}, status=401,
                             headers={"WWW-Authenticate": "Bearer"})


def bearer_auth(admin_token: str, lookup: TokenLookup | None = None) -> Middleware:
    """Middleware: every /api path but the public ones needs a valid `Authorization: Bearer <token>`."""
    expected = admin_token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or not request.path.startswith("/api/"):
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if not scheme and (request.path in QUERY_TOKEN_PATHS or QUERY_TOKEN_PATTERN.match(request.path)):
            scheme, token = "bearer", request.query.get("token", "")
        if scheme.lower() != "bearer" or not token or len(token) > 256:
            return _unauthorized()
        if expected and hmac.compare_digest(token.encode(), expected):
            request[K_PRINCIPAL] = Principal("admin", "admin")
            return await handler(request)
        user = await lookup(token) if lookup else None
        if user is None:
            return _unauthorized()
        request[K_PRINCIPAL] = Principal(user["name"], user["role"], user.get("agent"), user.get("team"),
                                       user.get("phone"))
        return await handler(request)

    return middleware


def principal(request: web.Request) -> Principal:
    p: Principal = request[K_PRINCIPAL]
    return p


def guard(handler: Handler, *roles: str) -> Handler:
    """Wrap a handler so only the given roles reach it (403 with the roles needed otherwise)."""
    allowed = frozenset(roles)

    async def guarded(request: web.Request) -> web.StreamResponse:
        p = principal(request)
        if p.role not in allowed:
            return web.json_response(
                {"error": "forbidden", "message": f"needs role {' or '.join(sorted(allowed))}; you are {p.role}"},
                status=403)
        return await handler(request)

    guarded.__name__ = getattr(handler, "__name__", "handler")
    return guarded
