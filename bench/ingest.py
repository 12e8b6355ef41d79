"""Event store ingest benchmark: how many AMI-like events per second reach PostgreSQL.

    python bench/ingest.py [--events 200000] [--batch-size 100 500 2000] [--method unnest copy] [--dsn DSN]

Without --dsn it starts a private PostgreSQL (ops.postgres.PgCluster) in a temp folder on a free port,
migrates it and removes it at the end.  With --dsn it uses that database (migrating it), writes under a
unique ``node`` per run and deletes exactly those rows afterwards, so other data is never touched
(the private cluster is simply truncated between runs).

For every (method, batch size) it measures, end to end (first submit → flush() returned, i.e. all
committed with the default fsync/synchronous_commit):
- insert: N new events;
- replay: the same N events again, which must all be skipped as duplicates (0 new rows).
The producer submits in chunks of 1000 and yields to the loop in between, like the AMI consumer does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without install

import asyncpg

from ops.postgres import PgCluster, free_port
from reporting.event_store import EventWriter, StoredEvent, WriteMethod
from reporting.migrate import migrate

_NAMES = ("Newchannel", "Newstate", "VarSet", "QueueCallerJoin", "AgentCalled", "AgentConnect",
          "BridgeEnter", "Hangup")


def make_events(n: int, node: str) -> list[StoredEvent]:
    """Synthetic events shaped like AMI ones (~14 fields, ~60 events per call)."""
    now = datetime.now(UTC)
    t0 = time.time() - 3600
    out = []
    for i in range(n):
        call = i // 60
        name = _NAMES[i % len(_NAMES)]
        uid = f"{int(t0) + call}.{call}"
        fields = {
            "Event": name, "Privilege": "call,all", "Timestamp": f"{t0 + i * 0.001:.6f}",
            "Channel": f"PJSIP/trunk-{call:08x}", "ChannelState": "6", "ChannelStateDesc": "Up",
            "CallerIDNum": f"+4930{call:07d}", "CallerIDName": "Bench Caller",
            "ConnectedLineNum": "<unknown>",
            "Language": "en", "AccountCode": "", "Context": "from-trunk", "Exten": "5000", "Priority": "3",
            "Uniqueid": uid, "Linkedid": uid,
        }
        out.append(StoredEvent(
            node=node, event_key=f"{node}:{i}", name=name, ts=t0 + i * 0.001, received_at=now,
            uniqueid=uid, linkedid=uid, queue="sales" if name.startswith(("Queue", "Agent")) else None,
            fields=fields,
        ))
    return out


async def push(writer: EventWriter, events: list[StoredEvent], chunk: int = 1000) -> float:
    """Submit all events in chunks, wait until committed; return seconds taken."""
    t0 = time.perf_counter()
    for i in range(0, len(events), chunk):
        for ev in events[i:i + chunk]:
            writer.submit(ev)
        await asyncio.sleep(0)
    await writer.flush(600)
    return time.perf_counter() - t0


async def run_one(
    dsn: str, events: list[StoredEvent], method: WriteMethod, batch_size: int, *, own_db: bool,
) -> tuple[float, float]:
    """Insert ``events`` then replay them; check the counts; remove them again. Returns ev/s pair."""
    n = len(events)
    node = events[0].node
    writer = EventWriter(dsn, batch_size=batch_size, method=method, max_buffer=max(n, batch_size) + 1)
    await writer.start()
    try:
        t_insert = await push(writer, events)
        s = writer.stats
        assert s.written == n and s.duplicates_skipped == 0, s
        t_replay = await push(writer, events)
        s = writer.stats
        assert s.written == n and s.duplicates_skipped == n, s
    finally:
        await writer.stop()
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM call_events WHERE node = $1", node)
        assert stored == n, (stored, n)
        if own_db:  # our private cluster: start every run from an empty table, quickly
            await conn.execute("TRUNCATE call_events")
        else:  # someone's database: remove exactly our rows
            await conn.execute("DELETE FROM call_events WHERE node = $1", node)
            await conn.execute("VACUUM (ANALYZE) call_events")
    finally:
        await conn.close()
    return n / t_insert, n / t_replay


async def bench(dsn: str, n: int, methods: list[WriteMethod], sizes: list[int], *, own_db: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    print(f"PostgreSQL {version}, {os.cpu_count()} CPUs, {n} events per run "
          "(end to end: submit → committed, fsync on)")
    events = make_events(n, f"bench-{uuid.uuid4().hex[:8]}")  # one unique node per invocation
    print(f"{'method':<8} {'batch':>6} {'insert ev/s':>12} {'replay ev/s':>12}")
    # Warm-up (connection, plan cache, file system) so the first row is not penalised.
    await run_one(dsn, events[:5000], methods[0], sizes[0], own_db=own_db)
    for method in methods:
        for size in sizes:
            ins, rep = await run_one(dsn, events, method, size, own_db=own_db)
            print(f"{method:<8} {size:>6} {ins:>12,.0f} {rep:>12,.0f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="events per run (default 200000)")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[100, 500, 2000],
                    help="batch sizes to try (default 100 500 2000)")
    ap.add_argument("--method", nargs="+", choices=["unnest", "copy"], default=["unnest", "copy"],
                    help="write methods to compare (default both)")
    ap.add_argument("--dsn", help="use this database instead of a private temporary cluster")
    args = ap.parse_args(argv)

    if args.dsn:
        asyncio.run(bench(args.dsn, args.events, args.method, args.batch_size, own_db=False))
        return 0
    base = Path(tempfile.mkdtemp(prefix="ccpbx-bench-"))
    os.chmod(base, 0o755)  # as root the server runs as `postgres`, which must reach the datadir
    cluster = PgCluster(base / "data", free_port(), password=secrets.token_urlsafe(16))
    try:
        t0 = time.perf_counter()
        cluster.init()
        cluster.start()
        print(f"private cluster ready in {time.perf_counter() - t0:.1f}s ({cluster.datadir})")
        asyncio.run(bench(cluster.dsn, args.events, args.method, args.batch_size, own_db=True))
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
