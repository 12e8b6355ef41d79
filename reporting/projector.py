"""Queue-call facts (KPIS.md, "Call facts") from one call's stored AMI events: a pure, deterministic function.

Why pure: the same code runs on the live path (a call ends → its linkedid is projected again) and when a day is
rebuilt from its events, and tests replay recorded event streams through it. The events of a call are sorted by
their own instant and, for equal instants, by a fixed rank and their content, so events delivered in any order
give identical facts.

Durations come from the events' `Timestamp` headers (µs), never from app_queue's whole-second HoldTime/TalkTime
(DESIGN §7). What the events do not hold is passed in: after-call work (the agent's state log), the disposition
and the survey score.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SHORT_ABANDON_S = 5.0
ACW_CAP_S = 300.0
NUMBER = re.compile(r"^\+?[0-9]{1,20}$")

#: Outcomes (KPIS.md).
ANSWERED, ABANDONED, SHORT_ABANDONED = "answered", "abandoned", "short_abandoned"
TIMEOUT, EXIT_EMPTY, TRANSFERRED_OUT, CALLBACK = "timeout", "exit_empty", "transferred_out", "callback_requested"

#: app_queue's QUEUESTATUS (dialplan UserEvent QueueExit) -> outcome.
_EXIT_STATUS = {"TIMEOUT": TIMEOUT, "FULL": TIMEOUT, "JOINEMPTY": EXIT_EMPTY, "LEAVEEMPTY": EXIT_EMPTY,
                "JOINUNAVAIL": EXIT_EMPTY, "LEAVEUNAVAIL": EXIT_EMPTY, "CONTINUE": TRANSFERRED_OUT,
                "WITHDRAW": TRANSFERRED_OUT}

#: Tie-break for events with the same instant: the order Asterisk emits them in.
_RANK = {"QueueCallerJoin": 0, "AgentCalled": 1, "AgentRingNoAnswer": 2, "QueueCallerLeave": 3, "AgentConnect": 4,
         "BridgeEnter": 5, "Hold": 6, "Unhold": 7, "BlindTransfer": 8, "AttendedTransfer": 8, "AgentComplete": 9,
         "QueueCallerAbandon": 10, "UserEvent": 11, "BridgeLeave": 12, "Hangup": 13}


@dataclass(frozen=True)
class Ev:
    """One stored event: name, instant (epoch seconds, µs), ids and every header as received."""

    name: str
    ts: float
    uniqueid: str | None
    linkedid: str | None
    queue: str | None
    fields: Mapping[str, str]

    def get(self, header: str) -> str | None:
        v = self.fields.get(header)
        return v if v not in (None, "") else None

    @classmethod
    def from_row(cls, row: Any) -> Ev:
        fields = row["fields"]
        if isinstance(fields, str):
            fields = json.loads(fields)
        return cls(row["name"], row["ts"].timestamp(), row["uniqueid"], row["linkedid"], row["queue"], fields)

    def sort_key(self) -> tuple[float, int, str]:
        return (self.ts, _RANK.get(self.name, 50), json.dumps(sorted(self.fields.items())))


@dataclass
class QueueCall:
    """One caller's stay in one queue, with the KPIS.md fields (seconds, ms precision)."""

    linkedid: str
    uniqueid: str
    queue: str
    caller_number: str
    entered_at: float
    outcome: str | None = None  # None: still in progress
    wait_s: float | None = None
    agent: str | None = None
    ring_s: float | None = None
    talk_s: float | None = None
    hold_s: float | None = None
    acw_s: float | None = None
    transferred: bool = False
    disposition: str | None = None
    csat: int | None = None
    ended_at: float | None = None  # end of talk, abandon or exit (FCR counts repeats after this)
    final: bool = False  # nothing about it can change any more
    # working state, not part of the facts
    answered_at: float | None = field(default=None, repr=False)
    agent_uid: str | None = field(default=None, repr=False)
    agent_channel: str | None = field(default=None, repr=False)
    rings: dict[str, float] = field(default_factory=dict, repr=False)
    hold_since: dict[str, float] = field(default_factory=dict, repr=False)
    held: float = field(default=0.0, repr=False)
    left_at: float | None = field(default=None, repr=False)
    from_queue_log: bool = field(default=False, repr=False)  # its end was reconciled: the agent's states are lost
    exit_status: str | None = field(default=None, repr=False)

    def facts(self) -> dict[str, Any]:
        keys = ("linkedid", "uniqueid", "queue", "caller_number", "entered_at", "outcome", "wait_s", "agent",
                "ring_s", "talk_s", "hold_s", "acw_s", "transferred", "disposition", "csat", "ended_at", "final")
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class CallExtras:
    """What the events do not hold. `acw`: (agent, linkedid) -> after-call work in seconds (0 when the agent did
    not enter ACW after the call), None or absent while the agent's state log does not tell yet."""

    acw: Mapping[tuple[str, str], float | None] = field(default_factory=dict)
    dispositions: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (agent, linkedid) -> code
    csat: Mapping[str, int] = field(default_factory=dict)  # linkedid -> score


