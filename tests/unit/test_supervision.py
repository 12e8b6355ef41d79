"""SupervisionService without a PBX or a database: the AgentBook is fed real typed AMI events (as the consumer
does), the AMI stand-in records every action, and the pool stand-in records every statement. Pins which actions
start, switch, take over and end a session, and that a refused request sends nothing to the PBX."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio

from acd.agent_state import AgentBook, CallChannels
from acd.supervision import CallPaused, NotOnCall, PbxFailed, PhoneBusy, SessionState, SupervisionService
from telephony.ami import AmiActionError
from telephony.ami.events import AmiEvent, parse_event

T0 = 1_732_370_000.0


class FakeAmi:
    """Originate answers with a fresh ActionID (the OriginateResponse event carries it); other actions succeed
    unless named in `refuse` (then for `refuse[name]` more times)."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, dict[str, Any]]] = []
        self.refuse: dict[str, int] = {}
        self.changed = asyncio.Event()
        self._n = 0

    def _record(self, name: str, fields: Mapping[str, Any] | None) -> None:
        self.actions.append((name, dict(fields or {})))
        self.changed.set()
        if self.refuse.get(name, 0) > 0:
            self.refuse[name] -= 1
            raise AmiActionError(name, {"Response": "Error", "Message": "refused"})

    async def originate(self, fields: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, str]:
        self._record("Originate", fields)
        self._n += 1
        return {"Response": "Success", "ActionID": f"orig-{self._n}", "Message": "Originate successfully queued"}

    async def action(self, name: str, fields: Mapping[str, Any] | None = None, *, as_list: bool,
                     timeout: float | None = None) -> Any:
        self._record(name, fields)
        return {"Response": "Success"}

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for n, f in self.actions if n == name]

    async def wait_sent(self, name: str, count: int = 1) -> None:
        """Until `count` actions of that name were sent (one in the middle of a longer command)."""
        async def sent() -> None:
            while len(self.named(name)) < count:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(sent(), 2)


class FakePool:
    """Records statements; `kinds` answers the API's phone-kind lookup."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []
        self.kinds: dict[str, str] = {}

    async def execute(self, sql: str, *args: Any) -> str:
        self.statements.append((" ".join(sql.split()), args))
        return "OK"

    async def fetchval(self, sql: str, *args: Any) -> Any:
        assert sql.startswith("SELECT kind FROM phones"), sql
        return self.kinds.get(args[0])

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return []

    def session_updates(self, session_id: uuid.UUID) -> list[tuple[Any, ...]]:
        return [a for s, a in self.statements if s.startswith("UPDATE supervision_sessions") and a[0] == session_id]


def ev(name: str, at: float, **fields: str) -> AmiEvent:
    return parse_event({"Event": name, "Timestamp": f"{at:.6f}", **fields}, at)


def caller_of(n: int) -> dict[str, str]:
    uid = f"{T0:.0f}.{n}"
    return {"Channel": f"PJSIP/carrier-0000000{n}", "Uniqueid": uid, "Linkedid": uid, "CallerIDNum": "5551234"}


def put_on_call(book: AgentBook, agent: str, phone: str, n: int, at: float = T0) -> AmiEvent:
    """AgentCalled + AgentConnect with Asterisk 22's headers: the agent talks to caller n."""
    member = {"Queue": "support", "MemberName": agent, "Interface": f"PJSIP/{phone}",
              "DestChannel": f"PJSIP/{phone}-0000001{n}", "DestUniqueid": f"{T0:.0f}.{n}{n}"}
    book.on_event(ev("AgentCalled", at, **caller_of(n), **member))
    connect = ev("AgentConnect", at + 1, **caller_of(n), **member, HoldTime="3", RingTime="1")
    book.on_event(connect)
    return connect


