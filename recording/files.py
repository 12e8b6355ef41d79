"""Recording files in the PBX's monitor folder: safe names, measurement once Asterisk closed them, deletion.

Why a module of its own: a file name is the one thing here that touches the file system, so every name is
checked against one pattern (a bare name, never a path) before it is opened, measured, served or deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}\.wav$")
WAV_HEADER = 44


class UnsafeName(ValueError):
    """A file name that is not a bare recording name (a path, or characters we never generate)."""


@dataclass(frozen=True)
class Measured:
    size_bytes: int
    duration_s: float
    sha256: str


def safe_name(name: str) -> str:
    if not FILE_NAME.fullmatch(name) or ".." in name:
        raise UnsafeName(f"not a recording file name: {name!r}")
    return name


def name_for(uniqueid: str, suffix: str = "") -> str:
    """The file name of a channel's recording: Asterisk's Uniqueid (what app_queue uses), plus a suffix for
    an on-demand recording. Anything but letters, digits, '.', '-' and '_' is dropped."""
    base = re.sub(r"[^A-Za-z0-9._-]", "", uniqueid)[:100] or "call"
    return safe_name(f"{base}{'-' + suffix if suffix else ''}.wav")


def wav_closed(path: Path) -> bool:
    """Asterisk writes the RIFF sizes when it closes the file: until then the header says 0 bytes. A file closed
    with no audio in it (stopped before the first frame was written) is closed too: RIFF size 36, 44 bytes."""
    try:
        with path.open("rb") as fh:
            head = fh.read(WAV_HEADER)
        size = path.stat().st_size
    except OSError:
        return False
    if len(head) < WAV_HEADER or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    riff_size = struct.unpack_from("<I", head, 4)[0]
    return riff_size == size - 8 and size >= WAV_HEADER


def measure(path: Path) -> Measured:
    """Size, duration (8 kHz 16-bit mono as format_wav writes it; rate read from the header) and SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        head = fh.read(WAV_HEADER)
        digest.update(head)
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    size = path.stat().st_size
    byte_rate = struct.unpack_from("<I", head, 28)[0] if len(head) >= 32 else 16000
    duration = max(0, size - WAV_HEADER) / (byte_rate or 16000)
    return Measured(size, round(duration, 3), digest.hexdigest())


async def wait_closed(path: Path, timeout: float = 5.0, interval: float = 0.1) -> bool:
    """Poll until Asterisk closed the file (there is no event for it: MixMonitorStop is not sent on hangup)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if wav_closed(path):
            return True
        await asyncio.sleep(interval)
    return wav_closed(path)


def delete(folder: Path, name: str) -> bool:
    """Delete one recording file; True if it was there."""
    path = folder / safe_name(name)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
