"""Uploaded IVR prompts: WAV or MP3 in, 8 kHz 16-bit mono WAV out, stored where the PBX can play them.

The folder is the instance's spool `prompts/` folder, which Asterisk sees as /var/spool/asterisk/prompts (the
spool is bind-mounted there). A flow names an upload as `custom/<name>`; ivr/executor.py maps that name to the
PBX path. The audio format is taken from the bytes (RIFF/WAVE, or MP3 by an ID3 tag or a frame sync), never from
a file name the user gave; `sox` converts it, run without a shell and under a timeout, and the result replaces
any earlier prompt of that name atomically (temp name, then rename), so a call never plays half a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_BYTES = 10 * 1024 * 1024
CONVERT_TIMEOUT_S = 30.0
PBX_FOLDER = "/var/spool/asterisk/prompts"
PromptList = list[dict[str, Any]]


class PromptError(ValueError):
    """A refused upload or a missing prompt; ``status`` is the HTTP status, ``code`` the JSON error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise PromptError(422, "invalid_name", "name: 1-64 lower-case letters, digits, '_' or '-' (first a letter "
                                               "or digit)")
    return name


def sniff(data: bytes) -> str | None:
    """``"wav"``, ``"mp3"`` or ``None``, from the first bytes only."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3":
        return "mp3"
    # MPEG audio frame sync: 11 set bits; layer bits != 00, bitrate index != 1111, sample rate index != 11.
    if len(data) >= 4 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0 and data[1] & 0x06 != 0 \
            and data[2] & 0xF0 != 0xF0 and data[2] & 0x0C != 0x0C:
        return "mp3"
    return None


def wav_info(path: Path) -> tuple[float, int, int]:
    """(duration in seconds, sample rate, channels) from a PCM WAV header."""
    with path.open("rb") as f:
        head = f.read(64 * 1024)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    pos, rate, channels, bits, size = 12, 0, 0, 0, 0
    total = path.stat().st_size
    while pos + 8 <= len(head):
        cid = head[pos:pos + 4]
        csize = struct.unpack_from("<I", head, pos + 4)[0]
        if cid == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", head, pos + 8)
        elif cid == b"data":
            size = min(csize, total - pos - 8)
            break
        pos += 8 + csize + (csize & 1)
    if not rate or not channels or not bits:
        raise ValueError("WAV header has no fmt chunk")
    return size / (rate * channels * (bits // 8)), rate, channels


def _cleanup(work: Path, tmp: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


class PromptStore:
    def __init__(self, folder: Path, *, sox: str = "sox", timeout_s: float = CONVERT_TIMEOUT_S) -> None:
        self.folder = folder
        self.sox = sox
        self.timeout_s = timeout_s

    def _path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.wav"

    @staticmethod
    def path_in_pbx(name: str) -> str:
        return f"{PBX_FOLDER}/{check_name(name)}"

    async def save(self, name: str, data: bytes) -> dict[str, Any]:
        target = self._path(name)
        if len(data) > MAX_BYTES:
            raise PromptError(413, "too_large", f"a prompt may be at most {MAX_BYTES // (1024 * 1024)} MB")
        kind = sniff(data)
        if kind is None:
            raise PromptError(422, "unsupported_format", "the upload is neither a WAV (RIFF/WAVE) nor an MP3 file")
        work, src, tmp = await asyncio.to_thread(self._stage, name, kind, data)
        try:
            await self._convert(src, kind, tmp)
            return await asyncio.to_thread(self._install, name, tmp, target)
        finally:
            await asyncio.to_thread(_cleanup, work, tmp)

    def _stage(self, name: str, kind: str, data: bytes) -> tuple[Path, Path, Path]:
        """A private (0700) folder holding the raw upload, and an empty temp file beside the target."""
        self.folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="prompt-"))
        src = work / f"upload.{kind}"
        src.write_bytes(data)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".wav", dir=self.folder)
        os.close(fd)
        return work, src, Path(tmp_name)

    @staticmethod
    def _install(name: str, tmp: Path, target: Path) -> dict[str, Any]:
        try:
            duration, rate, channels = wav_info(tmp)
        except (ValueError, struct.error, OSError) as exc:
            raise PromptError(422, "unreadable_audio", f"the converted prompt is not usable: {exc}") from None
        if rate != 8000 or channels != 1 or duration <= 0:
            raise PromptError(422, "unreadable_audio", "the upload holds no audio")
        tmp.chmod(0o644)  # the PBX reads it
        os.replace(tmp, target)  # atomic: a call plays the old or the new prompt, never half of one
        return {"name": name, "duration_s": round(duration, 3), "size": target.stat().st_size}

    async def _convert(self, src: Path, kind: str, out: Path) -> None:
        argv = [self.sox, "-q", "-t", kind, str(src), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
                "-t", "wav", str(out)]
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError:
            raise PromptError(503, "converter_missing", "sox is not installed on the server") from None
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise PromptError(422, "unreadable_audio", "converting the upload took too long") from None
        if proc.returncode != 0:
            detail = err.decode("utf-8", "replace").strip().splitlines()
            reason = detail[-1][:200] if detail else f"sox exited with {proc.returncode}"
            if kind == "mp3" and "no handler" in reason.lower():
                raise PromptError(422, "unsupported_format", "MP3 is not supported on this server "
                                                            "(install libsox-fmt-mp3); upload a WAV file")
            raise PromptError(422, "unreadable_audio", f"the audio could not be read: {reason}")

    async def list(self) -> PromptList:
        return await asyncio.to_thread(self._list)

    def _list(self) -> PromptList:
        out: PromptList = []
        if not self.folder.is_dir():
            return out
        for p in sorted(self.folder.glob("*.wav")):
            if not NAME_RE.match(p.stem):
                continue  # temp files (".name.xxx.wav") and anything else not ours
            try:
                duration = wav_info(p)[0]
                out.append({"name": p.stem, "duration_s": round(duration, 3), "size": p.stat().st_size})
            except (ValueError, struct.error, OSError):
                continue
        return out

    async def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            raise PromptError(404, "not_found", f"no prompt {name!r}") from None