class Rig:
    def __init__(self) -> None:
        self.book = AgentBook({"support": 0})
        for agent, phone in (("ann", "agent1"), ("bob", "agent2"), ("cid", "agent3")):
            self.book.register(agent, f"PJSIP/{phone}", agent)
            self.book.login(agent, T0 - 100)
        self.ami = FakeAmi()
        self.pool = FakePool()
        self.up: set[str] = set()
        self.paused: set[str] = set()
        self.svc = SupervisionService(self.ami, self.pool, "n1", self.book,  # type: ignore[arg-type]
                                      is_paused=lambda lid: lid in self.paused, channel_up=lambda u: u in self.up,
                                      clock=lambda: T0 + 50)

    def call(self, agent: str, phone: str, n: int) -> CallChannels:
        put_on_call(self.book, agent, phone, n)
        call = self.book.call_channels(agent)
        assert call is not None
        self.up |= {call.caller_uniqueid, call.agent_uniqueid}
        return call

    async def settle(self) -> None:
        await asyncio.wait_for(asyncio.gather(*list(self.svc._tasks)), 2)

    async def answer(self, action_id: str, n: int, success: bool = True) -> None:
        fields = {"ActionID": action_id, "Response": "Success" if success else "Failure", "Reason": "4" if success
                  else "5", "Channel": f"PJSIP/sup{n}-000000a{n}", "Uniqueid": f"sup.{n}"}
        self.svc.on_event(ev("OriginateResponse", T0 + 55, **fields))
        await self.settle()


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.svc.stop()


# ------------------------------------------------------------------------------------------------ AgentBook


def test_call_channels_come_from_the_events() -> None:
    r = Rig()
    assert r.book.call_channels("ann") is None  # logged in, not on a call
    put_on_call(r.book, "ann", "agent1", 1)
    assert r.book.call_channels("ann") == CallChannels(
        linkedid=f"{T0:.0f}.1", queue="support", caller_uniqueid=f"{T0:.0f}.1",
        caller_channel="PJSIP/carrier-00000001", agent_uniqueid=f"{T0:.0f}.11", agent_channel="PJSIP/agent1-00000011")
    r.book.on_event(ev("AgentComplete", T0 + 30, **caller_of(1), Queue="support", MemberName="ann",
                       Interface="PJSIP/agent1", HoldTime="3", TalkTime="29", Reason="caller"))
    assert r.book.call_channels("ann") is None


def test_a_local_member_s_phone_channel_is_learned_from_bridgeenter() -> None:
    book = AgentBook({"support": 0})
    book.register("dee", "Local/104@agents", "dee")
    book.register("dee", "PJSIP/agent4")
    book.login("dee", T0)
    member = {"Queue": "support", "MemberName": "dee", "Interface": "Local/104@agents",
              "DestChannel": "Local/104@agents-00000001;1", "DestUniqueid": "l.1"}
    book.on_event(ev("AgentConnect", T0 + 1, **caller_of(1), **member, HoldTime="1", RingTime="1"))
    assert book.call_channels("dee") is None  # only the Local channel is known: nothing to spy on yet
    book.on_event(ev("BridgeEnter", T0 + 1, Channel="PJSIP/agent4-00000009", Uniqueid="p.9",
                     Linkedid=f"{T0:.0f}.1", BridgeUniqueid="b1"))
    call = book.call_channels("dee")
    assert call is not None and (call.agent_uniqueid, call.agent_channel) == ("p.9", "PJSIP/agent4-00000009")


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.asyncio
async def test_begin_refused_when_the_agent_is_not_on_a_call(rig: Rig) -> None:
    with pytest.raises(NotOnCall):
        await rig.svc.begin("sue", "ann", "listen", "sup1")
    put_on_call(rig.book, "ann", "agent1", 1)  # on a call, but the service saw its channels hang up
    with pytest.raises(NotOnCall):
        await rig.svc.begin("sue", "ann", "listen", "sup1")
    assert rig.ami.actions == [] and rig.svc.sessions == {} and rig.pool.statements == []


@pytest.mark.asyncio
async def test_begin_refused_during_a_pci_pause(rig: Rig) -> None:
    call = rig.call("ann", "agent1", 1)
    rig.paused.add(call.linkedid)
    for mode in ("listen", "takeover"):
        with pytest.raises(CallPaused):
            await rig.svc.begin("sue", "ann", mode, "sup1")
    assert rig.ami.actions == [] and rig.svc.sessions == {}


@pytest.mark.asyncio
async def test_begin_refused_when_the_phone_is_in_a_session(rig: Rig) -> None:
    rig.call("ann", "agent1", 1)
    rig.call("bob", "agent2", 2)
    await rig.svc.begin("sue", "ann", "listen", "sup1")
    with pytest.raises(PhoneBusy):
        await rig.svc.begin("sue", "bob", "listen", "sup1")
    assert len(rig.ami.named("Originate")) == 1 and len(rig.svc.sessions) == 1


# ------------------------------------------------------------------------------------------------ a session


