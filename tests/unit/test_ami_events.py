"""Typed AMI events: units, missing fields, garbage input, idempotency keys, recorded streams."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from telephony.ami.events import (
    NOISE_EVENTS,
    TYPED_EVENTS,
    AgentComplete,
    AgentConnect,
    AgentRingNoAnswer,
    AmiEvent,
    AttendedTransfer,
    BlindTransfer,
    CallbackRequest,
    ContactStatus,
    FullyBooted,
    Hangup,
    MixMonitorMute,
    QueueCallerAbandon,
    QueueEntry,
    QueueMemberPause,
    UserEvent,
    is_noise,
    parse_event,
)
from telephony.ami.protocol import parse_frame

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ami"


def test_ring_time_units_differ_between_events() -> None:
    rna = parse_event({"Event": "AgentRingNoAnswer", "Queue": "support", "Interface": "PJSIP/agent1",
                       "MemberName": "agent1", "RingTime": "15023"}, 1.0)
    con = parse_event({"Event": "AgentConnect", "Queue": "support", "Interface": "PJSIP/agent1",
                       "RingTime": "3", "HoldTime": "6"}, 1.0)
    assert isinstance(rna, AgentRingNoAnswer) and rna.ring_time_ms == 15023
    assert isinstance(con, AgentConnect) and con.ring_time_s == 3 and con.hold_time_s == 6
    assert rna.member == "PJSIP/agent1" and rna.member_name == "agent1" and rna.queue == "support"


def test_agent_complete_without_channel_fields() -> None:
    ev = parse_event({"Event": "AgentComplete", "Queue": "support", "Interface": "Local/100@agents",
                      "MemberName": "a1", "HoldTime": "6", "TalkTime": "12", "Reason": "transfer",
                      "Timestamp": "1732370000.123456"}, 99.0)
    assert isinstance(ev, AgentComplete)
    assert ev.channel is None and ev.uniqueid is None and ev.linkedid is None
    assert (ev.hold_time_s, ev.talk_time_s, ev.reason) == (6, 12, "transfer")
    assert ev.queue == "support" and ev.member == "Local/100@agents"
    assert ev.timestamp == pytest.approx(1732370000.123456, abs=1e-6)
    assert ev.received_at == 99.0


@pytest.mark.parametrize("bad", ["", "abc", "nan", "inf", "-", "1e999", "  "])
def test_garbage_numbers_become_none(bad: str) -> None:
    ev = parse_event({"Event": "AgentComplete", "HoldTime": bad, "TalkTime": bad, "Timestamp": bad}, 42.0)
    assert isinstance(ev, AgentComplete)
    assert ev.hold_time_s is None and ev.talk_time_s is None
    assert ev.timestamp == 42.0  # receipt time when the Timestamp header is unusable


def test_float_number_is_truncated_not_refused() -> None:
    ev = parse_event({"Event": "QueueCallerAbandon", "HoldTime": "5.9", "Position": " 2 "}, 1.0)
    assert isinstance(ev, QueueCallerAbandon) and ev.hold_time_s == 5 and ev.position == 2


def test_missing_timestamp_falls_back_to_receipt_time() -> None:
    assert parse_event({"Event": "Hangup"}, 123.5).timestamp == 123.5


@pytest.mark.parametrize(
    "frame",
    [
        {},
        {"Event": ""},
        {"event": "hangup", "uniqueid": "1.1"},
        {"Event": "NoSuchEvent", "X": "y"},
        {"Event": "Hangup", "Cause": ["16", "17"]},
        {"Event": "Hangup", 1: 2, "Cause": None},
        {"Event": "\x00\ufffd garbage"},
    ],
)
def test_parse_event_never_raises(frame: dict[object, object]) -> None:
    ev = parse_event(frame, 1.0)  # type: ignore[arg-type]
    assert isinstance(ev, AmiEvent)
    for k, v in ev.fields.items():
        assert isinstance(k, str) and isinstance(v, str)


@pytest.mark.parametrize("frame", [None, 42, "Event: Hangup", ["Event", "Hangup"]])
def test_parse_event_on_non_mappings(frame: object) -> None:
    ev = parse_event(frame, float("nan"))  # type: ignore[arg-type]
    assert ev.name == "" and dict(ev.fields) == {}


def test_case_insensitive_names_and_headers() -> None:
    ev = parse_event({"event": "hangup", "UniqueID": "9.9", "cause": "16"}, 1.0)
    assert isinstance(ev, Hangup) and ev.uniqueid == "9.9" and ev.cause == 16


def test_queue_member_pause_fields() -> None:
    ev = parse_event({"Event": "QueueMemberPause", "Queue": "q", "Interface": "PJSIP/a", "Paused": "1",
                      "PausedReason": "lunch", "InCall": "0", "Status": "1", "Penalty": "2",
                      "LastCall": "1732370000", "Wrapuptime": "5"}, 1.0)
    assert isinstance(ev, QueueMemberPause)
    assert (ev.paused, ev.paused_reason, ev.in_call, ev.status, ev.penalty) == (True, "lunch", False, 1, 2)
    assert ev.last_call == 1732370000 and ev.wrapuptime == 5 and ev.member == "PJSIP/a"


def test_queue_member_pause_action_reason_on_pause_and_unpause() -> None:
    """app_queue sends the action's ``Reason`` on unpause too, while ``PausedReason`` is then empty."""
    unpause = parse_event({"Event": "QueueMemberPause", "Queue": "q", "Interface": "PJSIP/a", "Paused": "0",
                           "PausedReason": "", "Reason": "ccpbx:ready"}, 1.0)
    assert isinstance(unpause, QueueMemberPause)
    assert (unpause.paused, unpause.paused_reason, unpause.action_reason) == (False, None, "ccpbx:ready")
    pause = parse_event({"Event": "QueueMemberPause", "Queue": "q", "Interface": "PJSIP/a", "Paused": "1",
                         "PausedReason": "ccpbx:break", "Reason": "ccpbx:break"}, 1.0)
    assert isinstance(pause, QueueMemberPause)
    assert (pause.paused, pause.paused_reason, pause.action_reason) == (True, "ccpbx:break", "ccpbx:break")
    bare = parse_event({"Event": "QueueMemberPause", "Interface": "PJSIP/a", "Paused": "1"}, 1.0)
    assert isinstance(bare, QueueMemberPause) and bare.paused_reason is None and bare.action_reason is None


