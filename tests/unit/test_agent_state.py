"""Agent state machine: every path, illegal commands, hold by channel, AgentComplete correlation, echoes,
duplicates and out-of-order events, restore, and a replay of a recorded-style AMI stream."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from acd.agent_figures import agent_figures, paused_by_reason, state_durations
from acd.agent_state import (
    CAUSE_ACW_TIMEOUT,
    CAUSE_COMPLETE,
    CAUSE_CONNECT,
    CAUSE_EXT_PAUSE,
    CAUSE_EXT_UNPAUSE,
    CAUSE_HANGUP,
    CAUSE_RING_CANCELLED,
    CAUSE_RNA,
    AgentBook,
    AgentStatus,
    Disposition,
    IllegalCommand,
    State,
    Transition,
)
from telephony.ami.events import AmiEvent, parse_event
from telephony.ami.protocol import parse_frame

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ami"
T0 = 1_732_370_000.0
S = State


def ev(name: str, at: float, **headers: str) -> AmiEvent:
    """An AMI frame with real Asterisk 22 header names, parsed like the client does."""
    return parse_event({"Event": name, "Timestamp": f"{at:.6f}", **headers}, at)


def caller_hdrs(caller: str, linkedid: str | None = None) -> dict[str, str]:
    return {"Channel": f"PJSIP/trunk-{caller.replace('.', '')}", "Uniqueid": caller,
            "Linkedid": linkedid or caller, "CallerIDNum": "5551234"}


def called(n: int, at: float, caller: str = "1.1", queue: str = "support", dest_uid: str | None = None,
           linkedid: str | None = None) -> AmiEvent:
    return ev("AgentCalled", at, **caller_hdrs(caller, linkedid), Queue=queue, MemberName=f"agent{n}",
              Interface=f"PJSIP/agent{n}", DestChannel=f"PJSIP/agent{n}-0000{n}{caller[-1]}",
              DestUniqueid=dest_uid or f"{caller}{n}")


def connect(n: int, at: float, caller: str = "1.1", queue: str = "support", dest_uid: str | None = None,
            linkedid: str | None = None, dest_channel: str | None = None, iface: str | None = None) -> AmiEvent:
    return ev("AgentConnect", at, **caller_hdrs(caller, linkedid), Queue=queue, MemberName=f"agent{n}",
              Interface=iface or f"PJSIP/agent{n}",
              DestChannel=dest_channel or f"PJSIP/agent{n}-0000{n}{caller[-1]}",
              DestUniqueid=dest_uid or f"{caller}{n}", HoldTime="3", RingTime="2")


def complete(n: int, at: float, caller: str | None = "1.1", queue: str = "support", talk: int | None = None,
             iface: str | None = None) -> AmiEvent:
    h: dict[str, str] = {"Queue": queue, "MemberName": f"agent{n}", "Interface": iface or f"PJSIP/agent{n}",
                         "HoldTime": "3", "Reason": "caller"}
    if talk is not None:
        h["TalkTime"] = str(talk)
    if caller is not None:
        h.update(caller_hdrs(caller))
    return ev("AgentComplete", at, **h)


def rna(n: int, at: float, caller: str = "1.1", queue: str = "support") -> AmiEvent:
    return ev("AgentRingNoAnswer", at, **caller_hdrs(caller), Queue=queue, MemberName=f"agent{n}",
              Interface=f"PJSIP/agent{n}", DestUniqueid=f"{caller}{n}", RingTime="15004")


def hold(name: str, at: float, uid: str, channel: str, linkedid: str = "1.1") -> AmiEvent:
    return ev(name, at, Channel=channel, Uniqueid=uid, Linkedid=linkedid, MusicClass="default")


def member_pause(n: int, at: float, paused: bool, reason: str = "", action_reason: str | None = None,
                 queue: str = "support") -> AmiEvent:
    h = {"Queue": queue, "MemberName": f"agent{n}", "Interface": f"PJSIP/agent{n}",
         "StateInterface": f"PJSIP/agent{n}", "Membership": "dynamic", "Paused": "1" if paused else "0",
         "PausedReason": reason, "InCall": "0", "Status": "1"}
    if action_reason is not None:
        h["Reason"] = action_reason
    return ev("QueueMemberPause", at, **h)


def book(**kw: object) -> AgentBook:
    b = AgentBook({"support": 10, "sales": 0, "long": 600}, **kw)  # type: ignore[arg-type]
    for n in (1, 2, 3):
        b.register(f"a{n}", f"PJSIP/agent{n}", f"agent{n}")
    return b


def logged_in(*agents: str, at: float = T0, **kw: object) -> AgentBook:
    b = book(**kw)
    for a in agents:
        b.login(a, at)
    return b


def path(ts: Iterable[Transition]) -> list[tuple[str, State, State, float, str | None, str]]:
    return [(t.agent, t.from_state, t.to_state, t.at, t.reason, t.cause) for t in ts]


def check_chain(ts: list[Transition]) -> None:
    """Per agent: each transition starts where the previous ended, instants never go back."""
    last: dict[str, Transition] = {}
    for t in ts:
        p = last.get(t.agent)
        if p is not None:
            assert t.from_state == p.to_state, (p, t)
            assert t.at >= p.at, (p, t)
        assert t.from_state != t.to_state or t.cause == CAUSE_CONNECT or t.to_state == S.PAUSED
        last[t.agent] = t


# ------------------------------------------------------------------------------------------------ commands


def test_login_pause_ready_logout_path() -> None:
    b = book()
    assert b.state("a1") == AgentStatus(S.LOGGED_OUT)
    out = b.login("a1", T0) + b.pause("a1", "break", T0 + 10) + b.pause("a1", "lunch", T0 + 20)
    out += b.ready("a1", T0 + 30) + b.logout("a1", T0 + 40)
    assert path(out) == [
        ("a1", S.LOGGED_OUT, S.AVAILABLE, T0, None, "cmd:login"),
        ("a1", S.AVAILABLE, S.PAUSED, T0 + 10, "break", "cmd:pause"),
        ("a1", S.PAUSED, S.PAUSED, T0 + 20, "lunch", "cmd:pause"),
        ("a1", S.PAUSED, S.AVAILABLE, T0 + 30, None, "cmd:ready"),
        ("a1", S.AVAILABLE, S.LOGGED_OUT, T0 + 40, None, "cmd:logout"),
    ]
    check_chain(out)
    assert b.state("a1") == AgentStatus(S.LOGGED_OUT, T0 + 40)


def test_idempotent_commands_are_no_ops() -> None:
    b = logged_in("a1")
    assert b.login("a1", T0 + 1) == []
    assert b.ready("a1", T0 + 2) == []
    b.pause("a1", "break", T0 + 3)
    assert b.pause("a1", "break", T0 + 4) == []
    assert b.state("a1").since == T0 + 3 and b.state("a1").logged_in_at == T0
    b.logout("a1", T0 + 5)
    assert b.logout("a1", T0 + 6) == []


def test_login_straight_into_a_pause() -> None:
    b = book()
    assert path(b.login("a1", T0, reason="training")) == [
        ("a1", S.LOGGED_OUT, S.PAUSED, T0, "training", "cmd:login")]


@pytest.mark.parametrize(
    ("setup", "command", "current"),
    [
        ([], lambda b: b.pause("a1", "break", T0 + 1), S.LOGGED_OUT),
        ([], lambda b: b.ready("a1", T0 + 1), S.LOGGED_OUT),
        (["login", called(1, T0 + 1)], lambda b: b.pause("a1", "break", T0 + 2), S.RINGING),
        (["login", called(1, T0 + 1)], lambda b: b.logout("a1", T0 + 2), S.RINGING),
        (["login", connect(1, T0 + 1)], lambda b: b.ready("a1", T0 + 2), S.ON_CALL),
        (["login", connect(1, T0 + 1)], lambda b: b.logout("a1", T0 + 2), S.ON_CALL),
        (["login", connect(1, T0 + 1)], lambda b: b.pause("a1", "break", T0 + 2), S.ON_CALL),
        (["login"], lambda b: b.set_disposition("a1", "resolved", T0 + 2), S.AVAILABLE),
        (["login"], lambda b: b.force("a1", "ringing", None, T0 + 2, "sup"), S.AVAILABLE),
        (["login"], lambda b: b.force("a1", "bogus", None, T0 + 2, "sup"), S.AVAILABLE),
    ],
)
def test_illegal_commands_carry_the_current_state(setup: list[object], command: object, current: State) -> None:
    b = book()
    for step in setup:
        if step == "login":
            b.login("a1", T0)
        else:
            assert isinstance(step, AmiEvent)
            b.on_event(step)
    before = b.state("a1")
    with pytest.raises(IllegalCommand) as exc:
        command(b)  # type: ignore[operator]
    assert exc.value.current == current
    assert str(exc.value) and exc.value.message
    assert b.state("a1") == before  # nothing changed


def test_pause_reason_is_required_and_ccpbx_prefix_reserved() -> None:
    b = logged_in("a1")
    with pytest.raises(ValueError):
        b.pause("a1", "", T0 + 1)
    with pytest.raises(ValueError):
        b.pause("a1", "ccpbx:break", T0 + 1)
    with pytest.raises(ValueError):
        b.force("a1", S.PAUSED, None, T0 + 1, "sup")


# ------------------------------------------------------------------------------------------------ a call


def test_ring_connect_complete_acw_and_timeout() -> None:
    b = logged_in("a1")
    out = b.on_event(called(1, T0 + 10))
    assert path(out) == [("a1", S.AVAILABLE, S.RINGING, T0 + 10, None, "AgentCalled")]
    assert (out[0].linkedid, out[0].queue, out[0].uniqueid) == ("1.1", "support", "1.1")
    out = b.on_event(connect(1, T0 + 12.5))
    assert path(out) == [("a1", S.RINGING, S.ON_CALL, T0 + 12.5, None, "AgentConnect")]
    assert (out[0].linkedid, out[0].queue, out[0].uniqueid) == ("1.1", "support", "1.1")
    assert b.state("a1") == AgentStatus(S.ON_CALL, T0 + 12.5, None, "1.1", "support", "1.1", T0)
    out = b.on_event(complete(1, T0 + 40))
    assert path(out) == [("a1", S.ON_CALL, S.ACW, T0 + 40, None, "AgentComplete")]
    assert b.acw_deadline("a1") == T0 + 50 and b.next_deadline() == T0 + 50
    assert b.tick(T0 + 49.999) == []
    out = b.tick(T0 + 55)
    assert path(out) == [("a1", S.ACW, S.AVAILABLE, T0 + 50, None, CAUSE_ACW_TIMEOUT)]  # the exact deadline
    assert out[0].linkedid == "1.1" and b.next_deadline() is None
    assert b.tick(T0 + 60) == []


def test_no_wrapup_goes_straight_to_available() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 1, queue="sales"))
    assert path(b.on_event(complete(1, T0 + 9, queue="sales"))) == [
        ("a1", S.ON_CALL, S.AVAILABLE, T0 + 9, None, "AgentComplete")]


def test_unknown_queue_uses_default_wrapup() -> None:
    b = AgentBook({}, default_wrapup_s=7)
    b.register("a1", "PJSIP/agent1")
    b.login("a1", T0)
    b.on_event(connect(1, T0 + 1, queue="other"))
    b.on_event(complete(1, T0 + 2, queue="other"))
    assert b.acw_deadline("a1") == T0 + 9


def test_acw_is_capped() -> None:
    b = logged_in("a1", acw_cap_s=300)
    b.on_event(connect(1, T0 + 1, queue="long"))
    b.on_event(complete(1, T0 + 2, queue="long"))
    assert b.acw_deadline("a1") == T0 + 302
    assert path(b.tick(T0 + 1000)) == [("a1", S.ACW, S.AVAILABLE, T0 + 302, None, CAUSE_ACW_TIMEOUT)]


def test_ready_or_pause_end_acw_early() -> None:
    b = logged_in("a1", "a2")
    for n, a in ((1, "a1"), (2, "a2")):
        b.on_event(connect(n, T0 + 1, caller=f"1.{n}"))
        b.on_event(complete(n, T0 + 2, caller=f"1.{n}"))
        assert b.state(a).state == S.ACW
    out = b.ready("a1", T0 + 4)
    assert path(out) == [("a1", S.ACW, S.AVAILABLE, T0 + 4, None, "cmd:ready")] and out[0].linkedid == "1.1"
    assert path(b.pause("a2", "break", T0 + 5)) == [("a2", S.ACW, S.PAUSED, T0 + 5, "break", "cmd:pause")]
    assert b.tick(T0 + 100) == []


def test_commands_after_the_acw_deadline_emit_the_timeout_first() -> None:
    b = logged_in("a1", "a2")
    for n in (1, 2):
        b.on_event(connect(n, T0 + 1, caller=f"1.{n}"))
        b.on_event(complete(n, T0 + 2, caller=f"1.{n}"))
    assert path(b.ready("a1", T0 + 20)) == [("a1", S.ACW, S.AVAILABLE, T0 + 12, None, CAUSE_ACW_TIMEOUT)]
    assert path(b.pause("a2", "break", T0 + 20)) == [
        ("a2", S.ACW, S.AVAILABLE, T0 + 12, None, CAUSE_ACW_TIMEOUT),
        ("a2", S.AVAILABLE, S.PAUSED, T0 + 20, "break", "cmd:pause"),
    ]


def test_an_event_after_the_acw_deadline_emits_the_timeout_first() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 1))
    b.on_event(complete(1, T0 + 2))
    out = b.on_event(called(1, T0 + 30, caller="2.2"))
    assert path(out) == [
        ("a1", S.ACW, S.AVAILABLE, T0 + 12, None, CAUSE_ACW_TIMEOUT),
        ("a1", S.AVAILABLE, S.RINGING, T0 + 30, None, "AgentCalled"),
    ]


def test_call_offered_during_acw_or_pause_is_recorded() -> None:
    b = logged_in("a1", "a2")
    b.on_event(connect(1, T0 + 1))
    b.on_event(complete(1, T0 + 2))
    assert path(b.on_event(called(1, T0 + 3, caller="2.2"))) == [
        ("a1", S.ACW, S.RINGING, T0 + 3, None, "AgentCalled")]
    b.pause("a2", "lunch", T0 + 1)
    assert path(b.on_event(called(2, T0 + 4, caller="3.3"))) == [
        ("a2", S.PAUSED, S.RINGING, T0 + 4, None, "AgentCalled")]
    # the ring ends unanswered: back to the pause it interrupted (missed is still counted, not re-paused)
    out = b.on_event(rna(2, T0 + 19, caller="3.3"))
    assert path(out) == [("a2", S.RINGING, S.PAUSED, T0 + 19, "lunch", CAUSE_RNA)]
    assert agent_figures(b_history(out, "a2"), T0, T0 + 20).missed == 1


def b_history(ts: list[Transition], agent: str) -> list[Transition]:
    return [t for t in ts if t.agent == agent]


# --------------------------------------------------------------------------------------- ring outcomes


def test_ring_no_answer_auto_pauses_missed() -> None:
    b = logged_in("a1")
    log = b.login("a1", T0) + b.on_event(called(1, T0 + 1))
    out = b.on_event(rna(1, T0 + 16))
    assert path(out) == [
        ("a1", S.RINGING, S.AVAILABLE, T0 + 16, None, CAUSE_RNA),
        ("a1", S.AVAILABLE, S.PAUSED, T0 + 16, "missed", CAUSE_RNA),
    ]
    assert all(t.linkedid == "1.1" for t in out)
    assert b.state("a1") == AgentStatus(S.PAUSED, T0 + 16, "missed", logged_in_at=T0)
    full = [Transition("a1", S.LOGGED_OUT, S.AVAILABLE, T0, cause="cmd:login"), *log, *out]
    f = agent_figures(full, T0, T0 + 30)
    assert (f.missed, f.handled, f.ringing_s, f.paused_by_reason) == (1, 0, 15.0, {"missed": 14.0})


def test_ring_no_answer_without_auto_pause() -> None:
    b = logged_in("a1", auto_pause_on_rna=False)
    b.on_event(called(1, T0 + 1))
    assert path(b.on_event(rna(1, T0 + 16))) == [("a1", S.RINGING, S.AVAILABLE, T0 + 16, None, CAUSE_RNA)]


def test_rna_for_another_caller_or_when_not_ringing_is_ignored() -> None:
    b = logged_in("a1")
    assert b.on_event(rna(1, T0 + 1)) == []  # not ringing
    b.on_event(called(1, T0 + 2, caller="1.1"))
    assert b.on_event(rna(1, T0 + 3, caller="9.9")) == []
    assert b.on_event(rna(1, T0 + 1.5, caller="1.1")) == []  # older than the ring itself
    assert len(b.on_event(rna(1, T0 + 17, caller="1.1"))) == 2
    assert b.on_event(rna(1, T0 + 17, caller="1.1")) == []  # duplicate


def test_agent_dump_returns_to_available_not_missed() -> None:
    b = logged_in("a1")
    b.on_event(called(1, T0 + 1))
    dump = ev("AgentDump", T0 + 5, **caller_hdrs("1.1"), Queue="support", MemberName="agent1",
              Interface="PJSIP/agent1")
    out = b.on_event(dump)
    assert path(out) == [("a1", S.RINGING, S.AVAILABLE, T0 + 5, None, "AgentDump")]
    assert agent_figures(out, T0, T0 + 10).missed == 0


def test_ringall_answered_elsewhere_ends_the_other_rings() -> None:
    b = logged_in("a1", "a2", "a3")
    b.on_event(called(1, T0 + 1))
    b.on_event(called(2, T0 + 1))
    b.on_event(called(3, T0 + 1, caller="7.7"))  # another caller: untouched
    out = b.on_event(connect(1, T0 + 4))
    assert path(out) == [
        ("a2", S.RINGING, S.AVAILABLE, T0 + 4, None, CAUSE_RING_CANCELLED),
        ("a1", S.RINGING, S.ON_CALL, T0 + 4, None, CAUSE_CONNECT),
    ]
    assert b.state("a3").state == S.RINGING


def test_caller_abandon_and_rung_channel_hangup_end_rings() -> None:
    b = logged_in("a1", "a2")
    b.on_event(called(1, T0 + 1, caller="1.1"))
    b.on_event(called(2, T0 + 1, caller="2.2", dest_uid="2.2-agent2"))
    abandon = ev("QueueCallerAbandon", T0 + 3, **caller_hdrs("1.1"), Queue="support", Position="1",
                 OriginalPosition="1", HoldTime="3")
    assert path(b.on_event(abandon)) == [("a1", S.RINGING, S.AVAILABLE, T0 + 3, None, CAUSE_RING_CANCELLED)]
    hangup = ev("Hangup", T0 + 5, Channel="PJSIP/agent2-000022", Uniqueid="2.2-agent2", Linkedid="2.2",
                Cause="26")
    assert path(b.on_event(hangup)) == [("a2", S.RINGING, S.AVAILABLE, T0 + 5, None, CAUSE_RING_CANCELLED)]
    assert b.on_event(hangup) == []


# ------------------------------------------------------------------------------------------------- hold


def test_hold_matched_on_the_agent_channel_and_on_the_caller_channel() -> None:
    b = logged_in("a1", "a2")
    b.on_event(connect(1, T0 + 1, caller="1.1", dest_uid="1.1-a"))
    b.on_event(connect(2, T0 + 1, caller="2.2", dest_uid="2.2-a"))
    # agent a1's phone pressed hold: Hold on the agent's channel
    assert path(b.on_event(hold("Hold", T0 + 5, "1.1-a", "PJSIP/agent1-00000011"))) == [
        ("a1", S.ON_CALL, S.ON_HOLD, T0 + 5, None, "Hold")]
    assert path(b.on_event(hold("Unhold", T0 + 8, "1.1-a", "PJSIP/agent1-00000011"))) == [
        ("a1", S.ON_HOLD, S.ON_CALL, T0 + 8, None, "Unhold")]
    # Hold reported on the caller's channel of a2's call
    out = b.on_event(hold("Hold", T0 + 6, "2.2", "PJSIP/trunk-22", linkedid="2.2"))
    assert path(out) == [("a2", S.ON_CALL, S.ON_HOLD, T0 + 6, None, "Hold")] and out[0].linkedid == "2.2"
    assert b.state("a1").state == S.ON_CALL
    # an unrelated channel (another call, no agent) changes nothing
    assert b.on_event(hold("Hold", T0 + 7, "5.5", "PJSIP/trunk-55", linkedid="5.5")) == []
    assert b.on_event(hold("Unhold", T0 + 7, "5.5", "PJSIP/trunk-55", linkedid="5.5")) == []


def test_hold_on_both_sides_and_duplicates() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 1, caller="1.1", dest_uid="1.1-a"))
    assert len(b.on_event(hold("Hold", T0 + 2, "1.1", "PJSIP/trunk-11"))) == 1
    assert b.on_event(hold("Hold", T0 + 2, "1.1", "PJSIP/trunk-11")) == []  # duplicate
    assert b.on_event(hold("Hold", T0 + 3, "1.1-a", "PJSIP/agent1-00000011")) == []  # both sides held
    assert b.on_event(hold("Unhold", T0 + 4, "1.1", "PJSIP/trunk-11")) == []  # still held on the agent side
    assert b.state("a1").state == S.ON_HOLD
    assert path(b.on_event(hold("Unhold", T0 + 5, "1.1-a", "PJSIP/agent1-00000011"))) == [
        ("a1", S.ON_HOLD, S.ON_CALL, T0 + 5, None, "Unhold")]
    assert b.on_event(hold("Unhold", T0 + 5, "1.1-a", "PJSIP/agent1-00000011")) == []


def test_late_hold_events_are_ignored() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 10, caller="1.1"))
    assert b.on_event(hold("Hold", T0 + 9, "1.1", "PJSIP/trunk-11")) == []  # before the call started
    b.on_event(hold("Hold", T0 + 12, "1.1", "PJSIP/trunk-11"))
    b.on_event(hold("Unhold", T0 + 14, "1.1", "PJSIP/trunk-11"))
    assert b.on_event(hold("Hold", T0 + 13, "1.1", "PJSIP/trunk-11")) == []  # older than the Unhold seen
    assert b.state("a1").state == S.ON_CALL


def test_hold_falls_back_to_the_linkedid_only_when_unambiguous() -> None:
    b = logged_in("a1", "a2")
    b.on_event(connect(1, T0 + 1, caller="1.1", linkedid="L1"))
    # an unknown channel of the same call (e.g. a transfer leg) with linkedid L1: only a1 has it
    out = b.on_event(hold("Hold", T0 + 2, "9.9", "PJSIP/other-99", linkedid="L1"))
    assert path(out) == [("a1", S.ON_CALL, S.ON_HOLD, T0 + 2, None, "Hold")]
    assert len(b.on_event(hold("Unhold", T0 + 3, "9.9", "PJSIP/other-99", linkedid="L1"))) == 1
    # two agents' calls share the linkedid (a call through two queues): ambiguous, ignored
    b.on_event(connect(2, T0 + 4, caller="2.2", linkedid="L1"))
    assert b.on_event(hold("Hold", T0 + 5, "8.8", "PJSIP/other-88", linkedid="L1")) == []


def test_local_member_phone_channel_learned_from_bridge_enter() -> None:
    b = book()
    b.register("a3", "Local/103@agents", "agent3")
    b.register("a3", "PJSIP/agent3")  # the phone behind the Local channel
    b.login("a3", T0)
    b.on_event(connect(3, T0 + 1, caller="1.1", dest_uid="1.1-l1", dest_channel="Local/103@agents-0000001a;1",
                       iface="Local/103@agents"))
    b.on_event(ev("BridgeEnter", T0 + 1.2, Channel="PJSIP/agent3-0000001c", Uniqueid="1.1-phone",
                  Linkedid="1.1", BridgeUniqueid="b1"))
    b.on_event(ev("BridgeEnter", T0 + 1.2, Channel="PJSIP/agent2-0000001d", Uniqueid="x", Linkedid="other"))
    assert path(b.on_event(hold("Hold", T0 + 2, "1.1-phone", "PJSIP/agent3-0000001c"))) == [
        ("a3", S.ON_CALL, S.ON_HOLD, T0 + 2, None, "Hold")]
    b.on_event(hold("Unhold", T0 + 3, "1.1-phone", "PJSIP/agent3-0000001c"))
    # the Local;1 leg goes away when the Local channel optimizes: the talk goes on
    assert b.on_event(ev("Hangup", T0 + 4, Channel="Local/103@agents-0000001a;1", Uniqueid="1.1-l1",
                         Linkedid="1.1")) == []
    # the phone hangs up: the talk ends there
    out = b.on_event(ev("Hangup", T0 + 30, Channel="PJSIP/agent3-0000001c", Uniqueid="1.1-phone",
                        Linkedid="1.1"))
    assert path(out) == [("a3", S.ON_CALL, S.ACW, T0 + 30, None, CAUSE_HANGUP)]
    # app_queue's AgentComplete (no channel fields) comes later and is absorbed
    assert b.on_event(complete(3, T0 + 31, caller=None, talk=30, iface="Local/103@agents")) == []
    assert b.state("a3").state == S.ACW


# -------------------------------------------------------------------------------- AgentComplete correlation


def test_agent_complete_without_channel_fields_is_correlated_by_queue_and_connect() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 10, caller="1.1", queue="support"))
    assert b.on_event(complete(1, T0 + 20, caller=None, queue="sales")) == []  # another queue
    assert b.on_event(complete(1, T0 + 9, caller=None, queue="support")) == []  # before the connect
    out = b.on_event(complete(1, T0 + 30, caller=None, queue="support", talk=20))
    assert path(out) == [("a1", S.ON_CALL, S.ACW, T0 + 30, None, CAUSE_COMPLETE)]
    assert (out[0].linkedid, out[0].queue, out[0].uniqueid) == ("1.1", "support", "1.1")
    assert b.on_event(complete(1, T0 + 30, caller=None, queue="support", talk=20)) == []  # duplicate


def test_agent_complete_of_an_earlier_call_does_not_end_the_current_one() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 1, caller="1.1", queue="sales"))
    b.on_event(complete(1, T0 + 5, caller="1.1", queue="sales"))
    b.on_event(connect(1, T0 + 6, caller="2.2", queue="sales"))
    assert b.on_event(complete(1, T0 + 7, caller="1.1", queue="sales")) == []  # replayed, other caller
    assert b.on_event(complete(1, T0 + 5, caller=None, queue="sales")) == []  # late, field-less
    assert b.on_event(connect(1, T0 + 1, caller="1.1", queue="sales")) == []  # late connect of the ended call
    assert b.state("a1").uniqueid == "2.2" and b.state("a1").state == S.ON_CALL


def test_redirected_caller_talk_ends_at_the_agent_hangup() -> None:
    """app_queue delays AgentComplete until a redirected caller hangs up: the agent's Hangup ends the talk."""
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 10, caller="1.1", queue="sales", dest_uid="1.1-a"))
    out = b.on_event(ev("Hangup", T0 + 50, Channel="PJSIP/agent1-00000011", Uniqueid="1.1-a", Linkedid="1.1"))
    assert path(out) == [("a1", S.ON_CALL, S.AVAILABLE, T0 + 50, None, CAUSE_HANGUP)]
    b.on_event(connect(1, T0 + 100, caller="2.2", queue="sales", dest_uid="2.2-a"))
    # the first call's field-less AgentComplete (TalkTime inflated to 120 s) comes now: absorbed
    assert b.on_event(complete(1, T0 + 130, caller=None, queue="sales", talk=120)) == []
    assert b.state("a1").state == S.ON_CALL
    out = b.on_event(complete(1, T0 + 140, caller=None, queue="sales", talk=40))
    assert path(out) == [("a1", S.ON_CALL, S.AVAILABLE, T0 + 140, None, CAUSE_COMPLETE)]