def _ms(x: float) -> float:
    return round(max(0.0, x), 3)


def _number(raw: str | None) -> str:
    return raw if raw and NUMBER.match(raw) else ""


def project(events: Iterable[Ev], extras: CallExtras | None = None, *,
            short_abandon_s: float = SHORT_ABANDON_S, acw_cap_s: float = ACW_CAP_S) -> list[QueueCall]:
    """The queue calls found in these events (one call's, or several calls'), in the order they entered."""
    extras = extras or CallExtras()
    calls: list[QueueCall] = []
    open_: dict[tuple[str, str], QueueCall] = {}  # (caller uniqueid, queue) -> queue call not left yet
    by_uid: dict[str, list[QueueCall]] = {}
    hung_up: dict[str, float] = {}

    def current(uid: str | None, queue: str | None) -> QueueCall | None:
        if uid is None:
            return None
        if queue is not None:
            qc = open_.get((uid, queue))
            if qc is not None:
                return qc
        cands = [c for c in by_uid.get(uid, []) if queue is None or c.queue == queue]
        return cands[-1] if cands else None

    def talking(ev: Ev) -> list[QueueCall]:
        """Answered queue calls whose talk is in progress and to which this channel belongs."""
        return [c for c in calls if c.outcome == ANSWERED and c.talk_s is None and ev.uniqueid is not None
                and ev.uniqueid in (c.uniqueid, c.agent_uid)]

    for ev in sorted(events, key=Ev.sort_key):
        n = ev.name
        if n == "QueueCallerJoin" and ev.uniqueid and ev.queue:
            new = QueueCall(ev.linkedid or ev.uniqueid, ev.uniqueid, ev.queue, _number(ev.get("CallerIDNum")),
                            ev.ts)
            calls.append(new)
            open_[(ev.uniqueid, ev.queue)] = new
            by_uid.setdefault(ev.uniqueid, []).append(new)
        elif n == "AgentCalled":
            qc = current(ev.uniqueid, ev.queue)
            member = ev.get("MemberName")
            if qc is not None and member:
                qc.rings[member] = ev.ts
        elif n == "AgentConnect":
            qc = current(ev.uniqueid, ev.queue)
            if qc is not None and qc.outcome is None:
                member = ev.get("MemberName")
                qc.outcome, qc.answered_at, qc.agent = ANSWERED, ev.ts, member
                qc.wait_s = _ms(ev.ts - qc.entered_at)
                qc.ring_s = _ms(ev.ts - qc.rings.get(member or "", ev.ts))
                qc.agent_uid, qc.agent_channel = ev.get("DestUniqueid"), ev.get("DestChannel")
                open_.pop((qc.uniqueid, qc.queue), None)
        elif n == "BridgeEnter":  # Local members: the agent's phone channel shows here
            for c in calls:
                if (c.outcome == ANSWERED and c.talk_s is None and c.linkedid == ev.linkedid
                        and (c.agent_channel or "").lower().startswith("local/")
                        and ev.uniqueid not in (c.uniqueid, c.agent_uid)):
                    c.agent_uid = ev.uniqueid
        elif n == "Hold":
            for c in talking(ev):
                c.hold_since.setdefault(ev.uniqueid or "", ev.ts)
        elif n == "Unhold":
            for c in talking(ev):
                since = c.hold_since.pop(ev.uniqueid or "", None)
                if since is not None and not c.hold_since:
                    c.held += ev.ts - since
        elif n in ("BlindTransfer", "AttendedTransfer"):
            transferer = ev.get("TransfererUniqueid") or ev.get("OrigTransfererUniqueid")
            for c in calls:
                if c.outcome == ANSWERED and transferer and transferer == c.agent_uid:
                    c.transferred = True
        elif n == "AgentComplete":
            qc = _completed(calls, ev)
            if qc is not None:
                _end_talk(qc, ev.ts)
                # Rebuilt from queue_log, or closed because Asterisk lost the call: no after-call work will come.
                qc.from_queue_log = ev.get("Source") in ("queue_log", "pbx_lost")
                if (ev.get("Reason") or "").lower() == "transfer":
                    qc.transferred = True
        elif n == "QueueCallerAbandon":
            qc = current(ev.uniqueid, ev.queue)
            if qc is not None and qc.outcome is None:
                wait = ev.ts - qc.entered_at
                qc.outcome = SHORT_ABANDONED if wait < short_abandon_s else ABANDONED
                qc.wait_s, qc.ended_at = _ms(wait), ev.ts
                open_.pop((qc.uniqueid, qc.queue), None)
        elif n == "QueueCallerLeave":
            qc = current(ev.uniqueid, ev.queue)
            if qc is not None and qc.outcome is None:
                qc.left_at = ev.ts
        elif n == "UserEvent":
            kind = ev.get("UserEvent")
            qc = current(ev.uniqueid, ev.get("Queue"))
            if qc is None:
                continue
            if (kind == "QueueExit" and qc.outcome in (ABANDONED, SHORT_ABANDONED) and qc.ended_at is not None
                    and ev.ts - qc.ended_at < 1.0):
                # app_queue reports a timeout as QueueCallerAbandon too (measured); the dialplan's QueueExit
                # right after it says why the caller really left. A caller who hung up sends no QueueExit.
                outcome = _EXIT_STATUS.get((ev.get("Status") or "").upper())
                if outcome is not None:
                    qc.outcome = outcome
                continue
            if qc.outcome is not None:
                continue
            if kind == "QueueExit":
                outcome = _EXIT_STATUS.get((ev.get("Status") or "").upper())
                if outcome is not None:
                    _exit(qc, outcome, open_)
            elif kind == "CallbackRequest":
                _exit(qc, CALLBACK, open_)
        elif n == "Hangup" and ev.uniqueid:
            hung_up[ev.uniqueid] = ev.ts
            for c in calls:
                if c.outcome == ANSWERED and c.talk_s is None and ev.uniqueid in (c.uniqueid, c.agent_uid):
                    _end_talk(c, ev.ts)

    for done in calls:
        if done.outcome is None and done.left_at is not None:
            left = done.left_at
            later = any(c.uniqueid == done.uniqueid and c.entered_at >= left and c is not done for c in calls)
            if later or done.uniqueid in hung_up:  # left for another queue (overflow), or left and was cut off
                _exit(done, TIMEOUT if later else TRANSFERRED_OUT, open_)
        _finish(done, extras, hung_up, acw_cap_s)
    return calls


