"""The live feed: a WebSocket that pushes what happens (screen pops, agent states) to desktops and wallboards.

Why a hub with bounded per-client queues: a slow browser must not hold up the event consumer or other
clients; when a client's queue is full it is disconnected (it reconnects and reloads the REST snapshot).
Agents receive only messages about themselves; supervisors and admins receive everything.
Browsers cannot set headers on a WebSocket, so the token may come as `?token=`; it is checked like a bearer
token before the upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from web.auth import Principal, principal

log = logging.getLogger("web.feed")

CLIENT_QUEUE = 1000


@dataclass(eq=False)
class Client:
    who: Principal
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))


class FeedHub:
    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.stats = {"published": 0, "dropped_clients": 0}

    def publish(self, message: dict[str, Any]) -> None:
        """Queue a message for every client allowed to see it. Never blocks."""
        self.stats["published"] += 1
        text = json.dumps(message, default=str)
        agent = message.get("agent")
        for c in list(self.clients):
            if c.who.role == "agent" and agent != c.who.agent:
                continue
            try:
                c.queue.put_nowait(text)
            except asyncio.QueueFull:
                self.stats["dropped_clients"] += 1
                self.clients.discard(c)
                c.queue = asyncio.Queue(1)
                c.queue.put_nowait("")  # wakes the sender, which then closes the socket

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        client = Client(principal(request))
        self.clients.add(client)  # before the handshake completes: nothing published after it is missed
        try:
            await ws.prepare(request)
        except BaseException:
            self.clients.discard(client)
            raise
        sender = asyncio.create_task(self._send(ws, client))
        try:
            async for msg in ws:  # the feed is one-way: client messages are ignored; close ends it
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self.clients.discard(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

    async def _send(self, ws: web.WebSocketResponse, client: Client) -> None:
        while True:
            text = await client.queue.get()
            if not text:
                await ws.close(message=b"too slow: reconnect")
                return
            await ws.send_str(text)
