"""Call control from the agent desktop's API on real calls (acd/call_control.py): hold and unhold proven by audio
(the caller stops hearing the agent's tone while held, and hears it again after) and by the stored facts (hold_s
= the held time, the call stayed one queue call); a blind transfer rings another phone and the call's facts say
transferred. Refusals (no call, not on hold, bad target, another team) change nothing."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from sim.baresip import BaresipPhone
from tests.live.scene import (
    Scene,
    scene_fixture,  # noqa: F401  (the `scene` fixture, used by name)
    start_trunk_caller,
    tone_seconds,
)
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import acd, api  # noqa: F401  (acd: a fixture, used by name)
from tests.live_stack import AGENT_TONE, CALLER_TONE, LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]

TALK_S = 2.5  # audio flows for a known time before the hold and after it
HOLD_S = 3.0
DESK_TONE = 1900.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def final_fact(scene: Scene, linkedid: str, since: float) -> dict[str, Any]:
    """The call's queue-call fact as GET /api/v1/calls lists it, once final."""
    path = f"/api/v1/calls?queue={scene.queue}&from={iso(since - 60)}&to={iso(since + 600)}"

    async def check() -> dict[str, Any] | None:
        status, body = await scene.as_(scene.sup_token, "GET", path)
        assert status == 200, body
        mine = [c for c in body["calls"] if c["linkedid"] == linkedid]
        return mine[0] if len(mine) == 1 and mine[0]["final"] else None
    return await eventually(check, timeout=15, what=f"the final fact of {linkedid}")


async def test_hold_and_unhold_over_the_api_silence_the_agent_and_count_as_hold_time(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], scene: Scene,
) -> None:
    agent, path = scene.agent, f"/api/v1/agents/{scene.agent}"
    # No call yet: nothing to hold.
    status, body = await scene.as_(scene.agent_token, "POST", f"{path}/hold")
    assert (status, body["error"], body["current_state"]) == (409, "illegal_state", "available"), body
    caller = await start_trunk_caller(live_stack, phones)
    connect = await scene.call(caller)
    agent_uid = connect.dest_uniqueid
    status, body = await scene.as_(scene.agent_token, "POST", f"{path}/unhold")
    assert (status, body["error"], body["current_state"]) == (409, "illegal_state", "on_call"), body
    status, body = await scene.as_(scene.other_sup_token, "POST", f"{path}/hold")
    assert (status, body["error"]) == (403, "forbidden"), body
    await asyncio.sleep(TALK_S)

    mark = ami.mark()
    status, body = await scene.as_(scene.agent_token, "POST", f"{path}/hold")
    held_at = time.time()
    assert status == 200 and body["state"] == "on_hold" and body["linkedid"] == connect.linkedid, body
    hold = await ami.wait_for("Hold", lambda e: e.uniqueid == agent_uid, since=mark, timeout=1)
    status, body = await scene.as_(scene.agent_token, "POST", f"{path}/hold")
    assert (status, body["error"], body["current_state"]) == (409, "illegal_state", "on_hold"), body
    await asyncio.sleep(HOLD_S)
    # The team's supervisor may take the caller off hold too.
    status, body = await scene.as_(scene.sup_token, "POST", f"{path}/unhold")
    released_at = time.time()
    assert status == 200 and body["state"] == "on_call", body
    unhold = await ami.wait_for("Unhold", lambda e: e.uniqueid == agent_uid, since=mark, timeout=1)
    await asyncio.sleep(TALK_S)
    await caller.hangup()
    end = await ami.wait_for("AgentComplete", lambda e: e.fields.get("MemberName") == agent, since=mark)

    # One queue call throughout: nobody left the queue's bridge before the hang-up.
    assert not ami.find("BridgeLeave", lambda e: e.timestamp < end.timestamp - 0.05, since=mark)
    assert end.fields.get("Reason") == "caller"
    # Audio: the caller heard the agent while talking, not while held (the hold is 3 s of an ~8 s call), and
    # again after the unhold.
    before, after = hold.timestamp - connect.timestamp, end.timestamp - unhold.timestamp
    heard = tone_seconds(caller.recordings()[-1], AGENT_TONE)
    assert heard > before + 1.0, (heard, before)  # some of it after the unhold
    assert heard < before + after + 0.6, (heard, before, after)  # none of the held time
    assert end.timestamp - connect.timestamp - heard > HOLD_S - 0.6
    agent_heard = tone_seconds(scene.agent_phone.recordings()[-1], CALLER_TONE)
    assert agent_heard < before + after + 0.6, (agent_heard, before, after)  # held both ways

    fact = await final_fact(scene, connect.linkedid, connect.timestamp)
    assert fact["outcome"] == "answered" and fact["agent"] == agent and not fact["transferred"], fact
    assert fact["hold_s"] == pytest.approx(unhold.timestamp - hold.timestamp, abs=0.01), fact
    assert abs(fact["hold_s"] - (released_at - held_at)) < 1.0, (fact, released_at - held_at)
    assert abs(fact["talk_s"] - (before + after)) < 0.5, fact
    status, body = await scene.as_(scene.agent_token, "GET", f"{path}/state")
    assert status == 200 and body["state"] not in ("on_call", "on_hold"), body


