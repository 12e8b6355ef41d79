"""Live state of the PBX as the service sees it: channels up and queue members, fed by typed AMI events.

Why here: the data flows one way (AMI → typed events → live state → API). After every AMI (re)connect the
state is rebuilt from Asterisk's own view (CoreShowChannels, QueueStatus), since events sent while the
service was disconnected are lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from telephony.ami.events import AmiEvent


@dataclass
class ChannelInfo:
    uniqueid: str
    linkedid: str | None
    channel: str | None
    caller: str | None
    state: str | None


@dataclass
class LiveState:
    ami_connected: bool = False
    channels: dict[str, ChannelInfo] = field(default_factory=dict)
    members: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    last_event_ts: float | None = None

    def apply(self, ev: AmiEvent) -> None:
        """Fold one event into the state. Unknown events are ignored."""
        name = ev.name
        f = ev.fields
        if name == "AmiConnected":
            self.ami_connected = True
            return
        if name == "AmiDisconnected":
            self.ami_connected = False
            return
        self.last_event_ts = ev.timestamp
        uid = ev.uniqueid
        if name in ("Newchannel", "Newstate", "CoreShowChannel") and uid:
            self.channels[uid] = ChannelInfo(uid, ev.linkedid, ev.channel, f.get("CallerIDNum"),
                                             f.get("ChannelStateDesc"))
        elif name == "Hangup" and uid:
            self.channels.pop(uid, None)
        elif name in ("QueueMemberAdded", "QueueMember", "QueueMemberStatus", "QueueMemberPause"):
            queue = f.get("Queue")
            iface = f.get("Interface") or f.get("Location") or f.get("StateInterface")
            if queue and iface:
                self.members[(queue, iface)] = dict(f)
        elif name == "QueueMemberRemoved":
            queue = f.get("Queue")
            iface = f.get("Interface") or f.get("Location")
            if queue and iface:
                self.members.pop((queue, iface), None)

    def reset_from(self, channels: list[AmiEvent], members: list[AmiEvent]) -> None:
        """Replace the state with Asterisk's current view (resync after a reconnect)."""
        self.channels.clear()
        self.members.clear()
        for ev in [*channels, *members]:
            self.apply(ev)

    def snapshot(self) -> dict[str, Any]:
        return {
            "ami_connected": self.ami_connected,
            "channels": [vars(c) for c in self.channels.values()],
            "queue_members": [
                {"queue": q, "interface": i, "status": m.get("Status"), "paused": m.get("Paused") == "1"}
                for (q, i), m in sorted(self.members.items())
            ],
            "last_event_ts": self.last_event_ts,
        }
