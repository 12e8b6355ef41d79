"""Rollups of the queue-call facts, so a queue report over a year answers in milliseconds and stays exact.

Why: `queue_report` used to aggregate every fact of the range; a 500-seat center has ~10 M queue calls a year, and
its FCR figure probes the caller index once per answered call. The rollups (migration 0014) hold the sums the
report needs per (UTC bucket, queue) at two spans, 15 minutes and one hour. Any time zone whose offsets are
multiples of 15 minutes builds its 15m/30m/1h/1d wall-clock intervals (DST days included) from whole buckets:
`plan_pieces` cuts the range into pieces read from hour rows, from 15-minute rows, or from raw facts (edges not on
a 15-minute mark, everything after `rolled_until`, and the buckets `blocked` below). Every rollup bucket lies
inside one interval, so the report groups rollup rows and raw facts into the same intervals, adds the integer sums
(times in integer milliseconds: exact in any order) and derives the figures in one place. The JSON is identical
whichever way a figure was computed (tests/unit/test_rollups.py compares both paths field by field).

Freshness without work on the hot path: rollups cover only buckets before `rolled_until`, at least an hour before
the last `build_rollups` run; the report aggregates the raw facts after it (about an hour of calls), so a call
that ends is in the report as soon as its facts are stored. `build_rollups` (call it at start and every few
minutes) moves `rolled_until` forward and rebuilds stale buckets. A fact changed later in an already rolled-up
bucket (a rebuild, a reconciled outage, a late survey score) is caught by the triggers of migration 0014: they run
only for facts that entered more than 45 minutes ago (never for the live path's recent calls) and mark the
fact's bucket, and the buckets of the same caller's answered calls whose FCR it can change, in
`queue_rollup_dirty`; the report reads marked buckets raw until the next build has rebuilt them.

FCR with the default window (604800 s) from rollups: a row counts its FCR calls (`fcr_n`), those repeated by a
call that entered before `rolled_until` (`fcr_rep`), and the first and last end of its FCR calls. At a report's
`now` a row whose calls' windows have all elapsed counts `fcr_n` decided and `fcr_n - fcr_rep` resolved, a row
with none elapsed `fcr_rep` decided and none resolved; a row with both (a bucket whose calls ended around
`now - window`) is read raw. Repeats by calls after `rolled_until` are found by `FCR_DELTA_SQL` from those
(recent, few) calls back through the caller index, and each extension of `rolled_until` adds the repeats by the
newly rolled calls to the rows before it, so `fcr_rep` never needs a full rebuild.

What the rollups cannot answer is computed from raw facts, for the whole range, per queue (documented in
`queue_report`): a service-level threshold that is not an integer from 0 to 120 s (the request's or the
queue's), a short-abandon threshold other than 5 s, an FCR window other than 604800 s.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "FCR_WINDOW_S",
    "SHORT_ABANDON_S",
    "SL_MAX_S",
    "Plan",
    "build_rollups",
    "load_plan",
    "plan_pieces",
    "rollup_threshold",
]

log = logging.getLogger(__name__)

QUARTER = timedelta(minutes=15)
HOUR = timedelta(hours=1)
#: Rollups end at least this long before a build starts. The triggers mark changed facts that entered more than
#: 45 minutes before the writing transaction began; the 15 minutes between are the margin for a writing
#: transaction that is still open while the build runs (store_facts' transactions last milliseconds).
LAG = timedelta(hours=1)
#: The most a single build transaction rolls up; a first build over a year of facts is a dozen transactions, so
#: a report or another builder never waits long behind one.
CHUNK = timedelta(days=31)
FCR_WINDOW_S = 604800.0
SHORT_ABANDON_S = 5.0
SL_MAX_S = 120
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
#: pg_advisory_xact_lock key ("ccrollup"): one builder at a time per database (several nodes may run it).
LOCK_KEY = int.from_bytes(b"ccrollup", "big", signed=True)
Conn = asyncpg.Connection | PoolConnectionProxy
Range = tuple[datetime, datetime]


def floor_to(dt: datetime, step: timedelta) -> datetime:
    """The last `step` mark (UTC, counted from 2000-01-01) at or before `dt`."""
    return ORIGIN + ((dt - ORIGIN) // step) * step


def ceil_to(dt: datetime, step: timedelta) -> datetime:
    f = floor_to(dt, step)
    return f if f == dt else f + step


def rollup_threshold(threshold: float) -> int | None:
    """The SL threshold as an index into `answered_within`, or None when the rollups cannot answer it."""
    if float(threshold).is_integer() and 0 <= threshold <= SL_MAX_S:
        return int(threshold)
    return None


# ---- the report's side: which parts of a range come from where ---------------------------------------------

@dataclass
class Plan:
    """Disjoint pieces covering a report's range: read raw, from 15-minute rows, from hour rows."""

    rolled_until: datetime
    raw: list[Range] = field(default_factory=list)
    quarter: list[Range] = field(default_factory=list)
    hour: list[Range] = field(default_factory=list)

    def rolled(self) -> list[tuple[int, datetime, datetime]]:
        """(span_s, lo, hi) of every rollup piece."""
        return [(900, a, b) for a, b in self.quarter] + [(3600, a, b) for a, b in self.hour]


