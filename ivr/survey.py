"""The post-call survey: after the agent hangs up, the caller rates the call 1-5 and the score is stored.

A flow's `survey` node arms it (the IVR passes `IVR_SURVEY=<flow>/<version>/<node>` to the dialplan, which keeps
the caller when the agent hangs up and calls the `survey` FastAGI script with that reference). The reference is
checked again here and must name a survey node of a stored version: nothing else is ever played or stored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from ivr.flow_model import Flow, SurveyNode
from telephony.fastagi import AgiSession

log = logging.getLogger("ivr.survey")

REF = re.compile(r"^(?P<flow>[a-z0-9][a-z0-9_-]{0,63})/(?P<version>[0-9]{1,6})/(?P<node>[a-z0-9][a-z0-9_-]{0,63})$")
SCORES = frozenset("12345")
CALL_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def call_ids(session: AgiSession) -> tuple[str, str | None]:
    """The channel's uniqueid (AGI environment) and the call's linkedid (passed by the dialplan; checked)."""
    linkedid = session.params.get("linkedid", "")
    return session.env.get("agi_uniqueid", "?"), linkedid if CALL_ID.match(linkedid) else None

LoadVersion = Callable[[str, int], Awaitable[Flow]]
StoreScore = Callable[[str, str, str, int, int], Awaitable[None]]  # linkedid, uniqueid, flow, version, score


def survey_ref(flow: str, version: int, node: str) -> str:
    return f"{flow}/{version}/{node}"


async def run_survey(session: AgiSession, load: LoadVersion, store: StoreScore, *,
                     timeout_ms: int = 6000, attempts: int = 2) -> int | None:
    """Ask for the rating; returns the stored score, or None (no valid answer, bad reference)."""
    m = REF.match(session.params.get("ref", ""))
    if m is None:
        log.warning("survey: refused reference %r", session.params.get("ref", "")[:80])
        return None
    flow = await load(m["flow"], int(m["version"]))
    node = flow.nodes.get(m["node"])
    if not isinstance(node, SurveyNode):
        log.warning("survey: %s is not a survey node", m.group(0))
        return None
    for _ in range(attempts):
        typed = await session.get_data(node.prompt, timeout_ms, 1)
        if typed in SCORES:
            score = int(typed)
            uniqueid, linkedid = call_ids(session)
            await store(linkedid or uniqueid, uniqueid, m["flow"], int(m["version"]), score)
            log.info("survey: call %s rated %d", linkedid or uniqueid, score)
            return score
    return None
