"""Rollups (reporting/rollups.py) against a real PostgreSQL: a queue report computed from rollups equals, field by
field, the report computed from raw facts only — for every interval length, time zones with DST and with 30- and
45-minute offsets, unaligned ranges, queue filters, SL thresholds, after facts changed in rolled-up buckets, and
whether the rollups were built at once or step by step."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from reporting import reports, rollups
from reporting.migrate import migrate

START = datetime(2024, 3, 24, tzinfo=UTC)  # Berlin springs forward on 2024-03-31
DAYS = 12
ROLLED = datetime(2024, 4, 3, 9, 7, tzinfo=UTC)  # build up to here (floored to 09:00); later facts stay raw
NOW = datetime(2024, 4, 4, 17, 21, 13, tzinfo=UTC)  # FCR windows: some elapsed, some not, some straddled
ZONES = ("Europe/Berlin", "Asia/Kolkata")
OUTCOMES = ["answered"] * 12 + ["abandoned", "abandoned", "short_abandoned", "timeout", "exit_empty",
                                "transferred_out", "callback_requested", None]


@pytest_asyncio.fixture
async def pool(pg_db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(pg_db, min_size=1, max_size=3)
    await migrate(p)
    try:
        yield p
    finally:
        await p.close()


def make_facts(n: int = 2500, seed: int = 7) -> list[tuple[Any, ...]]:
    """Facts with every outcome, unknown parts, integer waits on SL thresholds, repeat callers, withheld numbers,
    calls moving on to a second queue (same linkedid), calls ending around NOW - 7 days, a very long call."""
    rnd = random.Random(seed)
    callers = [f"+4930{k:04d}" for k in range(1500)]
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        entered = START + timedelta(seconds=rnd.uniform(0, DAYS * 86400))
        if i % 10 == 0:  # a cluster of calls ending around NOW - window (FCR half decided)
            entered = NOW - timedelta(days=7, minutes=rnd.uniform(-40, 20))
        outcome = rnd.choice(OUTCOMES)
        wait = rnd.choice([float(rnd.randint(0, 130)), round(rnd.expovariate(1 / 25), 3), 20.0, 120.0, 120.5, 4.999,
                           5.0, None])
        if outcome == "short_abandoned" and wait is not None:
            wait = min(wait, 4.5)
        answered = outcome == "answered"
        talk = round(rnd.uniform(5, 600), 3) if answered and rnd.random() < 0.95 else None
        hold = round(rnd.choice([0.0, rnd.uniform(1, 90)]), 3) if answered and rnd.random() < 0.95 else None
        acw = round(rnd.uniform(0, 300), 3) if answered and rnd.random() < 0.9 else None
        ended = None
        if outcome is not None and wait is not None and (not answered or talk is not None):
            ended = entered + timedelta(seconds=wait + (talk or 0) + (hold or 0))
            if i == 17:
                ended += timedelta(hours=30)
        linkedid = f"L{i - 1}" if i % 23 == 0 and i > 0 else f"L{i}"
        rows.append((
            "n1", linkedid, f"U{i}", rnd.choice(["sales", "sales", "support", "vip", "walkin"]),
            "" if rnd.random() < 0.1 else rnd.choice(callers), entered, outcome, wait,
            f"a{rnd.randint(1, 9)}" if answered else None, talk, hold, acw, answered and rnd.random() < 0.1,
            rnd.choice([None, 1, 2, 3, 4, 5]) if answered else None, ended, ended is not None))
    return rows


INSERT = """INSERT INTO queue_calls (node, linkedid, uniqueid, queue, caller_number, entered_at, outcome, wait_s, agent,
               talk_s, hold_s, acw_s, transferred, csat, ended_at, final)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"""


async def seed(pool: asyncpg.Pool) -> None:
    # sales: SL threshold 30 s, support 20 s, vip 180 s (beyond the rollups: raw); walkin is not configured (20 s)
    await pool.execute("INSERT INTO queues (name, sl_threshold_s) VALUES ('sales', 30), ('support', 20), "
                       "('vip', 180)")
    await pool.executemany(INSERT, make_facts())


def assert_same(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and abs(a - b) <= 1e-6, (path, a, b)
    else:
        assert a == b, (path, a, b)


CASES: list[dict[str, Any]] = [
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "1d", "tz": "Europe/Berlin"},
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "1h", "tz": "Europe/Berlin"},
    {"since": START + timedelta(hours=5, minutes=7, seconds=13), "until": NOW, "interval": "15m", "tz": "UTC"},
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "30m", "tz": "Asia/Kolkata"},
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "1d", "tz": "Asia/Kolkata"},
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "1d", "tz": "Asia/Kathmandu"},
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "1h", "tz": "Australia/Lord_Howe"},
    {"since": START + timedelta(minutes=1), "until": START + timedelta(days=DAYS), "interval": "1d",
     "tz": "America/St_Johns"},
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "1d", "tz": "UTC", "queues": ["sales", "vip"]},
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "1d", "tz": "Europe/Berlin",
     "sl_threshold_s": 10},
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "1d", "tz": "Europe/Berlin",
     "sl_threshold_s": 10.5},
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "1d", "tz": "UTC", "fcr_window_s": 3600},
    {"since": START, "until": START + timedelta(days=DAYS), "interval": "1d", "tz": "UTC", "short_abandon_s": 3},
]


async def compare_all(pool: asyncpg.Pool, now: datetime = NOW) -> None:
    for case in CASES:
        fast = await reports.queue_report(pool, **case, now=now)
        slow = await reports.queue_report(pool, **case, now=now, use_rollups=False)
        assert_same(fast, slow, str(case))


@pytest.mark.asyncio
async def test_rollups_equal_raw_facts(pool: asyncpg.Pool) -> None:
    await seed(pool)
    done = await rollups.build_rollups(pool, until=ROLLED, zones=ZONES)
    assert done["rolled_until"] == datetime(2024, 4, 3, 9, tzinfo=UTC) and done["rows"] > 1000
    # the rollups are really used: a Berlin year of days from day rows, the DST day from hours, blocked buckets raw
    async with pool.acquire() as conn:
        bounds = reports.interval_bounds(START, START + timedelta(days=DAYS), "1d", "Europe/Berlin")
        plan = await rollups.load_plan(conn, bounds, NOW)
    assert plan is not None
    assert set(plan.levels) >= {(86400, 82800), (86400, 79200), (3600, 0)}
    assert any(b - a == timedelta(minutes=15) for a, b in plan.raw)  # a bucket whose FCR windows straddle NOW - 7d
    await compare_all(pool)
    await compare_all(pool, now=NOW + timedelta(days=3))  # later: other windows elapsed, other buckets straddle


@pytest.mark.asyncio
async def test_changed_facts_are_read_raw_until_rebuilt(pool: asyncpg.Pool) -> None:
    await seed(pool)
    await rollups.build_rollups(pool, until=ROLLED, zones=ZONES)
    # change, delete and add facts in rolled-up buckets; one added call repeats an earlier caller (FCR)
    await pool.execute("UPDATE queue_calls SET outcome = 'abandoned', wait_s = 44 WHERE uniqueid = 'U5'")
    await pool.execute("DELETE FROM queue_calls WHERE uniqueid IN ('U6', 'U7')")
    first = await pool.fetchrow("SELECT caller_number, ended_at FROM queue_calls WHERE outcome = 'answered' "
                                "AND caller_number <> '' AND ended_at < $1 ORDER BY ended_at LIMIT 1",
                                ROLLED - timedelta(days=2))
    await pool.executemany(INSERT, [("n1", "Lnew", "Unew", "support", first["caller_number"],
                                     first["ended_at"] + timedelta(hours=2), "answered", 3.0, "a1", 10.0, 0.0, 1.0,
                                     False, 5, first["ended_at"] + timedelta(hours=2, seconds=14), True)])
    assert await pool.fetchval("SELECT count(*) FROM queue_rollup_dirty") > 0
    await compare_all(pool)
    await rollups.build_rollups(pool, until=ROLLED, zones=ZONES)
    assert await pool.fetchval("SELECT count(*) FROM queue_rollup_dirty") == 0
    await compare_all(pool)


@pytest.mark.asyncio
async def test_emptied_facts_empty_the_rollups(pool: asyncpg.Pool) -> None:
    await seed(pool)
    await rollups.build_rollups(pool, until=ROLLED, zones=ZONES)
    await pool.execute("TRUNCATE queue_calls")
    case = CASES[0]
    [sales] = await reports.queue_report(pool, **case, now=NOW, queues=["sales"])
    assert sales["total"]["offered"] == 0
    assert (await rollups.build_rollups(pool, until=ROLLED, zones=ZONES))["rolled_until"] is None


ROW_COLUMNS = ("span_s, origin_s, bucket, queue, offered, answered, abandoned, short_abandoned, timeout, transferred, "
               "wait_ms, wait_n, talk_ms, talk_n, hold_ms, hold_n, acw_ms, acw_n, aht_ms, aht_n, max_wait_s, "
               "abandon_wait_ms, abandon_wait_n, csat_n, csat_good, csat_sum, fcr_n, fcr_rep, fcr_ended_min, "
               "fcr_ended_max, answered_within")


@pytest.mark.asyncio
async def test_building_step_by_step_gives_the_same_rows(pool: asyncpg.Pool) -> None:
    await seed(pool)
    for until in (START + timedelta(days=2), START + timedelta(days=5, hours=7), ROLLED):  # FCR repeats across steps
        await rollups.build_rollups(pool, until=until, zones=ZONES)
    stepwise = [tuple(r) for r in await pool.fetch(f"SELECT {ROW_COLUMNS} FROM queue_rollups ORDER BY 1, 2, 3, 4")]
    await compare_all(pool)
    await rollups.build_rollups(pool, until=ROLLED, zones=["UTC"])  # other zones: rebuilt from scratch
    await rollups.build_rollups(pool, until=ROLLED, zones=ZONES)
    at_once = [tuple(r) for r in await pool.fetch(f"SELECT {ROW_COLUMNS} FROM queue_rollups ORDER BY 1, 2, 3, 4")]
    assert stepwise == at_once


def test_plan_pieces_cover_the_range_once() -> None:
    """Every instant of the range is in exactly one piece; rollup pieces never cross an interval boundary."""
    berlin = rollups.day_origins(["Europe/Berlin"], 2024)
    assert berlin == [79200, 82800]
    for tz, interval, since in (("Europe/Berlin", "1d", START), ("Europe/Berlin", "1h", START + timedelta(minutes=7)),
                                ("Asia/Kolkata", "1d", START), ("Australia/Lord_Howe", "30m", START)):
        bounds = reports.interval_bounds(since, START + timedelta(days=DAYS), interval, tz)
        blocked = [(900, 0, datetime(2024, 3, 27, 10, 15, tzinfo=UTC)), (3600, 0, datetime(2024, 3, 28, 3, tzinfo=UTC))]
        plan = rollups.plan_pieces(bounds, ROLLED, berlin + rollups.day_origins(["Asia/Kolkata"], 2024), blocked)
        pieces = sorted(plan.raw + [(a, b) for _, _, a, b in plan.rolled()])
        assert pieces[0][0] == bounds[0] and pieces[-1][1] == bounds[-1]
        assert all(p[1] == q[0] for p, q in itertools.pairwise(pieces))
        for span, _, a, b in plan.rolled():
            assert b <= ROLLED and (b - a) % timedelta(seconds=span) == timedelta(0)
            block = a
            while block < b:  # each block lies inside one interval
                i = next(k for k in range(len(bounds) - 1) if bounds[k] <= block < bounds[k + 1])
                assert block + timedelta(seconds=span) <= bounds[i + 1]
                block += timedelta(seconds=span)
        assert (datetime(2024, 3, 27, 10, 15, tzinfo=UTC), datetime(2024, 3, 27, 10, 30, tzinfo=UTC)) in plan.raw
    days = rollups.plan_pieces(reports.interval_bounds(START, START + timedelta(days=DAYS), "1d", "Europe/Berlin"),
                               ROLLED, berlin)
    # winter days from 23:00 UTC, summer days from 22:00 UTC, the 23-hour DST day from hour rows
    assert days.levels[(86400, 82800)] == [(datetime(2024, 3, 24, 23, tzinfo=UTC),
                                            datetime(2024, 3, 30, 23, tzinfo=UTC))]
    assert days.levels[(86400, 79200)][0][0] == datetime(2024, 3, 31, 22, tzinfo=UTC)
    assert (datetime(2024, 3, 30, 23, tzinfo=UTC), datetime(2024, 3, 31, 22, tzinfo=UTC)) in days.levels[(3600, 0)]
