"""The inbound IVR entry point, run by the FastAGI server for every call from the carrier.

For now it routes a DID to its queue (the flow engine arrives with the IVR issue). Everything it reads from
the channel is untrusted: the DID must be digits, the caller number is filtered by the dialplan and checked
again here, and the values it hands back are names and numbers the API validated; the dialplan checks them a
second time (REGEX/FILTER) before Queue().
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

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


class InboundIvr:
    def __init__(self, target_for: TargetLookup, greeting: str | None = GREETING) -> None:
        self.target_for = target_for
        self.greeting = greeting

    async def __call__(self, session: AgiSession) -> None:
        did = session.params.get("did", "")
        if not DID_RE.match(did):
            log.warning("IVR: refused call with invalid DID %r", did[:40])
            await session.set_variable("IVR_ACTION", "hangup")
            return
        caller = session.env.get("agi_callerid", "")
        caller = caller if CALLER_RE.match(caller) else ""
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
        await session.set_variable("IVR_QUEUE", target.queue)
        await session.set_variable("IVR_PRIORITY", str(target.priority))
        await session.set_variable("IVR_MAX_WAIT", "" if target.max_wait_s is None else str(target.max_wait_s))
        await session.set_variable("IVR_OVERFLOW", target.overflow_queue or "")
        await session.set_variable("IVR_MAX_PENALTY", "" if target.max_penalty is None else str(target.max_penalty))
        # What the caller gave the IVR, for the agent's screen-pop (the flow engine adds collected digits).
        await session.set_variable("IVR_INPUTS", urlencode({"did": did}))
        await session.set_variable("IVR_ACTION", "queue")
        log.info("IVR: DID %s -> queue %s (%s)", did, target.queue, session.env.get("agi_uniqueid", "?"))