def test_transfers_contact_and_mute() -> None:
    bt = parse_event({"Event": "BlindTransfer", "Result": "Success", "TransfererChannel": "PJSIP/a-1",
                      "TransfereeUniqueid": "1.2", "IsExternal": "No", "Extension": "200"}, 1.0)
    assert isinstance(bt, BlindTransfer)
    assert (bt.result, bt.transferer_channel, bt.transferee_uniqueid, bt.is_external, bt.extension) == (
        "Success", "PJSIP/a-1", "1.2", False, "200")
    at = parse_event({"Event": "AttendedTransfer", "DestType": "Bridge", "OrigBridgeUniqueid": "b1"}, 1.0)
    assert isinstance(at, AttendedTransfer) and at.dest_type == "Bridge" and at.orig_bridge_uniqueid == "b1"
    cs = parse_event({"Event": "ContactStatus", "AOR": "agent1", "ContactStatus": "Reachable",
                      "RoundtripUsec": "1234"}, 1.0)
    assert isinstance(cs, ContactStatus) and cs.aor == "agent1" and cs.roundtrip_usec == 1234
    mm = parse_event({"Event": "MixMonitorMute", "Direction": "both", "State": "1"}, 1.0)
    assert isinstance(mm, MixMonitorMute) and mm.muted is True and mm.direction == "both"


def test_callback_request_user_event_and_queue_entry() -> None:
    """The body the dialplan's [queue-callback] sends (a frame as measured on Asterisk 22.10, trimmed)."""
    frame = {"Event": "UserEvent", "Privilege": "user,all", "Channel": "PJSIP/carrier-00000002",
             "CallerIDNum": "+15550001", "Context": "queue-callback", "Exten": "1", "Priority": "11",
             "Uniqueid": "live1-1795452717.2", "Linkedid": "live1-1795452717.2", "UserEvent": "CallbackRequest",
             "Queue": "q-c43257", "Number": "+15550001", "QueuePrio": "0", "Did": "3902150", "QueuePosition": "3"}
    ev = parse_event(frame, 1.0)
    assert isinstance(ev, UserEvent) and ev.user_event == "CallbackRequest"
    assert ev.callback_request() == CallbackRequest(queue="q-c43257", number="+15550001", queue_prio=0,
                                                    did="3902150", queue_position=3)
    assert ev.uniqueid == "live1-1795452717.2"
    # Empty values (no DID, QUEUEPOSITION unset) and garbage become None; other user events carry no request.
    bare = parse_event({**frame, "Did": "", "QueuePosition": "", "QueuePrio": "x"}, 1.0)
    assert isinstance(bare, UserEvent)
    req = bare.callback_request()
    assert req is not None and (req.did, req.queue_position, req.queue_prio) == (None, None, None)
    other = parse_event({**frame, "UserEvent": "Other"}, 1.0)
    assert isinstance(other, UserEvent) and other.callback_request() is None
    entry = parse_event({"Event": "QueueEntry", "Queue": "q", "Position": "2", "Uniqueid": "1.2", "Wait": "17",
                         "Priority": "10", "CallerIDNum": "+4930"}, 1.0)
    assert isinstance(entry, QueueEntry)
    assert (entry.queue, entry.position, entry.uniqueid, entry.wait_s, entry.priority) == ("q", 2, "1.2", 17, 10)


