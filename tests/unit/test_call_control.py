"""Call control (acd/call_control.py) without a PBX: the AgentBook is fed real typed AMI events, and an AMI
stand-in plays the dialplan's part ([agent-hold]: DTMF A received with a HOLD_ID set -> Hold; HOLD_RELEASE set to
that id -> Unhold), feeding its events back in the consumer's order (book first). Pins the actions each command
sends, on which channels, and that every refusal sends nothing. Then the REST routes: status codes and bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from acd.agent_service import AgentService
from acd.agent_state import AgentBook, IllegalCommand, State
from acd.call_control import CallControl, CallControlFailed, InvalidTarget
from acd.membership import PbxUnavailable
from reporting.live import LiveState
from telephony.ami import AmiActionError, AmiEvent, AmiNotConnected, AmiTimeout
from telephony.ami.events import parse_event
from web.app import create_app

pytestmark = pytest.mark.asyncio

T0 = 1_732_370_000.0
AGENT_CH, AGENT_UID = "PJSIP/desk1-00000011", f"{T0:.0f}.11"
CALLER_CH, CALLER_UID = "PJSIP/carrier-00000001", f"{T0:.0f}.1"


def ev(name: str, at: float, **fields: str) -> AmiEvent:
    return parse_event({"Event": name, "Timestamp": f"{at:.6f}", **fields}, at)


class FakePbx:
    """Records actions; answers like Asterisk with the project's dialplan. `down`/`refuse`/`deaf` make it fail."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, dict[str, Any]]] = []
        self.vars: dict[tuple[str, str], str] = {}
        self.sinks: list[Any] = []
        self.down: Exception | None = None
        self.refuse: set[str] = set()
        self.deaf = False  # accepts the DTMF but no hold follows (feature missing on the channel)
        self.at = T0 + 10

    async def action(self, name: str, fields: Mapping[str, Any] | None = None, *, as_list: bool,
                     timeout: float | None = None) -> Any:
        f = dict(fields or {})
        if self.down is not None:
            raise self.down
        self.actions.append((name, f))
        if name in self.refuse:
            raise AmiActionError(name, {"Response": "Error", "Message": "Channel not found"})
        ch = f.get("Channel", "")
        if name == "Setvar":
            self.vars[(ch, f["Variable"])] = f["Value"]
            if f["Variable"] == "HOLD_RELEASE" and f["Value"] == self.vars.get((ch, "HOLD_ID")):
                self._later("Unhold", ch)
        elif name == "PlayDTMF" and f == {"Channel": ch, "Digit": "A", "Receive": "yes"} and not self.deaf:
            self._later("Hold", ch, MusicClass="default")
        return {"Response": "Success"}

    def _later(self, name: str, channel: str, **extra: str) -> None:
        self.at += 1
        uid = AGENT_UID if channel == AGENT_CH else "x"
        e = ev(name, self.at, Channel=channel, Uniqueid=uid, Linkedid=CALLER_UID, **extra)
        asyncio.get_running_loop().call_soon(self.emit, e)

    def emit(self, e: AmiEvent) -> None:
        for sink in self.sinks:
            sink(e)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for n, f in self.actions if n == name]


class Rig:
    def __init__(self) -> None:
        self.book = AgentBook({"support": 0})
        self.book.register("ann", "PJSIP/desk1", "ann")
        self.book.login("ann", T0 - 100)
        self.pbx = FakePbx()
        self.phones = {"4711"}

        async def is_phone(name: str) -> bool:
            return name in self.phones
        self.calls = CallControl(self.pbx, self.book, is_phone=is_phone, event_wait_s=0.2)
        self.pbx.sinks = [self.book.on_event, self.calls.on_event]  # the consumer's order

    def connect(self) -> None:
        member = {"Queue": "support", "MemberName": "ann", "Interface": "PJSIP/desk1", "Channel": CALLER_CH,
                  "Uniqueid": CALLER_UID, "Linkedid": CALLER_UID, "DestChannel": AGENT_CH, "DestUniqueid": AGENT_UID}
        self.pbx.emit(ev("AgentCalled", T0, **member))
        self.pbx.emit(ev("AgentConnect", T0 + 1, **member, HoldTime="1", RingTime="1"))
        assert self.book.state("ann").state == State.ON_CALL

    def state(self) -> State:
        return self.book.state("ann").state


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_hold_and_unhold_act_on_the_agents_channel_and_return_in_the_new_state(rig: Rig) -> None:
    rig.connect()
    await rig.calls.hold("ann")
    assert rig.state() == State.ON_HOLD and rig.calls.held_by_service("ann")
    setvar, dtmf = rig.pbx.actions
    assert setvar[0] == "Setvar" and setvar[1]["Channel"] == AGENT_CH and setvar[1]["Variable"] == "HOLD_ID"
    hold_id = setvar[1]["Value"]
    assert hold_id.isdigit() and 1 <= len(hold_id) <= 12  # [agent-hold] accepts ^[0-9]{1,12}$ only
    assert dtmf == ("PlayDTMF", {"Channel": AGENT_CH, "Digit": "A", "Receive": "yes"})
    await rig.calls.unhold("ann")
    assert rig.state() == State.ON_CALL and not rig.calls.held_by_service("ann")
    assert rig.pbx.actions[-1] == ("Setvar", {"Channel": AGENT_CH, "Variable": "HOLD_RELEASE", "Value": hold_id})
    # A second hold gets a new id: a stale HOLD_RELEASE cannot end it at once.
    await rig.calls.hold("ann")
    assert rig.pbx.named("Setvar")[-1]["Value"] != hold_id


