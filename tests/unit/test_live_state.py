"""Live state folds typed events; resync replaces it with Asterisk's view."""

from __future__ import annotations

from reporting.live import LiveState
from telephony.ami import AmiEvent, parse_event


def ev(**fields: str) -> AmiEvent:
    return parse_event({"Timestamp": "1795448451.000001", **fields}, 0.0)


def test_channels_come_and_go() -> None:
    s = LiveState()
    s.apply(ev(Event="Newchannel", Uniqueid="1.1", Linkedid="1.1", Channel="PJSIP/carrier-1",
               CallerIDNum="+15551234", ChannelStateDesc="Ring"))
    s.apply(ev(Event="Newstate", Uniqueid="1.1", Linkedid="1.1", Channel="PJSIP/carrier-1",
               CallerIDNum="+15551234", ChannelStateDesc="Up"))
    assert s.snapshot()["channels"] == [
        {"uniqueid": "1.1", "linkedid": "1.1", "channel": "PJSIP/carrier-1", "caller": "+15551234", "state": "Up"}
    ]
    s.apply(ev(Event="Hangup", Uniqueid="1.1", Linkedid="1.1"))
    assert s.channels == {}
    assert s.last_event_ts == 1795448451.000001


def test_members_and_resync() -> None:
    s = LiveState()
    s.apply(ev(Event="QueueMemberAdded", Queue="support", Interface="PJSIP/agent1", MemberName="agent1",
               Status="1", Paused="0"))
    s.apply(ev(Event="QueueMemberPause", Queue="support", Interface="PJSIP/agent1", MemberName="agent1",
               Status="1", Paused="1"))
    assert s.members[("support", "PJSIP/agent1")].paused is True
    # QueueStatus names the member in "Name"; the typed event hides that difference.
    s.reset_from([], [ev(Event="QueueMember", Queue="support", Location="PJSIP/agent2", Name="agent2", Status="2",
                         Paused="0")])
    assert list(s.members) == [("support", "PJSIP/agent2")]
    assert s.members[("support", "PJSIP/agent2")].name == "agent2"
    s.apply(ev(Event="QueueMemberRemoved", Queue="support", Interface="PJSIP/agent2", MemberName="agent2"))
    assert s.members == {}


def test_connection_events_flip_the_flag() -> None:
    s = LiveState()
    s.apply(AmiEvent.make_synthetic("AmiConnected", {}))
    assert s.ami_connected
    s.apply(AmiEvent.make_synthetic("AmiDisconnected", {}))
    assert not s.ami_connected
