"""Live supervision: a supervisor's phone attached to one agent's call to listen, whisper, barge or take over.

How (measured on Asterisk 22, docs/recording.md):
- The service originates the supervisor's phone into the dialplan context [supervise] (extension = mode) with
  SPY_TARGET = the agent's phone channel as Asterisk named it in its own events (AgentConnect / BridgeEnter);
  nothing a user typed becomes a channel name. ChanSpy attaches to exactly that channel: listen (silent),
  whisper (option w: the agent hears the supervisor, the caller does not), barge (option B: both do).
- A mode switch is an AMI Redirect of the supervisor's channel to another extension there.
- Takeover: TAKEOVER=1 on the supervisor's channel (so it waits instead of hanging up when ChanSpy ends), AMI
  BlindTransfer of the agent's channel to [takeover-hold] (app_queue reports AgentComplete Reason=transfer at
  once: the agent's talk time ends there), then, once the caller left the queue's bridge, AMI Bridge of caller
  and supervisor. Both end up with the caller's linkedid: the call stays one call. When one of the two hangs
  up, the service hangs up the other (each would otherwise go back to where the bridge took it from).
  Measured: the dialplan's own Bridge() from the caller's side instead loses the supervisor's voice in the
  caller's recording.
Every session and every mode it was in is stored (supervision_sessions, supervision_modes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from acd.agent_state import AgentBook, CallChannels
from telephony.ami import AmiClient, AmiError
from telephony.ami.events import AmiEvent, BridgeLeave, Hangup, OriginateResponse

log = logging.getLogger("acd.supervision")

MODES = ("listen", "whisper", "barge", "takeover")
BRIDGE_WAIT_S = 5.0
BRIDGE_TRIES = 15


class SupervisionError(Exception):
    status = 409
    code = "conflict"


class NotOnCall(SupervisionError):
    code = "not_on_call"


class CallPaused(SupervisionError):
    code = "recording_paused"


class PhoneBusy(SupervisionError):
    code = "phone_busy"


class SessionNotFound(SupervisionError):
    status = 404
    code = "not_found"


class SessionState(SupervisionError):
    code = "session_state"


class PbxFailed(SupervisionError):
    status = 502
    code = "pbx_failed"


@dataclass
class Session:
    id: uuid.UUID
    supervisor: str
    agent: str
    phone: str
    mode: str
    call: CallChannels
    requested_at: float
    status: str = "ringing"  # ringing -> active -> ended | failed
    action_id: str | None = None
    channel: str | None = None  # the supervisor's channel once answered
    uniqueid: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    mode_since: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    caller_left_bridge: asyncio.Event = field(default_factory=asyncio.Event)

    def public(self) -> dict[str, Any]:
        def iso(ts: float | None) -> str | None:
            return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None
        return {"id": str(self.id), "supervisor": self.supervisor, "agent": self.agent, "phone": self.phone,
                "mode": self.mode, "status": self.status, "linkedid": self.call.linkedid,
                "requested_at": iso(self.requested_at), "started_at": iso(self.started_at),
                "ended_at": iso(self.ended_at), "end_reason": self.end_reason}


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class SupervisionService:
    def __init__(self, ami: AmiClient, pool: asyncpg.Pool, node: str, book: AgentBook, *,
                 is_paused: Callable[[str], bool], channel_up: Callable[[str], bool],
                 ring_s: int = 30, clock: Callable[[], float] = time.time) -> None:
        self.ami = ami
        self.pool = pool
        self.node = node
        self.book = book
        self.is_paused = is_paused
        self.channel_up = channel_up
        self.ring_s = ring_s
        self.clock = clock
        self.sessions: dict[uuid.UUID, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def live(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.status in ("ringing", "active")]

    def get(self, session_id: uuid.UUID) -> Session:
        s = self.sessions.get(session_id)
        if s is None:
            raise SessionNotFound("no such supervision session")
        return s

    # ------------------------------------------------------------------ commands
    async def begin(self, supervisor: str, agent: str, mode: str, phone: str) -> Session:
        """Ring the supervisor's phone; once answered it is attached to the agent's call in `mode`.

        Refused (nothing started) when the agent is not on a call the service knows, the call's recording is in a
        PCI pause, or the supervisor's phone is already in a session.
        """
        if mode not in MODES:
            raise ValueError(f"mode: one of {', '.join(MODES)}")
        call = self._call_of(agent)
        if self.is_paused(call.linkedid):
            raise CallPaused("the call's recording is paused for card data: supervisors cannot listen in now")
        if any(s.phone == phone for s in self.live()):
            raise PhoneBusy(f"phone {phone!r} is already in a supervision session")
        s = Session(uuid.uuid4(), supervisor, agent, phone, mode, call, self.clock())
        self.sessions[s.id] = s  # before any await: a second request for the same phone sees it busy
        try:
            await self.pool.execute(
                """INSERT INTO supervision_sessions (id, node, supervisor, agent, phone, linkedid, status,
                                                     requested_at)
                   VALUES ($1, $2, $3, $4, $5, $6, 'ringing', $7)""",
                s.id, self.node, supervisor, agent, phone, call.linkedid, _dt(s.requested_at))
        except BaseException:
            del self.sessions[s.id]
            raise
        fields = {
            "Channel": f"PJSIP/{phone}", "Context": "supervise", "Exten": mode, "Priority": "1",
            "Timeout": str(self.ring_s * 1000), "CallerID": f'"Supervise {agent}" <{agent}>',
            "Variable": [f"SPY_TARGET={call.agent_channel}", f"SPY_SESSION={s.id}"],
        }
        try:
            reply = await self.ami.originate(fields)
        except AmiError as exc:
            await self._close(s, "failed", f"originate refused: {exc}")
            raise PbxFailed(f"the PBX did not ring phone {phone!r}: {exc}") from exc
        s.action_id = str(reply.get("ActionID") or "") or None
        return s

    async def switch(self, session_id: uuid.UUID, mode: str) -> Session:
        if mode not in MODES:
            raise ValueError(f"mode: one of {', '.join(MODES)}")
        s = self.get(session_id)
        async with s.lock:
            if s.status != "active" or s.channel is None:
                raise SessionState(f"session is {s.status}: only an answered session changes mode")
            if s.mode == "takeover":
                raise SessionState("after a takeover the supervisor is a party to the call; no other mode")
            if mode == s.mode:
                return s
            if mode != "takeover" and self.is_paused(s.call.linkedid):
                raise CallPaused("the call's recording is paused for card data: supervisors cannot listen in now")
            if not self.channel_up(s.call.agent_uniqueid):
                raise NotOnCall("the agent's call has ended")
            if mode == "takeover":
                await self._takeover(s)
            else:
                try:
                    await self.ami.action("Redirect", {"Channel": s.channel, "Context": "supervise", "Exten": mode,
                                                       "Priority": "1"}, as_list=False)
                except AmiError as exc:
                    raise PbxFailed(f"the PBX did not switch the mode: {exc}") from exc
            await self._new_mode(s, mode)
        return s

    async def end(self, session_id: uuid.UUID, reason: str = "ended_by_api") -> Session:
        s = self.get(session_id)
        if s.status not in ("ringing", "active"):
            return s
        s.end_reason = reason
        if s.channel is not None:
            with contextlib.suppress(AmiError):
                await self.ami.action("Hangup", {"Channel": s.channel}, as_list=False)
        else:
            await self._close(s, "ended", reason)
        return s

    async def on_pci_pause(self, linkedid: str) -> None:
        """A PCI pause began on this call: listeners are dropped at once (a takeover supervisor is a party)."""
        for s in self.live():
            if s.call.linkedid == linkedid and s.mode != "takeover":
                await self.end(s.id, "recording_paused")

    # ------------------------------------------------------------------ events
    def on_event(self, ev: AmiEvent) -> None:
        if isinstance(ev, OriginateResponse) and ev.action_id:
            for s in list(self.sessions.values()):
                if s.action_id != ev.action_id:
                    continue
                if s.status == "ringing":
                    self._spawn(self._answered(s, ev))
                elif ev.channel and (ev.response or "").lower() == "success":
                    self._spawn(self._hangup(ev.channel))  # ended over the API while it rang: answered too late
        elif isinstance(ev, Hangup) and ev.uniqueid:
            for s in self.live():
                if s.uniqueid == ev.uniqueid:
                    self._spawn(self._close(s, "ended", s.end_reason or "hangup", at=ev.timestamp))
                    if s.mode == "takeover":  # the supervisor left: the caller's call ends too
                        self._spawn(self._hangup(s.call.caller_channel))
                elif s.mode == "takeover" and s.call.caller_uniqueid == ev.uniqueid and s.channel:
                    self._spawn(self._hangup(s.channel))  # the caller left: the supervisor's leg ends too
        elif isinstance(ev, BridgeLeave) and ev.uniqueid:
            for s in self.live():
                if s.call.caller_uniqueid == ev.uniqueid:
                    s.caller_left_bridge.set()

    async def _answered(self, s: Session, ev: OriginateResponse) -> None:
        if (ev.response or "").lower() != "success" or not ev.channel or not ev.uniqueid:
            await self._close(s, "failed", f"not answered (reason {ev.reason})", at=ev.timestamp)
            return
        async with s.lock:
            s.channel, s.uniqueid = ev.channel, ev.uniqueid
            s.status, s.started_at = "active", ev.timestamp
            await self.pool.execute(
                "UPDATE supervision_sessions SET status = 'active', started_at = $2 WHERE id = $1",
                s.id, _dt(ev.timestamp))
            if s.end_reason is not None:  # ended over the API while it rang
                with contextlib.suppress(AmiError):
                    await self.ami.action("Hangup", {"Channel": s.channel}, as_list=False)
                return
            if s.mode == "takeover":
                try:
                    await self._takeover(s)
                except SupervisionError as exc:
                    log.warning("takeover %s failed: %s", s.id, exc)
                    with contextlib.suppress(AmiError):
                        await self.ami.action("Hangup", {"Channel": s.channel}, as_list=False)
                    return
            await self._new_mode(s, s.mode, at=ev.timestamp)

    async def _takeover(self, s: Session) -> None:
        assert s.channel is not None
        call = s.call
        s.caller_left_bridge.clear()
        try:
            await self.ami.action("Setvar", {"Channel": s.channel, "Variable": "TAKEOVER", "Value": "1"},
                                  as_list=False)
            await self.ami.action("BlindTransfer", {"Channel": call.agent_channel, "Context": "takeover-hold",
                                                    "Exten": "s"}, as_list=False)
        except AmiError as exc:
            raise PbxFailed(f"the PBX did not move the caller: {exc}") from exc
        # The caller leaves the queue's bridge asynchronously; bridging before that fails ("Unable to add
        # Channel1"), and a failed attempt touches neither channel, so it is simply tried again.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(s.caller_left_bridge.wait(), BRIDGE_WAIT_S)
        last: Exception | None = None
        for _ in range(BRIDGE_TRIES):
            try:
                await self.ami.action("Bridge", {"Channel1": call.caller_channel, "Channel2": s.channel,
                                                 "Tone": "no"}, as_list=False)
                return
            except AmiError as exc:
                last = exc
                await asyncio.sleep(0.2)
        raise PbxFailed(f"the PBX did not bridge the caller to the supervisor: {last}")

    # ------------------------------------------------------------------ bookkeeping
    def _call_of(self, agent: str) -> CallChannels:
        call = self.book.call_channels(agent)
        if call is None or not self.channel_up(call.agent_uniqueid) or not self.channel_up(call.caller_uniqueid):
            raise NotOnCall(f"agent {agent!r} is not on a call")
        return call

    async def _new_mode(self, s: Session, mode: str, at: float | None = None) -> None:
        now = at if at is not None else self.clock()
        if s.mode_since is not None:
            await self.pool.execute(
                "UPDATE supervision_modes SET ended_at = $2 WHERE session_id = $1 AND ended_at IS NULL",
                s.id, _dt(now))
        s.mode, s.mode_since = mode, now
        await self.pool.execute(
            "INSERT INTO supervision_modes (session_id, mode, started_at) VALUES ($1, $2, $3)", s.id, mode, _dt(now))

    async def _close(self, s: Session, status: str, reason: str, at: float | None = None) -> None:
        if s.status in ("ended", "failed"):
            return
        now = at if at is not None else self.clock()
        s.status, s.ended_at, s.end_reason = status, now, reason
        await self.pool.execute(
            "UPDATE supervision_modes SET ended_at = $2 WHERE session_id = $1 AND ended_at IS NULL", s.id, _dt(now))
        await self.pool.execute(
            "UPDATE supervision_sessions SET status = $2, ended_at = $3, end_reason = $4 WHERE id = $1",
            s.id, status, _dt(now), reason)

    async def _hangup(self, channel: str) -> None:
        with contextlib.suppress(AmiError):
            await self.ami.action("Hangup", {"Channel": channel}, as_list=False)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
