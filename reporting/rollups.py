"""Rollups of the queue-call facts, so a queue report over a year answers in milliseconds and stays exact.

Why: `queue_report` used to aggregate every fact of the range; a 500-seat center has ~10 M queue calls a year, and
its FCR figure probes the caller index once per answered call. The rollups (migration 0015) hold the sums the
report needs per (level, block, queue). Levels: 15-minute and one-hour UTC blocks, and 24-hour blocks starting at
the local midnights of the time zones reports are made in (`build_rollups(zones=...)`; Europe/Berlin: 23:00 and
22:00 UTC). Any time zone whose offsets are multiples of 15 minutes builds its 15m/30m/1h/1d wall-clock intervals
(DST days included) from whole blocks: `plan_pieces` cuts the range into pieces read from day, hour or 15-minute
rows, or from raw facts (edges not on a 15-minute mark, everything after `rolled_until`, the blocks `blocked`
below). A rollup block never crosses an interval boundary, so the report groups rollup rows and raw facts into the
same intervals, adds the sums (times in integer milliseconds: exact in any order) and derives the figures in one
place. The JSON is identical whichever way a figure was computed (tests/unit/test_rollups.py compares both).

Freshness without work on the hot path: rollups cover only complete blocks before `rolled_until`, at least an hour
before the last `build_rollups` run; the report aggregates the raw facts after it (about an hour of calls), so a
call that ends is in the report as soon as its facts are stored. `build_rollups` (at start and every few minutes)
moves `rolled_until` forward and rebuilds stale blocks. A fact changed later in an already rolled-up block (a
rebuild, a reconciled outage, a late survey score) is caught by the triggers of migration 0015: they run only
for facts that entered more than 45 minutes ago (never for the live path's recent calls) and mark the fact's
15-minute bucket, and those of the same caller's answered calls whose FCR it can change, in `queue_rollup_dirty`;
the report reads marked buckets raw until the next build has rebuilt every block holding them. Day blocks are
summed from their 15-minute rows (plus the answered calls' waits), so a scattered change costs ~30 ms per day
block instead of re-reading and re-probing a day of facts. TRUNCATE of the facts resets the rollups.

FCR with the default window (604800 s) from rollups: a row counts its FCR calls (`fcr_n`), those repeated by a
call that entered before `rolled_until` (`fcr_rep`), and the first and last end of its FCR calls. At a report's
`now` a row whose calls' windows have all elapsed counts `fcr_n` decided and `fcr_n - fcr_rep` resolved, a row
with none elapsed `fcr_rep` decided and none resolved; a row with both (its calls ended around `now - window`) is
read raw. Repeats by calls after `rolled_until` are found by the report (reports.py, `_DELTA_PART`) from those
(recent, few) calls back through the caller index, and each extension of `rolled_until` adds the repeats by the
newly rolled calls to the rows before it (`_EXTEND_FCR_SQL`), so `fcr_rep` never needs a full rebuild.

What the rollups cannot answer is computed from raw facts, for the whole range, per queue (documented in
`queue_report`): a service-level threshold that is not an integer from 0 to 120 s (the request's or the
queue's), a short-abandon threshold other than 5 s, an FCR window other than 604800 s.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "FCR_WINDOW_S",
    "SHORT_ABANDON_S",
    "SL_MAX_S",
    "Plan",
    "build_rollups",
    "day_origins",
    "load_plan",
    "plan_pieces",
    "rollup_threshold",
]

log = logging.getLogger(__name__)

QUARTER = timedelta(minutes=15)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
#: Rollups end at least this long before a build starts. The triggers mark changed facts that entered more than
#: 45 minutes before the writing transaction began; the 15 minutes between are the margin for a writing
#: transaction that is still open while the build runs (store_facts' transactions last milliseconds).
LAG = timedelta(hours=1)
#: The most a single build transaction rolls up; a first build over a year of facts is a dozen transactions, so
#: reports and other builders never wait long behind one.
CHUNK = timedelta(days=31)
FCR_WINDOW_S = 604800.0
SHORT_ABANDON_S = 5.0
SL_MAX_S = 120
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
#: pg_advisory_xact_lock key ("ccrollup"): one builder at a time per database (several nodes may run it).
LOCK_KEY = int.from_bytes(b"ccrollup", "big", signed=True)
Conn = asyncpg.Connection | PoolConnectionProxy
Range = tuple[datetime, datetime]
#: (span_s, origin_s): 15 minutes, one hour, or 24 hours starting origin_s seconds past UTC midnight.
Level = tuple[int, int]
Q: Level = (900, 0)
H: Level = (3600, 0)


def floor_to(dt: datetime, step: timedelta, origin: timedelta = timedelta(0)) -> datetime:
    """The last block start (`ORIGIN + origin + k * step`) at or before `dt`."""
    base = ORIGIN + origin
    return base + ((dt - base) // step) * step


def ceil_to(dt: datetime, step: timedelta, origin: timedelta = timedelta(0)) -> datetime:
    """The first block start at or after `dt`."""
    f = floor_to(dt, step, origin)
    return f if f == dt else f + step


def rollup_threshold(threshold: float) -> int | None:
    """The SL threshold as an index into `answered_within`, or None when the rollups cannot answer it."""
    if float(threshold).is_integer() and 0 <= threshold <= SL_MAX_S:
        return int(threshold)
    return None


def day_origins(zones: Iterable[str], year: int | None = None) -> list[int]:
    """origin_s of the 24-hour levels for reports in `zones`: the UTC times of their local midnights under the
    current rules (standard and daylight time, sampled in January and July), multiples of 15 minutes only."""
    y = year if year is not None else datetime.now(UTC).year
    out = set()
    for name in zones:
        zone = ZoneInfo(name)
        for month in (1, 7):
            offset = datetime(y, month, 15, 12, tzinfo=UTC).astimezone(zone).utcoffset() or timedelta(0)
            origin = int((-offset) // timedelta(seconds=1)) % 86400
            if origin % 900 == 0:
                out.add(origin)
    return sorted(out)


# ---- the report's side: which parts of a range come from where ---------------------------------------------

@dataclass
class Plan:
    """Disjoint pieces covering a report's range: read raw, or from the rows of a level."""

    rolled_until: datetime
    raw: list[Range] = field(default_factory=list)
    levels: dict[Level, list[Range]] = field(default_factory=dict)

    def rolled(self) -> list[tuple[int, int, datetime, datetime]]:
        """(span_s, origin_s, lo, hi) of every rollup piece."""
        return [(span, origin, a, b) for (span, origin), pieces in sorted(self.levels.items()) for a, b in pieces]


