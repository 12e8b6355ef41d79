"""The inbound IVR entry point, run by the FastAGI server for every call from the carrier.

For now it routes a DID to its queue (the flow engine arrives with the IVR issue). Everything it reads from
the channel is untrusted: the DID must be digits, and the values it hands back to the dialplan are names the
configuration already validated; the dialplan checks them again with REGEX before Queue().
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from service.config import DID_RE, RouteConfig
from telephony.fastagi import AgiError, AgiSession

log = logging.getLogger("ivr.inbound")

GREETING = "hello-world"  # a stock prompt; admins' prompts arrive with the IVR issue


class InboundIvr:
    def __init__(self, route_for: Callable[[str], RouteConfig | None], greeting: str | None = GREETING) -> None:
        self.route_for = route_for
        self.greeting = greeting

    async def __call__(self, session: AgiSession) -> None:
        did = session.params.get("did", "")
        if not DID_RE.match(did):
            log.warning("IVR: refused call with invalid DID %r", did[:40])
            await session.set_variable("IVR_ACTION", "hangup")
            return
        route = self.route_for(did)
        if route is None:
            log.info("IVR: no inbound route for DID %s", did)
            await session.set_variable("IVR_ACTION", "hangup")
            return
        await session.answer()
        if self.greeting:
            try:
                await session.stream_file(self.greeting)
            except AgiError as exc:  # result -1: the caller hung up during the prompt, or it is missing
                log.info("IVR: greeting not played (%s); the call goes on to the queue if still up", exc)
        await session.set_variable("IVR_QUEUE", route.queue)
        await session.set_variable("IVR_ACTION", "queue")
        log.info("IVR: DID %s -> queue %s (%s)", did, route.queue, session.env.get("agi_uniqueid", "?"))
