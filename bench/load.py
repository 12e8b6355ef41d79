"""Load: the same recorded queue call on bare Asterisk and on the full stack, ramped until the first failed call.

    python bench/load.py                       # both, ramp 10, 40, 80 … 640, 720, talk 35 s (~35 min)
    python bench/load.py --only full --steps 200,240,280
    python bench/load.py --smoke               # 5 calls on each, ~17 s
    python bench/load.py --soak 30 --capacity 240   # the full stack at 60 % of 240 for 30 minutes

Numbers and the commands that measured them: docs/performance.md ("Load", "Soak").

The call: a carrier call through the trunk (SIPp UAC, digest auth, a looped ulaw WAV sent with rtp_stream) is
answered, queued, rung to a free agent (SIPp UAS answering at once, `-rtp_echo`), recorded by app_queue's
MixMonitor from the agent's answer, talks `--talk` seconds and is hung up by the caller.

(a) bare Asterisk: the project's rendered config (ops.asterisk_config) with bench/asterisk-bare/ laid over it:
    static dialplan Answer → Queue, static agent endpoints whose contacts are one SIPp UAS, static members,
    `monitor-format = wav`. Chrooted and started by ops.asterisk like the stack's PBX. No database, no service.
(b) the full stack (ops.stack.Stack): DID → FastAGI IVR → queue with recording policy `all`, the service,
    PostgreSQL, the projector (queue_calls facts), a WebSocket feed client connected all along. The agents and
    their phones are created over the REST API and logged in by the ACD; ONE SIPp registers every phone from its
    own port (so Asterisk dials distinct contacts sip:<phone>@127.0.0.1:<that port>) and answers the INVITEs and
    the qualify OPTIONS as its out-of-call scenario (bench/sipp/register.xml + agent.xml).

A call counts as OK only when AMI showed its QueueCallerJoin, AgentConnect and an AgentComplete with
Reason=caller and no QueueCallerAbandon (and, for (b), its queue_calls fact says `answered`). SIPp's own counts
are printed but not used. A step places N calls at up to --max-rate calls/s so that all N are up together for
a while (peak bridged calls are counted from AMI), each step bounded in time. The capacity is the last step
with 0 failures (and >= 95 % of its calls bridged at the same moment). CPU (% of one core, /proc/<pid>/stat
deltas over the step) of Asterisk, the service, PostgreSQL (all its processes) and SIPp; RSS of Asterisk and
the service; for (b) event → commit (polling call_events every 20 ms: the first sight of a row minus its AMI
Timestamp, so up to 20 ms late; "received" = received_at − Timestamp) and event → push (the feed client's receive
time minus the message's event_ts) p95.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without install

from ops import rootfs
from ops.asterisk import AsteriskInstance
from ops.asterisk_config import render_text, template_values
from ops.generate import build_config_data, free_port, write_config
from ops.stack import Stack
from service.config import Config, load_config
from telephony.ami import AmiClient, AmiEvent

BENCH = Path(__file__).resolve().parent
SIPP_DIR = BENCH / "sipp"
BARE_DIR = BENCH / "asterisk-bare"
DID = "4000"
QUEUE = "bench"
CLK = os.sysconf("SC_CLK_TCK")
QUEUE_EVENTS = {"QueueCallerJoin", "AgentConnect", "AgentComplete", "QueueCallerAbandon", "AgentRingNoAnswer"}
DEFAULT_STEPS = "10,40,80,120,160,200,240,280,320,400,480,560,640,720"
#: a step passes only when this share of its calls was bridged at the same time (else the PBX could not keep up
#: and the calls did not overlap: the concurrency was not reached)
REACHED = 0.95


# ---------------------------------------------------------------------------------------------------- processes
def _ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])  # utime + stime


def _ppid(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2:].split()[1])


def tree(root: int | None) -> list[int]:
    """`root` and all its descendants."""
    if root is None:
        return []
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            pp = _ppid(int(d))
            if pp is not None:
                children.setdefault(pp, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class CpuMeter:
    """Samples the CPU ticks of process groups every 0.5 s; `percent()` = % of one core over the period.
    Processes that start or end inside the period lose at most one sample interval."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.first: dict[tuple[str, int], int] = {}
        self.last: dict[tuple[str, int], int] = {}
        self.t0 = self.t1 = 0.0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        for name, pids in self.groups.items():
            for pid in pids():
                t = _ticks(pid)
                if t is not None:
                    self.first.setdefault((name, pid), t)
                    self.last[(name, pid)] = t
        self.t1 = time.monotonic()

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(0.5)

    def start(self) -> None:
        self.first.clear()
        self.last.clear()
        self.t0 = time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.sample)
        wall = max(self.t1 - self.t0, 1e-3)
        out = {name: 0.0 for name in self.groups}
        for key, last in self.last.items():
            out[key[0]] += (last - self.first[key]) / CLK / wall * 100
        return out


