"""JSON errors with a message a person can act on, for every failure the API can meet."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from web.auth import Handler

log = logging.getLogger("web")


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The API's one error shape: `{error, message}` plus optional fields (e.g. `problems`, `current_state`)."""
    return web.json_response({"error": code, "message": message, **extra}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal_error", "the service failed on this request; see its log")
