"""Event pipeline latency under a burst: event → committed in PostgreSQL, event → pushed to a wallboard.

    python bench/pipeline.py [--rate 5000] [--seconds 10] [--dsn DSN]

A replayed burst of queue-call events (join, ring, connect, complete, hang-up: 5 per call) at `--rate` events
per second goes through the service's own parts, in the order the service's consumer runs them: the
real-time board (reporting.realtime.RealtimeBoard) publishing to the feed hub (web.feed.FeedHub, served by
aiohttp, read by a real WebSocket client), and the event writer (reporting.event_store.EventWriter) into a
real PostgreSQL. Each event's `Timestamp` is the instant it is emitted, as Asterisk stamps it.

Printed (milliseconds, p50/p95/p99/max):
- event → commit: from the event's instant to when the writer's batch holding it was committed;
- event → push: from the event's instant to when the WebSocket client received the update it caused.

Without --dsn a private PostgreSQL (ops.postgres.PgCluster) is started in a temp folder and removed after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without install

import aiohttp
from aiohttp import web

from ops.postgres import PgCluster, free_port
from reporting.event_store import EventWriter
from reporting.ingest import to_stored
from reporting.migrate import migrate
from reporting.realtime import RealtimeBoard
from telephony.ami import AmiEvent, parse_event
from web.auth import bearer_auth, guard
from web.feed import FeedHub

NODE = "bench"
TOKEN = secrets.token_urlsafe(16)


def call_events(n: int, now: float, queue: str) -> list[AmiEvent]:
    """The five events of queue call `n`, stamped `now` (the producer re-stamps them when it sends them)."""
    uid, agent_uid = f"bench-{n}.0", f"bench-{n}.1"
    base = {"Uniqueid": uid, "Linkedid": uid, "Queue": queue, "Timestamp": f"{now:.6f}"}
    frames = [
        {"Event": "QueueCallerJoin", **base, "CallerIDNum": f"+49301{n:07d}", "Position": "1"},
        {"Event": "AgentCalled", **base, "MemberName": f"agent{n % 500}", "DestUniqueid": agent_uid},
        {"Event": "AgentConnect", **base, "MemberName": f"agent{n % 500}", "DestUniqueid": agent_uid},
        {"Event": "AgentComplete", **base, "MemberName": f"agent{n % 500}", "Reason": "caller"},
        {"Event": "Hangup", **base},
    ]
    return [parse_event(f, now) for f in frames]


def pct(values: list[float]) -> str:
    if not values:
        return "n/a"
    v = sorted(values)
    q = statistics.quantiles(v, n=100) if len(v) >= 2 else v * 99

    def ms(x: float) -> str:
        return f"{x * 1000:7.1f}"
    return f"p50 {ms(q[49])}  p95 {ms(q[94])}  p99 {ms(q[98])}  max {ms(v[-1])}  (n={len(v)})"


async def run(dsn: str, rate: int, seconds: float) -> None:
    import asyncpg  # local: the module imports stay light for --help

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    await migrate(pool)
    await pool.close()

    feed = FeedHub()
    app = web.Application(middlewares=[bearer_auth(TOKEN)])
    app.router.add_get("/api/v1/feed", guard(feed.handle, "admin"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    board = RealtimeBoard(publish=feed.publish)
    writer = EventWriter(dsn, batch_size=500, flush_interval=0.02)
    await writer.start()

    pushes: list[float] = []
    commits: list[float] = []
    emitted: list[float] = []  # event index -> its instant

    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"http://127.0.0.1:{port}/api/v1/feed?token={TOKEN}") as ws:
        async def reader() -> None:
            async for msg in ws:
                got = time.time()
                data: dict[str, Any] = json.loads(msg.data)
                if "event_ts" in data:
                    pushes.append(got - float(data["event_ts"]))

        async def sampler() -> None:
            seen = 0
            while True:
                done = writer._done  # the writer's own count of events whose batch finished
                if done > seen:
                    now = time.time()
                    commits.extend(now - emitted[i] for i in range(seen, min(done, len(emitted))))
                    seen = done
                await asyncio.sleep(0.002)

        read_task = asyncio.create_task(reader())
        sample_task = asyncio.create_task(sampler())
        total = int(rate * seconds)
        per_tick, tick = max(5, rate // 200), 0.005  # 200 ticks a second
        start = time.time()
        n_call = 0
        sent = 0
        while sent < total:
            target = start + sent / rate
            delay = target - time.time()
            if delay > 0:
                await asyncio.sleep(min(delay, tick))
                continue
            for _ in range(per_tick // 5):
                now = time.time()
                for ev in call_events(n_call, now, f"q{n_call % 40}"):
                    emitted.append(now)
                    board.apply(ev)
                    writer.submit(to_stored(ev, NODE))
                n_call += 1
                sent += 5
        wall = time.time() - start
        await writer.flush(60)
        await asyncio.sleep(0.5)  # the last pushes in flight reach the client
        sample_task.cancel()
        read_task.cancel()
    await writer.stop()
    await runner.cleanup()
    print(f"sent {sent} events ({n_call} calls) in {wall:.1f}s = {sent / wall:,.0f} events/s")
    print(f"event → commit: {pct(commits)}")
    print(f"event → push:   {pct(pushes)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=5000, help="events per second (default 5000)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the burst (default 10)")
    ap.add_argument("--dsn", help="use this database instead of a private temporary cluster")
    args = ap.parse_args(argv)
    if args.dsn:
        asyncio.run(run(args.dsn, args.rate, args.seconds))
        return 0
    base = Path(tempfile.mkdtemp(prefix="ccpbx-bench-"))
    os.chmod(base, 0o755)
    cluster = PgCluster(base / "data", free_port(), password=secrets.token_urlsafe(16))
    try:
        cluster.init()
        cluster.start()
        asyncio.run(run(cluster.dsn, args.rate, args.seconds))
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
