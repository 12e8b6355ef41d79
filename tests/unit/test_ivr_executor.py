"""The flow executor with a scripted AGI session (what the caller types) and a real local HTTP server:
time conditions with an injected clock, HTTP lookups (branch, failure, timeout while other calls go on)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ivr.executor import FlowExecutor, Step
from ivr.flow_model import Flow
from telephony.fastagi import AgiHangup

pytestmark = pytest.mark.asyncio


class ScriptedSession:
    """Stands in for AgiSession: answers GET DATA from a script, records what was played."""

    def __init__(self, typed: list[str]) -> None:
        self.typed = list(typed)
        self.played: list[str] = []
        self.env = {"agi_uniqueid": "u.1"}
        self.params = {"linkedid": "u.1"}

    async def get_data(self, prompt: str, timeout_ms: int = 5000, max_digits: int = 1) -> str:
        self.played.append(prompt)
        return self.typed.pop(0) if self.typed else ""

    async def stream_file(self, name: str, escape_digits: str = "") -> str:
        self.played.append(name)
        return ""


HOURS = {"type": "time_condition", "timezone": "Europe/Paris", "hours": {"mon": [["09:00", "17:00"]]},
         "holidays": ["2026-12-25"], "open": "q", "closed": "bye", "holiday": "xmas"}


def flow_with(first: dict[str, Any]) -> Flow:
    return Flow.model_validate({"start": "first", "nodes": {
        "first": first, "q": {"type": "queue", "queue": "sales"}, "bye": {"type": "hangup"},
        "xmas": {"type": "play", "prompt": "beep", "next": "bye"},
        "gold": {"type": "queue", "queue": "vip", "priority": 50}}})


@pytest.mark.parametrize(("now", "end"), [
    (datetime(2026, 11, 23, 9, 30, tzinfo=UTC), "q"),       # Monday 10:30 in Paris: open
    (datetime(2026, 11, 23, 16, 30, tzinfo=UTC), "bye"),    # Monday 17:30 in Paris: closed
    (datetime(2026, 12, 25, 10, 0, tzinfo=UTC), "xmas"),    # a holiday
])
async def test_time_condition_uses_the_injected_clock(now: datetime, end: str) -> None:
    recorded: list[Step] = []

    async def record(step: Step) -> None:
        recorded.append(step)

    ex = FlowExecutor(record, clock=lambda: now)
    out = await ex.run(ScriptedSession([]), flow_with(HOURS), "f", 3, {})  # type: ignore[arg-type]
    assert {"q": "queue", "bye": "hangup", "xmas": "hangup"}[end] == out.kind
    assert recorded[0].outcome == {"q": "open", "bye": "closed", "xmas": "holiday"}[end]
    assert recorded[0].version == 3 and recorded[0].uniqueid == "u.1" and recorded[0].linkedid == "u.1"


async def crm(delay: float = 0.0) -> TestServer:
    async def customer(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        tier = "gold" if request.query.get("account") == "1234" else "basic"
        return web.json_response({"customer": {"tier": tier}})

    app = web.Application()
    app.router.add_get("/customer", customer)
    server = TestServer(app)
    await server.start_server()
    return server


def lookup(url: str, timeout_ms: int = 1500) -> Flow:
    return Flow.model_validate({"start": "acct", "nodes": {
        "acct": {"type": "collect", "prompt": "beep", "var": "account", "max_digits": 6, "pattern": "[0-9]{4,6}",
                 "retries": 0, "next": "look", "invalid": "bye"},
        "look": {"type": "http_lookup", "url": url, "params": {"account": "${account}"}, "timeout_ms": timeout_ms,
                 "field": "customer.tier", "branches": {"gold": "gold"}, "default": "q", "failure": "bye"},
        "q": {"type": "queue", "queue": "sales"}, "bye": {"type": "hangup"},
        "gold": {"type": "queue", "queue": "vip", "priority": 50}}})


async def test_http_lookup_branches_on_the_answer() -> None:
    server = await crm()
    try:
        url = str(server.make_url("/customer"))
        assert (await FlowExecutor().run(ScriptedSession(["1234"]), lookup(url), "f", 1, {})).queue == "vip"  # type: ignore[arg-type]
        assert (await FlowExecutor().run(ScriptedSession(["5555"]), lookup(url), "f", 1, {})).queue == "sales"  # type: ignore[arg-type]
        # Letters never reach the URL: the collect refuses them and the call takes the invalid branch.
        out = await FlowExecutor().run(ScriptedSession(["12a4"]), lookup(url), "f", 1, {})  # type: ignore[arg-type]
        assert out.kind == "hangup"
    finally:
        await server.close()


async def test_slow_lookup_takes_the_failure_branch_in_time_while_other_calls_proceed() -> None:
    server = await crm(delay=5.0)
    try:
        url = str(server.make_url("/customer"))
        start = time.monotonic()
        slow = asyncio.create_task(FlowExecutor().run(ScriptedSession(["1234"]), lookup(url, 300), "f", 1, {}))  # type: ignore[arg-type]
        other = await FlowExecutor(clock=lambda: datetime(2026, 11, 23, 9, 30, tzinfo=UTC)).run(
            ScriptedSession([]), flow_with(HOURS), "g", 1, {})  # type: ignore[arg-type]
        assert other.kind == "queue" and time.monotonic() - start < 0.25  # not held up by the slow lookup
        out = await slow
        assert out.kind == "hangup"  # the failure branch
        assert 0.3 <= time.monotonic() - start < 1.0
    finally:
        await server.close()


class HangingUpSession(ScriptedSession):
    async def get_data(self, prompt: str, timeout_ms: int = 5000, max_digits: int = 1) -> str:
        raise AgiHangup("the caller hung up")


async def test_a_caller_hanging_up_mid_flow_is_recorded_at_the_node() -> None:
    recorded: list[Step] = []

    async def record(step: Step) -> None:
        recorded.append(step)

    menu = {"type": "menu", "prompt": "beep", "options": {"1": "q"}, "timeout": "bye", "invalid": "bye"}
    with pytest.raises(AgiHangup):
        await FlowExecutor(record).run(HangingUpSession([]), flow_with(menu), "f", 2, {})  # type: ignore[arg-type]
    assert [(s.node_id, s.node_type, s.outcome) for s in recorded] == [("first", "menu", "caller_hangup")]


# --- secure collect (card numbers, PCI) -----------------------------------------------------------------

CARD = "4111111111111111"


def card_flow(**collect: Any) -> Flow:
    """A secure card collect, a copy of the card in another variable, and a queue asking for both + a ref."""
    return Flow.model_validate({"start": "ref", "nodes": {
        "ref": {"type": "collect", "prompt": "beep", "var": "ref", "max_digits": 4, "retries": 0,
                "next": "card", "invalid": "bye"},
        "card": {"type": "collect", "prompt": "beep", "var": "card", "min_digits": 12, "max_digits": 19,
                 "retries": 1, "secure": True, "next": "copy", "invalid": "bye", **collect},
        "copy": {"type": "set_variable", "var": "card_copy", "value": "${card}", "next": "q"},
        "q": {"type": "queue", "queue": "sales", "vars": ["ref", "card", "card_copy"]},
        "bye": {"type": "hangup"}}})


class Log:
    """Steps and PCI hook calls in the order they happened."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list[tuple[str, Any]] = []
        self.fail = fail

    async def record(self, step: Step) -> None:
        self.events.append(("step", (step.node_id, step.input, step.outcome)))

    async def pci(self, uniqueid: str, active: bool) -> None:
        self.events.append(("pci", (uniqueid, active)))
        if self.fail:
            raise RuntimeError("recording service down")

    @property
    def pci_calls(self) -> list[Any]:
        return [e for kind, e in self.events if kind == "pci"]


