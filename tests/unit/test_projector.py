"""The queue-call projector: KPIS.md facts from event streams; the same facts whatever the delivery order."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from reporting.projector import CallExtras, Ev, project

T = 1_795_000_000.0
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"


def ev(name: str, at: float, uid: str | None = "c.1", linkedid: str | None = "c.1", queue: str | None = "q",
       **fields: str) -> Ev:
    f = {"Event": name, "Timestamp": f"{T + at:.6f}", **fields}
    if uid:
        f["Uniqueid"] = uid
    if linkedid:
        f["Linkedid"] = linkedid
    if queue:
        f["Queue"] = queue
    return Ev(name, T + at, uid, linkedid, queue, f)


def answered_call(hold: bool = True, complete_fields: bool = True) -> list[Ev]:
    evs = [
        ev("QueueCallerJoin", 0.0, CallerIDNum="+4930123"),
        ev("AgentCalled", 3.0, MemberName="ann", DestUniqueid="a.1"),
        ev("QueueCallerLeave", 4.5),
        ev("AgentConnect", 4.5, MemberName="ann", DestUniqueid="a.1", DestChannel="PJSIP/agent1-00000001",
           HoldTime="5", RingTime="2"),
    ]
    if hold:
        evs += [ev("Hold", 6.0, uid="a.1", queue=None), ev("Unhold", 8.25, uid="a.1", queue=None)]
    if complete_fields:
        evs.append(ev("AgentComplete", 10.5, MemberName="ann", Reason="caller", TalkTime="6"))
    else:  # Asterisk under load: no channel fields at all (DESIGN §7)
        evs.append(ev("AgentComplete", 10.5, uid=None, linkedid=None, MemberName="ann", Reason="caller"))
    evs += [ev("Hangup", 10.5, queue=None), ev("Hangup", 10.6, uid="a.1", queue=None)]
    return evs


def test_an_answered_call_with_hold_gives_exact_times() -> None:
    (qc,) = project(answered_call(), CallExtras(acw={("ann", "c.1"): 4.0}, dispositions={("ann", "c.1"): "resolved"},
                                                csat={"c.1": 5}))
    assert (qc.outcome, qc.agent, qc.caller_number) == ("answered", "ann", "+4930123")
    assert (qc.wait_s, qc.ring_s, qc.hold_s, qc.talk_s, qc.acw_s) == (4.5, 1.5, 2.25, 3.75, 4.0)
    assert (qc.disposition, qc.csat, qc.transferred, qc.final) == ("resolved", 5, False, True)


def test_agent_complete_without_channel_fields_is_correlated_by_queue_and_member() -> None:
    (qc,) = project(answered_call(hold=False, complete_fields=False), CallExtras(acw={("ann", "c.1"): 0.0}))
    assert qc.talk_s == 6.0 and qc.final


def test_facts_stay_open_while_the_after_call_work_is_not_known() -> None:
    (qc,) = project(answered_call())
    assert qc.acw_s is None and not qc.final


def test_acw_is_capped() -> None:
    (qc,) = project(answered_call(), CallExtras(acw={("ann", "c.1"): 1000.0}))
    assert qc.acw_s == 300.0


@pytest.mark.parametrize(("wait", "outcome"), [(6.0, "abandoned"), (4.999, "short_abandoned")])
def test_abandon_and_short_abandon(wait: float, outcome: str) -> None:
    (qc,) = project([ev("QueueCallerJoin", 0.0), ev("QueueCallerAbandon", wait), ev("Hangup", wait, queue=None)])
    assert (qc.outcome, qc.wait_s, qc.final) == (outcome, round(wait, 3), True)


def test_timeout_then_answered_in_the_overflow_queue_is_two_queue_calls() -> None:
    # Asterisk 22 reports the timeout as an abandon first (measured), then the dialplan's QueueExit says why.
    evs = [ev("QueueCallerJoin", 0.0, queue="front"), ev("QueueCallerAbandon", 5.0, queue="front"),
           ev("QueueCallerLeave", 5.0, queue="front"),
           ev("UserEvent", 5.01, queue=None, UserEvent="QueueExit", Status="TIMEOUT", **{"Queue": "front"}),
           ev("QueueCallerJoin", 5.02, queue="spill"),
           ev("AgentConnect", 7.0, queue="spill", MemberName="bo", DestUniqueid="a.2"),
           ev("AgentComplete", 9.0, queue="spill", MemberName="bo", Reason="agent"),
           ev("Hangup", 9.0, queue=None)]
    first, second = project(evs, CallExtras(acw={("bo", "c.1"): 0.0}))
    assert (first.queue, first.outcome, first.wait_s) == ("front", "timeout", 5.0)
    assert (second.queue, second.outcome, second.wait_s, second.talk_s) == ("spill", "answered", 1.98, 2.0)


def test_no_agents_callback_and_blind_transfer() -> None:
    empty = project([ev("QueueCallerJoin", 0.0), ev("QueueCallerLeave", 0.01),
                     ev("UserEvent", 0.02, queue=None, UserEvent="QueueExit", Status="JOINEMPTY", Queue="q"),
                     ev("Hangup", 1.0, queue=None)])
    assert [(c.outcome, c.wait_s) for c in empty] == [("exit_empty", 0.01)]
    cb = project([ev("QueueCallerJoin", 0.0), ev("QueueCallerLeave", 8.0),
                  ev("UserEvent", 8.01, queue=None, UserEvent="CallbackRequest", Queue="q", Number="+4930999"),
                  ev("Hangup", 9.0, queue=None)])
    assert [(c.outcome, c.wait_s) for c in cb] == [("callback_requested", 8.0)]
    tr = [*answered_call(hold=False)[:-3],
          ev("BlindTransfer", 7.0, uid=None, queue=None, TransfererUniqueid="a.1", Result="Success"),
          ev("AgentComplete", 7.0, MemberName="ann", Reason="transfer"), ev("Hangup", 30.0, queue=None)]
    (qc,) = project(tr, CallExtras(acw={("ann", "c.1"): 0.0}))
    assert (qc.transferred, qc.talk_s) == (True, 2.5)


def test_a_call_still_waiting_has_no_outcome() -> None:
    (qc,) = project([ev("QueueCallerJoin", 0.0), ev("AgentCalled", 1.0, MemberName="ann")])
    assert qc.outcome is None and not qc.final


def _facts(evs: list[Ev], extras: CallExtras) -> list[dict[str, Any]]:
    return [c.facts() for c in project(evs, extras)]


@pytest.mark.parametrize("seed", range(5))
def test_replaying_twice_and_shuffled_gives_identical_facts(seed: int) -> None:
    extras = CallExtras(acw={("ann", "c.1"): 2.0})
    evs = answered_call()
    first = _facts(evs, extras)
    assert _facts(evs, extras) == first
    shuffled = evs[:]
    random.Random(seed).shuffle(shuffled)
    assert _facts(shuffled, extras) == first


def _recorded() -> list[Path]:
    return sorted(FIXTURES.glob("*.json"))


@pytest.mark.parametrize("path", _recorded(), ids=lambda p: p.stem)
def test_recorded_streams_give_the_recorded_facts_in_any_order(path: Path) -> None:
    """Event streams recorded from real calls (tests/fixtures/ami), with the facts the live run stored."""
    data = json.loads(path.read_text())
    evs = [Ev(e["name"], e["ts"], e["uniqueid"], e["linkedid"], e["queue"], e["fields"]) for e in data["events"]]
    extras = CallExtras(acw={(a, lid): v for a, lid, v in data["acw"]})
    got = _facts(evs, extras)
    want = data["facts"]
    assert [{k: g[k] for k in want[0]} for g in got] == want
    for seed in range(3):
        shuffled = evs[:]
        random.Random(seed).shuffle(shuffled)
        assert _facts(shuffled, extras) == got
