"""Agent figures cut exactly at interval boundaries, against hand-computed numbers."""

from __future__ import annotations

import pytest

from acd.agent_figures import agent_figures, paused_by_reason, segments, state_durations
from acd.agent_state import State, Transition

S = State
T0 = 1_732_370_400.0  # a 15-minute boundary (1732370400 = 15 * 60 * 1924856)


def tr(frm: State, to: State, at: float, cause: str, reason: str | None = None, agent: str = "a1") -> Transition:
    return Transition(agent, frm, to, T0 + at, reason, cause, "L" if to != S.AVAILABLE else None)


# An agent's morning (seconds from T0):
#   0      login                  -> available
#   100    break                  -> paused(break)
#   400    ready                  -> available
#   500.5  AgentCalled            -> ringing
#   503    AgentConnect           -> on_call       (call 1)
#   600    Hold                   -> on_hold
#   660    Unhold                 -> on_call
#   900    AgentComplete          -> acw           (crosses the 15-minute boundary at 900? no: exactly at it)
#   930.25 acw_timeout            -> available
#   1000   AgentCalled            -> ringing
#   1015   ring_no_answer         -> available
#   1015   ring_no_answer         -> paused(missed)
#   1100   AgentCalled(paused)    -> ringing
#   1102   AgentConnect           -> on_call       (call 2)
#   1900   AgentComplete          -> acw
#   1910   cmd:ready              -> available
#   2000   lunch                  -> paused(lunch)
#   3000   logout                 -> logged_out
DAY = [
    tr(S.LOGGED_OUT, S.AVAILABLE, 0, "cmd:login"),
    tr(S.AVAILABLE, S.PAUSED, 100, "cmd:pause", "break"),
    tr(S.PAUSED, S.AVAILABLE, 400, "cmd:ready"),
    tr(S.AVAILABLE, S.RINGING, 500.5, "AgentCalled"),
    tr(S.RINGING, S.ON_CALL, 503, "AgentConnect"),
    tr(S.ON_CALL, S.ON_HOLD, 600, "Hold"),
    tr(S.ON_HOLD, S.ON_CALL, 660, "Unhold"),
    tr(S.ON_CALL, S.ACW, 900, "AgentComplete"),
    tr(S.ACW, S.AVAILABLE, 930.25, "acw_timeout"),
    tr(S.AVAILABLE, S.RINGING, 1000, "AgentCalled"),
    tr(S.RINGING, S.AVAILABLE, 1015, "ring_no_answer"),
    tr(S.AVAILABLE, S.PAUSED, 1015, "ring_no_answer", "missed"),
    tr(S.PAUSED, S.RINGING, 1100, "AgentCalled"),
    tr(S.RINGING, S.ON_CALL, 1102, "AgentConnect"),
    tr(S.ON_CALL, S.ACW, 1900, "AgentComplete"),
    tr(S.ACW, S.AVAILABLE, 1910, "cmd:ready"),
    tr(S.AVAILABLE, S.PAUSED, 2000, "cmd:pause", "lunch"),
    tr(S.PAUSED, S.LOGGED_OUT, 3000, "cmd:logout"),
]


def test_first_quarter_hour() -> None:
    d = state_durations(DAY, T0, T0 + 900)
    assert d == pytest.approx({
        S.LOGGED_OUT: 0.0, S.AVAILABLE: 100 + 100.5, S.RINGING: 2.5, S.ON_CALL: 97 + 240, S.ON_HOLD: 60.0,
        S.ACW: 0.0, S.PAUSED: 300.0,
    })
    assert sum(d.values()) == pytest.approx(900.0)
    assert paused_by_reason(DAY, T0, T0 + 900) == pytest.approx({"break": 300.0})


def test_second_quarter_hour_starts_in_acw_and_cuts_a_call() -> None:
    d = state_durations(DAY, T0 + 900, T0 + 1800)
    assert d == pytest.approx({
        S.LOGGED_OUT: 0.0, S.AVAILABLE: 69.75 + 0.0, S.RINGING: 15 + 2, S.ON_CALL: 698.0, S.ON_HOLD: 0.0,
        S.ACW: 30.25, S.PAUSED: 85.0,
    })
    assert sum(d.values()) == pytest.approx(900.0)
    assert paused_by_reason(DAY, T0 + 900, T0 + 1800) == pytest.approx({"missed": 85.0})


def test_arbitrary_cut_inside_states() -> None:
    d = state_durations(DAY, T0 + 550, T0 + 1012.5)
    assert d[S.ON_CALL] == pytest.approx(50 + 240)
    assert d[S.ON_HOLD] == pytest.approx(60)
    assert d[S.ACW] == pytest.approx(30.25)
    assert d[S.AVAILABLE] == pytest.approx(69.75)
    assert d[S.RINGING] == pytest.approx(12.5)
    assert sum(d.values()) == pytest.approx(462.5)


