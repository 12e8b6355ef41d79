"""Historical reports over the stored facts: queue figures per interval (KPIS.md), call facts, IVR paths.

Why here and not in the web layer: the figures are the contract of KPIS.md, computed in one place that tests,
the API and its CSV export share. The aggregation runs in PostgreSQL (GROUP BY queue, interval), so only sums
leave the database: from the rollups of reporting/rollups.py for the whole 15-minute and hour buckets they cover,
from `queue_calls` for the rest (the last hour or so, edges, buckets marked stale). Python adds the sums (integer
milliseconds, so the order does not matter), turns them into the named figures (`None` when a denominator is 0)
and lists every interval, empty ones included.

Intervals (`interval_bounds`): the boundaries are the instants at which the wall clock of the time zone shows a
multiple of the interval counted from local midnight (`1d`: local midnights), computed with zoneinfo.
A spring-forward day has 23 one-hour intervals and a fall-back day 25: the repeated hour is two intervals of one
real hour each (bucketing on the local wall-clock time alone would merge them into one two-hour bucket), and a
`1d` interval is 23 or 25 h long there. The first and last interval are clipped to the requested range, so an
interval's figures cover exactly its `[start, end)`. PostgreSQL assigns each queue call to its interval with
`width_bucket(entered_at, boundaries)` (a binary search per row), so the grouping stays in SQL.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
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


def _mean_s(ms: int, n: int) -> float | None:
    """Mean of values summed in integer milliseconds, in seconds rounded to the millisecond."""
    return round(ms / n / 1000, 3) if n else None


#: Integer sums per (queue, interval), from raw facts or rollups alike (max_wait_s is a maximum).
_SUM_FIELDS = ("offered", "answered", "abandoned", "short_abandoned", "timeout", "transferred", "wait_ms", "wait_n",
               "talk_ms", "talk_n", "hold_ms", "hold_n", "acw_ms", "acw_n", "aht_ms", "aht_n", "abandon_wait_ms",
               "abandon_wait_n", "in_sl", "csat_n", "csat_good", "csat_sum", "fcr_decided", "fcr_resolved")
Sums = dict[str, Any]


def _merge(into: Sums, row: Mapping[str, Any]) -> None:
    for k in _SUM_FIELDS:
        into[k] = into.get(k, 0) + row[k]
    m = row["max_wait_s"]
    if m is not None and (into.get("max_wait_s") is None or m > into["max_wait_s"]):
        into["max_wait_s"] = m


def _queue_figures(g: Mapping[str, Any]) -> dict[str, Any]:
    """KPIS.md queue figures from one group's sums (empty: no call in the group). Means are computed from
    integer-millisecond sums, so they do not depend on the order the facts were added in (raw or rollups)."""
    offered = g.get("offered", 0)
    answered = g.get("answered", 0)
    abandoned = g.get("abandoned", 0)
    short = g.get("short_abandoned", 0)
    csat_n = g.get("csat_n", 0)
    return {
        "offered": offered,
        "answered": answered,
        "abandoned": abandoned,
        "short_abandoned": short,
        "timeout": g.get("timeout", 0),
        "asa_s": _mean_s(g.get("wait_ms", 0), g.get("wait_n", 0)),
        "max_wait_s": round(g["max_wait_s"], 3) if g.get("max_wait_s") is not None else None,
        "avg_abandon_wait_s": _mean_s(g.get("abandon_wait_ms", 0), g.get("abandon_wait_n", 0)),
        "service_level": _ratio(g.get("in_sl", 0), offered - short),
        "abandon_rate": _ratio(abandoned, offered - short),
        "aht_s": _mean_s(g.get("aht_ms", 0), g.get("aht_n", 0)),
        "avg_talk_s": _mean_s(g.get("talk_ms", 0), g.get("talk_n", 0)),
        "avg_hold_s": _mean_s(g.get("hold_ms", 0), g.get("hold_n", 0)),
        "avg_acw_s": _mean_s(g.get("acw_ms", 0), g.get("acw_n", 0)),
        "transfer_rate": _ratio(g.get("transferred", 0), answered),
        "fcr_rate": _ratio(g.get("fcr_resolved", 0), g.get("fcr_decided", 0)),
        "csat": _ratio(g.get("csat_good", 0), csat_n),
        "csat_avg": g.get("csat_sum", 0) / csat_n if csat_n else None,
    }


# Sums per (queue, interval) over the facts that entered in the pieces ($1 lo, $2 hi). $3 interval boundaries,
# $4 SL threshold of the request (NULL: the queue's, else 20), $5 short-abandon threshold, $6 queues (NULL: all),
# $7 FCR window (s), $8 now, $9 queues to leave out.
#
# Short abandons are re-derived from wait_s with the request's threshold (the stored outcome when wait_s is
# unknown), so the projector's 5 s default is not baked into the report.
# FCR: a repeat is another queue call of the same caller_number that entered in (ended_at, ended_at + window],
# in any queue on any node, of another linkedid (the same call moving on to a second queue, e.g. transferred
# by the agent, is not a new contact). A call counts once decided: it has a repeat, or its window has elapsed.
# Times are summed in integer milliseconds, like the rollups (reporting/rollups.py), so both give equal sums.
_QUEUE_SQL = """
WITH base AS (
    SELECT c.queue, width_bucket(c.entered_at, $3::timestamptz[]) AS slot, c.linkedid, c.caller_number,
           c.outcome, c.wait_s, c.talk_s, c.hold_s, c.acw_s, c.transferred, c.csat, c.ended_at,
           COALESCE($4::float8, q.sl_threshold_s::float8, 20) AS threshold,
           c.outcome = 'answered' AS ans,
           c.outcome IN ('abandoned', 'short_abandoned') AS left_queue,
           COALESCE(c.wait_s < $5::float8, c.outcome = 'short_abandoned') AS short_wait,
           (c.outcome = 'answered' AND c.caller_number <> '' AND c.ended_at IS NOT NULL) AS fcr_call
    FROM unnest($1::timestamptz[], $2::timestamptz[]) AS g(lo, hi)
    CROSS JOIN LATERAL (  -- one index range scan per piece (OFFSET 0: not flattened into a join)
        SELECT * FROM queue_calls c WHERE c.entered_at >= g.lo AND c.entered_at < g.hi
          AND ($6::text[] IS NULL OR c.queue = ANY($6::text[])) AND NOT (c.queue = ANY($9::text[])) OFFSET 0) c
    LEFT JOIN queues q ON q.name = c.queue
), f AS (
    SELECT base.*, left_queue AND short_wait AS is_short, left_queue AND NOT short_wait AS is_abandoned,
           CASE WHEN fcr_call THEN EXISTS (
               SELECT 1 FROM queue_calls r
               WHERE r.caller_number = base.caller_number AND r.caller_number <> ''
                 AND r.entered_at > base.ended_at AND r.entered_at <= base.ended_at + make_interval(secs => $7)
                 AND r.linkedid <> base.linkedid) ELSE false END AS repeated
    FROM base
)
SELECT queue, slot,
       count(*) AS offered, count(*) FILTER (WHERE ans) AS answered,
       count(*) FILTER (WHERE is_abandoned) AS abandoned, count(*) FILTER (WHERE is_short) AS short_abandoned,
       count(*) FILTER (WHERE outcome IN ('timeout', 'exit_empty')) AS timeout,
       count(*) FILTER (WHERE ans AND transferred) AS transferred,
       COALESCE(sum(round(wait_s * 1000)::bigint) FILTER (WHERE ans), 0)::bigint AS wait_ms,
       count(wait_s) FILTER (WHERE ans) AS wait_n,
       COALESCE(sum(round(talk_s * 1000)::bigint) FILTER (WHERE ans), 0)::bigint AS talk_ms,
       count(talk_s) FILTER (WHERE ans) AS talk_n,
       COALESCE(sum(round(hold_s * 1000)::bigint) FILTER (WHERE ans), 0)::bigint AS hold_ms,
       count(hold_s) FILTER (WHERE ans) AS hold_n,
       COALESCE(sum(round(acw_s * 1000)::bigint) FILTER (WHERE ans), 0)::bigint AS acw_ms,
       count(acw_s) FILTER (WHERE ans) AS acw_n,
       COALESCE(sum(round(talk_s * 1000)::bigint + round(hold_s * 1000)::bigint + round(acw_s * 1000)::bigint)
                FILTER (WHERE ans), 0)::bigint AS aht_ms,
       count(talk_s + hold_s + acw_s) FILTER (WHERE ans) AS aht_n,
       max(wait_s) AS max_wait_s,
       COALESCE(sum(round(wait_s * 1000)::bigint) FILTER (WHERE is_abandoned), 0)::bigint AS abandon_wait_ms,
       count(wait_s) FILTER (WHERE is_abandoned) AS abandon_wait_n,
       count(*) FILTER (WHERE ans AND wait_s <= threshold) AS in_sl,
       count(csat) AS csat_n, count(*) FILTER (WHERE csat >= 4) AS csat_good,
       COALESCE(sum(csat), 0)::bigint AS csat_sum,
       count(*) FILTER (WHERE fcr_call AND (repeated OR ended_at + make_interval(secs => $7) <= $8)) AS fcr_decided,
       count(*) FILTER (WHERE fcr_call AND NOT repeated AND ended_at + make_interval(secs => $7) <= $8)
           AS fcr_resolved
