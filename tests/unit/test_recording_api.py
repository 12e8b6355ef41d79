"""Recording and supervision REST endpoints with the real handlers, auth middleware and services, over stand-ins for
the AMI and the database: who may see and do what, that invalid input is refused with 422 before anything runs,
and that ?token= works on the audio path (an <audio src>) and nowhere else."""

from __future__ import annotations

import uuid
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from acd.agent_service import AgentService
from acd.supervision import SupervisionService
from recording.service import RecordingService
from recording.store import Scope, SearchFilter
from reporting.live import LiveState
from telephony.ami.events import parse_event
from tests.unit.test_recording_service import FakeAmi as RecAmi
from tests.unit.test_recording_service import FakeStore
from tests.unit.test_supervision import FakeAmi as SupAmi
from tests.unit.test_supervision import FakePool, caller_of, put_on_call
from web.app import create_app

ADMIN = "a" * 40
TEAMS = {"ann": "blue", "cid": "blue", "bob": "red"}
USERS = {
    "tok-sup-blue": {"name": "sue", "role": "supervisor", "agent": None, "team": "blue", "phone": "sup1"},
    "tok-sup-all": {"name": "sam", "role": "supervisor", "agent": None, "team": None, "phone": "sup2"},
    "tok-sup-nophone": {"name": "sid", "role": "supervisor", "agent": None, "team": None, "phone": None},
    "tok-ann": {"name": "ann-user", "role": "agent", "agent": "ann", "team": None},
}


class Users:
    """The config store's token lookup, nothing else (no configuration route is called here)."""

    async def user_for_token(self, token: str) -> dict[str, Any] | None:
        return USERS.get(token)


class ApiStore(FakeStore):
    """FakeStore plus the read side, with the Scope rule applied the way the SQL does."""

    def __init__(self) -> None:
        super().__init__({"support": ("all", 30), "sales": ("on_demand", 60)})
        self.searches: list[tuple[SearchFilter, Scope]] = []
        self.stored: dict[uuid.UUID, dict[str, Any]] = {}

    def _visible(self, row: dict[str, Any], scope: Scope) -> bool:
        if scope.everything:
            return True
        if scope.team is not None:
            return TEAMS.get(row["agent"]) == scope.team
        return scope.agent is not None and row["agent"] == scope.agent

    async def search(self, f: SearchFilter, scope: Scope) -> list[Any]:
        self.searches.append((f, scope))
        return [r for r in self.stored.values() if self._visible(r, scope)]

    async def get(self, rec_id: uuid.UUID, scope: Scope) -> Any | None:
        row = self.stored.get(rec_id)
        return row if row is not None and self._visible(row, scope) else None


@dataclass
class Api:
    client: TestClient  # type: ignore[type-arg]
    store: ApiStore
    rec_ami: RecAmi
    sup_ami: SupAmi
    pool: FakePool
    recordings: RecordingService
    supervision: SupervisionService
    folder: Path

    async def call(self, method: str, path: str, token: str = ADMIN, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=body,
                                         headers={"Authorization": f"Bearer {token}", **(headers or {})})
        ctype = resp.headers.get("Content-Type", "")
        return resp.status, (await resp.json() if ctype.startswith("application/json") else await resp.read())

    def stored_recording(self, agent: str, status: str = "complete", frames: int = 4000) -> uuid.UUID:
        rec_id = uuid.uuid4()
        name = f"{rec_id.hex}.wav"
        if status != "recording":
            with wave.open(str(self.folder / name), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(8000)
                w.writeframes(b"\x03\x00" * frames)
        self.store.stored[rec_id] = {
            "id": rec_id, "linkedid": "1.1", "uniqueid": "1.1", "queue": "support", "agent": agent,
            "caller": "5551234", "trigger": "policy", "started_by": None, "file": name,
            "started_at": datetime(2025, 1, 31, 8, tzinfo=UTC), "ended_at": None, "duration_s": 0.5,
            "size_bytes": 44 + 2 * frames, "sha256": None, "status": status, "retention_days": 30,
            "disposition": None, "pauses": "[]"}
        return rec_id


@asynccontextmanager
async def api(tmp_path: Path, agents_play_own: bool = False) -> AsyncIterator[Api]:
    agents = AgentService(None, None, "n1", None)  # type: ignore[arg-type]
    agents.teams.update(TEAMS)
    for n, (agent, phone) in enumerate((("ann", "agent1"), ("bob", "agent2"), ("cid", "agent3")), start=1):
        agents.book.register(agent, f"PJSIP/{phone}", agent)
        agents.book.login(agent, 1_732_369_000.0)
        if agent != "cid":  # cid is logged in but not on a call
            put_on_call(agents.book, agent, phone, n)
    rec_ami, store = RecAmi(), ApiStore()
    recordings = RecordingService(rec_ami, None, "n1", tmp_path)  # type: ignore[arg-type]
    recordings.store = store  # type: ignore[assignment]
    await recordings.start()
    sup_ami, pool = SupAmi(), FakePool()
    pool.kinds = {"sup1": "supervisor", "sup2": "supervisor", "agent1": "agent"}
    supervision = SupervisionService(sup_ami, pool, "n1", agents.book,  # type: ignore[arg-type]
                                     is_paused=lambda _: False, channel_up=lambda _: True)
    app = create_app(admin_token=ADMIN, health=_healthy, membership=None,  # type: ignore[arg-type]
                     live_state=LiveState(), pool=None, config_store=Users(),  # type: ignore[arg-type]
                     agents=agents, recordings=recordings, supervision=supervision, agents_play_own=agents_play_own)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, store, rec_ami, sup_ami, pool, recordings, supervision, tmp_path)
    await supervision.stop()
    await recordings.stop()


