"""Agent state machine: pure logic, no I/O, deterministic.

Every method takes the instant ``at`` (epoch seconds): an event's own ``Timestamp`` (µs, Asterisk's clock) or
the command's clock. Every state change is returned as one :class:`Transition` carrying that exact instant, so
the time in each state can be cut exactly from the sequence (KPIS.md, agent figures; see
:mod:`acd.agent_figures`). The caller stores the transitions (:mod:`acd.state_store`) and applies their
effects to Asterisk (pause/unpause, ...): this module never talks to anything.

States: ``logged_out``, ``available``, ``ringing``, ``on_call``, ``on_hold``, ``acw``, ``paused`` (+ reason).

Design points (the why):

- **Events never raise** and unknown/irrelevant events are ignored. Duplicates are no-ops because every
  handler checks the current state and the identity of the call (caller ``Uniqueid``) it acts on; a late
  event (its instant is before the start of the ring/call it would end, or before the end of the call it
  would start) is ignored. Instants are clamped to be monotonic per agent, so durations are never negative.
- **Hold** (``Hold``/``Unhold``) is raised for a *channel*: the one whose phone pressed hold, or the caller's.
  A call tracks its channels: the caller's (``Uniqueid``/``Channel`` of ``AgentConnect``), the agent's
  (``DestUniqueid``/``DestChannel``) and the agent's phone channel learned from ``BridgeEnter`` (for ``Local/``
  members the ``DestChannel`` is the ``Local/...;1`` leg and the phone's channel shows only there). Both
  sides match. When no channel matches, the call's ``Linkedid`` is used if exactly one agent's call has it.
  The channels on hold are a set: the call is ``on_hold`` while any of them is held.
- **AgentComplete** may come with no channel fields at all (DESIGN §7). It is correlated by member
  (``Interface``/``MemberName`` -> agent), ``Queue`` and the preceding ``AgentConnect`` (its instant must be
  after the connect). The talk can also end first by the ``Hangup`` of the agent's own (non-``Local``)
  channel -- which keeps talk time exact when a caller is redirected out of the bridge and app_queue delays
  ``AgentComplete`` until the caller hangs up. Such a call waits in a short list for its ``AgentComplete``,
  which is then absorbed; a field-less ``AgentComplete`` is given to the active call when its ``TalkTime``
  matches the active call's talk (±2 s), else to the oldest waiting call of that queue.
- **Echoes**: the effect layer pauses/unpauses members in Asterisk with reasons prefixed ``ccpbx:``
  (:data:`ECHO_PREFIX`). ``QueueMemberPause`` events carrying such a reason (``PausedReason`` or the action's
  ``Reason``, which app_queue also sends on unpause) are echoes and create no transition. Other pause events
  are pauses done outside the service and are reflected (cause ``asterisk:pause``/``asterisk:unpause``);
  during a ring or a call they are remembered and applied when it ends. A pause event older than the
  agent's current state is ignored: the effect of that newer state was (or will be) applied after it.
- **Ringing ends** by ``AgentRingNoAnswer`` (missed: back to available, then auto-paused ``missed`` when
  ``auto_pause_on_rna``), ``AgentDump`` (not missed), or -- not missed either -- another agent answering
  the same caller (ringall), the caller abandoning, or the ``Hangup`` of the agent's rung channel (app_queue
  sends no event for the members it stops ringing). A ring offered while paused returns to that pause.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from telephony.ami.events import (
    AgentCalled,
    AgentComplete,
    AgentConnect,
    AgentDump,
    AgentRingNoAnswer,
    AmiEvent,
    BridgeEnter,
    Hangup,
    Hold,
    QueueCallerAbandon,
    QueueMember,
    QueueMemberPause,
    Unhold,
)

__all__ = [
    "CALL_STATES",
    "CAUSE_ACW_TIMEOUT",
    "CAUSE_CALLED",
    "CAUSE_COMPLETE",
    "CAUSE_CONNECT",
    "CAUSE_DUMP",
    "CAUSE_EXT_PAUSE",
    "CAUSE_EXT_UNPAUSE",
    "CAUSE_HANGUP",
    "CAUSE_HOLD",
    "CAUSE_LOGIN",
    "CAUSE_LOGOUT",
    "CAUSE_PAUSE",
    "CAUSE_READY",
    "CAUSE_RECONCILE",
    "CAUSE_RING_CANCELLED",
    "CAUSE_RNA",
    "CAUSE_UNHOLD",
    "ECHO_PREFIX",
    "EXTERNAL_REASON",
    "FORCE_PREFIX",
    "MISSED_REASON",
    "AgentBook",
    "AgentStatus",
    "CallChannels",
    "Disposition",
    "IllegalCommand",
    "State",
    "Transition",
    "is_echo",
]

log = logging.getLogger("acd.agent_state")

#: Reasons of the pauses the service itself makes in Asterisk start with this; their events are echoes.
ECHO_PREFIX = "ccpbx:"
#: Pause reason of the automatic pause after a ring with no answer (a row of ``pause_reasons``).
MISSED_REASON = "missed"
#: Pause reason used when Asterisk reports a pause made outside the service without any reason.
EXTERNAL_REASON = "external"

CAUSE_LOGIN = "cmd:login"
CAUSE_LOGOUT = "cmd:logout"
CAUSE_PAUSE = "cmd:pause"
CAUSE_READY = "cmd:ready"
FORCE_PREFIX = "force:"
CAUSE_ACW_TIMEOUT = "acw_timeout"
CAUSE_RNA = "ring_no_answer"
CAUSE_RING_CANCELLED = "ring_cancelled"
CAUSE_CALLED = "AgentCalled"
CAUSE_CONNECT = "AgentConnect"
CAUSE_COMPLETE = "AgentComplete"
CAUSE_DUMP = "AgentDump"
CAUSE_HANGUP = "Hangup"
CAUSE_HOLD = "Hold"
CAUSE_UNHOLD = "Unhold"
CAUSE_EXT_PAUSE = "asterisk:pause"
CAUSE_EXT_UNPAUSE = "asterisk:unpause"
CAUSE_RECONCILE = "reconcile"

# AST_DEVICE_* values in QueueMember.Status
_DEVICE_NOT_INUSE = 1
# AgentComplete.TalkTime is a difference of whole-second clock readings.
_TALK_TOLERANCE_S = 2.0


class State(StrEnum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    ON_HOLD = "on_hold"
    ACW = "acw"
    PAUSED = "paused"


#: States of an agent talking to a caller (hold included).
CALL_STATES: frozenset[State] = frozenset({State.ON_CALL, State.ON_HOLD})
_BUSY_STATES: frozenset[State] = frozenset({State.RINGING, State.ON_CALL, State.ON_HOLD})
_FORCE_TARGETS: frozenset[State] = frozenset({State.AVAILABLE, State.PAUSED, State.LOGGED_OUT})


def is_echo(reason: str | None) -> bool:
    """True for a pause reason the service itself gave (``ccpbx:...``)."""
    return reason is not None and reason.startswith(ECHO_PREFIX)


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of one agent at an exact instant.

    ``reason``: the pause reason code when ``to_state`` is ``paused``, else ``None``. ``cause``: what caused it
    (``AgentConnect``, ``cmd:pause``, ``acw_timeout``, ``ring_no_answer``, ``force:<supervisor>``, ...).
    ``linkedid``/``queue``/``uniqueid`` (caller's channel): the call involved, for transitions into, within and
    out of ``ringing``/``on_call``/``on_hold``/``acw`` (and the auto-pause after a missed ring).
    """

    agent: str
    from_state: State
    to_state: State
    at: float
    reason: str | None = None
    cause: str = ""
    linkedid: str | None = None
    queue: str | None = None
    uniqueid: str | None = None


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """An agent's current state; ``since`` is ``None`` for an agent never seen (logged out)."""

    state: State
    since: float | None = None
    reason: str | None = None
    linkedid: str | None = None
    queue: str | None = None
    uniqueid: str | None = None
    logged_in_at: float | None = None