async def test_blind_transfer_rings_the_extension_and_marks_the_call_transferred(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], scene: Scene,
) -> None:
    agent, path = scene.agent, f"/api/v1/agents/{scene.agent}/transfer"
    ext = f"7{secrets.randbelow(10**4):04d}"
    phone = await api(live_stack, "POST", "/api/v1/phones", {"name": ext}, 201)
    try:
        desk = BaresipPhone(f"desk-{ext}", workdir=live_stack.runtime / "phones" / f"xfer-{ext}", sip_user=ext,
                            sip_password=phone["password"], registrar=live_stack.sip_registrar, tone_hz=DESK_TONE)
        phones.append(desk)
        await desk.start()
        await desk.wait_registered(10)
        status, body = await scene.as_(scene.agent_token, "POST", path, {"to": ext})
        assert (status, body["error"]) == (409, "illegal_state"), body  # no call yet
        caller = await start_trunk_caller(live_stack, phones)
        connect = await scene.call(caller)
        mark = ami.mark()
        for bad in ("1", "7" * 21, "12a4", "PJSIP/agent2", "100&PJSIP/agent2", "100\n", " 100", 100):
            status, body = await scene.as_(scene.agent_token, "POST", path, {"to": bad})
            assert status == 422, (bad, body)
        status, body = await scene.as_(scene.agent_token, "POST", path, {"to": ext, "context": "agents"})
        assert status == 422, body
        status, body = await scene.as_(scene.other_sup_token, "POST", path, {"to": ext})
        assert (status, body["error"]) == (403, "forbidden"), body
        assert not ami.find("BlindTransfer", since=mark) and not ami.find("DialBegin", since=mark)

        status, body = await scene.as_(scene.agent_token, "POST", path, {"to": ext})
        assert status == 200, body
        assert body == {"agent": agent, "to": ext, "kind": "extension", "linkedid": connect.linkedid}
        complete = await ami.wait_for("AgentComplete", lambda e: e.fields.get("MemberName") == agent, since=mark)
        assert complete.fields.get("Reason") == "transfer"
        await scene.agent_phone.wait_event("CALL_CLOSED", 10)  # the agent's leg is gone
        dial = await ami.wait_for("DialBegin", lambda e: e.fields.get("DialString") == ext, since=mark)
        assert dial.uniqueid == connect.uniqueid  # the caller's own channel dials the extension
        await desk.wait_event("CALL_ESTABLISHED", 15)
        await asyncio.sleep(TALK_S)
        await caller.hangup()
        await desk.wait_event("CALL_CLOSED", 10)
        assert tone_seconds(desk.recordings()[-1], CALLER_TONE) > 1.0  # the extension talked with the caller
        assert tone_seconds(caller.recordings()[-1], DESK_TONE) > 1.0

        fact = await final_fact(scene, connect.linkedid, connect.timestamp)
        assert fact["outcome"] == "answered" and fact["agent"] == agent and fact["transferred"] is True, fact
        assert abs(fact["talk_s"] - (complete.timestamp - connect.timestamp)) < 0.1, fact
        status, body = await scene.as_(scene.agent_token, "POST", path, {"to": ext})
        assert (status, body["error"]) == (409, "illegal_state"), body  # the call is no longer the agent's
    finally:
        await api(live_stack, "DELETE", f"/api/v1/phones/{ext}", None, 204)