def _add(pieces: list[Range], lo: datetime, hi: datetime) -> None:
    if lo >= hi:
        return
    if pieces and pieces[-1][1] == lo:
        pieces[-1] = (pieces[-1][0], hi)
    else:
        pieces.append((lo, hi))


def _carve(pieces: list[Range], lo: datetime, hi: datetime) -> bool:
    """Take `[lo, hi)` out of the (sorted, disjoint) piece that holds it whole; False when none does."""
    i = bisect.bisect_right(pieces, lo, key=lambda p: p[0]) - 1
    if i < 0 or not (pieces[i][0] <= lo and hi <= pieces[i][1]):
        return False
    a, b = pieces[i]
    pieces[i:i + 1] = [p for p in ((a, lo), (hi, b)) if p[0] < p[1]]
    return True


def plan_pieces(bounds: Sequence[datetime], rolled_until: datetime, raw_quarters: set[datetime] | None = None,
                split_hours: set[datetime] | None = None) -> Plan:
    """Cut the range of `bounds` (interval boundaries, UTC) into pieces.

    Per interval `[a, b)`: raw up to the first 15-minute mark, 15-minute rows up to the first hour mark, hour rows
    up to the last hour mark before `min(b, rolled_until)`, 15-minute rows to the last 15-minute mark, raw after.
    A rollup piece never crosses an interval boundary, so each rollup row belongs to one interval. Then the hours
    in `split_hours` are read from their 15-minute rows and the buckets in `raw_quarters` raw. Adjacent pieces of
    the same kind merge, so a year in Europe/Berlin is typically one hour piece and one raw piece."""
    plan = Plan(rolled_until)
    for a, b in itertools.pairwise(bounds):
        e = min(b, rolled_until)
        a15, e15 = ceil_to(a, QUARTER), floor_to(e, QUARTER) if e > a else a
        if a15 >= e15:
            _add(plan.raw, a, b)
            continue
        _add(plan.raw, a, a15)
        a60, e60 = ceil_to(a15, HOUR), floor_to(e15, HOUR)
        if a60 < e60:
            _add(plan.quarter, a15, a60)
            _add(plan.hour, a60, e60)
            _add(plan.quarter, e60, e15)
        else:
            _add(plan.quarter, a15, e15)
        _add(plan.raw, e15, b)
    raw_quarters = raw_quarters or set()
    for h in sorted((split_hours or set()) | {floor_to(q, HOUR) for q in raw_quarters}):
        if _carve(plan.hour, h, h + HOUR):
            bisect.insort(plan.quarter, (h, h + HOUR), key=lambda p: p[0])
    for q in sorted(raw_quarters):
        if _carve(plan.quarter, q, q + QUARTER):
            plan.raw.append((q, q + QUARTER))
    plan.raw.sort()
    return plan


# Buckets the report must read raw: marked stale, or holding FCR calls some of whose windows have elapsed at the
# report's `now` ($3) and some not.
_BLOCKED_SQL = """
SELECT bucket, 900 AS span_s FROM queue_rollup_dirty WHERE bucket >= $1 AND bucket < $2
UNION
SELECT bucket, span_s FROM queue_rollups
WHERE fcr_n > 0 AND tstzrange(fcr_ended_min, fcr_ended_max, '[)') @> ($3::timestamptz - interval '604800 seconds')
  AND bucket >= $1 AND bucket < $2
"""


