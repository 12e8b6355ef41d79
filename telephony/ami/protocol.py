"""AMI wire protocol: panoramisk's ``AMIProtocol`` with its flaws fixed.

What is different from panoramisk 1.4 and why:

- **Whole-message decoding.** panoramisk decodes every TCP chunk on its own (``errors='ignore'``), so a
  multi-byte UTF-8 character split across two reads is silently lost. Here raw bytes are buffered, split on
  the blank line (``\\r\\n\\r\\n``, a lone ``\\n\\n`` tolerated) and each frame is decoded once complete.
- **Parse errors isolated.** A garbage frame, a line without ``:`` or an unterminated frame larger than
  ``max_frame_bytes`` is logged, counted in :attr:`AmiProtocol.malformed_frames` and skipped; the connection
  stays up.
- **Ordered events, no free tasks.** Event frames are handed synchronously, in order, to the ``sink``
  callable (the client puts them on one bounded queue). panoramisk's ``dispatch`` spawned a task per callback.
- **No re-sends, ever.** panoramisk's ``close()`` moves unanswered actions to ``awaiting_actions`` and
  re-sends them after the next ``FullyBooted`` (a duplicate ``Originate`` = a duplicate phone call). Here,
  when the connection is lost every pending action fails at once with :class:`AmiConnectionLost`.
- **Error replies resolve.** With ``as_list=True`` panoramisk never resolves an action whose reply is
  ``Response: Error``; here the error reply resolves it.
- Actions are encoded as UTF-8 (panoramisk's default ``ascii`` made a non-ASCII Originate never resolve), and
  a CR/LF inside a header is refused (header injection).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

__all__ = [
    "MAX_FRAME_BYTES",
    "Action",
    "AmiActionError",
    "AmiConnectionLost",
    "AmiError",
    "AmiNotConnected",
    "AmiProtocol",
    "AmiTimeout",
    "EventSink",
    "Message",
    "parse_frame",
]

log = logging.getLogger("telephony.ami")

#: An unterminated frame larger than this is garbage (a real AMI frame is a few KiB).
MAX_FRAME_BYTES = 1 << 20

#: Receives each event frame (headers as received; a repeated header joined with ``\n``) and its receipt time.
EventSink = Callable[[dict[str, str], float], None]

_TERMINATOR = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT = re.compile(r"\r?\n")
# "Key: value": a key is a run of visible characters without ':' (no blanks, controls or U+FFFD from garbage)
_HEADER_LINE = re.compile(r"[ \t]*([^\s:\x00-\x1f\x7f\ufffd]+)[ \t]*:(.*)", re.DOTALL)
_HEADERS_FAST = re.compile(r"^[ \t]*([^\s:\x00-\x1f\x7f\ufffd]+)[ \t]*: ?([^\n]*?)\r?$", re.MULTILINE)
_ERROR_RESPONSES = frozenset({"error", "fail", "failure"})
_BANNER_PREFIX = "Asterisk Call Manager/"


class AmiError(Exception):
    """Base of every AMI error raised by this package."""


class AmiNotConnected(AmiError):
    """Not logged in (or the connection is closing): the action was NOT sent. Never queued for later."""


class AmiConnectionLost(AmiError):
    """The connection dropped after the action was sent and before its reply.

    Asterisk may or may not have executed it; it is never re-sent automatically, the caller decides.
    """


class AmiTimeout(AmiError, TimeoutError):
    """No reply within the timeout (the action may still have been executed)."""


class AmiActionError(AmiError):
    """Asterisk answered ``Response: Error``; ``str()`` carries Asterisk's ``Message`` header."""

    def __init__(self, action: str, response: Any) -> None:
        self.action = action
        self.response = response
        msg = ""
        try:
            msg = str(response.get("Message", "") or "")
        except Exception:
            msg = ""
        super().__init__(f"{action}: {msg or 'error'}")


