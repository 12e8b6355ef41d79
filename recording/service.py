"""Recordings of live calls: which are running, on-demand start/stop, PCI pause/resume, retention, erasure.

Who starts a recording:
- policy 'all': app_queue itself (queues.conf `monitor-format = wav`, from the PostgreSQL view) starts MixMonitor
  on the caller's channel the moment an agent answers (option b: bridged audio only). Its `MixMonitorStart`
  event is where a row is created; the `AgentConnect` that follows names the queue, agent and caller.
- on demand: the API. The AMI MixMonitor action needs the `system` privilege (its Command option runs a shell),
  which the service's AMI user must not have; so the service originates a Local channel into the dialplan's
  [record-on-demand], whose ;2 half records itself while it silently spies on the caller's channel (ChanSpy
  hears both parties). Stop = hang that Local channel up; it also ends with the call (ChanSpy option E).
A recording ends when its channel hangs up (no MixMonitorStop is sent then) or on an API stop; the file is then
measured once Asterisk closed it (size, duration, SHA-256).

A PCI pause mutes both directions (AMI `MixMonitorMute`): the file keeps its timing and the stretch is silent.
It ends on resume, on hang-up, or by itself after `pci_max_pause_s` (an agent who forgets must not leave the
rest of the call unrecorded). `on_pci_pause(linkedid)` lets supervision drop listeners the moment it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from recording import files
from recording.store import RecordingStore
from telephony.ami import AmiClient, AmiError
from telephony.ami.events import AgentConnect, AmiEvent, Hangup, MixMonitorStart, OriginateResponse

log = logging.getLogger("recording")

CALLER_NUMBER = re.compile(r"^\+?[0-9]{1,20}$")
DEFAULT_RETENTION_DAYS = 90
ON_DEMAND_CONTEXT = "record-on-demand"
DB_RETRIES = 20
ORIGINATE_WAIT_S = 10.0

Job = Callable[[], Awaitable[None]]


class RecordingError(Exception):
    """A request the current state refuses (the API answers 409 with `code`)."""

    code = "conflict"


class NotRecording(RecordingError):
    code = "not_recording"


class AlreadyRecording(RecordingError):
    code = "already_recording"


class RecordingDisabled(RecordingError):
    code = "recording_disabled"


class PauseState(RecordingError):
    code = "pause_state"


class PbxRefused(RecordingError):
    code = "pbx_refused"


@dataclass(frozen=True)
class CallRef:
    """The call a request is about, as the ACD knows it (the caller's channel is the recorded one)."""

    linkedid: str
    uniqueid: str
    channel: str
    queue: str | None
    agent: str | None


@dataclass
class Active:
    id: uuid.UUID
    uniqueid: str
    channel: str
    linkedid: str
    trigger: str
    file: str
    started_at: float
    queue: str | None = None
    agent: str | None = None
    caller: str = ""
    recorder: str | None = None  # on demand: the Local channel (;2 half) that records
    paused_since: float | None = None
    resume_timer: asyncio.TimerHandle | None = None
    stored: asyncio.Event = field(default_factory=asyncio.Event)

    def summary(self) -> dict[str, Any]:
        return {"id": str(self.id), "linkedid": self.linkedid, "queue": self.queue, "agent": self.agent,
                "trigger": self.trigger, "started_at": _dt(self.started_at).isoformat(),
                "paused": self.paused_since is not None,
                "paused_since": _dt(self.paused_since).isoformat() if self.paused_since else None}


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def caller_number(raw: str | None) -> str:
    """The caller's number as stored (and searched/erased by): digits with an optional '+', else empty."""
    return raw if raw and CALLER_NUMBER.match(raw) else ""


class RecordingService:
    def __init__(self, ami: AmiClient, pool: asyncpg.Pool, node: str, folder: Path, *,
                 pci_max_pause_s: float = 180.0, purge_interval_s: float = 3600.0,
                 on_pci_pause: Callable[[str], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ami = ami
        self.store = RecordingStore(pool, node)
        self.folder = folder
        self.pci_max_pause_s = pci_max_pause_s
        self.purge_interval_s = purge_interval_s
        self.on_pci_pause = on_pci_pause
        self.clock = clock
        self.policies: dict[str, tuple[str, int]] = {}
        self.active: dict[str, Active] = {}  # recorded channel's uniqueid -> recording
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._spawned: set[asyncio.Task[None]] = set()
        self._originates: dict[str, asyncio.Future[OriginateResponse]] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.reload_policies()
        self._tasks = [asyncio.create_task(self._worker(), name="recording-writer"),
                       asyncio.create_task(self._purge_loop(), name="recording-purge")]

    async def stop(self) -> None:
        for t in [*self._tasks, *self._spawned]:
            t.cancel()
        for t in [*self._tasks, *self._spawned]:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def reload_policies(self) -> None:
        self.policies = await self.store.policies()

    def policy(self, queue: str | None) -> tuple[str, int]:
        return self.policies.get(queue or "", ("all", DEFAULT_RETENTION_DAYS))

    # ------------------------------------------------------------------ events (the one ordered consumer)
    def on_event(self, ev: AmiEvent) -> None:
        if isinstance(ev, MixMonitorStart):
            self._on_start(ev)
        elif isinstance(ev, AgentConnect):
            self._on_connect(ev)
        elif isinstance(ev, OriginateResponse):
            fut = self._originates.pop(ev.action_id or "", None)
            if fut is not None and not fut.done():
                fut.set_result(ev)
        elif isinstance(ev, Hangup):
            if ev.uniqueid in self.active:
                self._finish(self.active.pop(ev.uniqueid), ev.timestamp)
            elif ev.channel:
                for uid, rec in list(self.active.items()):
                    if rec.recorder == ev.channel:  # an on-demand recorder ended (stopped, or the call ended)
                        self._finish(self.active.pop(uid), ev.timestamp)

    def _on_start(self, ev: MixMonitorStart) -> None:
        """app_queue started MixMonitor at an agent's answer (policy 'all'); our own starts are known already."""
        uid, channel, linkedid = ev.uniqueid, ev.channel, ev.linkedid
        if not uid or not channel or not linkedid or uid in self.active or ev.get("Context") == ON_DEMAND_CONTEXT:
            return
        rec = Active(uuid.uuid4(), uid, channel, linkedid, "policy", files.name_for(uid), ev.timestamp,
                     caller=caller_number(ev.get("CallerIDNum")))
        self.active[uid] = rec
        self._submit(lambda: self._insert(rec, None))

    def _on_connect(self, ev: AgentConnect) -> None:
        rec = self.active.get(ev.uniqueid or "")
        if rec is None or rec.agent is not None:
            return
        rec.queue, rec.agent = ev.queue, ev.member_name
        rec.caller = caller_number(ev.caller_id_num) or rec.caller
        self._submit(lambda: self._describe(rec))

    async def _insert(self, rec: Active, started_by: str | None) -> None:
        try:
            await self.store.insert(rec.id, linkedid=rec.linkedid, uniqueid=rec.uniqueid, queue=rec.queue,
                                    agent=rec.agent, caller=rec.caller, trigger=rec.trigger, started_by=started_by,
                                    file=rec.file, started_at=_dt(rec.started_at),
                                    retention_days=self.policy(rec.queue)[1])
        finally:
            rec.stored.set()  # even on failure: whoever waits goes on (and meets the database's error itself)

    async def _describe(self, rec: Active) -> None:
        await self.store.describe(rec.id, queue=rec.queue, agent=rec.agent, caller=rec.caller,
                                  retention_days=self.policy(rec.queue)[1])

    def _finish(self, rec: Active, at: float) -> None:
        if rec.resume_timer is not None:
            rec.resume_timer.cancel()
        was_paused = rec.paused_since is not None
        rec.paused_since = None

        async def run() -> None:
            await rec.stored.wait()
            if was_paused:
                await self.store.resume(rec.id, _dt(at), "hangup")
            path = self.folder / rec.file
            if await files.wait_closed(path):
                m = await asyncio.to_thread(files.measure, path)
                await self.store.finish(rec.id, ended_at=_dt(at), status="complete", size_bytes=m.size_bytes,
                                        duration_s=m.duration_s, sha256=m.sha256)
            else:
                log.warning("recording %s: no finished file %s", rec.id, rec.file)
                await self.store.finish(rec.id, ended_at=_dt(at), status="missing", size_bytes=None,
                                        duration_s=None, sha256=None)

        self._spawn(self._retrying(run))

    async def _retrying(self, job: Job) -> None:
        """Run a bookkeeping job, trying again while the database is away (up to about a minute)."""
        delay = 0.2
        for _ in range(DB_RETRIES):
            try:
                await job()
                return
            except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError) as exc:
                log.warning("recording bookkeeping waits for the database: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception("recording bookkeeping failed")
                return

    async def reconcile(self, live: dict[str, str]) -> int:
        """After an AMI (re)connect or a service restart: rows still 'recording' are matched with the channels
        Asterisk has now (`live`: uniqueid -> channel name). A recording whose channel is gone is finished from
        its file (hang-ups were missed); one still up is followed again, so its hang-up finishes it."""
        n = 0
        rows = await self.store.pool.fetch(
            """SELECT id, linkedid, uniqueid, queue, agent, caller, trigger, file, started_at FROM recordings
               WHERE node = $1 AND status = 'recording'""", self.store.node)
        for r in rows:
            uid = r["uniqueid"]
            if uid in self.active:
                continue
            rec = Active(r["id"], uid, live.get(uid, ""), r["linkedid"], r["trigger"], r["file"],
                         r["started_at"].timestamp(), queue=r["queue"], agent=r["agent"], caller=r["caller"])
            rec.stored.set()
            if uid in live and r["trigger"] == "policy":
                self.active[uid] = rec
            else:  # gone, or an on-demand recorder we can no longer address: finish what the file holds
                rec.paused_since = rec.started_at  # closes a pause left open, if any
                self._finish(rec, self.clock())
                n += 1
        return n

    # ------------------------------------------------------------------ queries
    def for_channel(self, uniqueid: str) -> Active | None:
        return self.active.get(uniqueid)

    def for_agent(self, agent: str) -> Active | None:
        """The running recording of an agent's call (also one followed again after a restart, when the ACD no
        longer knows the call's channels)."""
        return next((r for r in self.active.values() if r.agent == agent), None)

    def is_paused(self, linkedid: str) -> bool:
        """True while any recording of this call is in a PCI pause (supervisors may not listen then)."""
        return any(r.linkedid == linkedid and r.paused_since is not None for r in self.active.values())

    # ------------------------------------------------------------------ commands (API, IVR)
    async def start_on_demand(self, call: CallRef, caller: str, by: str) -> Active:
        if call.uniqueid in self.active:
            raise AlreadyRecording("this call is already being recorded")
        policy, _ = self.policy(call.queue)
        if policy == "none":
            raise RecordingDisabled(f"queue {call.queue!r} never records (recording policy 'none')")
        name = files.name_for(call.uniqueid, secrets.token_hex(4))
        rec = Active(uuid.uuid4(), call.uniqueid, call.channel, call.linkedid, "on_demand", name, self.clock(),
                     queue=call.queue, agent=call.agent, caller=caller_number(caller))
        self.active[call.uniqueid] = rec
        # Our own ActionID, registered before sending: the Local channel answers within milliseconds, so its
        # OriginateResponse may be handled before the Originate's reply is.
        action_id = f"rec-{rec.id}"
        fut: asyncio.Future[OriginateResponse] = asyncio.get_running_loop().create_future()
        self._originates[action_id] = fut
        try:
            await self.ami.originate({
                "ActionID": action_id, "Channel": f"Local/s@{ON_DEMAND_CONTEXT}/n", "Application": "Wait",
                "Data": "86400", "Timeout": "5000", "Variable": [f"REC_TARGET={call.channel}", f"REC_FILE={name}"]})
            answer = await asyncio.wait_for(fut, ORIGINATE_WAIT_S)
        except (AmiError, TimeoutError) as exc:
            self.active.pop(call.uniqueid, None)
            raise PbxRefused(f"the PBX did not start the recording: {exc}") from exc
        finally:
            self._originates.pop(action_id, None)
        if (answer.response or "").lower() != "success" or not answer.channel:
            self.active.pop(call.uniqueid, None)
            raise PbxRefused(f"the PBX did not start the recording (reason {answer.reason})")
        rec.recorder = answer.channel.removesuffix(";1") + ";2"  # the half that runs MixMonitor
        rec.channel = rec.recorder  # MixMonitorMute acts on the channel that records
        await self._insert(rec, by)
        await self.store.audit(by, "start", rec.id, rec.linkedid)
        return rec

    async def stop_recording(self, uniqueid: str, by: str) -> Active:
        """Stop an on-demand recording (its recorder hangs up), or a policy one (StopMixMonitor on the caller)."""
        rec = self._require(uniqueid)
        try:
            if rec.recorder is not None:
                await self.ami.action("Hangup", {"Channel": rec.recorder}, as_list=False)
            else:
                await self.ami.action("StopMixMonitor", {"Channel": rec.channel}, as_list=False)
        except AmiError as exc:
            raise PbxRefused(f"the PBX did not stop the recording: {exc}") from exc
        if self.active.get(uniqueid) is rec:
            self.active.pop(uniqueid)
            self._finish(rec, self.clock())
        await rec.stored.wait()
        await self.store.audit(by, "stop", rec.id, rec.linkedid)
        return rec

    async def pause(self, uniqueid: str, by: str) -> Active:
        rec = self._require(uniqueid)
        if rec.paused_since is not None:
            raise PauseState("the recording is already paused")
        await self._mute(rec, True)
        rec.paused_since = self.clock()
        await rec.stored.wait()
        await self.store.pause(rec.id, _dt(rec.paused_since), by)
        await self.store.audit(by, "pause", rec.id, rec.linkedid)
        loop = asyncio.get_running_loop()
        rec.resume_timer = loop.call_later(self.pci_max_pause_s, self._auto_resume, rec)
        if self.on_pci_pause is not None:
            try:
                await self.on_pci_pause(rec.linkedid)
            except Exception:
                log.exception("on_pci_pause hook failed for %s", rec.linkedid)
        return rec

    async def resume(self, uniqueid: str, by: str) -> Active:
        rec = self._require(uniqueid)
        if rec.paused_since is None:
            raise PauseState("the recording is not paused")
        await self._mute(rec, False)
        rec.paused_since = None
        if rec.resume_timer is not None:
            rec.resume_timer.cancel()
            rec.resume_timer = None
        await self.store.resume(rec.id, _dt(self.clock()), by)
        await self.store.audit(by, "resume", rec.id, rec.linkedid)
        return rec

    def _auto_resume(self, rec: Active) -> None:
        rec.resume_timer = None
        if self.active.get(rec.uniqueid) is rec and rec.paused_since is not None:
            self._spawn(self._resume_quietly(rec.uniqueid))

    async def _resume_quietly(self, uniqueid: str) -> None:
        try:
            await self.resume(uniqueid, "auto")
        except (RecordingError, asyncpg.PostgresError, OSError) as exc:
            log.warning("automatic resume of %s failed: %s", uniqueid, exc)

    async def _mute(self, rec: Active, muted: bool) -> None:
        try:
            await self.ami.action("MixMonitorMute", {"Channel": rec.channel, "Direction": "both",
                                                     "State": "1" if muted else "0"}, as_list=False)
        except AmiError as exc:
            raise PbxRefused(f"the PBX did not {'pause' if muted else 'resume'} the recording: {exc}") from exc

    def _require(self, uniqueid: str) -> Active:
        rec = self.active.get(uniqueid)
        if rec is None:
            raise NotRecording("this call is not being recorded")
        return rec

    # ------------------------------------------------------------------ retention and erasure
    async def purge(self, actor: str = "retention") -> int:
        """Delete every finished recording past its retention: file, row (with its pauses), one audit row each."""
        count = 0
        while True:
            batch = await self.store.expired()
            if not batch:
                return count
            for row in batch:
                existed = await asyncio.to_thread(files.delete, self.folder, row["file"])
                await self.store.delete(row["id"])
                await self.store.audit(actor, "purge", row["id"], row["linkedid"], file=row["file"],
                                       file_existed=existed, started_at=row["started_at"])
                count += 1

    async def erase(self, caller: str, actor: str) -> dict[str, Any]:
        """Erase every finished recording of a caller's number (a data-subject request); calls still being
        recorded are reported, not touched (ask again once they ended)."""
        number = caller_number(caller)
        if not number:
            raise ValueError("caller: a number of digits with an optional leading '+'")
        erased: list[str] = []
        still_recording: list[str] = []
        for row in await self.store.of_caller(number):
            if row["status"] == "recording":
                still_recording.append(str(row["id"]))
                continue
            existed = await asyncio.to_thread(files.delete, self.folder, row["file"])
            await self.store.delete(row["id"])
            await self.store.audit(actor, "erase", row["id"], row["linkedid"], file=row["file"],
                                   file_existed=existed, reason="erasure request for the caller's number")
            erased.append(str(row["id"]))
        return {"erased": erased, "still_recording": still_recording}

    async def _purge_loop(self) -> None:
        while True:
            try:
                n = await self.purge()
                if n:
                    log.info("retention: purged %d recording(s)", n)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("retention purge failed (retried later): %s", exc)
            await asyncio.sleep(self.purge_interval_s)

    # ------------------------------------------------------------------ plumbing
    def _submit(self, job: Job) -> None:
        self._jobs.put_nowait(job)

    async def _worker(self) -> None:
        """Jobs in order; one the database refuses for being away is tried again before the next, so a short
        outage loses no recording row."""
        while True:
            job = await self._jobs.get()
            await self._retrying(job)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
