"""AMI event → stored event: the one place that decides what of an event the store keeps."""

from __future__ import annotations

from reporting.event_store import StoredEvent
from telephony.ami import SYNTHETIC_EVENTS, AmiEvent

SYNTHETIC = SYNTHETIC_EVENTS
"""Events the AMI client makes up about its own connection: live state only, never stored as call events."""


def to_stored(ev: AmiEvent, node: str) -> StoredEvent:
    return StoredEvent(
        node=node,
        event_key=ev.key(node),
        name=ev.name,
        ts=ev.timestamp,
        received_at=ev.received_at,
        uniqueid=ev.uniqueid,
        linkedid=ev.linkedid,
        queue=ev.queue,
        fields=dict(ev.fields),
    )
