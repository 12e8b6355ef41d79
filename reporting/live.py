"""Live state of the PBX as the service sees it: channels up and queue members, fed by typed AMI events.

Why here: the data flows one way (AMI → typed events → live state → API). After every AMI (re)connect the
state is rebuilt from Asterisk's own view (CoreShowChannels, QueueStatus), since events sent while the
service was disconnected are lost. Only typed attributes are read: header names live in telephony.ami.events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from telephony.ami.events import (
    AmiEvent,
    CoreShowChannel,
    Hangup,
    Newchannel,
    Newstate,
    QueueMember,
    QueueMemberAdded,
    QueueMemberPause,
    QueueMemberRemoved,
    QueueMemberStatus,
)


@dataclass
class ChannelInfo:
    uniqueid: str
    linkedid: str | None
    channel: str | None
    caller: str | None
    state: str | None


@dataclass
class MemberInfo:
    queue: str
    interface: str
    name: str | None
    status: int | None
    paused: bool


@dataclass
class LiveState:
    ami_connected: bool = False
    channels: dict[str, ChannelInfo] = field(default_factory=dict)
    members: dict[tuple[str, str], MemberInfo] = field(default_factory=dict)
    last_event_ts: float | None = None

    def apply(self, ev: AmiEvent) -> None:
        """Fold one event into the state. Events of no interest are ignored."""
        if ev.synthetic:
            self.ami_connected = ev.name == "AmiConnected"
            return
        self.last_event_ts = ev.timestamp
        if isinstance(ev, Newchannel | Newstate | CoreShowChannel) and ev.uniqueid:
            self.channels[ev.uniqueid] = ChannelInfo(ev.uniqueid, ev.linkedid, ev.channel, ev.caller_id_num,
                                                     ev.state_desc)
        elif isinstance(ev, Hangup) and ev.uniqueid:
            self.channels.pop(ev.uniqueid, None)
        elif isinstance(ev, QueueMemberRemoved):
            if ev.queue and ev.interface:
                self.members.pop((ev.queue, ev.interface), None)
        elif isinstance(ev, QueueMemberAdded | QueueMember | QueueMemberStatus | QueueMemberPause):
            if ev.queue and ev.interface:
                self.members[(ev.queue, ev.interface)] = MemberInfo(
                    ev.queue, ev.interface, ev.member_name, ev.status, bool(ev.paused))

    def reset_from(self, channels: Sequence[AmiEvent], members: Sequence[AmiEvent]) -> None:
        """Replace the state with Asterisk's current view (resync after a reconnect)."""
        self.channels.clear()
        self.members.clear()
        for ev in [*channels, *members]:
            self.apply(ev)

    def snapshot(self) -> dict[str, Any]:
        return {
            "ami_connected": self.ami_connected,
            "channels": [asdict(c) for c in self.channels.values()],
            "queue_members": [asdict(m) for _, m in sorted(self.members.items())],
            "last_event_ts": self.last_event_ts,
        }
