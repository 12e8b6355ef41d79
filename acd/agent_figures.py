"""Agent figures (KPIS.md, "Agent figures") cut exactly from one agent's state transitions.

Pure functions over :class:`acd.agent_state.Transition` sequences. Pass the agent's transitions of the
interval *and the last one before it* (``AgentStateStore.history(..., include_prior=True)``), so the state at
``start`` is known; without it the state before the first transition is taken from that transition's
``from_state`` (a pause reason is then ``"unknown"``), and with no transition at all the agent is logged out.

Segments are half-open ``[a, b)``: a transition exactly at ``start`` sets the state at ``start``; one exactly
at ``end`` belongs to the next interval. ``end`` is the end of what is known: for an interval that is not over
yet pass ``min(end, now)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from acd.agent_state import CALL_STATES, CAUSE_CONNECT, CAUSE_RNA, State, Transition

__all__ = [
    "UNKNOWN_REASON",
    "AgentFigures",
    "agent_figures",
    "paused_by_reason",
    "segments",
    "state_durations",
]

#: Key of ``paused_by_reason`` for a pause whose reason is not in the transitions given.
UNKNOWN_REASON = "unknown"

_HANDLING: frozenset[State] = CALL_STATES | {State.ACW}


def _ordered(transitions: Sequence[Transition]) -> list[Transition]:
    agents = {t.agent for t in transitions}
    if len(agents) > 1:
        raise ValueError(f"transitions of one agent expected, got {sorted(agents)}")
    return sorted(transitions, key=lambda t: t.at)  # stable: same-instant transitions keep their order


def segments(
    transitions: Sequence[Transition], start: float, end: float
) -> Iterator[tuple[State, str | None, float, float]]:
    """``(state, pause reason, from, to)`` pieces covering ``[start, end)`` exactly (zero-length ones skipped)."""
    if end <= start:
        return
    ts = _ordered(transitions)
    state, reason = State.LOGGED_OUT, None
    i = 0
    while i < len(ts) and ts[i].at <= start:
        state, reason = ts[i].to_state, ts[i].reason
        i += 1
    if i == 0 and ts:
        state = ts[0].from_state
        reason = UNKNOWN_REASON if state == State.PAUSED else None
    cur = start
    for t in ts[i:]:
        if t.at >= end:
            break
        if t.at > cur:
            yield state, reason, cur, t.at
            cur = t.at
        state, reason = t.to_state, t.reason
    if end > cur:
        yield state, reason, cur, end


def state_durations(transitions: Sequence[Transition], start: float, end: float) -> dict[State, float]:
    """Seconds spent in each state within ``[start, end)`` (every state is a key; they sum to the span)."""
    out = dict.fromkeys(State, 0.0)
    for state, _reason, a, b in segments(transitions, start, end):
        out[state] += b - a
    return out


def paused_by_reason(transitions: Sequence[Transition], start: float, end: float) -> dict[str, float]:
    """Seconds paused within ``[start, end)`` per pause reason."""
    out: dict[str, float] = {}
    for state, reason, a, b in segments(transitions, start, end):
        if state == State.PAUSED:
            key = reason or UNKNOWN_REASON
            out[key] = out.get(key, 0.0) + (b - a)
    return out


def _handle_times(ts: list[Transition], start: float, end: float, now: float) -> list[float]:
    """Talk + hold + ACW of each call answered in ``[start, end)``, followed past ``end`` up to ``now``.

    A call's handling runs from its ``AgentConnect`` while the agent stays in ``on_call``/``on_hold``/``acw``
    and ends at the first transition out of them (or into the next call).
    """
    out: list[float] = []
    for i, t in enumerate(ts):
        if t.cause != CAUSE_CONNECT or t.to_state != State.ON_CALL or not start <= t.at < end:
            continue
        total, cur, open_ended = 0.0, t.at, True
        for nxt in ts[i + 1:]:
            total += min(nxt.at, now) - cur
            if nxt.at >= now:
                open_ended = False
                break
            cur = nxt.at
            if nxt.to_state not in _HANDLING or nxt.cause == CAUSE_CONNECT:
                open_ended = False
                break
        if open_ended:
            total += max(0.0, now - cur)
        out.append(max(0.0, total))
    return out


def _ms(x: float) -> float:
    return round(x, 3)


@dataclass(frozen=True, slots=True)
class AgentFigures:
    """One agent's figures for one interval, named as in KPIS.md (seconds to the ms; ``None`` = 0 ÷ 0)."""

    logged_in_s: float
    available_s: float
    ringing_s: float
    talk_s: float
    hold_s: float
    acw_s: float
    paused_s: float
    paused_by_reason: dict[str, float] = field(default_factory=dict)
    handled: int = 0
    missed: int = 0
    aht_s: float | None = None
    occupancy: float | None = None
    utilization: float | None = None


def agent_figures(
    transitions: Sequence[Transition], start: float, end: float, now: float | None = None
) -> AgentFigures:
    """KPIS agent figures of ``[start, end)``.

    ``handled``: calls answered (``AgentConnect``) in the interval; ``missed``: rings ended by no answer in
    the interval. ``aht_s`` follows the calls answered in the interval to the end of their after-call work,
    past ``end`` if need be, up to ``now`` (default: the last instant known, ``end`` or the last transition).
    """
    ts = _ordered(transitions)
    d = state_durations(ts, start, end)
    logged_in = sum(v for s, v in d.items() if s != State.LOGGED_OUT)
    talk, hold, acw = d[State.ON_CALL], d[State.ON_HOLD], d[State.ACW]
    ringing, available = d[State.RINGING], d[State.AVAILABLE]
    handled = sum(1 for t in ts if t.cause == CAUSE_CONNECT and t.to_state == State.ON_CALL
                  and start <= t.at < end)
    missed = sum(1 for t in ts if t.cause == CAUSE_RNA and t.from_state == State.RINGING and start <= t.at < end)
    if now is None:
        now = max([end, *(t.at for t in ts)])
    handle = _handle_times(ts, start, end, now)
    busy = talk + hold + acw
    return AgentFigures(
        logged_in_s=_ms(logged_in),
        available_s=_ms(available),
        ringing_s=_ms(ringing),
        talk_s=_ms(talk),
        hold_s=_ms(hold),
        acw_s=_ms(acw),
        paused_s=_ms(d[State.PAUSED]),
        paused_by_reason={k: _ms(v) for k, v in sorted(paused_by_reason(ts, start, end).items())},
        handled=handled,
        missed=missed,
        aht_s=_ms(sum(handle) / len(handle)) if handle else None,
        occupancy=(busy + ringing) / (busy + ringing + available) if busy + ringing + available > 0 else None,
        utilization=busy / logged_in if logged_in > 0 else None,
    )
