"""Queue report latency over a year of a 500-seat center: rollups (reporting/rollups.py) vs. the raw facts.

    python bench/reports.py [--calls 10000000] [--dsn DSN | --data-dir DIR] [--runs 5] [--raw]

Without --dsn a private PostgreSQL (ops.postgres.PgCluster, the project's settings: shared_buffers 128 MB) is
started in a temp folder and removed after; with --data-dir it is kept there and reused (the facts are generated
once). With --dsn it uses that database, which must be dedicated to the bench (its queue_calls empty at first).

1. Migrates, configures 40 queues (SL thresholds 20/30/60 s), and generates `--calls` queue calls over the last
   365 days with generate_series SQL, in time order (as the live path inserts them): business-hour peaks, quieter
   weekends, a skewed queue mix, 500 agents, ~80 % answered and the other outcomes, waits/talk/hold/ACW in
   milliseconds, surveys, 5 % withheld numbers and callers calling again (FCR ~80 %). The rollup triggers are
   disabled during this bulk load (the first build reads everything anyway).
2. Builds the rollups (day levels for Europe/Berlin) and prints how long that took.
3. Times `reports.queue_report` (tz Europe/Berlin, up to now, so the last hour comes from raw facts and FCR
   windows are still open) for: a year at 1d and at 1h, a month and a day at 15m; all queues and one queue.
   cold = first report after a restart of the private cluster (after DISCARD ALL on a new connection with
   --dsn); the OS page cache is not dropped. warm = median of `--runs`. `--raw` also times the raw-facts path
   once per case (minutes at 10 M calls).
4. Times the raw part at its largest (the 75 minutes after rolled_until, at the busiest hour of the year) and
   checks freshness: a call stored now is in the very next report.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without install

import asyncpg

from ops.postgres import PgCluster, free_port
from reporting import reports, rollups
from reporting.migrate import migrate

TZ = "Europe/Berlin"
QUEUES = 40
ONE_QUEUE = "q05"
TRIGGERS = ("queue_rollup_ins", "queue_rollup_del", "queue_rollup_upd")

# Queue calls number $1..$2 entering on days [$5, $5 + $6) after $4 (UTC midnight 365 days ago), in time order.
# $3: size of the caller pool (a skewed draw from it gives repeat callers). Each random() is drawn once per row
# (the innermost subquery, OFFSET 0 so it is not flattened).
GENERATE_SQL = """
INSERT INTO queue_calls (node, linkedid, uniqueid, queue, caller_number, entered_at, outcome, wait_s, agent, ring_s,
                         talk_s, hold_s, acw_s, transferred, disposition, csat, ended_at, final, projected_at)
SELECT 'bench', 'bench-' || i, 'bench-' || i, queue, caller, entered, outcome, wait,
       CASE WHEN ans THEN agent END, CASE WHEN ans THEN ring END, CASE WHEN ans THEN talk END,
       CASE WHEN ans THEN hold END, CASE WHEN ans THEN acw END, ans AND r_tr < 0.08,
       CASE WHEN ans AND r_tr < 0.6 THEN 'code' || floor(r_tr * 10)::int END,
       CASE WHEN ans AND r_cs < 0.2 THEN 1 + floor(5 * sqrt(r_cs * 5))::int END,
       ended, true, ended