def _insert(pieces: list[Range], lo: datetime, hi: datetime) -> None:
    """Insert `[lo, hi)` where it belongs (blocked rows split pieces in the middle of the list)."""
    if lo < hi:
        bisect.insort(pieces, (lo, hi), key=lambda p: p[0])


def _find(pieces: list[Range], t: datetime) -> int | None:
    """Index of the (sorted, disjoint) piece holding instant `t`."""
    i = bisect.bisect_right(pieces, t, key=lambda p: p[0]) - 1
    return i if i >= 0 and pieces[i][0] <= t < pieces[i][1] else None


def _carve(pieces: list[Range], lo: datetime, hi: datetime) -> bool:
    """Take `[lo, hi)` out of the piece that holds it whole; False when none does."""
    i = _find(pieces, lo)
    if i is None or hi > pieces[i][1]:
        return False
    a, b = pieces[i]
    pieces[i:i + 1] = [p for p in ((a, lo), (hi, b)) if p[0] < p[1]]
    return True


def _hours_quarters(plan: Plan, lo: datetime, hi: datetime) -> None:
    """Insert `[lo, hi)` (15-minute marks) as 15-minute pieces around the whole hours, which are hour pieces."""
    a60, e60 = min(ceil_to(lo, HOUR), hi), floor_to(hi, HOUR)
    if a60 < e60:
        _insert(plan.levels.setdefault(Q, []), lo, a60)
        _insert(plan.levels.setdefault(H, []), a60, e60)
        _insert(plan.levels.setdefault(Q, []), e60, hi)
    else:
        _insert(plan.levels.setdefault(Q, []), lo, hi)