@dataclass(frozen=True, slots=True)
class Disposition:
    """A wrap-up code set by an agent for a call (validated against ``dispositions`` by the caller)."""

    agent: str
    linkedid: str
    queue: str | None
    code: str
    at: float


@dataclass(frozen=True, slots=True)
class CallChannels:
    """An agent's live call: the caller's channel (in the queue) and the agent's phone channel."""

    linkedid: str
    queue: str | None
    caller_uniqueid: str
    caller_channel: str
    agent_uniqueid: str
    agent_channel: str


class IllegalCommand(Exception):
    """A command not allowed in the agent's current state (the API answers 409 with ``current``)."""

    def __init__(self, current: State, message: str) -> None:
        super().__init__(message)
        self.current = current
        self.message = message


# ------------------------------------------------------------------------------------------------ internals


@dataclass(slots=True)
class _Call:
    linkedid: str | None
    queue: str | None
    uniqueid: str | None  # the caller's channel
    connected_at: float
    channels: set[str] = field(default_factory=set)  # uniqueids and names of both sides (hold matching)
    agent_uids: set[str] = field(default_factory=set)  # the agent's own non-Local channels: Hangup ends talk
    held: set[str] = field(default_factory=set)
    caller_channel: str | None = None  # the caller's channel name (AgentConnect Channel)
    agent_channel: tuple[str, str] | None = None  # the agent's phone channel (uniqueid, name)
    hold_seen: dict[str, float] = field(default_factory=dict)  # last Hold/Unhold instant per channel
    active: bool = True
    ended_at: float | None = None


@dataclass(slots=True)
class _Ring:
    linkedid: str | None
    queue: str | None
    uniqueid: str | None  # the caller's channel
    dest_uniqueid: str | None  # the agent's rung channel
    dest_channel: str | None
    started_at: float
    resume_reason: str | None  # the pause the ring interrupted (a call offered while paused)


