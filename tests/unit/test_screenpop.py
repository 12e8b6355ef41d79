"""Screen-pop webhook: signed, once per offer, retried, and never in the way of the call."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from acd.screenpop import ScreenPopNotifier
from telephony.ami import parse_event
from telephony.ami.events import AgentCalled

pytestmark = pytest.mark.asyncio
SECRET = "s" * 32


def called(ts: str = "1795448451.123456", member: str = "agent1") -> AgentCalled:
    ev = parse_event({"Event": "AgentCalled", "Timestamp": ts, "Queue": "support", "Interface": f"PJSIP/{member}",
                      "MemberName": member, "CallerIDNum": "+15551234567", "CallerIDName": "Zoë",
                      "Linkedid": "pbx1-1.0", "Uniqueid": "pbx1-1.0",
                      "ChanVariable": "IVR_INPUTS=did=2000&account=12%2634\nOTHER=x"}, time.time())
    assert isinstance(ev, AgentCalled)
    return ev


async def receiver(statuses: list[int], delay: float = 0.0) -> tuple[TestServer, list[tuple[dict[str, Any], str]]]:
    got: list[tuple[dict[str, Any], str]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        got.append((json.loads(body), "ok" if request.headers["X-Ccpbx-Signature"] == expected else "bad"))
        await asyncio.sleep(delay)
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app)
    await server.start_server()
    return server, got


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_signed_once_per_offer_and_published() -> None:
    server, got = await receiver([])
    published: list[dict[str, Any]] = []
    n = ScreenPopNotifier(str(server.make_url("/hook")), SECRET, publish=published.append)
    n.on_agent_called(called())
    n.on_agent_called(called())  # the same offer again (e.g. a replay): not sent twice
    n.on_agent_called(called(member="agent2"))  # another agent rung for the same call: its own pop
    await wait_for(lambda: n.stats["delivered"] == 2)
    assert [g[1] for g in got] == ["ok", "ok"]
    assert {g[0]["agent"] for g in got} == {"agent1", "agent2"}
    assert got[0][0]["caller_number"] == "+15551234567" and got[0][0]["caller_name"] == "Zoë"
    assert got[0][0]["ivr_inputs"] == {"did": "2000", "account": "12&34"}
    assert len(published) == 2 and published[0]["type"] == "screen_pop"
    await n.close()
    await server.close()


async def test_retries_then_gives_up_without_raising() -> None:
    server, got = await receiver([500, 503, 500, 500])
    n = ScreenPopNotifier(str(server.make_url("/hook")), SECRET, retries=3)
    n.on_agent_called(called())
    await wait_for(lambda: n.stats["failed"] == 1)
    assert len(got) == 3 and n.stats["delivered"] == 0
    await n.close()
    await server.close()


async def test_slow_receiver_never_blocks_the_caller_of_on_agent_called() -> None:
    server, _ = await receiver([], delay=5.0)
    n = ScreenPopNotifier(str(server.make_url("/hook")), SECRET, timeout_s=0.3, retries=1)
    start = time.monotonic()
    for i in range(20):
        n.on_agent_called(called(ts=f"1795448451.{i:06d}"))
    assert time.monotonic() - start < 0.1
    await wait_for(lambda: n.stats["failed"] == 20)
    await n.close()
    await server.close()