async def test_refusals_name_the_state_and_send_nothing(rig: Rig) -> None:
    for command in (rig.calls.hold, rig.calls.unhold):
        with pytest.raises(IllegalCommand) as exc:
            await command("ann")
        assert exc.value.current == State.AVAILABLE and "no call" in exc.value.message
    with pytest.raises(IllegalCommand) as exc:
        await rig.calls.transfer("ann", "4711")
    assert exc.value.current == State.AVAILABLE
    rig.connect()
    with pytest.raises(IllegalCommand) as exc:
        await rig.calls.unhold("ann")
    assert exc.value.current == State.ON_CALL and "not on hold" in exc.value.message
    assert rig.pbx.actions == []
    await rig.calls.hold("ann")
    sent = len(rig.pbx.actions)
    with pytest.raises(IllegalCommand) as exc:
        await rig.calls.hold("ann")
    assert exc.value.current == State.ON_HOLD and "already" in exc.value.message
    assert len(rig.pbx.actions) == sent


async def test_a_hold_made_on_the_phone_is_not_ended_over_the_api(rig: Rig) -> None:
    rig.connect()
    rig.pbx.emit(ev("Hold", T0 + 5, Channel=AGENT_CH, Uniqueid=AGENT_UID, Linkedid=CALLER_UID))  # phone's key
    assert rig.state() == State.ON_HOLD
    with pytest.raises(IllegalCommand) as exc:
        await rig.calls.unhold("ann")
    assert "from the phone" in exc.value.message and rig.pbx.actions == []


async def test_pbx_down_is_unavailable_and_a_refusal_or_a_missing_hold_is_a_failure(rig: Rig) -> None:
    rig.connect()
    for down in (AmiNotConnected("Setvar: not connected"), AmiTimeout("Setvar")):
        rig.pbx.down = down
        with pytest.raises(PbxUnavailable):
            await rig.calls.hold("ann")
    rig.pbx.down = None
    assert rig.state() == State.ON_CALL and not rig.calls.held_by_service("ann")
    rig.pbx.refuse = {"PlayDTMF"}  # e.g. the channel hung up meanwhile
    with pytest.raises(CallControlFailed, match="refused"):
        await rig.calls.hold("ann")
    rig.pbx.refuse = set()
    rig.pbx.actions.clear()
    rig.pbx.deaf = True  # no Hold within the wait: reported, and released so a late hold ends at once
    with pytest.raises(CallControlFailed, match="did not put the call on hold"):
        await rig.calls.hold("ann")
    hold_id = rig.pbx.named("Setvar")[0]["Value"]
    assert rig.pbx.actions[-1] == ("Setvar", {"Channel": AGENT_CH, "Variable": "HOLD_RELEASE", "Value": hold_id})
    assert rig.state() == State.ON_CALL and not rig.calls.held_by_service("ann")
    assert rig.calls._waiters == {}


async def test_the_hold_ends_with_the_call(rig: Rig) -> None:
    rig.connect()
    await rig.calls.hold("ann")
    rig.pbx.emit(ev("Hangup", T0 + 20, Channel=CALLER_CH, Uniqueid=CALLER_UID, Linkedid=CALLER_UID))
    assert not rig.calls.held_by_service("ann")