def test_field_less_complete_of_the_current_call_wins_by_talk_time() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 10, caller="1.1", queue="sales", dest_uid="1.1-a"))
    b.on_event(ev("Hangup", T0 + 50, Channel="PJSIP/agent1-00000011", Uniqueid="1.1-a", Linkedid="1.1"))
    b.on_event(connect(1, T0 + 100, caller="2.2", queue="sales", dest_uid="2.2-a"))
    # the current call's AgentComplete arrives before the redirected one's: its TalkTime matches (40 s)
    out = b.on_event(complete(1, T0 + 140, caller=None, queue="sales", talk=40))
    assert path(out) == [("a1", S.ON_CALL, S.AVAILABLE, T0 + 140, None, CAUSE_COMPLETE)]
    assert b.on_event(complete(1, T0 + 150, caller=None, queue="sales", talk=140)) == []  # absorbed
    # and the current call's own Hangup after its AgentComplete changes nothing
    assert b.on_event(ev("Hangup", T0 + 140.01, Channel="PJSIP/agent1-22", Uniqueid="2.2-a", Linkedid="2.2")) == []


# ------------------------------------------------------------------------------------ duplicates, garbage


def test_duplicate_and_unknown_events_change_nothing() -> None:
    b = logged_in("a1")
    assert len(b.on_event(called(1, T0 + 1))) == 1
    assert b.on_event(called(1, T0 + 1)) == []
    assert len(b.on_event(connect(1, T0 + 3))) == 1
    assert b.on_event(connect(1, T0 + 3)) == []
    assert b.on_event(called(1, T0 + 4, caller="5.5")) == []  # a ring while talking (ringinuse) is ignored
    unknown = ev("AgentCalled", T0 + 5, **caller_hdrs("6.6"), Queue="support", Interface="PJSIP/nobody")
    assert b.on_event(unknown) == []
    for garbage in (parse_event({"Event": "AgentConnect"}, T0), parse_event({"Event": "Hold"}, T0),
                    parse_event({"Event": "QueueMemberPause", "Interface": "PJSIP/agent1"}, T0),
                    parse_event({"Event": "Hangup"}, T0), parse_event({"Event": "BridgeEnter"}, T0),
                    parse_event({"Event": "Nonsense", "Interface": "PJSIP/agent1"}, T0),
                    AmiEvent(name="AmiDisconnected")):
        assert b.on_event(garbage) == []
    assert b.state("a1").state == S.ON_CALL