@pytest.mark.asyncio
async def test_begin_rings_the_supervisor_s_phone_into_chanspy_on_the_agent_s_channel(rig: Rig) -> None:
    call = rig.call("ann", "agent1", 1)
    s = await rig.svc.begin("sue", "ann", "whisper", "sup1")
    (orig,) = rig.ami.named("Originate")
    assert (orig["Channel"], orig["Context"], orig["Exten"], orig["Priority"]) == (
        "PJSIP/sup1", "supervise", "whisper", "1")
    assert f"SPY_TARGET={call.agent_channel}" in orig["Variable"]
    assert call.agent_channel == "PJSIP/agent1-00000011"  # exactly the channel Asterisk named, nothing typed
    assert f"SPY_SESSION={s.id}" in orig["Variable"]
    assert s.status == "ringing" and s.action_id == "orig-1" and s.call.linkedid == call.linkedid
    assert rig.pool.statements[0][0].startswith("INSERT INTO supervision_sessions")


@pytest.mark.asyncio
async def test_answer_activates_and_failure_fails(rig: Rig) -> None:
    rig.call("ann", "agent1", 1)
    rig.call("bob", "agent2", 2)
    ok = await rig.svc.begin("sue", "ann", "listen", "sup1")
    bad = await rig.svc.begin("tom", "bob", "listen", "sup2")
    rig.svc.on_event(ev("OriginateResponse", T0 + 55, ActionID="someone-else", Response="Success",
                        Channel="PJSIP/x-1", Uniqueid="x.1"))
    await rig.answer("orig-1", 1)
    await rig.answer("orig-2", 2, success=False)
    assert (ok.status, ok.channel, ok.uniqueid, ok.started_at) == ("active", "PJSIP/sup1-000000a1", "sup.1", T0 + 55)
    assert bad.status == "failed" and "5" in (bad.end_reason or "")
    assert [s.id for s in rig.svc.live()] == [ok.id]
    assert any(s.startswith("INSERT INTO supervision_modes") and a[1] == "listen" for s, a in rig.pool.statements)
    assert rig.pool.session_updates(bad.id)[-1][1] == "failed"
    await rig.svc.begin("tom", "bob", "listen", "sup2")  # the failed session's phone is free again


@pytest.mark.asyncio
async def test_switch_redirects_to_the_new_mode(rig: Rig) -> None:
    rig.call("ann", "agent1", 1)
    s = await rig.svc.begin("sue", "ann", "listen", "sup1")
    with pytest.raises(SessionState):  # not answered yet
        await rig.svc.switch(s.id, "barge")
    await rig.answer("orig-1", 1)
    await rig.svc.switch(s.id, "barge")
    assert rig.ami.named("Redirect") == [{"Channel": "PJSIP/sup1-000000a1", "Context": "supervise", "Exten": "barge",
                                          "Priority": "1"}]
    assert s.mode == "barge"
    await rig.svc.switch(s.id, "barge")  # already in it: nothing sent
    assert len(rig.ami.named("Redirect")) == 1
    modes = [a[1] for st, a in rig.pool.statements if st.startswith("INSERT INTO supervision_modes")]
    assert modes == ["listen", "barge"]
    with pytest.raises(ValueError):
        await rig.svc.switch(s.id, "shout")


@pytest.mark.asyncio
async def test_switch_refused_during_a_pci_pause_and_after_the_call_ended(rig: Rig) -> None:
    call = rig.call("ann", "agent1", 1)
    s = await rig.svc.begin("sue", "ann", "listen", "sup1")
    await rig.answer("orig-1", 1)
    rig.paused.add(call.linkedid)
    with pytest.raises(CallPaused):
        await rig.svc.switch(s.id, "whisper")
    rig.paused.clear()
    rig.up.discard(call.agent_uniqueid)
    with pytest.raises(NotOnCall):
        await rig.svc.switch(s.id, "whisper")
    assert rig.ami.named("Redirect") == []


def caller_left_bridge(rig: Rig, call: CallChannels) -> None:
    rig.svc.on_event(ev("BridgeLeave", T0 + 60, Channel=call.caller_channel, Uniqueid=call.caller_uniqueid,
                        Linkedid=call.linkedid, BridgeUniqueid="queue-bridge"))


async def take_over(rig: Rig, session_id: uuid.UUID, call: CallChannels) -> None:
    """Switch to takeover the way the PBX answers it: the caller leaves the queue's bridge after the transfer."""
    transfers = len(rig.ami.named("BlindTransfer"))
    task = asyncio.create_task(rig.svc.switch(session_id, "takeover"))
    await rig.ami.wait_sent("BlindTransfer", transfers + 1)
    caller_left_bridge(rig, call)
    await asyncio.wait_for(task, 2)


