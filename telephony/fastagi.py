"""A FastAGI server that no client can freeze.

Why not panoramisk.fast_agi: a client that closes mid-header makes its read loop spin forever and
freezes the whole event loop (the service's AMI, web and event store with it).  Here every read is
bounded in time and size, every connection is its own task, and a bad peer only costs its own
session.

Protocol (res_agi): Asterisk connects, sends ``agi_key: value`` lines and an empty line, then the
server sends one command per line and Asterisk answers each with one line such as
``200 result=1 (data) endpos=1234``; ``510``/``520`` mean a bad command, ``511`` a dead channel, and
a bare ``HANGUP`` line tells that the caller hung up.  Everything that comes from Asterisk (caller ID,
DNID, query parameters) is untrusted: header lines are length- and character-checked, and command
arguments we build are quoted (with CR/LF refused) so a value can never inject a second command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^agi_[a-z0-9_]{1,64}$")
_CTRL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters except TAB
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# GET VARIABLE also reads dialplan functions, e.g. CALLERID(num) or CHANNEL(state).
_READ_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\([A-Za-z0-9_,.-]*\))?$")
_FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_/.-]*$")
#: The one absolute folder a sound may come from: prompts uploaded by admins (ivr/prompts.py).
_PROMPT_FILE_RE = re.compile(r"^/var/spool/asterisk/prompts/[a-z0-9][a-z0-9_-]{0,63}$")
#: Where callers' messages are recorded (one file per call, named by the channel's uniqueid).
_MESSAGE_FILE_RE = re.compile(r"^/var/spool/asterisk/messages/[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_DIGITS_RE = re.compile(r"^[0-9*#]*$")
_APP_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_REPLY_RE = re.compile(r"^(\d{3})([ -])(.*)$")
_RESULT_RE = re.compile(r"^result=(\S*)(?: \((.*)\))?(?: (.*))?$")


class AgiError(Exception):
    """Asterisk refused a command (510/520), or the session is unusable."""


class AgiHangup(AgiError):
    """The channel hung up (HANGUP notice, 511 reply) or Asterisk closed the connection."""


class AgiTimeout(AgiError):
    """No reply within ``command_timeout``; the session is closed (replies would be out of step)."""


@dataclass(frozen=True, slots=True)
class AgiResult:
    """One ``200`` reply: ``result`` (e.g. ``"1"``, ``"-1"``, digits), ``data`` (text in parentheses)
    and ``extra`` (what follows, e.g. ``endpos=1234``)."""

    code: int
    result: str
    data: str
    extra: str = ""

    @property
    def value(self) -> int | None:
        """``result`` as an int when it is one."""
        try:
            return int(self.result)
        except ValueError:
            return None


@dataclass
class FastAgiStats:
    """Counters of the server (a live object; read it, do not write it)."""

    connections: int = 0
    sessions: int = 0  # valid header, handler started
    completed: int = 0  # handler returned normally
    hangups: int = 0  # handler ended by AgiHangup
    bad_headers: int = 0
    timeouts: int = 0  # header or command timeouts
    errors: int = 0  # handler exceptions other than hangup/timeout
    rejected: int = 0  # refused because max_sessions were active
    active: int = 0


class _BadHeader(Exception):
    pass


def quote_arg(value: str) -> str:
    """Quote one AGI command argument the way res_agi's parse_args reads it.

    Backslash and double quote are escaped; CR, LF and other control characters (but TAB) are
    refused because a line break would end the command and start another one.
    """
    if _CTRL_RE.search(value):
        raise ValueError(f"control character in AGI argument {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_reply(line: str) -> tuple[int, str, str]:
    m = _REPLY_RE.match(line)
    if not m:
        raise AgiError(f"unexpected AGI reply {line[:200]!r}")
    return int(m.group(1)), m.group(2), m.group(3)


class AgiSession:
    """One AGI conversation with Asterisk for one channel.

    ``env`` holds the ``agi_*`` header, ``script``/``params`` come from ``agi_network_script``
    (``ivr/main?flow=3`` → ``"ivr/main"``, ``{"flow": "3"}``), ``args`` from ``agi_arg_N``.  Commands
    run one at a time (a lock keeps replies in step even if a handler misuses concurrency).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        env: dict[str, str],
        *,
        command_timeout: float = 30.0,
        allowed_apps: Iterable[str] = (),
    ) -> None:
        self.env = env
        self._reader = reader
        self._writer = writer
        self.command_timeout = command_timeout
        self.allowed_apps = frozenset(a.lower() for a in allowed_apps)
        self.hung_up = False
        self._broken: str | None = None
        self._lock = asyncio.Lock()
        script = env.get("agi_network_script")
        if script is None and "agi_request" in env:
            parts = urlsplit(env["agi_request"])
            script = parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")
        path, _, query = (script or "").partition("?")
        self.script: str = path
        self.params: dict[str, str] = dict(parse_qsl(query, keep_blank_values=True, max_num_fields=100))
        self.args: list[str] = [env[k] for k in sorted(
            (k for k in env if re.fullmatch(r"agi_arg_\d+", k)), key=lambda k: int(k[8:]))]

    @property
    def peer(self) -> str:
        """The remote address, for logs."""
        info = self._writer.get_extra_info("peername")
        return f"{info[0]}:{info[1]}" if isinstance(info, tuple) else str(info)

    # ------------------------------------------------------------------ raw protocol
    async def command(self, cmd: str) -> AgiResult:
        """Send one AGI command line and return its ``200`` reply.

        Raises ``ValueError`` for a command holding CR/LF/NUL (injection), ``AgiHangup`` on HANGUP,
        511 or EOF, ``AgiError`` on 510/520 or garbage, ``AgiTimeout`` after ``command_timeout``.
        """
        if any(c in cmd for c in "\r\n\x00"):
            raise ValueError("AGI command must be a single line (CR/LF/NUL refused)")
        if not cmd.strip():
            raise ValueError("empty AGI command")
        async with self._lock:
            if self._broken:
                exc = AgiHangup if self.hung_up else AgiError
                raise exc(f"session unusable: {self._broken}")
            try:
                async with asyncio.timeout(self.command_timeout):
                    self._writer.write(cmd.encode("utf-8") + b"\n")
                    await self._writer.drain()
                    return await self._read_reply(cmd)
            except TimeoutError:
                self._broken = f"no reply to {cmd.split(' ', 1)[0]!r} within {self.command_timeout}s"
                raise AgiTimeout(self._broken) from None
            except OSError as e:
                self._broken = f"connection lost: {e}"
                self.hung_up = True
                raise AgiHangup(self._broken) from e

    async def _read_line(self) -> str:
        try:
            raw = await self._reader.readline()
        except ValueError as e:  # over the StreamReader limit (max_line)
            self._broken = "reply line too long"
            raise AgiError(self._broken) from e
        if not raw.endswith(b"\n"):
            self._broken = "connection closed by Asterisk"
            self.hung_up = True
            raise AgiHangup(self._broken)
        return raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", errors="replace")

    async def _read_reply(self, cmd: str) -> AgiResult:
        line = await self._read_line()
        notified = False
        while line == "HANGUP":  # hangup notice; the reply to our command still follows
            self.hung_up = notified = True
            line = await self._read_line()
        code, sep, rest = _parse_reply(line)
        if code == 520 and sep == "-":  # multi-line usage text, ends with "520 End of proper usage."
            usage = [rest]
            for _ in range(200):
                line = await self._read_line()
                if line.startswith("520 "):
                    break
                usage.append(line)
            raise AgiError(f"invalid command syntax for {cmd!r}: {' '.join(usage)[:500]}")
        if code == 511:
            self.hung_up = True
            raise AgiHangup(f"{cmd.split(' ', 1)[0]}: channel is dead ({rest})")
        if code != 200:
            raise AgiError(f"{cmd.split(' ', 1)[0]} refused: {code} {rest}")
        m = _RESULT_RE.match(rest)
        if not m:
            raise AgiError(f"unexpected AGI reply {line[:200]!r}")
        result = AgiResult(200, m.group(1), m.group(2) or "", m.group(3) or "")
        if notified:
            raise AgiHangup(f"caller hung up (during {cmd.split(' ', 1)[0]}, result {result.result})")
        return result

    # ------------------------------------------------------------------ helpers
    async def answer(self) -> AgiResult:
        """Answer the channel."""
        res = await self.command("ANSWER")
        if res.result == "-1":
            raise AgiError("ANSWER failed")
        return res

    async def stream_file(self, name: str, escape_digits: str = "") -> str:
        """Play a sound file; return the digit that interrupted it, or ``""``.

        ``name`` is a sound name without extension (letters, digits, ``_ / . -``, no ``..``), so a
        value from outside can never point at an arbitrary file.
        """
        _check_sound(name)
        if not _DIGITS_RE.match(escape_digits):
            raise ValueError(f"bad escape digits {escape_digits!r}")
        res = await self.command(f"STREAM FILE {name} {quote_arg(escape_digits)}")
        if res.result == "-1":
            raise AgiError(f"STREAM FILE {name} failed (hangup or missing file)")
        return chr(int(res.result)) if res.value else ""

    async def get_data(self, prompt: str, timeout_ms: int = 5000, max_digits: int = 1) -> str:
        """Play ``prompt`` and collect up to ``max_digits`` DTMF digits; ``""`` when none."""
        _check_sound(prompt)
        if not 0 <= timeout_ms <= 600_000 or not 1 <= max_digits <= 255:
            raise ValueError("timeout_ms must be 0..600000 and max_digits 1..255")
        res = await self.command(f"GET DATA {prompt} {int(timeout_ms)} {int(max_digits)}")
        if res.result == "-1":
            raise AgiError(f"GET DATA {prompt} failed (hangup or missing prompt)")
        digits = res.result
        if not _DIGITS_RE.match(digits):
            raise AgiError(f"GET DATA returned {digits!r}")
        return digits

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable (name checked, value quoted; CR/LF refused)."""
        if not _VAR_RE.match(name):
            raise ValueError(f"bad variable name {name!r}")
        await self.command(f"SET VARIABLE {name} {quote_arg(value)}")

    async def get_variable(self, name: str) -> str | None:
        """A channel variable or dialplan function value; ``None`` when unset."""
        if not _READ_VAR_RE.match(name):
            raise ValueError(f"bad variable name {name!r}")
        res = await self.command(f"GET VARIABLE {name}")
        return res.data if res.result == "1" else None

    async def exec(self, app: str, args: str | Sequence[str] = "") -> AgiResult:
        """Run a dialplan application that the server's allow-list permits.

        ``args`` is one string (Asterisk's own ``,`` syntax) or a list joined with ``,``.  ``${`` and
        ``$[`` are refused: an application argument built from outside input must never be able to
        read channel variables or run functions.
        """
        if not _APP_RE.match(app) or app.lower() not in self.allowed_apps:
            raise PermissionError(f"application {app!r} is not in the FastAGI allow-list")
        if not isinstance(args, str):
            if any("," in a for a in args):
                raise ValueError("a list argument must not contain ','")
            args = ",".join(args)
        if "${" in args or "$[" in args:
            raise ValueError("dialplan expressions are not allowed in EXEC arguments")
        res = await self.command(f"EXEC {app} {quote_arg(args)}")
        if res.result == "-2":
            raise AgiError(f"application {app} not found in Asterisk")
        return res

    async def verbose(self, message: str, level: int = 1) -> None:
        """Write a line to Asterisk's verbose log."""
        if not 1 <= level <= 4:
            raise ValueError("verbose level must be 1..4")
        await self.command(f"VERBOSE {quote_arg(message)} {level}")

    async def record_file(self, path: str, max_ms: int, *, silence_s: int = 5) -> None:
        """Record the caller into `path`.wav (a message). Only the messages folder is allowed; `#` ends it."""
        if not _MESSAGE_FILE_RE.match(path):
            raise ValueError(f"bad recording path {path!r}")
        if not 1000 <= max_ms <= 600_000 or not 1 <= silence_s <= 60:
            raise ValueError("max_ms must be 1000..600000 and silence_s 1..60")
        res = await self.command(f'RECORD FILE {path} wav "#" {int(max_ms)} BEEP s={int(silence_s)}')
        if res.result == "-1":
            raise AgiError(f"RECORD FILE {path} failed (hangup or write error)")

    async def hangup(self) -> None:
        """Hang up the channel; a channel already gone is fine."""
        with contextlib.suppress(AgiHangup):
            await self.command("HANGUP")
        self.hung_up = True


def _check_sound(name: str) -> None:
    if _PROMPT_FILE_RE.match(name):
        return
    if not _FILE_RE.match(name) or ".." in name.split("/") or len(name) > 255:
        raise ValueError(f"bad sound file name {name!r}")


Handler = Callable[[AgiSession], Awaitable[None]]


class FastAgiServer:
    """Serve FastAGI on ``host:port`` (port 0 picks a free one, see ``port``); one task per call.

    A session is refused (closed at once) when ``max_sessions`` are active, so a flood cannot
    exhaust memory or file descriptors; Asterisk then continues the dialplan (AGISTATUS=FAILURE).
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        header_timeout: float = 5.0,
        command_timeout: float = 30.0,
        max_line: int = 8192,
        max_sessions: int = 500,
        max_header_lines: int = 128,
        allowed_apps: Iterable[str] = (),
    ) -> None:
        self.host = host
        self._port = port
        self.handler = handler
        self.header_timeout = header_timeout
        self.command_timeout = command_timeout
        self.max_line = max_line
        self.max_sessions = max_sessions
        self.max_header_lines = max_header_lines
        self.allowed_apps = frozenset(allowed_apps)
        self.stats = FastAgiStats()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (empty before ``start()``)."""
        return tuple(self._server.sockets) if self._server else ()

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        for s in self.sockets:
            return int(s.getsockname()[1])
        return self._port

    async def start(self) -> None:
        """Start listening."""
        if self._server is not None:
            return
        # limit = longest accepted line (+ CRLF): readline() raises instead of buffering without end.
        self._server = await asyncio.start_server(
            self._on_connect, self.host, self._port, limit=self.max_line + 2, reuse_address=True,
        )
        log.info("FastAGI listening on %s:%d", self.host, self.port)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop listening and end running sessions (cancelled after ``grace`` seconds)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), grace)

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ per connection
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        st = self.stats
        st.connections += 1
        peer = writer.get_extra_info("peername")
        if st.active >= self.max_sessions:
            st.rejected += 1
            log.warning("FastAGI: refusing %s: %d sessions active (max_sessions)", peer, st.active)
            await _close(writer)
            return
        st.active += 1
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer, peer)
        finally:
            st.active -= 1
            if task is not None:
                self._tasks.discard(task)
            await _close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object) -> None:
        st = self.stats
        try:
            async with asyncio.timeout(self.header_timeout):
                env = await self._read_header(reader)
        except TimeoutError:
            st.timeouts += 1
            log.warning("FastAGI: no complete header from %s within %.1fs; closed", peer, self.header_timeout)
            return
        except _BadHeader as e:
            st.bad_headers += 1
            log.warning("FastAGI: bad header from %s: %s; closed", peer, e)
            return
        except OSError as e:
            st.bad_headers += 1
            log.warning("FastAGI: connection from %s lost during header: %s", peer, e)
            return
        try:
            session = AgiSession(reader, writer, env, command_timeout=self.command_timeout,
                                 allowed_apps=self.allowed_apps)
        except ValueError as e:  # e.g. more query parameters than parse_qsl's max_num_fields
            st.bad_headers += 1
            log.warning("FastAGI: bad script/parameters from %s: %s; closed", peer, e)
            return
        st.sessions += 1
        try:
            await self.handler(session)
        except AgiTimeout as e:
            st.timeouts += 1
            log.warning("FastAGI %s (%s): %s", session.script, env.get("agi_channel", "?"), e)
        except AgiHangup as e:
            st.hangups += 1
            log.info("FastAGI %s (%s): hangup: %s", session.script, env.get("agi_channel", "?"), e)
        except asyncio.CancelledError:
            raise
        except Exception:
            st.errors += 1
            log.exception("FastAGI %s (%s): handler failed", session.script, env.get("agi_channel", "?"))
        else:
            st.completed += 1

    async def _read_header(self, reader: asyncio.StreamReader) -> dict[str, str]:
        """Read ``agi_key: value`` lines up to the empty line; every line is checked."""
        env: dict[str, str] = {}
        for _ in range(self.max_header_lines + 1):
            try:
                raw = await reader.readline()
            except ValueError as e:  # LimitOverrunError surfaces as ValueError from readline()
                raise _BadHeader(f"line longer than {self.max_line} bytes") from e
            if not raw.endswith(b"\n"):
                raise _BadHeader(f"connection closed mid-header after {len(env)} lines")
            line = raw[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:  # the reader's limit leaves room for CRLF: make the limit exact
                raise _BadHeader(f"line longer than {self.max_line} bytes")
            if not line:
                if not env:
                    raise _BadHeader("empty header")
                return env
            text = line.decode("utf-8", errors="replace")
            if _CTRL_RE.search(text):
                raise _BadHeader(f"control character in header line {text[:80]!r}")
            key, sep, value = text.partition(":")
            if not sep or not _KEY_RE.match(key):
                raise _BadHeader(f"not an agi_ header line: {text[:80]!r}")
            env[key] = value[1:] if value.startswith(" ") else value
        raise _BadHeader(f"more than {self.max_header_lines} header lines")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
