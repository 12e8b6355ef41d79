"""What the agent desktop needs in one read: the agent's state, the call in hand, that caller's earlier calls, and
the pause reasons and wrap-up codes to choose from.

Why one endpoint: after a page reload (or for a supervisor looking at an agent) the desktop must show the call in
hand at once, and an agent may not list other people's calls: the caller whose history is returned is the one
the service knows is on the agent's call, never a number taken from the request.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from reporting.live import LiveState
from reporting.reports import calls
from web.api_agents import K_AGENTS, allowed, status_json
from web.auth import guard
from web.errors import error

HISTORY = 10
#: Numbers that say nothing about who called (withheld): no history is looked up for them.
WITHHELD = frozenset({"", "anonymous", "unknown", "restricted", "withheld"})


def add_desktop_routes(app: web.Application, pool: asyncpg.Pool, live: LiveState) -> None:
    async def desktop(request: web.Request) -> web.Response:
        agent = request.match_info["agent"]
        if not allowed(request, agent):
            return error(403, "forbidden", f"you may not see agent {agent!r}'s desktop")
        svc = request.app[K_AGENTS]
        if agent not in svc.phones:
            return error(404, "not_found", f"agent {agent!r} is not configured")
        status = svc.status(agent)
        call: dict[str, Any] | None = None
        history: list[dict[str, Any]] = []
        if status.uniqueid is not None:
            info = live.channels.get(status.uniqueid)
            call = {"linkedid": status.linkedid, "uniqueid": status.uniqueid, "queue": status.queue,
                    "caller_number": info.caller if info else None}
            number = (info.caller or "") if info else ""
            if number.lower() not in WITHHELD:
                rows = await calls(pool, caller_number=number, limit=200)
                earlier = [r for r in rows if r["linkedid"] != status.linkedid][-HISTORY:]
                history = [{"entered_at": r["entered_at"].isoformat(), "queue": r["queue"], "outcome": r["outcome"],
                            "agent": r["agent"], "talk_s": r["talk_s"], "disposition": r["disposition"]}
                           for r in reversed(earlier)]
        reasons = await pool.fetch("SELECT code, label FROM pause_reasons WHERE code <> 'missed' ORDER BY label")
        codes = await pool.fetch("SELECT code, label FROM dispositions ORDER BY label")
        return web.json_response({
            "state": status_json(agent, status), "call": call, "history": history,
            "pause_reasons": [dict(r) for r in reasons], "dispositions": [dict(r) for r in codes]})

    app.router.add_get("/api/v1/agents/{agent}/desktop", guard(desktop, "agent", "supervisor", "admin"))
