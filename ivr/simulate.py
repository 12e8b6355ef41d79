"""Walk a validated flow without a call: given caller inputs, a clock and a stand-in for HTTP lookups.

Inputs are consumed one per wait for the caller (menu attempt, collect attempt, callback offer, and the
post-call survey rating); "" is a timeout, and once the inputs run out every further wait is a timeout.
Caller input is treated exactly as the executor must treat it: anything that is not DTMF (0-9 * #) is
invalid and never stored; collected digits are stored only after length, terminator and pattern checks.
A secure collect (card numbers) is walked like any collect, but its trace and the returned variables show
only the mask of ``mask_secure``, and its variable is left out of a queue node's call data.
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


#: a secure collect's record shows the last digits only when at least this many were typed: 12 is the shortest
#: card number in use, and below that the last 4 would give away too much of a short secret (CVV, PIN, expiry)
MASK_SHOW_LAST_FROM = 12
MASK_SHOW_LAST = 4


def mask_secure(node: CollectNode, typed: str) -> str:
    """What a secure collect records instead of the digits: every digit as ``*`` (so the count is kept), the
    last 4 in clear when 12 or more were typed ("************1234"), the terminator dropped; "" (timeout) and
    "<rejected>" (not DTMF) as for any collect. Invalid attempts are masked too: they may be a real card
    number that is one digit short or failed the pattern."""
    if not DTMF_RE.match(typed) or len(typed) > 64:
        return "<rejected>"
    return mask_digits(typed[:-1] if node.terminator and typed.endswith(node.terminator) else typed)


def mask_digits(digits: str) -> str:
    """The masking rule of ``mask_secure`` for digits already stripped of the terminator."""
    if len(digits) < MASK_SHOW_LAST_FROM:
        return "*" * len(digits)
    return "*" * (len(digits) - MASK_SHOW_LAST) + digits[-MASK_SHOW_LAST:]


def shown_input(node: CollectNode, typed: str) -> str:
    """What a collect attempt records: the DTMF typed (``<rejected>`` otherwise), masked for a secure node."""
    if node.secure:
        return mask_secure(node, typed)
    return typed if DTMF_RE.match(typed) and len(typed) <= 64 else "<rejected>"


class SecretVars:
    """Which variables hold what a secure collect read, so they are never handed to the agent.

    A variable copied from a secret one (``set_variable`` with ``${card}``) is secret too; one assigned a
    non-secret value again is not.
    """

    def __init__(self) -> None:
        self.names: set[str] = set()

    def assign(self, var: str, secret: bool) -> None:
        if secret:
            self.names.add(var)
        else:
            self.names.discard(var)

    def __contains__(self, var: object) -> bool:
        return var in self.names

    def call_data(self, variables: dict[str, str], wanted: list[str]) -> dict[str, str]:
        """A queue node's ``vars`` (what reaches IVR_INPUTS): the set ones, secret ones left out."""
        return {v: variables[v] for v in wanted if v in variables and v not in self.names}


def simulate(flow: Flow, inputs: list[str], *, now: datetime, http: HttpCall | None = None,
             variables: dict[str, str] | None = None, max_steps: int = MAX_STEPS) -> SimulationResult:
    """Walk ``flow`` from its start. ``variables`` seeds built-ins such as did/caller.

    Secret variables (from secure collects) are masked in the returned variables, as in the executor's records.
    """
    secret = SecretVars()
    result = _simulate(flow, inputs, now=now, http=http, variables=variables, max_steps=max_steps, secret=secret)
    for var in secret.names & result.variables.keys():
        result.variables[var] = mask_digits(result.variables[var])
    return result


def _simulate(flow: Flow, inputs: list[str], *, now: datetime, http: HttpCall | None,
              variables: dict[str, str] | None, max_steps: int, secret: SecretVars) -> SimulationResult:
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
                shown = shown_input(node, typed)
                if got is not None:
                    step(current, node.type, shown, "collected")
                    break
                step(current, node.type, shown, "timeout" if typed == "" else "invalid")
            if got is not None:
                vars_[node.var] = got
                secret.assign(node.var, node.secure)
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
            secret.assign(node.var, ref is not None and ref in secret)
            step(current, node.type, None, "set")
            current = node.next
        elif isinstance(node, LanguageNode):
            vars_["lang"] = node.lang
            secret.assign("lang", False)
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
                                      call_data=secret.call_data(vars_, node.vars),
                                      priority=node.priority)
            if survey is not None:  # the agent hangs up, the caller rates the call
                survey_id, snode = survey
                typed = feed.take()
                ok = typed in ("1", "2", "3", "4", "5")
                if ok:
                    vars_[snode.var] = typed
                    secret.assign(snode.var, False)
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