# ---------------------------------------------------------------------------------------------------- results
def p95(values: list[float]) -> float | None:
    if len(values) < 2:
        return values[0] * 1000 if values else None
    return statistics.quantiles(values, n=100)[94] * 1000


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f} ms"


@dataclass
class Step:
    target: int
    offered: int = 0
    joined: int = 0
    ok: int = 0
    failed: int = 0
    peak_bridged: int = 0
    sipp_rc: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    commit_p95: float | None = None
    received_p95: float | None = None
    push_p95: float | None = None
    commits: int = 0
    pushes: int = 0
    facts_missing: int = 0
    seconds: float = 0.0


def judge(events: list[AmiEvent], offered: int) -> tuple[set[str], dict[str, int], int]:
    """(the OK callers' Uniqueids, failure reasons, peak bridged calls) from the step's AMI queue events."""
    joins = {e.uniqueid for e in events if e.name == "QueueCallerJoin" and e.uniqueid}
    abandoned = {e.uniqueid for e in events if e.name == "QueueCallerAbandon"}
    connects: dict[str, AmiEvent] = {}
    open_by_member: dict[tuple[str, str], list[str]] = {}
    completed: dict[str, str] = {}
    bridged = peak = 0
    for e in events:
        member = (e.queue or "", e.fields.get("MemberName") or e.fields.get("Interface") or "")
        if e.name == "AgentConnect" and e.uniqueid:
            connects[e.uniqueid] = e
            open_by_member.setdefault(member, []).append(e.uniqueid)
            bridged += 1
            peak = max(peak, bridged)
        elif e.name == "AgentComplete":
            uid = e.uniqueid
            # Under load Asterisk 22 sometimes sends AgentComplete without channel fields (DESIGN §7):
            # correlate it by queue + member with the oldest open AgentConnect.
            opened = open_by_member.get(member, [])
            if not uid and opened:
                uid = opened[0]
            if uid in opened:
                opened.remove(uid)
            if uid:
                completed[uid] = e.fields.get("Reason") or "caller"
                bridged -= 1
    ok = {u for u in joins if u in connects and completed.get(u) == "caller" and u not in abandoned}
    reasons: dict[str, int] = {}

    def count(why: str, n: int) -> None:
        if n > 0:
            reasons[why] = reasons.get(why, 0) + n
    count("never joined the queue", offered - len(joins))
    count("abandoned in the queue", len(joins & abandoned))
    count("no AgentConnect", len([u for u in joins - abandoned if u not in connects]))
    count("not completed by the caller", len([u for u in connects if completed.get(u) != "caller"]))
    return ok, reasons, peak


# ---------------------------------------------------------------------------------------------------- SIPp
def udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def tone_file(folder: Path) -> Path:
    """A 2 s 700 Hz ulaw WAV for rtp_stream (looped by the scenario)."""
    path = folder / "tone.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8", str(path), "synth", "2",
                    "sine", "700", "vol", "0.3"], check=True)
    return path


