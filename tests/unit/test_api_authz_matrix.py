"""Authorization matrix over EVERY route of the REST API × every kind of caller, plus injection and size limits.

The app is built like tests/unit/test_config_api.py (real PostgreSQL, every optional area on, web sessions on).
The routes are enumerated from `app.router.routes()`, not listed by hand, so a new route is covered the day it
is added. The roles a route allows come from its guard (`web.auth.guard` sets `roles` on the handler) and must
agree with the "Roles:" text of its OpenAPI summary. Then each (route, caller) is called:

* no token, a bad token → 401;
* a role the guard does not allow → 403;
* an allowed role → anything but 401/403 (404 for a path parameter that does not exist is fine) and no 500;
* where the OpenAPI text scopes a role to one agent ("the agent themself", "a supervisor of their team") and the
  request names agent `ann` (path `{agent}`, or the body of POST /api/v1/supervision): the supervisor of the
  other team and another agent → 403, ann herself and her team's supervisor → allowed.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from acd.agent_service import AgentService
from acd.config_store import ConfigStore
from acd.membership import PbxUnavailable
from acd.supervision import SupervisionService
from ivr.flow_store import FlowStore
from ivr.prompts import PromptStore
from ivr.validate import ValidationContext
from recording.service import RecordingService
from reporting.live import LiveState
from reporting.migrate import migrate
from web.app import MAX_BODY, create_app
from web.auth import PUBLIC_PATHS, ROLES
from web.feed import FeedHub
from web.openapi import build as build_openapi
from web.sessions import SessionStore

ADMIN = "m" * 40
pytestmark = pytest.mark.asyncio


class NoPbx:
    """Queue membership without a PBX: every change answers 'unavailable' (503), nothing is listed."""

    async def login(self, phone: str, queue: str, penalty: int = 0, **kw: Any) -> Any:
        raise PbxUnavailable("no PBX in this test")

    async def logout(self, phone: str, queue: str) -> None:
        raise PbxUnavailable("no PBX in this test")

    async def members(self) -> list[Any]:
        return []

    async def queues_of(self, phone_user: str) -> list[str]:
        return []


async def _healthy() -> dict[str, Any]:
    return {"checks": {}}


@dataclass
class Stack:
    client: TestClient
    app: web.Application
    pool: asyncpg.Pool
    tokens: dict[str, str]  # caller -> bearer token


async def _call(client: TestClient, method: str, path: str, token: str | None = None,
                body: Any = None, **kw: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with asyncio.timeout(5):
        resp = await client.request(method, path, json=body, headers=headers, **kw)
        text = await resp.text()
    try:
        return resp.status, json.loads(text) if text else None
    except json.JSONDecodeError:
        return resp.status, text


@pytest_asyncio.fixture
async def stack(pg_db: str, tmp_path: Path) -> AsyncIterator[Stack]:
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=4)
    await migrate(pool)
    agents = AgentService(None, pool, "n1", NoPbx())  # type: ignore[arg-type]
    recordings = RecordingService(None, pool, "n1", tmp_path / "monitor")  # type: ignore[arg-type]
    supervision = SupervisionService(None, pool, "n1", agents.book,  # type: ignore[arg-type]
                                     is_paused=lambda _: False, channel_up=lambda _: False)

    async def ctx() -> ValidationContext:
        queues = frozenset(r["name"] for r in await pool.fetch("SELECT name FROM queues"))
        return ValidationContext(allowed_hosts=frozenset({"crm.test"}), known_queues=queues)

    app = create_app(admin_token=ADMIN, health=_healthy, membership=NoPbx(),  # type: ignore[arg-type]
                     live_state=LiveState(), pool=pool, config_store=ConfigStore(pool), feed=FeedHub(),
                     agents=agents, flows=(FlowStore(pool), ctx), prompts=PromptStore(tmp_path / "prompts"),
                     recordings=recordings, supervision=supervision, sessions=SessionStore(pool), node="n1")
    async with TestClient(TestServer(app)) as client:
        for path, body in (
            ("/api/v1/teams", {"name": "red"}), ("/api/v1/teams", {"name": "blue"}),
            ("/api/v1/phones", {"name": "pa"}), ("/api/v1/phones", {"name": "pb"}),
            ("/api/v1/phones", {"name": "sa", "kind": "supervisor"}),
            ("/api/v1/agents", {"name": "ann", "phone": "pa", "team": "red"}),
            ("/api/v1/agents", {"name": "bob", "phone": "pb", "team": "blue"}),
            ("/api/v1/queues", {"name": "support"}),
        ):
            status, out = await _call(client, "POST", path, ADMIN, body)
            assert status == 201, (path, out)
        tokens = {"admin": ADMIN}
        for caller, user in (("agent", {"role": "agent", "agent": "ann"}),
                             ("agent_other", {"role": "agent", "agent": "bob"}),
                             ("supervisor_other_team", {"role": "supervisor", "team": "blue"}),
                             ("supervisor_team", {"role": "supervisor", "team": "red"})):
            body = {"name": caller.replace("_", "-"), **user}
            status, out = await _call(client, "POST", "/api/v1/users", ADMIN, body)
            assert status == 201, out
            tokens[caller] = out["token"]
        await agents.start()  # its effects worker: commands wait for their effects (AMI ones fail: no PBX)
        try:
            yield Stack(client, app, pool, tokens)
        finally:
            await agents.stop()
    await pool.close()


# ------------------------------------------------------------------ the matrix
CALLERS = ("none", "bad_token", "agent", "agent_other", "supervisor_other_team", "supervisor_team", "admin")
ROLE_OF = {"agent": "agent", "agent_other": "agent", "supervisor_other_team": "supervisor",
           "supervisor_team": "supervisor", "admin": "admin"}
PATH_VALUES = {"agent": "ann", "key": "no-such-key", "name": "no-such-name", "id": str(uuid.uuid4()),
               "linkedid": "1763900000.1", "queue": "support", "phone": "pa", "version": "1", "ip": "192.0.2.77"}
#: Bodies for routes whose answer for an allowed caller needs one (everything else gets `{}`).
BODIES = {("POST", "/api/v1/supervision"): {"agent": "ann"}}
_SCOPED = re.compile(r"themself|their team|agent's team|\bown\b")


def doc_roles(summary: str) -> tuple[frozenset[str], bool]:
    """Roles named after "Roles:" in an OpenAPI summary, and whether any of them is scoped to an agent/team.

    Each comma-separated item (parentheses removed first) names one role: the first of agent/supervisor/admin
    in it ("the agent themself", "a supervisor of their team", "supervisor of the agent's team", "an admin")."""
    m = re.search(r"Roles?:(.*)$", summary, re.S)
    assert m, f"no 'Roles:' in {summary!r}"
    text = m.group(1)
    scoped = bool(_SCOPED.search(text))
    flat = re.sub(r"\([^)]*\)", "", text)
    roles = set()
    for item in flat.split(","):
        first = re.search(r"\b(agent|supervisor|admin)\b", item)
        assert first, f"cannot read a role from {item!r}"
        roles.add(first.group(1))
    return frozenset(roles), scoped


def api_routes(app: web.Application) -> list[tuple[str, str, Any]]:
    out = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/api/") and route.method != "HEAD":
            out.append((route.method, path, route.handler))
    return sorted(out, key=lambda r: (r[1], r[0]))


def fill(path: str) -> str:
    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", lambda m: PATH_VALUES.get(m.group(1), "no-such-value"), path)


def expected(caller: str, roles: frozenset[str], targeted_scope: bool) -> str:
    if caller in ("none", "bad_token"):
        return "401"
    if ROLE_OF[caller] not in roles:
        return "403"
    if targeted_scope and caller in ("agent_other", "supervisor_other_team"):
        return "403"
    return "allowed"


async def test_every_route_times_every_caller(stack: Stack) -> None:
    doc = build_openapi()["paths"]
    routes = api_routes(stack.app)
    assert len(routes) > 80, "the app did not register its routes"
    failures: list[str] = []
    checked = 0
    for method, path, handler in routes:
        roles = getattr(handler, "roles", None)
        if roles is None:
            assert path in PUBLIC_PATHS, f"{method} {path} has no guard and is not public"
            status, _ = await _call(stack.client, method, fill(path))
            assert status == 200, f"public {path}: {status}"
            continue
        assert roles and roles <= set(ROLES), (path, roles)
        op = doc.get(path, {}).get(method.lower())
        assert op is not None, f"{method} {path} is not in the OpenAPI document"
        documented, scoped = doc_roles(op["summary"])
        assert documented == roles, f"{method} {path}: guard allows {sorted(roles)}, OpenAPI says {sorted(documented)}"
        targeted = scoped and ("{agent}" in path or (method, path) in BODIES)
        for caller in CALLERS:
            token = {"none": None, "bad_token": "x" * 43}.get(caller, stack.tokens.get(caller))
            body = BODIES.get((method, path), {}) if method in ("POST", "PUT", "PATCH", "DELETE") else None
            try:
                status, out = await _call(stack.client, method, fill(path), token, body)
            except TimeoutError:
                status, out = 0, "no answer within 5 s"
            want = expected(caller, roles, targeted)
            ok = (str(status) == want if want != "allowed" else
                  (400 <= status < 500 and status not in (401, 403)) or status in (200, 201, 204, 503))
            checked += 1
            if not ok:
                failures.append(f"{method} {fill(path)} as {caller}: {status} (expected {want}) {str(out)[:160]}")
            elif status in (401, 403):
                assert isinstance(out, dict) and out.get("error") and out.get("message"), (path, caller, out)
    assert not failures, f"{len(failures)} of {checked} calls wrong:\n" + "\n".join(failures)


async def test_the_matrix_can_fail(stack: Stack) -> None:
    """The reading of the guard and of the OpenAPI text is not vacuous: a guard that admits a role the text does
    not name, or a text that names one more, is told apart; an unguarded route has no roles."""
    assert doc_roles("x. Roles: supervisor, admin") == (frozenset({"supervisor", "admin"}), False)
    assert doc_roles("x. Roles: the agent themself, a supervisor of their team, admin")[1]
    assert doc_roles("Roles: admin (all), supervisor (their team's agents'), agent (their own)")[0] == set(ROLES)
    assert expected("supervisor_team", frozenset({"admin"}), False) == "403"
    assert expected("agent_other", frozenset(ROLES), True) == "403"
    assert getattr(await _unguarded(), "roles", None) is None
    # a real guarded handler carries its roles
    handler = next(h for m, p, h in api_routes(stack.app) if p == "/api/v1/users" and m == "POST")
    assert handler.roles == frozenset({"admin"})


async def _unguarded() -> Any:
    async def plain(request: web.Request) -> web.Response:
        return web.Response()
    return plain


# ------------------------------------------------------------------ injection in query filters
INJECTIONS = ("' OR 1=1 --", "1;DROP TABLE queue_calls", "../../etc", "x\x00y", "$(id)", "a' UNION SELECT 1 --")
RANGE = {"from": "2026-01-01T00:00:00+00:00", "to": "2026-01-02T00:00:00+00:00"}


async def _db_digest(pool: asyncpg.Pool) -> dict[str, str]:
    tables = [r["tablename"] for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    out = {}
    for t in tables:
        out[t] = await pool.fetchval(f'SELECT md5(coalesce(string_agg(x::text, \'|\' ORDER BY x::text), \'\')) '
                                     f'FROM "{t}" x')
    return out


async def test_injection_in_query_filters_is_refused_and_changes_nothing(stack: Stack) -> None:
    """Every query parameter the OpenAPI document lists for /api/v1/calls, /api/v1/recordings and
    /api/v1/reports/* gets SQL/path/shell-injection strings: each answer is a 4xx JSON error whose problems name
    that parameter, and no table of the database changed (md5 of every row of every table before and after)."""
    doc = build_openapi()["paths"]
    reports = sorted(p for p in doc if p.startswith("/api/v1/reports/") and "get" in doc[p])
    paths = ["/api/v1/calls", "/api/v1/recordings", *reports]
    assert len(paths) >= 5
    before = await _db_digest(stack.pool)
    tried = 0
    for path in paths:
        params = [p["name"] for p in doc[path]["get"].get("parameters", []) if p["in"] == "query"]
        assert params, path
        needs_range = "from" in params and path != "/api/v1/recordings"
        for name in params:
            for value in INJECTIONS:
                query = {**(RANGE if needs_range else {}), name: value}
                status, out = await _call(stack.client, "GET", path, ADMIN, params=query)
                tried += 1
                assert 400 <= status < 500, f"{path}?{name}={value!r}: {status} {out}"
                assert isinstance(out, dict) and out.get("error"), (path, name, out)
                fields = {p.get("field") for p in out.get("problems", [])}
                assert name in fields or name in out.get("message", ""), (path, name, out)
    assert tried >= 100
    assert await _db_digest(stack.pool) == before


# ------------------------------------------------------------------ flow documents
def _flow(node: dict[str, Any]) -> dict[str, Any]:
    return {"start": "n1", "nodes": {"n1": node, "bye": {"type": "hangup"}}}


FLOW_INJECTIONS = [  # (what, node n1, the field of n1 the problem must name)
    ("prompt path traversal", {"type": "play", "prompt": "../../etc/passwd", "next": "bye"}, "prompt"),
    ("prompt absolute", {"type": "play", "prompt": "/etc/passwd", "next": "bye"}, "prompt"),
    ("transfer number with a second dial target", {"type": "transfer", "number": "123&Local/999@from-trunk"},
     "number"),
    ("transfer extension with a channel", {"type": "transfer", "extension": "12/PJSIP/evil"}, "extension"),
    ("variable name with }", {"type": "set_variable", "var": "x}", "value": "1", "next": "bye"}, "var"),
    ("variable name with a newline", {"type": "set_variable", "var": "x\nHANGUP", "value": "1", "next": "bye"}, "var"),
    ("variable value with a newline", {"type": "set_variable", "var": "x", "value": "1\nEXEC System", "next": "bye"},
     "value"),
    ("collect var with ${", {"type": "collect", "prompt": "beep", "var": "${SHELL(id)}", "max_digits": 4,
                             "next": "bye", "invalid": "bye"}, "var"),
    ("queue name with a separator", {"type": "queue", "queue": "support,t,,,,evil"}, "queue"),
    ("lookup to a host not allowed", {"type": "http_lookup", "url": "http://169.254.169.254/latest", "field": "a",
                                      "default": "bye", "failure": "bye"}, "url"),
]


def _names(problems: list[dict[str, Any]], field: str) -> bool:
    """A problem of node n1 about `field` (its field path starts with it, or its message names it)."""
    return any(p.get("node") == "n1" and (str(p.get("field") or "").split(".")[0] == field or field in p["message"])
               for p in problems)


@pytest.mark.parametrize(("what", "node", "field"), FLOW_INJECTIONS, ids=[w for w, _, _ in FLOW_INJECTIONS])
async def test_flow_documents_with_injection_are_refused_naming_the_node(stack: Stack, what: str,
                                                                         node: dict[str, Any], field: str) -> None:
    """A flow whose node carries an injection-shaped value is refused on create, on save and on validate with a
    problem that names the node (n1); nothing is stored."""
    status, out = await _call(stack.client, "POST", "/api/v1/flows", ADMIN, {"name": "evil", "document": _flow(node)})
    assert status == 422 and out["error"] == "invalid_flow", out
    assert _names(out["problems"], field), out
    assert (await _call(stack.client, "GET", "/api/v1/flows", ADMIN))[1] == []
    good = {"start": "n1", "nodes": {"n1": {"type": "play", "prompt": "hello", "next": "bye"},
                                     "bye": {"type": "hangup"}}}
    status, out = await _call(stack.client, "POST", "/api/v1/flows", ADMIN, {"name": "good", "document": good})
    assert status == 201, out
    status, out = await _call(stack.client, "PUT", "/api/v1/flows/good", ADMIN, {"document": _flow(node)})
    assert status == 422 and _names(out["problems"], field), out
    status, out = await _call(stack.client, "GET", "/api/v1/flows/good", ADMIN)
    assert out["draft"] == good, "the refused save changed the draft"
    status, out = await _call(stack.client, "POST", "/api/v1/flows/good/validate", ADMIN, {"document": _flow(node)})
    assert status == 200 and out["ok"] is False and _names(out["problems"], field), out


# ------------------------------------------------------------------ body size
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversize_body_is_413_json_and_stores_nothing(stack: Stack, chunked: bool) -> None:
    """A JSON body over the app's client_max_size (64 KiB) gets 413 with the API's JSON error, whether its size is
    announced (Content-Length) or not (chunked), on a config create and a flow create; nothing is stored."""
    before = await _db_digest(stack.pool)
    for path, body in (
        ("/api/v1/skills", {"name": "big", "pad": "x" * (MAX_BODY + 1)}),
        ("/api/v1/flows", {"name": "big", "document": {"start": "a", "nodes": {
            f"n{i}": {"type": "hangup"} for i in range(MAX_BODY // 10)}}}),
    ):
        raw = json.dumps(body).encode()
        assert len(raw) > MAX_BODY

        async def gen(data: bytes = raw) -> AsyncIterator[bytes]:
            for i in range(0, len(data), 8192):
                yield data[i:i + 8192]

        resp = await stack.client.post(path, data=gen() if chunked else raw, headers={
            "Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
        assert resp.status == 413, (path, resp.status, await resp.text())
        out = await resp.json()
        assert out["error"] and out["message"], out
    assert await _db_digest(stack.pool) == before
    # just under the limit is read (and refused for its content, not its size)
    status, out = await _call(stack.client, "POST", "/api/v1/skills", ADMIN, {"name": "ok", "pad": "x" * 1000})
    assert status == 422 and "pad" in {p["field"] for p in out["problems"]}