def test_before_login_and_after_logout() -> None:
    d = state_durations(DAY, T0 - 100, T0 + 50)
    assert d[S.LOGGED_OUT] == pytest.approx(100) and d[S.AVAILABLE] == pytest.approx(50)
    d = state_durations(DAY, T0 + 2900, T0 + 3600)
    assert d[S.PAUSED] == pytest.approx(100) and d[S.LOGGED_OUT] == pytest.approx(600)
    assert state_durations([], T0, T0 + 10)[S.LOGGED_OUT] == 10.0
    assert all(v == 0.0 for v in state_durations(DAY, T0 + 5, T0 + 5).values())


def test_without_the_prior_transition_the_first_from_state_is_used() -> None:
    window = [t for t in DAY if T0 + 1800 <= t.at < T0 + 2700]  # no transition before the interval given
    d = state_durations(window, T0 + 1800, T0 + 2700)
    assert d[S.ON_CALL] == pytest.approx(100) and d[S.ACW] == pytest.approx(10)
    window = [t for t in DAY if t.at >= T0 + 400]
    assert paused_by_reason(window, T0 + 300, T0 + 400) == {"unknown": 100.0}


def test_transition_exactly_at_the_boundary_belongs_to_the_next_interval() -> None:
    assert state_durations(DAY, T0 + 800, T0 + 900)[S.ACW] == 0.0
    assert state_durations(DAY, T0 + 900, T0 + 901)[S.ACW] == pytest.approx(1.0)
    assert list(segments(DAY, T0 + 1014, T0 + 1016)) == [
        (S.RINGING, None, T0 + 1014, T0 + 1015), (S.PAUSED, "missed", T0 + 1015, T0 + 1016)]


def test_unsorted_input_is_ordered_and_one_agent_only() -> None:
    assert state_durations(list(reversed(DAY)), T0, T0 + 900) == state_durations(DAY, T0, T0 + 900)
    with pytest.raises(ValueError):
        state_durations([*DAY, tr(S.LOGGED_OUT, S.AVAILABLE, 5, "cmd:login", agent="a2")], T0, T0 + 10)


def test_agent_figures_of_an_hour() -> None:
    f = agent_figures(DAY, T0, T0 + 3600)
    assert f.logged_in_s == 3000.0
    assert f.talk_s == pytest.approx(337 + 798) and f.hold_s == 60.0 and f.acw_s == pytest.approx(30.25 + 10)
    assert f.ringing_s == pytest.approx(2.5 + 15 + 2)
    assert f.available_s == pytest.approx(100 + 100.5 + 69.75 + 0 + 90)
    assert f.paused_s == pytest.approx(300 + 85 + 1000)
    assert f.paused_by_reason == {"break": 300.0, "lunch": 1000.0, "missed": 85.0}
    assert (f.handled, f.missed) == (2, 1)
    handling = (337 + 60 + 30.25) + (798 + 10)
    assert f.aht_s == pytest.approx(handling / 2)
    busy = 337 + 798 + 60 + 40.25
    assert f.occupancy == pytest.approx((busy + 19.5) / (busy + 19.5 + 360.25))
    assert f.utilization == pytest.approx(busy / 3000)
    total = (f.available_s + f.ringing_s + f.talk_s + f.hold_s + f.acw_s + f.paused_s)
    assert total == pytest.approx(f.logged_in_s)


def test_aht_follows_calls_answered_in_the_interval_past_its_end() -> None:
    f = agent_figures(DAY, T0 + 900, T0 + 1800)
    assert f.handled == 1  # call 2 (answered at 1102); call 1 was answered in the previous interval
    assert f.aht_s == pytest.approx(798 + 10)  # its talk runs to 1900, past the interval
    assert f.talk_s == pytest.approx(698)  # while the interval's own talk is cut at 1800
    f = agent_figures(DAY, T0, T0 + 900)
    assert f.handled == 1 and f.aht_s == pytest.approx(337 + 60 + 30.25)
    # a call still going on: cut at `now`
    ongoing = DAY[:5]
    assert agent_figures(ongoing, T0, T0 + 900, now=T0 + 520).aht_s == pytest.approx(17.0)


def test_empty_interval_gives_nulls_not_zeros() -> None:
    f = agent_figures([], T0, T0 + 900)
    assert (f.logged_in_s, f.handled, f.aht_s, f.occupancy, f.utilization) == (0.0, 0, None, None, None)
    paused_only = [tr(S.LOGGED_OUT, S.PAUSED, 0, "cmd:login", "training")]
    f = agent_figures(paused_only, T0, T0 + 900)
    assert (f.paused_s, f.occupancy, f.utilization) == (900.0, None, 0.0)


def test_millisecond_precision() -> None:
    ts = [tr(S.LOGGED_OUT, S.AVAILABLE, 0.0004, "cmd:login"), tr(S.AVAILABLE, S.PAUSED, 1.2346, "x", "b")]
    f = agent_figures(ts, T0, T0 + 2)
    assert f.available_s == 1.234 and f.paused_s == 0.765