def test_events_of_logged_out_agents_are_ignored() -> None:
    b = book()
    assert b.on_event(called(1, T0 + 1)) == []
    assert b.on_event(connect(1, T0 + 2)) == []
    assert b.on_event(member_pause(1, T0 + 3, True, "lunch", "lunch")) == []
    assert b.state("a1").state == S.LOGGED_OUT


def test_late_agent_called_after_the_ring_ended_is_ignored() -> None:
    b = logged_in("a1", auto_pause_on_rna=False)
    b.on_event(called(1, T0 + 1))
    b.on_event(rna(1, T0 + 16))
    assert b.on_event(called(1, T0 + 1)) == []  # replay of the first ring
    assert len(b.on_event(called(1, T0 + 20))) == 1  # the same caller offered again later: a new ring


def test_instants_never_go_back() -> None:
    b = logged_in("a1", at=T0 + 10)
    out = b.on_event(called(1, T0 + 9.5))  # Asterisk's clock slightly behind the command's clock
    assert path(out) == [("a1", S.AVAILABLE, S.RINGING, T0 + 10, None, "AgentCalled")]


def test_handler_errors_never_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    b = logged_in("a1")

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(b, "_member", boom)
    assert b.on_event(called(1, T0 + 1)) == []


# ---------------------------------------------------------------------------------------- pause events


