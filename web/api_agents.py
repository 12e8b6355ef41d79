"""Agent commands over REST: login, logout, pause (with a reason), ready, disposition, supervisor force, and call
control of the agent's current call (hold, unhold, blind transfer: acd/call_control.py).

Who may act: an agent on themself, a supervisor on the agents of their team (a supervisor with no team on
everyone), an admin on everyone. An illegal command for the agent's state is a 409 that names the state.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from acd.agent_service import (
    AgentNotFound,
    AgentService,
    CallControlFailed,
    IllegalCommand,
    InvalidTarget,
    MembershipError,
    PbxUnavailable,
)
from acd.agent_state import AgentStatus
from acd.state_store import UnknownDisposition
from web.api_config import read_model
from web.auth import Handler, guard, principal
from web.errors import error

K_AGENTS = web.AppKey("agent_service", AgentService)

Reason = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Reason


class DispositionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    code: str = Reason


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    to: str = Field(pattern=r"^[0-9]{2,20}$", description="an extension (a phone named by these digits) or a number "
                                                          "dialled through the carrier trunk: 2-20 digits")


class ForceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    state: Literal["available", "paused", "logged_out"]
    reason: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")


def status_json(agent: str, s: AgentStatus) -> dict[str, Any]:
    return {"agent": agent, **asdict(s), "state": str(s.state)}



def allowed(request: web.Request, agent: str) -> bool:
    p = principal(request)
    if p.role == "admin":
        return True
    if p.role == "agent":
        return p.agent == agent
    team = request.app[K_AGENTS].teams.get(agent)
    return p.team is None or p.team == team


def command(run: Any) -> Handler:
    """Shared frame of every agent command: authorization, error mapping, JSON answer."""
    async def handler(request: web.Request) -> web.StreamResponse:
        agent = request.match_info["agent"]
        if not allowed(request, agent):
            return error(403, "forbidden", f"you may not act on agent {agent!r}")
        try:
            result = await run(request, request.app[K_AGENTS], agent)
            return result if isinstance(result, web.StreamResponse) else web.json_response(result)
        except IllegalCommand as exc:
            return error(409, "illegal_state", str(exc), current_state=str(exc.current))
        except AgentNotFound as exc:
            return error(404, "not_found", str(exc))
        except (MembershipError, UnknownDisposition, InvalidTarget) as exc:
            field = str(exc).split(":", 1)[0] if ":" in str(exc) else None
            return error(422, "invalid", str(exc), problems=[{"field": field, "message": str(exc)}])
        except PbxUnavailable as exc:
            return error(503, "pbx_unavailable", str(exc))
        except CallControlFailed as exc:
            return error(502, "pbx_failed", str(exc))
    return handler


async def _login(request: web.Request, svc: AgentService, agent: str) -> dict[str, Any]:
    return status_json(agent, await svc.login(agent))


async def _logout(request: web.Request, svc: AgentService, agent: str) -> dict[str, Any]:
    return status_json(agent, await svc.logout(agent))


async def _ready(request: web.Request, svc: AgentService, agent: str) -> dict[str, Any]:
    return status_json(agent, await svc.ready(agent))


async def _state(request: web.Request, svc: AgentService, agent: str) -> dict[str, Any]:
    return status_json(agent, svc.status(agent))


async def _pause(request: web.Request, svc: AgentService, agent: str) -> Any:
    body = await read_model(request, PauseIn)
    if isinstance(body, web.Response):
        return body
    assert isinstance(body, PauseIn)
    return status_json(agent, await svc.pause(agent, body.reason))


async def _disposition(request: web.Request, svc: AgentService, agent: str) -> Any:
    body = await read_model(request, DispositionIn)
    if isinstance(body, web.Response):
        return body
    assert isinstance(body, DispositionIn)
    d = await svc.disposition(agent, body.code)
    return asdict(d)


async def _hold(request: web.Request, svc: AgentService, agent: str) -> dict[str, Any]:
    return status_json(agent, await svc.hold(agent))


async def _unhold(request: web.Request, svc: AgentService, agent: str) -> dict[str, Any]:
    return status_json(agent, await svc.unhold(agent))


async def _transfer(request: web.Request, svc: AgentService, agent: str) -> Any:
    body = await read_model(request, TransferIn)
    if isinstance(body, web.Response):
        return body
    assert isinstance(body, TransferIn)
    return asdict(await svc.transfer(agent, body.to))


async def _force(request: web.Request, svc: AgentService, agent: str) -> Any:
    body = await read_model(request, ForceIn)
    if isinstance(body, web.Response):
        return body
    assert isinstance(body, ForceIn)
    return status_json(agent, await svc.force(agent, body.state, body.reason, principal(request).name))


async def all_states(request: web.Request) -> web.StreamResponse:
    svc = request.app[K_AGENTS]
    return web.json_response([status_json(a, s) for a, s in sorted(svc.book.snapshot().items())
                              if allowed(request, a)])


def add_agent_routes(app: web.Application, service: AgentService) -> None:
    app[K_AGENTS] = service
    everyone = ("agent", "supervisor", "admin")

    def route(path: str, run: Any, *roles: str, method: str = "POST") -> None:
        app.router.add_route(method, f"/api/v1/agents/{{agent}}/{path}", guard(command(run), *roles))

    route("login", _login, *everyone)
    route("logout", _logout, *everyone)
    route("ready", _ready, *everyone)
    route("pause", _pause, *everyone)
    route("disposition", _disposition, *everyone)
    route("hold", _hold, *everyone)
    route("unhold", _unhold, *everyone)
    route("transfer", _transfer, *everyone)
    route("force", _force, "supervisor", "admin")
    route("state", _state, *everyone, method="GET")
    app.router.add_get("/api/v1/agent-states", guard(all_states, "supervisor", "admin"))
