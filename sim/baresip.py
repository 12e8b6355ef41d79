"""Real SIP phones for the simulator and the live tests: one baresip 1.0.0 process per phone, from asyncio.

Each :class:`BaresipPhone` runs ``baresip -f <short dir>`` headless (no ``stdio``/``cons`` UI module), plays a
sine tone as its microphone, records what it hears (``sndfile``), and is controlled over ``ctrl_tcp``:
netstring-framed JSON, ``{"command","params","token"}`` in, ``{"response":true,"ok":..,"data":..,"token":..}``
and ``{"event":true,"type":..}`` out. Every wait has a timeout; nothing here sleeps where an event can be
awaited.

Facts about Debian's baresip 1.0.0 this module relies on (measured on these machines):

* **Config keys.** ``sip_listen``, ``net_interface 127.0.0.1`` (the name ``lo`` fails: "could not get network
  address"), ``audio_source``/``audio_player``/``audio_alert`` as ``driver,device``,
  ``module``/``module_app``, ``ctrl_tcp_listen``, ``snd_path``, ``call_max_calls``, menu's ``statmode_default
  off`` (else a status line is printed ~10 times a second per call), ``ringback_disabled yes``. There is
  **no** ``sip_trans_def`` (later versions): UDP and TCP are always bound on the SIP port and **TLS on
  port+1**, so that port must be free too.
* **Player.** ``aufile`` is a *source* only in 1.0.0 and there is no null player; ``aubridge,nil`` (a bridge
  device with no matching source) accepts and discards the decoded audio. ``sndfile`` still sees the audio: it
  is a filter in the decode path, before the player.
* **Source.** ``aufile`` loads the whole WAV when the call starts and *ends the call* at end of file, so the
  tone file must outlast every call (600 s = 9.6 MB; files are cached per frequency and length in
  /tmp/bs-tones). ``ausine`` (``source="sine"``) is an endless alternative: it only runs at 48 kHz stereo
  (``ausrc_srate 48000``, ``ausrc_channels 2``; baresip resamples to 8 kHz mono) and takes whole Hz only.
* **Recordings.** ``sndfile`` writes ``<snd_path>/dump-YYYY-MM-DD-HH-MM-SS-dec.wav`` (what the phone
  *received*, decoded, 8 kHz 16-bit mono for PCMU) and ``...-enc.wav`` (what it sent), one pair per call,
  named to the second: two calls starting in the same second on one phone overwrite each other. The WAV header
  is fixed on close; :func:`sim.tones.read_wav` also reads a file still open.
* **File names.** Device strings such as ``aufile,<path>`` live in 128-byte buffers: the config folder, tone
  and recording paths are kept short (``/tmp/bs-XXXXXXXX``; recordings reach the caller's workdir through a
  symlink).
* **Accounts.** The ``account`` module is not loaded; the account is created with ``uanew`` *after* the
  control connection is up, because events sent before it opened (``REGISTER_OK``) are lost. The Contact user
  is ``<user>-0x<pointer>`` (PJSIP must identify endpoints by username, not by Contact). ``regint=0`` disables
  REGISTER. A number without ``sip:`` is completed from the account: ``dial 2000`` sends INVITE
  ``sip:2000@<registrar>;transport=udp``.
* **Commands** (``help`` over ctrl_tcp; in-call ones appear only during a call): ``uanew``, ``dial``,
  ``accept``, ``hangup``, ``sndcode <digits>`` (RFC 4733, a whole string in one command), ``listcalls``,
  ``reginfo``, ``quit``. Unknown commands still answer ``ok: true`` with data ``command not found``.
  ``hangup`` without a call answers ok and emits nothing. ``dial``'s response carries no call id.
* **Events.** ``REGISTERING``, ``REGISTER_OK`` / ``REGISTER_FAIL`` (param ``"200 OK"`` / the failure),
  ``CALL_LOCAL_SDP`` (no ``id`` for an outgoing offer), ``CALL_RINGING`` (outgoing; sent even when the far end
  auto-answers), ``CALL_PROGRESS``, ``CALL_REMOTE_SDP``, ``CALL_ESTABLISHED``, ``CALL_RTPESTAB``,
  ``CALL_RTCP`` (periodic), ``CALL_DTMF_START`` (param = the digit), ``CALL_DTMF_END`` (no param),
  ``CALL_CLOSED`` (param = reason: ``"Connection reset by user"`` for our hang-up, ``"Connection reset by
  peer"``, ``"486 Busy Here"``...). With ``answermode=auto`` no ``CALL_INCOMING`` is sent. Call events carry
  ``id`` = the SIP Call-ID, ``direction`` and ``peeruri``.
  On ``quit``: ``UNREGISTERING`` (or ``SHUTDOWN``), then ``EXIT``.
* An INVITE is matched to the account by the request-URI user (AOR user or Contact user); others get 404. A
  phone already in ``call_max_calls`` calls answers ``486 Max Calls``.
* An INVITE to a dead port gets no event until SIP timer B (32 s): :meth:`BaresipPhone.dial` times out and
  hangs the attempt up itself.
* ``quit`` and SIGTERM both wait for pending SIP transactions (the un-REGISTER, a CANCEL to a dead peer): with
  the registrar gone baresip lingers for up to 32 s, so :meth:`BaresipPhone.stop` kills it after 3 s.
"""

