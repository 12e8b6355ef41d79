"""The wallboard's queue figures from events: waiting, today's counts, SL, ASA; stamped with the event's instant."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reporting.realtime import RealtimeBoard
from telephony.ami import parse_event

T = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()


def ev(name: str, at: float, uid: str = "c.1", queue: str = "q", **fields: str) -> Any:
    return parse_event({"Event": name, "Timestamp": f"{T + at:.6f}", "Uniqueid": uid, "Linkedid": uid,
                        "Queue": queue, **fields}, T + at)


def board(published: list[dict[str, Any]], now: float = T) -> RealtimeBoard:
    return RealtimeBoard(sl_threshold=lambda q: 10.0, publish=published.append, clock=lambda: now)


def test_a_call_waits_then_is_answered_within_the_service_level() -> None:
    out: list[dict[str, Any]] = []
    b = board(out)
    b.apply(ev("QueueCallerJoin", 0.0))
    assert (out[-1]["waiting"], out[-1]["offered"], out[-1]["event_ts"]) == (1, 1, T)
    b.apply(ev("QueueCallerLeave", 4.0))
    b.apply(ev("AgentConnect", 4.0, MemberName="ann"))
    last = out[-1]
    assert (last["waiting"], last["answered"], last["asa_s"], last["service_level"]) == (0, 1, 4.0, 1.0)
    assert last["event_ts"] == T + 4.0


def test_abandons_short_abandons_and_a_timeout_reported_as_an_abandon_first() -> None:
    out: list[dict[str, Any]] = []
    b = board(out)
    for uid in ("a", "s", "t"):
        b.apply(ev("QueueCallerJoin", 0.0, uid=uid))
    b.apply(ev("QueueCallerAbandon", 7.0, uid="a"))
    b.apply(ev("QueueCallerAbandon", 2.0, uid="s"))
    b.apply(ev("QueueCallerAbandon", 9.0, uid="t"))
    b.apply(ev("UserEvent", 9.0, uid="t", UserEvent="QueueExit", Status="TIMEOUT"))
    last = out[-1]
    assert (last["offered"], last["abandoned"], last["short_abandoned"], last["timeout"]) == (3, 1, 1, 1)
    assert last["service_level"] == 0.0 and last["asa_s"] is None and last["waiting"] == 0


def test_rebuilt_from_facts_and_waiting_callers_then_a_new_day_starts_at_zero() -> None:
    b = board([])
    facts = [{"uniqueid": "x", "queue": "q", "entered_at": datetime.fromtimestamp(T - 60, UTC),
              "outcome": "answered", "wait_s": 30.0}]
    waiting = [parse_event({"Event": "QueueEntry", "Queue": "q", "Uniqueid": "w", "Wait": "12"}, T)]
    b.reset(facts, waiting, T)
    (q,) = b.snapshot()
    assert (q["offered"], q["answered"], q["waiting"], q["longest_wait_s"], q["service_level"]) == (2, 1, 1, 12.0,
                                                                                                   0.0)
    b.apply(ev("QueueCallerJoin", 86400.0, uid="n"))
    q = b.queues["q"].figures(T + 86400.0)
    assert (q["offered"], q["answered"], q["waiting"]) == (1, 0, 2)
