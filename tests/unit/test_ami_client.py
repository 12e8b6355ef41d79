"""AmiClient against a tiny fake AMI server on a real TCP socket (127.0.0.1, ephemeral port).

Each test targets one hardening fix and fails if that fix is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from telephony.ami import (
    AmiActionError,
    AmiClient,
    AmiConnectionLost,
    AmiEvent,
    AmiNotConnected,
    AmiTimeout,
)
from telephony.ami.events import AgentRingNoAnswer

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def frame(*pairs: tuple[str, str]) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n").encode("utf-8")


class FakeConn:
    def __init__(self, index: int, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.writer = writer
        self.actions: list[dict[str, str]] = []


class FakeAmiServer:
    """Speaks just enough AMI: banner, Login, Ping, FullyBooted, list replies, and misbehaviour on demand."""

    def __init__(self) -> None:
        self.conns: list[FakeConn] = []
        self.actions: list[tuple[int, dict[str, str]]] = []
        self.logins = 0
        self.send_fully_booted = True
        self.mute_ping_conns: set[int] = set()  # connections whose Ping is never answered (lost Pong)
        self.drop_on: dict[str, set[int]] = {}  # action -> connections closed on receipt, without reply
        self.ignore: set[str] = set()  # actions never answered
        self.errors: dict[str, str] = {}  # action -> Message of a Response: Error
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for c in self.conns:
            c.writer.close()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    @property
    def last(self) -> FakeConn:
        return self.conns[-1]

    def count(self, action: str) -> int:
        return sum(1 for _, a in self.actions if a.get("Action", "").lower() == action.lower())

    async def send(self, data: bytes, conn: FakeConn | None = None) -> None:
        w = (conn or self.last).writer
        w.write(data)
        await w.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FakeConn(len(self.conns), writer)
        self.conns.append(conn)
        writer.write(BANNER)
        try:
            await writer.drain()
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                action: dict[str, str] = {}
                for line in raw.decode("utf-8").split("\r\n"):
                    if ": " in line:
                        k, v = line.split(": ", 1)
                        action[k] = v
                conn.actions.append(action)
                self.actions.append((conn.index, action))
                await self._answer(conn, action)
        except (asyncio.IncompleteReadError, ConnectionError, _Dropped):
            pass
        finally:
            writer.close()

    async def _answer(self, conn: FakeConn, action: dict[str, str]) -> None:
        name = action.get("Action", "")
        aid = action.get("ActionID", "")
        w = conn.writer
        if conn.index in self.drop_on.get(name, set()):
            writer_transport = w.transport
            writer_transport.abort()
            raise _Dropped
        if name in self.ignore:
            return
        if name in self.errors:
            w.write(frame(("Response", "Error"), ("ActionID", aid), ("Message", self.errors[name])))
        elif name == "Login":
            self.logins += 1
            w.write(frame(("Response", "Success"), ("ActionID", aid), ("Message", "Authentication accepted")))
            if self.send_fully_booted:
                w.write(frame(("Event", "FullyBooted"), ("Privilege", "system,all"),
                              ("Timestamp", f"{time.time():.6f}"), ("Status", "Fully Booted")))
        elif name == "Ping":
            if conn.index in self.mute_ping_conns:
                return
            w.write(frame(("Response", "Success"), ("ActionID", aid), ("Ping", "Pong"),
                          ("Timestamp", f"{time.time():.6f}")))
        elif name == "CoreShowChannels":
            w.write(frame(("Response", "Success"), ("ActionID", aid), ("EventList", "start"),
                          ("Message", "Channels will follow")))
            for i in range(2):
                w.write(frame(("Event", "CoreShowChannel"), ("ActionID", aid), ("Channel", f"PJSIP/a-{i}"),
                              ("Uniqueid", f"1700000000.{i}"), ("CallerIDNum", f"10{i}")))
            w.write(frame(("Event", "CoreShowChannelsComplete"), ("ActionID", aid), ("EventList", "Complete"),
                          ("ListItems", "2")))
        else:
            w.write(frame(("Response", "Success"), ("ActionID", aid), ("Message", f"{name} done")))
        await w.drain()


class _Dropped(Exception):
    pass


async def until(pred: Callable[[], bool], limit: float = 5.0, what: str = "condition") -> None:
    """Wait for a condition with a deadline (polling the loop, no fixed sleep)."""
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def next_event(client: AmiClient, name: str, limit: float = 3.0,
                     seen: list[AmiEvent] | None = None) -> AmiEvent:
    async with asyncio.timeout(limit):
        while True:
            ev = await client.events.get()
            if seen is not None:
                seen.append(ev)
            if ev.name == name:
                return ev


@pytest_asyncio.fixture
async def server() -> AsyncIterator[FakeAmiServer]:
    s = FakeAmiServer()
    await s.start()
    yield s
    await s.close()


ClientFactory = Callable[..., Awaitable[AmiClient]]


@pytest_asyncio.fixture
async def make_client(server: FakeAmiServer) -> AsyncIterator[ClientFactory]:
    clients: list[AmiClient] = []

    async def make(ready: bool = True, **kw: object) -> AmiClient:
        opts: dict[str, object] = {"action_timeout": 2.0, "reconnect_delay": 0.05, "heartbeat_interval": 5.0,
                                   "heartbeat_timeout": 1.0}
        opts.update(kw)
        c = AmiClient("127.0.0.1", server.port, "svc", "s3cret", **opts)  # type: ignore[arg-type]
        clients.append(c)
        await c.start()
        if ready:
            await c.wait_ready(3.0)
        return c

    yield make
    for c in clients:
        await c.stop()


# ------------------------------------------------------------------------------------------------ fix 1


@pytest.mark.asyncio
async def test_utf8_character_split_across_two_tcp_reads_arrives_intact(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    client = await make_client()
    data = frame(("Event", "Newchannel"), ("Channel", "PJSIP/x-1"), ("CallerIDName", "Zoë 李"),
                 ("Uniqueid", "1.1"))
    cut1 = data.index("ë".encode()) + 1  # inside the 2-byte ë
    cut2 = data.index("李".encode()) + 2  # inside the 3-byte 李
    for part in (data[:cut1], data[cut1:cut2], data[cut2:]):
        await server.send(part)
        await asyncio.sleep(0.03)  # a TCP read boundary between the parts
    ev = await next_event(client, "Newchannel")
    assert ev.get("CallerIDName") == "Zoë 李"
    assert client.stats["malformed_frames"] == 0


# ------------------------------------------------------------------------------------------------ fix 2


@pytest.mark.asyncio
async def test_lost_pong_forces_reconnect_within_two_heartbeats(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    interval = 0.2
    server.mute_ping_conns = {0}  # the first connection is half-open: requests vanish, nothing comes back
    client = await make_client(heartbeat_interval=interval, heartbeat_timeout=0.1)
    t0 = time.monotonic()
    await until(lambda: server.logins >= 2, limit=2 * interval + 0.05 + 0.35, what="a second Login")
    assert time.monotonic() - t0 <= 2 * interval + 0.4
    assert client.stats["heartbeat_failures"] == 1
    await client.wait_ready(2.0)
    seen: list[AmiEvent] = []
    await next_event(client, "AmiDisconnected", seen=seen)
    await next_event(client, "AmiConnected", seen=seen)
    # the new connection answers Pings: it stays up
    await until(lambda: sum(1 for i, a in server.actions if i == 1 and a["Action"] == "Ping") >= 2,
                limit=3 * interval + 0.5, what="answered pings on the second connection")
    assert server.logins == 2
    assert client.stats["heartbeat_failures"] == 1


# ------------------------------------------------------------------------------------------------ fix 3


@pytest.mark.asyncio
async def test_originate_pending_at_disconnect_fails_and_is_never_resent(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    server.drop_on["Originate"] = {0}  # connection 0 dies right after receiving the Originate
    client = await make_client()
    with pytest.raises(AmiConnectionLost):
        await client.originate({"Channel": "PJSIP/agent1", "Context": "out", "Exten": "100", "Priority": "1"})
    await until(lambda: server.logins >= 2, what="re-login")
    await client.wait_ready(3.0)
    # a round trip on the new connection: anything re-sent at (re)login would have arrived before its reply
    reply = await client.action("Ping", as_list=False)
    assert reply.get("Ping") == "Pong"  # type: ignore[union-attr]
    assert server.count("Originate") == 1
    originate = next(a for _, a in server.actions if a.get("Action") == "Originate")
    assert originate["Async"] == "true"  # default: a synchronous Originate would stall the session
    assert client.stats["actions_lost"] == 1


@pytest.mark.asyncio
async def test_originate_while_disconnected_is_refused_not_queued(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    client = await make_client(ready=False)
    await client.stop()
    with pytest.raises(AmiNotConnected):
        await client.originate({"Channel": "PJSIP/agent1", "Application": "Echo"})
    assert server.count("Originate") == 0


# ------------------------------------------------------------------------------------------------ fix 4


@pytest.mark.asyncio
async def test_malformed_frame_between_good_events_is_skipped_and_counted(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    client = await make_client()
    good1 = frame(("Event", "UserEvent"), ("UserEvent", "first"))
    junk = b"\x00\xff\xfe\x80\x81 binary junk\r\nthis line has no colon\r\n\r\n"
    good2 = frame(("Event", "UserEvent"), ("UserEvent", "second"))
    await server.send(good1 + junk + good2)
    seen: list[AmiEvent] = []
    first = await next_event(client, "UserEvent", seen=seen)
    second = await next_event(client, "UserEvent", seen=seen)
    assert (first.get("UserEvent"), second.get("UserEvent")) == ("first", "second")
    assert client.stats["malformed_frames"] == 1
    assert client.connected and server.logins == 1
    assert (await client.action("Ping", as_list=False)).get("Ping") == "Pong"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ fix 5


@pytest.mark.asyncio
async def test_burst_of_2000_events_arrives_in_order_with_a_small_queue(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    # short heartbeat: a consumer that stalls must not be taken for a dead socket
    client = await make_client(event_queue_size=50, heartbeat_interval=0.1, heartbeat_timeout=0.05)
    while not client.events.empty():  # FullyBooted, AmiConnected
        client.events.get_nowait()
    pad = "x" * 300
    burst = b"".join(frame(("Event", "UserEvent"), ("UserEvent", "burst"), ("Seq", str(i)), ("Pad", pad))
                     for i in range(2000))
    sender = asyncio.create_task(server.send(burst))
    await until(lambda: client.stats["backpressure_pauses"] >= 1, what="reading paused")
    await asyncio.sleep(0.4)  # a stalled consumer: longer than heartbeat interval + timeout
    seqs: list[int] = []
    async with asyncio.timeout(10):
        while len(seqs) < 2000:
            ev = await client.events.get()
            assert client.events.qsize() <= 50
            if ev.name == "UserEvent":
                seqs.append(int(ev.get("Seq") or -1))
            else:
                pytest.fail(f"unexpected {ev.name} in the burst")
    await sender
    assert seqs == list(range(2000))
    assert server.logins == 1 and client.stats["heartbeat_failures"] == 0
    # reading resumed: the connection still works
    assert (await client.action("Ping", as_list=False)).get("Ping") == "Pong"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ fix 6


@pytest.mark.asyncio
async def test_action_timeout_and_not_connected(server: FakeAmiServer, make_client: ClientFactory) -> None:
    idle = AmiClient("127.0.0.1", server.port, "svc", "s3cret")
    with pytest.raises(AmiNotConnected):
        await idle.action("Ping", as_list=False)

    server.ignore.add("Slow")
    client = await make_client()
    t0 = time.monotonic()
    with pytest.raises(AmiTimeout) as exc:
        await asyncio.wait_for(client.action("Slow", {"X": "1"}, as_list=False, timeout=0.2), 2.0)
    assert isinstance(exc.value, TimeoutError)
    assert 0.15 < time.monotonic() - t0 < 1.0
    assert client.stats["action_timeouts"] == 1
    assert client.connected  # a slow action is not a dead connection
    assert (await client.action("Ping", as_list=False)).get("Ping") == "Pong"  # type: ignore[union-attr]

    await client.stop()
    with pytest.raises(AmiNotConnected):
        await client.action("Ping", as_list=False)


@pytest.mark.asyncio
async def test_pending_action_fails_at_once_when_the_connection_drops(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    server.ignore.add("Slow")
    client = await make_client(action_timeout=30.0)
    task = asyncio.create_task(client.action("Slow", as_list=False))
    await until(lambda: server.count("Slow") == 1, what="Slow received")
    t0 = time.monotonic()
    server.last.writer.transport.abort()
    with pytest.raises(AmiConnectionLost):
        await asyncio.wait_for(task, 2.0)
    assert time.monotonic() - t0 < 1.0


@pytest.mark.asyncio
async def test_error_reply_raises_action_error_even_for_lists(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    server.errors["QueueAdd"] = "Unable to add interface: Already there"
    server.errors["QueueStatus"] = "Permission denied"
    client = await make_client()
    with pytest.raises(AmiActionError, match="Already there"):
        await client.action("QueueAdd", {"Queue": "q1", "Interface": "PJSIP/a"}, as_list=False)
    # panoramisk never resolves an as_list action answered with Response: Error
    with pytest.raises(AmiActionError, match="Permission denied"):
        await client.action("QueueStatus", as_list=True, timeout=1.0)


@pytest.mark.asyncio
async def test_list_action_collects_items_which_do_not_leak_into_events(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    client = await make_client()
    while not client.events.empty():
        client.events.get_nowait()
    replies = await client.action("CoreShowChannels", as_list=True)
    assert isinstance(replies, list) and len(replies) == 4
    items = await client.list_events("CoreShowChannels")
    assert [e.name for e in items] == ["CoreShowChannel", "CoreShowChannel"]
    assert [e.uniqueid for e in items] == ["1700000000.0", "1700000000.1"]
    assert items[0].get("CallerIDNum") == "100" and "content" not in items[0].fields
    await server.send(frame(("Event", "UserEvent"), ("UserEvent", "marker")))
    ev = await asyncio.wait_for(client.events.get(), 2.0)
    assert ev.name == "UserEvent"  # nothing of the lists came before it


@pytest.mark.asyncio
async def test_header_injection_is_refused(server: FakeAmiServer, make_client: ClientFactory) -> None:
    client = await make_client()
    with pytest.raises(ValueError):
        await client.originate({"Channel": "PJSIP/a", "CallerID": "x\r\nAction: Hangup"})
    assert server.count("Originate") == 0 and server.count("Hangup") == 0


# ------------------------------------------------------------------------------------------------ lifecycle


@pytest.mark.asyncio
async def test_ready_waits_for_fully_booted(server: FakeAmiServer, make_client: ClientFactory) -> None:
    server.send_fully_booted = False
    client = await make_client(ready=False)
    await until(lambda: server.logins == 1, what="login")
    with pytest.raises(TimeoutError):
        await client.wait_ready(0.2)
    assert not client.connected
    with pytest.raises(AmiNotConnected):
        await client.action("Ping", as_list=False)
    await server.send(frame(("Event", "FullyBooted"), ("Status", "Fully Booted")))
    await client.wait_ready(2.0)
    assert client.connected
    names = [client.events.get_nowait().name for _ in range(client.events.qsize())]
    assert names == ["FullyBooted", "AmiConnected"]


@pytest.mark.asyncio
async def test_on_ready_runs_after_each_connect_and_its_failure_is_not_fatal(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    calls: list[bool] = []
    client: AmiClient | None = None

    async def on_ready() -> None:
        assert client is not None
        calls.append(client.connected)
        await client.action("CoreShowChannels", as_list=True)  # actions work from the hook
        raise RuntimeError("resync failed")

    client = await make_client(ready=False, on_ready=on_ready)  # assigned before the loop runs
    await until(lambda: client.stats["on_ready_failures"] == 1, what="on_ready run")
    server.last.writer.transport.abort()
    await until(lambda: client.stats["on_ready_failures"] == 2, what="on_ready after reconnect")
    assert calls == [True, True]
    assert client.connected and server.logins == 2


@pytest.mark.asyncio
async def test_event_filter_drops_are_counted_and_fully_booted_always_passes(
    server: FakeAmiServer, make_client: ClientFactory
) -> None:
    client = await make_client(event_filter=lambda name: name not in ("VarSet", "FullyBooted"))
    await server.send(frame(("Event", "VarSet"), ("Variable", "x")) +
                      frame(("Event", "AgentRingNoAnswer"), ("Queue", "q"), ("RingTime", "15000")))
    seen: list[AmiEvent] = []
    ev = await next_event(client, "AgentRingNoAnswer", seen=seen)
    assert isinstance(ev, AgentRingNoAnswer) and ev.ring_time_ms == 15000
    assert [e.name for e in seen] == ["FullyBooted", "AmiConnected", "AgentRingNoAnswer"]
    assert client.stats["events_dropped_by_filter"] == 1
    assert client.stats["events_received"] == 3


@pytest.mark.asyncio
async def test_reconnects_after_server_restart(server: FakeAmiServer, make_client: ClientFactory) -> None:
    client = await make_client()
    port = server.port
    await server.close()
    await until(lambda: not client.connected, what="disconnect noticed")
    with pytest.raises(AmiNotConnected):
        await client.action("Ping", as_list=False)
    restarted = FakeAmiServer()
    restarted.server = await asyncio.start_server(restarted._handle, "127.0.0.1", port)
    try:
        await client.wait_ready(5.0)
        assert restarted.logins == 1
        assert client.stats["reconnects"] >= 1
    finally:
        await restarted.close()