# The API takes ``timeout=`` arguments on purpose (tests read better than nested asyncio.timeout blocks).

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import json
import logging
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from sim.tones import write_tone_wav

__all__ = [
    "BaresipError",
    "BaresipEvent",
    "BaresipPhone",
    "CallFailed",
    "baresip_available",
    "tone_file",
]

log = logging.getLogger(__name__)

BARESIP_BIN = "/usr/bin/baresip"
MODULE_PATH = "/usr/lib/baresip/modules"
TONE_CACHE = Path("/tmp/bs-tones")
#: baresip keeps device strings and file names in 128-byte buffers; stay well below.
_MAX_PATH = 100
#: Events kept per phone (CALL_RTCP arrives every few seconds for every call of a long-running simulator).
_EVENT_LOG_SIZE = 5000

_DTMF_RE = re.compile(r"^[0-9A-Da-d*#]+$")
_SAFE_PARAM = re.compile(r"^[^\s<>;]+$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9+._-]{1,64}$")

#: Ports this process handed to phones that are (or are about to be) running: the OS may return a just-closed
#: ephemeral port again, so phones started concurrently would otherwise collide.
_reserved_ports: set[int] = set()
_tone_lock = threading.Lock()


class BaresipError(RuntimeError):
    """baresip failed to start, exited, refused a command, or the control connection broke."""


class CallFailed(BaresipError):
    """An outgoing call ended before it was established; ``reason`` is baresip's CALL_CLOSED param."""

    def __init__(self, reason: str, event: BaresipEvent | None = None) -> None:
        super().__init__(f"call failed: {reason}")
        self.reason = reason
        self.event = event


@dataclass(frozen=True)
class BaresipEvent:
    """One ``ctrl_tcp`` event. ``seq`` numbers the phone's events from 0 (see :meth:`BaresipPhone.mark`)."""

    seq: int
    type: str
    at: float  # time.monotonic() when received
    raw: dict[str, Any] = field(repr=False)

    @property
    def call_id(self) -> str | None:
        """SIP Call-ID of the call the event is about (absent for registration and some SDP events)."""
        v = self.raw.get("id")
        return str(v) if v is not None else None

    @property
    def param(self) -> str:
        v = self.raw.get("param")
        return "" if v is None else str(v)

    @property
    def direction(self) -> str | None:
        v = self.raw.get("direction")
        return str(v) if v is not None else None

    @property
    def peer_uri(self) -> str | None:
        v = self.raw.get("peeruri")
        return str(v) if v is not None else None


EventPredicate = Callable[[BaresipEvent], bool]


def baresip_available(binary: str = BARESIP_BIN) -> bool:
    """True when the baresip binary and its modules are installed (tests skip otherwise)."""
    return (
        shutil.which(binary) is not None
        and Path(MODULE_PATH, "ctrl_tcp.so").exists()
        and Path(MODULE_PATH, "sndfile.so").exists()
    )


