"""RecordingService without a PBX or a database: the AMI actions it sends (recorded by a stand-in), the rows it
writes (an in-memory store), and the files it measures (a tmp folder), for policy recordings driven by events,
on-demand start/stop, PCI pause/resume with the automatic resume, and erasure."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import uuid
import wave
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from recording import files, service
from recording.service import (
    AlreadyRecording,
    CallRef,
    NotRecording,
    PauseState,
    PbxRefused,
    RecordingDisabled,
    RecordingService,
)
from telephony.ami import AmiActionError
from telephony.ami.events import AmiEvent, parse_event

pytestmark = pytest.mark.asyncio

T0 = 1_732_370_000.0


class FakeAmi:
    """Answers every action with success and remembers it; `refuse` names actions to answer with an error.

    Originate (the on-demand recorder, a Local channel) is answered like Asterisk does: the reply at once, the
    OriginateResponse event (to `on_event`, the service's consumer) `answer_delay` seconds later, with
    `originate_answer` as its Response."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, dict[str, Any]]] = []
        self.refuse: set[str] = set()
        self.on_event: Callable[[AmiEvent], None] | None = None
        self.originate_answer = "Success"
        self.answer_delay: float | None = 0.01
        self._n = 0

    async def action(self, name: str, fields: Mapping[str, Any] | None = None, *, as_list: bool,
                     timeout: float | None = None) -> Any:
        self.actions.append((name, dict(fields or {})))
        if name in self.refuse:
            raise AmiActionError(name, {"Response": "Error", "Message": "refused"})
        return {"Response": "Success"}

    async def originate(self, fields: Mapping[str, Any], *, timeout: float | None = None) -> Any:
        await self.action("Originate", fields, as_list=False)
        self._n += 1
        action_id = str(fields.get("ActionID") or f"orig-{self._n}")  # like panoramisk: a given ActionID is kept
        answer = ev("OriginateResponse", T0 + 1, ActionID=action_id, Response=self.originate_answer, Reason="4",
                    Channel=f"Local/s@record-on-demand-0000000{self._n};1", Uniqueid=f"loc.{self._n}")
        if self.on_event is not None:
            if self.answer_delay is None:  # the event is handled before the reply reaches the caller
                self.on_event(answer)
            else:
                asyncio.get_running_loop().call_later(self.answer_delay, self.on_event, answer)
        return {"Response": "Success", "ActionID": action_id, "Message": "Originate successfully queued"}

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for n, f in self.actions if n == name]


class FakePool:
    """The one statement the service sends past the store (filling in queue/agent/caller after AgentConnect)."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store

    async def execute(self, sql: str, *args: Any) -> str:
        assert sql.startswith("UPDATE recordings SET queue"), sql
        rec_id, queue, agent, caller, retention = args
        self.store.rows[rec_id].update(queue=queue, agent=agent, caller=caller, retention_days=retention)
        return "UPDATE 1"


class FakeStore:
    """RecordingStore's interface over dicts; `resumed` fires on every resume row (the auto-resume test awaits it)."""

    def __init__(self, policies: dict[str, tuple[str, int]] | None = None) -> None:
        self.node = "n1"
        self.pool = FakePool(self)
        self._policies = policies or {}
        self.rows: dict[uuid.UUID, dict[str, Any]] = {}
        self.pauses: list[dict[str, Any]] = []
        self.audits: list[tuple[str, str, uuid.UUID | None, dict[str, Any]]] = []
        self.resumed = asyncio.Event()
        self.caller_lookups: list[str] = []

    async def policies(self) -> dict[str, tuple[str, int]]:
        return dict(self._policies)

    async def insert(self, rec_id: uuid.UUID, **row: Any) -> None:
        self.rows[rec_id] = {"id": rec_id, "status": "recording", **row}

    async def finish(self, rec_id: uuid.UUID, **row: Any) -> None:
        self.rows[rec_id].update(row)

    async def pause(self, rec_id: uuid.UUID, at: datetime, by: str) -> None:
        self.pauses.append({"id": rec_id, "paused_at": at, "paused_by": by, "resumed_at": None, "resumed_by": None})

    async def resume(self, rec_id: uuid.UUID, at: datetime, by: str) -> None:
        for p in self.pauses:
            if p["id"] == rec_id and p["resumed_at"] is None:
                p.update(resumed_at=at, resumed_by=by)
        self.resumed.set()

    async def audit(self, actor: str, action: str, rec_id: uuid.UUID | None = None, linkedid: str | None = None,
                    **detail: Any) -> None:
        self.audits.append((actor, action, rec_id, detail))

    async def expired(self, limit: int = 500) -> list[Any]:
        return []

    async def of_caller(self, caller: str) -> list[Any]:
        self.caller_lookups.append(caller)
        return [r for r in self.rows.values() if r["caller"] == caller]

    async def delete(self, rec_id: uuid.UUID) -> bool:
        return self.rows.pop(rec_id, None) is not None