def test_echo_pauses_and_unpauses_are_ignored() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 1))
    b.on_event(complete(1, T0 + 2))
    assert b.on_event(member_pause(1, T0 + 2.01, True, "ccpbx:acw", "ccpbx:acw")) == []
    b.ready("a1", T0 + 5)
    b.pause("a1", "break", T0 + 6)
    # the unpause sent for ready comes back after the pause was made: PausedReason empty, Reason ccpbx:ready
    assert b.on_event(member_pause(1, T0 + 6.5, False, "", "ccpbx:ready")) == []
    assert b.on_event(member_pause(1, T0 + 6.6, True, "ccpbx:break", "ccpbx:break")) == []
    assert b.state("a1") == AgentStatus(S.PAUSED, T0 + 6, "break", logged_in_at=T0)


def test_outside_pauses_are_reflected() -> None:
    b = logged_in("a1", "a2")
    out = b.on_event(member_pause(1, T0 + 5, True, "lunch", "lunch"))
    assert path(out) == [("a1", S.AVAILABLE, S.PAUSED, T0 + 5, "lunch", CAUSE_EXT_PAUSE)]
    assert b.on_event(member_pause(1, T0 + 5.001, True, "lunch", "lunch", queue="sales")) == []  # 2nd queue
    out = b.on_event(member_pause(1, T0 + 6, True, "meeting", "meeting"))
    assert path(out) == [("a1", S.PAUSED, S.PAUSED, T0 + 6, "meeting", CAUSE_EXT_PAUSE)]
    out = b.on_event(member_pause(1, T0 + 9, False))
    assert path(out) == [("a1", S.PAUSED, S.AVAILABLE, T0 + 9, None, CAUSE_EXT_UNPAUSE)]
    assert b.on_event(member_pause(1, T0 + 9.5, False)) == []
    out = b.on_event(member_pause(2, T0 + 7, True))  # no reason at all
    assert path(out) == [("a2", S.AVAILABLE, S.PAUSED, T0 + 7, "external", CAUSE_EXT_PAUSE)]