def tone_file(freq_hz: float, seconds: float, *, rate: int = 8000) -> Path:
    """A cached tone WAV under /tmp/bs-tones (short path; one 9.6 MB file per frequency, not per phone).

    Written atomically (temporary name + rename), so phones of several processes can share it.
    """
    TONE_CACHE.mkdir(parents=True, exist_ok=True)
    path = TONE_CACHE / f"{freq_hz:g}-{seconds:g}-{rate}.wav"
    expected = 44 + 2 * round(seconds * rate)
    with _tone_lock:  # phones started together in threads: write each file once
        if not path.exists() or path.stat().st_size != expected:
            write_tone_wav(path, freq_hz, seconds, rate=rate)
    return path


def _port_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_sip_port() -> int:
    """A port P with UDP P, TCP P and TCP P+1 free (baresip 1.0.0 always binds TCP, and TLS on P+1)."""
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535 or port in _reserved_ports or port + 1 in _reserved_ports:
            continue
        if _port_free(port, socket.SOCK_STREAM) and _port_free(port + 1, socket.SOCK_STREAM):
            _reserved_ports.update((port, port + 1))
            return port
    raise BaresipError("no free SIP port found")


def _pick_tcp_port() -> int:
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _reserved_ports:
            _reserved_ports.add(port)
            return port
    raise BaresipError("no free TCP port found")


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


