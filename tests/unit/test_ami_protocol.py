"""AmiProtocol fed byte by byte through a fake transport: framing, decoding, isolation, action resolution."""

from __future__ import annotations

import asyncio

import pytest

from telephony.ami.protocol import (
    Action,
    AmiConnectionLost,
    AmiNotConnected,
    AmiProtocol,
    parse_frame,
)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Harness:
    def __init__(self, max_frame_bytes: int = 1 << 20) -> None:
        self.frames: list[dict[str, str]] = []
        self.lost: list[Exception | None] = []
        self.proto = AmiProtocol(self.frames_append, on_lost=self.lost.append,
                                 max_frame_bytes=max_frame_bytes)
        self.transport = FakeTransport()
        self.proto.connection_made(self.transport)

    def frames_append(self, frame: dict[str, str], received_at: float) -> None:
        self.frames.append(frame)

    def feed(self, data: bytes, chunk: int | None = None) -> None:
        if chunk is None:
            self.proto.data_received(data)
            return
        for i in range(0, len(data), chunk):
            self.proto.data_received(data[i : i + chunk])


def frame(*pairs: tuple[str, str]) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n").encode("utf-8")


@pytest.mark.asyncio
async def test_multibyte_utf8_survives_every_possible_split() -> None:
    data = BANNER + frame(("Event", "Newchannel"), ("CallerIDName", "Zoë 李 😀"), ("Uniqueid", "1.2"))
    for cut in range(1, len(data)):
        h = Harness()
        h.feed(data[:cut])
        h.feed(data[cut:])
        assert h.frames == [{"Event": "Newchannel", "CallerIDName": "Zoë 李 😀", "Uniqueid": "1.2"}], cut
        assert h.proto.malformed_frames == 0
    h = Harness()
    h.feed(data, chunk=1)  # one byte per read
    assert h.frames[0]["CallerIDName"] == "Zoë 李 😀"
    assert h.proto.version == "11.0.0"


@pytest.mark.asyncio
async def test_bare_lf_frames_and_line_separator_chars_are_handled() -> None:
    h = Harness()
    h.feed(BANNER + b"Event: A\nX: 1\n\nEvent: B\r\nName: a\xe2\x80\xa8b\r\n\r\n")  # U+2028 inside a value
    assert h.frames == [{"Event": "A", "X": "1"}, {"Event": "B", "Name": "a\u2028b"}]


@pytest.mark.asyncio
async def test_malformed_frames_are_counted_and_skipped_without_closing() -> None:
    h = Harness()
    h.feed(BANNER + frame(("Event", "One")))
    h.feed(b"\x00\xff\xfe\x80 binary junk\r\nno colon here\r\n\r\n")
    h.feed(frame(("Event", "Two")))
    assert [f["Event"] for f in h.frames] == ["One", "Two"]
    assert h.proto.malformed_frames == 1
    assert not h.transport.closing and h.lost == []


@pytest.mark.asyncio
async def test_event_with_a_bad_line_is_kept_and_the_bad_line_dropped() -> None:
    h = Harness()
    h.feed(BANNER + b"Event: Hangup\r\nUniqueid: 1.5\r\ngarbage line\r\nCause: 16\r\n\r\n")
    assert h.frames == [{"Event": "Hangup", "Uniqueid": "1.5", "Cause": "16"}]
    assert h.proto.malformed_frames == 1


@pytest.mark.asyncio
async def test_oversize_unterminated_frame_is_discarded_then_stream_recovers() -> None:
    h = Harness(max_frame_bytes=4096)
    h.feed(BANNER + frame(("Event", "Before")))
    h.feed(b"Event: Huge\r\nData: " + b"A" * 3000)
    h.feed(b"B" * 3000)  # now > 4096 bytes without a terminator
    assert h.proto.malformed_frames == 1
    h.feed(b"C" * 10000)  # still the same garbage frame: not counted again, not buffered
    assert len(h.proto._buf) < 16
    h.feed(b"\r\n\r\n" + frame(("Event", "After")))
    assert [f["Event"] for f in h.frames] == ["Before", "After"]
    assert h.proto.malformed_frames == 1 and not h.transport.closing


@pytest.mark.asyncio
async def test_default_limit_is_one_mebibyte() -> None:
    h = Harness()
    h.feed(BANNER + b"Event: Huge\r\nData: " + b"A" * (1 << 20))
    assert h.proto.malformed_frames == 1
    h.feed(b"\r\n\r\n" + frame(("Event", "After")))
    assert [f["Event"] for f in h.frames] == ["After"]


@pytest.mark.asyncio
async def test_sink_exception_is_isolated() -> None:
    got: list[str] = []

    def sink(f: dict[str, str], t: float) -> None:
        if f["Event"] == "Bad":
            raise RuntimeError("consumer bug")
        got.append(f["Event"])

    p = AmiProtocol(sink)
    p.connection_made(FakeTransport())
    p.data_received(BANNER + frame(("Event", "Bad")) + frame(("Event", "Good")))
    assert got == ["Good"] and p.handler_errors == 1


