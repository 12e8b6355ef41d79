"""AmiClient: one hardened AMI connection with its own connect/heartbeat/reconnect loop.

Why not panoramisk's ``Manager``: its ping never checks the reply (a half-open socket is never detected), it
re-sends unanswered actions after a reconnect (a second ``Originate`` is a second phone call), it dispatches
events as free tasks (order lost, unbounded tasks), and ``Ping``/``Login`` sent while disconnected never
resolve. This client uses only panoramisk's ``Action``/``Message`` classes, through :mod:`.protocol`.

Guarantees:

- events reach :attr:`AmiClient.events` in the order Asterisk sent them, none dropped (except those refused by
  ``event_filter``, counted); when the queue is full the socket is paused (``pause_reading``) and resumed once
  the consumer drained it below half;
- ``AmiConnected`` is put on the queue when logged in and ``FullyBooted`` was seen, ``AmiDisconnected`` when
  that connection is lost, both in stream order (the consumer knows where the gap is);
- every action is sent at most once and has a timeout; when not connected it fails at once
  (:class:`AmiNotConnected`), never queued; a connection lost while waiting fails it at once
  (:class:`AmiConnectionLost`);
- a ``Ping`` every ``heartbeat_interval`` must be answered within ``heartbeat_timeout`` or the connection is
  dropped and re-made (a half-open socket is detected within ``heartbeat_interval + heartbeat_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .events import AmiEvent, event_name, parse_event
from .protocol import (
    MAX_FRAME_BYTES,
    Action,
    AmiActionError,
    AmiConnectionLost,
    AmiError,
    AmiNotConnected,
    AmiProtocol,
    AmiTimeout,
    Message,
)

__all__ = [
    "AmiActionError",
    "AmiClient",
    "AmiConnectionLost",
    "AmiError",
    "AmiNotConnected",
    "AmiTimeout",
    "Message",
    "message_to_event",
]

log = logging.getLogger("telephony.ami")

#: The longest wait between reconnect attempts. AMI is on the same host (loopback), so a refused connect costs
#: nothing, and the service must be back within 5 s of Asterisk's FullyBooted however long Asterisk was away.
_MAX_RECONNECT_DELAY = 2.0
_ERROR_RESPONSES = frozenset({"error", "fail", "failure"})


class _LoginRefused(AmiError):
    pass


def message_to_event(msg: Any, received_at: float | None = None) -> AmiEvent:
    """An action reply item (e.g. a ``CoreShowChannel`` of ``CoreShowChannels``) as an :class:`AmiEvent`.

    Lets the resync code feed list replies to the same live-state code as live events.
    """
    rx = received_at if received_at is not None else getattr(msg, "__dict__", {}).get("received_at")
    return parse_event(msg, rx if isinstance(rx, float | int) else time.time())


class _EventQueue(asyncio.Queue[AmiEvent]):
    """Bounded queue that tells the client when the consumer took an item (to refill / resume reading)."""

    def __init__(self, maxsize: int, on_get: Callable[[], None]) -> None:
        super().__init__(maxsize)
        self._on_get = on_get

    def _get(self) -> AmiEvent:
        item = super()._get()
        self._on_get()
        return item


class AmiClient:
    """The service's one AMI connection (see module docstring for the guarantees)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        node: str = "pbx1",
        event_queue_size: int = 20000,
        action_timeout: float = 10.0,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 3.0,
        reconnect_delay: float = 1.0,
        on_ready: Callable[[], Awaitable[None]] | None = None,
        event_filter: Callable[[str], bool] | None = None,
    ) -> None:
        if event_queue_size < 2:
            raise ValueError("event_queue_size must be >= 2")
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.node = node
        self.action_timeout = action_timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.reconnect_delay = reconnect_delay
        self.max_frame_bytes = MAX_FRAME_BYTES
        self._on_ready = on_ready
        self._event_filter = event_filter
        if heartbeat_timeout > heartbeat_interval:
            log.warning("AMI heartbeat_timeout %.1fs > heartbeat_interval %.1fs: a dead socket takes longer "
                        "than two heartbeats to detect", heartbeat_timeout, heartbeat_interval)

        self.events: asyncio.Queue[AmiEvent] = _EventQueue(event_queue_size, self._on_consumer_get)
        self.connected = False
        self.stats: dict[str, int] = {
            "events_received": 0,
            "events_dropped_by_filter": 0,
            "malformed_frames": 0,
            "reconnects": 0,
            "heartbeat_failures": 0,
            "connects": 0,
            "connect_failures": 0,
            "actions_sent": 0,
            "action_timeouts": 0,
            "actions_lost": 0,
            "backpressure_pauses": 0,
            "on_ready_failures": 0,
        }

        self._protocol: AmiProtocol | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready = asyncio.Event()
        self._conn_seq = 0
        self._login_action: Action | None = None
        self._booted_seen = False
        self._announced = False  # AmiConnected was queued for the current connection
        self._on_ready_task: asyncio.Task[None] | None = None

        # backpressure: events beyond the queue's room wait here, in order, while the socket is paused
        self._overflow: deque[AmiEvent] = deque()
        self._paused = False
        self._pause_epoch = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refill_scheduled = False

    # ================================================================ lifecycle

    async def start(self) -> None:
        """Start the connect/reconnect loop in the background; returns at once (see :meth:`wait_ready`)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"ami-{self.node}")

    async def wait_ready(self, timeout: float) -> None:
        """Wait until logged in and ``FullyBooted`` seen; raises ``TimeoutError``."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        """Close the connection and stop reconnecting; pending actions fail with AmiConnectionLost."""
        self._stopping = True
        task, self._task = self._task, None
        proto = self._protocol
        if proto is not None:
            proto.shutdown("client stopped")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._cancel_on_ready()
        self.connected = False
        self._ready.clear()

    # ================================================================ actions

    async def action(
        self,
        name: str,
        fields: Mapping[str, str | Sequence[str]] | None = None,
        *,
        as_list: bool,
        timeout: float | None = None,
    ) -> Message | list[Message]:
        """Send one action once and wait for its reply.

        ``as_list`` must be explicit: True for list actions (reply = list of messages, the final
        ``...Complete`` event included), False otherwise. Raises :class:`AmiNotConnected` (not sent),
        :class:`AmiTimeout`, :class:`AmiConnectionLost` (sent, outcome unknown), :class:`AmiActionError`
        (``Response: Error``). A repeated header (``Variable``) is given as a list of strings.
        """
        proto = self._protocol
        if not self.connected or proto is None or proto.closed:
            raise AmiNotConnected(f"{name}: not connected to AMI")
        return await self._send(proto, name, fields, as_list=as_list, timeout=timeout)

    async def originate(self, fields: Mapping[str, str | Sequence[str]], *,
                        timeout: float | None = None) -> Message:
        """Originate a call; sent at most once, ever.

        ``Async: true`` is the default (a synchronous Originate blocks Asterisk's session until the call is
        answered, stalling our events and heartbeat); the outcome then comes as an ``OriginateResponse`` event
        with the same ``ActionID``. If the connection drops before the reply, :class:`AmiConnectionLost` is
        raised and the Originate is NOT re-sent: the caller decides (the call may exist).
        """
        f: dict[str, str | Sequence[str]] = dict(fields)
        if not any(k.lower() == "async" for k in f):
            f["Async"] = "true"
        reply = await self.action("Originate", f, as_list=False, timeout=timeout)
        assert isinstance(reply, Message)
        return reply

    async def list_events(self, name: str, fields: Mapping[str, str | Sequence[str]] | None = None, *,
                          timeout: float | None = None) -> list[AmiEvent]:
        """Run a list action (``CoreShowChannels``, ``QueueStatus``...) and return its items as events.

        The first reply and the closing ``...Complete`` event are left out.
        """
        replies = await self.action(name, fields, as_list=True, timeout=timeout)
        items = replies if isinstance(replies, list) else [replies]
        out: list[AmiEvent] = []
        for m in items:
            ev_name = str(m.get("Event", "") or "")
            if not ev_name or str(m.get("EventList", "")).lower() == "complete":
                continue
            out.append(message_to_event(m))
        return out

    async def _send(
        self,
        proto: AmiProtocol,
        name: str,
        fields: Mapping[str, str | Sequence[str]] | None,
        *,
        as_list: bool,
        timeout: float | None,
    ) -> Message | list[Message]:
        headers: dict[str, Any] = {"Action": name}
        for k, v in (fields or {}).items():
            if k.lower() == "action":
                continue
            headers[k] = v if isinstance(v, str) else list(v)
        act = Action(headers, as_list=as_list)
        fut = proto.send_action(act)  # raises AmiNotConnected / ValueError: nothing sent
        self.stats["actions_sent"] += 1
        t = self.action_timeout if timeout is None else timeout
        try:
            reply = await asyncio.wait_for(fut, t)
        except TimeoutError:
            proto.forget(act)
            self.stats["action_timeouts"] += 1
            raise AmiTimeout(f"{name}: no reply within {t:g} s") from None
        except AmiConnectionLost:
            self.stats["actions_lost"] += 1
            raise
        first = reply[0] if isinstance(reply, list) and reply else reply
        if isinstance(first, Message) and str(first.get("Response", "") or "").lower() in _ERROR_RESPONSES:
            raise AmiActionError(name, first)
        return reply

    # ================================================================ connection loop

    async def _run(self) -> None:
        failures = 0
        first = True
        while not self._stopping:
            await self._flowing.wait()  # events of the last connection are not all queued yet
            if not first:
                self.stats["reconnects"] += 1
            first = False
            try:
                await self._connect_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except _LoginRefused as exc:
                failures += 1
                self.stats["connect_failures"] += 1
                log.error("AMI login to %s:%d as %r refused: %s", self.host, self.port, self.username, exc)
            except (OSError, TimeoutError, AmiError) as exc:
                failures += 1
                self.stats["connect_failures"] += 1
                log.warning("AMI connection to %s:%d failed (attempt %d): %s", self.host, self.port, failures,
                            exc or exc.__class__.__name__)
            except Exception:
                failures += 1
                self.stats["connect_failures"] += 1
                log.exception("AMI connection loop error")
            if self._stopping:
                break
            delay = self.reconnect_delay * (2 ** min(max(failures - 1, 0), 5))
            delay = min(delay, max(_MAX_RECONNECT_DELAY, self.reconnect_delay))
            log.info("AMI reconnecting to %s:%d in %.2f s", self.host, self.port, delay)
            await asyncio.sleep(delay)

    async def _connect_once(self) -> None:
        """One connection: connect, banner, login, heartbeat; returns when the connection is gone."""
        loop = asyncio.get_running_loop()
        self._conn_seq += 1
        seq = self._conn_seq
        self._booted_seen = False
        self._announced = False
        self._login_action = None

        def factory() -> AmiProtocol:
            return AmiProtocol(
                self._on_frame,
                on_lost=lambda exc: self._on_lost(seq, exc),
                on_malformed=self._count_malformed,
                max_frame_bytes=self.max_frame_bytes,
            )

        _, proto = await asyncio.wait_for(
            loop.create_connection(factory, self.host, self.port), self.action_timeout
        )
        assert isinstance(proto, AmiProtocol)
        self._protocol = proto
        heartbeat: asyncio.Task[None] | None = None
        try:
            await asyncio.wait_for(asyncio.shield(proto.banner), self.action_timeout)
            login = Action(
                {"Action": "Login", "Username": self.username, "Secret": self._secret, "Events": "on"},
                as_list=False,
            )
            self._login_action = login
            try:
                reply = await asyncio.wait_for(proto.send_action(login), self.action_timeout)
            except TimeoutError:
                raise AmiTimeout(f"no reply to Login within {self.action_timeout:g} s") from None
            if not reply.success:
                raise _LoginRefused(str(reply.get("Message", "") or "refused"))
            log.info("AMI logged in to %s:%d as %r (node %s); waiting for FullyBooted",
                     self.host, self.port, self.username, self.node)
            self.stats["connects"] += 1
            heartbeat = asyncio.create_task(self._heartbeat(proto), name=f"ami-heartbeat-{self.node}")
            self._maybe_ready(seq)
            waited = 0.0
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(proto.closed_future), self.action_timeout)
                    break
                except TimeoutError:
                    waited += self.action_timeout
                    if not self._booted_seen:
                        log.warning("AMI: no FullyBooted %.0f s after login (is Asterisk still booting? does "
                                    "the manager user have read=system?)", waited)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
            if not proto.closed_future.done():
                proto.shutdown("connection attempt ended")
            if self._protocol is proto:
                self._protocol = None

    async def _heartbeat(self, proto: AmiProtocol) -> None:
        """Ping every interval; no Pong within the timeout => drop the connection (it will be re-made)."""
        while not proto.closed:
            await asyncio.sleep(self.heartbeat_interval)
            if proto.closed:
                return
            await self._flowing.wait()  # while we are not reading, a missing Pong proves nothing
            epoch = self._pause_epoch
            ping = Action({"Action": "Ping"}, as_list=False)
            try:
                await asyncio.wait_for(proto.send_action(ping), self.heartbeat_timeout)
            except TimeoutError:
                proto.forget(ping)
                if self._paused or epoch != self._pause_epoch:
                    continue  # the Pong may be behind events we are holding back: inconclusive
                self.stats["heartbeat_failures"] += 1
                log.warning("AMI heartbeat: no Pong within %.2f s from %s:%d; dropping the connection",
                            self.heartbeat_timeout, self.host, self.port)
                proto.shutdown("heartbeat timeout")
                return
            except AmiError:
                return

    # ================================================================ readiness

    def _login_ok(self) -> bool:
        act = self._login_action
        if act is None:
            return False
        fut = act.future
        if not fut.done() or fut.cancelled() or fut.exception() is not None:
            return False
        return bool(fut.result().success)

    def _maybe_ready(self, seq: int) -> None:
        """Logged in + FullyBooted => connected; queue AmiConnected; run on_ready (the resync hook)."""
        if seq != self._conn_seq or self._announced or not self._booted_seen or not self._login_ok():
            return
        proto = self._protocol
        if proto is None or proto.closed:
            return
        self._announced = True
        self.connected = True
        self._ready.set()
        log.info("AMI ready on %s:%d (Asterisk fully booted)", self.host, self.port)
        self._deliver(AmiEvent.make_synthetic("AmiConnected", {"Node": self.node, "Connection": str(seq)}))
        if self._on_ready is not None:
            self._cancel_on_ready()
            self._on_ready_task = asyncio.get_running_loop().create_task(self._run_on_ready(),
                                                                         name=f"ami-on-ready-{self.node}")

    async def _run_on_ready(self) -> None:
        assert self._on_ready is not None
        try:
            await self._on_ready()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats["on_ready_failures"] += 1
            log.exception("AMI on_ready (resync) failed; the connection stays up")

    def _cancel_on_ready(self) -> None:
        task, self._on_ready_task = self._on_ready_task, None
        if task is not None and not task.done():
            task.cancel()

    def _on_lost(self, seq: int, exc: Exception | None) -> None:
        """Called synchronously by the protocol: later actions fail at once with AmiNotConnected."""
        if seq != self._conn_seq:
            return
        was_announced = self._announced
        self._announced = False
        self.connected = False
        self._ready.clear()
        self._cancel_on_ready()
        if was_announced:
            level = logging.INFO if self._stopping else logging.WARNING
            log.log(level, "AMI connection to %s:%d lost: %s", self.host, self.port, exc or "closed by peer")
            extra = {"Node": self.node, "Connection": str(seq)}
            self._deliver(AmiEvent.make_synthetic("AmiDisconnected", extra))
        else:
            log.info("AMI connection to %s:%d closed before ready: %s", self.host, self.port, exc or "closed")

    # ================================================================ events in, in order

    def _count_malformed(self) -> None:
        self.stats["malformed_frames"] += 1

    def _on_frame(self, frame: dict[str, str], received_at: float) -> None:
        """Protocol sink: synchronous, in stream order."""
        self.stats["events_received"] += 1
        name = event_name(frame)
        booted = name == "FullyBooted"
        if booted:
            self._booted_seen = True
        elif name == "Shutdown":
            log.warning("AMI: Asterisk is shutting down (%s)", frame.get("Shutdown", "?"))
            self.connected = False  # fail new actions now; AmiDisconnected follows at connection loss
            self._ready.clear()
        if not booted and self._event_filter is not None:
            try:
                keep = self._event_filter(name)
            except Exception:
                log.exception("AMI event_filter failed on %s; event kept", name)
                keep = True
            if not keep:
                self.stats["events_dropped_by_filter"] += 1
                return
        self._deliver(parse_event(frame, received_at))
        if booted:
            self._maybe_ready(self._conn_seq)

    def _deliver(self, ev: AmiEvent) -> None:
        """Queue an event; if full, hold it (in order) and pause the socket. Never drops."""
        if self._overflow or self.events.full():
            self._overflow.append(ev)
            if not self._paused:
                self._paused = True
                self._pause_epoch += 1
                self._flowing.clear()
                self.stats["backpressure_pauses"] += 1
                if self._protocol is not None:
                    self._protocol.pause_reading()
                log.debug("AMI event queue full (%d): reading paused", self.events.maxsize)
            return
        self.events.put_nowait(ev)

    def _on_consumer_get(self) -> None:
        if (self._overflow or self._paused) and not self._refill_scheduled:
            self._refill_scheduled = True
            asyncio.get_running_loop().call_soon(self._refill)

    def _refill(self) -> None:
        self._refill_scheduled = False
        q = self.events
        while self._overflow and not q.full():
            q.put_nowait(self._overflow.popleft())
        if self._paused and not self._overflow and q.qsize() <= q.maxsize // 2:
            self._paused = False
            self._flowing.set()
            if self._protocol is not None:
                self._protocol.resume_reading()
            log.debug("AMI event queue drained to %d: reading resumed", q.qsize())
