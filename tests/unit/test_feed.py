"""The WebSocket feed: token in the query, pushes arrive, agents only see their own messages."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient, TestServer

from reporting.live import LiveState
from web.app import create_app
from web.auth import Principal
from web.feed import Client, FeedHub

pytestmark = pytest.mark.asyncio
TOKEN = "f" * 40


async def _healthy() -> dict[str, Any]:
    return {"checks": {}}


async def test_feed_over_websocket() -> None:
    hub = FeedHub()
    app = create_app(admin_token=TOKEN, health=_healthy, membership=None,  # type: ignore[arg-type]
                     live_state=LiveState(), pool=None, feed=hub)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/api/v1/feed?token=wrong")
        assert refused.value.status == 401
        ws = await client.ws_connect(f"/api/v1/feed?token={TOKEN}")
        assert len(hub.clients) == 1  # registered before the handshake finished
        hub.publish({"type": "screen_pop", "agent": "agent1", "caller_number": "+1555"})
        msg = await ws.receive_json(timeout=5)
        assert msg == {"type": "screen_pop", "agent": "agent1", "caller_number": "+1555"}
        await ws.close()


async def test_agents_see_only_their_own_and_slow_clients_are_dropped() -> None:
    hub = FeedHub()
    ann = Client(Principal("ann", "agent", agent="ann"))
    sup = Client(Principal("sam", "supervisor"))
    hub.clients |= {ann, sup}
    hub.publish({"type": "agent_state", "agent": "bob"})
    hub.publish({"type": "agent_state", "agent": "ann"})
    assert ann.queue.qsize() == 1 and sup.queue.qsize() == 2
    for i in range(2000):
        hub.publish({"type": "agent_state", "agent": "bob", "n": i})
    assert sup not in hub.clients and hub.stats["dropped_clients"] == 1
    assert ann in hub.clients