def test_outside_pause_older_than_the_current_state_is_ignored() -> None:
    b = logged_in("a1")
    b.pause("a1", "break", T0 + 10)
    assert b.on_event(member_pause(1, T0 + 9.9, True, "lunch", "lunch")) == []
    assert b.state("a1").reason == "break"


def test_outside_pause_during_a_call_applies_when_it_ends() -> None:
    b = logged_in("a1", "a2")
    b.on_event(connect(1, T0 + 1))
    assert b.on_event(member_pause(1, T0 + 3, True, "lunch", "lunch")) == []
    assert b.state("a1").state == S.ON_CALL
    assert path(b.on_event(complete(1, T0 + 9))) == [("a1", S.ON_CALL, S.PAUSED, T0 + 9, "lunch", CAUSE_COMPLETE)]
    # and an outside unpause during the call cancels it
    b.on_event(connect(2, T0 + 1, caller="2.2"))
    b.on_event(member_pause(2, T0 + 3, True, "lunch", "lunch"))
    b.on_event(member_pause(2, T0 + 4, False))
    assert path(b.on_event(complete(2, T0 + 9, caller="2.2"))) == [
        ("a2", S.ON_CALL, S.ACW, T0 + 9, None, CAUSE_COMPLETE)]


def test_outside_unpause_ends_acw() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 1))
    b.on_event(complete(1, T0 + 2))
    assert path(b.on_event(member_pause(1, T0 + 4, False, "", "someone"))) == [
        ("a1", S.ACW, S.AVAILABLE, T0 + 4, None, CAUSE_EXT_UNPAUSE)]