async def load_plan(conn: Conn, bounds: Sequence[datetime], now: datetime) -> Plan | None:
    """The pieces of a report over `bounds` at `now` (None: nothing is rolled up there). Run it in the same
    REPEATABLE READ transaction as the report's reads, so pieces, rollups and facts are one snapshot."""
    until = await conn.fetchval("SELECT rolled_until FROM queue_rollup_state")
    if until is None or ceil_to(bounds[0], QUARTER) >= until:
        return None
    top = min(bounds[-1], until)
    raw_quarters: set[datetime] = set()
    split_hours: set[datetime] = set()
    for r in await conn.fetch(_BLOCKED_SQL, floor_to(bounds[0], HOUR), top, now):
        (raw_quarters if r["span_s"] == 900 else split_hours).add(r["bucket"])
    return plan_pieces(bounds, until, raw_quarters, split_hours)


# The sums of the rollup pieces ($1 span, $2 lo, $3 hi) per queue and interval ($4 boundaries). $5 the request's
# SL threshold (NULL: the queue's, else 20; the caller leaves out queues whose threshold is not an index), $6
# queues (NULL: all), $7 queues to leave out, $8 now.
ROLLUP_SQL = """
SELECT r.queue, width_bucket(r.bucket, $4::timestamptz[]) AS slot,
       sum(r.offered)::bigint AS offered, sum(r.answered)::bigint AS answered,
       sum(r.abandoned)::bigint AS abandoned, sum(r.short_abandoned)::bigint AS short_abandoned,
       sum(r.timeout)::bigint AS timeout, sum(r.transferred)::bigint AS transferred,
       sum(r.wait_ms)::bigint AS wait_ms, sum(r.wait_n)::bigint AS wait_n,
       sum(r.talk_ms)::bigint AS talk_ms, sum(r.talk_n)::bigint AS talk_n,
       sum(r.hold_ms)::bigint AS hold_ms, sum(r.hold_n)::bigint AS hold_n,
       sum(r.acw_ms)::bigint AS acw_ms, sum(r.acw_n)::bigint AS acw_n,
       sum(r.aht_ms)::bigint AS aht_ms, sum(r.aht_n)::bigint AS aht_n,
       max(r.max_wait_s) AS max_wait_s,
       sum(r.abandon_wait_ms)::bigint AS abandon_wait_ms, sum(r.abandon_wait_n)::bigint AS abandon_wait_n,
       sum(r.answered_within[COALESCE($5::int, q.sl_threshold_s, 20) + 1])::bigint AS in_sl,
       sum(r.csat_n)::bigint AS csat_n, sum(r.csat_good)::bigint AS csat_good, sum(r.csat_sum)::bigint AS csat_sum,
       sum(CASE WHEN r.fcr_ended_max <= $8::timestamptz - interval '604800 seconds' THEN r.fcr_n
                ELSE r.fcr_rep END)::bigint AS fcr_decided,
       sum(CASE WHEN r.fcr_ended_max <= $8::timestamptz - interval '604800 seconds' THEN r.fcr_n - r.fcr_rep
                ELSE 0 END)::bigint AS fcr_resolved
FROM unnest($1::int[], $2::timestamptz[], $3::timestamptz[]) AS g(span_s, lo, hi)
CROSS JOIN LATERAL (  -- one index range scan per piece
    SELECT * FROM queue_rollups r WHERE r.span_s = g.span_s AND r.bucket >= g.lo AND r.bucket < g.hi
      AND ($6::text[] IS NULL OR r.queue = ANY($6::text[])) AND NOT (r.queue = ANY($7::text[])) OFFSET 0) r
LEFT JOIN queues q ON q.name = r.queue
GROUP BY 1, 2
"""

