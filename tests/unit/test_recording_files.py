"""Recording files: only bare names ever reach the file system, a file counts as finished only once Asterisk wrote
its RIFF sizes, and the measurement (size, duration, SHA-256) matches the bytes. WAVs are written by hand here
(no PBX), the way format_wav leaves them while recording and after closing."""

from __future__ import annotations

import hashlib
import struct
import wave
from pathlib import Path

import pytest

from recording import files
from recording.files import UnsafeName


def write_closed_wav(path: Path, frames: int, rate: int = 8000) -> None:
    """A finished 16-bit mono WAV (the wave module writes the sizes on close)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * frames)


def write_open_wav(path: Path, data_bytes: int, rate: int = 8000) -> None:
    """What format_wav leaves on disk while still recording: a 44-byte header whose RIFF and data sizes are 0."""
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 0, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16,
                         b"data", 0)
    assert len(header) == files.WAV_HEADER
    path.write_bytes(header + b"\x00" * data_bytes)


@pytest.mark.parametrize("name", [
    "1732370000.12.wav", "1732370000.12-ab12cd34.wav", "call.wav", "A_b-c.wav", "x" * 120 + ".wav"])
def test_safe_name_accepts_bare_recording_names(name: str) -> None:
    assert files.safe_name(name) == name


@pytest.mark.parametrize("name", [
    "../etc/passwd.wav", "a/b.wav", "/abs.wav", "sub\\x.wav", "a..b.wav", "..wav", ".hidden.wav", "-x.wav",
    "x.mp3", "x.wav.txt", "x.WAV", "", ".wav", "x y.wav", "x;rm.wav", "x$(id).wav", "é.wav", "x\x00.wav",
    "x.wav\n", "x\n.wav", "x" * 121 + ".wav"])
def test_safe_name_refuses_paths_dots_and_odd_characters(name: str) -> None:
    with pytest.raises(UnsafeName):
        files.safe_name(name)


def test_name_for_is_the_uniqueid_plus_an_optional_suffix() -> None:
    assert files.name_for("1732370000.12") == "1732370000.12.wav"
    assert files.name_for("1732370000.12", "ab12cd34") == "1732370000.12-ab12cd34.wav"
    assert files.name_for("1732370000.12;rm -rf x/y") == "1732370000.12rm-rfxy.wav"  # odd characters dropped
    assert files.name_for("") == "call.wav" and files.name_for("///") == "call.wav"
    assert len(files.name_for("9" * 300)) == 100 + len(".wav")


def test_name_for_never_yields_a_path() -> None:
    # After the odd characters are dropped, what is left must still be a bare name, or it is refused.
    for raw in ("../../etc/passwd", "..", ".profile"):
        with pytest.raises(UnsafeName):
            files.name_for(raw)


def test_wav_closed_only_once_the_sizes_are_written(tmp_path: Path) -> None:
    path = tmp_path / "1.1.wav"
    assert not files.wav_closed(path)  # not there yet
    write_open_wav(path, 1600)
    assert not files.wav_closed(path)  # header written, sizes still 0: Asterisk is recording
    write_closed_wav(path, 800)
    assert files.wav_closed(path)
    with path.open("ab") as fh:  # grew after the sizes were written: not the closed file any more
        fh.write(b"\x00\x00")
    assert not files.wav_closed(path)


def test_wav_closed_for_a_closed_empty_file_but_not_an_open_header_or_not_a_wav(tmp_path: Path) -> None:
    # Stopped before the first frame was written (a supervisor's stop right after the answer): closed, 0 s.
    empty = tmp_path / "empty.wav"
    write_closed_wav(empty, 0)
    assert files.wav_closed(empty) and files.measure(empty).duration_s == 0
    opened = tmp_path / "open.wav"
    write_open_wav(opened, 0)  # the same 44 bytes while Asterisk still records: sizes 0
    assert not files.wav_closed(opened)
    short = tmp_path / "short.wav"
    short.write_bytes(b"RIFF")
    assert not files.wav_closed(short)
    other = tmp_path / "other.wav"
    other.write_bytes(b"RIFX" + b"\x00" * 60)
    assert not files.wav_closed(other)


@pytest.mark.parametrize(("rate", "frames", "seconds"), [(8000, 8000, 1.0), (8000, 12345, 1.543), (16000, 8000, 0.5)])
def test_measure_matches_the_bytes(tmp_path: Path, rate: int, frames: int, seconds: float) -> None:
    path = tmp_path / "m.wav"
    write_closed_wav(path, frames, rate)
    m = files.measure(path)
    raw = path.read_bytes()
    assert m.size_bytes == len(raw) == files.WAV_HEADER + 2 * frames
    assert m.duration_s == pytest.approx(seconds, abs=1e-3)
    assert m.sha256 == hashlib.sha256(raw).hexdigest()


@pytest.mark.asyncio
async def test_wait_closed_returns_once_the_file_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "w.wav"
    write_open_wav(path, 160)
    assert not await files.wait_closed(path, timeout=0.05, interval=0.01)
    write_closed_wav(path, 160)
    assert await files.wait_closed(path, timeout=1.0, interval=0.01)


def test_delete_removes_only_bare_names(tmp_path: Path) -> None:
    write_closed_wav(tmp_path / "d.wav", 10)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.wav"
    write_closed_wav(outside, 10)
    assert files.delete(tmp_path, "d.wav") is True
    assert files.delete(tmp_path, "d.wav") is False  # already gone
    with pytest.raises(UnsafeName):
        files.delete(tmp_path, f"../{outside.name}")
    assert outside.exists()
    outside.unlink()