@pytest.mark.asyncio
async def test_takeover_moves_the_agent_out_then_bridges_caller_and_supervisor(rig: Rig) -> None:
    call = rig.call("ann", "agent1", 1)
    s = await rig.svc.begin("sue", "ann", "listen", "sup1")
    await rig.answer("orig-1", 1)
    task = asyncio.create_task(rig.svc.switch(s.id, "takeover"))
    await rig.ami.wait_sent("BlindTransfer")
    await asyncio.sleep(0.05)
    assert rig.ami.named("Bridge") == []  # the caller is still in the queue's bridge: not yet
    caller_left_bridge(rig, call)
    await asyncio.wait_for(task, 2)
    # The supervisor's leg waits instead of hanging up when ChanSpy ends, the agent's leg is moved away, and
    # only once the caller left the queue's bridge are caller and supervisor bridged.
    assert [(n, f) for n, f in rig.ami.actions if n != "Originate"] == [
        ("Setvar", {"Channel": "PJSIP/sup1-000000a1", "Variable": "TAKEOVER", "Value": "1"}),
        ("BlindTransfer", {"Channel": call.agent_channel, "Context": "takeover-hold", "Exten": "s"}),
        ("Bridge", {"Channel1": call.caller_channel, "Channel2": "PJSIP/sup1-000000a1", "Tone": "no"})]
    assert s.mode == "takeover" and s.status == "active"
    modes = [a[1] for st, a in rig.pool.statements if st.startswith("INSERT INTO supervision_modes")]
    assert modes == ["listen", "takeover"]
    with pytest.raises(SessionState):
        await rig.svc.switch(s.id, "listen")


@pytest.mark.asyncio
async def test_takeover_tries_a_refused_bridge_again(rig: Rig) -> None:
    call = rig.call("ann", "agent1", 1)
    s = await rig.svc.begin("sue", "ann", "listen", "sup1")
    await rig.answer("orig-1", 1)
    rig.ami.refuse["Bridge"] = 1  # "Unable to add Channel1": the caller was still on its way out
    task = asyncio.create_task(rig.svc.switch(s.id, "takeover"))
    await rig.ami.wait_sent("BlindTransfer")
    caller_left_bridge(rig, call)
    await asyncio.wait_for(task, 2)
    assert len(rig.ami.named("Bridge")) == 2 and s.mode == "takeover"


@pytest.mark.asyncio
async def test_a_takeover_the_pbx_refuses_keeps_the_mode(rig: Rig) -> None:
    rig.call("ann", "agent1", 1)
    s = await rig.svc.begin("sue", "ann", "barge", "sup1")
    await rig.answer("orig-1", 1)
    rig.ami.refuse["BlindTransfer"] = 1
    with pytest.raises(PbxFailed):
        await rig.svc.switch(s.id, "takeover")
    assert s.mode == "barge" and s.status == "active" and rig.ami.named("Bridge") == []


@pytest.mark.asyncio
async def test_a_session_answered_in_takeover_mode_takes_over_at_once(rig: Rig) -> None:
    call = rig.call("ann", "agent1", 1)
    s = await rig.svc.begin("sue", "ann", "takeover", "sup1")
    rig.svc.on_event(ev("OriginateResponse", T0 + 55, ActionID="orig-1", Response="Success", Reason="4",
                        Channel="PJSIP/sup1-000000a1", Uniqueid="sup.1"))
    await rig.ami.wait_sent("BlindTransfer")
    caller_left_bridge(rig, call)
    await rig.settle()
    assert rig.ami.named("Bridge") == [{"Channel1": call.caller_channel, "Channel2": "PJSIP/sup1-000000a1",
                                        "Tone": "no"}]
    assert (s.status, s.mode) == ("active", "takeover")


@pytest.mark.asyncio
async def test_after_a_takeover_either_side_hanging_up_ends_the_other(rig: Rig) -> None:
    first = rig.call("ann", "agent1", 1)
    second = rig.call("bob", "agent2", 2)
    taken: list[Any] = []
    for agent, n, call in (("ann", 1, first), ("bob", 2, second)):
        s = await rig.svc.begin("sue", agent, "listen", f"sup{n}")
        await rig.answer(f"orig-{n}", n)
        await take_over(rig, s.id, call)
        taken.append(s)
    rig.ami.actions.clear()
    rig.svc.on_event(ev("Hangup", T0 + 90, Channel=first.caller_channel, Uniqueid=first.caller_uniqueid))
    await rig.settle()
    assert rig.ami.actions == [("Hangup", {"Channel": "PJSIP/sup1-000000a1"})]  # the caller left
    rig.ami.actions.clear()
    rig.svc.on_event(ev("Hangup", T0 + 91, Channel="PJSIP/sup2-000000a2", Uniqueid="sup.2"))
    await rig.settle()
    assert rig.ami.actions == [("Hangup", {"Channel": second.caller_channel})]  # the supervisor left
    assert (taken[1].status, taken[1].end_reason) == ("ended", "hangup")