async def _healthy() -> dict[str, Any]:
    return {"checks": {}}


# ------------------------------------------------------------------------------------------------ who sees what


def test_scope_where_is_one_clause_per_role() -> None:
    args: list[Any] = ["earlier-arg"]
    assert Scope(everything=True).where(args) == "TRUE" and args == ["earlier-arg"]
    assert Scope(team="blue").where(args) == "r.agent IN (SELECT name FROM agents WHERE team = $2)"
    assert args == ["earlier-arg", "blue"]
    args = []
    assert Scope(agent="ann").where(args) == "r.agent = $1" and args == ["ann"]
    args = []
    assert Scope().where(args) == "FALSE" and args == []  # an agent not allowed to play: nothing at all


@pytest.mark.asyncio
@pytest.mark.parametrize(("token", "play_own", "scope"), [
    (ADMIN, False, Scope(everything=True)),
    ("tok-sup-blue", False, Scope(team="blue")),
    ("tok-sup-all", False, Scope(everything=True)),
    ("tok-ann", True, Scope(agent="ann")),
    ("tok-ann", False, Scope()),
])
async def test_search_runs_with_the_caller_s_scope(tmp_path: Path, token: str, play_own: bool, scope: Scope) -> None:
    async with api(tmp_path, play_own) as a:
        mine, theirs = a.stored_recording("ann"), a.stored_recording("bob")
        status, rows = await a.call("GET", "/api/v1/recordings?queue=support&limit=5", token)
        assert status == 200
        (f, used), = a.store.searches
        assert used == scope and f.queue == "support" and f.limit == 5
        seen = {r["id"] for r in rows}
        assert seen == {str(rid) for rid, agent in ((mine, "ann"), (theirs, "bob"))
                        if ApiStore()._visible({"agent": agent}, scope)}
        for rid in (mine, theirs):  # metadata and audio follow the same rule
            expected = 200 if str(rid) in seen else 404
            assert (await a.call("GET", f"/api/v1/recordings/{rid}", token))[0] == expected
            assert (await a.call("GET", f"/api/v1/recordings/{rid}/audio", token))[0] == expected


@pytest.mark.asyncio
@pytest.mark.parametrize("query", [
    "from=yesterday", "from=2025-13-01T00:00:00Z", "to=noon", "caller=555-1234", "caller=%2B1%20555",
    "caller=12345678901234567890123", "queue=Sales", "limit=0", "limit=5000", "offset=-1", "colour=red"])
async def test_a_bad_search_is_422_and_never_reaches_the_store(tmp_path: Path, query: str) -> None:
    async with api(tmp_path) as a:
        status, err = await a.call("GET", f"/api/v1/recordings?{query}")
        assert status == 422 and err["error"] == "invalid" and err["problems"], err
        assert a.store.searches == []


