"""Who is calling: bearer tokens or a browser's session cookie mapped to a principal with a role.

The bootstrap admin token comes from the configuration file; every other token belongs to an API user stored
in PostgreSQL (only its SHA-256). A browser signed in at /login sends its session cookie instead
(web/sessions.py); then every unsafe method (POST, PUT, PATCH, DELETE) must also carry the session's CSRF token
in `X-CSRF-Token`, so another site cannot make a signed-in browser act. Role checks happen server-side on every
route (`guard`).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from web.sessions import COOKIE, Session, SessionStore

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TokenLookup = Callable[[str], Awaitable[dict[str, Any] | None]]

PUBLIC_PATHS = frozenset({"/healthz", "/api/v1/openapi.json"})
# Browsers cannot send an Authorization header from a WebSocket or an <audio src>: these take ?token= too.
QUERY_TOKEN_PATHS = frozenset({"/api/v1/feed"})
QUERY_TOKEN_PATTERN = re.compile(r"^/api/v1/recordings/[0-9a-f-]{36}/audio$")
ROLES = ("agent", "supervisor", "admin")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    agent: str | None = None
    team: str | None = None
    phone: str | None = None  # a supervisor's own phone (supervision sessions ring it)


K_PRINCIPAL = web.RequestKey("principal", Principal)
K_SESSION = web.RequestKey("session", Session)


def _unauthorized() -> web.Response:
    return web.json_response({"error": "unauthorized", "message": "send Authorization: Bearer <token>"}, status=401,
                             headers={"WWW-Authenticate": "Bearer"})


def bearer_auth(admin_token: str, lookup: TokenLookup | None = None,
                sessions: SessionStore | None = None) -> Middleware:
    """Middleware: every /api path but the public ones needs a valid `Authorization: Bearer <token>` or a
    signed-in browser's session cookie (with the CSRF header on unsafe methods)."""
    expected = admin_token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or not request.path.startswith("/api/"):
            return await handler(request)
        if "Authorization" not in request.headers and sessions is not None and request.cookies.get(COOKIE):
            session = await sessions.lookup(request.cookies[COOKIE])
            if session is None:
                return web.json_response({"error": "unauthorized", "message": "your session has ended: sign in again"},
                                         status=401)
            if request.method in UNSAFE_METHODS and not hmac.compare_digest(
                    request.headers.get(CSRF_HEADER, "").encode(), session.csrf.encode()):
                return web.json_response({"error": "csrf", "message": f"missing or wrong {CSRF_HEADER} header: "
                                          "reload the page"}, status=403)
            request[K_SESSION] = session
            request[K_PRINCIPAL] = Principal(session.user, session.role, session.agent, session.team, session.phone)
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
    guarded.roles = allowed  # type: ignore[attr-defined]  # read by tests/unit/test_api_authz_matrix.py
    return guarded