def ev(name: str, at: float, **fields: str) -> AmiEvent:
    return parse_event({"Event": name, "Timestamp": f"{at:.6f}", **fields}, at)


CALLER = {"Channel": "PJSIP/carrier-00000001", "Uniqueid": "1732370000.1", "Linkedid": "1732370000.1",
          "CallerIDNum": "+15551234"}
CONNECT = {**CALLER, "Queue": "support", "MemberName": "ann", "Interface": "PJSIP/agent1",
           "DestChannel": "PJSIP/agent1-00000002", "DestUniqueid": "1732370000.2", "HoldTime": "3", "RingTime": "2"}


def write_wav(path: Path, frames: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x02\x00" * frames)


Setup = tuple[RecordingService, FakeAmi, FakeStore, list[str]]


async def make(tmp_path: Path, **kw: Any) -> Setup:
    ami = FakeAmi()
    store = FakeStore({"support": ("all", 30), "sales": ("on_demand", 60), "quiet": ("none", 10)})
    hooked: list[str] = []

    async def hook(linkedid: str) -> None:
        hooked.append(linkedid)

    svc = RecordingService(ami, None, "n1", tmp_path, on_pci_pause=hook, clock=lambda: T0 + 100,  # type: ignore[arg-type]
                           **kw)
    svc.store = store  # type: ignore[assignment]
    ami.on_event = svc.on_event
    await svc.start()
    return svc, ami, store, hooked


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Setup]:
    svc, ami, store, hooked = await make(tmp_path)
    yield svc, ami, store, hooked
    await svc.stop()


async def settled(svc: RecordingService) -> None:
    """Until the bookkeeping queued so far was written and every finishing task (measuring the file) ran."""
    done = asyncio.get_running_loop().create_future()

    async def mark() -> None:
        done.set_result(None)

    svc._submit(mark)
    await asyncio.wait_for(done, 2)
    await asyncio.wait_for(asyncio.gather(*list(svc._spawned)), 2)


def on_demand_call(queue: str = "sales", uid: str = "1732370000.5") -> CallRef:
    return CallRef(linkedid=uid, uniqueid=uid, channel="PJSIP/carrier-00000005", queue=queue, agent="bob")


# ------------------------------------------------------------------------------------------------ policy


async def test_mixmonitorstart_then_agentconnect_make_one_policy_recording(rig: Setup, tmp_path: Path) -> None:
    svc, ami, store, _ = rig
    svc.on_event(ev("MixMonitorStart", T0, **CALLER))
    svc.on_event(ev("MixMonitorStart", T0, **CALLER))  # a repeat (reconnect replay) changes nothing
    svc.on_event(ev("AgentConnect", T0 + 0.01, **CONNECT))
    await settled(svc)
    assert len(store.rows) == 1
    (row,) = store.rows.values()
    assert row["trigger"] == "policy" and row["started_by"] is None and row["status"] == "recording"
    assert (row["queue"], row["agent"], row["caller"], row["retention_days"]) == ("support", "ann", "+15551234", 30)
    assert row["linkedid"] == row["uniqueid"] == "1732370000.1"
    assert row["file"] == "1732370000.1.wav"  # what app_queue names it: the caller's uniqueid
    assert ami.actions == []  # app_queue started it, not us
    assert svc.for_channel("1732370000.1") is not None