_US = timedelta(microseconds=1)
_Q_US, _H_US, _D_US = 900_000_000, 3_600_000_000, 86_400_000_000


def _add_us(pieces: list[list[int]], lo: int, hi: int) -> None:
    """Append `[lo, hi)` after the last piece, merged with it when adjacent."""
    if lo < hi:
        if pieces and pieces[-1][1] == lo:
            pieces[-1][1] = hi
        else:
            pieces.append([lo, hi])


def plan_pieces(bounds: Sequence[datetime], rolled_until: datetime, origins: Iterable[int] = (),
                blocked: Iterable[tuple[int, int, datetime]] = ()) -> Plan:
    """Cut the range of `bounds` (interval boundaries, UTC) into pieces.

    Per interval `[a, b)`: raw up to the first 15-minute mark; whole 24-hour blocks when the interval starts on the
    origin of a day level (`origins`); then 15-minute rows up to the first hour mark, hour rows up to the last hour
    mark before `min(b, rolled_until)`, 15-minute rows up to the last 15-minute mark, raw after. A piece never
    crosses an interval boundary, so each rollup row belongs to one interval. Adjacent pieces of a kind merge: a
    year in Europe/Berlin at 1d is a few day pieces (winter, summer), the DST days in hours, and a raw piece.
    (Integer microseconds inside: a year at 15m is 35 000 intervals.)

    `blocked` (span_s, origin_s, block start): rows not to use. A 15-minute one is read raw, and the hour and day
    blocks holding it from their smaller blocks; an hour or day one from its smaller blocks."""
    ts = [(b - ORIGIN) // _US for b in bounds]
    until = (rolled_until - ORIGIN) // _US
    day_set = {o * 1_000_000 for o in origins}
    raw: list[list[int]] = []
    quarter: list[list[int]] = []
    hour: list[list[int]] = []
    days: dict[int, list[list[int]]] = {}
    for a, b in itertools.pairwise(ts):
        e = min(b, until)
        a15 = -(-a // _Q_US) * _Q_US
        e15 = e // _Q_US * _Q_US if e > a else a
        if a15 >= e15:
            _add_us(raw, a, b)
            continue
        _add_us(raw, a, a15)
        p = a15
        if day_set and a15 % _D_US in day_set and e15 - p >= _D_US:
            p = a15 + (e15 - a15) // _D_US * _D_US
            _add_us(days.setdefault(a15 % _D_US // 1_000_000, []), a15, p)
        a60, e60 = min(-(-p // _H_US) * _H_US, e15), e15 // _H_US * _H_US
        if a60 < e60:
            _add_us(quarter, p, a60)
            _add_us(hour, a60, e60)
            _add_us(quarter, e60, e15)
        else:
            _add_us(quarter, p, e15)
        _add_us(raw, e15, b)

    def dt(pieces: list[list[int]]) -> list[Range]:
        return [(ORIGIN + lo * _US, ORIGIN + hi * _US) for lo, hi in pieces]

    plan = Plan(rolled_until, dt(raw), {Q: dt(quarter), H: dt(hour), **{(86400, o): dt(v) for o, v in days.items()}})
    blocks = sorted(set(blocked))
    for span, _, start in blocks:  # day blocks holding a blocked row of any level
        for (lspan, lorigin), pieces in list(plan.levels.items()):
            if lspan != 86400 or _find(pieces, start) is None:
                continue
            day = floor_to(start, DAY, timedelta(seconds=lorigin))
            if (span == 86400 and day != start) or not _carve(pieces, day, day + DAY):
                continue  # a day row of another origin
            _hours_quarters(plan, day, day + DAY)
    for span, _, start in blocks:
        h = floor_to(start, HOUR)
        if span <= 3600 and _carve(plan.levels.get(H, []), h, h + HOUR):
            _insert(plan.levels.setdefault(Q, []), h, h + HOUR)
    for span, _, start in blocks:
        if span == 900 and _carve(plan.levels.get(Q, []), start, start + QUARTER):
            plan.raw.append((start, start + QUARTER))
    plan.raw.sort()
    plan.levels = {k: v for k, v in plan.levels.items() if v}
    return plan


# Rows the report must not use below $2: 15-minute buckets marked stale, and rows holding FCR calls some of whose
# windows have elapsed at the report's `now` ($3) and some not.
_BLOCKED_SQL = """
SELECT 900 AS span_s, 0 AS origin_s, bucket FROM queue_rollup_dirty WHERE bucket >= $1 AND bucket < $2
UNION
SELECT span_s, origin_s, bucket FROM queue_rollups
WHERE fcr_n > 0 AND tstzrange(fcr_ended_min, fcr_ended_max, '[)') @> ($3::timestamptz - interval '604800 seconds')
  AND bucket >= $1 AND bucket < $2
"""


async def load_plan(conn: Conn, bounds: Sequence[datetime], now: datetime) -> Plan | None:
    """The pieces of a report over `bounds` at `now` (None: nothing is rolled up there). Run it in the same
    REPEATABLE READ transaction as the report's reads, so pieces, rollups and facts are one snapshot."""
    state = await conn.fetchrow("SELECT rolled_until, day_origins FROM queue_rollup_state")
    if state is None or state["rolled_until"] is None or ceil_to(bounds[0], QUARTER) >= state["rolled_until"]:
        return None
    until = state["rolled_until"]
    rows = await conn.fetch(_BLOCKED_SQL, floor_to(bounds[0], QUARTER), min(bounds[-1], until), now)
    return plan_pieces(bounds, until, state["day_origins"],
                       [(r["span_s"], r["origin_s"], r["bucket"]) for r in rows])


# ---- the builder --------------------------------------------------------------------------------------------

# The rows of the 15-minute and hour blocks ($6 span, $7 origin, $8 start) from the facts that entered in the
# ranges ($1 lo, $2 hi: the union of those blocks), at the levels $4 span / $5 origin; FCR repeats counted up to
# $3 (the new rolled_until). Same definitions as the report's raw SQL (reporting/reports.py), with the 5 s
# short-abandon threshold and the 604800 s FCR window. Each fact is read and probed for a repeat once for both
# levels.
_BUILD_SQL = """
WITH f AS (
    SELECT c.queue, c.entered_at, c.outcome = 'answered' AS ans, c.wait_s, c.talk_s, c.hold_s, c.acw_s,
           c.transferred, c.csat, c.ended_at,
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
                 AND r.linkedid <> c.linkedid) ELSE false END AS repeated,
           LEAST(ceil(c.wait_s), 121)::int AS wait_ceil
    FROM unnest($1::timestamptz[], $2::timestamptz[]) AS g(lo, hi)
    CROSS JOIN LATERAL (SELECT * FROM queue_calls c WHERE c.entered_at >= g.lo AND c.entered_at < g.hi OFFSET 0) c
    OFFSET 0
), s AS (
    SELECT lv.span_s, lv.origin_s,
           date_bin(make_interval(secs => lv.span_s), f.entered_at,
                    timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => lv.origin_s)) AS bucket, f.queue,
           count(*) AS offered, count(*) FILTER (WHERE ans) AS answered,
           count(*) FILTER (WHERE is_abandoned) AS abandoned, count(*) FILTER (WHERE is_short) AS short_abandoned,
           count(*) FILTER (WHERE is_timeout) AS timeout, count(*) FILTER (WHERE ans AND transferred) AS transferred,
           COALESCE(sum(round(wait_s * 1000)) FILTER (WHERE ans), 0) AS wait_ms,
           count(wait_s) FILTER (WHERE ans) AS wait_n,
           COALESCE(sum(round(talk_s * 1000)) FILTER (WHERE ans), 0) AS talk_ms,
           count(talk_s) FILTER (WHERE ans) AS talk_n,
           COALESCE(sum(round(hold_s * 1000)) FILTER (WHERE ans), 0) AS hold_ms,
           count(hold_s) FILTER (WHERE ans) AS hold_n,
           COALESCE(sum(round(acw_s * 1000)) FILTER (WHERE ans), 0) AS acw_ms,
           count(acw_s) FILTER (WHERE ans) AS acw_n,
           COALESCE(sum(round(talk_s * 1000) + round(hold_s * 1000) + round(acw_s * 1000)) FILTER (WHERE ans), 0)
               AS aht_ms,
           count(talk_s + hold_s + acw_s) FILTER (WHERE ans) AS aht_n,
           max(wait_s) AS max_wait_s,
           COALESCE(sum(round(wait_s * 1000)) FILTER (WHERE is_abandoned), 0) AS abandon_wait_ms,
           count(wait_s) FILTER (WHERE is_abandoned) AS abandon_wait_n,
           count(csat) AS csat_n, count(*) FILTER (WHERE csat >= 4) AS csat_good, COALESCE(sum(csat), 0) AS csat_sum,
           count(*) FILTER (WHERE fcr_call) AS fcr_n, count(*) FILTER (WHERE fcr_call AND repeated) AS fcr_rep,
           min(ended_at) FILTER (WHERE fcr_call) AS fcr_ended_min,
           max(ended_at) FILTER (WHERE fcr_call) AS fcr_ended_max,
           array_agg(wait_ceil ORDER BY wait_ceil) FILTER (WHERE ans AND wait_s IS NOT NULL) AS waits
    FROM f CROSS JOIN unnest($4::int[], $5::int[]) AS lv(span_s, origin_s)
    GROUP BY 1, 2, 3, 4
), ins AS (
INSERT INTO queue_rollups (span_s, origin_s, bucket, queue, offered, answered, abandoned, short_abandoned, timeout,
                           transferred, wait_ms, wait_n, talk_ms, talk_n, hold_ms, hold_n, acw_ms, acw_n, aht_ms,
                           aht_n, max_wait_s, abandon_wait_ms, abandon_wait_n, csat_n, csat_good, csat_sum, fcr_n,
                           fcr_rep, fcr_ended_min, fcr_ended_max, answered_within)
SELECT s.span_s, s.origin_s, s.bucket, queue, offered, answered, abandoned, short_abandoned, timeout, transferred,
       wait_ms, wait_n, talk_ms, talk_n, hold_ms, hold_n, acw_ms, acw_n, aht_ms, aht_n, max_wait_s, abandon_wait_ms,
       abandon_wait_n, csat_n, csat_good, csat_sum, fcr_n, fcr_rep, fcr_ended_min, fcr_ended_max,
       ARRAY(SELECT width_bucket(k, COALESCE(waits, '{}'::int[])) FROM generate_series(0, 120) AS k)
FROM s JOIN unnest($6::int[], $7::int[], $8::timestamptz[]) AS k(span_s, origin_s, bucket)
     ON k.span_s = s.span_s AND k.origin_s = s.origin_s AND k.bucket = s.bucket
RETURNING fcr_ended_max
)
SELECT count(*) AS n, max(fcr_ended_max) AS fcr_ended_max FROM ins
"""

# Extending rolled_until from $1: FCR calls that entered before $1 and are repeated by a call entered in [$1, $2)
# and by none before $1, counted per row of every level ($3 span, $4 origin) they are in. $2 = min(new
# rolled_until, latest FCR end + window): later calls repeat nothing before $1. The rows built before this
# transaction gain these counts in fcr_rep (`_ADD_FCR_SQL`).
_EXTEND_FCR_SQL = """
WITH c AS (
    SELECT DISTINCT c.node, c.uniqueid, c.queue, c.entered_at, c.ended_at, c.caller_number, c.linkedid
    FROM queue_calls t
    JOIN queue_calls c ON c.caller_number = t.caller_number AND c.caller_number <> '' AND c.outcome = 'answered'
         AND c.ended_at < t.entered_at AND c.ended_at >= t.entered_at - interval '604800 seconds'
         AND t.linkedid <> c.linkedid  -- (index queue_calls_caller_ended)
    WHERE t.entered_at >= $1 AND t.entered_at < $2 AND t.caller_number <> '' AND c.entered_at < $1
), n AS (  -- repeated before $1: probed per call (an expression, never a hash anti-join over all the facts)
    SELECT c.queue, c.entered_at, EXISTS (
        SELECT 1 FROM queue_calls r
        WHERE r.caller_number = c.caller_number AND r.caller_number <> '' AND r.entered_at > c.ended_at
          AND r.entered_at <= c.ended_at + interval '604800 seconds' AND r.entered_at < $1
          AND r.linkedid <> c.linkedid) AS repeated_before
    FROM c OFFSET 0
)
SELECT lv.span_s, lv.origin_s,
       date_bin(make_interval(secs => lv.span_s), n.entered_at,
                timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => lv.origin_s)) AS bucket,
       n.queue, count(*)::int AS n
FROM n CROSS JOIN unnest($3::int[], $4::int[]) AS lv(span_s, origin_s)
WHERE NOT n.repeated_before
GROUP BY 1, 2, 3, 4
"""

# The counts as arrays: PostgreSQL plans the update for their real number (index lookups), where a join with the
# query above, estimated at thousands of rows, was planned as a scan of every rollup row.
_ADD_FCR_SQL = """
UPDATE queue_rollups u SET fcr_rep = u.fcr_rep + d.n
FROM unnest($1::int[], $2::int[], $3::timestamptz[], $4::text[], $5::int[]) AS d(span_s, origin_s, bucket, queue, n)
WHERE u.span_s = d.span_s AND u.origin_s = d.origin_s AND u.bucket = d.bucket AND u.queue = d.queue
  AND u.built_at < now()
"""


# Day rows ($1 origin, $2 block start) from the 15-minute rows of their 24 hours, which this transaction has brought
# up to date first (rebuilt, or their fcr_rep extended), and the answered calls' waits for `answered_within` (an
# element-wise sum of 96 arrays would cost more than reading the waits again). No repeat probe per call: a day
# block costs a tenth of building it from the facts, which matters when scattered old facts change.
_DAY_SQL = """
WITH k AS (
    SELECT * FROM unnest($1::int[], $2::timestamptz[]) AS k(origin_s, bucket)
), s AS (
    SELECT k.origin_s, k.bucket, q.queue, sum(q.offered) AS offered, sum(q.answered) AS answered,
           sum(q.abandoned) AS abandoned, sum(q.short_abandoned) AS short_abandoned, sum(q.timeout) AS timeout,
           sum(q.transferred) AS transferred, sum(q.wait_ms) AS wait_ms, sum(q.wait_n) AS wait_n,
           sum(q.talk_ms) AS talk_ms, sum(q.talk_n) AS talk_n, sum(q.hold_ms) AS hold_ms, sum(q.hold_n) AS hold_n,
           sum(q.acw_ms) AS acw_ms, sum(q.acw_n) AS acw_n, sum(q.aht_ms) AS aht_ms, sum(q.aht_n) AS aht_n,
           max(q.max_wait_s) AS max_wait_s, sum(q.abandon_wait_ms) AS abandon_wait_ms,
           sum(q.abandon_wait_n) AS abandon_wait_n, sum(q.csat_n) AS csat_n, sum(q.csat_good) AS csat_good,
           sum(q.csat_sum) AS csat_sum, sum(q.fcr_n) AS fcr_n, sum(q.fcr_rep) AS fcr_rep,
           min(q.fcr_ended_min) AS fcr_ended_min, max(q.fcr_ended_max) AS fcr_ended_max
    FROM k CROSS JOIN LATERAL (
        SELECT * FROM queue_rollups q WHERE q.span_s = 900 AND q.origin_s = 0 AND q.bucket >= k.bucket
          AND q.bucket < k.bucket + interval '24 hours' OFFSET 0) q
    GROUP BY 1, 2, 3
), w AS (
    SELECT k.origin_s, k.bucket, c.queue, array_agg(c.wait_ceil ORDER BY c.wait_ceil) AS waits
    FROM k CROSS JOIN LATERAL (
        SELECT c.queue, LEAST(ceil(c.wait_s), 121)::int AS wait_ceil FROM queue_calls c
        WHERE c.entered_at >= k.bucket AND c.entered_at < k.bucket + interval '24 hours'
          AND c.outcome = 'answered' AND c.wait_s IS NOT NULL OFFSET 0) c
    GROUP BY 1, 2, 3
), ins AS (
INSERT INTO queue_rollups (span_s, origin_s, bucket, queue, offered, answered, abandoned, short_abandoned, timeout,
                           transferred, wait_ms, wait_n, talk_ms, talk_n, hold_ms, hold_n, acw_ms, acw_n, aht_ms,
                           aht_n, max_wait_s, abandon_wait_ms, abandon_wait_n, csat_n, csat_good, csat_sum, fcr_n,
                           fcr_rep, fcr_ended_min, fcr_ended_max, answered_within)
SELECT 86400, s.origin_s, s.bucket, s.queue, offered, answered, abandoned, short_abandoned, timeout, transferred,
       wait_ms, wait_n, talk_ms, talk_n, hold_ms, hold_n, acw_ms, acw_n, aht_ms, aht_n, max_wait_s, abandon_wait_ms,
       abandon_wait_n, csat_n, csat_good, csat_sum, fcr_n, fcr_rep, fcr_ended_min, fcr_ended_max,
       ARRAY(SELECT width_bucket(x, COALESCE(w.waits, '{}'::int[])) FROM generate_series(0, 120) AS x)
FROM s LEFT JOIN w ON w.origin_s = s.origin_s AND w.bucket = s.bucket AND w.queue = s.queue
RETURNING fcr_ended_max
)
SELECT count(*) AS n, max(fcr_ended_max) AS fcr_ended_max FROM ins
"""


def _levels(origins: Sequence[int]) -> list[Level]:
    """Every level built: 15 minutes, one hour, a day from each origin."""
    return [Q, H, *((86400, o) for o in origins)]


def _blocks_ending_in(level: Level, lo: datetime, hi: datetime) -> list[datetime]:
    """Starts of the blocks of `level` whose end is in (lo, hi]."""
    span, origin = timedelta(seconds=level[0]), timedelta(seconds=level[1])
    first = floor_to(lo, span, origin) + span  # the first end after lo
    return [first - span + k * span for k in range(max(0, (hi - first) // span + 1))]


def _merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """The union of the blocks as disjoint ranges, so each fact is read once for all its blocks."""
    out: list[Range] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


async def _build_step(conn: Conn, target: datetime, origins: list[int]) -> tuple[datetime | None, int]:
    """One transaction's work: rebuild the blocks holding marked buckets, extend rolled_until towards `target` by
    at most CHUNK. Returns the new rolled_until and the number of rows written."""
    state = await conn.fetchrow("SELECT rolled_until, day_origins, fcr_ended_max FROM queue_rollup_state FOR UPDATE")
    assert state is not None, "migration 0015 inserts the state row"
    old = state["rolled_until"]
    latest = state["fcr_ended_max"]
    dirty = [r["bucket"] for r in await conn.fetch("DELETE FROM queue_rollup_dirty RETURNING bucket")]
    if old is None or list(state["day_origins"]) != origins:  # first build, or other zones: from scratch
        first = await conn.fetchval("SELECT min(entered_at) FROM queue_calls")
        await conn.execute("DELETE FROM queue_rollups")
        await conn.execute("UPDATE queue_rollup_state SET rolled_until = NULL, day_origins = $1, "
                           "fcr_ended_max = NULL", origins)
        if first is None or floor_to(first, QUARTER) >= target:
            return None, 0
        old, dirty, latest = floor_to(first, QUARTER), [], None
    new = max(old, min(target, old + CHUNK))
    levels = _levels(origins)
    todo: set[tuple[int, int, datetime]] = set()  # (span_s, origin_s, start) of the blocks to (re)build
    for level in levels:
        span, origin = timedelta(seconds=level[0]), timedelta(seconds=level[1])
        for b in dirty:  # rebuild the complete blocks holding a marked bucket
            start = floor_to(b, span, origin)
            if start + span <= old:
                todo.add((*level, start))
        todo.update((*level, start) for start in _blocks_ending_in(level, old, new))
    blocks = sorted(todo)
    if blocks:
        await conn.execute("DELETE FROM queue_rollups r USING unnest($1::int[], $2::int[], $3::timestamptz[]) "
                           "AS k(span_s, origin_s, bucket) WHERE r.span_s = k.span_s AND r.origin_s = k.origin_s "
                           "AND r.bucket = k.bucket", [b[0] for b in blocks], [b[1] for b in blocks],
                           [b[2] for b in blocks])
    written = 0
    built_latest = None
    small = [b for b in blocks if b[0] < 86400]
    if small:  # 15-minute and hour blocks from the facts
        ranges = _merge_ranges((t, t + timedelta(seconds=s)) for s, _, t in small)
        used = sorted({(s, o) for s, o, _ in small})
        built = await conn.fetchrow(_BUILD_SQL, [a for a, _ in ranges], [b for _, b in ranges], new,
                                    [s for s, _ in used], [o for _, o in used], [b[0] for b in small],
                                    [b[1] for b in small], [b[2] for b in small])
        assert built is not None
        written, built_latest = built["n"], built["fcr_ended_max"]
    if new > old and latest is not None:  # rows built before: repeats by the calls rolled up now
        reach = min(new, latest + timedelta(seconds=FCR_WINDOW_S, microseconds=1))
        if reach > old:
            d = await conn.fetch(_EXTEND_FCR_SQL, old, reach, [s for s, _ in levels], [o for _, o in levels])
            if d:
                await conn.execute(_ADD_FCR_SQL, *([r[k] for r in d] for k in range(5)))
    days = [b for b in blocks if b[0] == 86400]
    if days:  # from the 15-minute rows, now all up to date
        built = await conn.fetchrow(_DAY_SQL, [b[1] for b in days], [b[2] for b in days])
        assert built is not None
        written += built["n"]
    await conn.execute("UPDATE queue_rollup_state SET rolled_until = $1, day_origins = $2, built_at = now(), "
                       "fcr_ended_max = GREATEST(fcr_ended_max, $3)", new, origins, built_latest)
    return new, written


async def build_rollups(pool: asyncpg.Pool, until: datetime | None = None,
                        zones: Iterable[str] = ("UTC",)) -> dict[str, Any]:
    """Bring the rollups up to date: rebuild the blocks marked stale, roll up every complete block before
    `min(until, now - 1 h)` (on a 15-minute mark), with day levels for the local midnights of `zones` (the time
    zones reports are made in; other zones use hour and 15-minute rows, a little slower for long ranges).
    Changing `zones` rebuilds everything. Idempotent and cheap when up to date; safe to call from several nodes
    at once (one builds, the others return `{"skipped": True}`).

    The service calls it once at start and then every few minutes, e.g. a task running
    `while True: await build_rollups(pool, zones=[...]); await asyncio.sleep(300)` that logs and retries database
    errors. A first build over a year of a large center's facts takes minutes, in transactions of a month each;
    reports stay exact meanwhile (they read raw facts where nothing is rolled up, only slower)."""
    origins = day_origins(zones)
    rows = 0
    steps = 0
    rolled: datetime | None = None
    async with pool.acquire() as conn:
        while True:
            async with conn.transaction(isolation="repeatable_read"):
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_KEY):
                    return {"skipped": True, "rows": rows, "steps": steps, "rolled_until": rolled}
                # the build sorts a month of facts at four levels: in memory, not in temp files; plans for the
                # actual arrays of blocks (a generic plan guesses their size)
                await conn.execute("SET LOCAL work_mem = '128MB'")
                await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
                now = await conn.fetchval("SELECT now()")
                target = floor_to(now - LAG, QUARTER)
                if until is not None:
                    target = min(target, floor_to(until, QUARTER))
                rolled, written = await _build_step(conn, target, origins)
            rows += written
            steps += 1
            if rolled is None or rolled >= target:
                break
        if rows > 50_000:  # a first build: plans need the new rows' statistics now, not at autovacuum's next look
            await conn.execute("ANALYZE queue_rollups")
    log.info("rollups built up to %s (%d rows, %d steps)", rolled, rows, steps)
    return {"skipped": False, "rows": rows, "steps": steps, "rolled_until": rolled}