# FCR calls in rollup pieces ($1 lo, $2 hi) repeated only by calls that entered at or after rolled_until ($3),
# which the rows' fcr_rep does not count: per queue and interval ($4), the calls whose window has not elapsed at
# $7 (undecided in the rows, decided now) and those whose window has (resolved in the rows, not now). $5, $6: the
# queue filters of ROLLUP_SQL. The repeats are the calls after rolled_until (about an hour), looked up backwards.
FCR_DELTA_SQL = """
WITH c AS (
    SELECT DISTINCT c.node, c.uniqueid, c.queue, c.entered_at, c.ended_at, c.caller_number, c.linkedid
    FROM queue_calls t
    JOIN queue_calls c ON c.caller_number = t.caller_number AND c.caller_number <> '' AND c.entered_at < t.entered_at
         AND t.entered_at > c.ended_at AND t.entered_at <= c.ended_at + interval '604800 seconds'
         AND t.linkedid <> c.linkedid
    WHERE t.entered_at >= $3 AND t.caller_number <> '' AND c.outcome = 'answered' AND c.entered_at < $3
      AND ($5::text[] IS NULL OR c.queue = ANY($5::text[])) AND NOT (c.queue = ANY($6::text[]))
)
SELECT c.queue, width_bucket(c.entered_at, $4::timestamptz[]) AS slot,
       count(*) FILTER (WHERE c.ended_at + interval '604800 seconds' > $7) AS decided_add,
       count(*) FILTER (WHERE c.ended_at + interval '604800 seconds' <= $7) AS resolved_sub
FROM c JOIN unnest($1::timestamptz[], $2::timestamptz[]) AS g(lo, hi)
     ON c.entered_at >= g.lo AND c.entered_at < g.hi
WHERE NOT EXISTS (
    SELECT 1 FROM queue_calls r
    WHERE r.caller_number = c.caller_number AND r.caller_number <> '' AND r.entered_at > c.ended_at
      AND r.entered_at <= c.ended_at + interval '604800 seconds' AND r.entered_at < $3 AND r.linkedid <> c.linkedid)
GROUP BY 1, 2
"""


# ---- the builder --------------------------------------------------------------------------------------------

# Rows of both spans for the facts that entered in the ranges ($1 lo, $2 hi: whole hours, the last one possibly
# cut at rolled_until), FCR repeats counted up to $3 (the new rolled_until). Same definitions as the report's raw
# SQL (reporting/reports.py), with the 5 s short-abandon threshold and the 604800 s FCR window.
_BUILD_SQL = """
WITH f AS (
    SELECT c.queue, date_bin('15 minutes', c.entered_at, timestamptz '2000-01-01 00:00:00+00') AS b15,
           date_bin('1 hour', c.entered_at, timestamptz '2000-01-01 00:00:00+00') AS b60,
           c.outcome = 'answered' AS ans, c.wait_s, c.talk_s, c.hold_s, c.acw_s, c.transferred, c.csat, c.ended_at,
           c.outcome IN ('abandoned', 'short_abandoned')
               AND COALESCE(c.wait_s < 5, c.outcome = 'short_abandoned') AS is_short,
           c.outcome IN ('abandoned', 'short_abandoned')
               AND NOT COALESCE(c.wait_s < 5, c.outcome = 'short_abandoned') AS is_abandoned,
           c.outcome IN ('timeout', 'exit_empty') AS is_timeout,
           (c.outcome = 'answered' AND c.caller_number <> '' AND c.ended_at IS NOT NULL) AS fcr_call,
           CASE WHEN c.outcome = 'answered' AND c.caller_number <> '' AND c.ended_at IS NOT NULL THEN EXISTS (
               SELECT 1 FROM queue_calls r
               WHERE r.caller_number = c.caller_number AND r.caller_number <> '' AND r.entered_at > c.ended_at
                 AND r.entered_at <= c.ended_at + interval '604800 seconds' AND r.entered_at < $3
                 AND r.linkedid <> c.linkedid) ELSE false END AS repeated
    FROM unnest($1::timestamptz[], $2::timestamptz[]) AS g(lo, hi)
    CROSS JOIN LATERAL (SELECT * FROM queue_calls c WHERE c.entered_at >= g.lo AND c.entered_at < g.hi OFFSET 0) c
), s AS (
    SELECT CASE WHEN GROUPING(b15) = 0 THEN 900 ELSE 3600 END AS span_s, COALESCE(b15, b60) AS bucket, queue,
           count(*) AS offered, count(*) FILTER (WHERE ans) AS answered,
           count(*) FILTER (WHERE is_abandoned) AS abandoned, count(*) FILTER (WHERE is_short) AS short_abandoned,
           count(*) FILTER (WHERE is_timeout) AS timeout, count(*) FILTER (WHERE ans AND transferred) AS transferred,
           COALESCE(sum(round(wait_s * 1000)::bigint) FILTER (WHERE ans), 0) AS wait_ms,
           count(wait_s) FILTER (WHERE ans) AS wait_n,
           COALESCE(sum(round(talk_s * 1000)::bigint) FILTER (WHERE ans), 0) AS talk_ms,
           count(talk_s) FILTER (WHERE ans) AS talk_n,
           COALESCE(sum(round(hold_s * 1000)::bigint) FILTER (WHERE ans), 0) AS hold_ms,
           count(hold_s) FILTER (WHERE ans) AS hold_n,
           COALESCE(sum(round(acw_s * 1000)::bigint) FILTER (WHERE ans), 0) AS acw_ms,
           count(acw_s) FILTER (WHERE ans) AS acw_n,
           COALESCE(sum(round(talk_s * 1000)::bigint + round(hold_s * 1000)::bigint
                        + round(acw_s * 1000)::bigint) FILTER (WHERE ans), 0) AS aht_ms,
           count(talk_s + hold_s + acw_s) FILTER (WHERE ans) AS aht_n,
           max(wait_s) AS max_wait_s,
           COALESCE(sum(round(wait_s * 1000)::bigint) FILTER (WHERE is_abandoned), 0) AS abandon_wait_ms,
           count(wait_s) FILTER (WHERE is_abandoned) AS abandon_wait_n,
           count(csat) AS csat_n, count(*) FILTER (WHERE csat >= 4) AS csat_good, COALESCE(sum(csat), 0) AS csat_sum,
           count(*) FILTER (WHERE fcr_call) AS fcr_n, count(*) FILTER (WHERE fcr_call AND repeated) AS fcr_rep,
           min(ended_at) FILTER (WHERE fcr_call) AS fcr_ended_min,
           max(ended_at) FILTER (WHERE fcr_call) AS fcr_ended_max,
           array_agg(LEAST(ceil(wait_s), 121)::int ORDER BY LEAST(ceil(wait_s), 121))
               FILTER (WHERE ans AND wait_s IS NOT NULL) AS waits
    FROM f GROUP BY GROUPING SETS ((queue, b15), (queue, b60))
)
INSERT INTO queue_rollups (span_s, bucket, queue, offered, answered, abandoned, short_abandoned, timeout, transferred,
                           wait_ms, wait_n, talk_ms, talk_n, hold_ms, hold_n, acw_ms, acw_n, aht_ms, aht_n, max_wait_s,
                           abandon_wait_ms, abandon_wait_n, csat_n, csat_good, csat_sum, fcr_n, fcr_rep,
                           fcr_ended_min, fcr_ended_max, answered_within)
SELECT span_s, bucket, queue, offered, answered, abandoned, short_abandoned, timeout, transferred, wait_ms, wait_n,
       talk_ms, talk_n, hold_ms, hold_n, acw_ms, acw_n, aht_ms, aht_n, max_wait_s, abandon_wait_ms, abandon_wait_n,
       csat_n, csat_good, csat_sum, fcr_n, fcr_rep, fcr_ended_min, fcr_ended_max,
       ARRAY(SELECT width_bucket(k, COALESCE(waits, '{}'::int[])) FROM generate_series(0, 120) AS k)
FROM s
"""

