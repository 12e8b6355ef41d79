"""Faults, tested live: the PBX killed under 20 calls, a half-open AMI socket, the service killed mid-call,
PostgreSQL restarted while events flow. Each test measures what it proves; docs/performance.md ("Faults") has the
numbers and the commands.

Why the tests swap the stack's service for a moment (`swapped_service`) instead of starting a second one: a second
service on the same database would store every event and fact a second time under its own node (the reports do
not filter by node). The stack's own service is stopped, started with a copy of its configuration that differs
in one key (the AMI port of a proxy, a small event buffer), and started again with the original afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import socket
import subprocess
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ops.generate import free_port, write_config
from sim.baresip import BaresipPhone
from telephony.ami import AmiEvent
from tests.live.scene import start_trunk_caller
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import acd, api, phone_for  # noqa: F401  (acd: a fixture, used by name)
from tests.live_stack import AGENT_TONE, LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]


# ---------------------------------------------------------------------------------------------------- helpers
async def health(live: LiveStack) -> dict[str, Any]:
    h = await asyncio.to_thread(live.stack.health)
    assert h is not None, "the service does not answer /healthz"
    return h


async def healthy(live: LiveStack) -> dict[str, Any] | None:
    h = await asyncio.to_thread(live.stack.health)
    return h if h is not None and h.get("status") == "ok" else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@contextlib.asynccontextmanager
async def swapped_service(live: LiveStack, **sections: dict[str, Any]) -> AsyncIterator[None]:
    """The stack's service restarted with its configuration changed in `sections` ({"ami": {"port": 1}}), and
    restarted with the original configuration afterwards (same node, same ports, same log file)."""
    data = tomllib.loads(live.config_path.read_text())
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = live.runtime / f"chaos-{secrets.token_hex(3)}.toml"
    write_config(path, data)
    proc = live.stack.service
    original = list(proc.argv)
    await asyncio.to_thread(proc.stop)
    proc.argv = [*original[:-1], str(path)]
    try:
        await asyncio.to_thread(proc.start)
        yield
    finally:
        await asyncio.to_thread(proc.stop)
        proc.argv = original
        await asyncio.to_thread(proc.start)
        await asyncio.to_thread(live.stack.wait_healthy, 30)
        path.unlink(missing_ok=True)


async def user_events(ami: EventRecorder, tag: str, n: int, *, rate: float = 0.0, start: int = 0) -> None:
    """`n` AMI UserEvents (one event each to every AMI session, the service's included), tagged and numbered."""
    for i in range(start, start + n):
        await ami.client.action("UserEvent", {"UserEvent": "ChaosLoad", "Tag": tag, "Seq": str(i)}, as_list=False)
        if rate:
            await asyncio.sleep(1 / rate)  # a steady stream of events for a known time


async def stored_tagged(live: LiveStack, tag: str) -> tuple[int, int]:
    """(rows, distinct Seq) of the tagged UserEvents in call_events (a connection of its own: PostgreSQL
    restarts in these tests)."""
    db = await asyncpg.connect(live.cfg.database.dsn)
    try:
        row = await db.fetchrow("SELECT count(*) AS n, count(DISTINCT fields->>'Seq') AS d FROM call_events "
                                "WHERE name = 'UserEvent' AND fields->>'Tag' = $1", tag)
    finally:
        await db.close()
    assert row is not None
    return int(row["n"]), int(row["d"])


_LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log_instants(logfile: Path, needle: str, after_offset: int) -> list[float]:
    """Epoch instants of the service log's lines containing `needle`, written after byte `after_offset`."""
    out = []
    with logfile.open("rb") as fh:
        fh.seek(after_offset)
        for raw in fh.read().decode(errors="replace").splitlines():
            m = _LOG_TS.match(raw)
            if m and needle in raw:
                out.append(time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000)
    return out


# ---------------------------------------------------------------------------------------------------- 4. PostgreSQL
async def test_postgres_restart_under_load_buffers_every_event_and_writes_it_once(
    live_stack: LiveStack, ami: EventRecorder,
) -> None:
    tag, total = secrets.token_hex(4), 600
    before = (await health(live_stack))["event_writer"]
    sender = asyncio.create_task(user_events(ami, tag, total, rate=200))  # ~3 s of events
    await eventually(lambda: _stored_at_least(live_stack, tag, 50), timeout=10, what="events flowing into PostgreSQL")
    await asyncio.to_thread(live_stack.stack.pg.stop)
    peak = 0
    try:
        down = await eventually(lambda: _db_down(live_stack), timeout=10, what="health reports the DB down")
        assert down["checks"]["ami"] and down["status"] == "degraded"
        await sender  # the rest of the stream arrives while PostgreSQL is down
        h = await health(live_stack)
        peak = h["event_writer"]["buffered"]
    finally:
        await asyncio.to_thread(live_stack.stack.pg.start)
    rows, distinct = await eventually(lambda: _stored_at_least(live_stack, tag, total), timeout=30, interval=0.2,
                                      what=f"all {total} events stored after the outage")
    after = (await health(live_stack))["event_writer"]
    # Every event written once: none lost within the bound, none twice (a retried batch inserts nothing again).
    assert (rows, distinct) == (total, total)
    assert peak > 100, f"only {peak} events were buffered: the outage did not overlap the stream"
    assert after["outages"] == before["outages"] + 1 and after["refused"] == before["refused"]
    assert after["buffered"] == 0
    print(f"\nFAULTS postgres_restart: {total} events, {peak} buffered at the peak, all written once")


async def _stored_at_least(live: LiveStack, tag: str, n: int) -> tuple[int, int] | None:
    got = await stored_tagged(live, tag)
    return got if got[0] >= n else None


async def _db_down(live: LiveStack) -> dict[str, Any] | None:
    h = await health(live)
    return h if not h["checks"]["db"] else None


async def test_beyond_the_buffer_bound_events_are_refused_counted_and_logged(
    live_stack: LiveStack, ami: EventRecorder,
) -> None:
    tag, total, bound = secrets.token_hex(4), 200, 50
    log_offset = live_stack.stack.service.logfile.stat().st_size
    async with swapped_service(live_stack, database={"buffer_events": bound}):
        await eventually(lambda: healthy(live_stack), timeout=30, what="service with a 50-event buffer healthy")
        before = (await health(live_stack))["event_writer"]
        await asyncio.to_thread(live_stack.stack.pg.stop)
        try:
            await eventually(lambda: _db_down(live_stack), timeout=10, what="health reports the DB down")
            await user_events(ami, tag, total)

            async def refused() -> dict[str, Any] | None:
                w = (await health(live_stack))["event_writer"]
                return w if w["submitted"] + w["refused"] - before["submitted"] - before["refused"] >= total \
                    else None
            w = await eventually(refused, timeout=10, what="every event offered to the writer")
        finally:
            await asyncio.to_thread(live_stack.stack.pg.start)
        accepted = w["submitted"] - before["submitted"]
        dropped = w["refused"] - before["refused"]
        assert w["buffered"] == bound and accepted <= bound
        assert dropped >= total - bound
        await eventually(lambda: _writer_idle(live_stack), timeout=30, what="buffer written after the outage")
        rows, distinct = await stored_tagged(live_stack, tag)
    # What was accepted is stored once; what was refused is said so: counted in /healthz and logged.
    assert rows == distinct and total - dropped <= rows <= bound
    errors = log_instants(live_stack.stack.service.logfile, "event store buffer full", log_offset)
    assert len(errors) == 1, "one error line per outage, not one per event"
    print(f"\nFAULTS buffer_bound: bound {bound}, {total} events offered, {rows} stored, {dropped} refused")


async def _writer_idle(live: LiveStack) -> dict[str, Any] | None:
    h = await health(live)
    return h if h["checks"]["db"] and h["event_writer"]["buffered"] == 0 else None


# ---------------------------------------------------------------------------------------------------- 2. half-open
@dataclass
class BlackholeProxy:
    """A TCP proxy to AMI. `blackhole()` makes every connection open now silently stop forwarding both ways
    (bytes are read and dropped, nothing is closed); connections made later are forwarded normally."""

    upstream: tuple[str, int]
    port: int = 0
    connections: int = 0
    _holed: set[int] = field(default_factory=set)
    _open: set[int] = field(default_factory=set)
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def blackhole(self) -> None:
        self._holed |= self._open

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        cid = self.connections
        self._open.add(cid)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if cid not in self._holed:
                        dst.write(data)
                        await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._open.discard(cid)


async def test_half_open_ami_is_detected_within_two_heartbeats_and_reconnected(
    live_stack: LiveStack, ami: EventRecorder, db: asyncpg.Connection,
) -> None:
    a = live_stack.cfg.ami
    proxy = BlackholeProxy((a.host, a.port))
    await proxy.start()
    try:
        async with swapped_service(live_stack, ami={"port": proxy.port}):
            h = await eventually(lambda: healthy(live_stack), timeout=30, what="service healthy through the proxy")
            assert proxy.connections == 1
            failures = h["ami"]["heartbeat_failures"]

            # The swapped-in service opened a gap at its start (since its last stored event) and closes it in its
            # first resync, which may finish after /healthz turns green: the fault starts once it is closed.
            async def none_open() -> bool:
                return not await db.fetchval("SELECT count(*) FROM event_gaps WHERE node = $1 AND until IS NULL",
                                             live_stack.cfg.node)
            await eventually(none_open, what="the start-up gap closed")
            t0 = time.time()
            proxy.blackhole()

            async def noticed() -> dict[str, Any] | None:
                h = await health(live_stack)
                return h if not h["checks"]["ami"] else None
            await eventually(noticed, timeout=2 * a.heartbeat_interval + 2, interval=0.05,
                             what="the service notices the dead AMI socket")
            detected = time.time() - t0
            h = await eventually(lambda: healthy(live_stack), timeout=15, interval=0.05,
                                 what="the service reconnected through a fresh proxy connection")
            back = time.time() - t0
            assert h["ami"]["heartbeat_failures"] == failures + 1
            assert proxy.connections == 2
            # The service dropped the silent connection itself and recorded the gap, closed by the resync.
            async def gap_closed() -> asyncpg.Record | None:
                gap = await db.fetchrow("SELECT * FROM event_gaps WHERE node = $1 ORDER BY id DESC LIMIT 1",
                                        live_stack.cfg.node)
                return gap if gap is not None and gap["since"].timestamp() >= t0 and gap["until"] else None
            await eventually(gap_closed, timeout=10, what="the AMI gap recorded and closed")
    finally:
        await proxy.stop()
    # A Ping every interval, answered within the timeout: a dead socket is found within interval + timeout,
    # well within two heartbeats.
    assert detected <= a.heartbeat_interval + a.heartbeat_timeout + 1.0, detected
    assert detected <= 2 * a.heartbeat_interval
    print(f"\nFAULTS half_open: detected after {detected:.2f} s (heartbeat {a.heartbeat_interval:g} s, "
          f"timeout {a.heartbeat_timeout:g} s), healthy again after {back:.2f} s")


# ---------------------------------------------------------------------------------------------------- 1. PBX killed
AGENTS = 10
CALLERS = 20
# The pattern: 10 callers (answered by the 10 agents), then 10 more who wait. The waiting ones hang up first
# (abandoned), the answered ones later: no agent comes free while anyone waits, so both runs answer exactly 10.
ANSWERED_CALL_S = 18  # after the IVR answered
WAITING_CALL_S = 9

_SIPP_CALLER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="trunk caller, digest auth, hangs up after a pause">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:+4930555@@PREFIX@@[call_number]@[remote_ip]:[remote_port]>;tag=[pid]T[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:carrier@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="401" auth="true"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]
From: <sip:+4930555@@PREFIX@@[call_number]@[remote_ip]:[remote_port]>;tag=[pid]T[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:+4930555@@PREFIX@@[call_number]@[remote_ip]:[remote_port]>;tag=[pid]T[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 2 INVITE
Contact: <sip:carrier@[local_ip]:[local_port]>
Allow: INVITE, ACK, BYE, CANCEL, UPDATE, INFO, NOTIFY, OPTIONS
[authentication username=@@USER@@ password=@@PASSWORD@@]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:+4930555@@PREFIX@@[call_number]@[remote_ip]:[remote_port]>;tag=[pid]T[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
[routes]
Call-ID: [call_id]
CSeq: 2 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause milliseconds="@@PAUSE_MS@@"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:+4930555@@PREFIX@@[call_number]@[remote_ip]:[remote_port]>;tag=[pid]T[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
[routes]
Call-ID: [call_id]
CSeq: 3 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""


@dataclass
class Center:
    skill: str
    queues: list[str]
    dids: list[str]
    agents: list[str]
    phones: list[str]


async def make_center(live: LiveStack, phones: list[BaresipPhone], n_queues: int) -> Center:
    """`AGENTS` new phones (started, registered) and agents with one skill, in `n_queues` fresh queues."""
    tag = secrets.token_hex(3)
    skill = f"sk-{tag}"
    c = Center(skill, [], [], [], [])
    await api(live, "POST", "/api/v1/skills", {"name": skill}, 201)
    for i in range(n_queues):
        q, did = f"chaos{i}-{tag}", f"4{secrets.randbelow(10**6):06d}"
        # No ACW (the next run's calls must not wait for it), no recordings (disk and CPU), long ring timeout.
        await api(live, "POST", "/api/v1/queues", {"name": q, "required_skill": skill, "recording": "none",
                                                  "wrapup_s": 0, "ring_timeout_s": 30}, 201)
        await api(live, "POST", "/api/v1/routes", {"did": did, "queue": q}, 201)
        c.queues.append(q)
        c.dids.append(did)
    secrets_of = {}
    for i in range(AGENTS):
        name = f"cx{i}{tag}"
        secrets_of[name] = (await api(live, "POST", "/api/v1/phones", {"name": name}, 201))["password"]
        c.phones.append(name)
        agent = f"ag{i}-{tag}"
        await api(live, "POST", "/api/v1/agents", {"name": agent, "phone": name, "skills": {skill: 3}}, 201)
        c.agents.append(agent)

    async def start(i: int, name: str) -> None:
        p = BaresipPhone(f"{name}-chaos", workdir=live.runtime / "phones" / f"chaos-{name}", sip_user=name,
                         sip_password=secrets_of[name], registrar=live.sip_registrar,
                         tone_hz=AGENT_TONE + 10 * i, record=False)
        phones.append(p)
        await p.start()
        await p.wait_registered(15)
    await asyncio.gather(*(start(i, n) for i, n in enumerate(c.phones)))
    for agent in c.agents:
        await api(live, "POST", f"/api/v1/agents/{agent}/login")
    return c


async def drop_center(live: LiveStack, c: Center) -> None:
    steps = [("POST", f"/api/v1/agents/{a}/force", {"state": "logged_out"}) for a in c.agents]
    steps += [("DELETE", f"/api/v1/agents/{a}", None) for a in c.agents]
    steps += [("DELETE", f"/api/v1/routes/{d}", None) for d in c.dids]
    steps += [("DELETE", f"/api/v1/queues/{q}", None) for q in c.queues]
    steps += [("DELETE", f"/api/v1/skills/{c.skill}", None)]
    steps += [("DELETE", f"/api/v1/phones/{p}", None) for p in c.phones]
    for method, path, body in steps:
        await asyncio.to_thread(live.api, method, path, body)


def sipp_callers(live: LiveStack, did: str, n: int, pause_ms: int, prefix: int) -> subprocess.Popen[bytes]:
    """One SIPp process placing `n` trunk calls to `did` (5 a second) from +4930555<prefix><i>, each hung up
    `pause_ms` after the IVR answered it.

    The INVITE allows UPDATE and `-aa` answers it: Asterisk updates the caller's connected line with an UPDATE
    when an agent answers; a re-INVITE (what it sends to a peer that does not allow UPDATE) would be an
    unexpected message to this scenario and SIPp would never hang the call up."""
    trunk = live.cfg.sip.trunk
    folder = live.runtime / "sipp" / secrets.token_hex(3)
    folder.mkdir(parents=True)
    scenario = folder / "caller.xml"
    scenario.write_text(_SIPP_CALLER.replace("@@USER@@", trunk.user).replace("@@PASSWORD@@", trunk.password)
                        .replace("@@PAUSE_MS@@", str(pause_ms)).replace("@@PREFIX@@", str(prefix)))
    argv = ["sipp", live.sip_registrar, "-sf", str(scenario), "-s", did, "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)),
            "-m", str(n), "-l", str(n), "-r", "5",
            "-timeout", "60s", "-nostdin", "-aa", "-trace_err",
            "-error_file", str(folder / "errors.log")]
    return subprocess.Popen(argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=(folder / "stderr.log").open("wb"))


@dataclass
class Run:
    joins: list[AmiEvent]
    connects: list[AmiEvent]
    linkedids: set[str]


async def place_calls(live: LiveStack, ami: EventRecorder, c: Center, queue: int,
                      procs: list[subprocess.Popen[bytes]]) -> Run:
    """20 calls into queue `queue`: the first 10 are answered by the 10 agents, the other 10 wait."""
    q = c.queues[queue]
    mark = ami.mark()
    procs.append(sipp_callers(live, c.dids[queue], AGENTS, ANSWERED_CALL_S * 1000, 1))

    async def answered() -> bool:
        return len(ami.find("AgentConnect", lambda e: e.queue == q, since=mark)) >= AGENTS
    await eventually(answered, timeout=20, interval=0.2, what=f"{AGENTS} callers answered in {q}")
    procs.append(sipp_callers(live, c.dids[queue], CALLERS - AGENTS, WAITING_CALL_S * 1000, 2))

    async def all_in() -> Run | None:
        joins = ami.find("QueueCallerJoin", lambda e: e.queue == q, since=mark)
        connects = ami.find("AgentConnect", lambda e: e.queue == q, since=mark)
        if len(joins) >= CALLERS and len(connects) >= AGENTS:
            return Run(joins, connects, {e.linkedid or "" for e in joins})
        return None
    run = await eventually(all_in, timeout=20, interval=0.2, what=f"{CALLERS} callers in {q}, {AGENTS} answered")
    assert len(run.joins) == CALLERS and len(run.connects) == AGENTS
    return run


async def queue_report(live: LiveStack, queue: str, around: float) -> dict[str, Any]:
    body = await api(live, "GET", f"/api/v1/reports/queues?from={_iso(around - 3600)}&to={_iso(around + 3600)}"
                                  f"&interval=1h&queue={queue}")
    return body["queues"][0]["total"]  # type: ignore[no-any-return]


async def facts(db: asyncpg.Connection, queue: str, n: int, *, final: bool) -> list[asyncpg.Record]:
    seen: list[asyncpg.Record] = []

    async def check() -> list[asyncpg.Record] | None:
        rows = await db.fetch("SELECT * FROM queue_calls WHERE queue = $1 ORDER BY entered_at", queue)
        seen[:] = rows
        done = [r for r in rows if r["final"]] if final else rows
        return rows if len(done) == n else None
    try:
        return await eventually(check, timeout=30, interval=0.25, what=f"{n} facts in {queue}")
    except TimeoutError as exc:
        got = [(r["outcome"], r["wait_s"], r["talk_s"], r["acw_s"], r["final"]) for r in seen]
        raise AssertionError(f"{exc}; facts: {got}") from None


async def test_asterisk_killed_under_twenty_calls_and_restarted(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], db: asyncpg.Connection,
) -> None:
    c = await make_center(live_stack, phones, 2)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # The same call pattern twice, on two fresh queues: without the fault, then with it.
        calm = await place_calls(live_stack, ami, c, 0, procs)
        for p in procs:
            await asyncio.to_thread(p.wait, 60)
        calm_facts = await facts(db, c.queues[0], CALLERS, final=True)
        calm_report = await queue_report(live_stack, c.queues[0], calm.joins[0].timestamp)

        run = await place_calls(live_stack, ami, c, 1, procs)
        # The waiting callers wait a known time, longer than the short-abandon threshold and shorter than their
        # WAITING_CALL_S, as in the calm run, where they hung up unanswered after waiting longer.
        await asyncio.sleep(max(0.0, max(e.timestamp for e in run.joins) + 6.0 - time.time()))
        up = {e.uniqueid for e in run.joins}
        answered_at_kill = {e.uniqueid for e in run.connects}
        before = (await health(live_stack))["ami"]
        log_offset = live_stack.stack.service.logfile.stat().st_size
        killed_at = time.time()
        await asyncio.to_thread(live_stack.stack.asterisk.kill)
        await asyncio.to_thread(live_stack.stack.asterisk.start)
        booted = time.time()  # `core waitfullybooted` answered: the new FullyBooted, to the 0.1 s poll
        h = await eventually(lambda: healthy(live_stack), timeout=30, interval=0.05,
                             what="service reconnected to the restarted Asterisk")
        seen_ready = time.time()
        ready = [t for t in log_instants(live_stack.stack.service.logfile, "AMI ready on", log_offset)
                 if t >= killed_at]
        assert ready, "no 'AMI ready' line in the service log after the restart"
        reconnect = ready[0] - booted
        assert h["ami"]["reconnects"] > before["reconnects"]
        assert reconnect < 5.0, f"the service reconnected {reconnect:.2f} s after FullyBooted"
        await ami.client.wait_ready(20)  # the test's own AMI session reconnects too

        # The agents are back in both queues (Asterisk forgot its dynamic members; the service re-added them).
        async def members_back() -> bool:
            status = await ami.client.list_events("QueueStatus")
            names = {(e.queue, e.fields.get("Name")) for e in status if e.name == "QueueMember"}
            return all((q, a) in names for q in c.queues for a in c.agents)
        await eventually(members_back, timeout=15, interval=0.2, what="every agent back in both queues")
        for q in c.queues:
            listed = await api(live_stack, "GET", f"/api/v1/queues/{q}/members")
            assert {m["member"] for m in listed} == set(c.agents)
        # No ghost: the live state has no channel of the cut calls, no caller waiting, no agent still on a call
        # (once the resync is over: the wallboard is rebuilt at its end).
        async def resynced() -> bool:
            return bool(log_instants(live_stack.stack.service.logfile, "resynced:", log_offset))
        await eventually(resynced, timeout=15, what="the service's resync after the reconnect")
        snap = await api(live_stack, "GET", "/api/v1/live")
        assert not [ch for ch in snap["channels"] if ch.get("linkedid") in run.linkedids
                    or ch.get("uniqueid") in up], snap["channels"]
        (qlive,) = [q for q in snap["queues"] if q["queue"] == c.queues[1]]
        assert qlive["waiting"] == 0, qlive

        states: list[dict[str, Any]] = []

        async def agents_settled() -> bool:
            states[:] = [await api(live_stack, "GET", f"/api/v1/agents/{a}/state") for a in c.agents]
            return all(s["state"] == "available" for s in states)
        with contextlib.suppress(TimeoutError):
            await eventually(agents_settled, timeout=10, interval=0.2, what="agents available after the restart")
        assert all(s["state"] == "available" for s in states), states
        # The gap is recorded and reconciled from queue_log.
        async def reconciled() -> asyncpg.Record | None:
            gap = await db.fetchrow("SELECT * FROM event_gaps WHERE node = $1 ORDER BY id DESC LIMIT 1",
                                    live_stack.cfg.node)
            return gap if gap is not None and gap["since"].timestamp() >= killed_at - 1 and gap["reconciled_at"] \
                else None
        await eventually(reconciled, timeout=10, what="the gap of the PBX restart reconciled")

        # The same pattern after the fault gives the same figures, except what the kill decided.
        cut = await facts(db, c.queues[1], CALLERS, final=True)
        cut_report = await queue_report(live_stack, c.queues[1], run.joins[0].timestamp)
        calm_outcomes = sorted(r["outcome"] for r in calm_facts)
        assert calm_outcomes == ["abandoned"] * (CALLERS - AGENTS) + ["answered"] * AGENTS, calm_outcomes
        assert (calm_report["offered"], calm_report["answered"], calm_report["abandoned"]) == (CALLERS, AGENTS,
                                                                                               CALLERS - AGENTS)
        # queue_log knows the calls the agents had answered (CONNECT): answered, with the wait seen live.
        answered = [r for r in cut if r["uniqueid"] in answered_at_kill]
        assert len(answered) == AGENTS and all(r["outcome"] == "answered" for r in answered)
        assert cut_report["offered"] == calm_report["offered"]
        assert cut_report["answered"] == calm_report["answered"]
        assert abs(cut_report["asa_s"] - calm_report["asa_s"]) < 1.0
        # The callers still waiting when the PBX died have only ENTERQUEUE in queue_log: Asterisk records no end.
        # The reconnect closes them at the gap's start (reconcile.close_lost_calls): their call ended unanswered
        # there, an abandon, as in the calm run where they hung up while waiting. The report is the same.
        waiting = [r for r in cut if r["uniqueid"] not in answered_at_kill]
        assert len(waiting) == CALLERS - AGENTS
        assert all(r["outcome"] == "abandoned" and r["final"] for r in waiting), waiting
        assert cut_report["abandoned"] == calm_report["abandoned"]
        assert all(r["final"] and r["talk_s"] is not None for r in answered), answered
        print(f"\nFAULTS asterisk_kill: reconnected {reconnect:.2f} s after FullyBooted (healthz saw it "
              f"{seen_ready - booted:.2f} s after), restart took {booted - killed_at:.2f} s; "
              f"cut facts: {sorted((r['outcome'] or 'none') for r in cut)}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        await drop_center(live_stack, c)


# ---------------------------------------------------------------------------------------------------- 3. service killed
async def test_service_killed_mid_call_loses_no_event_and_sends_no_originate_twice(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    s = await acd({"kay": ("agent1", 3)}, recording="on_demand")
    (agent,) = s.agents
    agent_phone = await phone_for(live_stack, phones, "agent1")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")
    caller = await start_trunk_caller(live_stack, phones, "+4940100990")
    mark = ami.mark()
    await caller.dial(f"sip:{s.did}@{live_stack.sip_registrar}", timeout=15)
    conn = await ami.wait_for("AgentConnect", lambda e: e.queue == s.queue, since=mark)
    await agent_phone.wait_event("CALL_ESTABLISHED", 10)
    lid = conn.linkedid
    # An on-demand recording: the service originates a Local channel into [record-on-demand].
    body = await api(live_stack, "POST", f"/api/v1/agents/{agent}/recording", {"action": "start"})
    assert body["recording"]["trigger"] == "on_demand", body
    await ami.wait_for("OriginateResponse", lambda e: (e.fields.get("ActionID") or "").startswith("rec-"),
                       since=mark)
    seen_before = [e for e in ami.events[mark:] if e.linkedid == lid]

    def key(name: str, fields: Any) -> tuple[str, str, str]:
        return (name, str(fields.get("Timestamp")), str(fields.get("Uniqueid")))

    async def stored_rows() -> list[asyncpg.Record]:
        return list(await db.fetch("SELECT name, fields FROM call_events WHERE linkedid = $1", lid))

    async def all_stored() -> bool:
        have = {key(r["name"], _fields(r)) for r in await stored_rows()}
        return all(key(e.name, e.fields) in have for e in seen_before)
    # The service commits within its 50 ms flush interval: wait for it, then kill it (SIGKILL: no clean-up).
    await eventually(all_stored, timeout=10, what="the call's events stored before the kill")
    await asyncio.to_thread(live_stack.stack.service.kill)
    outage = ami.mark()
    await asyncio.sleep(1.0)  # the service is away for a known time while the call goes on
    await caller.hangup()
    end = await ami.wait_for("AgentComplete", lambda e: e.queue == s.queue, since=outage)
    await ami.wait_for("Hangup", lambda e: e.uniqueid == lid, since=outage)
    await asyncio.to_thread(live_stack.stack.service.start)
    await asyncio.to_thread(live_stack.stack.wait_healthy, 30)

    async def final_fact() -> asyncpg.Record | None:
        rows = await db.fetch("SELECT * FROM queue_calls WHERE linkedid = $1", lid)
        return rows[0] if len(rows) == 1 and rows[0]["final"] else None
    fact = await eventually(final_fact, timeout=20, interval=0.2, what="the call's facts after reconciliation")
    assert fact["outcome"] == "answered" and fact["agent"] == agent
    assert abs(fact["talk_s"] - (end.timestamp - conn.timestamp)) < 0.1  # the end restored from queue_log + CEL
    rows = await stored_rows()
    keys = [key(r["name"], _fields(r)) for r in rows]
    # Every event the service received before the kill is stored exactly once; none twice after the restart.
    assert len(keys) == len(set(keys)), "an event stored twice"
    assert {key(e.name, e.fields) for e in seen_before} <= set(keys)
    names = [r["name"] for r in rows]
    # The queue events of the call: each once, live or rebuilt (the outage's AgentComplete from queue_log).
    assert [names.count(n) for n in ("QueueCallerJoin", "AgentConnect", "AgentComplete")] == [1, 1, 1], names
    assert [_fields(r).get("Source") for r in rows if r["name"] == "AgentComplete"] == ["queue_log"]
    # One Originate: one OriginateResponse, one recorder channel, ever (the restart did not re-send it).
    originated = ami.find("OriginateResponse", lambda e: (e.fields.get("ActionID") or "").startswith("rec-"),
                          since=mark)
    recorders = ami.find("Newchannel", lambda e: (e.fields.get("Channel") or "").startswith(
        "Local/s@record-on-demand") and (e.fields.get("Channel") or "").endswith(";1"), since=mark)
    assert (len(originated), len(recorders)) == (1, 1)

    async def recording_done() -> list[asyncpg.Record] | None:
        recs = await db.fetch("SELECT status, trigger FROM recordings WHERE linkedid = $1", lid)
        return recs if recs and all(r["status"] != "recording" for r in recs) else None
    recs = await eventually(recording_done, timeout=15, what="the recording finished after the restart")
    assert [(r["trigger"], r["status"]) for r in recs] == [("on_demand", "complete")]


def _fields(row: asyncpg.Record) -> dict[str, Any]:
    f = row["fields"]
    return json.loads(f) if isinstance(f, str) else dict(f)
