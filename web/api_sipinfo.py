"""GET /api/v1/sip-info: what a softphone needs besides its user and password (admins only, read-only).

The admin page shows a new phone's credentials once, together with the SIP server's port, transport and codec,
the same facts `ccpbx-ctl softphone` prints. The service hands its SIP settings in (``create_app(sip=(host, port))``).
"""

from __future__ import annotations

from aiohttp import web

from web.auth import guard
from web.errors import error

#: (public host, port) of the SIP server, handed in by the service (web does not read configuration itself).
K_SIP: web.AppKey[tuple[str, int]] = web.AppKey("sip_endpoint")
#: what asterisk-conf/pjsip.conf offers every phone: one UDP transport, G.711 u-law only
TRANSPORT = "udp"
CODEC = "G.711 u-law (PCMU)"
ERROR_REF = {"$ref": "#/components/schemas/Error"}


async def sip_info(request: web.Request) -> web.Response:
    sip = request.app.get(K_SIP)
    if sip is None:
        return error(503, "unavailable", "the service was started without SIP settings")
    host, port = sip
    return web.json_response({"host": host, "port": port, "transport": TRANSPORT, "codec": CODEC})


def add_sipinfo_routes(app: web.Application, sip: tuple[str, int] | None) -> None:
    if sip is not None:
        app[K_SIP] = sip
    app.router.add_get("/api/v1/sip-info", guard(sip_info, "admin"))


def openapi_paths(paths: dict[str, object]) -> None:
    paths["/api/v1/sip-info"] = {"get": {
        "summary": "The SIP server a softphone registers with: host (the configured public host), port, transport "
                   "and codec (what `ccpbx-ctl softphone` prints, without secrets). Roles: admin",
        "responses": {
            "200": {"description": "the SIP server", "content": {"application/json": {"schema": {
                "type": "object", "required": ["host", "port", "transport", "codec"], "properties": {
                    "host": {"type": "string"}, "port": {"type": "integer"},
                    "transport": {"type": "string", "enum": ["udp"]}, "codec": {"type": "string"}}}}}},
            **{status: {"description": desc, "content": {"application/json": {"schema": ERROR_REF}}}
               for status, desc in (("401", "no or wrong token"), ("403", "role not allowed"),
                                    ("503", "the service was started without SIP settings"))}}}}
