"""Historical reports over the stored facts: queue figures per interval (KPIS.md), call facts, IVR paths.

Why here and not in the web layer: the figures are the contract of KPIS.md, computed in one place that tests,
the API and its CSV export share. The queue report is one SQL statement: sums per (queue, interval) from the
rollups of reporting/rollups.py for the whole 15-minute, hour and day blocks they cover, and from `queue_calls`
for the rest (the last hour or so, edges, blocks marked stale), added up (integer milliseconds, so the order does
not matter) and turned into the named figures (`None` when a denominator is 0); only the figures leave the
database. Python lists every interval, empty ones included.

Intervals (`interval_bounds`): the boundaries are the instants at which the wall clock of the time zone shows a
multiple of the interval counted from local midnight (`1d`: local midnights), computed with zoneinfo.
A spring-forward day has 23 one-hour intervals and a fall-back day 25: the repeated hour is two intervals of one
real hour each (bucketing on the local wall-clock time alone would merge them into one two-hour bucket), and a
`1d` interval is 23 or 25 h long there. The first and last interval are clipped to the requested range, so an
interval's figures cover exactly its `[start, end)`. PostgreSQL assigns each queue call to its interval with
`width_bucket(entered_at, boundaries)` (a binary search per row), so the grouping stays in SQL.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall_time
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from reporting import rollups

__all__ = [
    "DEFAULT_SL_THRESHOLD_S",
    "FCR_WINDOW_S",
    "INTERVALS",
    "QUEUE_FIELDS",
    "SHORT_ABANDON_S",
    "calls",
    "incomplete_ranges",
    "interval_bounds",
    "ivr_paths",
    "queue_report",
]

#: Interval name -> minutes.
INTERVALS: dict[str, int] = {"15m": 15, "30m": 30, "1h": 60, "1d": 1440}
DEFAULT_SL_THRESHOLD_S = 20.0
SHORT_ABANDON_S = 5.0
FCR_WINDOW_S = 604800.0

#: The queue figures of KPIS.md, in the order the API and the CSV list them.
QUEUE_FIELDS = ("offered", "answered", "abandoned", "short_abandoned", "timeout", "asa_s", "max_wait_s",
                "avg_abandon_wait_s", "service_level", "abandon_rate", "aht_s", "avg_talk_s", "avg_hold_s",
                "avg_acw_s", "transfer_rate", "fcr_rate", "csat", "csat_avg")


def _local_instants(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants at which the clock of `zone` shows the naive `wall` time: one, two (the repeated hour
    of a fall-back) or, for a time skipped by a spring-forward, the instant the skip happens (so a local
    midnight that does not exist still starts its day)."""
    out = []
    for fold in (0, 1):
        inst = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if inst.astimezone(zone).replace(tzinfo=None) == wall and inst not in out:
            out.append(inst)
    if out:
        return out
    a, b = sorted(wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1))
    while b - a > timedelta(seconds=1):  # first instant whose local time is past `wall`: the transition
        mid = a + (b - a) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= wall:
            b = mid
        else:
            a = mid
    return [b.replace(microsecond=0)]