FROM (
    SELECT *, entered + make_interval(secs => wait + CASE WHEN ans THEN talk + hold ELSE 0 END) AS ended
    FROM (
        SELECT i, queue, caller, entered, outcome, outcome = 'answered' AS ans, r_tr, r_cs, agent,
               round((2 + 13 * r_ring)::numeric, 3)::float8 AS ring,
               round((CASE outcome WHEN 'answered' THEN -25 * ln(1 - r_w)
                                   WHEN 'abandoned' THEN 5 - 45 * ln(1 - r_w)
                                   WHEN 'short_abandoned' THEN 4.999 * r_w
                                   WHEN 'timeout' THEN 300 + r_w
                                   WHEN 'exit_empty' THEN 2 * r_w
                                   WHEN 'transferred_out' THEN -30 * ln(1 - r_w)
                                   ELSE 10 - 40 * ln(1 - r_w) END)::numeric, 3)::float8 AS wait,
               round((20 - 220 * ln(1 - r_t))::numeric, 3)::float8 AS talk,
               round((CASE WHEN r_h < 0.3 THEN -45 * ln(1 - r_h / 0.3) ELSE 0 END)::numeric, 3)::float8 AS hold,
               round(least(300, -35 * ln(1 - r_a))::numeric, 3)::float8 AS acw
        FROM (
            SELECT i, r_w, r_t, r_h, r_a, r_tr, r_cs, r_ring,
                   'q' || lpad(floor(40 * r_q ^ 1.6)::int::text, 2, '0') AS queue,
                   'agent' || lpad(floor(500 * r_ag)::int::text, 3, '0') AS agent,
                   CASE WHEN r_cl < 0.05 THEN ''
                        ELSE '+4930' || (1000000 + floor($3::float8 * r_cl2 ^ 2))::bigint END AS caller,
                   CASE WHEN r_o < 0.80 THEN 'answered' WHEN r_o < 0.87 THEN 'abandoned'
                        WHEN r_o < 0.90 THEN 'short_abandoned' WHEN r_o < 0.93 THEN 'timeout'
                        WHEN r_o < 0.94 THEN 'exit_empty' WHEN r_o < 0.97 THEN 'transferred_out'
                        ELSE 'callback_requested' END AS outcome,
                   CASE WHEN e >= now() THEN e - interval '7 days' ELSE e END AS entered
            FROM (
                SELECT *, $4::timestamptz
                          -- 70 % of weekend calls move to the weekdays before: weekends are quieter
                          + make_interval(days => CASE WHEN extract(isodow FROM $4::timestamptz
                                                                    + make_interval(days => d)) >= 6
                                                            AND r_wk < 0.7
                                                       THEN greatest(0, d - (extract(isodow FROM $4::timestamptz
                                                                    + make_interval(days => d))::int - 5)
                                                                    - floor(r_wk / 0.7 * 5)::int)
                                                       ELSE d END)
                          -- 88 % in business hours (05-17 UTC, peak at 11), the rest round the clock
                          + make_interval(secs => CASE WHEN r_d < 0.88 THEN 18000 + 43200 * (r_t1 + r_t2) / 2
                                                       ELSE 86400 * r_t1 END) AS e
                FROM (SELECT i, $5::int + floor($6::int * random())::int AS d, random() AS r_wk, random() AS r_d,
                             random() AS r_t1, random() AS r_t2, random() AS r_q, random() AS r_ag,
                             random() AS r_cl, random() AS r_cl2, random() AS r_o, random() AS r_w,
                             random() AS r_t, random() AS r_h, random() AS r_a, random() AS r_tr, random() AS r_cs,
                             random() AS r_ring
                      FROM generate_series($1::bigint, $2::bigint) AS i OFFSET 0) rnd
            ) days
        ) picks
    ) durations
) ends
ORDER BY entered
"""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


async def generate(dsn: str, calls: int, days: int = 365, chunks: int = 12) -> None:
    """The facts, a chunk of days per statement (progress printed); time for generation, then VACUUM ANALYZE."""
    conn = await asyncpg.connect(dsn)
    try:
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)
        await conn.executemany("INSERT INTO queues (name, sl_threshold_s) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                               [(f"q{k:02d}", (20, 30, 60)[k % 3]) for k in range(QUEUES)])
        for t in TRIGGERS:
            await conn.execute(f"ALTER TABLE queue_calls DISABLE TRIGGER {t}")
        t0 = time.perf_counter()
        first = 1
        span = days + 1  # the last day is today, up to now
        for k in range(chunks):
            d0, d1 = span * k // chunks, span * (k + 1) // chunks
            n = calls * d1 // span - calls * d0 // span
            await conn.execute(GENERATE_SQL, first, first + n - 1, max(1000.0, calls * 0.25), start, d0, d1 - d0)
            first += n
            print(f"  generated {first - 1:>11,} calls ({time.perf_counter() - t0:.0f} s)", flush=True)
        gen = time.perf_counter() - t0
        for t in TRIGGERS:
            await conn.execute(f"ALTER TABLE queue_calls ENABLE TRIGGER {t}")
        t1 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) queue_calls")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('queue_calls'))")
        print(f"generated {calls:,} queue calls in {gen:.0f} s ({calls / gen:,.0f}/s, generate_series SQL); "
              f"VACUUM ANALYZE {time.perf_counter() - t1:.0f} s; queue_calls {size} with indexes")
    finally:
        await conn.close()


CASES = [("1 year", 365, "1d"), ("1 year", 365, "1h"), ("1 month", 30, "15m"), ("1 day", 1, "15m")]


async def report(pool: asyncpg.Pool, days: int, interval: str, queues: list[str] | None,
                 use_rollups: bool = True) -> tuple[float, int]:
    until = datetime.now(UTC)
    t = time.perf_counter()
    out = await reports.queue_report(pool, since=until - timedelta(days=days), until=until, interval=interval,
                                     queues=queues, tz=TZ, use_rollups=use_rollups)
    return time.perf_counter() - t, sum(len(q["intervals"]) for q in out)


async def run(dsn: str, args: argparse.Namespace, restart: Callable[[], Awaitable[None]] | None) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        version = await conn.fetchval("SHOW server_version")
        have = await conn.fetchval("SELECT count(*) FROM queue_calls")
    finally:
        await conn.close()
    print(f"PostgreSQL {version}, {os.cpu_count()} CPUs")
    if have == 0:
        await generate(dsn, args.calls)
    else:
        print(f"reusing {have:,} queue calls already there")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await pool.execute("UPDATE queue_rollup_state SET rolled_until = NULL")  # a full build, also on reuse
        t0 = time.perf_counter()
        built = await rollups.build_rollups(pool, zones=[TZ])
        n, size = await pool.fetchrow("SELECT count(*), pg_size_pretty(pg_total_relation_size('queue_rollups')) "
                                      "FROM queue_rollups")
        print(f"rollups built in {time.perf_counter() - t0:.1f} s ({built['steps']} transactions, {n:,} rows, "
              f"{size}), rolled up to {built['rolled_until']:%Y-%m-%d %H:%M} UTC")
        t0 = time.perf_counter()
        await pool.execute("VACUUM (ANALYZE) queue_rollups")  # what autovacuum does a minute later anyway
        print(f"VACUUM ANALYZE queue_rollups {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        await rollups.build_rollups(pool, zones=[TZ])
        print(f"periodic build with nothing new: {ms(time.perf_counter() - t0)} ms")
        await pool.execute("UPDATE queue_calls SET csat = 5 WHERE uniqueid IN (SELECT uniqueid FROM queue_calls "
                           "WHERE entered_at < now() - interval '30 days' AND outcome = 'answered' LIMIT 100)")
        t0 = time.perf_counter()
        await rollups.build_rollups(pool, zones=[TZ])
        print(f"periodic build after 100 old facts changed (their blocks rebuilt): {ms(time.perf_counter() - t0)} ms")
    finally:
        await pool.close()

    print(f"\nqueue report, tz {TZ}, up to now; milliseconds (cold: after a restart, warm: median of {args.runs})")
    head = f"{'range':<8} {'interval':>8} {'queues':>6} {'intervals':>9} {'cold':>7} {'warm':>7}"
    print(head + (f" {'raw facts':>10}" if args.raw else ""))
    for label, days, interval in CASES:
        for queues in (None, [ONE_QUEUE]):
            if restart is not None:
                await restart()
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                if restart is None:  # a shared server: at least no session state and plans
                    await pool.execute("DISCARD ALL")
                cold, n = await report(pool, days, interval, queues)
                warm = statistics.median([(await report(pool, days, interval, queues))[0] for _ in range(args.runs)])
                line = (f"{label:<8} {interval:>8} {'all' if queues is None else 'one':>6} {n:>9,} {ms(cold):>7} "
                        f"{ms(warm):>7}")
                if args.raw:
                    line += f" {ms((await report(pool, days, interval, queues, use_rollups=False))[0]):>10}"
                print(line, flush=True)
            finally:
                await pool.close()

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:  # the raw part at its largest: the facts after rolled_until (up to 1 h 15 min) at the busiest hour
        peak = await pool.fetchval("SELECT date_trunc('hour', entered_at) FROM queue_calls WHERE entered_at < "
                                   "now() - interval '8 days' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
        since, until = peak - timedelta(minutes=15), peak + timedelta(hours=1)
        n = await pool.fetchval("SELECT count(*) FROM queue_calls WHERE entered_at >= $1 AND entered_at < $2",
                                since, until)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            await reports.queue_report(pool, since=since, until=until, interval="15m", tz=TZ, use_rollups=False)
            times.append(time.perf_counter() - t)
        print(f"\nraw part at the busiest hour (75 min, {n:,} calls, all queues, 15m, raw facts): "
              f"{ms(statistics.median(times))} ms")
    finally:
        await pool.close()

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:  # freshness: a call that ended just now
        now = datetime.now(UTC)
        before = (await reports.queue_report(pool, since=now - timedelta(days=1), until=now + timedelta(minutes=1),
                                             interval="1d", queues=[ONE_QUEUE], tz=TZ))[0]["total"]["offered"]
        await pool.execute(
            "INSERT INTO queue_calls (node, linkedid, uniqueid, queue, caller_number, entered_at, outcome, wait_s, "
            "agent, talk_s, hold_s, acw_s, ended_at, final) VALUES ('bench', 'fresh', 'fresh', $1, '+4930999', "
            "now() - interval '70 seconds', 'answered', 10, 'agent001', 60, 0, 0, now(), true)", ONE_QUEUE)
        t = time.perf_counter()
        after = (await reports.queue_report(pool, since=now - timedelta(days=1), until=now + timedelta(minutes=1),
                                            interval="1d", queues=[ONE_QUEUE], tz=TZ))[0]["total"]["offered"]
        print(f"freshness: a call stored now is in the next report ({before} -> {after} offered, "
              f"{ms(time.perf_counter() - t)} ms)")
        assert after == before + 1
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=10_000_000, help="queue calls over the year (default 10000000)")
    ap.add_argument("--runs", type=int, default=5, help="warm runs per case (median printed)")
    ap.add_argument("--raw", action="store_true", help="also time the raw-facts path (slow)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--dsn", help="a dedicated database instead of a private cluster")
    where.add_argument("--data-dir", type=Path, help="keep the private cluster here (reused when it exists)")
    args = ap.parse_args(argv)

    if args.dsn:
        asyncio.run(run(args.dsn, args, None))
        return 0
    base = args.data_dir.resolve() if args.data_dir else Path(tempfile.mkdtemp(prefix="ccpbx-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)  # as root the server runs as `postgres`, which must reach the datadir
    pw_file = base / "bench.pw"
    if not pw_file.exists():
        pw_file.write_text(secrets.token_urlsafe(16))
    cluster = PgCluster(base / "data", free_port(), password=pw_file.read_text().strip())

    async def restart() -> None:
        await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(cluster.start)

    try:
        t0 = time.perf_counter()
        cluster.init()
        cluster.start()
        print(f"private cluster ready in {time.perf_counter() - t0:.1f}s ({cluster.datadir})")
        asyncio.run(run(cluster.dsn, args, restart))
    finally:
        if args.data_dir:
            cluster.stop()
        else:
            cluster.destroy()
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
