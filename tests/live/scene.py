"""A supervised queue call for the recording and supervision tests: a team, a queue, an agent on a phone, a
supervisor user with a phone, a caller; each party plays its own tone so what each phone heard can be proven."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio

from sim.baresip import BaresipPhone
from sim.tones import detect_tone
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import api, phone_for
from tests.live_stack import AGENT_TONE, CALLER_TONE, LiveStack

SUP_TONE = 1900.0
FRAME_S = 0.05  # detect_tone's frame


def tone_seconds(path: Any, freq: float) -> float:
    """How long `freq` was heard in a phone's recording (50 ms frames that carry the tone)."""
    return detect_tone(path, freq).frames_with_tone * FRAME_S


@dataclass
class Scene:
    live: LiveStack
    ami: EventRecorder
    queue: str
    did: str
    agent: str
    team: str
    agent_token: str
    sup_token: str
    other_sup_token: str
    agent_phone: BaresipPhone
    sup_phone: BaresipPhone
    caller: BaresipPhone | None = None
    connect: Any = None
    made: list[tuple[str, str]] = field(default_factory=list)

    async def call(self, caller: BaresipPhone) -> Any:
        """Place the call and wait until the agent answered; returns the AgentConnect event."""
        self.caller = caller
        mark = self.ami.mark()
        await caller.dial(f"sip:{self.did}@{self.live.sip_registrar}", timeout=15)
        self.connect = await self.ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == self.agent,
                                               since=mark)
        await self.agent_phone.wait_event("CALL_ESTABLISHED", 10)
        return self.connect

    async def as_(self, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        return await asyncio.to_thread(self.live.api, method, path, body, token)

    async def recording_now(self) -> dict[str, Any]:
        """The recording of the agent's call in progress, once the service knows it."""
        async def check() -> dict[str, Any] | None:
            status, body = await self.as_(self.agent_token, "GET", f"/api/v1/agents/{self.agent}/recording")
            assert status == 200, body
            return body["recording"]  # type: ignore[no-any-return]
        return await eventually(check, timeout=10, what="the call's recording")

    async def session_active(self, sid: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            status, body = await self.as_(self.sup_token, "GET", f"/api/v1/supervision/{sid}")
            assert status == 200, body
            assert body["status"] in ("ringing", "active"), body
            return body if body["status"] == "active" else None
        return await eventually(check, timeout=15, what=f"supervision session {sid} answered")


async def make_scene(live: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], make_acd: Any,
                     **queue: Any) -> Scene:
    """Team + queue (extra queue settings in `queue`) + agent on phone agent1 + users; phones started."""
    tag = secrets.token_hex(3)
    team, other = f"t-{tag}", f"o-{tag}"
    for t in (team, other):
        await api(live, "POST", "/api/v1/teams", {"name": t}, 201)
    s = await make_acd({"rec": ("agent1", 3)}, **queue)
    (agent,) = s.agents
    await api(live, "PUT", f"/api/v1/agents/{agent}", {"team": team})
    agent_user = await api(live, "POST", "/api/v1/users", {"name": f"a-{tag}", "role": "agent", "agent": agent}, 201)
    sup_user = await api(live, "POST", "/api/v1/users",
                         {"name": f"s-{tag}", "role": "supervisor", "team": team, "phone": "super1"}, 201)
    other_user = await api(live, "POST", "/api/v1/users",
                           {"name": f"x-{tag}", "role": "supervisor", "team": other, "phone": "super1"}, 201)
    agent_phone = await phone_for(live, phones, "agent1", AGENT_TONE)
    sup_phone = await phone_for(live, phones, "super1", SUP_TONE)
    await api(live, "POST", f"/api/v1/agents/{agent}/login")
    scene = Scene(live, ami, s.queue, s.did, agent, team, agent_user["token"], sup_user["token"],
                  other_user["token"], agent_phone, sup_phone)
    scene.made = [("users", f"a-{tag}"), ("users", f"s-{tag}"), ("users", f"x-{tag}")]
    return scene


async def drop_scene(live: LiveStack, scene: Scene) -> None:
    """Users now; the agent, queue and skill go with the `acd` fixture, the teams after it (they are referenced)."""
    for kind, name in scene.made:
        await api(live, "DELETE", f"/api/v1/{kind}/{name}", None, 204)


async def start_trunk_caller(live: LiveStack, phones: list[BaresipPhone], number: str | None = None) -> BaresipPhone:
    """A carrier call, presenting `number` as the caller when given."""
    trunk = live.cfg.sip.trunk
    p = BaresipPhone(f"caller-{number or 'anon'}", workdir=live.runtime / "phones" / f"c-{secrets.token_hex(3)}",
                     sip_user=trunk.user, sip_password=trunk.password, registrar=live.sip_registrar,
                     tone_hz=CALLER_TONE, register=False, from_user=number)
    phones.append(p)
    await p.start()
    return p


@pytest_asyncio.fixture(name="scene")
async def scene_fixture(live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone],
                        acd: Any) -> AsyncIterator[Scene]:
    """The supervised queue call's parties, made before the test and removed after it (needs the `acd` fixture
    imported into the test module)."""
    s = await make_scene(live_stack, ami, phones, acd)
    yield s
    await drop_scene(live_stack, s)