# --------------------------------------------------------------------------------------- force, disposition


def test_supervisor_force_from_a_call_and_the_late_complete_is_absorbed() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 1))
    out = b.force("a1", S.AVAILABLE, None, T0 + 100, "sup1")
    assert path(out) == [("a1", S.ON_CALL, S.AVAILABLE, T0 + 100, None, "force:sup1")]
    assert out[0].linkedid == "1.1"
    assert b.on_event(complete(1, T0 + 120, caller=None)) == []
    assert b.on_event(complete(1, T0 + 120)) == []
    assert b.force("a1", "available", None, T0 + 121, "sup1") == []
    assert path(b.force("a1", "paused", "training", T0 + 122, "sup2")) == [
        ("a1", S.AVAILABLE, S.PAUSED, T0 + 122, "training", "force:sup2")]
    assert path(b.force("a1", "logged_out", None, T0 + 123, "sup2")) == [
        ("a1", S.PAUSED, S.LOGGED_OUT, T0 + 123, None, "force:sup2")]
    assert path(b.force("a2", "available", None, T0 + 124, "sup2")) == [
        ("a2", S.LOGGED_OUT, S.AVAILABLE, T0 + 124, None, "force:sup2")]


def test_disposition_only_on_a_call_or_in_acw() -> None:
    b = logged_in("a1")
    b.on_event(connect(1, T0 + 1, caller="1.1", linkedid="L1"))
    assert b.set_disposition("a1", "resolved", T0 + 2) == Disposition("a1", "L1", "support", "resolved", T0 + 2)
    b.on_event(complete(1, T0 + 3, caller="1.1"))
    assert b.set_disposition("a1", "follow-up", T0 + 4) == Disposition("a1", "L1", "support", "follow-up", T0 + 4)
    with pytest.raises(IllegalCommand) as exc:
        b.set_disposition("a1", "resolved", T0 + 20)  # ACW over (deadline T0+13)
    assert exc.value.current == S.AVAILABLE
    assert b.state("a1").state == S.ACW  # a refused command changes nothing (tick ends the ACW)
    with pytest.raises(IllegalCommand) as exc:
        b.set_disposition("nobody", "resolved", T0 + 4)
    assert exc.value.current == S.LOGGED_OUT
    with pytest.raises(ValueError):
        b.set_disposition("a1", "", T0 + 4)