async def test_secure_collect_records_a_mask_and_keeps_the_card_out_of_the_call_data() -> None:
    log = Log()
    out = await FlowExecutor(log.record, pci=log.pci).run(
        ScriptedSession(["42", CARD + "#"]), card_flow(), "f", 1, {"did": "100"})  # type: ignore[arg-type]
    assert out.kind == "queue"
    assert out.call_data == {"ref": "42"}  # neither the card nor its copy reaches IVR_INPUTS
    assert ("step", ("card", "************1111", "collected")) in log.events
    assert ("step", ("ref", "42", "collected")) in log.events  # a plain collect records the digits as before
    assert not any(CARD in repr(e) for e in log.events)


async def test_secure_collect_masks_invalid_attempts_and_short_inputs() -> None:
    log = Log()
    out = await FlowExecutor(log.record, pci=log.pci).run(
        ScriptedSession(["42", "12345", "411111111111111a"]), card_flow(), "f", 1, {})  # type: ignore[arg-type]
    assert out.kind == "hangup"  # both attempts invalid
    assert [e for k, e in log.events if k == "step" and e[0] == "card"] == [
        ("card", "*****", "invalid"), ("card", "<rejected>", "invalid")]
    assert log.pci_calls == [("u.1", True), ("u.1", False)]  # once around the whole collect, retries included


