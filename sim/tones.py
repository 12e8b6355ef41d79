"""Tone files and audio proof: make a WAV tone, then prove it (or silence) reached the other side.

Every simulated party plays its own sine tone; what a phone *received* is checked with a Goertzel filter at
each party's frequency. That tells "the caller heard the agent and not itself" without speech recognition and
with the standard library only (a 10 s, 8 kHz recording is analysed in well under a second).

WAV reading is done by a small RIFF parser rather than :mod:`wave` because baresip's ``sndfile`` recordings
can be read while still open (libsndfile fixes the data size in the header only on close) and because
WAVE_FORMAT_EXTENSIBLE headers are refused by ``wave`` before Python 3.12.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ToneReport",
    "detect_tone",
    "goertzel_power",
    "loud_share",
    "read_wav",
    "rms",
    "rms_profile",
    "synth_samples",
    "write_silence_wav",
    "write_tone_wav",
    "write_wav",
]

#: RMS (full scale = 1.0) below which a frame counts as silence: -40 dBFS. G.711 idle noise is far below.
DEFAULT_RMS_FLOOR = 0.01
#: Share of a frame's energy that must sit at the probed frequency. A lone tone scores ~0.95-1.0 even after
#: G.711 and resampling; two equal tones mixed score ~0.5 each, three ~0.33, so 0.25 still finds every party
#: of a three-way mix while a neighbouring tone (leakage) stays far below it.
DEFAULT_MIN_RATIO = 0.25

_FULL_SCALE = 32768.0


@dataclass(frozen=True)
class ToneReport:
    """Result of :func:`detect_tone`: how many analysis frames carried the tone.

    ``share`` is ``frames_with_tone / frames`` (0.0 when there are no frames); ``rms`` is the RMS of the whole
    signal (full scale 1.0); ``detected`` is ``share >= min_share`` as asked by the caller.
    """

    freq: float
    frames: int
    frames_with_tone: int
    share: float
    rms: float
    detected: bool

    def __bool__(self) -> bool:  # lets tests write ``assert detect_tone(...)``
        return self.detected


# --------------------------------------------------------------------------------------------- writing


def synth_samples(
    freqs: float | Sequence[float], seconds: float, *, rate: int = 8000, amplitude: float = 0.5
) -> list[float]:
    """Samples (full scale 1.0) of one tone or several tones mixed; ``amplitude`` is the peak of the sum."""
    fs = [float(freqs)] if isinstance(freqs, int | float) else [float(f) for f in freqs]
    n = round(seconds * rate)
    if not fs:
        return [0.0] * n
    per = amplitude / len(fs)
    steps = [2.0 * math.pi * f / rate for f in fs]
    return [per * sum(math.sin(s * i) for s in steps) for i in range(n)]


def write_wav(path: str | os.PathLike[str], samples: Sequence[float], *, rate: int = 8000) -> Path:
    """Write 16-bit mono PCM; samples are clipped to [-1, 1]."""
    p = Path(path)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(_pack(samples))
    return p


def write_tone_wav(
    path: str | os.PathLike[str],
    freq_hz: float,
    seconds: float,
    rate: int = 8000,
    amplitude: float = 0.5,
) -> Path:
    """Write a 16-bit mono sine tone.

    Long files (baresip's source must outlast every call: 600 s = 9.6 MB) are made fast by computing one exact
    period block and repeating it when the frequency is a whole number of Hz; the file is written to a
    temporary name and renamed so a concurrent reader never sees half a file.
    """
    p = Path(path)
    total = round(seconds * rate)
    block: bytes
    if float(freq_hz).is_integer() and freq_hz > 0:
        period = rate // math.gcd(rate, int(freq_hz))  # samples after which the sine repeats exactly
        reps = max(1, 4000 // period)
        block = _pack(synth_samples(freq_hz, period * reps / rate, rate=rate, amplitude=amplitude))
    else:
        block = _pack(synth_samples(freq_hz, seconds, rate=rate, amplitude=amplitude))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        remaining = total * 2
        while remaining > 0:
            chunk = block[:remaining]
            w.writeframes(chunk)
            remaining -= len(chunk)
    os.replace(tmp, p)
    return p


def write_silence_wav(path: str | os.PathLike[str], seconds: float, rate: int = 8000) -> Path:
    """Write 16-bit mono digital silence."""
    p = Path(path)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * round(seconds * rate))
    return p


def _pack(samples: Sequence[float]) -> bytes:
    ints = [max(-32768, min(32767, round(s * 32767.0))) for s in samples]
    return struct.pack(f"<{len(ints)}h", *ints)


# --------------------------------------------------------------------------------------------- reading


def read_wav(path: str | os.PathLike[str]) -> tuple[list[float], int]:
    """Return (samples full scale 1.0, sample rate) of a 16-bit PCM mono WAV (8 or 16 kHz or any other rate).

    Tolerates a data chunk whose declared size is 0 or runs past the end of the file (a recording still being
    written): then everything after the chunk header is taken. Stereo files are mixed down to mono.
    """
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None  # (format tag, channels, rate, bits)
    pcm: bytes | None = None
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == 0xFFFE and size >= 40:  # WAVE_FORMAT_EXTENSIBLE: real tag in the sub-format GUID
                tag = struct.unpack_from("<H", data, body + 24)[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            end = len(data) if size in (0, 0xFFFFFFFF) or body + size > len(data) else body + size
            pcm = data[body:end]
            break
        pos = body + size + (size & 1)
    if fmt is None or pcm is None:
        raise ValueError(f"{path}: missing fmt or data chunk")
    tag, channels, rate, bits = fmt
    if tag != 1 or bits != 16 or channels < 1:
        raise ValueError(f"{path}: only 16-bit PCM is supported (format {tag}, {bits} bits)")
    frame_bytes = 2 * channels
    usable = len(pcm) - len(pcm) % frame_bytes
    ints = struct.unpack(f"<{usable // 2}h", pcm[:usable])
    if channels == 1:
        return [v / _FULL_SCALE for v in ints], rate
    return [
        sum(ints[i : i + channels]) / (channels * _FULL_SCALE) for i in range(0, len(ints), channels)
    ], rate


# --------------------------------------------------------------------------------------------- analysis


def goertzel_power(samples: Sequence[float], rate: int, freq: float) -> float:
    """Share of the block's energy found at ``freq`` (about 1.0 for a pure tone at ``freq``, 0.0 for silence).

    Generalised Goertzel (any frequency, not only bin centres): |X(f)|^2 scaled by 2 / (N * sum(x^2)), which
    is the fraction of the signal's power carried by a sinusoid at ``freq``. The bandwidth is about rate/N,
    so a 50 ms frame resolves tones ~20 Hz apart.
    """
    n = len(samples)
    if n == 0:
        return 0.0
    energy = math.fsum(x * x for x in samples)
    if energy <= 0.0:
        return 0.0
    w = 2.0 * math.pi * freq / rate
    coeff = 2.0 * math.cos(w)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2 = s1
        s1 = s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return max(0.0, 2.0 * power / (n * energy))


def rms(samples: Sequence[float]) -> float:
    """Root mean square (full scale 1.0)."""
    if not samples:
        return 0.0
    return math.sqrt(math.fsum(x * x for x in samples) / len(samples))


def _load(
    path_or_samples: str | os.PathLike[str] | Sequence[float], rate: int
) -> tuple[Sequence[float], int]:
    if isinstance(path_or_samples, str | os.PathLike):
        return read_wav(path_or_samples)
    return path_or_samples, rate


def _frames(samples: Sequence[float], rate: int, frame_ms: int) -> list[Sequence[float]]:
    size = max(1, rate * frame_ms // 1000)
    return [samples[i : i + size] for i in range(0, len(samples) - size + 1, size)]


def detect_tone(
    path_or_samples: str | os.PathLike[str] | Sequence[float],
    freq_hz: float,
    *,
    rate: int = 8000,
    frame_ms: int = 50,
    min_share: float = 0.3,
    min_ratio: float = DEFAULT_MIN_RATIO,
    rms_floor: float = DEFAULT_RMS_FLOOR,
) -> ToneReport:
    """Count the frames in which ``freq_hz`` dominates; ``detected`` when their share is >= ``min_share``.

    A frame "has the tone" when it is louder than ``rms_floor`` and at least ``min_ratio`` of its energy sits
    at ``freq_hz`` (see :func:`goertzel_power`). ``min_share`` defaults to 0.3 because a phone's recording
    also holds ring time, call set-up and the jitter-buffer fill before the other side's audio arrives.
    For a WAV path the file's own sample rate is used and ``rate`` is ignored.
    """
    samples, rate = _load(path_or_samples, rate)
    frames = _frames(samples, rate, frame_ms)
    hits = sum(1 for fr in frames if rms(fr) >= rms_floor and goertzel_power(fr, rate, freq_hz) >= min_ratio)
    share = hits / len(frames) if frames else 0.0
    return ToneReport(
        freq=float(freq_hz),
        frames=len(frames),
        frames_with_tone=hits,
        share=share,
        rms=rms(samples),
        detected=bool(frames) and share >= min_share,
    )


def rms_profile(
    path_or_samples: str | os.PathLike[str] | Sequence[float], frame_ms: int = 50, *, rate: int = 8000
) -> list[float]:
    """RMS of each consecutive ``frame_ms`` frame (full scale 1.0): silence checks, "when did audio start"."""
    samples, rate = _load(path_or_samples, rate)
    return [rms(fr) for fr in _frames(samples, rate, frame_ms)]


def loud_share(profile: Sequence[float], floor: float = DEFAULT_RMS_FLOOR) -> float:
    """Share of frames of an :func:`rms_profile` at or above ``floor`` (0.0 for an empty profile)."""
    if not profile:
        return 0.0
    return sum(1 for v in profile if v >= floor) / len(profile)