@pytest.mark.asyncio
async def test_hangup_of_the_supervisor_s_channel_ends_the_session(rig: Rig) -> None:
    call = rig.call("ann", "agent1", 1)
    s = await rig.svc.begin("sue", "ann", "listen", "sup1")
    await rig.answer("orig-1", 1)
    rig.svc.on_event(ev("Hangup", T0 + 70, Channel="PJSIP/agent1-00000011", Uniqueid=call.agent_uniqueid))
    await rig.settle()
    assert s.status == "active"  # someone else's channel
    rig.svc.on_event(ev("Hangup", T0 + 80, Channel="PJSIP/sup1-000000a1", Uniqueid="sup.1", Cause="16"))
    await rig.settle()
    assert (s.status, s.end_reason, s.ended_at) == ("ended", "hangup", T0 + 80)
    assert rig.svc.live() == []
    assert rig.pool.session_updates(s.id)[-1][1:] == ("ended", rig.pool.session_updates(s.id)[-1][2], "hangup")


@pytest.mark.asyncio
async def test_end_hangs_up_an_answered_session_and_closes_a_ringing_one(rig: Rig) -> None:
    rig.call("ann", "agent1", 1)
    rig.call("bob", "agent2", 2)
    answered = await rig.svc.begin("sue", "ann", "listen", "sup1")
    ringing = await rig.svc.begin("tom", "bob", "listen", "sup2")
    await rig.answer("orig-1", 1)
    await rig.svc.end(answered.id)
    assert rig.ami.named("Hangup") == [{"Channel": "PJSIP/sup1-000000a1"}]
    rig.svc.on_event(ev("Hangup", T0 + 80, Channel="PJSIP/sup1-000000a1", Uniqueid="sup.1"))
    await rig.settle()
    assert (answered.status, answered.end_reason) == ("ended", "ended_by_api")
    await rig.svc.end(ringing.id)
    assert (ringing.status, ringing.end_reason) == ("ended", "ended_by_api")


@pytest.mark.asyncio
async def test_a_phone_answered_after_its_session_was_ended_is_hung_up(rig: Rig) -> None:
    rig.call("ann", "agent1", 1)
    s = await rig.svc.begin("sue", "ann", "listen", "sup1")
    await rig.svc.end(s.id)
    await rig.answer("orig-1", 1)  # the supervisor picks up anyway: ChanSpy would run with no session
    assert rig.ami.named("Hangup") == [{"Channel": "PJSIP/sup1-000000a1"}]


@pytest.mark.asyncio
async def test_a_pci_pause_ends_listeners_but_not_a_takeover(rig: Rig) -> None:
    call = rig.call("ann", "agent1", 1)
    listener = await rig.svc.begin("sue", "ann", "listen", "sup1")
    await rig.answer("orig-1", 1)
    taker = await rig.svc.begin("tom", "ann", "takeover", "sup2")
    rig.svc.on_event(ev("OriginateResponse", T0 + 55, ActionID="orig-2", Response="Success", Reason="4",
                        Channel="PJSIP/sup2-000000a2", Uniqueid="sup.2"))
    await rig.ami.wait_sent("BlindTransfer")  # answered in takeover mode: the agent's leg is moved at once
    caller_left_bridge(rig, call)
    await rig.settle()
    assert taker.status == "active" and taker.mode == "takeover" and len(rig.ami.named("Bridge")) == 1
    await rig.svc.on_pci_pause("some-other-call")
    assert rig.ami.named("Hangup") == []
    await rig.svc.on_pci_pause(call.linkedid)
    assert rig.ami.named("Hangup") == [{"Channel": "PJSIP/sup1-000000a1"}]
    rig.svc.on_event(ev("Hangup", T0 + 90, Channel="PJSIP/sup1-000000a1", Uniqueid="sup.1"))
    await rig.settle()
    assert (listener.status, listener.end_reason) == ("ended", "recording_paused")
    assert taker.status == "active"
