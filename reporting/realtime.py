"""The wallboard's real-time queue figures (KPIS.md, "Real time"), kept in memory from the event stream.

Why in memory: a wallboard wants every change at once, and each update must carry the instant of the event
that caused it (its latency is measurable). Per queue: callers waiting now and the longest wait, and today's
offered, answered, abandoned, service level and ASA. "Today" is the UTC day (as the reports' default zone).

At start and after every AMI reconnect the board is rebuilt: today's counts from the stored facts, the callers
waiting from Asterisk's own QueueStatus. Agents by state per queue come from the ACD (the web layer joins them:
this package does not import acd).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reporting.projector import SHORT_ABANDON_S
from telephony.ami.events import (
    AgentConnect,
    AmiEvent,
    QueueCallerAbandon,
    QueueCallerJoin,
    QueueCallerLeave,
    QueueEntry,
    UserEvent,
)

DEFAULT_SL_S = 20.0
_TIMEOUT_STATUS = {"TIMEOUT", "FULL", "JOINEMPTY", "LEAVEEMPTY", "JOINUNAVAIL", "LEAVEUNAVAIL"}


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


@dataclass
class QueueToday:
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    timeout: int = 0
    answered_in_sl: int = 0
    wait_sum: float = 0.0


@dataclass
class QueueBoard:
    name: str
    waiting: dict[str, float] = field(default_factory=dict)  # caller uniqueid -> entered at
    today: QueueToday = field(default_factory=QueueToday)
    recent_abandon: dict[str, bool] = field(default_factory=dict)  # uid -> counted short? (a QueueExit may follow)

    def figures(self, now: float) -> dict[str, Any]:
        t = self.today
        base = t.offered - t.short_abandoned
        return {
            "queue": self.name,
            "waiting": len(self.waiting),
            "longest_wait_s": round(now - min(self.waiting.values()), 3) if self.waiting else 0.0,
            "offered": t.offered, "answered": t.answered, "abandoned": t.abandoned,
            "short_abandoned": t.short_abandoned, "timeout": t.timeout,
            "service_level": t.answered_in_sl / base if base > 0 else None,
            "asa_s": round(t.wait_sum / t.answered, 3) if t.answered else None,
        }


class RealtimeBoard:
    def __init__(self, *, sl_threshold: Callable[[str], float | None] = lambda q: None,
                 publish: Callable[[dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.sl_threshold = sl_threshold
        self.publish = publish
        self.clock = clock
        self.queues: dict[str, QueueBoard] = {}
        self.day = day_of(clock())
        self._entered: dict[tuple[str, str], float] = {}  # (uid, queue) -> entered at, for calls of today

    def board(self, queue: str) -> QueueBoard:
        b = self.queues.get(queue)
        if b is None:
            b = self.queues[queue] = QueueBoard(queue)
        return b

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock()
        self._roll(now)
        return [b.figures(now) for _, b in sorted(self.queues.items())]

    # ------------------------------------------------------------------ rebuild
    def reset(self, facts_today: Iterable[Any], waiting: Iterable[AmiEvent], now: float) -> None:
        """Today's counts from stored facts (rows of queue_calls), the callers waiting now from QueueStatus."""
        self.queues.clear()
        self._entered.clear()
        self.day = day_of(now)
        for f in facts_today:
            q = self.board(f["queue"])
            self._entered[(f["uniqueid"], f["queue"])] = f["entered_at"].timestamp()
            q.today.offered += 1
            outcome, wait = f["outcome"], f["wait_s"]
            if outcome == "answered" and wait is not None:
                self._count_answer(q, wait)
            elif outcome == "abandoned":
                q.today.abandoned += 1
            elif outcome == "short_abandoned":
                q.today.short_abandoned += 1
            elif outcome in ("timeout", "exit_empty"):
                q.today.timeout += 1
        for ev in waiting:
            if isinstance(ev, QueueEntry) and ev.queue and ev.uniqueid:
                q = self.board(ev.queue)
                entered = now - float(ev.wait_s or 0)
                q.waiting[ev.uniqueid] = entered
                if (ev.uniqueid, ev.queue) not in self._entered:
                    self._entered[(ev.uniqueid, ev.queue)] = entered
                    q.today.offered += 1

    # ------------------------------------------------------------------ events
    def apply(self, ev: AmiEvent) -> None:
        """Fold one event; publish the queue's figures if they changed (with the event's own instant)."""
        queue = ev.queue or (ev.get("Queue") if isinstance(ev, UserEvent) else None)
        uid = ev.uniqueid
        if not queue or not uid:
            return
        self._roll(ev.timestamp)
        q = self.board(queue)
        key = (uid, queue)
        changed = False
        if isinstance(ev, QueueCallerJoin):
            if key not in self._entered:
                self._entered[key] = ev.timestamp
                q.today.offered += 1
            q.waiting[uid] = ev.timestamp
            changed = True
        elif isinstance(ev, QueueCallerLeave):
            changed = q.waiting.pop(uid, None) is not None
        elif isinstance(ev, AgentConnect):
            q.waiting.pop(uid, None)
            entered = self._entered.get(key)
            if entered is not None:
                self._count_answer(q, ev.timestamp - entered)
                changed = True
        elif isinstance(ev, QueueCallerAbandon):
            q.waiting.pop(uid, None)
            entered = self._entered.get(key)
            if entered is not None:
                short = ev.timestamp - entered < SHORT_ABANDON_S
                if short:
                    q.today.short_abandoned += 1
                else:
                    q.today.abandoned += 1
                q.recent_abandon[uid] = short
                changed = True
        elif isinstance(ev, UserEvent) and ev.user_event == "QueueExit":
            q.waiting.pop(uid, None)
            if (ev.get("Status") or "").upper() in _TIMEOUT_STATUS and key in self._entered:
                was_short = q.recent_abandon.pop(uid, None)  # app_queue reports a timeout as an abandon first
                if was_short is True:
                    q.today.short_abandoned -= 1
                elif was_short is False:
                    q.today.abandoned -= 1
                q.today.timeout += 1
                changed = True
        if changed and self.publish is not None:
            self.publish({"type": "queue_realtime", **q.figures(ev.timestamp), "event_ts": ev.timestamp})

    def _count_answer(self, q: QueueBoard, wait: float) -> None:
        q.today.answered += 1
        q.today.wait_sum += wait
        threshold = self.sl_threshold(q.name)
        if wait <= (DEFAULT_SL_S if threshold is None else threshold):
            q.today.answered_in_sl += 1

    def _roll(self, now: float) -> None:
        """A new day starts from zero (callers still waiting stay)."""
        day = day_of(now)
        if day == self.day:
            return
        self.day = day
        for q in self.queues.values():
            q.today = QueueToday()
            q.recent_abandon.clear()
        self._entered = {k: v for k, v in self._entered.items() if day_of(v) == day}