# ------------------------------------------------------------------------------------------------ restore


def test_restore_after_restart_continues_the_call() -> None:
    b1 = logged_in("a1", "a2", "a3")
    b1.on_event(connect(1, T0 + 1, caller="1.1", linkedid="L1"))
    b1.on_event(connect(2, T0 + 2, caller="2.2", linkedid="L2"))
    b1.on_event(complete(2, T0 + 3, caller="2.2"))
    b1.pause("a3", "lunch", T0 + 4)
    snap = b1.snapshot()
    b2 = book()
    for agent, status in snap.items():
        b2.restore(agent, status)
    assert b2.snapshot() == snap
    # hold of a restored call: its channels are unknown, the linkedid matches
    assert path(b2.on_event(hold("Hold", T0 + 5, "1.1-agent", "PJSIP/agent1-11", linkedid="L1"))) == [
        ("a1", S.ON_CALL, S.ON_HOLD, T0 + 5, None, "Hold")]
    assert len(b2.on_event(hold("Unhold", T0 + 6, "1.1-agent", "PJSIP/agent1-11", linkedid="L1"))) == 1
    assert path(b2.on_event(complete(1, T0 + 20, caller=None))) == [
        ("a1", S.ON_CALL, S.ACW, T0 + 20, None, CAUSE_COMPLETE)]
    # the restored ACW expires at its original deadline
    assert path(b2.tick(T0 + 100)) == [
        ("a2", S.ACW, S.AVAILABLE, T0 + 13, None, CAUSE_ACW_TIMEOUT),
        ("a1", S.ACW, S.AVAILABLE, T0 + 30, None, CAUSE_ACW_TIMEOUT),
    ]
    assert path(b2.ready("a3", T0 + 101)) == [("a3", S.PAUSED, S.AVAILABLE, T0 + 101, None, "cmd:ready")]
    assert b2.state("a3").logged_in_at == T0


