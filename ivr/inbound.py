"""The inbound IVR entry point, run by the FastAGI server for every call from the carrier.

A DID routed to an IVR flow runs the flow's published version (ivr/executor.py; read per call, so publishing
applies to the next call and a call in progress keeps its version); a DID routed to a queue goes there after a
greeting. Everything it reads from
the channel is untrusted: the DID must be digits, the caller number is filtered by the dialplan and checked
again here, and the values it hands back are names and numbers the API validated; the dialplan checks them a
second time (REGEX/FILTER) before Queue().
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode

from ivr.executor import FlowExecutor
from ivr.flow_model import Flow
from ivr.survey import run_survey
from service.config import DID_RE
from telephony.fastagi import AgiError, AgiSession

log = logging.getLogger("ivr.inbound")

GREETING = "hello-world"  # a stock prompt; admins' prompts arrive with the IVR issue
CALLER_RE = re.compile(r"^\+?[0-9]{1,20}$")


@dataclass(frozen=True)
class QueueTarget:
    """Where a call goes and how it waits: what the dialplan's [queue-entry] reads back."""

    queue: str
    priority: int = 0
    max_wait_s: int | None = None
    overflow_queue: str | None = None
    max_penalty: int | None = None


TargetLookup = Callable[[str, str], Awaitable[QueueTarget | None]]


class FlowBackend(Protocol):
    """What the IVR needs to run flows (the service implements it over PostgreSQL)."""

    async def flow_for(self, did: str) -> str | None: ...

    async def published(self, name: str) -> tuple[Flow, int]: ...

    async def queue_target(self, queue: str, caller: str, priority: int) -> QueueTarget | None: ...

    async def flow_version(self, name: str, version: int) -> Flow: ...

    async def store_survey(self, linkedid: str, uniqueid: str, flow: str, version: int, score: int) -> None: ...


class InboundIvr:
    def __init__(self, target_for: TargetLookup, greeting: str | None = GREETING,
                 flows: FlowBackend | None = None, executor: FlowExecutor | None = None) -> None:
        self.target_for = target_for
        self.greeting = greeting
        self.flows = flows
        self.executor = executor

    async def __call__(self, session: AgiSession) -> None:
        if session.script == "survey":
            if self.flows is not None:
                await run_survey(session, self.flows.flow_version, self.flows.store_survey)
            return
        did = session.params.get("did", "")
        if not DID_RE.match(did):
            log.warning("IVR: refused call with invalid DID %r", did[:40])
            await session.set_variable("IVR_ACTION", "hangup")
            return
        caller = session.env.get("agi_callerid", "")
        caller = caller if CALLER_RE.match(caller) else ""
        flow_name = await self.flows.flow_for(did) if self.flows is not None else None
        if flow_name is not None:
            await self._run_flow(session, flow_name, did, caller)
            return
        target = await self.target_for(did, caller)
        if target is None:
            log.info("IVR: no inbound route for DID %s", did)
            await session.set_variable("IVR_ACTION", "hangup")
            return
        await session.answer()
        if self.greeting:
            try:
                await session.stream_file(self.greeting)
            except AgiError as exc:  # result -1: the caller hung up during the prompt, or it is missing
                log.info("IVR: greeting not played (%s); the call goes on to the queue if still up", exc)
        await self._queue(session, target, {"did": did})
        log.info("IVR: DID %s -> queue %s (%s)", did, target.queue, session.env.get("agi_uniqueid", "?"))

    async def _run_flow(self, session: AgiSession, name: str, did: str, caller: str) -> None:
        """Run the flow's published version (read per call: publishing applies to the next call)."""
        assert self.flows is not None and self.executor is not None
        flow, version = await self.flows.published(name)
        await session.answer()
        outcome = await self.executor.run(session, flow, name, version, {"did": did, "caller": caller})
        if outcome.kind == "transfer":
            # Values from the validated flow; the dialplan checks them again before Dial().
            if outcome.transfer_extension:
                await session.set_variable("IVR_TRANSFER_EXT", outcome.transfer_extension)
            if outcome.transfer_number:
                await session.set_variable("IVR_TRANSFER_NUM", outcome.transfer_number)
            await session.set_variable("IVR_ACTION", "transfer")
            return
        if outcome.kind not in ("queue", "callback") or outcome.queue is None:
            await session.set_variable("IVR_ACTION", "hangup")
            return
        target = await self.flows.queue_target(outcome.queue, caller, outcome.priority)
        if target is None:
            log.warning("IVR flow %s v%d: queue %s no longer exists", name, version, outcome.queue)
            await session.set_variable("IVR_ACTION", "hangup")
            return
        if outcome.survey:
            await session.set_variable("IVR_SURVEY", outcome.survey)
        await self._queue(session, target, {"did": did, **outcome.call_data})
        if outcome.kind == "callback":  # the dialplan books it (and queues the caller if there is no number)
            await session.set_variable("IVR_ACTION", "callback")
        log.info("IVR: DID %s flow %s v%d -> queue %s", did, name, version, target.queue)

    async def _queue(self, session: AgiSession, target: QueueTarget, inputs: dict[str, str]) -> None:
        """Hand the call to [queue-entry] with its queue, limits and call data."""
        await session.set_variable("IVR_QUEUE", target.queue)
        await session.set_variable("IVR_PRIORITY", str(target.priority))
        await session.set_variable("IVR_MAX_WAIT", "" if target.max_wait_s is None else str(target.max_wait_s))
        await session.set_variable("IVR_OVERFLOW", target.overflow_queue or "")
        await session.set_variable("IVR_MAX_PENALTY", "" if target.max_penalty is None else str(target.max_penalty))
        # What the caller gave the IVR (DID, collected digits), for the agent's screen-pop. Every AMI event of the
        # channel carries it (manager.conf channelvars), so the executor never puts a secure collect's value here.
        await session.set_variable("IVR_INPUTS", urlencode(inputs))
        await session.set_variable("IVR_ACTION", "queue")