class SippFleet:
    """Every SIPp this bench starts, killed (process group) on the way out."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        d = self.folder / name
        d.mkdir(parents=True, exist_ok=True)
        full = ["sipp", *argv, "-i", "127.0.0.1", "-mi", "127.0.0.1", "-nostdin", "-trace_err",
                "-error_file", str(d / "errors.log")]
        p = subprocess.Popen(full, cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=(d / "stderr.log").open("wb"), start_new_session=True)
        self.procs.append(p)
        return p

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def stop_all(self) -> None:
        for p in self.procs:
            self.stop(p)


def scenario(folder: Path, name: str, **values: str) -> Path:
    text = (SIPP_DIR / name).read_text()
    for k, v in values.items():
        text = text.replace(f"@@{k}@@", v)
    out = folder / name
    out.write_text(text)
    return out


# ---------------------------------------------------------------------------------------------------- targets
def bench_config(runtime: Path, node: str) -> tuple[Config, Path]:
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data folder
    data = build_config_data(runtime, agents=0, supervisors=0, node=node)
    # Two RTP ports (RTP + RTCP) per channel, two channels per call: the bench ramps past the default range's ~600
    # calls. Both targets get the same wide range.
    start = random.randrange(20000, 36000, 2)
    data["sip"]["rtp_start"], data["sip"]["rtp_end"] = start, start + 3999
    path = runtime / "ccpbx.toml"
    write_config(path, data)
    cfg = load_config(path)
    rootfs.ensure_rootfs(Path(cfg.asterisk.rootfs))
    return cfg, path


class BareAsterisk(AsteriskInstance):
    """The project's rendered config with bench/asterisk-bare/ laid over it (static trunk, agents, queue)."""

    def __init__(self, cfg: Config, agents: int, agent_port: int) -> None:
        super().__init__(cfg)
        self.agents = agents
        self.agent_port = agent_port

    def render_config(self) -> None:
        super().render_config()
        etc = self.dirs.etc
        names = [f"agent{i}" for i in range(1, self.agents + 1)]
        values = template_values(self.cfg, self.paths()) | {
            "AGENT_PORT": str(self.agent_port),
            "AGENTS_PJSIP": "\n".join(
                f"[{n}](endpoint-common)\ncontext = agents\naors = {n}\n\n"
                f"[{n}](aor-phone)\ncontact = sip:{n}@127.0.0.1:{self.agent_port}\n" for n in names),
            "MEMBERS": "\n".join(f"member => PJSIP/{n},0,{n},PJSIP/{n}" for n in names),
        }
        for src in sorted(BARE_DIR.glob("*.conf")):
            (etc / src.name).write_text(render_text(src.read_text(), values, src.name))
        modules = etc / "modules.conf"
        modules.write_text("".join(line for line in modules.read_text().splitlines(keepends=True)
                                   if "res_config_pgsql" not in line))
        (etc / "res_pgsql.conf").unlink(missing_ok=True)


class Target:
    """What a step needs from (a) or (b)."""

    label = ""
    cfg: Config
    asterisk: AsteriskInstance

    def cpu_groups(self) -> dict[str, Callable[[], list[int]]]:
        return {"asterisk": lambda: [p for p in [self.asterisk.pid()] if p], "bench": lambda: [os.getpid()]}

    def rss(self) -> dict[str, float]:
        return {"asterisk": rss_mb(self.asterisk.pid())}

    def cli(self, command: str) -> str:
        return self.asterisk.cli(command, timeout=20, check=False).stdout

    def channels(self) -> int:
        out = self.cli("core show channels count")
        for line in out.splitlines():
            if "active channel" in line:
                return int(line.split()[0])
        return -1


def count_lines(text: str, needle: str) -> int:
    return sum(1 for line in text.splitlines() if needle in line)


def leak_counts(t: Target) -> dict[str, Any]:
    ch = t.cli("core show channels count")
    bridges = t.cli("bridge show all")
    tps = t.cli("core show taskprocessors")
    tp_lines = [ln for ln in tps.splitlines() if ln and ln[0].isalnum() and "Processor" not in ln
                and "taskprocessors" not in ln]
    out: dict[str, Any] = {"channels": t.channels(),
                           "calls": next((int(ln.split()[0]) for ln in ch.splitlines() if "active call" in ln), -1),
                           "bridges": len([ln for ln in bridges.splitlines()[1:] if ln.strip()]),
                           "taskprocessors": len(tp_lines)}
    return out