@dataclass(slots=True)
class _Agent:
    name: str
    state: State = State.LOGGED_OUT
    since: float | None = None
    reason: str | None = None
    logged_in_at: float | None = None
    call: _Call | None = None  # the active call, or the last one (kept through acw for the disposition)
    ring: _Ring | None = None
    ext_pause: str | None = None  # an outside pause seen during a ring/call, applied when it ends
    acw_until: float | None = None
    waiting_complete: deque[_Call] = field(default_factory=lambda: deque(maxlen=8))
    finished: deque[tuple[str, float]] = field(default_factory=lambda: deque(maxlen=32))  # (caller uid, end)


def _queue_ok(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a == b


def _is_local(channel: str | None) -> bool:
    return channel is not None and channel.lower().startswith("local/")


def _channel_interface(channel: str) -> str:
    """``PJSIP/agent1-00000002`` -> ``pjsip/agent1``; ``Local/100@agents-0000001a;1`` -> ``local/100@agents``."""
    s = channel
    if _is_local(s) and ";" in s:
        s = s.rsplit(";", 1)[0]
    if "-" in s:
        s = s.rsplit("-", 1)[0]
    return s.lower()


class AgentBook:
    """All agents' states.

    ``wrapup_s``: per-queue after-call-work seconds (``queues.wrapup_s``); a queue not listed uses
    ``default_wrapup_s``. ACW lasts ``min(wrapup_s, acw_cap_s)`` and then ends by :meth:`tick` (cause
    ``acw_timeout``) unless the agent ends it earlier. ``auto_pause_on_rna``: a ring with no answer pauses the
    agent with reason ``missed``. ``reconcile_grace_s``: a ``QueueMember`` snapshot (``QueueStatus``) only
    ends a ring/call that is at least this old (the snapshot may predate newer events).
    ``waiting_complete_ttl_s``: how long a call ended by ``Hangup`` waits for its ``AgentComplete``.
    """

    def __init__(
        self,
        wrapup_s: Mapping[str, int | float] | None = None,
        *,
        default_wrapup_s: float = 0.0,
        acw_cap_s: float = 300.0,
        auto_pause_on_rna: bool = True,
        reconcile_grace_s: float = 5.0,
        waiting_complete_ttl_s: float = 3600.0,
    ) -> None:
        self.wrapup_s: dict[str, float] = {k: float(v) for k, v in (wrapup_s or {}).items()}
        self.default_wrapup_s = float(default_wrapup_s)
        self.acw_cap_s = float(acw_cap_s)
        self.auto_pause_on_rna = auto_pause_on_rna
        self.reconcile_grace_s = float(reconcile_grace_s)
        self.waiting_complete_ttl_s = float(waiting_complete_ttl_s)
        self._agents: dict[str, _Agent] = {}
        self._by_iface: dict[str, str] = {}
        self._by_member: dict[str, str] = {}
        self._ringing: set[str] = set()
        self._in_call: set[str] = set()
        self._acw: set[str] = set()

    # -------------------------------------------------------------------------------------- registration

    def register(self, agent: str, interface: str, member_name: str | None = None) -> None:
        """Map a queue member interface (``PJSIP/agent1``, ``Local/100@agents``; case-insensitive) and
        optionally its ``MemberName`` to an agent. Register the phone's own interface too for ``Local/``
        members, so its channel is recognised in ``BridgeEnter`` (hold and hangup of the agent's side)."""
        self._by_iface[interface.lower()] = agent
        if member_name:
            self._by_member[member_name] = agent

    def unregister(self, interface: str, member_name: str | None = None) -> None:
        self._by_iface.pop(interface.lower(), None)
        if member_name:
            self._by_member.pop(member_name, None)

    def agent_for(self, interface: str | None, member_name: str | None = None) -> str | None:
        """The agent of a member: by interface first, then by member name."""
        if interface:
            agent = self._by_iface.get(interface.lower())
            if agent is not None:
                return agent
        if member_name:
            return self._by_member.get(member_name)
        return None

    # ------------------------------------------------------------------------------------------ queries

    def state(self, agent: str) -> AgentStatus:
        a = self._agents.get(agent)
        if a is None:
            return AgentStatus(State.LOGGED_OUT)
        return self._status(a)

    def call_channels(self, agent: str) -> CallChannels | None:
        """The channels of the agent's call in progress (talking or on hold), as Asterisk named them.

        Supervision attaches to exactly these; ``None`` when the agent is not on a call or its phone's channel
        is not known yet.
        """
        a = self._agents.get(agent)
        if a is None or a.state not in CALL_STATES or a.call is None or not a.call.active:
            return None
        c = a.call
        if c.agent_channel is None or not c.uniqueid or not c.caller_channel or not c.linkedid:
            return None
        return CallChannels(c.linkedid, c.queue, c.uniqueid, c.caller_channel, *c.agent_channel)

    def snapshot(self) -> dict[str, AgentStatus]:
        return {name: self._status(self._agents[name]) for name in sorted(self._agents)}

    def acw_deadline(self, agent: str) -> float | None:
        """When the agent's current ACW ends by itself (``None`` when not in ACW)."""
        a = self._agents.get(agent)
        return a.acw_until if a is not None and a.state == State.ACW else None

    def _status(self, a: _Agent) -> AgentStatus:
        linkedid = queue = uniqueid = None
        if a.state == State.RINGING and a.ring is not None:
            linkedid, queue, uniqueid = a.ring.linkedid, a.ring.queue, a.ring.uniqueid
        elif a.state in CALL_STATES or a.state == State.ACW:
            if a.call is not None:
                linkedid, queue, uniqueid = a.call.linkedid, a.call.queue, a.call.uniqueid
        return AgentStatus(a.state, a.since, a.reason, linkedid, queue, uniqueid, a.logged_in_at)

    # ------------------------------------------------------------------------------------------ restore

    def restore(self, agent: str, status: AgentStatus) -> None:
        """Rebuild an agent from the store after a restart (no transition is emitted).

        The channels of a restored call are unknown (only the caller's ``uniqueid``); hold then matches by
        the call's ``Linkedid``. An ACW restored past its deadline ends at the deadline on the next
        :meth:`tick`.
        """
        a = self._get(agent)
        self._index(a, State.LOGGED_OUT)
        a.state = State(status.state)
        a.since = status.since
        a.reason = status.reason if a.state == State.PAUSED else None
        a.logged_in_at = status.logged_in_at if a.state != State.LOGGED_OUT else None
        a.call = None
        a.ring = None
        a.ext_pause = None
        a.acw_until = None
        a.waiting_complete.clear()
        since = status.since if status.since is not None else 0.0
        if a.state in CALL_STATES or a.state == State.ACW:
            call = _Call(status.linkedid, status.queue, status.uniqueid, since, active=a.state in CALL_STATES)
            if status.uniqueid:
                call.channels.add(status.uniqueid)
            a.call = call
            if a.state == State.ACW:
                a.acw_until = since + self._acw_timeout(status.queue)
        elif a.state == State.RINGING:
            a.ring = _Ring(status.linkedid, status.queue, status.uniqueid, None, None, since, None)
        self._index(a, a.state)

    # ----------------------------------------------------------------------------------------- commands

    def login(self, agent: str, at: float, reason: str | None = None) -> list[Transition]:
        """Logged out -> available (or straight to paused with ``reason``). Already logged in: no-op."""
        a = self._get(agent)
        if a.state != State.LOGGED_OUT:
            return self._expire(a, at)
        if reason:
            self._check_reason(reason)
            return [self._move(a, State.PAUSED, at, CAUSE_LOGIN, reason=reason)]
        return [self._move(a, State.AVAILABLE, at, CAUSE_LOGIN)]

    def logout(self, agent: str, at: float) -> list[Transition]:
        """Available/paused/acw -> logged out. Not while ringing or on a call. Logged out: no-op."""
        a = self._get(agent)
        current = self._effective(a, at)
        if current in _BUSY_STATES:
            raise IllegalCommand(current, f"agent {agent} cannot log out while {current}")
        out = self._expire(a, at)
        if a.state == State.LOGGED_OUT:
            return out
        out.append(self._move(a, State.LOGGED_OUT, at, CAUSE_LOGOUT, **self._call_ids(a)))
        return out

    def pause(self, agent: str, reason: str, at: float) -> list[Transition]:
        """Available/acw/paused (other reason) -> paused(reason). Same reason: no-op."""
        self._check_reason(reason)
        a = self._get(agent)
        current = self._effective(a, at)
        if current == State.PAUSED and a.reason == reason:
            return self._expire(a, at)
        if current not in (State.AVAILABLE, State.ACW, State.PAUSED):
            raise IllegalCommand(current, f"agent {agent} cannot pause while {current}")
        out = self._expire(a, at)
        out.append(self._move(a, State.PAUSED, at, CAUSE_PAUSE, reason=reason, **self._call_ids(a)))
        return out

    def ready(self, agent: str, at: float) -> list[Transition]:
        """Paused/acw -> available. Available: no-op."""
        a = self._get(agent)
        current = self._effective(a, at)
        if current == State.AVAILABLE:
            return self._expire(a, at)
        if current not in (State.PAUSED, State.ACW):
            raise IllegalCommand(current, f"agent {agent} cannot become ready while {current}")
        out = self._expire(a, at)
        out.append(self._move(a, State.AVAILABLE, at, CAUSE_READY, **self._call_ids(a)))
        return out

    def force(self, agent: str, state: State | str, reason: str | None, at: float, by: str) -> list[Transition]:
        """A supervisor sets an agent to available, paused(reason) or logged_out, from any state.

        A ring or call in progress is dropped from the agent's state (its later events are absorbed); the
        cause is ``force:<by>``. Already in that state (and reason): no-op.
        """
        a = self._get(agent)
        try:
            target = State(state)
        except ValueError:
            raise IllegalCommand(a.state, f"cannot force agent {agent} to {state!r}") from None
        if target not in _FORCE_TARGETS:
            raise IllegalCommand(a.state, f"cannot force agent {agent} to {target}: only available, paused "
                                          "or logged_out")
        if target == State.PAUSED:
            self._check_reason(reason)
        out = self._expire(a, at)
        if a.state == target and (target != State.PAUSED or a.reason == reason):
            return out
        ids = self._call_ids(a)
        self._drop_call(a, at)
        a.ext_pause = None
        out.append(self._move(a, target, at, f"{FORCE_PREFIX}{by}",
                              reason=reason if target == State.PAUSED else None, **ids))
        return out

    def set_disposition(self, agent: str, code: str, at: float) -> Disposition:
        """A wrap-up code for the current call (on_call/on_hold) or the last one (acw)."""
        if not code:
            raise ValueError("disposition code must not be empty")
        a = self._agents.get(agent)
        current = self._effective(a, at) if a is not None else State.LOGGED_OUT
        if a is None or current not in (State.ACW, State.ON_CALL, State.ON_HOLD):
            raise IllegalCommand(current, f"agent {agent} can set a disposition only on a call or in "
                                          f"after-call work, not while {current}")
        if a.call is None or a.call.linkedid is None:
            raise IllegalCommand(current, f"agent {agent}: the call is not known")
        return Disposition(agent, a.call.linkedid, a.call.queue, code, at)

    # --------------------------------------------------------------------------------------------- time

    def tick(self, now: float) -> list[Transition]:
        """ACW expiry: each ACW past its deadline ends at exactly the deadline (cause ``acw_timeout``)."""
        out: list[Transition] = []
        due = [self._agents[n] for n in self._acw]
        for a in sorted(due, key=lambda x: (x.acw_until or 0.0, x.name)):
            out.extend(self._expire(a, now))
        return out

    def next_deadline(self) -> float | None:
        """The earliest ACW deadline (for the caller's timer), ``None`` when nobody is in ACW."""
        deadlines = [d for n in self._acw if (d := self._agents[n].acw_until) is not None]
        return min(deadlines) if deadlines else None

    # ------------------------------------------------------------------------------------------- events

    def on_event(self, ev: AmiEvent) -> list[Transition]:
        """Apply one AMI event; returns the transitions it caused. Never raises."""
        try:
            handler = self._handlers.get(type(ev))
            if handler is None:
                return []
            return handler(self, ev)
        except Exception:  # one bad event must not stop the ordered consumer
            log.exception("agent state: %s event ignored after an error", ev.name)
            return []

    def _on_called(self, ev: AmiEvent) -> list[Transition]:
        assert isinstance(ev, AgentCalled)
        a = self._member(ev.interface, ev.member_name)
        if a is None:
            return []
        at = ev.timestamp
        out = self._expire(a, at)
        uid = ev.uniqueid
        if a.state in CALL_STATES or self._stale(a, uid, at):
            return out  # a second call while talking (ringinuse) is not modelled; or a late duplicate
        ring = _Ring(ev.linkedid, ev.queue, uid, ev.dest_uniqueid, ev.dest_channel, at, None)
        if a.state == State.RINGING:
            if a.ring is not None and uid is not None and a.ring.uniqueid != uid and at >= a.ring.started_at:
                ring.resume_reason = a.ring.resume_reason  # the previous ring ended unseen: follow the new one
                a.ring = ring
            return out
        if a.state == State.PAUSED:
            ring.resume_reason = a.reason  # must not happen, but Asterisk rang the phone: record it
        a.ring = ring
        out.append(self._move(a, State.RINGING, at, CAUSE_CALLED, **self._ring_ids(ring)))
        return out

    def _on_connect(self, ev: AmiEvent) -> list[Transition]:
        assert isinstance(ev, AgentConnect)
        a = self._member(ev.interface, ev.member_name)
        if a is None:
            return []
        at = ev.timestamp
        out = self._expire(a, at)
        uid = ev.uniqueid
        if self._stale(a, uid, at):
            return out
        cur = a.call if a.state in CALL_STATES and a.call is not None and a.call.active else None
        if cur is not None and self._same_call(cur, uid, ev.linkedid, ev.queue):
            return out  # duplicate
        if uid is not None:  # ringall: the others ringing for this caller stop, not missed
            out.extend(self._end_rings(lambda r: r.uniqueid == uid, at, exclude=a.name))
        if cur is not None:  # a second call answered while talking (ringinuse=yes): it replaces the first
            cur.active = False
            cur.ended_at = at
            a.waiting_complete.append(cur)
        call = _Call(ev.linkedid, ev.queue, uid, at, caller_channel=ev.channel)
        call.channels.update(x for x in (uid, ev.channel, ev.dest_uniqueid, ev.dest_channel) if x)
        if ev.dest_uniqueid and ev.dest_channel and not _is_local(ev.dest_channel):
            call.agent_uids.add(ev.dest_uniqueid)
            call.agent_channel = (ev.dest_uniqueid, ev.dest_channel)
        a.call = call
        a.ring = None
        out.append(self._move(a, State.ON_CALL, at, CAUSE_CONNECT, linkedid=call.linkedid, queue=call.queue,
                              uniqueid=call.uniqueid))
        return out

    def _on_complete(self, ev: AmiEvent) -> list[Transition]:
        assert isinstance(ev, AgentComplete)
        a = self._member(ev.interface, ev.member_name)
        if a is None:
            return []
        at = ev.timestamp
        out = self._expire(a, at)
        self._prune_waiting(a, at)
        cur = a.call if a.state in CALL_STATES and a.call is not None and a.call.active else None
        uid = ev.uniqueid
        if uid is not None:
            if cur is not None and self._same_call(cur, uid, ev.linkedid, ev.queue) and at >= cur.connected_at:
                out.extend(self._end_call(a, at, CAUSE_COMPLETE))
                return out
            for c in a.waiting_complete:
                if c.uniqueid == uid:
                    a.waiting_complete.remove(c)
                    break
            return out
        # No channel fields (Asterisk 22 under load): correlate by member + queue + the preceding connect.
        waiting = [c for c in a.waiting_complete if _queue_ok(c.queue, ev.queue)]
        if cur is not None and _queue_ok(cur.queue, ev.queue) and at >= cur.connected_at:
            talk = ev.talk_time_s
            talk_matches = talk is not None and abs((at - cur.connected_at) - talk) <= _TALK_TOLERANCE_S
            if not waiting or talk_matches:
                out.extend(self._end_call(a, at, CAUSE_COMPLETE))
                return out
        if waiting:
            a.waiting_complete.remove(waiting[0])
        return out

    def _on_rna(self, ev: AmiEvent) -> list[Transition]:
        assert isinstance(ev, AgentRingNoAnswer)
        return self._ring_event(ev.interface, ev.member_name, ev, CAUSE_RNA, missed=True)

    def _on_dump(self, ev: AmiEvent) -> list[Transition]:
        assert isinstance(ev, AgentDump)
        return self._ring_event(ev.interface, ev.member_name, ev, CAUSE_DUMP, missed=False)

    def _ring_event(self, interface: str | None, member_name: str | None, ev: AmiEvent, cause: str,
                    *, missed: bool) -> list[Transition]:
        a = self._member(interface, member_name)
        if a is None:
            return []
        at = ev.timestamp
        out = self._expire(a, at)
        r = a.ring
        if a.state != State.RINGING or r is None or at < r.started_at:
            return out
        uid = ev.uniqueid
        if uid is not None and r.uniqueid is not None and uid != r.uniqueid:
            return out
        out.extend(self._end_ring(a, at, cause, missed=missed))
        return out

    def _on_abandon(self, ev: AmiEvent) -> list[Transition]:
        assert isinstance(ev, QueueCallerAbandon)
        uid = ev.uniqueid
        if uid is None:
            return []
        return self._end_rings(lambda r: r.uniqueid == uid, ev.timestamp)

    def _on_hangup(self, ev: AmiEvent) -> list[Transition]:
        assert isinstance(ev, Hangup)
        uid, ch, at = ev.uniqueid, ev.channel, ev.timestamp
        if uid is None and ch is None:
            return []
        out = self._end_rings(
            lambda r: (uid is not None and r.dest_uniqueid == uid) or (ch is not None and r.dest_channel == ch),
            at,
        )
        if uid is not None:
            for name in sorted(self._in_call):
                a = self._agents[name]
                c = a.call
                if c is not None and c.active and uid in c.agent_uids and at >= c.connected_at:
                    out.extend(self._end_call(a, at, CAUSE_HANGUP, wait_complete=True))
        return out

    def _on_hold(self, ev: AmiEvent) -> list[Transition]:
        hold = isinstance(ev, Hold)
        keys = {k for k in (ev.uniqueid, ev.channel) if k}
        if not keys:
            return []
        key = ev.uniqueid or ev.channel or ""
        at = ev.timestamp
        active = [self._agents[n] for n in sorted(self._in_call)]
        matched = [a for a in active if a.call is not None and a.call.active and keys & a.call.channels]
        if not matched and ev.linkedid:
            same = [a for a in active if a.call is not None and a.call.active and a.call.linkedid == ev.linkedid]
            matched = same if len(same) == 1 else []
        out: list[Transition] = []
        for a in matched:
            c = a.call
            if c is None or at < c.connected_at or at < c.hold_seen.get(key, float("-inf")):
                continue  # late event
            c.hold_seen[key] = at
            c.channels.update(keys)
            if hold:
                c.held.add(key)
                if a.state == State.ON_CALL:
                    out.append(self._move(a, State.ON_HOLD, at, CAUSE_HOLD, **self._call_ids(a)))
            else:
                c.held.discard(key)
                if a.state == State.ON_HOLD and not c.held:
                    out.append(self._move(a, State.ON_CALL, at, CAUSE_UNHOLD, **self._call_ids(a)))
        return out

    def _on_bridge_enter(self, ev: AmiEvent) -> list[Transition]:
        """Learn the agent's phone channel (``Local/`` members: it shows only here)."""
        assert isinstance(ev, BridgeEnter)
        ch, uid, lid = ev.channel, ev.uniqueid, ev.linkedid
        if not ch or not lid:
            return []
        name = self._by_iface.get(_channel_interface(ch))
        a = self._agents.get(name) if name is not None else None
        if a is None or a.state not in CALL_STATES or a.call is None or not a.call.active:
            return []
        if a.call.linkedid != lid:
            return []
        a.call.channels.add(ch)
        if uid:
            a.call.channels.add(uid)
            if not _is_local(ch):
                a.call.agent_uids.add(uid)
                if a.call.agent_channel is None:
                    a.call.agent_channel = (uid, ch)
        return []

    def _on_member_pause(self, ev: AmiEvent) -> list[Transition]:
        assert isinstance(ev, QueueMemberPause)
        a = self._member(ev.interface, ev.member_name)
        if a is None or ev.paused is None:
            return []
        if is_echo(ev.action_reason) or is_echo(ev.paused_reason):
            return []  # the service's own pause/unpause coming back
        at = ev.timestamp
        if a.since is not None and at < a.since:
            return []  # predates the current state, whose effect on Asterisk comes after it
        out = self._expire(a, at)
        if ev.paused:
            reason = ev.paused_reason or ev.action_reason or EXTERNAL_REASON
            if a.state in (State.AVAILABLE, State.ACW) or (a.state == State.PAUSED and a.reason != reason):
                out.append(self._move(a, State.PAUSED, at, CAUSE_EXT_PAUSE, reason=reason, **self._call_ids(a)))
            elif a.state in _BUSY_STATES:
                a.ext_pause = reason
        else:
            if a.state in (State.PAUSED, State.ACW):
                out.append(self._move(a, State.AVAILABLE, at, CAUSE_EXT_UNPAUSE, **self._call_ids(a)))
            elif a.state in _BUSY_STATES:
                a.ext_pause = None
                if a.ring is not None:
                    a.ring.resume_reason = None
        return out

    def _on_queue_member(self, ev: AmiEvent) -> list[Transition]:
        """A ``QueueStatus`` snapshot: end a ring/call Asterisk no longer has (events lost while disconnected)."""
        assert isinstance(ev, QueueMember)
        a = self._member(ev.interface, ev.member_name)
        if a is None:
            return []
        at = ev.timestamp
        out = self._expire(a, at)
        if a.since is None or at - a.since < self.reconcile_grace_s:
            return out
        idle = ev.in_call is False and ev.status == _DEVICE_NOT_INUSE
        if not idle:
            return out
        if a.state in CALL_STATES and a.call is not None and a.call.active:
            out.extend(self._end_call(a, at, CAUSE_RECONCILE, wait_complete=True))
        elif a.state == State.RINGING and a.ring is not None:
            out.extend(self._end_ring(a, at, CAUSE_RECONCILE, missed=False))
        return out

    _handlers: ClassVar[Mapping[type[AmiEvent], Callable[[AgentBook, AmiEvent], list[Transition]]]] = {
        AgentCalled: _on_called,
        AgentConnect: _on_connect,
        AgentComplete: _on_complete,
        AgentRingNoAnswer: _on_rna,
        AgentDump: _on_dump,
        QueueCallerAbandon: _on_abandon,
        Hangup: _on_hangup,
        Hold: _on_hold,
        Unhold: _on_hold,
        BridgeEnter: _on_bridge_enter,
        QueueMemberPause: _on_member_pause,
        QueueMember: _on_queue_member,
    }

    # ------------------------------------------------------------------------------------------ helpers

    def _get(self, agent: str) -> _Agent:
        a = self._agents.get(agent)
        if a is None:
            a = self._agents[agent] = _Agent(agent)
        return a

    def _member(self, interface: str | None, member_name: str | None) -> _Agent | None:
        """The logged-in agent of a queue member (events of logged-out agents are ignored)."""
        name = self.agent_for(interface, member_name)
        if name is None:
            return None
        a = self._agents.get(name)
        if a is None or a.state == State.LOGGED_OUT:
            return None
        return a

    @staticmethod
    def _check_reason(reason: str | None) -> None:
        if not reason:
            raise ValueError("a pause needs a reason code")
        if is_echo(reason):
            raise ValueError(f"pause reason {reason!r} uses the reserved prefix {ECHO_PREFIX!r}")

    def _acw_timeout(self, queue: str | None) -> float:
        w = self.wrapup_s.get(queue, self.default_wrapup_s) if queue is not None else self.default_wrapup_s
        return min(w, self.acw_cap_s) if w > 0 else 0.0

    def _effective(self, a: _Agent, at: float) -> State:
        """The state at ``at`` without mutating (an ACW past its deadline counts as available)."""
        if a.state == State.ACW and a.acw_until is not None and at >= a.acw_until:
            return State.AVAILABLE
        return a.state

    def _expire(self, a: _Agent, at: float) -> list[Transition]:
        if a.state == State.ACW and a.acw_until is not None and at >= a.acw_until:
            return [self._move(a, State.AVAILABLE, a.acw_until, CAUSE_ACW_TIMEOUT, **self._call_ids(a))]
        return []

    @staticmethod
    def _same_call(c: _Call, uid: str | None, linkedid: str | None, queue: str | None) -> bool:
        if uid is not None and c.uniqueid is not None:
            return uid == c.uniqueid
        return linkedid is not None and linkedid == c.linkedid and _queue_ok(c.queue, queue)

    @staticmethod
    def _stale(a: _Agent, uid: str | None, at: float) -> bool:
        """A ring/connect event for a caller whose ring/call with this agent ended after that instant."""
        return uid is not None and any(u == uid and at <= end for u, end in a.finished)

    def _prune_waiting(self, a: _Agent, at: float) -> None:
        while a.waiting_complete:
            c = a.waiting_complete[0]
            if c.ended_at is not None and at - c.ended_at > self.waiting_complete_ttl_s:
                a.waiting_complete.popleft()
            else:
                break

    @staticmethod
    def _ring_ids(r: _Ring) -> dict[str, str | None]:
        return {"linkedid": r.linkedid, "queue": r.queue, "uniqueid": r.uniqueid}

    def _call_ids(self, a: _Agent) -> dict[str, str | None]:
        """The ids of the call the agent's current state belongs to (ring, call or its ACW)."""
        if a.state == State.RINGING and a.ring is not None:
            return self._ring_ids(a.ring)
        if (a.state in CALL_STATES or a.state == State.ACW) and a.call is not None:
            return {"linkedid": a.call.linkedid, "queue": a.call.queue, "uniqueid": a.call.uniqueid}
        return {}

    def _drop_call(self, a: _Agent, at: float) -> None:
        """Forget the ring/call in progress (forced state); its late events are absorbed."""
        if a.ring is not None:
            if a.ring.uniqueid:
                a.finished.append((a.ring.uniqueid, max(at, a.since or at)))
            a.ring = None
        c = a.call
        if c is not None and c.active:
            c.active = False
            c.ended_at = max(at, a.since or at)
            a.waiting_complete.append(c)
            if c.uniqueid:
                a.finished.append((c.uniqueid, c.ended_at))

    def _end_call(self, a: _Agent, at: float, cause: str, *, wait_complete: bool = False) -> list[Transition]:
        c = a.call
        assert c is not None
        ids = self._call_ids(a)
        end = max(at, a.since or at)
        c.active = False
        c.ended_at = end
        if c.uniqueid:
            a.finished.append((c.uniqueid, end))
        if wait_complete:
            a.waiting_complete.append(c)
        if a.ext_pause is not None:
            reason, a.ext_pause = a.ext_pause, None
            return [self._move(a, State.PAUSED, at, cause, reason=reason, **ids)]
        wrap = self._acw_timeout(c.queue)
        if wrap > 0:
            t = self._move(a, State.ACW, at, cause, **ids)
            a.acw_until = t.at + wrap
            return [t]
        return [self._move(a, State.AVAILABLE, at, cause, **ids)]

    def _end_ring(self, a: _Agent, at: float, cause: str, *, missed: bool) -> list[Transition]:
        r = a.ring
        assert r is not None
        ids = self._ring_ids(r)
        a.ring = None
        if r.uniqueid:
            a.finished.append((r.uniqueid, max(at, a.since or at)))
        if a.ext_pause is not None:
            reason, a.ext_pause = a.ext_pause, None
            return [self._move(a, State.PAUSED, at, cause, reason=reason, **ids)]
        if r.resume_reason is not None:
            return [self._move(a, State.PAUSED, at, cause, reason=r.resume_reason, **ids)]
        out = [self._move(a, State.AVAILABLE, at, cause, **ids)]
        if missed and self.auto_pause_on_rna:
            out.append(self._move(a, State.PAUSED, at, cause, reason=MISSED_REASON, **ids))
        return out

    def _end_rings(self, match: Callable[[_Ring], bool], at: float, exclude: str | None = None) -> list[Transition]:
        out: list[Transition] = []
        for name in sorted(self._ringing):
            a = self._agents[name]
            r = a.ring
            if name == exclude or r is None or at < r.started_at or not match(r):
                continue
            out.extend(self._end_ring(a, at, CAUSE_RING_CANCELLED, missed=False))
        return out

    def _index(self, a: _Agent, state: State) -> None:
        for s, bucket in ((State.RINGING, self._ringing), (State.ACW, self._acw)):
            if state == s:
                bucket.add(a.name)
            else:
                bucket.discard(a.name)
        if state in CALL_STATES:
            self._in_call.add(a.name)
        else:
            self._in_call.discard(a.name)

    def _move(
        self,
        a: _Agent,
        to: State,
        at: float,
        cause: str,
        *,
        reason: str | None = None,
        linkedid: str | None = None,
        queue: str | None = None,
        uniqueid: str | None = None,
    ) -> Transition:
        at = max(at, a.since) if a.since is not None else at  # monotonic per agent
        t = Transition(a.name, a.state, to, at, reason if to == State.PAUSED else None, cause,
                       linkedid, queue, uniqueid)
        if a.state == State.LOGGED_OUT and to != State.LOGGED_OUT:
            a.logged_in_at = at
        a.state = to
        a.since = at
        a.reason = t.reason
        if to != State.ACW:
            a.acw_until = None
        if to == State.LOGGED_OUT:
            a.logged_in_at = None
            a.call = None
            a.ring = None
            a.ext_pause = None
        if to != State.RINGING:
            a.ring = None
        self._index(a, to)
        return t