class BaresipPhone:
    """One SIP phone = one baresip process, one call at a time.

    ``registrar`` is the PBX as ``host:port``; it is the domain of the account (AOR ``sip:user@registrar``),
    so numbers dialled without ``sip:`` go there. With ``registrar=None`` the AOR is the phone's own address
    (only for ``register=False``: phone-to-phone calls without a PBX). ``local_port``/``ctrl_port`` 0 pick
    free ports (and a start that loses a port race is retried). Artefacts go to ``workdir``: ``baresip.log``
    (baresip's output), ``ctrl.log`` (every command and event) and ``rec/`` (recordings).

    Event waiting: every event gets a sequence number. :meth:`wait_event` looks at events from ``since``
    (default: the phone's *cursor*) so an event that arrived before the wait began is still found. The cursor
    moves past every event a wait returns and up to the current position whenever :meth:`dial`,
    :meth:`answer` or :meth:`hangup` start, so the second call of a phone does not see the first call's
    events. Use :meth:`mark` + ``since=`` for explicit control.
    """

    def __init__(
        self,
        name: str,
        *,
        workdir: Path,
        sip_user: str,
        sip_password: str,
        registrar: str | None,
        tone_hz: float,
        local_port: int = 0,
        ctrl_port: int = 0,
        register: bool = True,
        auto_answer: bool = True,
        record: bool = True,
        regint: int = 300,
        max_calls: int = 1,
        source: Literal["file", "sine"] = "file",
        tone_seconds: float = 600.0,
        binary: str = BARESIP_BIN,
        from_user: str | None = None,
        answer_users: Iterable[str] = (),
    ) -> None:
        if register and not registrar:
            raise ValueError("register=True needs a registrar")
        if not _SAFE_PARAM.match(sip_user) or (sip_password and not _SAFE_PARAM.match(sip_password)):
            raise ValueError("sip_user/sip_password must not contain spaces, '<', '>' or ';'")
        answer_users = tuple(answer_users)
        if any(not _SAFE_USER.match(u) for u in (from_user or "x", *answer_users)):
            raise ValueError("from_user/answer_users: letters, digits and + - _ . only")
        if source == "sine" and not (float(tone_hz).is_integer() and 10 <= tone_hz <= 20000):
            raise ValueError("source='sine' takes a whole frequency between 10 and 20000 Hz")
        self.name = name
        self.workdir = Path(workdir)
        self.sip_user = sip_user
        #: The AOR's user (From header; a PBX shows it as the caller's number) when it is not the user name the
        #: phone authenticates with: the account then sends ``auth_user=<sip_user>``.
        self.from_user = from_user
        #: Further request-URI users this phone answers calls for (one unregistered account each): baresip
        #: matches an incoming INVITE to an account by that user (AOR or Contact user) and refuses others (404).
        #: E.g. a phone registered as the carrier trunk that stands for the customers the PBX calls through it
        #: (``PJSIP/<number>@<trunk>``). baresip's ``hangup``/``listcalls`` act on the current account only (the
        #: main one; measured: they do not see a call of these accounts), so such calls are ended by the far end.
        self.answer_users = answer_users
        self.sip_password = sip_password
        self.registrar = registrar
        self.tone_hz = tone_hz
        self.register = register
        self.auto_answer = auto_answer
        self.record = record
        self.regint = regint
        self.max_calls = max_calls
        self.source = source
        self.tone_seconds = tone_seconds
        self.binary = binary
        self._want_sip_port = local_port
        self._want_ctrl_port = ctrl_port
        self.sip_port = local_port
        self.ctrl_port = ctrl_port
        self._own_ports: list[int] = []

        self._confdir: Path | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._ctrl_log: Any = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._token = 0
        self._events: collections.deque[BaresipEvent] = collections.deque(maxlen=_EVENT_LOG_SIZE)
        self._next_seq = 0
        self._cursor = 0
        self._changed = asyncio.Event()
        self._dead: str | None = None  # why the control connection is unusable
        self._account_mark = 0
        self.in_call = False
        #: Events seen per type since construction (not capped like the event log): the simulator's tallies.
        self.event_counts: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------------------------------ properties

    @property
    def aor(self) -> str:
        """The account's address of record, e.g. ``sip:1001@127.0.0.1:5060``."""
        return f"sip:{self.from_user or self.sip_user}@{self.registrar or f'127.0.0.1:{self.sip_port}'}"

    @property
    def uri(self) -> str:
        """Where this phone itself can be called directly (no PBX): ``sip:user@127.0.0.1:<sip port>``."""
        return f"sip:{self.sip_user}@127.0.0.1:{self.sip_port}"

    @property
    def recordings_dir(self) -> Path:
        return self.workdir / "rec"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and self._dead is None

    @property
    def events(self) -> list[BaresipEvent]:
        """A copy of the retained event log (the last 5000 events)."""
        return list(self._events)

    def __repr__(self) -> str:
        return f"<BaresipPhone {self.name} {self.sip_user} sip={self.sip_port} ctrl={self.ctrl_port}>"

    async def __aenter__(self) -> BaresipPhone:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self, timeout: float = 10.0) -> None:
        """Write the config, start baresip, connect ``ctrl_tcp`` and create the account.

        With auto-picked ports a start that lost a port race (baresip exits, or ``ctrl_tcp`` reports the
        port in use) is retried with new ports, up to 3 times. Does not wait for registration: use
        :meth:`wait_registered`.
        """
        if self._proc is not None:
            raise BaresipError(f"{self.name}: already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.record:
            self.recordings_dir.mkdir(exist_ok=True)
        self._ctrl_log = (self.workdir / "ctrl.log").open("a", buffering=1, encoding="utf-8")
        deadline = time.monotonic() + timeout
        retries = 3 if (self._want_sip_port == 0 or self._want_ctrl_port == 0) else 1
        tone = None
        if self.source == "file":
            tone = await asyncio.to_thread(tone_file, self.tone_hz, self.tone_seconds)
        last: Exception | None = None
        for _attempt in range(retries):
            try:
                await self._start_once(tone, deadline)
                return
            except _PortClash as e:
                last = e
                log.info("%s: %s; retrying with other ports", self.name, e)
                await self._teardown()
            except BaseException:
                await self._teardown()
                self._close_ctrl_log()
                raise
        self._close_ctrl_log()
        raise BaresipError(f"{self.name}: could not start: {last}")

    async def _start_once(self, tone: Path | None, deadline: float) -> None:
        self.sip_port = self._want_sip_port or _pick_sip_port()
        self.ctrl_port = self._want_ctrl_port or _pick_tcp_port()
        self._own_ports = [p for p in (self.sip_port, self.sip_port + 1) if not self._want_sip_port]
        if not self._want_ctrl_port:
            self._own_ports.append(self.ctrl_port)
        confdir = Path(tempfile.mkdtemp(prefix="bs-", dir="/tmp"))
        self._confdir = confdir
        if self.record:
            (confdir / "r").symlink_to(self.recordings_dir.resolve())
        if tone is not None:
            (confdir / "t.wav").symlink_to(tone)
        (confdir / "config").write_text(self._config_text(confdir), encoding="utf-8")
        logpath = self.workdir / "baresip.log"
        log_offset = logpath.stat().st_size if logpath.exists() else 0
        with logpath.open("ab") as logf:
            logf.write(f"\n=== {time.strftime('%H:%M:%S')} start {self!r} conf={confdir}\n".encode())
            logf.flush()
            self._proc = await asyncio.create_subprocess_exec(
                self.binary,
                "-f",
                str(confdir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                cwd=str(confdir),
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not every phone at once
                preexec_fn=_die_with_parent,
            )
        await self._wait_ready(logpath, log_offset, deadline)
        await self._connect(deadline)
        self._account_mark = self.mark()
        await self.command("uanew", self._account_spec(), timeout=max(0.5, deadline - time.monotonic()))
        for user in self.answer_users:
            await self.command("uanew", self._answer_spec(user), timeout=max(0.5, deadline - time.monotonic()))

    def _config_text(self, confdir: Path) -> str:
        """Minimal config: PCMU only, no UI, no NAT helpers, nothing listening beyond 127.0.0.1."""
        if self.source == "sine":
            src = f"audio_source\t\tausine,{int(self.tone_hz)}\nausrc_srate\t\t48000\nausrc_channels\t\t2\n"
            src_mod = "module\t\t\tausine.so\n"
        else:
            src = f"audio_source\t\taufile,{confdir / 't.wav'}\n"
            src_mod = "module\t\t\taufile.so\n"
        rec = f"module\t\t\tsndfile.so\nsnd_path\t\t{confdir / 'r'}\n" if self.record else ""
        if len(str(confdir / "t.wav")) > _MAX_PATH:
            raise BaresipError(f"config path too long for baresip: {confdir}")
        return (
            "# written by sim.baresip\n"
            "poll_method\t\tepoll\n"
            f"sip_listen\t\t127.0.0.1:{self.sip_port}\n"
            "net_interface\t\t127.0.0.1\n"
            "call_local_timeout\t120\n"
            f"call_max_calls\t\t{self.max_calls}\n"
            f"{src}"
            "audio_player\t\taubridge,nil\n"
            "audio_alert\t\taubridge,nil\n"
            "audio_level\t\tno\n"
            "audio_buffer\t\t20-160\n"
            "jitter_buffer_delay\t5-10\n"
            "rtp_stats\t\tno\n"
            f"module_path\t\t{MODULE_PATH}\n"
            "module\t\t\tg711.so\n"
            f"{src_mod}"
            "module\t\t\taubridge.so\n"
            f"{rec}"
            "module_app\t\tmenu.so\n"
            "module_app\t\tctrl_tcp.so\n"
            f"ctrl_tcp_listen\t\t127.0.0.1:{self.ctrl_port}\n"
            "statmode_default\toff\n"
            "ringback_disabled\tyes\n"
            "menu_bell\t\tno\n"
        )

    def _account_spec(self) -> str:
        params = [
            f"regint={self.regint if self.register else 0}",
            f"answermode={'auto' if self.auto_answer else 'manual'}",
            "audio_codecs=PCMU",
        ]
        if self.sip_password:
            params.insert(0, f"auth_pass={self.sip_password}")
        if self.from_user and self.from_user != self.sip_user:
            params.insert(0, f"auth_user={self.sip_user}")
        transport = ";transport=udp" if self.registrar else ""
        return f"<{self.aor}{transport}>;" + ";".join(params)

    def _answer_spec(self, user: str) -> str:
        """An account that never registers and only answers calls sent to ``user`` (see ``answer_users``)."""
        domain = self.registrar or f"127.0.0.1:{self.sip_port}"
        transport = ";transport=udp" if self.registrar else ""
        answermode = "auto" if self.auto_answer else "manual"
        return f"<sip:{user}@{domain}{transport}>;regint=0;answermode={answermode};audio_codecs=PCMU"

    async def _wait_ready(self, logpath: Path, offset: int, deadline: float) -> None:
        """Poll baresip's log for "baresip is ready." (or an early exit / port clash)."""
        assert self._proc is not None
        while True:
            text = _read_from(logpath, offset)
            if "ctrl_tcp: failed to listen" in text:
                raise _PortClash(f"ctrl port {self.ctrl_port} in use")
            if self._proc.returncode is not None:
                tail = text[-800:].strip()
                if "Address already in use" in text:
                    raise _PortClash(f"SIP port {self.sip_port} in use")
                raise BaresipError(f"{self.name}: baresip exited ({self._proc.returncode}): {tail}")
            if "baresip is ready." in text:
                return
            if time.monotonic() > deadline:
                raise BaresipError(f"{self.name}: baresip not ready in time: {text[-800:].strip()}")
            await asyncio.sleep(0.02)

    async def _connect(self, deadline: float) -> None:
        while True:
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.ctrl_port),
                    timeout=max(0.1, deadline - time.monotonic()),
                )
                break
            except (OSError, TimeoutError) as e:
                if time.monotonic() > deadline:
                    raise BaresipError(f"{self.name}: cannot connect to ctrl_tcp: {e}") from e
                await asyncio.sleep(0.02)
        self._dead = None
        self._read_task = asyncio.create_task(self._read_loop(), name=f"baresip-ctrl-{self.name}")

    async def stop(self, timeout: float = 3.0) -> None:
        """``quit`` (hangs up, un-registers), wait ``timeout`` s, then SIGKILL; remove the short config dir.

        baresip handles SIGTERM exactly like ``quit``; both wait for pending SIP transactions: with the PBX
        already gone that takes up to 32 s (seen: still alive 7 s after SIGTERM), hence the hard kill.
        Safe to call twice or after a failed start. Recordings and logs stay in ``workdir``.
        """
        quit_sent = False
        if self._proc is not None and self._proc.returncode is None and self._dead is None:
            with contextlib.suppress(Exception):
                await self.command("quit", timeout=1.0)
            quit_sent = True
        await self._teardown(timeout, quit_sent=quit_sent)
        self._close_ctrl_log()

    def _close_ctrl_log(self) -> None:
        if self._ctrl_log is not None:
            self._ctrl_log.close()
            self._ctrl_log = None

    async def _teardown(self, timeout: float = 3.0, *, quit_sent: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            if not quit_sent:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=timeout)
            except TimeoutError:
                log.warning("%s: baresip did not exit in %.1f s; killing it", self.name, timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout=2.0)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), timeout=1.0)
            self._writer = None
        if self._read_task is not None:
            self._read_task.cancel()
            await asyncio.wait([self._read_task], timeout=1.0)  # never re-raises the task's outcome
            self._read_task = None
        self._fail_all("phone stopped")
        if self._confdir is not None:
            shutil.rmtree(self._confdir, ignore_errors=True)
            self._confdir = None
        for p in self._own_ports:
            _reserved_ports.discard(p)
        self._own_ports = []
        self.in_call = False

    # ------------------------------------------------------------------------------------------ control

    async def command(self, command: str, params: str = "", *, timeout: float = 5.0) -> str:
        """Run one ctrl_tcp command and return its ``data`` text; raise :class:`BaresipError` if it failed."""
        if self._writer is None or self._dead is not None:
            raise BaresipError(f"{self.name}: not connected ({self._dead or 'not started'})")
        self._token += 1
        token = f"{self.name}-{self._token}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        msg = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._trace(f"> {command} {params}")
        try:
            self._writer.write(_netstring(msg))
            await self._writer.drain()
            resp = await asyncio.wait_for(fut, timeout=timeout)
        except TimeoutError:
            raise BaresipError(f"{self.name}: no answer to {command!r} in {timeout} s") from None
        except (ConnectionError, OSError) as e:
            raise BaresipError(f"{self.name}: {command!r}: {e}") from e
        finally:
            self._pending.pop(token, None)
        data = str(resp.get("data") or "")
        if not resp.get("ok", False) or data.startswith("command not found"):
            raise BaresipError(f"{self.name}: {command!r} failed: {data.strip()}")
        return data

    async def _read_loop(self) -> None:
        assert self._reader is not None
        buf = b""
        reason = "control connection closed"
        try:
            while True:
                chunk = await self._reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    colon = buf.find(b":")
                    if colon < 0:
                        if len(buf) > 12:
                            raise BaresipError(f"bad netstring header {buf[:20]!r}")
                        break
                    length = int(buf[:colon])
                    end = colon + 1 + length
                    if len(buf) < end + 1:
                        break
                    if buf[end : end + 1] != b",":
                        raise BaresipError("netstring without trailing comma")
                    self._dispatch(buf[colon + 1 : end])
                    buf = buf[end + 1 :]
        except asyncio.CancelledError:
            reason = "phone stopped"
            raise
        except Exception as e:  # a broken stream must wake the waiters, not hang them
            reason = f"control connection error: {e!r}"
            log.warning("%s: %s", self.name, reason)
        finally:
            self._fail_all(reason)

    def _dispatch(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload.decode("utf-8", errors="replace"))
        except ValueError:
            log.warning("%s: undecodable ctrl message %r", self.name, payload[:200])
            return
        if not isinstance(msg, dict):
            return
        if msg.get("response"):
            fut = self._pending.get(str(msg.get("token")))
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        if msg.get("event"):
            ev = BaresipEvent(seq=self._next_seq, type=str(msg.get("type", "")), at=time.monotonic(), raw=msg)
            self._next_seq += 1
            self._events.append(ev)
            self.event_counts[ev.type] += 1
            if ev.type.startswith("CALL_") and ev.type not in ("CALL_CLOSED", "CALL_RTCP"):
                self.in_call = True
            elif ev.type == "CALL_CLOSED":
                self.in_call = False
            if ev.type != "CALL_RTCP":
                self._trace(f"< {ev.type} {ev.param} id={ev.call_id or ''} peer={ev.peer_uri or ''}")
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _fail_all(self, reason: str) -> None:
        if self._dead is None:
            self._dead = reason
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BaresipError(f"{self.name}: {reason}"))
        self._pending.clear()
        self._notify()

    def _trace(self, line: str) -> None:
        if self._ctrl_log is not None:
            with contextlib.suppress(Exception):
                self._ctrl_log.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    # ------------------------------------------------------------------------------------------ events

    def mark(self) -> int:
        """Sequence number the next event will get: pass it as ``since=`` to wait for what happens next."""
        return self._next_seq

    def find_events(
        self,
        types: str | Iterable[str] | None = None,
        *,
        since: int = 0,
        predicate: EventPredicate | None = None,
    ) -> list[BaresipEvent]:
        """Retained events from ``since`` on, optionally of the given types and matching ``predicate``."""
        wanted = {types} if isinstance(types, str) else (set(types) if types is not None else None)
        return [
            ev
            for ev in self._events
            if ev.seq >= since
            and (wanted is None or ev.type in wanted)
            and (predicate is None or predicate(ev))
        ]

    async def wait_event(
        self,
        types: str | Iterable[str],
        timeout: float = 10.0,
        predicate: EventPredicate | None = None,
        *,
        since: int | None = None,
    ) -> BaresipEvent:
        """First event of ``types`` (one name or several) at or after ``since`` (default: the cursor).

        Raises :class:`TimeoutError` after ``timeout`` s, :class:`BaresipError` at once if baresip goes away.
        The cursor moves past the returned event.
        """
        start = self._cursor if since is None else since
        deadline = time.monotonic() + timeout
        wanted = {types} if isinstance(types, str) else set(types)
        while True:
            found = self.find_events(wanted, since=start, predicate=predicate)
            if found:
                ev = found[0]
                self._cursor = max(self._cursor, ev.seq + 1)
                return ev
            if self._dead is not None or (self._proc is not None and self._proc.returncode is not None):
                raise BaresipError(f"{self.name}: waiting for {sorted(wanted)}: {self._dead or 'exited'}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {'/'.join(sorted(wanted))} within {timeout} s")
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=remaining)

    # ------------------------------------------------------------------------------------------ actions

    async def wait_registered(self, timeout: float = 10.0) -> BaresipEvent:
        """Wait for REGISTER_OK of this account; raise :class:`BaresipError` on REGISTER_FAIL."""
        if not self.register:
            raise BaresipError(f"{self.name}: created with register=False")
        ev = await self.wait_event({"REGISTER_OK", "REGISTER_FAIL"}, timeout, since=self._account_mark)
        if ev.type == "REGISTER_FAIL":
            raise BaresipError(f"{self.name}: registration failed: {ev.param}")
        return ev

    async def dial_nowait(self, target: str) -> int:
        """Send ``dial`` and return the mark to wait from (``wait_event(..., since=mark)``)."""
        mark = self.mark()
        self._cursor = max(self._cursor, mark)
        self.in_call = True  # set before sending: a fast 404 can arrive before the command's response
        await self.command("dial", target)
        return mark

    async def dial(self, target: str, timeout: float = 15.0) -> BaresipEvent:
        """Call ``target`` and wait until it is answered; return the CALL_ESTABLISHED event.

        ``target`` is a full URI (``sip:2000@127.0.0.1:5060``) or a number completed from the account
        (``2000`` → ``sip:2000@<registrar>``). Raises :class:`CallFailed` with the reason if the call ends
        first (busy, 404, rejected); on timeout the attempt is hung up and :class:`TimeoutError` raised.
        """
        if not target or any(c.isspace() for c in target):
            raise ValueError(f"bad dial target {target!r}")
        mark = await self.dial_nowait(target)
        try:
            ev = await self.wait_event({"CALL_ESTABLISHED", "CALL_CLOSED"}, timeout, since=mark)
        except TimeoutError:
            with contextlib.suppress(Exception):
                await self.hangup(timeout=3.0)
            raise
        if ev.type == "CALL_CLOSED":
            raise CallFailed(ev.param or "closed", ev)
        return ev

    async def answer(self, timeout: float = 5.0) -> BaresipEvent:
        """Accept a ringing incoming call (phones made with ``auto_answer=False``); wait CALL_ESTABLISHED."""
        mark = self.mark()
        self._cursor = max(self._cursor, mark)
        await self.command("accept")
        ev = await self.wait_event({"CALL_ESTABLISHED", "CALL_CLOSED"}, timeout, since=mark)
        if ev.type == "CALL_CLOSED":
            raise CallFailed(ev.param or "closed", ev)
        return ev

    async def hangup(self, timeout: float = 5.0) -> BaresipEvent | None:
        """Hang up the current call and wait for its CALL_CLOSED; ``None`` when there was no call."""
        mark = self.mark()
        self._cursor = max(self._cursor, mark)
        was_in_call = self.in_call
        await self.command("hangup")
        if not was_in_call:
            return None
        try:
            return await self.wait_event("CALL_CLOSED", timeout, since=mark)
        except TimeoutError:
            # A dial that baresip refused before creating a call emits nothing at all: not an error.
            if "Active calls (0)" in await self.command("listcalls"):
                self.in_call = False
                return None
            raise

    async def send_dtmf(self, digits: str) -> None:
        """Send RFC 4733 telephone events on the current call (baresip ``sndcode``; it paces the digits)."""
        if not _DTMF_RE.match(digits):
            raise ValueError(f"bad DTMF digits {digits!r}")
        await self.command("sndcode", digits)

    def received_dtmf(self, *, since: int = 0) -> str:
        """Digits received as RFC 4733 events (from CALL_DTMF_START) since the given mark."""
        return "".join(ev.param for ev in self.find_events("CALL_DTMF_START", since=since))

    # ------------------------------------------------------------------------------------------ recordings

    def recordings(self) -> list[Path]:
        """Received-audio WAVs of this phone (``dump-<time>-dec.wav``), oldest first."""
        if not self.recordings_dir.is_dir():
            return []
        return sorted(self.recordings_dir.glob("dump-*-dec.wav"))

    def sent_recordings(self) -> list[Path]:
        """What this phone sent (``dump-<time>-enc.wav``), oldest first."""
        if not self.recordings_dir.is_dir():
            return []
        return sorted(self.recordings_dir.glob("dump-*-enc.wav"))


class _PortClash(BaresipError):
    """baresip could not bind an auto-picked port: retry with others."""


_libc: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM baresip if the Python process dies, so no phone outlives a crash."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