FROM f
GROUP BY queue, slot
"""


def _iso(dt: datetime, zone: ZoneInfo) -> str:
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
    calls are in progress they need not add up to `aht_s`.

    Rollups (reporting/rollups.py) answer the whole buckets before their `rolled_until`, raw facts the rest; the
    figures are the same either way (`use_rollups=False` reads only raw facts). Read from raw facts over the
    whole range: every queue when `short_abandon_s` is not 5 s, `fcr_window_s` not 604800 s or the request's
    `sl_threshold_s` not an integer from 0 to 120 s; a queue whose own SL threshold is above 120 s (when the
    request gives none). Those reports cost what a raw aggregation of the range costs (seconds over a year of a
    large center).
    """
    zone = ZoneInfo(tz)
    bounds = interval_bounds(since, until, interval, tz)
    now_dt = now if now is not None else datetime.fromtimestamp(time.time(), UTC)
    wanted = sorted(set(queues)) if queues is not None else None
    sums: dict[tuple[str, int], Sums] = {}

    def add(rows: Sequence[Any]) -> None:
        for r in rows:
            _merge(sums.setdefault((r["queue"], r["slot"]), {}), r)

    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # plans for the actual pieces and queue filter (a generic plan cannot use the queue index or row counts)
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        thresholds = {r["name"]: r["sl_threshold_s"]
                      for r in await conn.fetch("SELECT name, sl_threshold_s FROM queues")}
        plan = None
        if use_rollups and short_abandon_s == rollups.SHORT_ABANDON_S and fcr_window_s == rollups.FCR_WINDOW_S and (
                sl_threshold_s is None or rollups.rollup_threshold(sl_threshold_s) is not None):
            plan = await rollups.load_plan(conn, bounds, now_dt)
        raw_args = (bounds, sl_threshold_s, short_abandon_s, wanted, float(fcr_window_s), now_dt)
        if plan is None:
            add(await conn.fetch(_QUEUE_SQL, [bounds[0]], [bounds[-1]], *raw_args, []))
        else:
            # queues whose own threshold the rollups cannot answer: raw over the whole range
            odd = sorted(q for q, t in thresholds.items() if sl_threshold_s is None and
                         rollups.rollup_threshold(t) is None and (wanted is None or q in wanted))
            if plan.raw:
                add(await conn.fetch(_QUEUE_SQL, [a for a, _ in plan.raw], [b for _, b in plan.raw], *raw_args, []))
            rolled = plan.rolled()
            if rolled:
                sl = int(sl_threshold_s) if sl_threshold_s is not None else None
                add(await conn.fetch(rollups.ROLLUP_SQL, [s for s, _, _ in rolled], [a for _, a, _ in rolled],
                                     [b for _, _, b in rolled], bounds, sl, wanted, odd, now_dt))
                for r in await conn.fetch(rollups.FCR_DELTA_SQL, [a for _, a, _ in rolled],
                                          [b for _, _, b in rolled], plan.rolled_until, bounds, wanted, odd, now_dt):
                    g = sums.setdefault((r["queue"], r["slot"]), {})
                    g["fcr_decided"] = g.get("fcr_decided", 0) + r["decided_add"]
                    g["fcr_resolved"] = g.get("fcr_resolved", 0) - r["resolved_sub"]
                if odd:
                    add(await conn.fetch(_QUEUE_SQL, [a for _, a, _ in rolled], [b for _, _, b in rolled],
                                         bounds, sl_threshold_s, short_abandon_s, odd, float(fcr_window_s), now_dt, []))
    names = wanted if wanted is not None else sorted(set(thresholds) | {q for q, _ in sums})
    per_queue: dict[str, dict[int, Sums]] = {}
    for (q, slot), g in sums.items():
        per_queue.setdefault(q, {})[slot] = g
    starts = [_iso(b, zone) for b in bounds]
    out = []
    empty = _queue_figures({})
    for name in names:
        slots = per_queue.get(name, {})
        total: Sums = {}
        for g in slots.values():
            _merge(total, {"max_wait_s": None, **{k: 0 for k in _SUM_FIELDS}, **g})
        intervals = [{"start": starts[i], "end": starts[i + 1],
                      **(_queue_figures(slots[i + 1]) if i + 1 in slots else empty)} for i in range(len(bounds) - 1)]
        out.append({"queue": name, "total": _queue_figures(total), "intervals": intervals})
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
