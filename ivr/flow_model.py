"""The IVR flow document: what an admin may save, as strict pydantic models (no I/O here).

A flow is ``{"start": "<node id>", "nodes": {"<node id>": {"type": "...", ...}}}``. Every value that can end
up in a dialplan application, a file name or a URL is constrained here: prompt names are plain relative
names, variable names are identifiers, digit keys are DTMF keys, time zones are IANA names, regexes are short
and compiled. Context-dependent checks (allowed URL hosts, known queues/prompts/transfer targets) and graph
checks (dangling targets, unreachable nodes, loops without caller input) live in ``ivr.validate``.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NODE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
VAR_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
VAR_REF_RE = re.compile(r"^\$\{([a-z][a-z0-9_]{0,31})\}$")
#: the only characters a caller can ever send us (DTMF)
DTMF_RE = re.compile(r"^[0-9*#]*$")
#: characters a collect ``pattern`` may use: digits, \d, escaped * and #, classes, groups, alternation,
#: quantifiers. No '.', no letters other than 'd' (so no \w, \s, \D), no anchors (we always fullmatch).
PATTERN_CHARS_RE = re.compile(r"^[0-9d\\\[\](){},|?+*#-]*$")
MAX_REGEX_LEN = 100
#: variables every flow has without setting them
BUILTIN_VARS = frozenset({"did", "caller", "lang"})

NodeId = Annotated[str, Field(pattern=NODE_ID_PATTERN, description="lower-case letters, digits, _ and -")]
VarName = Annotated[str, Field(pattern=VAR_PATTERN, description="lower-case identifier, max 32 chars")]
Digit = Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#"]
TimeoutMs = Annotated[int, Field(ge=1000, le=60000)]
Retries = Annotated[int, Field(ge=0, le=5)]
# A value an admin typed: bounded, printable (no control characters, so nothing can break a dialplan line).
SafeText = Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


def _check_prompt(name: str) -> str:
    if ".." in name or name.startswith("/") or "//" in name or name.endswith("/"):
        raise ValueError("prompt name must be a plain relative name (no '..', no leading/trailing or double '/')")
    return name


PromptName = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9_/-]{0,99}$", description="stock Asterisk sound or uploaded prompt name"),
]

HHMM = Annotated[str, Field(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]
Interval = Annotated[list[HHMM], Field(min_length=2, max_length=2)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
IsoDate = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]


def minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _nested_repeat(pattern: str) -> bool:
    """True if a group that contains a quantifier or alternation is itself repeated, e.g. (1+)+ or (1|11)*."""
    stack: list[bool] = []  # per open group: does it contain a quantifier or '|'?
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            stack.append(False)
        elif c in "+*?{|" and stack:
            stack[-1] = True
        elif c == ")" and stack:
            risky = stack.pop()
            if stack:
                stack[-1] = stack[-1] or risky
            if risky and i + 1 < len(pattern) and pattern[i + 1] in "+*{":
                return True
        i += 1
    return False


def is_var_ref(value: str) -> str | None:
    """The variable name if ``value`` is exactly ``${name}``, else None."""
    m = VAR_REF_RE.match(value)
    return m.group(1) if m else None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NodeBase(Strict):
    #: the node waits for the caller (DTMF); a cycle must contain at least one such node
    WAITS_FOR_INPUT: ClassVar[bool] = False
    #: the call leaves the flow here (no next)
    TERMINAL: ClassVar[bool] = False

    def targets(self) -> list[tuple[str, str]]:
        """(field, node id) for every edge out of this node."""
        return []

    def prompts(self) -> list[tuple[str, str]]:
        """(field, prompt name) for every prompt this node plays."""
        prompt = getattr(self, "prompt", None)
        return [("prompt", prompt)] if prompt else []

    def var_refs(self) -> list[tuple[str, str]]:
        """(field, variable name) for every variable this node reads."""
        return []

    def var_defs(self) -> list[str]:
        """Variables this node sets."""
        return []


class _PromptMixin(Strict):
    @field_validator("prompt", "invalid_prompt", check_fields=False)
    @classmethod
    def _safe_prompt(cls, v: str | None) -> str | None:
        return None if v is None else _check_prompt(v)


class PlayNode(NodeBase, _PromptMixin):
    type: Literal["play"]
    prompt: PromptName
    next: NodeId

    def targets(self) -> list[tuple[str, str]]:
        return [("next", self.next)]


class MenuNode(NodeBase, _PromptMixin):
    WAITS_FOR_INPUT: ClassVar[bool] = True
    type: Literal["menu"]
    prompt: PromptName
    options: Annotated[dict[Digit, NodeId], Field(min_length=1)]
    timeout_ms: TimeoutMs = 5000
    retries: Retries = 2
    invalid_prompt: PromptName | None = None
    timeout: NodeId
    invalid: NodeId

    def targets(self) -> list[tuple[str, str]]:
        out = [(f"options.{k}", v) for k, v in self.options.items()]
        return [*out, ("timeout", self.timeout), ("invalid", self.invalid)]

    def prompts(self) -> list[tuple[str, str]]:
        extra = [("invalid_prompt", self.invalid_prompt)] if self.invalid_prompt else []
        return [("prompt", self.prompt), *extra]


class CollectNode(NodeBase, _PromptMixin):
    """Read digits into ``var`` (checked for DTMF, length, terminator and ``pattern`` before they are stored).

    ``secure`` is for card numbers and other PCI data: the digits stay in the call's memory only. The step
    record holds a mask (``ivr.simulate.mask_secure``), the variable never reaches ``IVR_INPUTS`` (so neither
    AMI events, the agent's screen-pop nor the event store see it), and the executor's ``pci`` hook pauses any
    running recording of the channel while the caller types.
    """

    WAITS_FOR_INPUT: ClassVar[bool] = True
    type: Literal["collect"]
    prompt: PromptName
    var: VarName
    min_digits: Annotated[int, Field(ge=1, le=32)] = 1
    max_digits: Annotated[int, Field(ge=1, le=32)]
    terminator: Literal["#"] | None = "#"
    timeout_ms: TimeoutMs = 5000
    pattern: Annotated[str, Field(min_length=1, max_length=MAX_REGEX_LEN)] | None = None
    retries: Retries = 2
    invalid_prompt: PromptName | None = None
    next: NodeId
    invalid: NodeId
    secure: bool = Field(False, description=(
        "PCI data such as a card number: the step record keeps only a mask (the last 4 digits of 12 or more, "
        "otherwise none), the variable is never passed to the agent or AMI (queue vars drop it) and a running "
        "recording of the channel is paused while the caller types"))

    @field_validator("pattern")
    @classmethod
    def _safe_pattern(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not PATTERN_CHARS_RE.match(v):
            raise ValueError("pattern may only use digits, \\d, \\* \\#, [], (), {}, |, ?, +, * and - "
                             "(it must match digits, * and # only; it is always matched in full)")
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"pattern does not compile: {exc}") from None
        if _nested_repeat(v):
            raise ValueError("pattern: a repeated group must not contain a quantifier or '|' "
                             "(catastrophic backtracking); use a character class instead")
        return v

    @model_validator(mode="after")
    def _lengths(self) -> CollectNode:
        if self.min_digits > self.max_digits:
            raise ValueError("min_digits must not exceed max_digits")
        return self

    def targets(self) -> list[tuple[str, str]]:
        return [("next", self.next), ("invalid", self.invalid)]

    def prompts(self) -> list[tuple[str, str]]:
        extra = [("invalid_prompt", self.invalid_prompt)] if self.invalid_prompt else []
        return [("prompt", self.prompt), *extra]

    def var_defs(self) -> list[str]:
        return [self.var]


class TimeConditionNode(NodeBase):
    type: Literal["time_condition"]
    timezone: Annotated[str, Field(max_length=64)]
    hours: dict[Weekday, Annotated[list[Interval], Field(max_length=12)]] = Field(default_factory=dict)
    holidays: Annotated[list[IsoDate], Field(max_length=500)] = Field(default_factory=list)
    open: NodeId
    closed: NodeId
    holiday: NodeId | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$", v):
            raise ValueError(f"unknown time zone {v!r}")
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("holidays")
    @classmethod
    def _dates(cls, v: list[str]) -> list[str]:
        for d in v:
            try:
                date.fromisoformat(d)
            except ValueError:
                raise ValueError(f"not a date: {d!r}") from None
        return v

    @field_validator("hours")
    @classmethod
    def _intervals(cls, v: dict[str, list[list[str]]]) -> dict[str, list[list[str]]]:
        for day, spans in v.items():
            for start, end in spans:
                if minutes(start) >= minutes(end):
                    raise ValueError(f"{day}: interval {start}-{end} must end after it starts")
        return v

    def targets(self) -> list[tuple[str, str]]:
        out = [("open", self.open), ("closed", self.closed)]
        return [*out, ("holiday", self.holiday)] if self.holiday else out

    def is_open(self, day_key: str, minute_of_day: int) -> bool:
        spans = next((v for k, v in self.hours.items() if k == day_key), [])
        return any(minutes(s) <= minute_of_day < minutes(e) for s, e in spans)


class HttpLookupNode(NodeBase):
    type: Literal["http_lookup"]
    url: Annotated[str, Field(max_length=500, pattern=r"^[!-~]+$")]
    params: Annotated[dict[VarName, SafeText], Field(max_length=20)] = Field(default_factory=dict)
    timeout_ms: Annotated[int, Field(ge=100, le=10000)] = 2000
    field: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64}){0,7}$")]
    branches: Annotated[dict[SafeText, NodeId], Field(max_length=50)] = Field(default_factory=dict)
    default: NodeId
    failure: NodeId

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https"):
            raise ValueError("url must be http or https")
        if not parts.hostname:
            raise ValueError("url must name a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("url must not carry credentials")
        if "${" in v or parts.fragment:
            raise ValueError("url must be fixed: pass caller values in params, not in the url")
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if "${" in value and is_var_ref(value) is None:
                raise ValueError(f"{name}: a value is a literal or exactly one reference like ${{var}}")
        return v

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    def targets(self) -> list[tuple[str, str]]:
        out = [(f"branches.{k}", v) for k, v in self.branches.items()]
        return [*out, ("default", self.default), ("failure", self.failure)]

    def var_refs(self) -> list[tuple[str, str]]:
        return [(f"params.{k}", ref) for k, v in self.params.items() if (ref := is_var_ref(v))]


class SetVariableNode(NodeBase):
    type: Literal["set_variable"]
    var: VarName
    value: SafeText
    next: NodeId

    @field_validator("value")
    @classmethod
    def _value(cls, v: str) -> str:
        if "${" in v and is_var_ref(v) is None:
            raise ValueError("value is a literal or exactly one reference like ${var}")
        return v

    def targets(self) -> list[tuple[str, str]]:
        return [("next", self.next)]

    def var_refs(self) -> list[tuple[str, str]]:
        ref = is_var_ref(self.value)
        return [("value", ref)] if ref else []

    def var_defs(self) -> list[str]:
        return [self.var]


class LanguageNode(NodeBase):
    type: Literal["language"]
    lang: Annotated[str, Field(pattern=r"^[a-z]{2}(_[A-Z]{2})?$")]
    next: NodeId

    def targets(self) -> list[tuple[str, str]]:
        return [("next", self.next)]


class QueueNode(NodeBase):
    TERMINAL: ClassVar[bool] = True
    type: Literal["queue"]
    queue: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    priority: Annotated[int, Field(ge=0, le=100)] = 0
    vars: Annotated[list[VarName], Field(max_length=20)] = Field(default_factory=list)

    def var_refs(self) -> list[tuple[str, str]]:
        return [(f"vars.{i}", v) for i, v in enumerate(self.vars)]


class TransferNode(NodeBase):
    TERMINAL: ClassVar[bool] = True
    type: Literal["transfer"]
    extension: Annotated[str, Field(pattern=r"^[0-9]{2,8}$")] | None = None
    number: Annotated[str, Field(pattern=r"^\+?[0-9]{3,20}$")] | None = None

    @model_validator(mode="after")
    def _one(self) -> TransferNode:
        if (self.extension is None) == (self.number is None):
            raise ValueError("give exactly one of extension or number")
        return self

    @property
    def target(self) -> str:
        return f"extension:{self.extension}" if self.extension is not None else f"number:{self.number}"


class MessageNode(NodeBase, _PromptMixin):
    """Record a message (voicemail): the call ends after the recording."""

    TERMINAL: ClassVar[bool] = True
    type: Literal["message", "voicemail"]
    prompt: PromptName
    max_seconds: Annotated[int, Field(ge=5, le=600)] = 120


class CallbackOfferNode(NodeBase, _PromptMixin):
    WAITS_FOR_INPUT: ClassVar[bool] = True
    type: Literal["callback_offer"]
    prompt: PromptName
    digit: Digit = "1"
    timeout_ms: TimeoutMs = 5000
    accepted: NodeId
    declined: NodeId

    def targets(self) -> list[tuple[str, str]]:
        return [("accepted", self.accepted), ("declined", self.declined)]


class SurveyNode(NodeBase, _PromptMixin):
    """Arms a post-call CSAT survey: after the agent hangs up the caller hears ``prompt`` and presses 1-5.

    Passing the node does not wait for the caller (the flow goes straight on to ``next``), so for the loop
    check it is NOT an input node.
    """

    type: Literal["survey"]
    prompt: PromptName
    var: VarName
    next: NodeId

    def targets(self) -> list[tuple[str, str]]:
        return [("next", self.next)]

    def var_defs(self) -> list[str]:
        return [self.var]


class HangupNode(NodeBase, _PromptMixin):
    TERMINAL: ClassVar[bool] = True
    type: Literal["hangup"]
    prompt: PromptName | None = None


Node = Annotated[
    PlayNode | MenuNode | CollectNode | TimeConditionNode | HttpLookupNode | SetVariableNode | LanguageNode
    | QueueNode | TransferNode | MessageNode | CallbackOfferNode | SurveyNode | HangupNode,
    Field(discriminator="type"),
]

NODE_TYPES: tuple[str, ...] = (
    "play", "menu", "collect", "time_condition", "http_lookup", "set_variable", "language", "queue",
    "transfer", "message", "voicemail", "callback_offer", "survey", "hangup",
)
#: fields that name another node, for best-effort graph checks on nodes that failed validation
TARGET_FIELDS = ("next", "timeout", "invalid", "open", "closed", "holiday", "default", "failure",
                 "accepted", "declined")
TARGET_MAPS = ("options", "branches")


class Flow(Strict):
    start: NodeId
    nodes: Annotated[dict[NodeId, Node], Field(min_length=1, max_length=500)]
