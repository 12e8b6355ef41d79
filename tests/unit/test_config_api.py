"""Configuration REST API against a real PostgreSQL: validation naming the field, 409s, roles, secrets once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from acd.agent_service import AgentService
from acd.config_store import ConfigStore
from acd.supervision import SupervisionService
from ivr.flow_store import FlowStore
from ivr.prompts import PromptStore
from ivr.validate import ValidationContext
from recording.service import RecordingService
from reporting.live import LiveState
from reporting.migrate import migrate
from web.app import create_app
from web.feed import FeedHub
from web.openapi import build as build_openapi
from web.sessions import SessionStore

ADMIN = "a" * 40
COMMITTED_OPENAPI = json.loads((Path(__file__).resolve().parents[2] / "web" / "openapi.json").read_text())
pytestmark = pytest.mark.asyncio


async def _healthy() -> dict[str, Any]:
    return {"checks": {}}


@pytest_asyncio.fixture
async def api(pg_db: str, tmp_path: Path) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=3)
    await migrate(pool)
    agents = AgentService(None, pool, "n1", None)  # type: ignore[arg-type]
    # Recording and supervision services are built but never started (no AMI here): their routes exist, so the
    # OpenAPI coverage check below covers them too.
    recordings = RecordingService(None, pool, "n1", tmp_path / "monitor")  # type: ignore[arg-type]
    supervision = SupervisionService(None, pool, "n1", agents.book,  # type: ignore[arg-type]
                                     is_paused=lambda _: False, channel_up=lambda _: False)
    app = create_app(admin_token=ADMIN, health=_healthy, membership=None,  # type: ignore[arg-type]
                     live_state=LiveState(), pool=pool, config_store=ConfigStore(pool), feed=FeedHub(),
                     agents=agents, flows=(FlowStore(pool), _flow_context(pool)),
                     prompts=PromptStore(tmp_path / "prompts"), recordings=recordings, supervision=supervision,
                     sessions=SessionStore(pool), node="n1")
    async with TestClient(TestServer(app)) as client:
        yield client
    await pool.close()


def _flow_context(pool: asyncpg.Pool):  # type: ignore[no-untyped-def]
    async def ctx() -> ValidationContext:
        queues = frozenset(r["name"] for r in await pool.fetch("SELECT name FROM queues"))
        return ValidationContext(allowed_hosts=frozenset({"crm.test"}), known_queues=queues)
    return ctx


def auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(api: TestClient, method: str, path: str, body: Any = None,  # type: ignore[type-arg]
               token: str = ADMIN) -> tuple[int, Any]:
    resp = await api.request(method, path, json=body, headers=auth(token))
    return resp.status, (await resp.json() if resp.status != 204 else None)


async def test_build_a_small_center(api: TestClient) -> None:  # type: ignore[type-arg]
    assert (await call(api, "POST", "/api/v1/skills", {"name": "billing"}))[0] == 201
    assert (await call(api, "POST", "/api/v1/teams", {"name": "blue"}))[0] == 201
    status, phone = await call(api, "POST", "/api/v1/phones", {"name": "desk7"})
    assert status == 201 and len(phone["password"]) >= 24
    status, shown = await call(api, "GET", "/api/v1/phones/desk7")
    assert status == 200 and "password" not in shown  # the password is shown once, at creation
    status, agent = await call(api, "POST", "/api/v1/agents", {"name": "ann", "display_name": "Ann", "phone": "desk7",
                                                               "team": "blue", "skills": {"billing": 5}})
    assert status == 201 and agent["skills"] == {"billing": 5}
    q = {"name": "billing", "required_skill": "billing", "escalation": [{"after_s": 0, "min_level": 5},
                                                                       {"after_s": 20, "min_level": 1}],
         "wrapup_s": 30, "max_len": 10}
    status, queue = await call(api, "POST", "/api/v1/queues", q)
    assert status == 201 and queue["escalation"][1] == {"after_s": 20, "min_level": 1}
    assert (await call(api, "POST", "/api/v1/routes", {"did": "5550100", "queue": "billing"}))[0] == 201
    status, agent = await call(api, "PUT", "/api/v1/agents/ann", {"skills": {"billing": 2}})
    assert status == 200 and agent["skills"] == {"billing": 2} and agent["phone"] == "desk7"
    status, queues = await call(api, "GET", "/api/v1/queues")
    assert [x["name"] for x in queues] == ["billing"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/queues", {"name": "Sales Queue"}, "name"),
        ("/api/v1/queues", {"name": "q1", "colour": "red"}, "colour"),
        ("/api/v1/queues", {"name": "q1", "ring_timeout_s": 1}, "ring_timeout_s"),
        ("/api/v1/queues", {"name": "q1", "required_skill": "x",
                            "escalation": [{"after_s": 20, "min_level": 1}, {"after_s": 0, "min_level": 5}]},
         "escalation"),
        ("/api/v1/queues", {"name": "q1", "overflow_queue": "q1"}, None),
        ("/api/v1/routes", {"did": "12ab", "queue": "q1"}, "did"),
        ("/api/v1/routes", {"did": "123", "queue": "q1", "ivr_flow": "f"}, None),
        ("/api/v1/agents", {"name": "bob", "skills": {"billing": 9}}, "skills.billing"),
        ("/api/v1/phones", {"name": "p;1"}, "name"),
        ("/api/v1/users", {"name": "u1", "role": "agent"}, None),
    ],
)
async def test_invalid_input_names_the_field(api: TestClient, path: str, body: dict, field: str | None) -> None:  # type: ignore[type-arg]
    status, err = await call(api, "POST", path, body)
    assert status == 422, err
    assert err["error"] == "invalid" and err["problems"]
    if field:
        assert field in [p["field"] for p in err["problems"]], err
    assert (await call(api, "GET", path))[1] == []  # nothing was stored


async def test_references_and_conflicts(api: TestClient) -> None:  # type: ignore[type-arg]
    status, err = await call(api, "POST", "/api/v1/agents", {"name": "bob", "phone": "nope"})
    assert status == 422 and err["problems"][0]["field"] == "phone"
    await call(api, "POST", "/api/v1/queues", {"name": "sales"})
    assert (await call(api, "POST", "/api/v1/queues", {"name": "sales"}))[0] == 409
    await call(api, "POST", "/api/v1/routes", {"did": "100", "queue": "sales"})
    status, err = await call(api, "DELETE", "/api/v1/queues/sales")
    assert status == 409 and "inbound_routes" in err["message"]
    await call(api, "POST", "/api/v1/phones", {"name": "p1"})
    await call(api, "POST", "/api/v1/agents", {"name": "cy", "phone": "p1"})
    assert (await call(api, "DELETE", "/api/v1/phones/p1"))[0] == 409
    assert (await call(api, "DELETE", "/api/v1/routes/100"))[0] == 204
    assert (await call(api, "DELETE", "/api/v1/queues/sales"))[0] == 204
    assert (await call(api, "DELETE", "/api/v1/queues/sales"))[0] == 404


async def test_roles(api: TestClient) -> None:  # type: ignore[type-arg]
    await call(api, "POST", "/api/v1/teams", {"name": "red"})
    await call(api, "POST", "/api/v1/agents", {"name": "dee"})
    status, sup = await call(api, "POST", "/api/v1/users", {"name": "sam", "role": "supervisor", "team": "red"})
    assert status == 201 and "token" in sup and "token_sha256" not in sup
    status, ag = await call(api, "POST", "/api/v1/users", {"name": "dee", "role": "agent", "agent": "dee"})
    assert status == 201
    assert (await call(api, "GET", "/api/v1/queues", token=sup["token"]))[0] == 200
    status, err = await call(api, "POST", "/api/v1/queues", {"name": "x"}, token=sup["token"])
    assert status == 403 and "admin" in err["message"]
    assert (await call(api, "GET", "/api/v1/queues", token=ag["token"]))[0] == 403
    assert (await call(api, "GET", "/api/v1/users", token=sup["token"]))[0] == 403
    assert (await call(api, "GET", "/api/v1/queues", token="not-a-token"))[0] == 401
    status, users = await call(api, "GET", "/api/v1/users")
    assert {u["name"] for u in users} == {"sam", "dee"} and all("token" not in u for u in users)


async def test_rotate_phone_password(api: TestClient) -> None:  # type: ignore[type-arg]
    _, created = await call(api, "POST", "/api/v1/phones", {"name": "p2"})
    status, rotated = await call(api, "POST", "/api/v1/phones/p2/password")
    assert status == 200 and rotated["password"] != created["password"]


async def test_openapi_document_lists_every_route_and_the_committed_copy_is_fresh(
    api: TestClient,  # type: ignore[type-arg]
) -> None:
    doc = await (await api.get("/api/v1/openapi.json")).json()
    # The API's routes: the web UI's pages and static files (web/pages.py) are not part of the REST API.
    routes = {(r.method.lower(), r.resource.canonical) for r in api.app.router.routes()  # type: ignore[union-attr]
              if r.method != "HEAD" and r.resource.canonical.startswith(("/api/", "/healthz"))}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    assert {("get", "/api/v1/recordings/{id}/audio"), ("patch", "/api/v1/supervision/{id}"),
            ("get", "/api/v1/session"), ("get", "/api/v1/agents/{agent}/desktop")} <= routes
    assert COMMITTED_OPENAPI == build_openapi(), "web/openapi.json is stale: python -m web.openapi > web/openapi.json"


MENU_FLOW = {"start": "main", "nodes": {
    "main": {"type": "menu", "prompt": "main-menu", "options": {"1": "sales", "2": "sub"}, "timeout_ms": 3000,
             "retries": 1, "timeout": "bye", "invalid": "bye"},
    "sub": {"type": "menu", "prompt": "sub-menu", "options": {"1": "sales"}, "timeout_ms": 3000, "retries": 1,
            "timeout": "bye", "invalid": "bye"},
    "sales": {"type": "queue", "queue": "sales"},
    "bye": {"type": "hangup"}}}


async def test_flows_validate_publish_rollback_simulate(api: TestClient) -> None:  # type: ignore[type-arg]
    await call(api, "POST", "/api/v1/queues", {"name": "sales"})
    broken = {"start": "main", "nodes": {
        "main": {"type": "menu", "prompt": "../../etc/passwd", "options": {"x": "nowhere"}, "timeout_ms": 3000,
                 "retries": 1, "timeout": "bye", "invalid": "bye"},
        "bye": {"type": "hangup"}, "orphan": {"type": "teleport"},
        "q": {"type": "queue", "queue": "no-such-queue"}}}
    status, err = await call(api, "POST", "/api/v1/flows", {"name": "main", "document": broken})
    assert status == 422 and err["error"] == "invalid_flow"
    assert {p["node"] for p in err["problems"]} >= {"main", "orphan", "q"}  # every problem, with its node id
    assert len(err["problems"]) >= 4
    assert (await call(api, "GET", "/api/v1/flows"))[1] == []  # nothing stored

    status, _ = await call(api, "POST", "/api/v1/flows", {"name": "main", "document": MENU_FLOW})
    assert status == 201
    status, sim = await call(api, "POST", "/api/v1/flows/main/simulate", {"inputs": ["2", "1"]})
    assert status == 200 and sim["end"] == "queue:sales"
    assert [s["node"] for s in sim["path"]] == ["main", "sub", "sales"]
    assert (await call(api, "POST", "/api/v1/flows/main/simulate", {"inputs": ["1; rm -rf /"]}))[0] == 422
    assert (await call(api, "POST", "/api/v1/flows/main/publish"))[1]["published_version"] == 1
    v2 = {"start": "main", "nodes": {**MENU_FLOW["nodes"], "main": {**MENU_FLOW["nodes"]["main"],
                                                                    "options": {"1": "bye", "2": "sub"}}}}
    assert (await call(api, "PUT", "/api/v1/flows/main", {"document": v2}))[0] == 200
    assert (await call(api, "POST", "/api/v1/flows/main/publish"))[1]["published_version"] == 2
    status, sim = await call(api, "POST", "/api/v1/flows/main/simulate", {"inputs": ["1"], "version": 1})
    assert sim["end"] == "queue:sales"
    status, sim = await call(api, "POST", "/api/v1/flows/main/simulate", {"inputs": ["1"], "version": 2})
    assert sim["end"] == "hangup"
    assert (await call(api, "POST", "/api/v1/flows/main/rollback", {"version": 1}))[0] == 200
    status, flow = await call(api, "GET", "/api/v1/flows/main")
    assert flow["published_version"] == 1 and [v["version"] for v in flow["versions"]] == [1, 2]
    status, check = await call(api, "POST", "/api/v1/flows/main/validate", {"document": broken})
    assert status == 200 and check["ok"] is False and check["problems"]
