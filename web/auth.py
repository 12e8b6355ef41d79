"""Bearer-token authentication for the REST API (users and roles arrive with the ACD issue)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC_PATHS = frozenset({"/healthz", "/api/v1/openapi.json"})


def bearer_auth(admin_token: str) -> Middleware:
    """Middleware: every /api path but the public ones needs `Authorization: Bearer <admin token>`."""
    expected = admin_token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or not request.path.startswith("/api/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not expected or not hmac.compare_digest(token.encode(), expected):
            return web.json_response(
                {"error": "unauthorized", "message": "send Authorization: Bearer <token>"}, status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return middleware