# Extending rolled_until from $1 to the new one: FCR calls in rows kept (entered before $2, the hour of the old
# rolled_until, and not in the hours rebuilt, $3) that are repeated by a call entered in [$1, $4) and by none
# before $1 gain one fcr_rep in their 15-minute and hour rows. $4 = min(new rolled_until, latest FCR end +
# window): later calls cannot repeat anything before $1.
_EXTEND_FCR_SQL = """
WITH c AS (
    SELECT DISTINCT c.node, c.uniqueid, c.queue, c.entered_at, c.ended_at, c.caller_number, c.linkedid
    FROM queue_calls t
    JOIN queue_calls c ON c.caller_number = t.caller_number AND c.caller_number <> '' AND c.entered_at < t.entered_at
         AND t.entered_at > c.ended_at AND t.entered_at <= c.ended_at + interval '604800 seconds'
         AND t.linkedid <> c.linkedid
    WHERE t.entered_at >= $1 AND t.entered_at < $4 AND t.caller_number <> '' AND c.outcome = 'answered'
      AND c.entered_at < $2
      AND NOT (date_bin('1 hour', c.entered_at, timestamptz '2000-01-01 00:00:00+00') = ANY($3::timestamptz[]))
), d AS (
    SELECT CASE WHEN GROUPING(b15) = 0 THEN 900 ELSE 3600 END AS span_s, COALESCE(b15, b60) AS bucket, queue,
           count(*) AS n
    FROM (SELECT c.queue, date_bin('15 minutes', c.entered_at, timestamptz '2000-01-01 00:00:00+00') AS b15,
                 date_bin('1 hour', c.entered_at, timestamptz '2000-01-01 00:00:00+00') AS b60
          FROM c WHERE NOT EXISTS (
              SELECT 1 FROM queue_calls r
              WHERE r.caller_number = c.caller_number AND r.caller_number <> '' AND r.entered_at > c.ended_at
                AND r.entered_at <= c.ended_at + interval '604800 seconds' AND r.entered_at < $1
                AND r.linkedid <> c.linkedid)) x
    GROUP BY GROUPING SETS ((queue, b15), (queue, b60))
)
UPDATE queue_rollups u SET fcr_rep = u.fcr_rep + d.n
FROM d WHERE u.span_s = d.span_s AND u.bucket = d.bucket AND u.queue = d.queue
"""


