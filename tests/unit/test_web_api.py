"""REST API edge: authentication, clear 4xx errors, nothing changed on bad input. (The real login path over
AMI is covered by the live tests; here a stand-in membership records what the API asked of it.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from acd.membership import Member, MembershipError, PbxUnavailable, interface_for
from reporting.live import LiveState
from web.app import create_app

TOKEN = "t" * 40


class RecordingMembership:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.down = False

    async def login(self, phone: str, queue: str, penalty: int = 0) -> Member:
        if queue != "support":
            raise MembershipError(f"queue {queue!r} is not configured")
        iface = interface_for(phone)
        if self.down:
            raise PbxUnavailable("QueueAdd: the PBX did not answer (AmiNotConnected)")
        self.calls.append(("login", phone, queue, str(penalty)))
        return Member(queue, iface, phone, penalty)

    async def logout(self, phone: str, queue: str) -> None:
        self.calls.append(("logout", phone, queue))

    async def members(self) -> list[Member]:
        return []


async def healthy() -> dict[str, Any]:
    return {"checks": {"ami": True, "fastagi": True, "db": False}}


@pytest_asyncio.fixture
async def client() -> AsyncIterator[tuple[TestClient, RecordingMembership]]:  # type: ignore[type-arg]
    membership = RecordingMembership()
    app = create_app(admin_token=TOKEN, health=healthy, membership=membership,  # type: ignore[arg-type]
                     live_state=LiveState(), pool=None)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as c:
        yield c, membership


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.asyncio
async def test_health_is_public_and_reports_failing_checks(client) -> None:  # type: ignore[no-untyped-def]
    c, _ = client
    resp = await c.get("/healthz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "degraded" and body["checks"]["db"] is False


@pytest.mark.asyncio
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer "])
async def test_api_needs_the_token(client, header) -> None:  # type: ignore[no-untyped-def]
    c, membership = client
    headers = {"Authorization": header} if header else {}
    resp = await c.put("/api/v1/queues/support/members/agent1", headers=headers, json={})
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"
    assert membership.calls == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/api/v1/queues/support/members/agent1", {"penalty": -1}, 422, "penalty"),
        ("/api/v1/queues/support/members/agent1", {"penalty": "1"}, 422, "penalty"),
        ("/api/v1/queues/support/members/agent1", [1], 400, "JSON object"),
        ("/api/v1/queues/support/members/agent1&x", {}, 422, "invalid name"),
        ("/api/v1/queues/support/members/PJSIP%2Fother", {}, 422, "invalid name"),
        ("/api/v1/queues/nope/members/agent1", {}, 404, "not configured"),
    ],
)
async def test_bad_input_is_refused_with_a_clear_message_and_changes_nothing(  # type: ignore[no-untyped-def]
    client, path, body, status, needle
) -> None:
    c, membership = client
    resp = await c.put(path, headers=AUTH, json=body)
    assert resp.status == status
    assert needle in (await resp.json())["message"]
    assert membership.calls == []


@pytest.mark.asyncio
async def test_invalid_json_and_oversize_body(client) -> None:  # type: ignore[no-untyped-def]
    c, membership = client
    resp = await c.put("/api/v1/queues/support/members/agent1", headers={**AUTH, "Content-Type": "application/json"},
                       data=b"{not json")
    assert resp.status == 400
    resp = await c.put("/api/v1/queues/support/members/agent1", headers=AUTH, data=b"x" * (200 * 1024))
    assert resp.status == 413
    assert membership.calls == []


@pytest.mark.asyncio
async def test_pbx_down_gives_503(client) -> None:  # type: ignore[no-untyped-def]
    c, membership = client
    membership.down = True
    resp = await c.put("/api/v1/queues/support/members/agent1", headers=AUTH, json={})
    assert resp.status == 503
    assert (await resp.json())["error"] == "pbx_unavailable"


@pytest.mark.asyncio
async def test_login_passes_validated_values(client) -> None:  # type: ignore[no-untyped-def]
    c, membership = client
    resp = await c.put("/api/v1/queues/support/members/agent1", headers=AUTH, json={"penalty": 3})
    assert resp.status == 200
    assert await resp.json() == {"queue": "support", "interface": "PJSIP/agent1", "member": "agent1", "penalty": 3}
    assert membership.calls == [("login", "agent1", "support", "3")]