def parse_frame(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Split a decoded frame into ``(key, value)`` headers and the lines that are not ``Key: value``.

    Only ``\\r\\n``/``\\n`` split lines (not ``str.splitlines``, which would also split on U+2028 and other
    characters that may legitimately appear in a caller name). One space after the colon is the separator.
    """
    headers: list[tuple[str, str]] = _HEADERS_FAST.findall(text)
    if len(headers) == text.count("\n") + 1:  # every line is a header: the common case
        return headers, []
    headers = []
    bad: list[str] = []
    match = _HEADER_LINE.match
    for line in _LINE_SPLIT.split(text):
        m = match(line)
        if m is None:
            if line and not line.isspace():
                bad.append(line)
            continue
        value = m.group(2)
        if value.startswith(" "):
            value = value[1:]
        headers.append((m.group(1), value.rstrip("\r")))
    return headers, bad


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (no 'exception was never retrieved' noise)."""
    if not fut.cancelled():
        fut.exception()


class AmiProtocol(AMIProtocol):
    """One AMI TCP connection. Created per connection by :class:`telephony.ami.client.AmiClient`."""

    def __init__(
        self,
        sink: EventSink,
        *,
        on_lost: Callable[[Exception | None], None] | None = None,
        on_malformed: Callable[[], None] | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        encoding: str = "utf-8",
    ) -> None:
        self._sink = sink
        self._on_lost = on_lost
        self._on_malformed = on_malformed
        self.max_frame_bytes = max_frame_bytes
        self.encoding = encoding
        self.malformed_frames = 0
        self.handler_errors = 0
        self.orphan_responses = 0
        self._buf = bytearray()
        self._scan_from = 0
        self._discarding = False
        self._lost = False
        self.transport: asyncio.Transport | None = None
        self.closed = True
        self.responses: dict[str, Action] = {}
        self.version: str | None = None
        loop = asyncio.get_running_loop()
        self.banner: asyncio.Future[str] = loop.create_future()
        self.banner.add_done_callback(_retrieve)
        #: Resolved (with the exception or None) once the connection is gone.
        self.closed_future: asyncio.Future[Exception | None] = loop.create_future()

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # panoramisk's attributes (queue, responses, factory=None...)
        self.transport = transport  # type: ignore[assignment]
        self.responses = {}
        self.factory = None
        self.log = log
        self.closed = False

    def data_received(self, data: bytes) -> None:
        if self._lost:
            return
        received_at = time.time()
        buf = self._buf
        buf += data
        if self._discarding:
            m = _TERMINATOR.search(buf)
            if m is None:
                del buf[:-3]
                return
            del buf[: m.end()]
            self._discarding = False
            self._scan_from = 0
        if self.version is None and not self._read_banner():
            return
        pos = 0
        scan = self._scan_from
        while True:
            m = _TERMINATOR.search(buf, scan)
            if m is None:
                break
            raw = bytes(buf[pos : m.start()])
            pos = scan = m.end()
            if raw.strip():
                self._handle_raw(raw, received_at)
            if self._lost:
                return
        if pos:
            del buf[:pos]
        self._scan_from = max(0, len(buf) - 3)
        if len(buf) > self.max_frame_bytes:
            self._count_malformed(
                "AMI frame larger than %d bytes without terminator: discarding it up to the next blank line",
                self.max_frame_bytes,
            )
            del buf[:-3]
            self._discarding = True
            self._scan_from = 0

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every pending action now (never keep one for a re-send), then tell the client."""
        if self._lost:
            return
        self._lost = True
        self.closed = True
        pending = {id(a): a for a in self.responses.values()}.values()
        self.responses = {}
        for action in pending:
            fut = action.future
            if not fut.done():
                fut.set_exception(
                    AmiConnectionLost(f"connection lost before the reply to {action.get('Action', '?')}")
                )
        if not self.banner.done():
            self.banner.set_exception(AmiConnectionLost("connection lost before the AMI banner"))
        if not self.closed_future.done():
            self.closed_future.set_result(exc)
        if self._on_lost is not None:
            try:
                self._on_lost(exc)
            except Exception:
                log.exception("AMI connection-lost handler failed")

    # ---------------------------------------------------------------- sending

    def send_action(self, action: Action) -> asyncio.Future[Any]:
        """Write one action once; its future resolves with the reply (or fails on connection loss).

        Raises :class:`AmiNotConnected` when the transport is closing (the action was not sent) and
        ``ValueError`` for a CR/LF inside a header (it would inject headers).
        """
        for k, v in action.items():
            values = v if isinstance(v, list | tuple) else [v]
            for x in (k, *values):
                s = str(x)
                if "\r" in s or "\n" in s:
                    raise ValueError(f"AMI header {k!r} contains CR/LF")
        transport = self.transport
        if self._lost or transport is None or transport.is_closing():
            raise AmiNotConnected(f"{action.get('Action', '?')}: AMI connection is closed")
        data = str(action).encode(self.encoding)
        self.responses[action.id] = action
        action.future.add_done_callback(_retrieve)
        transport.write(data)
        return action.future

    def send(self, data: Any, as_list: bool = False) -> asyncio.Future[Any]:
        """panoramisk's API, routed through :meth:`send_action` (no awaiting-actions re-send)."""
        if not isinstance(data, Action):
            data = Action(dict(data), as_list=as_list)
        data.as_list = as_list
        return self.send_action(data)

    def forget(self, action: Action) -> None:
        """Stop waiting for an action's reply (after a timeout); a late reply is then ignored."""
        self.responses.pop(action.id, None)
        if not action.future.done():
            action.future.cancel()

    # ---------------------------------------------------------------- flow control / closing

    def pause_reading(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.pause_reading()

    def resume_reading(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.resume_reading()

    def close(self) -> None:
        """Close gracefully; :meth:`connection_lost` follows from asyncio."""
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()
        self.closed = True

    def shutdown(self, reason: str) -> None:
        """Abort now (half-open socket, stop): pending actions fail immediately, not at their timeout."""
        t = self.transport
        if t is not None:
            t.abort()
        self.connection_lost(AmiConnectionLost(reason))

    # ---------------------------------------------------------------- internals

    def _read_banner(self) -> bool:
        idx = self._buf.find(b"\n")
        if idx < 0:
            if len(self._buf) > self.max_frame_bytes:
                self._count_malformed("no AMI banner in the first %d bytes", self.max_frame_bytes)
                self._buf.clear()
            return False
        line = bytes(self._buf[:idx]).decode(self.encoding, "replace").strip()
        del self._buf[: idx + 1]
        self._scan_from = 0
        if line.startswith(_BANNER_PREFIX):
            self.version = line[len(_BANNER_PREFIX) :].strip()
            log.info("AMI banner: %s", line)
        else:
            self.version = ""
            log.warning("unexpected AMI banner %r (is this an Asterisk manager port?)", line[:200])
        if not self.banner.done():
            self.banner.set_result(line)
        return True

    def _count_malformed(self, msg: str, *args: Any) -> None:
        self.malformed_frames += 1
        log.warning(msg, *args)
        if self._on_malformed is not None:
            try:
                self._on_malformed()
            except Exception:
                log.exception("AMI malformed-frame counter failed")

    def _handle_raw(self, raw: bytes, received_at: float) -> None:
        try:
            if len(raw) > self.max_frame_bytes:
                self._count_malformed("AMI frame of %d bytes skipped (limit %d)", len(raw),
                                      self.max_frame_bytes)
                return
            text = raw.decode(self.encoding, "replace")
            headers, bad = parse_frame(text)
            first: dict[str, str] = dict(reversed(headers))  # first value of each header
            response = first.get("Response")
            event = first.get("Event")
            if response is None and event is None:
                lower = {k.lower(): v for k, v in reversed(headers)}
                response = lower.get("response")
                event = lower.get("event")
            follows = response is not None and response.lower() == "follows"
            if event is None and response is None:
                self._count_malformed("malformed AMI frame skipped (no Event/Response header): %r",
                                      text[:200])
                return
            if bad and not follows:
                self._count_malformed(
                    "AMI %s frame: %d line(s) without 'Key: value' dropped: %r",
                    event or f"response {response}", len(bad), bad[:3],
                )
                bad = []
            pending = self._pending_for(headers, first) if self.responses else None
            if pending is not None:
                self._resolve(pending, headers, "\n".join(bad), received_at)
            elif event is not None:
                if len(first) == len(headers):
                    frame = dict(headers)
                else:  # a repeated header (ChanVariable...): keep every value
                    frame = {}
                    for k, v in headers:
                        frame[k] = f"{frame[k]}\n{v}" if k in frame else v
                self._sink(frame, received_at)
            else:
                self.orphan_responses += 1
                log.debug("AMI reply for no pending action (timed out?): %r", text[:200])
        except Exception:
            self.handler_errors += 1
            log.exception("error while handling an AMI frame; frame skipped, connection kept")

    def _pending_for(self, headers: list[tuple[str, str]], first: dict[str, str]) -> Action | None:
        for key in ("CommandID", "ActionID"):
            ident = first.get(key)
            if ident is None:
                ident = next((v for k, v in headers if k.lower() == key.lower()), None)
            if ident is not None and ident in self.responses:
                return self.responses[ident]
        return None

    def _resolve(
        self, action: Action, headers: list[tuple[str, str]], content: str, received_at: float
    ) -> None:
        """Feed a reply to its panoramisk Action; an error reply resolves even an ``as_list`` action."""
        multi: dict[str, Any] = {}
        for k, v in headers:
            if k in multi:
                old = multi[k]
                multi[k] = [*old, v] if isinstance(old, list) else [old, v]
            else:
                multi[k] = v
        msg = Message(multi, content)
        if not content:
            msg._store.pop("content", None)  # panoramisk adds an empty 'content' key; it is not a header
        msg.received_at = received_at
        fut = action.future
        if fut.done():
            self._drop(action)
            return
        resp = str(msg.get("Response", "") or "").lower()
        if not action.responses and resp in _ERROR_RESPONSES:
            action.responses.append(msg)
            fut.set_result([msg] if action.as_list else msg)
            self._drop(action)
            return
        if action.add_message(msg):
            self._drop(action)
            return
        if action.as_list and str(msg.get("EventList", "")).lower() == "complete" and not fut.done():
            fut.set_result(action.responses)
            self._drop(action)

    def _drop(self, action: Action) -> None:
        for ident in (action.id, action.get("ActionID")):
            if ident is not None:
                self.responses.pop(ident, None)