def interval_bounds(since: datetime, until: datetime, interval: str, tz: str = "UTC") -> list[datetime]:
    """Sorted UTC boundaries of the intervals covering `[since, until)`: `since`, every wall-clock-aligned
    instant strictly inside, `until` (see the module docstring). `n` boundaries make `n - 1` intervals."""
    minutes = INTERVALS[interval]
    zone = ZoneInfo(tz)
    lo, hi = since.astimezone(UTC), until.astimezone(UTC)
    if hi <= lo:
        raise ValueError("since must be before until")
    inside: set[datetime] = set()
    day: date = lo.astimezone(zone).date() - timedelta(days=1)
    last = hi.astimezone(zone).date() + timedelta(days=1)
    midnight = _local_instants(datetime.combine(day, wall_time(0)), zone)[0]
    while day <= last:
        following = _local_instants(datetime.combine(day + timedelta(days=1), wall_time(0)), zone)[0]
        if following - midnight == timedelta(days=1) and midnight.astimezone(zone).utcoffset() == \
                following.astimezone(zone).utcoffset():  # no clock change that day: plain arithmetic
            candidates = [midnight + timedelta(minutes=m) for m in range(0, 1440, minutes)]
        else:
            candidates = [inst for m in range(0, 1440, minutes)
                          for inst in _local_instants(datetime.combine(day, wall_time(m // 60, m % 60)), zone)]
        inside.update(inst for inst in candidates if lo < inst < hi)
        day, midnight = day + timedelta(days=1), following
    return [lo, *sorted(inside), hi]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


#: The figures as `_REPORT_SQL` returns them after (queue, slot), in QUEUE_FIELDS order.
_EMPTY: dict[str, Any] = {k: (0 if k in ("offered", "answered", "abandoned", "short_abandoned", "timeout") else None)
                          for k in QUEUE_FIELDS}

# One statement per report: the sums of each source per (queue, interval), added up, and the figures.
#
# Sources (UNION ALL, each row the same integer sums; times in integer milliseconds, as float8, which holds such
# sums exactly, so they add up to the same in any order):
# - raw: the facts in the raw pieces ($1 lo, $2 hi) of the queues asked for ($6, NULL: all), and the facts in the
#   rollup pieces ($12, $13) of the queues whose SL threshold the rollups cannot answer ($9);
# - roll: the rollup rows of the rollup pieces ($10 span, $11 origin, $12 lo, $13 hi), those queues left out;
# - delta: FCR calls in rollup rows that are repeated only by calls entered at or after rolled_until ($14), which
#   the rows' fcr_rep does not count (reporting/rollups.py): decided now if their window is still open (the row
#   counted them undecided), not resolved if it has elapsed (the row counted them resolved).
# $3 interval boundaries (an array literal: one string instead of 35 000 timestamps for a year at 15m; parsed once,
# in the materialized CTE: the cast is only stable, and would otherwise be evaluated per row); interval number
# `slot` = width_bucket, NULL on the rows of the whole range (GROUPING SETS). $4 the request's SL threshold (NULL:
# the queue's, else 20; rollup rows: `answered_within`, with the configured queues' thresholds in $15/$16), $5
# short-abandon threshold, $7 FCR window (s), $8 now.
#
# Short abandons are re-derived from wait_s with the request's threshold (the stored outcome when wait_s is
# unknown), so the projector's 5 s default is not baked into the report.
# FCR: a repeat is another queue call of the same caller_number that entered in (ended_at, ended_at + window],
# in any queue on any node, of another linkedid (the same call moving on to a second queue, e.g. transferred
# by the agent, is not a new contact). A call counts once decided: it has a repeat, or its window has elapsed.
# Figures are computed here with the arithmetic Python would use (float8 division, round() ties to even):
# means rounded to the millisecond as round(ms / n) / 1000.
_RAW_PART = """
SELECT queue, width_bucket(entered_at, (SELECT bounds FROM b)) AS slot,
       count(*)::int AS offered, count(*) FILTER (WHERE ans)::int AS answered,
       count(*) FILTER (WHERE is_abandoned)::int AS abandoned, count(*) FILTER (WHERE is_short)::int AS short_abandoned,
       count(*) FILTER (WHERE outcome IN ('timeout', 'exit_empty'))::int AS timeout,
       count(*) FILTER (WHERE ans AND transferred)::int AS transferred,
       COALESCE(sum(round(wait_s * 1000)) FILTER (WHERE ans), 0) AS wait_ms,
       count(wait_s) FILTER (WHERE ans)::int AS wait_n,
       COALESCE(sum(round(talk_s * 1000)) FILTER (WHERE ans), 0) AS talk_ms,
       count(talk_s) FILTER (WHERE ans)::int AS talk_n,
       COALESCE(sum(round(hold_s * 1000)) FILTER (WHERE ans), 0) AS hold_ms,
       count(hold_s) FILTER (WHERE ans)::int AS hold_n,
       COALESCE(sum(round(acw_s * 1000)) FILTER (WHERE ans), 0) AS acw_ms,
       count(acw_s) FILTER (WHERE ans)::int AS acw_n,
       COALESCE(sum(round(talk_s * 1000) + round(hold_s * 1000) + round(acw_s * 1000)) FILTER (WHERE ans), 0)
           AS aht_ms,
       count(talk_s + hold_s + acw_s) FILTER (WHERE ans)::int AS aht_n,
       max(wait_s) AS max_wait_s,
       COALESCE(sum(round(wait_s * 1000)) FILTER (WHERE is_abandoned), 0) AS abandon_wait_ms,
       count(wait_s) FILTER (WHERE is_abandoned)::int AS abandon_wait_n,
       count(*) FILTER (WHERE ans AND wait_s <= threshold)::int AS in_sl,
       count(csat)::int AS csat_n, count(*) FILTER (WHERE csat >= 4)::int AS csat_good,
       COALESCE(sum(csat), 0)::int AS csat_sum,
       count(*) FILTER (WHERE fcr_call AND (repeated OR ended_at + make_interval(secs => $7) <= $8))::int
           AS fcr_decided,
       count(*) FILTER (WHERE fcr_call AND NOT repeated AND ended_at + make_interval(secs => $7) <= $8)::int
           AS fcr_resolved
FROM (
    SELECT f.*, left_queue AND short_wait AS is_short, left_queue AND NOT short_wait AS is_abandoned,
           CASE WHEN fcr_call THEN EXISTS (
               SELECT 1 FROM queue_calls r
               WHERE r.caller_number = f.caller_number AND r.caller_number <> ''
                 AND r.entered_at > f.ended_at AND r.entered_at <= f.ended_at + make_interval(secs => $7)
                 AND r.linkedid <> f.linkedid) ELSE false END AS repeated
    FROM (
        SELECT c.queue, c.entered_at, c.linkedid, c.caller_number, c.outcome, c.wait_s, c.talk_s, c.hold_s,
               c.acw_s, c.transferred, c.csat, c.ended_at,
               COALESCE($4::float8, q.sl_threshold_s::float8, 20) AS threshold,
               c.outcome = 'answered' AS ans,
               c.outcome IN ('abandoned', 'short_abandoned') AS left_queue,
               COALESCE(c.wait_s < $5::float8, c.outcome = 'short_abandoned') AS short_wait,
               (c.outcome = 'answered' AND c.caller_number <> '' AND c.ended_at IS NOT NULL) AS fcr_call
        FROM unnest({lo}::timestamptz[], {hi}::timestamptz[]) AS g(lo, hi)
        CROSS JOIN LATERAL (  -- one index range scan per piece (OFFSET 0: not flattened into a join)
            SELECT * FROM queue_calls c WHERE c.entered_at >= g.lo AND c.entered_at < g.hi AND {queues} OFFSET 0) c
        LEFT JOIN queues q ON q.name = c.queue
    ) f
    OFFSET 0  -- `repeated` is used twice: probed once per call
) f
GROUP BY 1, 2
"""

_ROLL_PART = """
SELECT r.queue, width_bucket(r.bucket, (SELECT bounds FROM b)) AS slot, r.offered, r.answered, r.abandoned,
       r.short_abandoned, r.timeout, r.transferred, r.wait_ms, r.wait_n, r.talk_ms, r.talk_n, r.hold_ms, r.hold_n,
       r.acw_ms, r.acw_n, r.aht_ms, r.aht_n, r.max_wait_s, r.abandon_wait_ms, r.abandon_wait_n,
       r.answered_within[COALESCE($4::float8::int, ($16::int[])[array_position($15::text[], r.queue)], 20) + 1]
           AS in_sl,
       r.csat_n, r.csat_good, r.csat_sum,
       CASE WHEN r.fcr_ended_max <= $8::timestamptz - interval '604800 seconds' THEN r.fcr_n ELSE r.fcr_rep END
           AS fcr_decided,
       CASE WHEN r.fcr_ended_max <= $8::timestamptz - interval '604800 seconds' THEN r.fcr_n - r.fcr_rep
            ELSE 0 END AS fcr_resolved
FROM unnest($10::int[], $11::int[], $12::timestamptz[], $13::timestamptz[]) AS g(span_s, origin_s, lo, hi)
{roll_queues}CROSS JOIN LATERAL (  -- one index range scan per piece (and queue asked for)
    SELECT * FROM queue_rollups r
    WHERE r.span_s = g.span_s AND r.origin_s = g.origin_s AND r.bucket >= g.lo AND r.bucket < g.hi
      AND {roll_filter} AND NOT (r.queue = ANY($9::text[])) OFFSET 0) r
"""

_DELTA_PART = """
SELECT c.queue, width_bucket(c.entered_at, (SELECT bounds FROM b)) AS slot, 0, 0, 0, 0, 0, 0, 0::float8, 0,
       0::float8, 0, 0::float8, 0, 0::float8, 0, 0::float8, 0, NULL::float8, 0::float8, 0, 0, 0, 0, 0,
       (c.ended_at + interval '604800 seconds' > $8)::int AS fcr_decided,
       -(c.ended_at + interval '604800 seconds' <= $8)::int AS fcr_resolved
FROM (
    -- repeated before rolled_until: probed per call (an expression, never a hash anti-join over all the facts)
    SELECT c.*, EXISTS (
        SELECT 1 FROM queue_calls r
        WHERE r.caller_number = c.caller_number AND r.caller_number <> '' AND r.entered_at > c.ended_at
          AND r.entered_at <= c.ended_at + interval '604800 seconds' AND r.entered_at < $14
          AND r.linkedid <> c.linkedid) AS repeated_before
    FROM (
        SELECT DISTINCT c.node, c.uniqueid, c.queue, c.entered_at, c.ended_at, c.caller_number, c.linkedid
        FROM queue_calls t
        JOIN queue_calls c ON c.caller_number = t.caller_number AND c.caller_number <> ''
             AND c.outcome = 'answered' AND c.ended_at < t.entered_at
             AND c.ended_at >= t.entered_at - interval '604800 seconds'
             AND t.linkedid <> c.linkedid  -- (index queue_calls_caller_ended)
        WHERE t.entered_at >= $14 AND t.caller_number <> '' AND c.entered_at < $14
          AND ($6::text[] IS NULL OR c.queue = ANY($6::text[])) AND NOT (c.queue = ANY($9::text[]))
    ) c
    OFFSET 0
) c
JOIN unnest($12::timestamptz[], $13::timestamptz[]) AS g(lo, hi) ON c.entered_at >= g.lo AND c.entered_at < g.hi
WHERE NOT c.repeated_before
"""

_REPORT_SQL = """
WITH b AS MATERIALIZED (SELECT $3::text::timestamptz[] AS bounds)
SELECT queue, slot, offered, answered, abandoned, short_abandoned, timeout,
       CASE WHEN wait_n > 0 THEN round(wait_ms / wait_n) / 1000 END AS asa_s,
       round(max_wait_s * 1000) / 1000 AS max_wait_s,
       CASE WHEN abandon_wait_n > 0 THEN round(abandon_wait_ms / abandon_wait_n) / 1000 END AS avg_abandon_wait_s,
       CASE WHEN offered <> short_abandoned THEN in_sl::float8 / (offered - short_abandoned) END AS service_level,
       CASE WHEN offered <> short_abandoned THEN abandoned::float8 / (offered - short_abandoned) END AS abandon_rate,
       CASE WHEN aht_n > 0 THEN round(aht_ms / aht_n) / 1000 END AS aht_s,
       CASE WHEN talk_n > 0 THEN round(talk_ms / talk_n) / 1000 END AS avg_talk_s,
       CASE WHEN hold_n > 0 THEN round(hold_ms / hold_n) / 1000 END AS avg_hold_s,
       CASE WHEN acw_n > 0 THEN round(acw_ms / acw_n) / 1000 END AS avg_acw_s,
       CASE WHEN answered > 0 THEN transferred::float8 / answered END AS transfer_rate,
       CASE WHEN fcr_decided <> 0 THEN fcr_resolved::float8 / fcr_decided END AS fcr_rate,
       CASE WHEN csat_n > 0 THEN csat_good::float8 / csat_n END AS csat,
       CASE WHEN csat_n > 0 THEN csat_sum::float8 / csat_n END AS csat_avg
FROM (
    SELECT queue, slot, sum(offered) AS offered, sum(answered) AS answered, sum(abandoned) AS abandoned,
           sum(short_abandoned) AS short_abandoned, sum(timeout) AS timeout, sum(transferred) AS transferred,
           sum(wait_ms) AS wait_ms, sum(wait_n) AS wait_n, sum(talk_ms) AS talk_ms, sum(talk_n) AS talk_n,
           sum(hold_ms) AS hold_ms, sum(hold_n) AS hold_n, sum(acw_ms) AS acw_ms, sum(acw_n) AS acw_n,
           sum(aht_ms) AS aht_ms, sum(aht_n) AS aht_n, max(max_wait_s) AS max_wait_s,
           sum(abandon_wait_ms) AS abandon_wait_ms, sum(abandon_wait_n) AS abandon_wait_n, sum(in_sl) AS in_sl,
           sum(csat_n) AS csat_n, sum(csat_good) AS csat_good, sum(csat_sum) AS csat_sum,
           sum(fcr_decided) AS fcr_decided, sum(fcr_resolved) AS fcr_resolved
    FROM ({raw_main}
          UNION ALL {raw_odd}
          UNION ALL {roll}
          UNION ALL {delta}) parts (queue, slot, offered, answered, abandoned, short_abandoned, timeout, transferred,
                                   wait_ms, wait_n, talk_ms, talk_n, hold_ms, hold_n, acw_ms, acw_n, aht_ms, aht_n,
                                   max_wait_s, abandon_wait_ms, abandon_wait_n, in_sl, csat_n, csat_good, csat_sum,
                                   fcr_decided, fcr_resolved)
    GROUP BY GROUPING SETS ((queue, slot), (queue))
) s
"""


def _report_sql(by_queue: bool) -> str:
    """`_REPORT_SQL` for all queues, or for the queues in $6 (rollup rows then read through the (level, queue,
    bucket) index, one scan per queue and piece; the primary key serves a time range of every queue)."""
    return _REPORT_SQL.format(
        raw_main=_RAW_PART.format(lo="$1", hi="$2", queues="($6::text[] IS NULL OR c.queue = ANY($6::text[]))"),
        raw_odd=_RAW_PART.format(lo="$12", hi="$13", queues="c.queue = ANY($9::text[])"),
        roll=_ROLL_PART.format(roll_queues="CROSS JOIN unnest($6::text[]) AS w(wanted)\n" if by_queue else "",
                               roll_filter="r.queue = w.wanted" if by_queue else "$6::text[] IS NULL"),
        delta=_DELTA_PART)


_REPORT_SQL_ALL, _REPORT_SQL_BY_QUEUE = _report_sql(False), _report_sql(True)


def _iso(dt: datetime, zone: ZoneInfo) -> str:
    """An instant as ISO 8601 in the report's zone (PostgreSQL reads it back as the same instant)."""
    return dt.astimezone(zone).isoformat()


async def queue_report(pool: asyncpg.Pool, *, since: datetime, until: datetime, interval: str,
                       queues: Sequence[str] | None = None, sl_threshold_s: float | None = None, tz: str = "UTC",
                       short_abandon_s: float = SHORT_ABANDON_S, fcr_window_s: float = FCR_WINDOW_S,
                       now: datetime | None = None, use_rollups: bool = True) -> list[dict[str, Any]]:
    """KPIS.md queue figures per queue: `{"queue", "total", "intervals": [{"start", "end", <figures>}]}`.

    Queues listed: the `queues` asked for, else every configured queue and every queue with calls in the
    range (sorted by name). Every interval of the range is listed (ISO 8601 in `tz`), empty ones with
    `offered` 0, counts 0 and every mean or rate `None`.

    `aht_s` is the mean of talk + hold + ACW over the answered calls whose three parts are all known (a call
    still in after-call work has no `acw_s` yet and is left out until it is final); `avg_talk_s`,
    `avg_hold_s` and `avg_acw_s` are each the mean over the answered calls where that part is known, so while
    calls are in progress they need not add up to `aht_s`. Means are rounded to the millisecond (ties to even).

    Rollups (reporting/rollups.py) answer the whole blocks before their `rolled_until`, raw facts the rest; the
    figures are the same either way (`use_rollups=False` reads only raw facts). Read from raw facts over the
    whole range: every queue when `short_abandon_s` is not 5 s, `fcr_window_s` not 604800 s or the request's
    `sl_threshold_s` not an integer from 0 to 120 s; a queue whose own SL threshold is above 120 s (when the
    request gives none). Those reports cost what a raw aggregation of the range costs (seconds over a year of a
    large center).
    """
    zone = ZoneInfo(tz)
    bounds = interval_bounds(since, until, interval, tz)
    labels = [_iso(b, zone) for b in bounds]
    now_dt = now if now is not None else datetime.fromtimestamp(time.time(), UTC)
    wanted = sorted(set(queues)) if queues is not None else None
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # plans for the actual pieces and queue filter (a generic plan cannot use the queue index or row counts)
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        thresholds = {r["name"]: r["sl_threshold_s"]
                      for r in await conn.fetch("SELECT name, sl_threshold_s FROM queues")}
        plan = None
        if use_rollups and short_abandon_s == rollups.SHORT_ABANDON_S and fcr_window_s == rollups.FCR_WINDOW_S and (
                sl_threshold_s is None or rollups.rollup_threshold(sl_threshold_s) is not None):
            plan = await rollups.load_plan(conn, bounds, now_dt)
        raw, rolled, odd, rolled_until = [(bounds[0], bounds[-1])], [], [], None
        if plan is not None:
            # small scans and lookups: starting parallel workers would cost more (~10 ms) than they save
            await conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            raw, rolled, rolled_until = plan.raw, plan.rolled(), plan.rolled_until
            # queues whose own threshold the rollups cannot answer: raw over the whole range
            odd = sorted(q for q, t in thresholds.items() if sl_threshold_s is None and
                         rollups.rollup_threshold(t) is None and (wanted is None or q in wanted))
        rows = await conn.fetch(
            _REPORT_SQL_ALL if wanted is None else _REPORT_SQL_BY_QUEUE,
            [a for a, _ in raw], [b for _, b in raw], "{" + ",".join(labels) + "}", sl_threshold_s, short_abandon_s,
            wanted, float(fcr_window_s), now_dt, odd, [p[0] for p in rolled], [p[1] for p in rolled],
            [p[2] for p in rolled], [p[3] for p in rolled], rolled_until, list(thresholds),
            list(thresholds.values()))
    names = wanted if wanted is not None else sorted(set(thresholds) | {r[0] for r in rows})
    per_queue: dict[str, dict[int | None, Any]] = {}
    for r in rows:
        per_queue.setdefault(r[0], {})[r[1]] = r
    out = []
    keys = ("start", "end", *QUEUE_FIELDS)
    empty = tuple(_EMPTY.values())
    collecting = gc.isenabled()
    gc.disable()  # tens of thousands of new dicts, none cyclic: no collection passes over the heap meanwhile
    try:
        for name in names:
            slots = per_queue.get(name, {})
            intervals = []
            for i, (a, b) in enumerate(itertools.pairwise(labels), 1):
                row = slots.get(i)
                intervals.append(dict(zip(keys, (a, b, *(empty if row is None else row[2:])), strict=True)))
            total = slots.get(None)
            out.append({"queue": name, "total": dict(zip(QUEUE_FIELDS, empty if total is None else total[2:],
                                                          strict=True)), "intervals": intervals})
    finally:
        if collecting:
            gc.enable()
    return out


_CALL_COLUMNS = ("linkedid, uniqueid, queue, caller_number, entered_at, outcome, wait_s, agent, ring_s, talk_s, "
                 "hold_s, acw_s, transferred, disposition, csat, ended_at, final")


async def calls(pool: asyncpg.Pool, *, since: datetime | None = None, until: datetime | None = None,
                queue: str | None = None, agent: str | None = None, outcome: str | None = None,
                caller_number: str | None = None, limit: int = 100, offset: int = 0) -> list[asyncpg.Record]:
    """Queue-call facts with `since <= entered_at < until` and the other filters (exact matches), in the
    order they entered (ties by uniqueid, queue, node so pages never overlap)."""
    where: list[str] = []
    args: list[Any] = []
    for column, op, value in (("entered_at", ">=", since), ("entered_at", "<", until), ("queue", "=", queue),
                              ("agent", "=", agent), ("outcome", "=", outcome),
                              ("caller_number", "=", caller_number)):
        if value is not None:
            args.append(value)
            where.append(f"{column} {op} ${len(args)}")
    args += [limit, offset]
    sql = (f"SELECT {_CALL_COLUMNS} FROM queue_calls {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY entered_at, uniqueid, queue, node LIMIT ${len(args) - 1} OFFSET ${len(args)}")
    return list(await pool.fetch(sql, *args))


#: ivr_steps outcomes by which a call leaves a flow for a queue (a callback is booked into one) or a transfer.
_LEFT_FLOW = ("queued", "callback", "transferred")
#: ivr_steps outcomes with which a call ends inside the flow (ivr/executor.py). `agi_error` is not among them:
#: a failure is not self-service.
_ENDED_IN_FLOW = ("hangup", "recorded", "caller_hangup", "step_limit", "unsupported")

# A flow run is counted (whole, with its steps after `until` too) when its first step is in [since, until).
# Flow runs are keyed by (node, uniqueid, flow): ivr_steps is unique by (node, uniqueid, step).
_IVR_RUNS = """
WITH runs AS (
    SELECT DISTINCT s.node, s.uniqueid, s.flow FROM ivr_steps s
    WHERE s.at >= $1 AND s.at < $2 AND ($3::text IS NULL OR s.flow = $3)
      AND NOT EXISTS (SELECT 1 FROM ivr_steps p WHERE p.node = s.node AND p.uniqueid = s.uniqueid
                      AND p.flow = s.flow AND p.at < $1)
), steps AS (
    SELECT s.node, s.uniqueid, s.flow, s.node_id, s.node_type, s.outcome, s.node || '/' || s.uniqueid AS run,
           lead(s.node_id) OVER w AS next_node,
           row_number() OVER (PARTITION BY s.node, s.uniqueid, s.flow ORDER BY s.step DESC) = 1 AS last_step
    FROM ivr_steps s JOIN runs r ON r.node = s.node AND r.uniqueid = s.uniqueid AND r.flow = s.flow
    WINDOW w AS (PARTITION BY s.node, s.uniqueid, s.flow ORDER BY s.step)
)
"""


async def ivr_paths(pool: asyncpg.Pool, since: datetime, until: datetime,
                    flow: str | None = None) -> list[dict[str, Any]]:
    """Per flow, the paths callers took through it, from `ivr_steps` (one row per executed step).

    Per flow: `calls` (runs whose first step is in the range), `to_queue` (reached a queue node: queued or
    callback booked), `transferred`, `hung_up` (the caller hung up inside the flow), `contained` (runs without
    a queue or transfer step that ended inside the flow: a hangup or message node, the caller hanging up, the
    step limit; an AGI error is not counted) and `containment` = contained ÷ calls (`None` without calls).
    Callers hanging up mid-menu thus count as contained, as the definition asks; `hung_up` lets a reader take
    them out.

    Per node (`nodes`, by node id; the versions of a flow are merged): `entered` (runs with a step there),
    `steps` (step rows: a menu's retries are one each), `outcomes` {outcome: steps} such as "option 1",
    "timeout", "invalid", "queued", `next` {node id: steps} (the node of the run's following step; a retry
    of the same menu names the node itself), `hung_up` (runs whose caller hung up there) and `ended_here`
    (runs whose last step was there).
    """
    args = (since, until, flow)
    left, ended = list(_LEFT_FLOW), list(_ENDED_IN_FLOW)
    async with pool.acquire() as conn:
        flows = await conn.fetch(
            _IVR_RUNS + """
            SELECT flow, count(*) AS calls,
                   count(*) FILTER (WHERE NOT left_flow AND ended_inside) AS contained,
                   count(*) FILTER (WHERE to_queue) AS to_queue, count(*) FILTER (WHERE transferred) AS transferred,
                   count(*) FILTER (WHERE hung_up) AS hung_up
            FROM (SELECT flow, run, bool_or(outcome = ANY($4::text[])) AS left_flow,
                         bool_or(outcome = ANY($5::text[])) AS ended_inside,
                         bool_or(outcome IN ('queued', 'callback')) AS to_queue,
                         bool_or(outcome = 'transferred') AS transferred,
                         bool_or(outcome = 'caller_hangup') AS hung_up
                  FROM steps GROUP BY flow, run) per_run
            GROUP BY flow ORDER BY flow""", *args, left, ended)
        nodes = await conn.fetch(
            _IVR_RUNS + """
            SELECT flow, node_id, node_type, count(DISTINCT run) AS entered, count(*) AS steps,
                   count(DISTINCT run) FILTER (WHERE outcome = 'caller_hangup') AS hung_up,
                   count(*) FILTER (WHERE last_step) AS ended_here
            FROM steps GROUP BY flow, node_id, node_type ORDER BY flow, node_id, node_type""", *args)
        moves = await conn.fetch(
            _IVR_RUNS + """
            SELECT flow, node_id, node_type, outcome, next_node, count(*) AS n
            FROM steps GROUP BY flow, node_id, node_type, outcome, next_node""", *args)
    per_node: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in nodes:
        per_node[(r["flow"], r["node_id"], r["node_type"])] = {
            "node_id": r["node_id"], "node_type": r["node_type"], "entered": r["entered"], "steps": r["steps"],
            "outcomes": {}, "next": {}, "hung_up": r["hung_up"], "ended_here": r["ended_here"]}
    for r in moves:
        node = per_node[(r["flow"], r["node_id"], r["node_type"])]
        node["outcomes"][r["outcome"]] = node["outcomes"].get(r["outcome"], 0) + r["n"]
        if r["next_node"] is not None:
            node["next"][r["next_node"]] = node["next"].get(r["next_node"], 0) + r["n"]
    for node in per_node.values():
        node["outcomes"] = dict(sorted(node["outcomes"].items()))
        node["next"] = dict(sorted(node["next"].items()))
    return [{"flow": f["flow"], "calls": f["calls"], "contained": f["contained"],
             "containment": _ratio(f["contained"], f["calls"]), "to_queue": f["to_queue"],
             "transferred": f["transferred"], "hung_up": f["hung_up"],
             "nodes": [n for (fl, _, _), n in per_node.items() if fl == f["flow"]]} for f in flows]


async def incomplete_ranges(pool: asyncpg.Pool, since: datetime, until: datetime, *,
                            include_reconciled: bool = True) -> list[dict[str, Any]]:
    """The ranges overlapping `[since, until)` in which a node's AMI connection was down (`event_gaps`), so
    events and the figures built on them may be missing: `{"node", "since", "until", "reconciled"}` (`until`
    None: still down). `include_reconciled=False` leaves out the gaps whose queue calls were rebuilt from
    queue_log (what the queue figures and call facts need); agent states and IVR steps of a gap stay missing
    even then. An empty list when the table is not there yet (a database migrated by older code)."""
    try:
        rows = await pool.fetch(
            "SELECT node, since, until, reconciled_at IS NOT NULL AS reconciled FROM event_gaps "
            "WHERE since < $2 AND (until IS NULL OR until > $1) AND ($3 OR reconciled_at IS NULL) "
            "ORDER BY since, node", since, until, include_reconciled)
    except asyncpg.UndefinedTableError:
        return []
    return [{"node": r["node"], "since": r["since"], "until": r["until"], "reconciled": r["reconciled"]}
            for r in rows]
