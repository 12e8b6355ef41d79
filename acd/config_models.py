"""What an admin may send for each configuration resource, validated before anything reaches the database.

Why pydantic: every refusal names the field and says what is wrong, and the same rules (names safe for the
dialplan, bounded numbers) hold for every resource. The database repeats the essential rules as CHECK
constraints, so a row written by hand cannot break the PBX either.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="lower-case letters, digits, _ and -")]
Code = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
Did = Annotated[str, Field(pattern=r"^[0-9]{1,20}$", description="1-20 digits")]
Number = Annotated[str, Field(pattern=r"^\+?[0-9]{2,20}$", description="E.164-style number")]
Label = Annotated[str, Field(max_length=200)]
Level = Annotated[int, Field(ge=1, le=5)]

STRATEGIES = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TeamIn(Strict):
    name: Name


class PhoneIn(Strict):
    name: Name
    kind: Literal["agent", "supervisor"] = "agent"
    webrtc: bool = Field(False, description="a browser phone: registers over SIP on secure WebSocket (WSS) with "
                                            "DTLS-SRTP media (the agent desktop's softphone); false: a SIP phone "
                                            "over UDP")


class SkillIn(Strict):
    name: Name


class AgentIn(Strict):
    name: Name
    display_name: Label = ""
    phone: Name | None = None
    team: Name | None = None
    skills: dict[Name, Level] = Field(default_factory=dict, description="skill name -> level 1 (novice) .. 5 (expert)")


class AgentUpdate(Strict):
    display_name: Label | None = None
    phone: Name | None = None
    team: Name | None = None
    skills: dict[Name, Level] | None = None


class EscalationStep(Strict):
    after_s: Annotated[int, Field(ge=0, le=3600)]
    min_level: Level


class QueueFields(Strict):
    strategy: Literal["ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom"] = "rrmemory"
    required_skill: Name | None = None
    escalation: list[EscalationStep] = Field(default_factory=list, max_length=10)
    sl_threshold_s: Annotated[int, Field(ge=1, le=3600)] = 20
    ring_timeout_s: Annotated[int, Field(ge=5, le=120)] = 15
    max_wait_s: Annotated[int, Field(ge=5, le=86400)] | None = None
    max_len: Annotated[int, Field(ge=0, le=10000)] = 0
    overflow_queue: Name | None = None
    wrapup_s: Annotated[int, Field(ge=0, le=3600)] = 0
    announce_position: bool = False
    announce_holdtime: bool = False
    callback_enabled: bool = Field(False, description="waiting callers may press 1 to be called back, keeping "
                                                      "their place in the queue")
    recording: Literal["all", "on_demand", "none"] = Field(
        "all", description="all: every call recorded from the agent's answer; on_demand: only when asked over the "
                           "API; none: never")
    recording_retention_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        90, description="recordings older than this are deleted (files and rows) by the purge job")

    @field_validator("escalation")
    @classmethod
    def steps_in_order(cls, steps: list[EscalationStep]) -> list[EscalationStep]:
        after = [s.after_s for s in steps]
        if after != sorted(after) or len(set(after)) != len(after):
            raise ValueError("steps must have strictly increasing after_s")
        levels = [s.min_level for s in steps]
        if levels != sorted(levels, reverse=True):
            raise ValueError("min_level must not rise as the caller waits (the queue only widens)")
        return steps

    @model_validator(mode="after")
    def escalation_needs_skill(self) -> QueueFields:
        if self.escalation and self.required_skill is None:
            raise ValueError("escalation needs required_skill")
        return self


class QueueIn(QueueFields):
    name: Name

    @model_validator(mode="after")
    def not_own_overflow(self) -> QueueIn:
        if self.overflow_queue == self.name:
            raise ValueError("overflow_queue: a queue cannot overflow into itself")
        return self


class RouteIn(Strict):
    did: Did
    queue: Name | None = None
    ivr_flow: Name | None = None

    @model_validator(mode="after")
    def one_target(self) -> RouteIn:
        if (self.queue is None) == (self.ivr_flow is None):
            raise ValueError("give exactly one of queue or ivr_flow")
        return self


class CodeIn(Strict):
    code: Code
    label: Label = ""


class VipIn(Strict):
    number: Number
    priority: Annotated[int, Field(ge=1, le=100)] = 10


class UserIn(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    role: Literal["agent", "supervisor", "admin"]
    agent: Name | None = None
    team: Name | None = None
    phone: Name | None = Field(None, description="the supervisor's own phone: supervision sessions ring it")

    @model_validator(mode="after")
    def agent_role_names_agent(self) -> UserIn:
        if self.role == "agent" and self.agent is None:
            raise ValueError("agent: required for role agent")
        return self