async def test_pci_hook_is_called_true_before_the_prompt_and_false_after() -> None:
    log = Log()
    session = ScriptedSession(["42", CARD])
    played_when_paused: list[int] = []

    async def pci(uniqueid: str, active: bool) -> None:
        played_when_paused.append(len(session.played))
        await log.pci(uniqueid, active)

    await FlowExecutor(log.record, pci=pci).run(session, card_flow(), "f", 1, {})  # type: ignore[arg-type]
    assert [e for _, e in log.events] == [
        ("ref", "42", "collected"), ("u.1", True), ("card", "************1111", "collected"), ("u.1", False),
        ("copy", None, "set"), ("q", None, "queued")]
    assert played_when_paused == [1, 2]  # paused after the first prompt, before the card prompt


async def test_pci_hook_is_not_called_for_a_plain_collect() -> None:
    log = Log()
    out = await FlowExecutor(log.record, pci=log.pci).run(
        ScriptedSession(["42", CARD]), card_flow(secure=False), "f", 1, {})  # type: ignore[arg-type]
    assert log.pci_calls == []
    assert out.call_data == {"ref": "42", "card": CARD, "card_copy": CARD}  # exactly as before
    assert ("step", ("card", CARD, "collected")) in log.events


class HangsUpAtCardSession(ScriptedSession):
    async def get_data(self, prompt: str, timeout_ms: int = 5000, max_digits: int = 1) -> str:
        if max_digits == 19:
            raise AgiHangup("the caller hung up")
        return await super().get_data(prompt, timeout_ms, max_digits)


async def test_pci_hook_is_released_when_the_caller_hangs_up_mid_collect() -> None:
    log = Log()
    with pytest.raises(AgiHangup):
        await FlowExecutor(log.record, pci=log.pci).run(
            HangsUpAtCardSession(["42"]), card_flow(), "f", 1, {})  # type: ignore[arg-type]
    assert log.pci_calls == [("u.1", True), ("u.1", False)]
    assert log.events[-1] == ("step", ("card", None, "caller_hangup"))


async def test_a_failing_pci_hook_does_not_break_the_call(caplog: pytest.LogCaptureFixture) -> None:
    log = Log(fail=True)
    out = await FlowExecutor(log.record, pci=log.pci).run(
        ScriptedSession(["42", CARD]), card_flow(), "f", 1, {})  # type: ignore[arg-type]
    assert out.kind == "queue" and out.call_data == {"ref": "42"}
    assert log.pci_calls == [("u.1", True), ("u.1", False)]
    assert "PCI hook" in caplog.text


async def test_a_slow_pci_hook_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ivr.executor.PCI_HOOK_TIMEOUT_S", 0.05)

    async def stuck(uniqueid: str, active: bool) -> None:
        await asyncio.sleep(10)

    start = time.monotonic()
    out = await FlowExecutor(pci=stuck).run(ScriptedSession(["42", CARD]), card_flow(), "f", 1, {})  # type: ignore[arg-type]
    assert out.kind == "queue" and time.monotonic() - start < 1.0


async def test_secure_value_still_drives_an_http_lookup() -> None:
    server = await crm()
    try:
        url = str(server.make_url("/customer"))
        doc = lookup(url).model_dump()
        doc["nodes"]["acct"]["secure"] = True
        flow = Flow.model_validate(doc)
        log = Log()
        out = await FlowExecutor(log.record).run(ScriptedSession(["1234"]), flow, "f", 1, {})  # type: ignore[arg-type]
        assert out.queue == "vip"  # the real digits reached the lookup, in memory only
        assert ("step", ("acct", "****", "collected")) in log.events
    finally:
        await server.close()
