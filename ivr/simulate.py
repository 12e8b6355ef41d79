"""Walk a validated flow without a call: given caller inputs, a clock and a stand-in for HTTP lookups.

Inputs are consumed one per wait for the caller (menu attempt, collect attempt, callback offer, and the
post-call survey rating); "" is a timeout, and once the inputs run out every further wait is a timeout.
Caller input is treated exactly as the executor must treat it: anything that is not DTMF (0-9 * #) is
invalid and never stored; collected digits are stored only after length, terminator and pattern checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ivr.flow_model import (
    DTMF_RE,
    WEEKDAYS,
    CallbackOfferNode,
    CollectNode,
    Flow,
    HangupNode,
    HttpLookupNode,
    LanguageNode,
    MenuNode,
    MessageNode,
    PlayNode,
    QueueNode,
    SetVariableNode,
    SurveyNode,
    TimeConditionNode,
    TransferNode,
    is_var_ref,
)

MAX_STEPS = 200
HttpCall = Callable[[str, dict[str, str]], dict[str, Any] | None]


@dataclass(frozen=True)
class StepRecord:
    node: str
    type: str
    input: str | None  # what the caller typed at this step (None: the node does not wait for the caller)
    outcome: str


@dataclass
class SimulationResult:
    path: list[StepRecord]
    variables: dict[str, str]
    #: queue:<name> | transfer:extension:<n> | transfer:number:<n> | message | hangup | step_limit
    end: str
    call_data: dict[str, str] = field(default_factory=dict)  # what a queue node passes to the agent
    priority: int | None = None


class _Inputs:
    def __init__(self, inputs: list[str]) -> None:
        self._items = list(inputs)
        self._pos = 0

    def take(self) -> str:
        if self._pos >= len(self._items):
            return ""
        value = self._items[self._pos]
        self._pos += 1
        return value


def _lookup(doc: Any, path: str) -> str | None:
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, (str, int, float)):
        return str(cur)
    return None


def time_branch(node: TimeConditionNode, now: datetime) -> str:
    """'open', 'closed' or 'holiday' at ``now`` (an aware datetime) in the node's time zone."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    local = now.astimezone(ZoneInfo(node.timezone))
    if local.date() in {date.fromisoformat(d) for d in node.holidays}:
        return "holiday"
    return "open" if node.is_open(WEEKDAYS[local.weekday()], local.hour * 60 + local.minute) else "closed"


def _collect_ok(node: CollectNode, typed: str) -> str | None:
    """The digits to store, or None if the input is invalid."""
    if not DTMF_RE.match(typed) or len(typed) > 64:
        return None
    digits = typed[:-1] if node.terminator and typed.endswith(node.terminator) else typed
    if not node.min_digits <= len(digits) <= node.max_digits:
        return None
    if node.pattern is not None and re.fullmatch(node.pattern, digits) is None:
        return None
    if not DTMF_RE.match(digits):  # the pattern cannot widen what we store
        return None
    return digits


def simulate(flow: Flow, inputs: list[str], *, now: datetime, http: HttpCall | None = None,
             variables: dict[str, str] | None = None, max_steps: int = MAX_STEPS) -> SimulationResult:
    """Walk ``flow`` from its start. ``variables`` seeds built-ins such as did/caller."""
    feed = _Inputs(inputs)
    vars_: dict[str, str] = dict(variables or {})
    path: list[StepRecord] = []
    survey: tuple[str, SurveyNode] | None = None
    current = flow.start

    def step(node_id: str, kind: str, typed: str | None, outcome: str) -> None:
        path.append(StepRecord(node_id, kind, typed, outcome))

    while len(path) < max_steps:
        node = flow.nodes[current]
        if isinstance(node, PlayNode):
            step(current, node.type, None, "played")
            current = node.next
        elif isinstance(node, MenuNode):
            last = "timeout"
            nxt: str | None = None
            for _attempt in range(node.retries + 1):
                typed = feed.take()
                if typed in node.options:
                    step(current, node.type, typed, f"option {typed}")
                    nxt = node.options[typed]
                    break
                last = "timeout" if typed == "" else "invalid"
                step(current, node.type, typed if DTMF_RE.match(typed) else "<rejected>", last)
                if len(path) >= max_steps:
                    break
            current = nxt if nxt is not None else (node.timeout if last == "timeout" else node.invalid)
        elif isinstance(node, CollectNode):
            got: str | None = None
            for _attempt in range(node.retries + 1):
                typed = feed.take()
                got = _collect_ok(node, typed)
                shown = typed if DTMF_RE.match(typed) and len(typed) <= 64 else "<rejected>"
                if got is not None:
                    step(current, node.type, shown, "collected")
                    break
                step(current, node.type, shown, "timeout" if typed == "" else "invalid")
            if got is not None:
                vars_[node.var] = got
                current = node.next
            else:
                current = node.invalid
        elif isinstance(node, TimeConditionNode):
            branch = time_branch(node, now)
            step(current, node.type, None, branch)
            if branch == "holiday":
                current = node.holiday or node.closed
            else:
                current = node.open if branch == "open" else node.closed
        elif isinstance(node, HttpLookupNode):
            params = {}
            for name, value in node.params.items():
                ref = is_var_ref(value)
                params[name] = vars_.get(ref, "") if ref else value
            answer = http(node.url, params) if http is not None else None
            if answer is None:
                step(current, node.type, None, "failure")
                current = node.failure
            else:
                found = _lookup(answer, node.field)
                if found is not None and found in node.branches:
                    step(current, node.type, None, f"branch {found}")
                    current = node.branches[found]
                else:
                    step(current, node.type, None, "default")
                    current = node.default
        elif isinstance(node, SetVariableNode):
            ref = is_var_ref(node.value)
            vars_[node.var] = vars_.get(ref, "") if ref else node.value
            step(current, node.type, None, "set")
            current = node.next
        elif isinstance(node, LanguageNode):
            vars_["lang"] = node.lang
            step(current, node.type, None, f"lang {node.lang}")
            current = node.next
        elif isinstance(node, CallbackOfferNode):
            typed = feed.take()
            accepted = typed == node.digit
            step(current, node.type, typed if DTMF_RE.match(typed) else "<rejected>",
                 "accepted" if accepted else "declined")
            current = node.accepted if accepted else node.declined
        elif isinstance(node, SurveyNode):
            survey = (current, node)
            step(current, node.type, None, "armed")
            current = node.next
        elif isinstance(node, QueueNode):
            step(current, node.type, None, "queued")
            result = SimulationResult(path, vars_, f"queue:{node.queue}",
                                      call_data={v: vars_[v] for v in node.vars if v in vars_},
                                      priority=node.priority)
            if survey is not None:  # the agent hangs up, the caller rates the call
                survey_id, snode = survey
                typed = feed.take()
                ok = typed in ("1", "2", "3", "4", "5")
                if ok:
                    vars_[snode.var] = typed
                path.append(StepRecord(survey_id, snode.type, typed if DTMF_RE.match(typed) else "<rejected>",
                                       "rated" if ok else "no rating"))
            return result
        elif isinstance(node, TransferNode):
            step(current, node.type, None, "transferred")
            return SimulationResult(path, vars_, f"transfer:{node.target}")
        elif isinstance(node, MessageNode):
            step(current, node.type, None, "recorded")
            return SimulationResult(path, vars_, "message")
        elif isinstance(node, HangupNode):
            step(current, node.type, None, "hung up")
            return SimulationResult(path, vars_, "hangup")
        else:  # pragma: no cover - the union is closed
            raise TypeError(f"unknown node {node!r}")
    return SimulationResult(path, vars_, "step_limit")