def test_restore_ringing_and_logged_out() -> None:
    b = book()
    b.restore("a1", AgentStatus(S.RINGING, T0, None, "L1", "support", "1.1", T0 - 100))
    b.restore("a2", AgentStatus(S.LOGGED_OUT, T0))
    assert path(b.on_event(rna(1, T0 + 15, caller="1.1"))) == [
        ("a1", S.RINGING, S.AVAILABLE, T0 + 15, None, CAUSE_RNA),
        ("a1", S.AVAILABLE, S.PAUSED, T0 + 15, "missed", CAUSE_RNA),
    ]
    assert b.on_event(called(2, T0 + 1)) == []


def test_queue_status_snapshot_ends_a_stale_call() -> None:
    b = logged_in("a1", "a2")
    b.on_event(connect(1, T0 + 1))
    b.on_event(called(2, T0 + 1, caller="2.2"))
    member = {"Event": "QueueMember", "Queue": "support", "Name": "agent1", "Location": "PJSIP/agent1",
              "StateInterface": "PJSIP/agent1", "Membership": "dynamic", "Penalty": "0", "CallsTaken": "3",
              "LastCall": "0", "InCall": "0", "Status": "1", "Paused": "0", "PausedReason": ""}
    assert b.on_event(parse_event({**member, "Timestamp": f"{T0 + 3:.6f}"}, T0 + 3)) == []  # within the grace
    out = b.on_event(parse_event({**member, "Timestamp": f"{T0 + 60:.6f}"}, T0 + 60))
    assert path(out) == [("a1", S.ON_CALL, S.ACW, T0 + 60, None, "reconcile")]
    busy = {**member, "Name": "agent2", "Location": "PJSIP/agent2", "Status": "6"}
    assert b.on_event(parse_event({**busy, "Timestamp": f"{T0 + 60:.6f}"}, T0 + 60)) == []  # still ringing
    idle = {**busy, "Status": "1", "Timestamp": f"{T0 + 61:.6f}"}
    assert path(b.on_event(parse_event(idle, T0 + 61))) == [
        ("a2", S.RINGING, S.AVAILABLE, T0 + 61, None, "reconcile")]


# ------------------------------------------------------------------------------------------------- replay


def load_stream(name: str) -> list[AmiEvent]:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return [parse_event(dict(parse_frame(block)[0]), 0.0) for block in text.split("\n\n") if block.strip()]


def test_replay_of_a_realistic_stream() -> None:
    base = 1732370000.0
    b = AgentBook({"support": 10, "sales": 10})
    b.register("alice", "PJSIP/agent1", "agent1")
    b.register("bob", "PJSIP/agent2", "agent2")
    log = b.login("alice", base) + b.login("bob", base)
    commands = [(base + 170.0, lambda: b.ready("alice", base + 170.0))]
    for e in load_stream("agent_day.txt"):
        while commands and commands[0][0] <= e.timestamp:
            at, cmd = commands.pop(0)
            log += b.tick(at) + cmd()
        log += b.tick(e.timestamp)  # the consumer ticks as time goes by
        log += b.on_event(e)
    log += b.tick(base + 300)
    check_chain(log)
    alice = [t for t in log if t.agent == "alice"]
    bob = [t for t in log if t.agent == "bob"]
    assert [(t.to_state, t.cause) for t in alice] == [
        (S.AVAILABLE, "cmd:login"), (S.RINGING, "AgentCalled"), (S.AVAILABLE, CAUSE_RNA), (S.PAUSED, CAUSE_RNA),
        (S.AVAILABLE, "cmd:ready"), (S.PAUSED, CAUSE_EXT_PAUSE),
    ]
    assert [(t.to_state, t.cause) for t in bob] == [
        (S.AVAILABLE, "cmd:login"), (S.RINGING, "AgentCalled"), (S.ON_CALL, "AgentConnect"), (S.ON_HOLD, "Hold"),
        (S.ON_CALL, "Unhold"), (S.ON_HOLD, "Hold"), (S.ON_CALL, "Unhold"), (S.ACW, CAUSE_COMPLETE),
        (S.AVAILABLE, CAUSE_ACW_TIMEOUT),
    ]
    assert {t.linkedid for t in bob[1:]} == {"1732370100.1"}
    start, end = base + 100, base + 200
    d = state_durations(bob, start, end)
    assert d[S.AVAILABLE] == pytest.approx(17.32 + 40.0, abs=1e-6)
    assert d[S.RINGING] == pytest.approx(2.176789, abs=1e-6)
    assert d[S.ON_CALL] == pytest.approx(5.503211 + 8.5 + 7.75, abs=1e-6)
    assert d[S.ON_HOLD] == pytest.approx(6.5 + 2.25, abs=1e-6)
    assert d[S.ACW] == pytest.approx(10.0, abs=1e-6)
    assert sum(d.values()) == pytest.approx(100.0, abs=1e-6)
    da = state_durations(alice, start, end)
    assert da[S.RINGING] == pytest.approx(15.004, abs=1e-6)
    assert da[S.AVAILABLE] == pytest.approx(0.31 + 30.0, abs=1e-6)
    assert paused_by_reason(alice, start, end) == pytest.approx({"missed": 54.686})
    assert paused_by_reason(alice, start, base + 260) == pytest.approx({"missed": 54.686, "lunch": 60.0})
    fb = agent_figures(bob, start, end)
    assert (fb.handled, fb.missed, fb.talk_s, fb.hold_s, fb.acw_s) == (1, 0, 21.753, 8.75, 10.0)
    assert fb.aht_s == pytest.approx(40.503, abs=1e-3)
    fa = agent_figures(alice, start, end)
    assert (fa.handled, fa.missed, fa.aht_s, fa.utilization) == (0, 1, None, 0.0)
