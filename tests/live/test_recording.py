"""Call recording on real calls: both parties in the file, a PCI pause that is silent (and keeps supervisors
out), a metadata row that matches the file, playback with Range and authorization, on-demand recording,
retention purge and erasure by caller number that remove exactly their files and rows, with an audit trail."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sim.baresip import BaresipPhone
from sim.tones import read_wav, rms
from tests.live.scene import (
    Scene,
    drop_scene,
    make_scene,
    scene_fixture,  # noqa: F401  (the `scene` fixture, used by name)
    start_trunk_caller,
    tone_seconds,
)
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import acd, api  # noqa: F401  (acd: a fixture, used by name)
from tests.live_stack import AGENT_TONE, CALLER_TONE, LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]

TALK_S = 2.0


def monitor(live: LiveStack) -> Path:
    return live.runtime / "asterisk" / "spool" / "monitor"


async def finished(db: asyncpg.Connection, linkedid: str, n: int = 1) -> list[asyncpg.Record]:
    async def check() -> list[asyncpg.Record] | None:
        rows = await db.fetch("SELECT * FROM recordings WHERE linkedid = $1 ORDER BY started_at", linkedid)
        return rows if len(rows) == n and all(r["status"] != "recording" for r in rows) else None
    return await eventually(check, timeout=10, what=f"finished recording(s) of {linkedid}")


def http_get(live: LiveStack, path: str, token: str, headers: dict[str, str] | None = None,
             ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://{live.cfg.http.host}:{live.cfg.http.port}{path}",
                                 headers={"Authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def has_audio(path: Path) -> bool:
    """Audio written to a recording's file (MixMonitor creates it with the first frames)."""
    def size() -> int:
        return path.stat().st_size if path.is_file() else 0
    return await asyncio.to_thread(size) > 44


def window_rms(path: Path, start_s: float, end_s: float) -> float:
    samples, rate = read_wav(path)
    return rms(samples[int(start_s * rate):int(end_s * rate)])