async def test_transfer_checks_the_target_and_picks_the_context(rig: Rig) -> None:
    rig.connect()
    for bad in ("", "1", "1" * 21, "12a", "PJSIP/desk2", "100&PJSIP/x", "100\n", " 100", "+4940", "١٢٣"):
        with pytest.raises(InvalidTarget):
            await rig.calls.transfer("ann", bad)
    assert rig.pbx.actions == []
    t = await rig.calls.transfer("ann", "4711")
    assert (t.kind, t.to, t.linkedid) == ("extension", "4711", CALLER_UID)
    assert rig.pbx.actions == [("BlindTransfer", {"Channel": AGENT_CH, "Context": "agent-transfer",
                                                  "Exten": "4711"})]
    t = await rig.calls.transfer("ann", "4940123456")
    assert t.kind == "number"
    assert rig.pbx.actions[-1] == ("BlindTransfer", {"Channel": AGENT_CH, "Context": "agent-transfer-out",
                                                     "Exten": "4940123456"})
    rig.pbx.refuse = {"BlindTransfer"}
    with pytest.raises(CallControlFailed):
        await rig.calls.transfer("ann", "4711")


# ------------------------------------------------------------------ the REST routes
TOKEN = "t" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest_asyncio.fixture
async def api() -> AsyncIterator[tuple[TestClient, FakePbx, AgentService]]:
    pbx = FakePbx()
    svc = AgentService(pbx, None, "n1", None)  # type: ignore[arg-type]  # no effects worker, no database
    svc.phones, svc.teams = {"ann": "desk1"}, {"ann": None}
    svc.book.register("ann", "PJSIP/desk1", "ann")
    svc.book.login("ann", T0 - 100)

    async def is_phone(name: str) -> bool:
        return name == "4711"
    svc.calls.is_phone = is_phone
    svc.calls.event_wait_s = 0.2
    pbx.sinks = [svc.on_event]
    app = create_app(admin_token=TOKEN, health=_healthy, membership=None,  # type: ignore[arg-type]
                     live_state=LiveState(), pool=None, agents=svc)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as c:
        yield c, pbx, svc


async def _healthy() -> dict[str, Any]:
    return {"checks": {}}


def _connect(pbx: FakePbx) -> None:
    member = {"Queue": "support", "MemberName": "ann", "Interface": "PJSIP/desk1", "Channel": CALLER_CH,
              "Uniqueid": CALLER_UID, "Linkedid": CALLER_UID, "DestChannel": AGENT_CH, "DestUniqueid": AGENT_UID}
    pbx.emit(ev("AgentCalled", T0, **member))
    pbx.emit(ev("AgentConnect", T0 + 1, **member, HoldTime="1", RingTime="1"))


async def test_routes_answer_with_the_state_and_map_every_error(api: Any) -> None:
    c, pbx, _ = api
    resp = await c.post("/api/v1/agents/ann/hold", headers=AUTH)
    body = await resp.json()
    assert (resp.status, body["error"], body["current_state"]) == (409, "illegal_state", "available")
    assert (await c.post("/api/v1/agents/nobody/hold", headers=AUTH)).status == 404
    _connect(pbx)
    resp = await c.post("/api/v1/agents/ann/hold", headers=AUTH)
    body = await resp.json()
    assert resp.status == 200 and body["state"] == "on_hold" and body["linkedid"] == CALLER_UID, body
    resp = await c.post("/api/v1/agents/ann/unhold", headers=AUTH)
    assert resp.status == 200 and (await resp.json())["state"] == "on_call"
    pbx.down = AmiNotConnected("not connected")
    resp = await c.post("/api/v1/agents/ann/hold", headers=AUTH)
    assert resp.status == 503 and (await resp.json())["error"] == "pbx_unavailable"
    pbx.down, pbx.deaf = None, True
    resp = await c.post("/api/v1/agents/ann/hold", headers=AUTH)
    assert resp.status == 502 and (await resp.json())["error"] == "pbx_failed"


async def test_transfer_route_validates_the_body_strictly(api: Any) -> None:
    c, pbx, _ = api
    _connect(pbx)
    for body in ({}, {"to": 4711}, {"to": "47 11"}, {"to": "4711\n"}, {"to": "1"}, {"to": "4711", "x": 1},
                 {"to": "PJSIP/desk2"}, {"to": "4711&PJSIP/desk2"}, {"to": "1" * 21}):
        resp = await c.post("/api/v1/agents/ann/transfer", headers=AUTH, json=body)
        assert resp.status == 422, (body, await resp.text())
    assert (await c.post("/api/v1/agents/ann/transfer", headers=AUTH, data=b"not json")).status == 400
    assert pbx.actions == []
    resp = await c.post("/api/v1/agents/ann/transfer", headers=AUTH, json={"to": "4711"})
    assert resp.status == 200
    assert await resp.json() == {"agent": "ann", "to": "4711", "kind": "extension", "linkedid": CALLER_UID}
    assert pbx.actions == [("BlindTransfer", {"Channel": AGENT_CH, "Context": "agent-transfer", "Exten": "4711"})]