def _completed(calls: list[QueueCall], ev: Ev) -> QueueCall | None:
    """The answered queue call an AgentComplete ends: by caller channel, else (no channel fields, DESIGN §7) by
    queue and member, the earliest still talking."""
    member = ev.get("MemberName")
    for qc in calls:
        if qc.outcome == ANSWERED and qc.talk_s is None and ev.uniqueid and qc.uniqueid == ev.uniqueid:
            return qc
    for qc in calls:
        if qc.outcome == ANSWERED and qc.talk_s is None and qc.queue == ev.queue and qc.agent == member:
            return qc
    return None


def _end_talk(qc: QueueCall, at: float) -> None:
    assert qc.answered_at is not None
    for since in qc.hold_since.values():  # a hold still open when the talk ends closes there
        qc.held += max(0.0, at - since)
        break
    qc.hold_since.clear()
    qc.hold_s = _ms(qc.held)
    qc.talk_s = _ms(at - qc.answered_at - qc.held)
    qc.ended_at = at


def _exit(qc: QueueCall, outcome: str, open_: dict[tuple[str, str], QueueCall]) -> None:
    qc.outcome = outcome
    end = qc.left_at if qc.left_at is not None else None
    if end is not None:
        qc.wait_s, qc.ended_at = _ms(end - qc.entered_at), end
    open_.pop((qc.uniqueid, qc.queue), None)


def _finish(qc: QueueCall, extras: CallExtras, hung_up: Mapping[str, float], acw_cap_s: float) -> None:
    if qc.outcome in (TIMEOUT, EXIT_EMPTY, TRANSFERRED_OUT, CALLBACK) and qc.wait_s is None:
        end = hung_up.get(qc.uniqueid)
        if end is not None:
            qc.wait_s, qc.ended_at = _ms(end - qc.entered_at), end
    if qc.outcome != ANSWERED:
        qc.final = qc.outcome is not None and qc.wait_s is not None
        return
    key = (qc.agent or "", qc.linkedid)
    qc.disposition = extras.dispositions.get(key)
    qc.csat = extras.csat.get(qc.linkedid)
    if qc.talk_s is None:
        return
    acw = extras.acw.get(key)  # absent or None: the agent's state log does not tell yet
    qc.acw_s = None if acw is None else _ms(min(acw, acw_cap_s))
    # A call whose end was rebuilt from queue_log (the service was away) will never learn its after-call work.
    qc.final = qc.acw_s is not None or qc.from_queue_log