# ---------------------------------------------------------------------------------------------------- the runs
class Run:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.fleet = SippFleet(work / "sipp")
        self.audio = tone_file(work)

    async def caller_step(self, t: Target, n: int, prefix: int, rate: float, talk_s: float,
                          total: int | None = None) -> subprocess.Popen[bytes]:
        trunk = t.cfg.sip.trunk
        folder = self.work / "sipp" / f"{t.label}-callers-{prefix}"
        folder.mkdir(parents=True, exist_ok=True)
        sf = scenario(folder, "caller.xml", PREFIX=str(prefix), TALK_MS=str(int(talk_s * 1000)),
                      AUDIO=str(self.audio))
        m = total or n
        bound = m / rate + talk_s + 60
        argv = [f"127.0.0.1:{t.cfg.sip.port}", "-sf", str(sf), "-s", DID, "-au", trunk.user, "-ap", trunk.password,
                "-p", str(udp_port()), "-mp", str(udp_port()), "-m", str(m), "-l", str(n), "-r", f"{rate:.2f}",
                "-rp", "1000", "-timeout", f"{int(bound)}s", "-aa"]
        return self.fleet.start(f"{t.label}-callers-{prefix}", argv)


class Bare(Target):
    label = "a"

    def __init__(self, run: Run, agents: int) -> None:
        self.run = run
        self.cfg, _ = bench_config(run.work / "bare", "benchbare")
        self.agent_port = udp_port()
        self.asterisk = BareAsterisk(self.cfg, agents, self.agent_port)
        self.agents = agents

    async def up(self) -> None:
        await asyncio.to_thread(self.asterisk.start)
        hold = self.run.args.bound_s
        self.agent_proc = self.run.fleet.start("a-agents", [
            "-sf", str(scenario(self.run.work, "agent.xml")), "-p", str(self.agent_port), "-mp", str(udp_port()),
            "-rtp_echo", "-m", "100000000", "-l", str(self.agents * 2 + 50), "-timeout", f"{hold}s", "-aa"])

    def cpu_groups(self) -> dict[str, Callable[[], list[int]]]:
        return {**super().cpu_groups(), "sipp": self.run.fleet.pids}

    async def down(self) -> None:
        self.run.fleet.stop_all()
        await asyncio.to_thread(self.asterisk.stop)

    async def facts_missing(self, ok: set[str]) -> int:
        return 0


