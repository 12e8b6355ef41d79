"""Tone synthesis and Goertzel detection (stdlib only, no SIP)."""

from __future__ import annotations

import struct
import time
import wave
from pathlib import Path

import pytest

from sim.tones import (
    detect_tone,
    goertzel_power,
    loud_share,
    read_wav,
    rms_profile,
    synth_samples,
    write_silence_wav,
    write_tone_wav,
    write_wav,
)


def test_tone_detected_at_its_frequency_only(tmp_path: Path) -> None:
    wav = write_tone_wav(tmp_path / "a.wav", 440, 2.0)
    hit = detect_tone(wav, 440)
    assert hit.detected and hit.share > 0.95
    assert hit.frames == 40  # 2 s / 50 ms
    assert 0.3 < hit.rms < 0.4  # 0.5 peak sine -> 0.354 RMS
    miss = detect_tone(wav, 1000)
    assert not miss.detected and miss.frames_with_tone == 0
    assert not detect_tone(wav, 480)  # a neighbour two bins away is not confused with it


def test_silence_is_not_a_tone(tmp_path: Path) -> None:
    wav = write_silence_wav(tmp_path / "s.wav", 1.0)
    assert not detect_tone(wav, 440)
    assert max(rms_profile(wav)) == 0.0
    assert loud_share(rms_profile(wav)) == 0.0


def test_quiet_tone_below_floor_is_ignored() -> None:
    quiet = synth_samples(440, 1.0, amplitude=0.005)
    assert not detect_tone(quiet, 440)
    assert detect_tone(quiet, 440, rms_floor=0.001)


def test_mixture_detects_both(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "mix.wav", synth_samples([440, 1000], 2.0, amplitude=0.8))
    assert detect_tone(wav, 440).share > 0.9
    assert detect_tone(wav, 1000).share > 0.9
    assert not detect_tone(wav, 700)


def test_samples_and_16k_file(tmp_path: Path) -> None:
    samples = synth_samples(1000, 1.0, rate=16000)
    assert detect_tone(samples, 1000, rate=16000)
    wav = write_tone_wav(tmp_path / "w.wav", 1000, 1.0, rate=16000)
    data, rate = read_wav(wav)
    assert rate == 16000 and len(data) == 16000
    assert detect_tone(wav, 1000)  # the file's own rate is used
    assert goertzel_power(samples[:800], 16000, 1000) == pytest.approx(1.0, abs=0.02)


def test_long_tone_is_fast_and_exact(tmp_path: Path) -> None:
    t0 = time.monotonic()
    wav = write_tone_wav(tmp_path / "long.wav", 1000, 600.0)
    assert time.monotonic() - t0 < 5
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (
            8000,
            1,
            2,
            4_800_000,
        )
    # The repeated block keeps phase: the very end is still one clean tone.
    data, _ = read_wav(wav)
    assert detect_tone(data[-8000:], 1000).share == 1.0


def test_read_unfinished_recording(tmp_path: Path) -> None:
    """A WAV whose header still says 0 data bytes (libsndfile before close) is read to the end of file."""
    wav = write_tone_wav(tmp_path / "t.wav", 440, 0.5)
    raw = bytearray(wav.read_bytes())
    idx = raw.index(b"data")
    struct.pack_into("<I", raw, idx + 4, 0)
    (tmp_path / "open.wav").write_bytes(bytes(raw))
    data, rate = read_wav(tmp_path / "open.wav")
    assert rate == 8000 and len(data) == 4000


def test_read_rejects_non_wav(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"not a wav at all")
    with pytest.raises(ValueError):
        read_wav(tmp_path / "x.wav")