async def test_hangup_finishes_it_with_the_file_measured(rig: Setup, tmp_path: Path) -> None:
    svc, _, store, _ = rig
    svc.on_event(ev("MixMonitorStart", T0, **CALLER))
    svc.on_event(ev("AgentConnect", T0, **CONNECT))
    write_wav(tmp_path / "1732370000.1.wav", 16000)
    svc.on_event(ev("Hangup", T0 + 60, **CALLER, Cause="16"))
    await settled(svc)
    (row,) = store.rows.values()
    raw = (tmp_path / "1732370000.1.wav").read_bytes()
    assert row["status"] == "complete" and row["ended_at"].timestamp() == T0 + 60
    assert row["size_bytes"] == len(raw) and row["duration_s"] == pytest.approx(2.0)
    assert row["sha256"] == hashlib.sha256(raw).hexdigest()
    assert svc.for_channel("1732370000.1") is None


async def test_hangup_without_a_file_marks_it_missing(rig: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    svc, _, store, _ = rig
    monkeypatch.setattr(files, "wait_closed", functools.partial(files.wait_closed, timeout=0.05, interval=0.01))
    svc.on_event(ev("MixMonitorStart", T0, **CALLER))
    svc.on_event(ev("Hangup", T0 + 5, **CALLER))
    await settled(svc)
    (row,) = store.rows.values()
    assert row["status"] == "missing" and row["size_bytes"] is None and row["sha256"] is None


async def test_hangup_of_another_channel_leaves_the_recording_running(rig: Setup) -> None:
    svc, _, store, _ = rig
    svc.on_event(ev("MixMonitorStart", T0, **CALLER))
    svc.on_event(ev("Hangup", T0 + 5, Channel="PJSIP/agent1-00000002", Uniqueid="1732370000.2",
                    Linkedid="1732370000.1"))
    await settled(svc)
    assert [r["status"] for r in store.rows.values()] == ["recording"]


# ------------------------------------------------------------------------------------------------ on demand


async def test_on_demand_start_and_stop(rig: Setup) -> None:
    svc, ami, store, _ = rig
    call = on_demand_call()
    rec = await svc.start_on_demand(call, "5550000", "sup1")
    # A Local channel records itself while it spies on the caller (no AMI MixMonitor: it needs `system`).
    (orig,) = ami.named("Originate")
    assert orig["Channel"] == "Local/s@record-on-demand/n" and orig["Application"] == "Wait"
    assert orig["Variable"] == [f"REC_TARGET={call.channel}", f"REC_FILE={rec.file}"]
    assert rec.file.startswith("1732370000.5-") and files.safe_name(rec.file)
    assert rec.recorder == rec.channel == "Local/s@record-on-demand-00000001;2"  # the half running MixMonitor
    row = store.rows[rec.id]
    assert (row["trigger"], row["started_by"], row["queue"], row["caller"], row["retention_days"]) == (
        "on_demand", "sup1", "sales", "5550000", 60)
    svc.on_event(ev("MixMonitorStart", T0, Channel=rec.recorder, Uniqueid="loc.2", Linkedid="loc.1",
                    Context="record-on-demand"))
    await settled(svc)
    assert len(store.rows) == 1  # the recorder's own MixMonitorStart is not taken for app_queue's
    await svc.pause(call.uniqueid, "sup1")
    assert ami.named("MixMonitorMute")[0]["Channel"] == rec.recorder  # muted where it records
    await svc.stop_recording(call.uniqueid, "sup1")
    assert ami.named("Hangup") == [{"Channel": rec.recorder}]
    assert svc.for_channel(call.uniqueid) is None
    assert [a[:2] for a in store.audits] == [("sup1", "start"), ("sup1", "pause"), ("sup1", "stop")]


async def test_the_recorder_hanging_up_finishes_an_on_demand_recording(rig: Setup, tmp_path: Path) -> None:
    svc, _, store, _ = rig
    call = on_demand_call()
    rec = await svc.start_on_demand(call, "5550000", "sup1")
    write_wav(tmp_path / rec.file, 800)
    svc.on_event(ev("Hangup", T0 + 9, Channel="Local/s@record-on-demand-00000001;1", Uniqueid="loc.1"))
    await settled(svc)
    assert svc.for_channel(call.uniqueid) is not None  # the ;1 half is not the one recording
    svc.on_event(ev("Hangup", T0 + 10, Channel=rec.recorder or "", Uniqueid="loc.2"))
    await settled(svc)
    assert svc.for_channel(call.uniqueid) is None and store.rows[rec.id]["status"] == "complete"


async def test_a_policy_recording_is_stopped_on_the_caller_s_channel(rig: Setup) -> None:
    svc, ami, _, _ = rig
    svc.on_event(ev("MixMonitorStart", T0, **CALLER))
    await svc.stop_recording(CALLER["Uniqueid"], "sup1")
    assert ami.named("StopMixMonitor") == [{"Channel": CALLER["Channel"]}]


async def test_on_demand_refused_for_a_none_queue_and_when_already_recording(rig: Setup) -> None:
    svc, ami, store, _ = rig
    with pytest.raises(RecordingDisabled):
        await svc.start_on_demand(on_demand_call("quiet"), "5550000", "sup1")
    assert ami.actions == [] and store.rows == {} and svc.active == {}
    await svc.start_on_demand(on_demand_call(), "5550000", "sup1")
    with pytest.raises(AlreadyRecording):
        await svc.start_on_demand(on_demand_call(), "5550000", "sup1")
    svc.on_event(ev("MixMonitorStart", T0, **CALLER))  # a policy recording of another call
    with pytest.raises(AlreadyRecording):
        await svc.start_on_demand(on_demand_call("support", CALLER["Uniqueid"]), "5550000", "sup1")
    assert len(ami.named("Originate")) == 1


@pytest.mark.parametrize("how", ["refused", "not_answered"])
async def test_on_demand_refused_by_the_pbx_leaves_nothing_behind(rig: Setup, how: str) -> None:
    svc, ami, store, _ = rig
    if how == "refused":
        ami.refuse.add("Originate")
    else:
        ami.originate_answer = "Failure"
    with pytest.raises(PbxRefused):
        await svc.start_on_demand(on_demand_call(), "5550000", "sup1")
    assert svc.active == {} and store.rows == {} and svc._originates == {}


async def test_an_answer_handled_before_the_reply_returns_still_starts_the_recording(
        rig: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    svc, ami, store, _ = rig
    monkeypatch.setattr(service, "ORIGINATE_WAIT_S", 0.2)
    ami.answer_delay = None  # reply and event in one read: the consumer may run before start_on_demand resumes
    rec = await svc.start_on_demand(on_demand_call(), "5550000", "sup1")
    assert rec.recorder and store.rows


# ------------------------------------------------------------------------------------------------ PCI pause


async def test_pause_and_resume_mute_both_directions(rig: Setup) -> None:
    svc, ami, store, hooked = rig
    svc.on_event(ev("MixMonitorStart", T0, **CALLER))
    uid, linkedid = CALLER["Uniqueid"], CALLER["Linkedid"]
    assert not svc.is_paused(linkedid)
    rec = await svc.pause(uid, "ann")
    assert ami.named("MixMonitorMute") == [{"Channel": CALLER["Channel"], "Direction": "both", "State": "1"}]
    assert svc.is_paused(linkedid) and not svc.is_paused("other")
    assert hooked == [linkedid]  # supervision drops listeners at once
    with pytest.raises(PauseState):
        await svc.pause(uid, "ann")
    assert len(ami.named("MixMonitorMute")) == 1
    await svc.resume(uid, "ann")
    assert ami.named("MixMonitorMute")[-1] == {"Channel": CALLER["Channel"], "Direction": "both", "State": "0"}
    assert not svc.is_paused(linkedid)
    with pytest.raises(PauseState):
        await svc.resume(uid, "ann")
    assert store.pauses == [{"id": rec.id, "paused_at": store.pauses[0]["paused_at"], "paused_by": "ann",
                             "resumed_at": store.pauses[0]["resumed_at"], "resumed_by": "ann"}]
    assert [a[1] for a in store.audits] == ["pause", "resume"]
    with pytest.raises(NotRecording):
        await svc.pause("no-such-channel", "ann")


async def test_a_pause_ends_by_itself_after_the_maximum(tmp_path: Path) -> None:
    svc, ami, store, _ = await make(tmp_path, pci_max_pause_s=0.05)
    try:
        svc.on_event(ev("MixMonitorStart", T0, **CALLER))
        await svc.pause(CALLER["Uniqueid"], "ann")
        assert svc.is_paused(CALLER["Linkedid"])
        await asyncio.wait_for(store.resumed.wait(), 2)
        await settled(svc)
        assert not svc.is_paused(CALLER["Linkedid"])
        assert [f["State"] for f in ami.named("MixMonitorMute")] == ["1", "0"]
        assert store.pauses[0]["resumed_by"] == "auto"
        assert ("auto", "resume") in [a[:2] for a in store.audits]
    finally:
        await svc.stop()


async def test_a_manual_resume_cancels_the_automatic_one(tmp_path: Path) -> None:
    svc, ami, store, _ = await make(tmp_path, pci_max_pause_s=0.05)
    try:
        svc.on_event(ev("MixMonitorStart", T0, **CALLER))
        await svc.pause(CALLER["Uniqueid"], "ann")
        await svc.resume(CALLER["Uniqueid"], "ann")
        store.resumed.clear()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.resumed.wait(), 0.2)  # 4x the maximum: no second resume came
        assert [f["State"] for f in ami.named("MixMonitorMute")] == ["1", "0"]
    finally:
        await svc.stop()


async def test_hangup_while_paused_closes_the_pause(rig: Setup, tmp_path: Path) -> None:
    svc, _, store, _ = rig
    svc.on_event(ev("MixMonitorStart", T0, **CALLER))
    await svc.pause(CALLER["Uniqueid"], "ann")
    write_wav(tmp_path / "1732370000.1.wav", 800)
    svc.on_event(ev("Hangup", T0 + 30, **CALLER))
    await settled(svc)
    assert store.pauses[0]["resumed_by"] == "hangup"
    assert not svc.is_paused(CALLER["Linkedid"])


async def test_a_refused_mute_leaves_the_recording_unpaused(rig: Setup) -> None:
    svc, ami, store, hooked = rig
    svc.on_event(ev("MixMonitorStart", T0, **CALLER))
    ami.refuse.add("MixMonitorMute")
    with pytest.raises(PbxRefused):
        await svc.pause(CALLER["Uniqueid"], "ann")
    assert not svc.is_paused(CALLER["Linkedid"]) and store.pauses == [] and hooked == []


# ------------------------------------------------------------------------------------------------ erasure


async def test_erase_refuses_a_non_number(rig: Setup) -> None:
    svc, _, store, _ = rig
    for bad in ("", "12ab", "555 1234", "../1", "+", "1" * 21):
        with pytest.raises(ValueError):
            await svc.erase(bad, "admin")
    assert store.caller_lookups == []


async def test_erase_deletes_finished_recordings_and_reports_running_ones(rig: Setup, tmp_path: Path) -> None:
    svc, _, store, _ = rig
    done, running, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for rec_id, name, status, caller in ((done, "a.wav", "complete", "+15551234"),
                                         (running, "b.wav", "recording", "+15551234"),
                                         (other, "c.wav", "complete", "5550000")):
        store.rows[rec_id] = {"id": rec_id, "file": name, "linkedid": name, "status": status, "caller": caller}
        write_wav(tmp_path / name, 10)
    result = await svc.erase("+15551234", "admin")
    assert result == {"erased": [str(done)], "still_recording": [str(running)]}
    assert set(store.rows) == {running, other}
    assert not (tmp_path / "a.wav").exists() and (tmp_path / "b.wav").exists() and (tmp_path / "c.wav").exists()
    assert [(a[0], a[1], a[2], a[3]["file_existed"]) for a in store.audits] == [("admin", "erase", done, True)]