class Full(Target):
    label = "b"

    def __init__(self, run: Run, agents: int) -> None:
        self.run = run
        self.cfg, path = bench_config(run.work / "full", "benchfull")
        self.stack = Stack(self.cfg, path)
        self.asterisk = self.stack.asterisk
        self.agents = agents
        self.commits: list[float] = []
        self.received: list[float] = []  # event -> the service received it (call_events.received_at)
        self.pushes: list[float] = []
        self.feed_messages = 0
        self._tasks: list[asyncio.Task[None]] = []

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        h = self.cfg.http
        req = urllib.request.Request(f"http://{h.host}:{h.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {h.admin_token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from None

    async def up(self) -> None:
        t0 = time.monotonic()
        await asyncio.to_thread(self.stack.up, timeout=60)
        self.api("POST", "/api/v1/skills", {"name": QUEUE})
        self.api("POST", "/api/v1/queues", {"name": QUEUE, "required_skill": QUEUE, "recording": "all",
                                            "wrapup_s": 0, "ring_timeout_s": 15})
        self.api("POST", "/api/v1/routes", {"did": DID, "queue": QUEUE})

        def make(i: int) -> tuple[str, str]:
            phone = f"lb{i}"
            pw = self.api("POST", "/api/v1/phones", {"name": phone})["password"]
            self.api("POST", "/api/v1/agents", {"name": f"la{i}", "phone": phone, "skills": {QUEUE: 3}})
            return phone, pw
        with ThreadPoolExecutor(8) as pool:
            creds = await asyncio.to_thread(lambda: list(pool.map(make, range(1, self.agents + 1))))
        t1 = time.monotonic()
        inf = self.run.work / "phones.csv"
        with inf.open("w", newline="") as fh:
            fh.write("SEQUENTIAL\n")
            # SIPp expands an [authentication ...] keyword held in an injected field (not one built from fields)
            csv.writer(fh, delimiter=";").writerows(
                (phone, f"[authentication username={phone} password={pw}]") for phone, pw in creds)
        hold = self.run.args.bound_s
        self.agent_proc = self.run.fleet.start("b-agents", [
            f"127.0.0.1:{self.cfg.sip.port}", "-sf", str(scenario(self.run.work, "register.xml",
                                                                   HOLD_MS=str(hold * 1000))),
            "-oocsf", str(scenario(self.run.work, "agent.xml")), "-inf", str(inf),
            "-p", str(udp_port()), "-mp", str(udp_port()), "-rtp_echo",
            "-m", str(self.agents), "-l", str(self.agents), "-r", "100", "-timeout", f"{hold + 30}s", "-aa"])

        async def reachable() -> int:
            return count_lines(await asyncio.to_thread(self.cli, "pjsip show contacts"), "Avail")
        n = await wait_for(reachable, self.agents, 60, "agent phones registered and qualified")
        t2 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            await asyncio.to_thread(lambda: list(pool.map(
                lambda i: self.api("POST", f"/api/v1/agents/la{i}/login"), range(1, self.agents + 1))))

        async def members() -> int:
            return count_lines(await asyncio.to_thread(self.cli, f"queue show {QUEUE}"), "(Not in use)")
        m = await wait_for(members, self.agents, 60, "agents logged in and idle in the queue")
        print(f"   (b) set-up: stack + {self.agents} phones/agents over the API {t1 - t0:.1f} s, {n} contacts "
              f"reachable {t2 - t1:.1f} s, {m} members idle {time.monotonic() - t2:.1f} s", flush=True)
        self._tasks = [asyncio.create_task(self._feed()), asyncio.create_task(self._commit_poller())]
        await asyncio.sleep(1.0)

    async def _feed(self) -> None:
        import aiohttp  # local: keeps --help light

        h = self.cfg.http
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://{h.host}:{h.port}/api/v1/feed?token={h.admin_token}", heartbeat=20) as ws:
            async for msg in ws:
                got = time.time()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                self.feed_messages += 1
                data = json.loads(msg.data)
                if isinstance(data, dict) and "event_ts" in data:
                    self.pushes.append(got - float(data["event_ts"]))

    async def _commit_poller(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.cfg.database.dsn)
        try:
            last = await conn.fetchval("SELECT coalesce(max(id), 0) FROM call_events")
            while True:
                rows = await conn.fetch("SELECT id, extract(epoch FROM ts)::float8 AS ts, "
                                        "extract(epoch FROM received_at)::float8 AS rx FROM call_events "
                                        "WHERE id > $1 ORDER BY id LIMIT 20000", last)
                now = time.time()
                if rows:
                    last = rows[-1]["id"]
                    self.commits.extend(now - r["ts"] for r in rows)
                    self.received.extend(r["rx"] - r["ts"] for r in rows)
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    async def facts_missing(self, ok: set[str]) -> int:
        import asyncpg

        conn = await asyncpg.connect(self.cfg.database.dsn)
        try:
            deadline = time.monotonic() + 30
            while True:
                rows = await conn.fetch("SELECT uniqueid FROM queue_calls WHERE uniqueid = ANY($1) "
                                        "AND outcome = 'answered'", list(ok))
                missing = len(ok) - len(rows)
                if missing == 0 or time.monotonic() > deadline:
                    return missing
                await asyncio.sleep(0.5)
        finally:
            await conn.close()

    def cpu_groups(self) -> dict[str, Callable[[], list[int]]]:
        return {**super().cpu_groups(), "service": lambda: [p for p in [self.stack.service.pid()] if p],
                "postgres": lambda: tree(postmaster_pid(Path(self.cfg.database.datadir))),
                "sipp": self.run.fleet.pids}

    def rss(self) -> dict[str, float]:
        return {**super().rss(), "service": rss_mb(self.stack.service.pid())}

    async def down(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.run.fleet.stop_all()
        await asyncio.to_thread(self.stack.down)


def postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def wait_for(probe: Callable[[], Any], want: int, timeout: float, what: str) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = await probe()
        if got >= want:
            return int(got)
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{what}: {got} of {want} after {timeout:.0f} s")


class Observer:
    """Our own AMI session: the queue events that judge each call."""

    def __init__(self, cfg: Config) -> None:
        a = cfg.ami
        self.client = AmiClient(a.host, a.port, a.user, a.secret, node="bench-observer")
        self.events: list[AmiEvent] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.start()
        self._task = asyncio.create_task(self._run())
        await self.client.wait_ready(20)

    async def _run(self) -> None:
        while True:
            ev = await self.client.events.get()
            if ev.name in QUEUE_EVENTS:
                self.events.append(ev)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.stop()


async def run_step(run: Run, t: Target, obs: Observer, n: int, prefix: int) -> Step:
    args = run.args
    s = Step(n, offered=n)
    rate = min(args.max_rate, max(2.0, n / args.place_s))
    mark = len(obs.events)
    cpu = CpuMeter(t.cpu_groups())
    if isinstance(t, Full):
        c0, p0, r0 = len(t.commits), len(t.pushes), len(t.received)
    t0 = time.monotonic()
    cpu.start()
    proc = await run.caller_step(t, n, prefix, rate, args.talk)
    bound = n / rate + args.talk + 45
    try:
        s.sipp_rc = await asyncio.to_thread(proc.wait, bound)
    except subprocess.TimeoutExpired:
        run.fleet.stop(proc)
        s.sipp_rc = -1
    s.cpu = await cpu.stop()
    s.rss = t.rss()
    # Calls still up after SIPp ended are failures; wait (bounded) until the PBX is idle again.
    with contextlib.suppress(RuntimeError):
        await wait_for(lambda: _idle(t), 1, 20, "channels gone")
    await asyncio.sleep(1.0)
    events = obs.events[mark:]
    ok, s.reasons, s.peak_bridged = judge(events, n)
    s.joined = len({e.uniqueid for e in events if e.name == "QueueCallerJoin"})
    s.facts_missing = await t.facts_missing(ok)
    if s.facts_missing:
        s.reasons["no answered queue_calls fact"] = s.facts_missing
    s.ok = len(ok) - s.facts_missing
    s.failed = n - s.ok
    s.seconds = time.monotonic() - t0
    if isinstance(t, Full):
        commits, pushes = t.commits[c0:], t.pushes[p0:]
        s.commit_p95, s.push_p95, s.commits, s.pushes = p95(commits), p95(pushes), len(commits), len(pushes)
        s.received_p95 = p95(t.received[r0:])
    return s


async def _idle(t: Target) -> int:
    return 1 if await asyncio.to_thread(t.channels) == 0 else 0


def print_step(label: str, s: Step) -> None:
    cpu = "  ".join(f"{k} {v:.0f}%" for k, v in s.cpu.items())
    rss = "  ".join(f"{k} {v:.0f} MB" for k, v in s.rss.items())
    line = (f"({label}) {s.target:4d} calls: ok {s.ok:4d}  failed {s.failed:3d}  peak bridged {s.peak_bridged:4d}"
            f"  sipp rc {s.sipp_rc}  {s.seconds:.0f} s | CPU {cpu} | RSS {rss}")
    if label == "b":
        line += (f" | event→commit p95 {fmt_ms(s.commit_p95)} (n={s.commits}; of which event→received p95 "
                 f"{fmt_ms(s.received_p95)})  event→push p95 "
                 f"{fmt_ms(s.push_p95)} (n={s.pushes})")
    if s.reasons:
        line += f" | failures: {s.reasons}"
    if s.peak_bridged < REACHED * s.target:
        line += f" | NOT REACHED: peak bridged {s.peak_bridged} < {REACHED:.0%} of {s.target}"
    print(line, flush=True)


async def ramp(run: Run, t: Target, steps: list[int]) -> tuple[int, list[Step]]:
    obs = Observer(t.cfg)
    await obs.start()
    capacity, done = 0, []
    try:
        for i, n in enumerate(steps):
            s = await run_step(run, t, obs, n, 10 + i)
            done.append(s)
            print_step(t.label, s)
            if s.failed or s.peak_bridged < REACHED * n:
                break
            capacity = n
    finally:
        await obs.stop()
    return capacity, done


async def soak(run: Run, t: Full, concurrent: int, minutes: float) -> int:
    args = run.args
    obs = Observer(t.cfg)
    await obs.start()
    try:
        before = await asyncio.to_thread(leak_counts, t)
        rss0 = t.rss()
        # a call lasts the talk + ~3 s (greeting 1.4 s, ring, set-up): ~`concurrent` calls up at any time; SIPp's
        # own limit (-l) leaves room, so it never throttles the rate
        rate = concurrent / (args.talk + 3.0)
        total = int(rate * minutes * 60)
        print(f"soak: {concurrent} concurrent ({rate:.1f} calls/s, talk {args.talk:g} s) for {minutes:g} min = "
              f"{total} calls; before: {before}, RSS {rss0}", flush=True)
        mark = len(obs.events)
        cpu = CpuMeter(t.cpu_groups())
        c0, p0 = len(t.commits), len(t.pushes)
        cpu.start()
        proc = await run.caller_step(t, int(concurrent * 1.3) + 10, 90, rate, args.talk, total=total)
        deadline = time.monotonic() + minutes * 60 + args.talk + 90
        samples = []
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(30)
            samples.append((time.monotonic(), t.rss()))
            r = samples[-1][1]
            print(f"  soak t+{(len(samples) * 30) / 60:.1f} min: RSS service {r['service']:.0f} MB, "
                  f"asterisk {r['asterisk']:.0f} MB", flush=True)
        overran = proc.poll() is None
        run.fleet.stop(proc)  # killed callers send no BYE: their calls stay up in Asterisk (no RTP timeout)
        usage = await cpu.stop()
        with contextlib.suppress(RuntimeError):
            await wait_for(lambda: _idle(t), 1, 30, "channels gone")
        if overran:
            left = await asyncio.to_thread(t.channels)
            print(f"  SIPp overran the soak's time and was killed: {left} channels of its cut calls hung up "
                  "now (counted as failed calls, not as leaks)", flush=True)
            await asyncio.to_thread(t.cli, "channel request hangup all")
            with contextlib.suppress(RuntimeError):
                await wait_for(lambda: _idle(t), 1, 30, "channels gone")
        await asyncio.sleep(3.0)
        events = obs.events[mark:]
        ok, reasons, peak = judge(events, total)
        missing = await t.facts_missing(ok)
        after = await asyncio.to_thread(leak_counts, t)
        rss1 = t.rss()
        failed = total - len(ok) + missing
        print(f"soak result: offered {total}, ok {len(ok) - missing}, failed {failed} {reasons or ''}, "
              f"peak bridged {peak}", flush=True)
        print(f"  CPU {', '.join(f'{k} {v:.0f}%' for k, v in usage.items())}; event→commit p95 "
              f"{fmt_ms(p95(t.commits[c0:]))}, event→push p95 {fmt_ms(p95(t.pushes[p0:]))}")
        print(f"  service RSS {rss0['service']:.0f} → {rss1['service']:.0f} MB "
              f"({rss1['service'] - rss0['service']:+.0f} MB), Asterisk RSS {rss0['asterisk']:.0f} → "
              f"{rss1['asterisk']:.0f} MB ({rss1['asterisk'] - rss0['asterisk']:+.0f} MB)")
        print(f"  Asterisk before: {before}")
        print(f"  Asterisk after:  {after}")
        leaked = after["channels"] - before["channels"] + after["bridges"] - before["bridges"]
        print(f"  taskprocessors {before['taskprocessors']} → {after['taskprocessors']}")
        print("  no leaked channels or bridges" if leaked == 0 else f"  LEAK: {leaked} channels/bridges left")
        return 0 if failed == 0 and leaked == 0 else 1
    finally:
        await obs.stop()


async def main_async(args: argparse.Namespace, work: Path) -> int:
    run = Run(args, work)
    steps = [int(x) for x in args.steps.split(",")]
    agents = args.agents or max(steps) + 20
    results: dict[str, tuple[int, list[Step]]] = {}
    try:
        if args.soak:
            full = Full(run, agents)
            try:
                await full.up()
                return await soak(run, full, args.soak_calls or int(args.capacity * 0.6), args.soak)
            finally:
                await full.down()
        for label, cls in (("a", Bare), ("b", Full)):
            if args.only and args.only != {"a": "bare", "b": "full"}[label]:
                continue
            print(f"== ({label}) {'bare Asterisk' if label == 'a' else 'full stack'}: {agents} agents, steps "
                  f"{steps}, talk {args.talk:g} s, calls placed at ≤ {args.max_rate:g}/s", flush=True)
            target: Bare | Full = cls(run, agents)
            try:
                await target.up()
                results[label] = await ramp(run, target, steps)
            finally:
                await target.down()
    finally:
        run.fleet.stop_all()
    print()
    cap = {k: v[0] for k, v in results.items()}
    for label, name in (("a", "bare Asterisk"), ("b", "full stack")):
        if label in results:
            c, done = results[label]
            last = done[-1]
            if last.failed:
                tail = f"first failures at {last.target}"
            elif last.peak_bridged < REACHED * last.target:
                tail = f"{last.target} not reached: at most {last.peak_bridged} bridged at once"
            else:
                tail = "no failure up to the last step"
            print(f"capacity ({label}) {name}: {c} concurrent recorded calls ({tail})")
    if "a" in cap and "b" in cap:
        ratio = cap["b"] / cap["a"] * 100 if cap["a"] else 0.0
        print(f"ratio (b)/(a): {ratio:.0f} %")
    return 0 if all(c > 0 for c in cap.values()) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default=DEFAULT_STEPS, help=f"concurrent calls per step (default {DEFAULT_STEPS})")
    ap.add_argument("--talk", type=float, default=35.0, help="seconds each call talks after the answer (35)")
    ap.add_argument("--place-s", type=float, default=15.0,
                    help="place a step's calls within this many seconds (15), at most --max-rate a second")
    ap.add_argument("--max-rate", type=float, default=25.0, help="calls per second at most (25)")
    ap.add_argument("--agents", type=int, default=0, help="agents (default: the largest step + 20)")
    ap.add_argument("--only", choices=["bare", "full"], help="run one target only")
    ap.add_argument("--smoke", action="store_true", help="5 calls on each target, 3 s talk (< 60 s)")
    ap.add_argument("--soak", type=float, default=0.0, metavar="MINUTES",
                    help="soak the full stack for MINUTES at 60 %% of --capacity (or --soak-calls)")
    ap.add_argument("--capacity", type=int, default=240,
                    help="measured capacity the soak takes 60 %% of (240: see docs/performance.md)")
    ap.add_argument("--soak-calls", type=int, default=0, help="concurrent calls of the soak (overrides 60 %%)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, SIPp errors)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.talk, args.place_s, args.agents = "5", 3.0, 1.0, 6
    # every SIPp agent process and the soak are bounded by this
    longest = sum(int(x) / args.max_rate + args.talk + 60 for x in args.steps.split(","))
    args.bound_s = int(max(longest, args.soak * 60 + args.talk + 120) + 300)
    work = Path(tempfile.mkdtemp(prefix="ccpbx-load-"))
    work.chmod(0o755)
    try:
        return asyncio.run(main_async(args, work))
    except KeyboardInterrupt:
        return 130
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