def test_every_typed_event_parses_an_empty_frame() -> None:
    assert {"AgentComplete", "QueueMemberStatus", "DeviceStateChange", "PeerStatus"} <= set(TYPED_EVENTS)
    for name, cls in TYPED_EVENTS.items():
        ev = parse_event({"Event": name}, 1.0)
        assert type(ev) is cls
        for f in dataclasses.fields(ev):
            if f.name not in ("name", "fields", "timestamp", "received_at"):
                assert getattr(ev, f.name) is None, (name, f.name)


def test_key_is_stable_for_a_replay_and_changes_with_any_header() -> None:
    frame = {"Event": "Hangup", "Uniqueid": "1.1", "Cause": "16", "Timestamp": "1732370000.000001"}
    a = parse_event(frame, 1.0)
    b = parse_event(dict(reversed(list(frame.items()))), 2.0)  # same frame, other order, other receipt
    assert a.key("pbx1") == b.key("pbx1")
    assert len(a.key("pbx1")) == 64
    assert a.key("pbx1") != a.key("pbx2")
    for k in frame:
        changed = dict(frame, **{k: frame[k] + "0"})
        assert parse_event(changed, 1.0).key("pbx1") != a.key("pbx1"), k
    assert parse_event({**frame, "Extra": ""}, 1.0).key("pbx1") != a.key("pbx1")


def test_events_are_immutable_and_hashable() -> None:
    ev = parse_event({"Event": "Hangup", "Cause": "16"}, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ev.fields["Cause"] = "17"  # type: ignore[index]
    assert hash(ev) == hash(parse_event({"Event": "Hangup", "Cause": "16"}, 1.0))


def test_synthetic_events_have_unique_keys() -> None:
    a = AmiEvent.make_synthetic("AmiConnected", {"Connection": "1"})
    b = AmiEvent.make_synthetic("AmiConnected", {"Connection": "2"})
    assert a.synthetic and a.name == "AmiConnected" and a.key("n") != b.key("n")
    assert AmiEvent(name="AmiDisconnected").synthetic


def test_noise() -> None:
    assert {"VarSet", "TestEvent", "Newexten", "RTCPSent", "RTCPReceived"} <= NOISE_EVENTS
    assert is_noise("VarSet") and not is_noise("AgentComplete")


def test_recorded_queue_call_stream() -> None:
    """A hand-written queue-call stream shaped like Asterisk 22 output parses into typed events."""
    text = (FIXTURES / "queue_call.txt").read_text(encoding="utf-8")
    frames = [dict(parse_frame(block)[0]) for block in text.split("\n\n") if block.strip()]
    events = [parse_event(f, 0.0) for f in frames]
    names = [e.name for e in events]
    assert names[0] == "FullyBooted" and isinstance(events[0], FullyBooted)
    assert "QueueCallerJoin" in names and names[-1] == "Hangup"
    connect = next(e for e in events if isinstance(e, AgentConnect))
    complete = next(e for e in events if isinstance(e, AgentComplete))
    rna = next(e for e in events if isinstance(e, AgentRingNoAnswer))
    assert rna.ring_time_ms == 15004 and connect.ring_time_s == 2
    assert complete.uniqueid is None and complete.queue == connect.queue and complete.member == connect.member
    assert complete.timestamp - connect.timestamp == pytest.approx(12.503211, abs=1e-6)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    assert len({e.key("pbx1") for e in events}) == len(events)
