"""Live supervision on real calls, proven by audio: each party plays its own tone and what each phone received
is analysed (listen: nobody hears the supervisor; whisper: only the agent; barge: both; takeover: the caller
hears the supervisor and the agent's leg is gone). Refusals start nothing; every session is audited."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from sim.baresip import BaresipPhone
from tests.live.scene import (
    SUP_TONE,
    Scene,
    scene_fixture,  # noqa: F401  (the `scene` fixture, used by name)
    start_trunk_caller,
    tone_seconds,
)
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import acd  # noqa: F401  (a fixture, used by name)
from tests.live_stack import AGENT_TONE, CALLER_TONE, LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]

PHASE_S = 2.5  # audio flows for a known time in each mode


async def _start(scene: Scene, mode: str) -> dict[str, Any]:
    status, body = await scene.as_(scene.sup_token, "POST", "/api/v1/supervision",
                                   {"agent": scene.agent, "mode": mode})
    assert status == 201, body
    return await scene.session_active(body["id"])


async def _ended(scene: Scene, db: asyncpg.Connection, sid: str) -> asyncpg.Record:
    async def check() -> asyncpg.Record | None:
        row = await db.fetchrow("SELECT * FROM supervision_sessions WHERE id = $1::uuid", sid)
        return row if row is not None and row["status"] == "ended" else None
    return await eventually(check, timeout=10, what=f"session {sid} ended and stored")


async def _modes(db: asyncpg.Connection, sid: str) -> list[tuple[str, bool]]:
    rows = await db.fetch("SELECT mode, ended_at IS NOT NULL AS closed FROM supervision_modes "
                          "WHERE session_id = $1::uuid ORDER BY started_at", sid)
    return [(r["mode"], r["closed"]) for r in rows]


async def test_listen_is_silent_and_whisper_reaches_only_the_agent_after_a_mode_switch(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], scene: Scene, db: asyncpg.Connection,
) -> None:
    caller = await start_trunk_caller(live_stack, phones)
    await scene.call(caller)
    mark = ami.mark()
    session = await _start(scene, "listen")
    await ami.wait_for("ChanSpyStart", since=mark)
    await asyncio.sleep(PHASE_S)  # listen: audio flows, nobody may hear the supervisor
    status, body = await scene.as_(scene.sup_token, "PATCH", f"/api/v1/supervision/{session['id']}",
                                   {"mode": "whisper"})
    assert status == 200 and body["mode"] == "whisper", body
    await asyncio.sleep(PHASE_S)  # whisper: the agent hears the supervisor
    status, body = await scene.as_(scene.sup_token, "DELETE", f"/api/v1/supervision/{session['id']}")
    assert status == 200, body
    row = await _ended(scene, db, session["id"])
    await caller.hangup()

    sup_heard = scene.sup_phone.recordings()[-1]
    assert tone_seconds(sup_heard, CALLER_TONE) > 2.0 and tone_seconds(sup_heard, AGENT_TONE) > 2.0
    # The agent heard the supervisor for about the whisper phase only: listening leaked nothing.
    agent_heard = tone_seconds(scene.agent_phone.recordings()[-1], SUP_TONE)
    assert 1.0 < agent_heard < PHASE_S + 0.8, agent_heard
    assert tone_seconds(caller.recordings()[-1], SUP_TONE) < 0.2

    assert (row["supervisor"], row["agent"], row["phone"]) == (f"s-{scene.team[2:]}", scene.agent, "super1")
    assert row["linkedid"] == scene.connect.linkedid and row["started_at"] and row["ended_at"]
    assert await _modes(db, session["id"]) == [("listen", True), ("whisper", True)]


async def test_barge_is_heard_by_caller_and_agent(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], scene: Scene, db: asyncpg.Connection,
) -> None:
    caller = await start_trunk_caller(live_stack, phones)
    await scene.call(caller)
    mark = ami.mark()
    session = await _start(scene, "barge")
    await ami.wait_for("ChanSpyStart", since=mark)
    await asyncio.sleep(PHASE_S)
    await caller.hangup()
    await _ended(scene, db, session["id"])  # the agent's channel ended: ChanSpy (option E) ends the session
    assert tone_seconds(caller.recordings()[-1], SUP_TONE) > 1.0
    assert tone_seconds(scene.agent_phone.recordings()[-1], SUP_TONE) > 1.0
    assert await _modes(db, session["id"]) == [("barge", True)]


async def test_takeover_replaces_the_agent_and_the_call_stays_one_call(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], scene: Scene, db: asyncpg.Connection,
) -> None:
    caller = await start_trunk_caller(live_stack, phones)
    connect = await scene.call(caller)
    linkedid = connect.linkedid
    mark = ami.mark()
    session = await _start(scene, "listen")
    status, body = await scene.as_(scene.sup_token, "PATCH", f"/api/v1/supervision/{session['id']}",
                                   {"mode": "takeover"})
    assert status == 200 and body["mode"] == "takeover", body
    complete = await ami.wait_for("AgentComplete", lambda e: e.fields.get("MemberName") == scene.agent, since=mark)
    assert complete.fields.get("Reason") == "transfer"
    await ami.wait_for("Hangup", lambda e: e.uniqueid == connect.dest_uniqueid, since=mark)  # the agent's leg
    await scene.agent_phone.wait_event("CALL_CLOSED", 10)
    await ami.wait_for("BridgeEnter", lambda e: (e.channel or "").startswith("PJSIP/super1-"), since=mark)
    await asyncio.sleep(PHASE_S)  # the caller now talks with the supervisor
    await caller.hangup()
    # The supervisor's leg ends with the caller's (Bridge option x), under the caller's linkedid.
    sup_hangup = await ami.wait_for("Hangup", lambda e: (e.channel or "").startswith("PJSIP/super1-"), since=mark)
    await _ended(scene, db, session["id"])

    assert tone_seconds(caller.recordings()[-1], SUP_TONE) > 1.0  # the caller heard the supervisor
    assert tone_seconds(scene.sup_phone.recordings()[-1], CALLER_TONE) > 1.0
    # One call: the supervisor's leg took the caller's linkedid; the queue reported one answer, one completion.
    assert sup_hangup.linkedid == linkedid

    async def stored() -> list[str] | None:
        names = [r["name"] for r in await db.fetch(
            "SELECT name FROM call_events WHERE linkedid = $1 AND name IN ('AgentConnect', 'AgentComplete', "
            "'QueueCallerJoin') ORDER BY id", linkedid)]
        return names if len(names) >= 3 else None
    assert await eventually(stored, timeout=10, what="stored queue events") == [
        "QueueCallerJoin", "AgentConnect", "AgentComplete"]
    status, state = await scene.as_(scene.agent_token, "GET", f"/api/v1/agents/{scene.agent}/state")
    assert status == 200 and state["state"] not in ("on_call", "on_hold"), state
    assert await _modes(db, session["id"]) == [("listen", True), ("takeover", True)]
    # The recording of the call goes on after the takeover: one file, with the supervisor's voice in it.
    rows = await eventually(lambda: db.fetch("SELECT status, file FROM recordings WHERE linkedid = $1 "
                                             "AND status = 'complete'", linkedid), timeout=10, what="recording")
    assert len(rows) == 1
    folder = live_stack.runtime / "asterisk" / "spool" / "monitor"
    assert tone_seconds(folder / rows[0]["file"], SUP_TONE) > 1.0


async def test_refusals_start_nothing(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], scene: Scene, db: asyncpg.Connection,
) -> None:
    before = await db.fetchval("SELECT count(*) FROM supervision_sessions")
    mark = ami.mark()
    # Not on a call yet: 409.
    status, body = await scene.as_(scene.sup_token, "POST", "/api/v1/supervision", {"agent": scene.agent})
    assert (status, body["error"]) == (409, "not_on_call"), body
    caller = await start_trunk_caller(live_stack, phones)
    await scene.call(caller)
    # An agent may not spy, not even on themself.
    status, body = await scene.as_(scene.agent_token, "POST", "/api/v1/supervision", {"agent": scene.agent})
    assert (status, body["error"]) == (403, "forbidden"), body
    # A supervisor of another team may not either.
    status, body = await scene.as_(scene.other_sup_token, "POST", "/api/v1/supervision", {"agent": scene.agent})
    assert (status, body["error"]) == (403, "forbidden"), body
    # An agent's phone cannot be made to listen in.
    status, body = await scene.as_(scene.sup_token, "POST", "/api/v1/supervision",
                                   {"agent": scene.agent, "phone": "agent2"})
    assert (status, body["error"]) == (422, "invalid_field"), body
    await caller.hangup()
    assert await db.fetchval("SELECT count(*) FROM supervision_sessions") == before
    assert not ami.find("OriginateResponse", since=mark)
    assert not ami.find("Newchannel", lambda e: (e.channel or "").startswith("PJSIP/super1-"), since=mark)
