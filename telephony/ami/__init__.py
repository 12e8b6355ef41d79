"""Hardened AMI layer: the only package that imports panoramisk.

- :mod:`.events`: typed event dataclasses, the one place that knows AMI header names;
- :mod:`.protocol`: panoramisk's protocol with whole-frame UTF-8 decoding, isolated parse errors, ordered
  event delivery and no action re-sends;
- :mod:`.client`: :class:`AmiClient`, its own connect / login / FullyBooted / heartbeat / reconnect loop
  with a bounded, ordered, lossless event queue.

``Message`` (panoramisk's reply type) is re-exported so other packages can type replies without importing
panoramisk.
"""

from .client import AmiClient, message_to_event
from .events import NOISE_EVENTS, SYNTHETIC_EVENTS, AmiEvent, is_noise, parse_event
from .protocol import AmiActionError, AmiConnectionLost, AmiError, AmiNotConnected, AmiTimeout, Message

__all__ = [
    "NOISE_EVENTS",
    "SYNTHETIC_EVENTS",
    "AmiActionError",
    "AmiClient",
    "AmiConnectionLost",
    "AmiError",
    "AmiEvent",
    "AmiNotConnected",
    "AmiTimeout",
    "Message",
    "is_noise",
    "message_to_event",
    "parse_event",
]