async def _build_step(conn: Conn, target: datetime) -> tuple[datetime | None, int]:
    """One transaction's work: rebuild marked buckets, extend rolled_until towards `target` by at most CHUNK.
    Returns the new rolled_until and the number of rows written."""
    state = await conn.fetchrow("SELECT rolled_until FROM queue_rollup_state FOR UPDATE")
    old = state["rolled_until"] if state is not None else None
    dirty = [r["bucket"] for r in await conn.fetch("DELETE FROM queue_rollup_dirty RETURNING bucket")]
    if old is None:
        first = await conn.fetchval("SELECT min(entered_at) FROM queue_calls")
        if first is None or first >= target:
            return None, 0
        old = floor_to(first, HOUR)
        await conn.execute("DELETE FROM queue_rollups")
        dirty = []
    new = max(old, min(target, old + CHUNK))
    dirty_hours = sorted({floor_to(b, HOUR) for b in dirty if b < old})
    ext_from = floor_to(old, HOUR)
    ranges = [(h, h + HOUR) for h in dirty_hours if h < ext_from]
    if new > ext_from:  # the hour of rolled_until: extended, or its rows rebuilt (at most an hour of facts)
        ranges.append((ext_from, new))
    written = 0
    if ranges:
        lo, hi = [a for a, _ in ranges], [b for _, b in ranges]
        await conn.execute("DELETE FROM queue_rollups r USING unnest($1::timestamptz[], $2::timestamptz[]) g(lo, hi) "
                           "WHERE r.bucket >= g.lo AND r.bucket < g.hi", lo, hi)
        status = await conn.execute(_BUILD_SQL, lo, hi, new)
        written = int(status.split()[-1])
    if new > old:
        latest = await conn.fetchval("SELECT max(fcr_ended_max) FROM queue_rollups WHERE span_s = 3600 AND bucket < $1",
                                     ext_from)
        if latest is not None:
            reach = min(new, latest + timedelta(seconds=FCR_WINDOW_S) + timedelta(microseconds=1))
            if reach > old:
                await conn.execute(_EXTEND_FCR_SQL, old, ext_from, dirty_hours, reach)
    await conn.execute("UPDATE queue_rollup_state SET rolled_until = $1, built_at = now()", new)
    return new, written


async def build_rollups(pool: asyncpg.Pool, until: datetime | None = None) -> dict[str, Any]:
    """Bring the rollups up to date: rebuild the buckets marked stale, roll up every bucket before
    `min(until, now - 1 h)` (15-minute marks). Idempotent and cheap when up to date; safe to call from several
    nodes at once (one builds, the others return `{"skipped": True}`).

    The service calls it once at start (a first build over a year of facts takes minutes, in transactions of a
    month each, while reports keep answering from raw facts) and then every few minutes, e.g.
    `while True: await build_rollups(pool); await asyncio.sleep(300)` in a task, logging and retrying on
    database errors. Reports are exact whether or not it ran; it only makes them fast."""
    rows = 0
    steps = 0
    rolled: datetime | None = None
    async with pool.acquire() as conn:
        while True:
            async with conn.transaction(isolation="repeatable_read"):
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_KEY):
                    return {"skipped": True, "rows": rows, "steps": steps, "rolled_until": rolled}
                now = await conn.fetchval("SELECT now()")
                target = floor_to(now - LAG, QUARTER)
                if until is not None:
                    target = min(target, floor_to(until, QUARTER))
                rolled, written = await _build_step(conn, target)
            rows += written
            steps += 1
            if rolled is None or rolled >= target:
                break
    log.info("rollups built up to %s (%d rows, %d steps)", rolled, rows, steps)
    return {"skipped": False, "rows": rows, "steps": steps, "rolled_until": rolled}
