"""A secure collect end to end through the inbound entry point: what the dialplan gets in IVR_INPUTS (and so
AMI events, the screen-pop and the event store) must never hold the card number, while plain inputs still do."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from ivr.executor import FlowExecutor, Step
from ivr.flow_model import Flow
from ivr.inbound import InboundIvr, QueueTarget

pytestmark = pytest.mark.asyncio

CARD = "5500005555555559"


class Session:
    """Stands in for AgiSession: scripted digits, channel variables kept."""

    def __init__(self, typed: list[str]) -> None:
        self.typed = list(typed)
        self.script = "inbound"
        self.params = {"did": "5551000", "linkedid": "u.7"}
        self.env = {"agi_uniqueid": "u.7", "agi_callerid": "+15550001"}
        self.variables: dict[str, str] = {}

    async def answer(self) -> None:
        return None

    async def get_data(self, prompt: str, timeout_ms: int = 5000, max_digits: int = 1) -> str:
        return self.typed.pop(0) if self.typed else ""

    async def stream_file(self, name: str, escape_digits: str = "") -> str:
        return ""

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value


class Backend:
    """The service's FlowBackend: one flow, one queue."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    async def flow_for(self, did: str) -> str | None:
        return "pay"

    async def published(self, name: str) -> tuple[Flow, int]:
        return self.flow, 1

    async def queue_target(self, queue: str, caller: str, priority: int) -> QueueTarget | None:
        return QueueTarget(queue, priority)

    async def flow_version(self, name: str, version: int) -> Flow:
        return self.flow

    async def store_survey(self, linkedid: str, uniqueid: str, flow: str, version: int, score: int) -> None:
        return None


def pay_flow(secure: bool) -> Flow:
    return Flow.model_validate({"start": "order", "nodes": {
        "order": {"type": "collect", "prompt": "beep", "var": "order", "max_digits": 6, "next": "card",
                  "invalid": "bye"},
        "card": {"type": "collect", "prompt": "beep", "var": "card", "min_digits": 12, "max_digits": 19,
                 "secure": secure, "next": "q", "invalid": "bye"},
        "q": {"type": "queue", "queue": "billing", "vars": ["order", "card"]},
        "bye": {"type": "hangup"}}})


async def run(secure: bool) -> tuple[Session, list[Step], list[tuple[str, bool]]]:
    steps: list[Step] = []
    pci: list[tuple[str, bool]] = []

    async def record(step: Step) -> None:
        steps.append(step)

    async def hook(uniqueid: str, active: bool) -> None:
        pci.append((uniqueid, active))

    async def no_route(did: str, caller: str) -> QueueTarget | None:
        return None

    session = Session(["777", CARD + "#"])
    ivr = InboundIvr(no_route, flows=Backend(pay_flow(secure)), executor=FlowExecutor(record, pci=hook))
    await ivr(session)  # type: ignore[arg-type]
    return session, steps, pci


async def test_secure_card_never_reaches_ivr_inputs_or_the_step_records() -> None:
    session, steps, pci = await run(secure=True)
    assert session.variables["IVR_ACTION"] == "queue"
    assert parse_qs(session.variables["IVR_INPUTS"]) == {"did": ["5551000"], "order": ["777"]}
    assert not any(CARD in v for v in session.variables.values())
    assert not any(CARD in repr(s) for s in steps)
    assert [s.input for s in steps if s.node_id == "card"] == ["************5559"]
    assert pci == [("u.7", True), ("u.7", False)]


async def test_plain_collect_still_passes_its_digits_to_the_agent() -> None:
    session, steps, pci = await run(secure=False)
    assert parse_qs(session.variables["IVR_INPUTS"]) == {"did": ["5551000"], "order": ["777"], "card": [CARD]}
    assert [s.input for s in steps if s.node_id == "card"] == [CARD + "#"]
    assert pci == []
