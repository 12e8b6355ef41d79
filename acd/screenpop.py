"""Screen-pop: when an agent's phone rings, tell the CRM (a signed webhook) and the agent's desktop (the feed).

Why in the background: a slow or broken CRM must never delay or affect a call. Deliveries run as bounded
background tasks with a timeout and a few retries; a failure is logged and counted, nothing else.
The body is signed with HMAC-SHA256 (`X-Ccpbx-Signature: sha256=<hex>`) so the receiver can check it came
from us; `X-Ccpbx-Delivery` is a stable id per offer, so a receiver can ignore a retry it already got.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp

from telephony.ami.events import AgentCalled

log = logging.getLogger("acd.screenpop")


@dataclass(frozen=True)
class ScreenPop:
    delivery_id: str
    agent: str | None
    interface: str | None
    queue: str | None
    caller_number: str | None
    caller_name: str | None
    linkedid: str | None
    uniqueid: str | None
    at: float
    ivr_inputs: dict[str, str]


def screen_pop_from(ev: AgentCalled) -> ScreenPop:
    key = f"{ev.linkedid}|{ev.interface}|{ev.timestamp:.6f}"
    return ScreenPop(
        delivery_id=hashlib.sha256(key.encode()).hexdigest()[:32], agent=ev.member_name, interface=ev.interface,
        queue=ev.queue, caller_number=ev.caller_id_num, caller_name=ev.caller_id_name, linkedid=ev.linkedid,
        uniqueid=ev.uniqueid, at=ev.timestamp, ivr_inputs=ivr_inputs(ev.chan_variables.get("IVR_INPUTS", "")),
    )


def ivr_inputs(encoded: str) -> dict[str, str]:
    """What the caller told the IVR, as the IVR stored it on the channel (URL-encoded): bounded, untrusted."""
    return dict(parse_qsl(encoded[:2000], keep_blank_values=True)[:20])


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class ScreenPopNotifier:
    def __init__(self, url: str, secret: str, *, timeout_s: float = 2.0, retries: int = 3,
                 max_in_flight: int = 50, publish: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.retries = retries
        self.publish = publish
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._seen: dict[str, None] = {}
        self.stats = {"offers": 0, "delivered": 0, "failed": 0, "dropped": 0}

    def on_agent_called(self, ev: AgentCalled) -> None:
        """Called by the ordered consumer: never blocks, never raises."""
        pop = screen_pop_from(ev)
        if pop.delivery_id in self._seen:
            return
        self._seen[pop.delivery_id] = None
        if len(self._seen) > 10_000:
            self._seen.pop(next(iter(self._seen)))
        self.stats["offers"] += 1
        payload = {"type": "screen_pop", **asdict(pop)}
        if self.publish is not None:
            self.publish(payload)
        if not self.url:
            return
        if self._slots.locked():
            self.stats["dropped"] += 1
            log.warning("screen-pop %s not sent: %d deliveries already in flight", pop.delivery_id,
                        len(self._tasks))
            return
        task = asyncio.create_task(self._deliver(pop.delivery_id, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery_id: str, payload: dict[str, Any]) -> None:
        async with self._slots:
            body = json.dumps(payload, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", "X-Ccpbx-Signature": sign(self.secret, body),
                       "X-Ccpbx-Delivery": delivery_id}
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            delay = 0.2
            for attempt in range(1, self.retries + 1):
                try:
                    async with self._session.post(self.url, data=body, headers=headers) as resp:
                        if resp.status < 300:
                            self.stats["delivered"] += 1
                            return
                        why = f"HTTP {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    why = f"{type(exc).__name__}: {exc}"
                if attempt < self.retries:
                    await asyncio.sleep(delay)
                    delay *= 2
            self.stats["failed"] += 1
            log.warning("screen-pop %s to %s failed after %d tries: %s", delivery_id, self.url, self.retries, why)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