@pytest.mark.asyncio
async def test_a_good_search_passes_the_filter_through(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        status, _ = await a.call("GET", "/api/v1/recordings?from=2025-01-31T08:00:00Z&to=2025-02-01T00:00:00%2B01:00"
                                        "&caller=%2B15551234&agent=ann&disposition=sale&offset=10")
        assert status == 200
        (f, _), = a.store.searches
        assert f.since == datetime(2025, 1, 31, 8, tzinfo=UTC) and f.until is not None and f.until.utcoffset()
        assert (f.caller, f.agent, f.disposition, f.offset, f.limit) == ("+15551234", "ann", "sale", 10, 100)


# ------------------------------------------------------------------------------------------------ erasure


@pytest.mark.asyncio
@pytest.mark.parametrize("body", [{"caller": "555-1234"}, {"caller": ""}, {"caller": 5551234}, {"caller": "+"},
                                  {"number": "5551234"}, {}])
async def test_erasure_with_a_bad_number_is_422(tmp_path: Path, body: dict[str, Any]) -> None:
    async with api(tmp_path) as a:
        status, err = await a.call("POST", "/api/v1/recordings/erasure", body=body)
        assert status == 422, err
        assert a.store.caller_lookups == []


@pytest.mark.asyncio
async def test_erasure_is_for_admins_only(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        for token in ("tok-sup-all", "tok-ann"):
            assert (await a.call("POST", "/api/v1/recordings/erasure", token, {"caller": "5551234"}))[0] == 403
        assert a.store.caller_lookups == []
        status, result = await a.call("POST", "/api/v1/recordings/erasure", body={"caller": "5551234"})
        assert status == 200 and result == {"erased": [], "still_recording": []}
        assert a.store.caller_lookups == ["5551234"]


# ------------------------------------------------------------------------------------------------ live control


@pytest.mark.asyncio
async def test_an_agent_cannot_control_another_agent_s_recording(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        for action in ("start", "stop", "pause", "resume"):
            status, err = await a.call("POST", "/api/v1/agents/bob/recording", "tok-ann", {"action": action})
            assert status == 403 and err["error"] == "forbidden"
        assert (await a.call("GET", "/api/v1/agents/bob/recording", "tok-ann"))[0] == 403
        # a supervisor of another team neither
        assert (await a.call("POST", "/api/v1/agents/bob/recording", "tok-sup-blue", {"action": "start"}))[0] == 403
        assert a.rec_ami.actions == [] and a.recordings.active == {}


@pytest.mark.asyncio
async def test_an_agent_pauses_their_own_policy_recording_but_may_not_stop_it(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        a.recordings.on_event(parse_event({"Event": "MixMonitorStart", **caller_of(1)}, 1_732_370_000.0))
        status, body = await a.call("GET", "/api/v1/agents/ann/recording", "tok-ann")
        assert status == 200 and body["on_call"] and body["recording"]["trigger"] == "policy"
        status, err = await a.call("POST", "/api/v1/agents/ann/recording", "tok-ann", {"action": "stop"})
        assert status == 403 and a.rec_ami.actions == []
        status, body = await a.call("POST", "/api/v1/agents/ann/recording", "tok-ann", {"action": "pause"})
        assert status == 200 and body["recording"]["paused"] is True
        status, err = await a.call("POST", "/api/v1/agents/ann/recording", "tok-ann", {"action": "pause"})
        assert status == 409 and err["error"] == "pause_state"
        assert [n for n, _ in a.rec_ami.actions] == ["MixMonitorMute"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("agent", "body", "status", "code"), [
    ("cid", {"action": "start"}, 409, "not_on_call"),
    ("ann", {"action": "resume"}, 409, "not_recording"),
    ("ann", {"action": "record"}, 422, "invalid"),
    ("ann", {"action": "start", "extra": 1}, 422, "invalid"),
])
async def test_control_errors(tmp_path: Path, agent: str, body: dict[str, Any], status: int, code: str) -> None:
    async with api(tmp_path) as a:
        got, err = await a.call("POST", f"/api/v1/agents/{agent}/recording", body=body)
        assert (got, err["error"]) == (status, code)
        assert a.rec_ami.actions == []


# ------------------------------------------------------------------------------------------------ supervision


@pytest.mark.asyncio
async def test_supervision_is_not_for_agents(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        for method, path, body in (("POST", "/api/v1/supervision", {"agent": "ann", "phone": "sup1"}),
                                   ("GET", "/api/v1/supervision", None), ("GET", "/api/v1/supervision/history", None)):
            status, err = await a.call(method, path, "tok-ann", body)
            assert status == 403 and err["error"] == "forbidden"
        assert a.sup_ami.actions == [] and a.supervision.sessions == {}


@pytest.mark.asyncio
async def test_a_supervisor_cannot_supervise_another_team_s_agent(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        status, err = await a.call("POST", "/api/v1/supervision", "tok-sup-blue", {"agent": "bob"})
        assert status == 403 and err["error"] == "forbidden"
        assert a.sup_ami.actions == [] and a.supervision.sessions == {} and a.pool.statements == []


@pytest.mark.asyncio
@pytest.mark.parametrize(("token", "body", "status", "code"), [
    ("tok-sup-blue", {"agent": "nobody"}, 404, "not_found"),
    ("tok-sup-nophone", {"agent": "ann"}, 422, "invalid_field"),
    ("tok-sup-blue", {"agent": "ann", "phone": "agent1"}, 422, "invalid_field"),  # an agent's phone never listens
    ("tok-sup-blue", {"agent": "ann", "phone": "nosuch"}, 422, "invalid_field"),
    ("tok-sup-blue", {"agent": "ann", "mode": "shout"}, 422, "invalid"),
    ("tok-sup-blue", {"agent": "cid"}, 409, "not_on_call"),
])
async def test_supervision_refusals_start_nothing(tmp_path: Path, token: str, body: dict[str, Any], status: int,
                                                  code: str) -> None:
    async with api(tmp_path) as a:
        got, err = await a.call("POST", "/api/v1/supervision", token, body)
        assert (got, err["error"]) == (status, code), err
        assert a.sup_ami.actions == [] and a.supervision.sessions == {}


@pytest.mark.asyncio
async def test_session_start_switch_and_end_over_the_api(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        status, s = await a.call("POST", "/api/v1/supervision", "tok-sup-blue", {"agent": "ann"})
        assert status == 201 and (s["phone"], s["mode"], s["status"]) == ("sup1", "listen", "ringing")
        assert a.sup_ami.named("Originate")[0]["Channel"] == "PJSIP/sup1"  # the phone stored with the user
        sid = s["id"]
        status, err = await a.call("PATCH", f"/api/v1/supervision/{sid}", "tok-sup-blue", {"mode": "shout"})
        assert status == 422 and err["problems"][0]["field"] == "mode"
        status, err = await a.call("PATCH", f"/api/v1/supervision/{sid}", "tok-sup-blue", {"mode": "whisper"})
        assert status == 409 and err["error"] == "session_state"  # still ringing
        assert a.sup_ami.named("Redirect") == []
        for token, expected in (("tok-sup-blue", 200), ("tok-sup-all", 200), (ADMIN, 200)):
            assert (await a.call("GET", f"/api/v1/supervision/{sid}", token))[0] == expected
        assert (await a.call("GET", f"/api/v1/supervision/{uuid.uuid4()}", "tok-sup-blue"))[0] == 404
        assert (await a.call("GET", "/api/v1/supervision/not-a-uuid", "tok-sup-blue"))[0] == 404
        status, ended = await a.call("DELETE", f"/api/v1/supervision/{sid}", "tok-sup-blue")
        assert status == 200 and ended["status"] == "ended"


# ------------------------------------------------------------------------------------------------ ?token=


@pytest.mark.asyncio
async def test_query_token_works_on_the_audio_path_only(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        rid = a.stored_recording("ann")
        raw = (tmp_path / f"{rid.hex}.wav").read_bytes()
        get: Callable[..., Any] = a.client.get
        resp = await get(f"/api/v1/recordings/{rid}/audio?token=tok-sup-blue")
        assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
        assert resp.headers["Content-Disposition"].startswith("inline") and await resp.read() == raw
        resp = await get(f"/api/v1/recordings/{rid}/audio?token=tok-sup-blue&download=1",
                         headers={"Range": "bytes=0-99"})
        assert resp.status == 206 and await resp.read() == raw[:100]
        assert resp.headers["Content-Disposition"].startswith("attachment")
        assert [(x[0], x[1]) for x in a.store.audits] == [("sue", "play"), ("sue", "play")]
        assert (await get(f"/api/v1/recordings/{rid}/audio?token=wrong")).status == 401
        assert (await get(f"/api/v1/recordings/{rid}/audio")).status == 401
        for path in (f"/api/v1/recordings/{rid}", "/api/v1/recordings", "/api/v1/recordings/audit",
                     "/api/v1/supervision", "/api/v1/agents/ann/recording"):
            assert (await get(f"{path}?token={ADMIN}")).status == 401, path
        assert (await a.client.post(f"/api/v1/recordings/purge?token={ADMIN}")).status == 401
        assert len(a.store.audits) == 2


@pytest.mark.asyncio
async def test_audio_of_a_call_still_recording_or_a_missing_file(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        live = a.stored_recording("ann", status="recording")
        assert (await a.call("GET", f"/api/v1/recordings/{live}/audio"))[0] == 409
        gone = a.stored_recording("ann")
        (tmp_path / f"{gone.hex}.wav").unlink()
        assert (await a.call("GET", f"/api/v1/recordings/{gone}/audio"))[0] == 410
        assert a.store.audits == []  # nothing was played
