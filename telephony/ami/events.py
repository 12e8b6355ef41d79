"""Typed AMI events: the ONE module that knows AMI header names.

Why: every other package (live state, event store, projector, ACD) reads events through these dataclasses
and their properties, so a header renamed by an Asterisk release is fixed here once. Parsing never raises: a
garbage frame becomes a generic :class:`AmiEvent` (``None`` for what could not be parsed), because one bad
frame must not stop the ordered consumer.

Units are part of the field names (``ring_time_ms`` vs ``ring_time_s``) because Asterisk 22 is inconsistent:
``AgentRingNoAnswer.RingTime`` is in milliseconds, ``AgentConnect.RingTime`` in seconds. ``HoldTime`` and
``TalkTime`` are differences of whole-second clock readings (a 5.01 s wait can read 6): compute exact
durations from :attr:`AmiEvent.timestamp` (the ``Timestamp`` header, µs, sent with
``timestampevents = yes``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "CALLBACK_REQUEST_EVENT",
    "NOISE_EVENTS",
    "SECURITY_FAILURE_EVENTS",
    "SYNTHETIC_EVENTS",
    "TYPED_EVENTS",
    "AgentCalled",
    "AgentComplete",
    "AgentConnect",
    "AgentDump",
    "AgentRingNoAnswer",
    "AmiEvent",
    "AttendedTransfer",
    "BlindTransfer",
    "BridgeEnter",
    "BridgeLeave",
    "CallbackRequest",
    "ChallengeResponseFailed",
    "ChallengeSent",
    "ContactStatus",
    "CoreShowChannel",
    "DeviceStateChange",
    "DialBegin",
    "DialEnd",
    "FailedACL",
    "FullyBooted",
    "Hangup",
    "Hold",
    "InvalidAccountID",
    "InvalidPassword",
    "MixMonitorMute",
    "MixMonitorStart",
    "MixMonitorStop",
    "Newchannel",
    "Newstate",
    "OriginateResponse",
    "PeerStatus",
    "QueueCallerAbandon",
    "QueueCallerJoin",
    "QueueCallerLeave",
    "QueueEntry",
    "QueueMember",
    "QueueMemberAdded",
    "QueueMemberPause",
    "QueueMemberRemoved",
    "QueueMemberStatus",
    "SecurityEvent",
    "Shutdown",
    "SuccessfulAuth",
    "Unhold",
    "UserEvent",
    "event_name",
    "is_noise",
    "parse_event",
    "parse_remote_address",
]

#: High-volume events with no value for the contact center (measured: they are most of a queue call's 55-92
#: events on Debian's Asterisk 22). The service may drop them with ``AmiClient(event_filter=...)``.
NOISE_EVENTS: frozenset[str] = frozenset(
    {
        "VarSet",
        "TestEvent",
        "Newexten",
        "RTCPSent",
        "RTCPReceived",
        "ChallengeSent",
        "SuccessfulAuth",
    }
)

#: Events made by the client itself (never sent by Asterisk): the connection state, in stream order.
SYNTHETIC_EVENTS: frozenset[str] = frozenset({"AmiConnected", "AmiDisconnected"})


def is_noise(name: str) -> bool:
    """True for events the service can drop safely (see :data:`NOISE_EVENTS`)."""
    return name in NOISE_EVENTS


# --------------------------------------------------------------------------------------------------------
# value converters: never raise, ``None`` when missing or unparsable


class _Lower:
    """Case-insensitive view of a frame, built only if an exact-case lookup misses."""

    __slots__ = ("_frame", "_map")

    def __init__(self, frame: Mapping[str, str]) -> None:
        self._frame = frame
        self._map: dict[str, str] | None = None

    def get(self, key_lower: str) -> str | None:
        if self._map is None:
            self._map = {}
            for k, v in self._frame.items():
                self._map.setdefault(k.lower(), v)
        return self._map.get(key_lower)


def _lookup(frame: Mapping[str, str], lower: _Lower, headers: tuple[str, ...]) -> str | None:
    for h in headers:
        v = frame.get(h)
        if v is None:
            v = lower.get(h.lower())
        if v is not None:
            return v
    return None


def _str(v: str | None) -> str | None:
    """Missing or empty -> None (an empty header carries no information)."""
    if v is None:
        return None
    return v if v != "" else None


def _int(v: str | None) -> int | None:
    if v is None:
        return None
    s = v.strip()
    if not s:
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        return None
    if not math.isfinite(f):
        return None
    return int(f)


def _bool(v: str | None) -> bool | None:
    if v is None:
        return None
    s = v.strip().lower()
    if s in ("1", "true", "yes", "on", "y", "t"):
        return True
    if s in ("0", "false", "no", "off", "n", "f"):
        return False
    return None


def _timestamp(v: str | None, fallback: float) -> float:
    """``Timestamp: 1732370000.123456`` -> epoch seconds; receipt time when missing or garbage."""
    if v is None:
        return fallback
    try:
        f = float(v.strip())
    except ValueError:
        return fallback
    if not math.isfinite(f) or f <= 0:
        return fallback
    return f


_Converter = Callable[[str | None], Any]


def _h(*headers: str, conv: _Converter = _str) -> Any:
    """Declare a typed field read from AMI header(s) (first present wins); defaults to ``None``."""
    return field(default=None, metadata={"ami": headers, "conv": conv})


def _sanitize(frame: Any) -> dict[str, str]:
    """Any mapping -> ``dict[str, str]``: repeated headers (lists) joined with ``\\n``, never raises."""
    out: dict[str, str] = {}
    if type(frame) is dict:  # fast path: a plain dict[str, str] (what the protocol hands over)
        out = frame.copy()
        if all(type(k) is str and type(v) is str for k, v in out.items()):
            if out.get("content") == "":
                del out["content"]
            return out
        out = {}
    if not isinstance(frame, Mapping):
        return out
    try:
        items = list(frame.items())
    except Exception:
        return out
    for k, v in items:
        try:
            key = k if isinstance(k, str) else str(k)
            if isinstance(v, str):
                val = v
            elif v is None:
                val = ""
            elif isinstance(v, list | tuple):
                val = "\n".join(x if isinstance(x, str) else str(x) for x in v)
            else:
                val = str(v)
        except Exception:
            continue
        # panoramisk's Message always carries an empty "content" key; it is not an AMI header.
        if key == "content" and val == "":
            continue
        out[key] = val
    return out


def event_name(frame: Mapping[str, str]) -> str:
    """The ``Event`` header of a frame (case-insensitive), ``""`` if missing."""
    v = frame.get("Event")
    if v is None:
        for k, val in frame.items():
            if isinstance(k, str) and k.lower() == "event":
                v = val
                break
    return v.strip() if isinstance(v, str) else ""


def _empty_fields() -> Mapping[str, str]:
    return MappingProxyType({})


# --------------------------------------------------------------------------------------------------------
# base event


@dataclass(frozen=True, slots=True)
class AmiEvent:
    """One AMI event as received.

    ``fields`` keeps every header with its original key (read-only). ``timestamp`` is Asterisk's own clock
    (``Timestamp`` header, µs) -- use it for durations; ``received_at`` is our receipt time.
    Convenience properties return ``None`` when the header is missing or empty (Asterisk 22 under load sends
    ``AgentComplete`` without any channel header).
    """

    name: str
    fields: Mapping[str, str] = field(default_factory=_empty_fields, hash=False)
    timestamp: float = field(default_factory=time.time)
    received_at: float = field(default_factory=time.time)

    def get(self, header: str, default: str | None = None) -> str | None:
        """Header value: exact key first, then case-insensitive (Asterisk mixes Uniqueid/UniqueID)."""
        v = self.fields.get(header)
        if v is not None:
            return v
        hl = header.lower()
        for k, val in self.fields.items():
            if k.lower() == hl:
                return val
        return default

    @property
    def chan_variables(self) -> dict[str, str]:
        """The channel's variables listed in manager.conf `channelvars` (`ChanVariable: NAME=value` headers;
        repeated headers arrive joined with newlines)."""
        out: dict[str, str] = {}
        for line in (self.get("ChanVariable") or "").split("\n"):
            name, sep, value = line.partition("=")
            if sep and name:
                out[name] = value
        return out

    def _first(self, *headers: str) -> str | None:
        for h in headers:
            v = self.get(h)
            if v:
                return v
        return None

    @property
    def uniqueid(self) -> str | None:
        return self._first("Uniqueid")

    @property
    def linkedid(self) -> str | None:
        return self._first("Linkedid")

    @property
    def channel(self) -> str | None:
        return self._first("Channel")

    @property
    def queue(self) -> str | None:
        return self._first("Queue")

    @property
    def member(self) -> str | None:
        """The queue member's identity: ``Interface`` (``Location`` before 12), else ``MemberName``."""
        return self._first("Interface", "Location", "MemberName")

    @property
    def dest_channel(self) -> str | None:
        """The dialed leg (for ``Local/`` members the ``;1`` leg; the phone shows in ``BridgeEnter``)."""
        return self._first("DestChannel")

    @property
    def dest_uniqueid(self) -> str | None:
        return self._first("DestUniqueid")

    @property
    def synthetic(self) -> bool:
        """True for the client's own connection events (``AmiConnected``/``AmiDisconnected``)."""
        return self.name in SYNTHETIC_EVENTS

    def key(self, node: str) -> str:
        """Stable idempotency key: sha256 of node + name + sorted headers.

        The same frame replayed gives the same key (so a replay inserts nothing twice); any differing header,
        including Asterisk's µs ``Timestamp``, gives another key. ``received_at`` is not part of it.
        """
        canon = json.dumps(
            [node, self.name, sorted(self.fields.items())], ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()

    @classmethod
    def make_synthetic(cls, name: str, extra: Mapping[str, str] | None = None) -> AmiEvent:
        """A client-made event; carries its own ``Timestamp`` so its key is unique."""
        now = time.time()
        fields = {"Event": name, "Timestamp": f"{now:.6f}"}
        if extra:
            fields.update({str(k): str(v) for k, v in extra.items()})
        return AmiEvent(name=name, fields=MappingProxyType(fields), timestamp=now, received_at=now)


# --------------------------------------------------------------------------------------------------------
# typed events (field names checked against the Asterisk 22 AMI event documentation)


@dataclass(frozen=True, slots=True)
class FullyBooted(AmiEvent):
    status: str | None = _h("Status")
    uptime_s: int | None = _h("Uptime", conv=_int)
    last_reload_s: int | None = _h("LastReload", conv=_int)


@dataclass(frozen=True, slots=True)
class Shutdown(AmiEvent):
    shutdown: str | None = _h("Shutdown")  # Cleanly / Uncleanly
    restart: bool | None = _h("Restart", conv=_bool)


@dataclass(frozen=True, slots=True)
class Newchannel(AmiEvent):
    state: int | None = _h("ChannelState", conv=_int)
    state_desc: str | None = _h("ChannelStateDesc")
    caller_id_num: str | None = _h("CallerIDNum")
    caller_id_name: str | None = _h("CallerIDName")
    context: str | None = _h("Context")
    exten: str | None = _h("Exten")
    account_code: str | None = _h("AccountCode")


@dataclass(frozen=True, slots=True)
class Hangup(AmiEvent):
    cause: int | None = _h("Cause", conv=_int)
    cause_txt: str | None = _h("Cause-txt")
    caller_id_num: str | None = _h("CallerIDNum")
    caller_id_name: str | None = _h("CallerIDName")


@dataclass(frozen=True, slots=True)
class Newstate(AmiEvent):
    state: int | None = _h("ChannelState", conv=_int)
    state_desc: str | None = _h("ChannelStateDesc")
    caller_id_num: str | None = _h("CallerIDNum")
    caller_id_name: str | None = _h("CallerIDName")
    connected_line_num: str | None = _h("ConnectedLineNum")
    connected_line_name: str | None = _h("ConnectedLineName")


@dataclass(frozen=True, slots=True)
class DialBegin(AmiEvent):
    dial_string: str | None = _h("DialString")
    dest_caller_id_num: str | None = _h("DestCallerIDNum")


@dataclass(frozen=True, slots=True)
class DialEnd(AmiEvent):
    dial_status: str | None = _h("DialStatus")  # ANSWER, BUSY, NOANSWER, CANCEL, ...
    forward: str | None = _h("Forward")


@dataclass(frozen=True, slots=True)
class BridgeEnter(AmiEvent):
    bridge_uniqueid: str | None = _h("BridgeUniqueid")
    bridge_type: str | None = _h("BridgeType")
    bridge_technology: str | None = _h("BridgeTechnology")
    bridge_num_channels: int | None = _h("BridgeNumChannels", conv=_int)
    swap_uniqueid: str | None = _h("SwapUniqueid")


@dataclass(frozen=True, slots=True)
class BridgeLeave(AmiEvent):
    bridge_uniqueid: str | None = _h("BridgeUniqueid")
    bridge_type: str | None = _h("BridgeType")
    bridge_technology: str | None = _h("BridgeTechnology")
    bridge_num_channels: int | None = _h("BridgeNumChannels", conv=_int)


@dataclass(frozen=True, slots=True)
class Hold(AmiEvent):
    music_class: str | None = _h("MusicClass")


@dataclass(frozen=True, slots=True)
class Unhold(AmiEvent):
    pass


@dataclass(frozen=True, slots=True)
class QueueCallerJoin(AmiEvent):
    position: int | None = _h("Position", conv=_int)
    count: int | None = _h("Count", conv=_int)
    caller_id_num: str | None = _h("CallerIDNum")
    caller_id_name: str | None = _h("CallerIDName")


@dataclass(frozen=True, slots=True)
class QueueCallerLeave(AmiEvent):
    position: int | None = _h("Position", conv=_int)
    count: int | None = _h("Count", conv=_int)


@dataclass(frozen=True, slots=True)
class QueueCallerAbandon(AmiEvent):
    position: int | None = _h("Position", conv=_int)
    original_position: int | None = _h("OriginalPosition", conv=_int)
    hold_time_s: int | None = _h("HoldTime", conv=_int)  # whole-second clock difference


@dataclass(frozen=True, slots=True)
class AgentCalled(AmiEvent):
    interface: str | None = _h("Interface")
    member_name: str | None = _h("MemberName")
    caller_id_num: str | None = _h("CallerIDNum")
    caller_id_name: str | None = _h("CallerIDName")


@dataclass(frozen=True, slots=True)
class AgentConnect(AmiEvent):
    interface: str | None = _h("Interface")
    member_name: str | None = _h("MemberName")
    caller_id_num: str | None = _h("CallerIDNum")
    hold_time_s: int | None = _h("HoldTime", conv=_int)
    ring_time_s: int | None = _h("RingTime", conv=_int)  # seconds here (ms in AgentRingNoAnswer)


@dataclass(frozen=True, slots=True)
class AgentComplete(AmiEvent):
    """May come with no Channel/Uniqueid/CallerIDNum under load: correlate by queue, member, AgentConnect."""

    interface: str | None = _h("Interface")
    member_name: str | None = _h("MemberName")
    hold_time_s: int | None = _h("HoldTime", conv=_int)
    talk_time_s: int | None = _h("TalkTime", conv=_int)
    reason: str | None = _h("Reason")  # caller / agent / transfer


@dataclass(frozen=True, slots=True)
class AgentRingNoAnswer(AmiEvent):
    interface: str | None = _h("Interface")
    member_name: str | None = _h("MemberName")
    ring_time_ms: int | None = _h("RingTime", conv=_int)  # milliseconds here (s in AgentConnect)


@dataclass(frozen=True, slots=True)
class AgentDump(AmiEvent):
    interface: str | None = _h("Interface")
    member_name: str | None = _h("MemberName")


@dataclass(frozen=True, slots=True)
class _QueueMemberEvent(AmiEvent):
    interface: str | None = _h("Interface", "Location")
    member_name: str | None = _h("MemberName")
    state_interface: str | None = _h("StateInterface")
    membership: str | None = _h("Membership")  # dynamic / realtime / static
    penalty: int | None = _h("Penalty", conv=_int)
    calls_taken: int | None = _h("CallsTaken", conv=_int)
    last_call: int | None = _h("LastCall", conv=_int)  # epoch s
    last_pause: int | None = _h("LastPause", conv=_int)  # epoch s
    login_time: int | None = _h("LoginTime", conv=_int)  # epoch s
    in_call: bool | None = _h("InCall", conv=_bool)
    status: int | None = _h("Status", conv=_int)  # AST_DEVICE_* (1 not in use, 2 in use, 6 ringing...)
    paused: bool | None = _h("Paused", conv=_bool)
    paused_reason: str | None = _h("PausedReason", "Reason")
    ringinuse: bool | None = _h("Ringinuse", conv=_bool)
    wrapuptime: int | None = _h("Wrapuptime", conv=_int)


@dataclass(frozen=True, slots=True)
class QueueMemberAdded(_QueueMemberEvent):
    pass


@dataclass(frozen=True, slots=True)
class QueueMember(_QueueMemberEvent):
    """One member in a ``QueueStatus`` reply (its name comes in ``Name``, not ``MemberName``)."""

    member_name: str | None = _h("Name", "MemberName")


@dataclass(frozen=True, slots=True)
class QueueEntry(AmiEvent):
    """One waiting caller in a ``QueueStatus`` reply (the channel is ``Channel``/``Uniqueid``)."""

    position: int | None = _h("Position", conv=_int)
    wait_s: int | None = _h("Wait", conv=_int)
    priority: int | None = _h("Priority", conv=_int)
    caller_id_num: str | None = _h("CallerIDNum")
    caller_id_name: str | None = _h("CallerIDName")


@dataclass(frozen=True, slots=True)
class CoreShowChannel(AmiEvent):
    """One channel in a ``CoreShowChannels`` reply."""

    state: int | None = _h("ChannelState", conv=_int)
    state_desc: str | None = _h("ChannelStateDesc")
    caller_id_num: str | None = _h("CallerIDNum")
    caller_id_name: str | None = _h("CallerIDName")


@dataclass(frozen=True, slots=True)
class QueueMemberRemoved(_QueueMemberEvent):
    pass


@dataclass(frozen=True, slots=True)
class QueueMemberPause(_QueueMemberEvent):
    """A member paused or unpaused (one event per queue the member is in).

    ``paused_reason`` is the member's current pause reason (``PausedReason``; empty on unpause);
    ``action_reason`` is the ``Reason`` given to the QueuePause action that caused this event, sent on
    unpause too (app_queue adds the ``Reason`` header whenever the action carried one). Tag the service's own
    pauses and unpauses with a reason to recognise their echoes.
    """

    action_reason: str | None = _h("Reason")


@dataclass(frozen=True, slots=True)
class QueueMemberStatus(_QueueMemberEvent):
    pass


@dataclass(frozen=True, slots=True)
class MixMonitorStart(AmiEvent):
    pass


@dataclass(frozen=True, slots=True)
class MixMonitorStop(AmiEvent):
    """Not sent when a channel just hangs up (measured): treat Hangup as the end of a recording too."""

    mixmonitor_id: str | None = _h("MixMonitorID")


@dataclass(frozen=True, slots=True)
class MixMonitorMute(AmiEvent):
    direction: str | None = _h("Direction")  # read / write / both
    muted: bool | None = _h("State", conv=_bool)


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """The body of ``UserEvent(CallbackRequest,...)`` sent by the dialplan's [queue-callback] (raw values, to be
    validated by the reader); the caller is the event's channel (``Uniqueid``/``Linkedid``)."""

    queue: str | None
    number: str | None
    queue_prio: int | None  # the caller's QUEUE_PRIO
    did: str | None  # the number the caller had dialled
    queue_position: int | None  # QUEUEPOSITION: the caller's place when they left the queue


#: ``UserEvent`` names the dialplan sends (asterisk-conf/extensions.conf).
CALLBACK_REQUEST_EVENT = "CallbackRequest"


@dataclass(frozen=True, slots=True)
class UserEvent(AmiEvent):
    user_event: str | None = _h("UserEvent")

    def callback_request(self) -> CallbackRequest | None:
        """The callback request this event carries, ``None`` for any other user event."""
        if self.user_event != CALLBACK_REQUEST_EVENT:
            return None
        return CallbackRequest(
            queue=_str(self.get("Queue")),
            number=_str(self.get("Number")),
            queue_prio=_int(self.get("QueuePrio")),
            did=_str(self.get("Did")),
            queue_position=_int(self.get("QueuePosition")),
        )


@dataclass(frozen=True, slots=True)
class BlindTransfer(AmiEvent):
    result: str | None = _h("Result")
    transferer_channel: str | None = _h("TransfererChannel")
    transferer_uniqueid: str | None = _h("TransfererUniqueid")
    transferee_channel: str | None = _h("TransfereeChannel")
    transferee_uniqueid: str | None = _h("TransfereeUniqueid")
    bridge_uniqueid: str | None = _h("BridgeUniqueid")
    is_external: bool | None = _h("IsExternal", conv=_bool)
    context: str | None = _h("Context")
    extension: str | None = _h("Extension")


@dataclass(frozen=True, slots=True)
class AttendedTransfer(AmiEvent):
    result: str | None = _h("Result")
    orig_transferer_channel: str | None = _h("OrigTransfererChannel")
    orig_transferer_uniqueid: str | None = _h("OrigTransfererUniqueid")
    orig_bridge_uniqueid: str | None = _h("OrigBridgeUniqueid")
    second_transferer_channel: str | None = _h("SecondTransfererChannel")
    second_transferer_uniqueid: str | None = _h("SecondTransfererUniqueid")
    second_bridge_uniqueid: str | None = _h("SecondBridgeUniqueid")
    transferee_channel: str | None = _h("TransfereeChannel")
    transferee_uniqueid: str | None = _h("TransfereeUniqueid")
    transfer_target_channel: str | None = _h("TransferTargetChannel")
    transfer_target_uniqueid: str | None = _h("TransferTargetUniqueid")
    dest_type: str | None = _h("DestType")  # Bridge / App / Link / Threeway / Fail
    dest_bridge_uniqueid: str | None = _h("DestBridgeUniqueid")
    dest_app: str | None = _h("DestApp")
    is_external: bool | None = _h("IsExternal", conv=_bool)


@dataclass(frozen=True, slots=True)
class ContactStatus(AmiEvent):
    uri: str | None = _h("URI")
    contact_status: str | None = _h("ContactStatus")  # Reachable / Unreachable / Removed / ...
    aor: str | None = _h("AOR")
    endpoint_name: str | None = _h("EndpointName")
    roundtrip_usec: int | None = _h("RoundtripUsec", conv=_int)


@dataclass(frozen=True, slots=True)
class PeerStatus(AmiEvent):
    channel_type: str | None = _h("ChannelType")
    peer: str | None = _h("Peer")
    peer_status: str | None = _h("PeerStatus")  # Registered / Unregistered / Reachable / ...
    cause: str | None = _h("Cause")
    address: str | None = _h("Address")


@dataclass(frozen=True, slots=True)
class DeviceStateChange(AmiEvent):
    device: str | None = _h("Device")
    state: str | None = _h("State")  # NOT_INUSE / INUSE / RINGING / UNAVAILABLE / ...


@dataclass(frozen=True, slots=True)
class OriginateResponse(AmiEvent):
    """Result of an ``Async: true`` Originate, matched to it by ``ActionID``."""

    action_id: str | None = _h("ActionID")
    response: str | None = _h("Response")  # Success / Failure
    reason: int | None = _h("Reason", conv=_int)  # 4 = answered, 5 = busy, 3 = no answer, 8 = congestion...
    caller_id_num: str | None = _h("CallerIDNum")
    caller_id_name: str | None = _h("CallerIDName")


# --------------------------------------------------------------------------------------------------------
# security events (class `security`; the manager user needs `read = ...,security`)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_remote_address(value: str | None) -> tuple[IpAddress, str | None, int | None] | None:
    """A security event's ``RemoteAddress`` (``IPV4/UDP/127.0.0.2/5060``, ``IPV6/TCP/2001:db8::1/5061``) ->
    (address, transport, port); ``None`` for anything else. The address is validated by :mod:`ipaddress`
    (brackets and a zone suffix are removed; an IPv4-mapped IPv6 address becomes the IPv4 address), so what
    comes out can be handed to a firewall command as it is."""
    if not value or len(value) > 128:
        return None
    parts = value.strip().split("/")
    if len(parts) != 4 or parts[0].upper() not in ("IPV4", "IPV6"):
        return None
    _family, transport, host, port_s = parts
    host = host.strip("[]").split("%", 1)[0]
    try:
        addr: IpAddress = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    port = _int(port_s)
    return addr, (transport.upper() or None), (port if port is not None and 0 <= port <= 65535 else None)


@dataclass(frozen=True, slots=True)
class SecurityEvent(AmiEvent):
    """Fields every Asterisk security event carries (Asterisk 22 AMI docs: ``InvalidAccountID``,
    ``InvalidPassword``, ``ChallengeResponseFailed``, ``FailedACL``...). ``service`` is ``PJSIP`` for SIP,
    ``AMI`` for manager logins."""

    severity: str | None = _h("Severity")  # Informational / Error
    service: str | None = _h("Service")
    event_version: int | None = _h("EventVersion", conv=_int)
    account_id: str | None = _h("AccountID")
    session_id: str | None = _h("SessionID")
    local_address: str | None = _h("LocalAddress")
    remote_address: str | None = _h("RemoteAddress")
    module: str | None = _h("Module")
    event_tv: str | None = _h("EventTV")

    @property
    def remote_ip(self) -> IpAddress | None:
        """The remote party's address, validated (``None`` when the header is missing or malformed)."""
        parsed = parse_remote_address(self.remote_address)
        return parsed[0] if parsed else None

    @property
    def remote_transport(self) -> str | None:
        parsed = parse_remote_address(self.remote_address)
        return parsed[1] if parsed else None


@dataclass(frozen=True, slots=True)
class InvalidAccountID(SecurityEvent):
    """A request for an account that does not exist (PJSIP: after ``unidentified_request_count`` unidentified
    requests from one address within ``unidentified_request_period``)."""


@dataclass(frozen=True, slots=True)
class InvalidPassword(SecurityEvent):
    challenge: str | None = _h("Challenge")
    received_challenge: str | None = _h("ReceivedChallenge")
    received_hash: str | None = _h("ReceivedHash")


@dataclass(frozen=True, slots=True)
class ChallengeResponseFailed(SecurityEvent):
    """The answer to a digest challenge was wrong (a wrong SIP password, or an unknown user answering the
    artificial endpoint's challenge)."""

    challenge: str | None = _h("Challenge")
    response: str | None = _h("Response")
    expected_response: str | None = _h("ExpectedResponse")


@dataclass(frozen=True, slots=True)
class FailedACL(SecurityEvent):
    acl_name: str | None = _h("ACLName")
    session_tv: str | None = _h("SessionTV")


@dataclass(frozen=True, slots=True)
class ChallengeSent(SecurityEvent):
    """Informational: a request was challenged (every first REGISTER/INVITE of a phone; not a failure)."""

    challenge: str | None = _h("Challenge")


@dataclass(frozen=True, slots=True)
class SuccessfulAuth(SecurityEvent):
    using_password: bool | None = _h("UsingPassword", conv=_bool)


#: Security events that mean "somebody failed to authenticate" (what a password-guessing source produces).
SECURITY_FAILURE_EVENTS: frozenset[str] = frozenset(
    {"InvalidAccountID", "InvalidPassword", "ChallengeResponseFailed", "FailedACL"})


# --------------------------------------------------------------------------------------------------------
# dispatch

_TYPED: tuple[type[AmiEvent], ...] = (
    FullyBooted, Shutdown, Newchannel, Hangup, Newstate, DialBegin, DialEnd, BridgeEnter, BridgeLeave,
    Hold, Unhold, QueueCallerJoin, QueueCallerLeave, QueueCallerAbandon, AgentCalled, AgentConnect,
    AgentComplete, AgentRingNoAnswer, AgentDump, QueueMemberAdded, QueueMemberRemoved, QueueMemberPause,
    QueueMemberStatus, QueueMember, QueueEntry, CoreShowChannel, MixMonitorStart, MixMonitorStop, MixMonitorMute,
    UserEvent, BlindTransfer,
    AttendedTransfer, ContactStatus, PeerStatus, DeviceStateChange, OriginateResponse,
    InvalidAccountID, InvalidPassword, ChallengeResponseFailed, FailedACL, ChallengeSent, SuccessfulAuth,
)

#: Event name -> typed class.
TYPED_EVENTS: Mapping[str, type[AmiEvent]] = MappingProxyType({c.__name__: c for c in _TYPED})
_TYPED_LOWER: dict[str, type[AmiEvent]] = {k.lower(): v for k, v in TYPED_EVENTS.items()}

_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(AmiEvent))
_Spec = tuple[tuple[str, tuple[str, ...], _Converter], ...]
_SPECS: dict[type[AmiEvent], _Spec] = {
    cls: tuple(
        (f.name, f.metadata["ami"], f.metadata["conv"])
        for f in dataclasses.fields(cls)
        if f.name not in _BASE_FIELDS
    )
    for cls in _TYPED
}


def parse_event(frame: Mapping[str, str], received_at: float) -> AmiEvent:
    """Frame -> typed event (by ``Event`` name) or generic :class:`AmiEvent`. Never raises."""
    try:
        rx = float(received_at)
        if not math.isfinite(rx):
            rx = time.time()
    except (TypeError, ValueError):
        rx = time.time()
    fields = _sanitize(frame)
    name = event_name(fields)
    lower = _Lower(fields)
    ts = _timestamp(_lookup(fields, lower, ("Timestamp",)), rx)
    proxy = MappingProxyType(fields)
    cls = TYPED_EVENTS.get(name) or _TYPED_LOWER.get(name.lower())
    if cls is not None:
        try:
            kwargs: dict[str, Any] = {}
            for attr, headers, conv in _SPECS[cls]:
                try:
                    kwargs[attr] = conv(_lookup(fields, lower, headers))
                except Exception:
                    kwargs[attr] = None
            return cls(name=name, fields=proxy, timestamp=ts, received_at=rx, **kwargs)
        except Exception:  # pragma: no cover - defensive: a typed class must never cost us the event
            pass
    return AmiEvent(name=name, fields=proxy, timestamp=ts, received_at=rx)