async def test_policy_recording_has_both_parties_a_silent_pci_pause_and_matching_metadata(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], scene: Scene, db: asyncpg.Connection,
) -> None:
    caller = await start_trunk_caller(live_stack, phones)
    connect = await scene.call(caller)
    linkedid = connect.linkedid
    rec = await scene.recording_now()
    assert rec["trigger"] == "policy" and not rec["paused"], rec
    await asyncio.sleep(TALK_S)
    mark = ami.mark()
    status, body = await scene.as_(scene.agent_token, "POST", f"/api/v1/agents/{scene.agent}/recording",
                                   {"action": "pause"})
    assert status == 200 and body["recording"]["paused"], body
    await ami.wait_for("MixMonitorMute", lambda e: e.uniqueid == linkedid, since=mark)
    # While paused for card data, a supervisor of the agent's team is refused, and nothing is started.
    status, body = await scene.as_(scene.sup_token, "POST", "/api/v1/supervision", {"agent": scene.agent})
    assert (status, body["error"]) == (409, "recording_paused"), body
    status, body = await scene.as_(scene.agent_token, "POST", f"/api/v1/agents/{scene.agent}/recording",
                                   {"action": "pause"})
    assert (status, body["error"]) == (409, "pause_state"), body
    await asyncio.sleep(TALK_S)
    status, body = await scene.as_(scene.agent_token, "POST", f"/api/v1/agents/{scene.agent}/recording",
                                   {"action": "resume"})
    assert status == 200 and not body["recording"]["paused"], body
    await asyncio.sleep(TALK_S)
    await caller.hangup()
    hangup = await ami.wait_for("Hangup", lambda e: e.uniqueid == linkedid, since=mark)
    assert not ami.find("OriginateResponse", since=mark)

    (row,) = await finished(db, linkedid)
    path = monitor(live_stack) / row["file"]
    data = path.read_bytes()
    assert row["status"] == "complete" and row["trigger"] == "policy"
    assert (row["queue"], row["agent"], row["uniqueid"]) == (scene.queue, scene.agent, linkedid)
    assert row["size_bytes"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()
    # Duration: bridged audio from the agent's answer to the hang-up (16-bit 8 kHz).
    talked = hangup.timestamp - connect.timestamp
    assert abs(row["duration_s"] - talked) < 0.6, (row["duration_s"], talked)
    assert abs(row["duration_s"] - (len(data) - 44) / 16000) < 0.01

    # Both parties are in the file; the paused stretch is silent.
    assert tone_seconds(path, CALLER_TONE) > 3.0 and tone_seconds(path, AGENT_TONE) > 3.0
    (pause,) = await db.fetch("SELECT * FROM recording_pauses WHERE recording_id = $1", row["id"])
    assert pause["paused_by"] == pause["resumed_by"] == f"a-{scene.team[2:]}"
    start = (pause["paused_at"] - row["started_at"]).total_seconds()
    end = (pause["resumed_at"] - row["started_at"]).total_seconds()
    assert end - start > TALK_S
    assert window_rms(path, start + 0.3, end - 0.3) < 0.001
    assert window_rms(path, 0.3, start - 0.3) > 0.1 and window_rms(path, end + 0.3, end + TALK_S - 0.3) > 0.1
    actions = [r["action"] for r in await db.fetch(
        "SELECT action FROM recording_audit WHERE recording_id = $1 ORDER BY id", row["id"])]
    assert actions == ["pause", "resume"]

    # Playback: the team's supervisor gets the file (whole, and a Range), the other team's does not; each
    # playback is audited. The agent may not (agents_play_own is off by default).
    rid = str(row["id"])
    status, headers, whole = await asyncio.to_thread(http_get, live_stack, f"/api/v1/recordings/{rid}/audio",
                                                     scene.sup_token)
    assert status == 200 and whole == data and headers["Content-Type"] == "audio/wav"
    status, headers, part = await asyncio.to_thread(http_get, live_stack, f"/api/v1/recordings/{rid}/audio",
                                                    scene.sup_token, {"Range": "bytes=44-1043"})
    assert status == 206 and part == data[44:1044], (status, len(part))
    assert headers["Content-Range"] == f"bytes 44-1043/{len(data)}"
    for token in (scene.other_sup_token, scene.agent_token):
        status, _, _ = await asyncio.to_thread(http_get, live_stack, f"/api/v1/recordings/{rid}/audio", token)
        assert status == 404
    plays = await db.fetchval("SELECT count(*) FROM recording_audit WHERE recording_id = $1 AND action = 'play'",
                              row["id"])
    assert plays == 2
    # Search: by agent and queue for the supervisor; the other team's supervisor finds nothing.
    status, found = await scene.as_(scene.sup_token, "GET",
                                    f"/api/v1/recordings?agent={scene.agent}&queue={scene.queue}")
    assert status == 200 and [r["id"] for r in found] == [rid]
    assert found[0]["pauses"][0]["paused_by"] == f"a-{scene.team[2:]}"
    status, found = await scene.as_(scene.other_sup_token, "GET", f"/api/v1/recordings?agent={scene.agent}")
    assert status == 200 and found == []


async def test_on_demand_recording_starts_and_stops_over_the_api_and_policy_none_refuses(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    scene = await make_scene(live_stack, ami, phones, acd, recording="on_demand")
    try:
        caller = await start_trunk_caller(live_stack, phones)
        connect = await scene.call(caller)
        status, body = await scene.as_(scene.agent_token, "GET", f"/api/v1/agents/{scene.agent}/recording")
        assert status == 200 and body == {"agent": scene.agent, "on_call": True, "recording": None}, body
        status, body = await scene.as_(scene.agent_token, "POST", f"/api/v1/agents/{scene.agent}/recording",
                                       {"action": "start"})
        assert status == 200 and body["recording"]["trigger"] == "on_demand", body
        await asyncio.sleep(TALK_S)
        status, body = await scene.as_(scene.agent_token, "POST", f"/api/v1/agents/{scene.agent}/recording",
                                       {"action": "stop"})
        assert status == 200, body
        (row,) = await finished(db, connect.linkedid)
        assert (row["trigger"], row["started_by"], row["status"]) == ("on_demand", f"a-{scene.team[2:]}", "complete")
        path = monitor(live_stack) / row["file"]
        assert tone_seconds(path, CALLER_TONE) > 1.0 and tone_seconds(path, AGENT_TONE) > 1.0
        assert row["duration_s"] < TALK_S + 1.0  # stopped, not recorded to the end of the call
        # The queue switched to 'none' while the call is up: no recording may be started any more.
        await api(live_stack, "PUT", f"/api/v1/queues/{scene.queue}", {"recording": "none"})
        status, body = await scene.as_(scene.agent_token, "POST", f"/api/v1/agents/{scene.agent}/recording",
                                       {"action": "start"})
        assert (status, body["error"]) == (409, "recording_disabled"), body
        await caller.hangup()
        assert [r["action"] for r in await db.fetch(
            "SELECT action FROM recording_audit WHERE recording_id = $1 ORDER BY id", row["id"])] == ["start", "stop"]
    finally:
        await drop_scene(live_stack, scene)


async def test_erasure_and_retention_purge_remove_exactly_their_recordings(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], scene: Scene, db: asyncpg.Connection,
) -> None:
    numbers = ("+4930111222", "+4930333444")
    rows = {}
    for number in numbers:
        caller = await start_trunk_caller(live_stack, phones, number)
        connect = await scene.call(caller)
        await scene.recording_now()
        if number == numbers[0]:
            # A recording the queue's policy made: the agent may not stop it, their supervisor may.
            path = f"/api/v1/agents/{scene.agent}/recording"
            status, body = await scene.as_(scene.agent_token, "POST", path, {"action": "stop"})
            assert (status, body["error"]) == (403, "forbidden"), body
            # Stopped once audio is in the file (as a supervisor would, seconds into the call): its row is
            # finished from the file Asterisk closed, with that audio's length.
            name = await db.fetchval("SELECT file FROM recordings WHERE linkedid = $1", connect.linkedid)
            await eventually(functools.partial(has_audio, monitor(live_stack) / name),
                             what="audio in the recording's file")
            status, body = await scene.as_(scene.sup_token, "POST", path, {"action": "stop"})
            assert status == 200, body
            (stopped,) = await finished(db, connect.linkedid)
            assert stopped["status"] == "complete" and stopped["duration_s"] > 0, dict(stopped)
        await caller.hangup()
        (rows[number],) = await finished(db, connect.linkedid)
        assert rows[number]["caller"] == number and (monitor(live_stack) / rows[number]["file"]).is_file()
    others = {r["id"] for r in await db.fetch("SELECT id FROM recordings WHERE caller <> ALL($1::text[])",
                                             list(numbers))}

    # Erasure of the first number: its recording (file and row) goes, nothing else; audited.
    erased_row = rows[numbers[0]]
    status, body = await asyncio.to_thread(live_stack.api, "POST", "/api/v1/recordings/erasure",
                                           {"caller": numbers[0]})
    assert status == 200 and body == {"erased": [str(erased_row["id"])], "still_recording": []}, body
    assert not (monitor(live_stack) / erased_row["file"]).exists()
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE caller = $1", numbers[0]) == 0
    audit = await db.fetchrow("SELECT * FROM recording_audit WHERE recording_id = $1 AND action = 'erase'",
                              erased_row["id"])
    assert audit is not None and audit["actor"] == "admin" and audit["linkedid"] == erased_row["linkedid"]
    status, body = await asyncio.to_thread(live_stack.api, "POST", "/api/v1/recordings/erasure",
                                           {"caller": "../etc/passwd"})
    assert status == 422, body

    # Retention: the second call's recording is made older than the queue keeps recordings; purge takes it only.
    kept = rows[numbers[1]]
    await db.execute("UPDATE recordings SET started_at = now() - interval '91 days' WHERE id = $1", kept["id"])
    status, body = await asyncio.to_thread(live_stack.api, "POST", "/api/v1/recordings/purge", {})
    assert status == 200 and body["purged"] >= 1, body
    assert not (monitor(live_stack) / kept["file"]).exists()
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE id = $1", kept["id"]) == 0
    assert await db.fetchval("SELECT count(*) FROM recording_audit WHERE recording_id = $1 AND action = 'purge'",
                             kept["id"]) == 1
    left = {r["id"] for r in await db.fetch("SELECT id FROM recordings")}
    assert others <= left  # the other tests' recordings are all still there
    for r in await db.fetch("SELECT file FROM recordings WHERE status = 'complete'"):
        assert (monitor(live_stack) / r["file"]).is_file()


async def test_a_service_restart_mid_call_loses_no_recording(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], scene: Scene, db: asyncpg.Connection,
) -> None:
    caller = await start_trunk_caller(live_stack, phones)
    connect = await scene.call(caller)
    await scene.recording_now()
    # Killed (no clean shutdown) while the call is up: app_queue keeps recording; the service comes back,
    # follows the recording again, and finishes it when the call ends.
    await asyncio.to_thread(live_stack.stack.service.kill)
    await asyncio.to_thread(live_stack.stack.service.start)
    await asyncio.to_thread(live_stack.stack.wait_healthy, 30)
    rec = await scene.recording_now()
    assert rec["trigger"] == "policy"
    await asyncio.sleep(TALK_S)
    mark = ami.mark()
    await caller.hangup()
    hangup = await ami.wait_for("Hangup", lambda e: e.uniqueid == connect.linkedid, since=mark)
    (row,) = await finished(db, connect.linkedid)
    assert row["status"] == "complete" and str(row["id"]) == rec["id"]
    assert abs(row["duration_s"] - (hangup.timestamp - connect.timestamp)) < 0.6
