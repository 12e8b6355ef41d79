"""GET /api/v1/sip-info: what a softphone needs besides its user and password (admins only, read-only).

The admin page shows a new phone's credentials once, together with the SIP server's port, transport and codec,
the same facts `ccpbx-ctl softphone` prints. The service's settings come from ``app[K_SIP]`` when the caller set
it; otherwise they are read once from the configuration file the service was started with (``--config`` on its
command line, ``$CCPBX_CONFIG``, or ``var/ccpbx.toml``), so no start-up code has to change.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aiohttp import web

from service.config import ConfigError, SipConfig, load_config
from web.auth import guard
from web.errors import error

K_SIP = web.AppKey("sip_config", SipConfig)
#: what asterisk-conf/pjsip.conf offers every phone: one UDP transport, G.711 u-law only
TRANSPORT = "udp"
CODEC = "G.711 u-law (PCMU)"
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _config_arg(argv: Sequence[str]) -> str | None:
    """The value of ``--config X`` / ``--config=X`` on a command line, if any."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _sip(app: web.Application) -> SipConfig | None:
    if K_SIP not in app:
        try:
            app[K_SIP] = load_config(_config_arg(sys.argv)).sip
        except (ConfigError, OSError):
            return None
    return app[K_SIP]


async def sip_info(request: web.Request) -> web.Response:
    sip = _sip(request.app)
    if sip is None:
        return error(503, "unavailable", "the service's SIP settings could not be read")
    return web.json_response({"host": sip.public_host, "port": sip.port, "transport": TRANSPORT, "codec": CODEC})


def add_sipinfo_routes(app: web.Application) -> None:
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
                                    ("503", "the settings could not be read"))}}}}
