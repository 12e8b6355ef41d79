"""Run a published IVR flow on a live call over FastAGI, recording every step.

The walk follows the simulator's rules (ivr/simulate.py) with real I/O: prompts are played and digits read
with AGI `GET DATA`, HTTP lookups are made with a hard timeout, time conditions use an injectable clock. Caller
input is only ever compared with the flow's own keys or checked with `_collect_ok` (DTMF only, length, pattern)
before it is stored; it never reaches a dialplan application, a file name or a URL by itself (URLs only carry
it as encoded query parameters).

Supported now: play, menu, collect, time_condition, http_lookup, set_variable, language, survey (armed here, run
after the agent hangs up: ivr/survey.py), queue, transfer, message/voicemail (recorded to the PBX's messages
folder, stored in `ivr_messages`), callback_offer (accepted: the next queue node books a callback through the
queue callback service instead of queueing the caller), hangup.

A secure collect (card numbers, PCI) keeps the digits in this walk's memory only: its steps are recorded
masked, its variable (and any copied from it) is left out of the queue node's call data, i.e. out of
IVR_INPUTS, AMI events and the screen-pop; HTTP lookups may still send it as a parameter and the flow branches
on the real value. Around it the `pci` hook is told (uniqueid, True) then (uniqueid, False) so a running
recording of the channel is paused while the caller types.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from ivr.flow_model import (
    DTMF_RE,
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
from ivr.prompts import PromptStore
from ivr.simulate import MAX_STEPS, SecretVars, _collect_ok, _lookup, shown_input, time_branch
from ivr.survey import call_ids, survey_ref
from telephony.fastagi import AgiError, AgiHangup, AgiSession

log = logging.getLogger("ivr.executor")


@dataclass(frozen=True)
class Step:
    flow: str
    version: int
    uniqueid: str
    linkedid: str | None
    index: int
    node_id: str
    node_type: str
    input: str | None
    outcome: str


@dataclass
class FlowOutcome:
    """How the flow ended: `queue` (with queue, priority, call data) or `hangup`."""

    kind: str
    queue: str | None = None
    priority: int = 0
    call_data: dict[str, str] = field(default_factory=dict)
    survey: str | None = None  # "<flow>/<version>/<node>" when a survey node was passed
    transfer_extension: str | None = None
    transfer_number: str | None = None


StepSink = Callable[[Step], Awaitable[None]]
MessageSink = Callable[[str, int, str, str | None, str], Awaitable[None]]  # flow, version, uniqueid, linkedid, file
MESSAGES_IN_PBX = "/var/spool/asterisk/messages"
Clock = Callable[[], datetime]
#: (channel uniqueid, True) before a secure collect prompts, (uniqueid, False) once it is over, however it ends
PciHook = Callable[[str, bool], Awaitable[None]]
#: a PCI hook that takes longer is given up on (logged): a caller must not wait on the recording service
PCI_HOOK_TIMEOUT_S = 3.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


CUSTOM_PREFIX = "custom/"


def pbx_sound(prompt: str) -> str:
    """An uploaded prompt `custom/<name>` as the PBX path of its file (name checked again); others unchanged."""
    if not prompt.startswith(CUSTOM_PREFIX):
        return prompt
    return PromptStore.path_in_pbx(prompt[len(CUSTOM_PREFIX):])  # ValueError (PromptError) on a bad name


async def _play(session: AgiSession, prompt: str) -> None:
    await session.stream_file(pbx_sound(prompt))


async def _get_data(session: AgiSession, prompt: str, timeout_ms: int, max_digits: int) -> str:
    return await session.get_data(pbx_sound(prompt), timeout_ms, max_digits)


class FlowExecutor:
    def __init__(self, record: StepSink | None = None, *, clock: Clock = _utc_now,
                 http_session: Callable[[], aiohttp.ClientSession] | None = None,
                 on_message: MessageSink | None = None, pci: PciHook | None = None) -> None:
        self.record = record
        self.on_message = on_message
        self.pci = pci
        self.clock = clock
        self._http_session = http_session

    async def run(self, session: AgiSession, flow: Flow, name: str, version: int,
                  variables: dict[str, str]) -> FlowOutcome:
        """Walk the flow; a caller hanging up mid-flow or an AGI error ends it cleanly and is recorded as the
        outcome of the node it happened in (then raised on, so the FastAGI server closes the session)."""
        where: list[tuple[str, str]] = []
        try:
            return await self._walk(session, flow, name, version, variables, where)
        except AgiError as exc:
            node_id, kind = where[-1] if where else (flow.start, "?")
            outcome = "caller_hangup" if isinstance(exc, AgiHangup) else "agi_error"
            if self.record is not None:
                uniqueid, linkedid = call_ids(session)
                try:
                    await self.record(Step(name, version, uniqueid, linkedid, 10_000, node_id, kind, None, outcome))
                except Exception:
                    log.exception("IVR step not recorded")
            raise

    async def _walk(self, session: AgiSession, flow: Flow, name: str, version: int,
                    variables: dict[str, str], where: list[tuple[str, str]]) -> FlowOutcome:
        uniqueid, linkedid = call_ids(session)
        vars_ = dict(variables)
        secret = SecretVars()  # variables a secure collect set: never handed on to the agent
        index = 0
        current = flow.start
        survey: str | None = None
        callback = False  # a callback offer was accepted: the queue node then books a callback instead

        async def step(node_id: str, kind: str, typed: str | None, outcome: str) -> None:
            nonlocal index
            index += 1
            if self.record is not None:
                try:
                    await self.record(Step(name, version, uniqueid, linkedid, index, node_id, kind, typed, outcome))
                except Exception:  # reporting must never break the call
                    log.exception("IVR step not recorded")

        while index < MAX_STEPS:
            node = flow.nodes[current]
            where.append((current, node.type))
            if isinstance(node, PlayNode):
                await _play(session, node.prompt)
                await step(current, node.type, None, "played")
                current = node.next
            elif isinstance(node, MenuNode):
                nxt: str | None = None
                last = "timeout"
                for attempt in range(node.retries + 1):
                    prompt = node.prompt if attempt == 0 or not node.invalid_prompt else node.invalid_prompt
                    typed = await _get_data(session, prompt, node.timeout_ms, 1)
                    if typed in node.options:
                        await step(current, node.type, typed, f"option {typed}")
                        nxt = node.options[typed]
                        break
                    last = "timeout" if typed == "" else "invalid"
                    await step(current, node.type, typed if DTMF_RE.match(typed) else "<rejected>", last)
                current = nxt if nxt is not None else (node.timeout if last == "timeout" else node.invalid)
            elif isinstance(node, CollectNode):
                got: str | None = None
                try:
                    if node.secure:  # inside the try: a pause cut short (cancelled) is still undone
                        await self._pci(uniqueid, True)
                    for attempt in range(node.retries + 1):
                        prompt = node.prompt if attempt == 0 or not node.invalid_prompt else node.invalid_prompt
                        typed = await _get_data(session, prompt, node.timeout_ms, node.max_digits)
                        got = _collect_ok(node, typed)
                        await step(current, node.type, shown_input(node, typed), "collected" if got is not None else
                                   ("timeout" if typed == "" else "invalid"))
                        if got is not None:
                            break
                finally:  # also on a hang-up or an AGI error: a paused recording must not stay paused
                    if node.secure:
                        await self._pci(uniqueid, False)
                if got is not None:
                    vars_[node.var] = got
                    secret.assign(node.var, node.secure)
                    current = node.next
                else:
                    current = node.invalid
            elif isinstance(node, TimeConditionNode):
                branch = time_branch(node, self.clock())
                await step(current, node.type, None, branch)
                current = (node.holiday or node.closed) if branch == "holiday" else (
                    node.open if branch == "open" else node.closed)
            elif isinstance(node, HttpLookupNode):
                params = {k: (vars_.get(ref, "") if (ref := is_var_ref(v)) else v) for k, v in node.params.items()}
                answer = await self._http(node, params)
                if answer is None:
                    await step(current, node.type, None, "failure")
                    current = node.failure
                else:
                    found = _lookup(answer, node.field)
                    if found is not None and found in node.branches:
                        await step(current, node.type, None, f"branch {found}")
                        current = node.branches[found]
                    else:
                        await step(current, node.type, None, "default")
                        current = node.default
            elif isinstance(node, SetVariableNode):
                ref = is_var_ref(node.value)
                vars_[node.var] = vars_.get(ref, "") if ref else node.value
                secret.assign(node.var, ref is not None and ref in secret)
                await step(current, node.type, None, "set")
                current = node.next
            elif isinstance(node, LanguageNode):
                vars_["lang"] = node.lang
                secret.assign("lang", False)
                await step(current, node.type, None, f"lang {node.lang}")
                current = node.next
            elif isinstance(node, SurveyNode):
                survey = survey_ref(name, version, current)
                await step(current, node.type, None, "armed")
                current = node.next
            elif isinstance(node, CallbackOfferNode):
                typed = await _get_data(session, node.prompt, node.timeout_ms, 1)
                callback = typed == node.digit
                await step(current, node.type, typed if DTMF_RE.match(typed) else "<rejected>",
                           "accepted" if callback else "declined")
                current = node.accepted if callback else node.declined
            elif isinstance(node, QueueNode):
                await step(current, node.type, None, "callback" if callback else "queued")
                return FlowOutcome("callback" if callback else "queue", node.queue, node.priority,
                                   secret.call_data(vars_, node.vars), survey)
            elif isinstance(node, MessageNode):
                await _play(session, node.prompt)
                path = f"{MESSAGES_IN_PBX}/{uniqueid}"
                await session.record_file(path, node.max_seconds * 1000)
                await step(current, node.type, None, "recorded")
                if self.on_message is not None:
                    await self.on_message(name, version, uniqueid, linkedid, f"{uniqueid}.wav")
                return FlowOutcome("hangup")
            elif isinstance(node, TransferNode):
                await step(current, node.type, None, "transferred")
                return FlowOutcome("transfer", transfer_extension=node.extension, transfer_number=node.number)
            elif isinstance(node, HangupNode):
                await step(current, node.type, None, "hangup")
                return FlowOutcome("hangup")
            else:
                await step(current, node.type, None, "unsupported")
                log.warning("IVR flow %s v%d: node %s (%s) is not supported yet: call ended", name, version,
                            current, node.type)
                return FlowOutcome("hangup")
        await step(current, "limit", None, "step_limit")
        return FlowOutcome("hangup")

    async def _pci(self, uniqueid: str, active: bool) -> None:
        """Tell the PCI hook a secure collect starts or ends. Its failure (or slowness) is logged, never raised:
        the caller's call goes on, and the recording service bounds a pause on its own."""
        if self.pci is None:
            return
        try:
            async with asyncio.timeout(PCI_HOOK_TIMEOUT_S):
                await self.pci(uniqueid, active)
        except TimeoutError:
            log.warning("IVR PCI hook (%s, %s) took over %.1fs; the call goes on", uniqueid, active,
                        PCI_HOOK_TIMEOUT_S)
        except Exception:
            log.exception("IVR PCI hook (%s, %s) failed; the call goes on", uniqueid, active)

    async def _http(self, node: HttpLookupNode, params: dict[str, str]) -> dict[str, Any] | None:
        """GET with the node's timeout; any failure (timeout, HTTP error, not JSON) is the failure branch."""
        try:
            timeout = aiohttp.ClientTimeout(total=node.timeout_ms / 1000)
            own = self._http_session is None
            sess = aiohttp.ClientSession(timeout=timeout) if own else self._http_session()  # type: ignore[misc]
            try:
                async with sess.get(node.url, params=params, timeout=timeout) as resp:
                    if resp.status >= 300:
                        return None
                    data = await resp.json(content_type=None)
                    return data if isinstance(data, dict) else None
            finally:
                if own:
                    await sess.close()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