@pytest.mark.asyncio
async def test_repeated_headers_are_joined_for_events() -> None:
    h = Harness()
    h.feed(BANNER + frame(("Event", "Newchannel"), ("ChanVariable", "A=1"), ("ChanVariable", "B=2")))
    assert h.frames[0]["ChanVariable"] == "A=1\nB=2"


def _sent(h: Harness) -> dict[str, str]:
    headers, _ = parse_frame(h.transport.written[-1].decode())
    return dict(headers)


@pytest.mark.asyncio
async def test_replies_resolve_actions_and_list_events_do_not_reach_the_sink() -> None:
    h = Harness()
    h.feed(BANNER)
    single = Action({"Action": "QueueAdd", "Queue": "q", "Interface": "PJSIP/a"}, as_list=False)
    fut1 = h.proto.send_action(single)
    aid = _sent(h)["ActionID"]
    h.feed(frame(("Response", "Success"), ("ActionID", aid), ("Message", "Added interface to queue")))
    assert (await fut1)["Message"] == "Added interface to queue"  # panoramisk alone: never resolves

    lst = Action({"Action": "QueueStatus"}, as_list=True)
    fut2 = h.proto.send_action(lst)
    lid = _sent(h)["ActionID"]
    h.feed(frame(("Response", "Success"), ("ActionID", lid), ("EventList", "start")))
    h.feed(frame(("Event", "QueueMember"), ("ActionID", lid), ("Queue", "q")))
    assert not fut2.done()
    h.feed(frame(("Event", "QueueStatusComplete"), ("ActionID", lid), ("EventList", "Complete")))
    replies = await fut2
    assert [r.get("Event", "") for r in replies] == ["", "QueueMember", "QueueStatusComplete"]
    assert h.frames == [] and h.proto.responses == {}


@pytest.mark.asyncio
async def test_error_reply_resolves_a_list_action() -> None:
    h = Harness()
    h.feed(BANNER)
    fut = h.proto.send_action(Action({"Action": "QueueStatus"}, as_list=True))
    h.feed(frame(("Response", "Error"), ("ActionID", _sent(h)["ActionID"]), ("Message", "Permission denied")))
    replies = await asyncio.wait_for(fut, 1.0)
    assert replies[0]["Message"] == "Permission denied"
    assert h.proto.responses == {}


@pytest.mark.asyncio
async def test_connection_lost_fails_pending_actions_and_keeps_none_for_resend() -> None:
    h = Harness()
    h.feed(BANNER)
    orig = Action({"Action": "Originate", "Channel": "PJSIP/a", "Exten": "1"}, as_list=False)
    fut = h.proto.send_action(orig)
    h.proto.connection_lost(None)
    with pytest.raises(AmiConnectionLost):
        await fut
    assert h.proto.responses == {} and len(h.lost) == 1
    assert getattr(h.proto, "factory", None) is None  # panoramisk's awaiting_actions live on a factory
    h.proto.connection_lost(None)  # idempotent
    assert len(h.lost) == 1
    with pytest.raises(AmiNotConnected):
        h.proto.send_action(Action({"Action": "Ping"}, as_list=False))
    assert sum(b"Originate" in w for w in h.transport.written) == 1


@pytest.mark.asyncio
async def test_late_reply_after_forget_is_ignored() -> None:
    h = Harness()
    h.feed(BANNER)
    act = Action({"Action": "Ping"}, as_list=False)
    fut = h.proto.send_action(act)
    aid = _sent(h)["ActionID"]
    h.proto.forget(act)
    assert fut.cancelled()
    h.feed(frame(("Response", "Success"), ("ActionID", aid), ("Ping", "Pong")))
    assert h.proto.orphan_responses == 1 and h.frames == []


@pytest.mark.asyncio
async def test_crlf_in_a_header_is_refused_and_nothing_is_written() -> None:
    h = Harness()
    h.feed(BANNER)
    with pytest.raises(ValueError):
        h.proto.send_action(Action({"Action": "Originate", "CallerID": "a\r\nAction: Hangup"}, as_list=False))
    assert h.transport.written == [] and h.proto.responses == {}


@pytest.mark.asyncio
async def test_non_ascii_action_is_sent_as_utf8() -> None:
    h = Harness()
    h.feed(BANNER)
    h.proto.send_action(Action({"Action": "Originate", "CallerID": "Zoë <100>"}, as_list=False))
    assert "CallerID: Zoë <100>".encode() in h.transport.written[-1]


def test_parse_frame_splits_on_first_colon_and_flags_bad_lines() -> None:
    headers, bad = parse_frame("Event: X\r\nURI: sip:a@b:5060\r\nEmpty:\r\nnope\r\n: novalue\r\n")
    assert headers == [("Event", "X"), ("URI", "sip:a@b:5060"), ("Empty", "")]
    assert bad == ["nope", ": novalue"]
