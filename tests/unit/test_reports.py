"""Historical reports against a real PostgreSQL: every KPIS.md figure from hand-made facts, intervals (DST
included), FCR, IVR paths, agent figures, and the REST layer (validation, roles, CSV = JSON)."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from acd.agent_figures import agent_figures
from acd.agent_state import State, Transition
from acd.config_store import ConfigStore, token_hash
from acd.state_store import AgentStateStore
from reporting import reports
from reporting.live import LiveState
from reporting.migrate import migrate
from web.api_reports import CALL_FIELDS, IVR_FLOW_FIELDS, IVR_NODE_FIELDS
from web.app import create_app

pytestmark = pytest.mark.asyncio

ADMIN = "a" * 40
SUP_BLUE = "s" * 40
SUP_ALL = "t" * 40
AGENT_TOKEN = "g" * 40
D = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
NOW = datetime(2024, 6, 1, tzinfo=UTC)  # every 7-day FCR window of May 1 has elapsed
S = State


@pytest_asyncio.fixture
async def pool(pg_db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(pg_db, min_size=1, max_size=3)
    await migrate(p)
    try:
        yield p
    finally:
        await p.close()


async def fact(pool: asyncpg.Pool, uid: str, queue: str, entered: datetime, outcome: str | None,
               wait: float | None = None, *, linkedid: str | None = None, caller: str = "", agent: str | None = None,
               talk: float | None = None, hold: float | None = None, acw: float | None = None,
               transferred: bool = False, csat: int | None = None, ended: datetime | None = None) -> None:
    if ended is None and wait is not None:
        ended = entered + timedelta(seconds=wait + (talk or 0) + (hold or 0))
    await pool.execute(
        """INSERT INTO queue_calls (node, linkedid, uniqueid, queue, caller_number, entered_at, outcome, wait_s, agent,
               talk_s, hold_s, acw_s, transferred, csat, ended_at, final)
           VALUES ('n1', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, true)""",
        linkedid or uid, uid, queue, caller, entered, outcome, wait, agent, talk, hold, acw, transferred, csat, ended)


def at(minutes: float) -> datetime:
    return D + timedelta(minutes=minutes)


async def seed(pool: asyncpg.Pool) -> None:
    """Queue `sales` (SL threshold 30 s), `support` (default 20 s); facts from 07:59 to 11:00 (hand-computed
    figures in the tests)."""
    await pool.execute("INSERT INTO queues (name, sl_threshold_s) VALUES ('sales', 30), ('support', 20)")
    # 08:00-09:00
    await fact(pool, "a1", "sales", at(1), "answered", 10, caller="+491111", agent="ann", talk=100, hold=20, acw=30,
               csat=5, linkedid="L1")
    await fact(pool, "a2", "sales", at(2), "answered", 40, caller="+492222", agent="bob", talk=200, hold=0, acw=10,
               transferred=True, csat=3)
    await fact(pool, "ab", "sales", at(3), "abandoned", 25, caller="+493333")
    await fact(pool, "sa", "sales", at(4), "short_abandoned", 3, caller="+494444")
    await fact(pool, "to", "sales", at(5), "timeout", 120)
    await fact(pool, "ee", "sales", at(6), "exit_empty", 0.5)
    # 09:00-10:00: answered from a withheld number, still in after-call work (acw unknown); left by IVR exit
    await fact(pool, "a3", "sales", at(61), "answered", 20, agent="ann", talk=60, hold=5, acw=None, csat=4)
    await fact(pool, "tr", "sales", at(62), "transferred_out", 15)
    # outside the range: just before, exactly at its end
    await fact(pool, "early", "sales", at(-1), "answered", 1, talk=1, hold=0, acw=0)
    await fact(pool, "late", "sales", at(180), "answered", 1, talk=1, hold=0, acw=0)
    # a1's call moves on to `support` (same linkedid): not a repeat contact for FCR
    a1_end = at(1) + timedelta(seconds=130)
    await fact(pool, "a1b", "support", a1_end + timedelta(seconds=1), "answered", 5, linkedid="L1",
               caller="+491111", agent="cid", talk=50, hold=0, acw=0)
    # +491111 calls again after 8 days (outside the window); +492222 after 2 days (inside)
    await fact(pool, "r1", "support", a1_end + timedelta(days=8), "abandoned", 30, caller="+491111")
    await fact(pool, "r2", "support", at(2) + timedelta(days=2), "abandoned", 30, caller="+492222")


EMPTY = {"offered": 0, "answered": 0, "abandoned": 0, "short_abandoned": 0, "timeout": 0, "asa_s": None,
         "max_wait_s": None, "avg_abandon_wait_s": None, "service_level": None, "abandon_rate": None, "aht_s": None,
         "avg_talk_s": None, "avg_hold_s": None, "avg_acw_s": None, "transfer_rate": None, "fcr_rate": None,
         "csat": None, "csat_avg": None}
SALES_08 = {"offered": 6, "answered": 2, "abandoned": 1, "short_abandoned": 1, "timeout": 2, "asa_s": 25.0,
            "max_wait_s": 120.0, "avg_abandon_wait_s": 25.0, "service_level": 1 / 5, "abandon_rate": 1 / 5,
            "aht_s": 180.0, "avg_talk_s": 150.0, "avg_hold_s": 10.0, "avg_acw_s": 20.0, "transfer_rate": 1 / 2,
            "fcr_rate": 1 / 2, "csat": 1 / 2, "csat_avg": 4.0}
SALES_09 = {**EMPTY, "offered": 2, "answered": 1, "asa_s": 20.0, "max_wait_s": 20.0, "service_level": 1 / 2,
            "abandon_rate": 0.0, "avg_talk_s": 60.0, "avg_hold_s": 5.0, "transfer_rate": 0.0, "csat": 1.0,
            "csat_avg": 4.0}
SALES_TOTAL = {"offered": 8, "answered": 3, "abandoned": 1, "short_abandoned": 1, "timeout": 2, "asa_s": 23.333,
               "max_wait_s": 120.0, "avg_abandon_wait_s": 25.0, "service_level": 2 / 7, "abandon_rate": 1 / 7,
               "aht_s": 180.0, "avg_talk_s": 120.0, "avg_hold_s": 8.333, "avg_acw_s": 20.0, "transfer_rate": 1 / 3,
               "fcr_rate": 1 / 2, "csat": 2 / 3, "csat_avg": 4.0}
SUPPORT_08 = {**EMPTY, "offered": 1, "answered": 1, "asa_s": 5.0, "max_wait_s": 5.0, "service_level": 1.0,
              "abandon_rate": 0.0, "aht_s": 50.0, "avg_talk_s": 50.0, "avg_hold_s": 0.0, "avg_acw_s": 0.0,
              "transfer_rate": 0.0, "fcr_rate": 1.0}


def figures(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in ("start", "end")}


async def test_queue_figures_per_interval_and_total(pool: asyncpg.Pool) -> None:
    await seed(pool)
    out = await reports.queue_report(pool, since=D, until=at(180), interval="1h", now=NOW)
    assert [q["queue"] for q in out] == ["sales", "support"]
    sales, support = out
    assert [(i["start"], i["end"]) for i in sales["intervals"]] == [
        ("2024-05-01T08:00:00+00:00", "2024-05-01T09:00:00+00:00"),
        ("2024-05-01T09:00:00+00:00", "2024-05-01T10:00:00+00:00"),
        ("2024-05-01T10:00:00+00:00", "2024-05-01T11:00:00+00:00")]
    assert [figures(i) for i in sales["intervals"]] == [SALES_08, SALES_09, EMPTY]
    assert sales["total"] == SALES_TOTAL
    assert [figures(i) for i in support["intervals"]] == [SUPPORT_08, EMPTY, EMPTY]
    assert support["total"] == SUPPORT_08


async def test_request_threshold_short_abandon_threshold_and_queue_filter(pool: asyncpg.Pool) -> None:
    await seed(pool)
    [sales] = await reports.queue_report(pool, since=D, until=at(180), interval="1d", queues=["sales"],
                                         sl_threshold_s=10, now=NOW)
    assert sales["total"]["service_level"] == 1 / 7  # only a1 (10 s <= 10 s)
    assert [i["start"] for i in sales["intervals"]] == ["2024-05-01T08:00:00+00:00"]  # clipped to the range
    [sales] = await reports.queue_report(pool, since=D, until=at(180), interval="1d", queues=["sales"],
                                         short_abandon_s=2, now=NOW)
    t = sales["total"]
    assert (t["abandoned"], t["short_abandoned"], t["abandon_rate"], t["avg_abandon_wait_s"]) == (2, 0, 2 / 8, 14.0)
    [billing] = await reports.queue_report(pool, since=D, until=at(180), interval="1h", queues=["billing"], now=NOW)
    assert billing["total"] == EMPTY and len(billing["intervals"]) == 3


async def test_fcr_counts_only_decided_calls(pool: asyncpg.Pool) -> None:
    await pool.execute("INSERT INTO queues (name) VALUES ('q')")
    # ended 1 day before `now`, no repeat yet: undecided, left out of both sides
    await fact(pool, "u", "q", NOW - timedelta(days=1), "answered", 1, caller="+4955", talk=10, hold=0, acw=0)
    [q] = await reports.queue_report(pool, since=NOW - timedelta(days=2), until=NOW, interval="1d", now=NOW)
    assert q["total"]["answered"] == 1 and q["total"]["fcr_rate"] is None
    # a repeat within the window decides it (not resolved) before the window is over
    await fact(pool, "u2", "q", NOW - timedelta(hours=2), "abandoned", 9, caller="+4955")
    [q] = await reports.queue_report(pool, since=NOW - timedelta(days=2), until=NOW, interval="1d", now=NOW)
    assert q["total"]["fcr_rate"] == 0.0
    # a shorter window has elapsed without the repeat: resolved
    [q] = await reports.queue_report(pool, since=NOW - timedelta(days=2), until=NOW, interval="1d", now=NOW,
                                     fcr_window_s=3600)
    assert q["total"]["fcr_rate"] == 1.0


async def test_dst_day_in_berlin_has_23_hours(pool: asyncpg.Pool) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    await fact(pool, "x", "q", datetime(2024, 3, 31, 1, 30, tzinfo=UTC), "answered", 12, talk=1, hold=0, acw=0)
    since, until = datetime(2024, 3, 31, tzinfo=berlin), datetime(2024, 4, 1, tzinfo=berlin)
    [q] = await reports.queue_report(pool, since=since, until=until, interval="1h", tz="Europe/Berlin", now=NOW)
    starts = [i["start"] for i in q["intervals"]]
    assert len(starts) == 23
    assert starts[:4] == ["2024-03-31T00:00:00+01:00", "2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00",
                          "2024-03-31T04:00:00+02:00"]
    assert [i["offered"] for i in q["intervals"]][2] == 1  # 01:30 UTC = 03:30 CEST
    assert q["total"]["offered"] == 1
    fall = reports.interval_bounds(datetime(2024, 10, 27, tzinfo=berlin), datetime(2024, 10, 28, tzinfo=berlin),
                                   "1h", "Europe/Berlin")
    assert len(fall) - 1 == 25 and all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(fall))
    days = reports.interval_bounds(datetime(2024, 3, 30, tzinfo=berlin), datetime(2024, 4, 1, tzinfo=berlin), "1d",
                                   "Europe/Berlin")
    assert [b - a for a, b in itertools.pairwise(days)] == [timedelta(hours=24), timedelta(hours=23)]
    quarter = reports.interval_bounds(datetime(2024, 1, 1, 5, 50, tzinfo=UTC), datetime(2024, 1, 1, 6, 20, tzinfo=UTC),
                                      "15m", "Asia/Kolkata")  # +05:30: 15-minute marks are :00 :15 :30 :45 UTC too
    assert [b.strftime("%H:%M") for b in quarter] == ["05:50", "06:00", "06:15", "06:20"]


async def test_calls_filters_and_order(pool: asyncpg.Pool) -> None:
    await seed(pool)
    rows = await reports.calls(pool, since=D, until=at(180))
    assert [r["uniqueid"] for r in rows] == ["a1", "a2", "ab", "a1b", "sa", "to", "ee", "a3", "tr"]
    assert [r["uniqueid"] for r in await reports.calls(pool, since=D, until=at(180), agent="ann")] == ["a1", "a3"]
    assert [r["uniqueid"] for r in await reports.calls(pool, queue="support", outcome="abandoned")] == ["r2", "r1"]
    assert [r["uniqueid"] for r in await reports.calls(pool, caller_number="+491111")] == ["a1", "a1b", "r1"]
    assert [r["uniqueid"] for r in await reports.calls(pool, since=D, until=at(180), limit=2, offset=2)] == [
        "ab", "a1b"]


async def step(pool: asyncpg.Pool, uid: str, n: int, node_id: str, node_type: str, outcome: str, when: datetime,
               flow: str = "main", input_: str | None = None) -> None:
    await pool.execute(
        """INSERT INTO ivr_steps (node, flow, version, uniqueid, linkedid, step, node_id, node_type, input, outcome, at)
           VALUES ('n1', $1, 1, $2, $2, $3, $4, $5, $6, $7, $8)""", flow, uid, n, node_id, node_type, input_, outcome,
        when)


async def test_ivr_paths_and_containment(pool: asyncpg.Pool) -> None:
    t = D
    await step(pool, "u1", 1, "main", "menu", "option 1", t, input_="1")
    await step(pool, "u1", 2, "sales", "queue", "queued", t)
    await step(pool, "u2", 1, "main", "menu", "timeout", t, input_="")
    await step(pool, "u2", 2, "main", "menu", "option 2", t, input_="2")
    await step(pool, "u2", 10_000, "sub", "menu", "caller_hangup", t)
    await step(pool, "u3", 1, "main", "menu", "option 9", t, input_="9")
    await step(pool, "u3", 2, "bye", "hangup", "hangup", t)
    await step(pool, "u4", 10_000, "main", "menu", "caller_hangup", t)
    await step(pool, "u5", 1, "main", "menu", "option 1", t)
    await step(pool, "u5", 2, "xfer", "transfer", "transferred", t + timedelta(hours=5))  # after `until`: counted
    await step(pool, "u6", 1, "main", "menu", "option 9", t - timedelta(seconds=1))  # began before: not counted
    await step(pool, "u6", 2, "bye", "hangup", "hangup", t)
    await step(pool, "u7", 1, "start", "play", "played", t, flow="other")
    out = await reports.ivr_paths(pool, D, at(60))
    assert [f["flow"] for f in out] == ["main", "other"]
    main = out[0]
    assert {k: main[k] for k in ("calls", "contained", "containment", "to_queue", "transferred", "hung_up")} == {
        "calls": 5, "contained": 3, "containment": 3 / 5, "to_queue": 1, "transferred": 1, "hung_up": 2}
    nodes = {n["node_id"]: n for n in main["nodes"]}
    assert nodes["main"] == {"node_id": "main", "node_type": "menu", "entered": 5, "steps": 6,
                             "outcomes": {"caller_hangup": 1, "option 1": 2, "option 2": 1, "option 9": 1,
                                          "timeout": 1},
                             "next": {"bye": 1, "main": 1, "sales": 1, "sub": 1, "xfer": 1}, "hung_up": 1,
                             "ended_here": 1}
    assert nodes["sub"] == {"node_id": "sub", "node_type": "menu", "entered": 1, "steps": 1,
                            "outcomes": {"caller_hangup": 1}, "next": {}, "hung_up": 1, "ended_here": 1}
    assert sorted(nodes) == ["bye", "main", "sales", "sub", "xfer"]
    assert nodes["bye"]["entered"] == 1  # u6 (began before the range) is not in it
    other = await reports.ivr_paths(pool, D, at(60), flow="other")
    assert [(f["flow"], f["calls"], f["contained"], f["containment"]) for f in other] == [("other", 1, 0, 0.0)]


# ---- agents and the REST layer -------------------------------------------------------------------------------

T0 = D.timestamp()


def tr(agent: str, frm: State, to: State, sec: float, cause: str, reason: str | None = None) -> Transition:
    return Transition(agent, frm, to, T0 + sec, reason, cause, "L" if to != S.AVAILABLE else None)


ANN_DAY = [
    tr("ann", S.LOGGED_OUT, S.AVAILABLE, 0, "cmd:login"),
    tr("ann", S.AVAILABLE, S.PAUSED, 100, "cmd:pause", "break"),
    tr("ann", S.PAUSED, S.AVAILABLE, 400, "cmd:ready"),
    tr("ann", S.AVAILABLE, S.RINGING, 500.5, "AgentCalled"),
    tr("ann", S.RINGING, S.ON_CALL, 503, "AgentConnect"),
    tr("ann", S.ON_CALL, S.ON_HOLD, 600, "Hold"),
    tr("ann", S.ON_HOLD, S.ON_CALL, 660, "Unhold"),
    tr("ann", S.ON_CALL, S.ACW, 890, "AgentComplete"),
    tr("ann", S.ACW, S.AVAILABLE, 930.25, "acw_timeout"),  # ACW crosses the 15-minute boundary
    tr("ann", S.AVAILABLE, S.RINGING, 1000, "AgentCalled"),
    tr("ann", S.RINGING, S.AVAILABLE, 1015, "ring_no_answer"),
    tr("ann", S.AVAILABLE, S.PAUSED, 1015, "ring_no_answer", "missed"),
    tr("ann", S.PAUSED, S.RINGING, 1100, "AgentCalled"),
    tr("ann", S.RINGING, S.ON_CALL, 1102, "AgentConnect"),
    tr("ann", S.ON_CALL, S.ACW, 1900, "AgentComplete"),
    tr("ann", S.ACW, S.AVAILABLE, 1910, "cmd:ready"),
    tr("ann", S.AVAILABLE, S.PAUSED, 2000, "cmd:pause", "lunch"),
    tr("ann", S.PAUSED, S.LOGGED_OUT, 3000, "cmd:logout"),
]
BOB_DAY = [tr("bob", S.LOGGED_OUT, S.AVAILABLE, -600, "cmd:login"), tr("bob", S.AVAILABLE, S.LOGGED_OUT, 1200, "x")]


@pytest_asyncio.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    await pool.execute("INSERT INTO teams (name) VALUES ('blue'), ('red')")
    await pool.execute("INSERT INTO agents (name, team) VALUES ('ann', 'blue'), ('bob', 'red'), ('cid', NULL)")
    await pool.executemany(
        "INSERT INTO api_users (name, role, agent, team, token_sha256) VALUES ($1, $2, $3, $4, $5)",
        [("sup-blue", "supervisor", None, "blue", token_hash(SUP_BLUE)),
         ("sup-all", "supervisor", None, None, token_hash(SUP_ALL)),
         ("ann-user", "agent", "ann", None, token_hash(AGENT_TOKEN))])
    await AgentStateStore(pool, "n1").record([*ANN_DAY, *BOB_DAY])

    async def healthy() -> dict[str, Any]:
        return {"checks": {}}

    app = create_app(admin_token=ADMIN, health=healthy, membership=None,  # type: ignore[arg-type]
                     live_state=LiveState(), pool=pool, config_store=ConfigStore(pool), node="n1")
    async with TestClient(TestServer(app)) as client:
        yield client


async def get(api: TestClient, path: str, token: str = ADMIN, **headers: str) -> tuple[int, Any]:  # type: ignore[type-arg]
    resp = await api.get(path, headers={"Authorization": f"Bearer {token}", **headers})
    if resp.content_type == "text/csv":
        return resp.status, (await resp.text(), resp.headers)
    return resp.status, await resp.json()


RANGE = "from=2024-05-01T08:00:00Z&to=2024-05-01T11:00:00Z"


async def test_agent_report_state_times_add_up(api: TestClient) -> None:  # type: ignore[type-arg]
    status, body = await get(api, f"/api/v1/reports/agents?{RANGE}&interval=15m")
    assert status == 200, body
    assert [a["agent"] for a in body["agents"]] == ["ann", "bob", "cid"]
    ann = body["agents"][0]
    assert len(ann["intervals"]) == 12
    parts = ("available_s", "ringing_s", "talk_s", "hold_s", "acw_s", "paused_s")
    for figs in [ann["total"], *ann["intervals"]]:
        assert sum(figs[p] for p in parts) == pytest.approx(figs["logged_in_s"], abs=0.002)
        assert sum(figs["paused_by_reason"].values()) == pytest.approx(figs["paused_s"], abs=0.002)
    t = ann["total"]
    assert (t["logged_in_s"], t["handled"], t["missed"], t["paused_by_reason"]) == (
        3000.0, 2, 1, {"break": 300.0, "lunch": 1000.0, "missed": 85.0})
    # each interval equals the figures cut from the whole log (the report slices the log per interval)
    horizon = T0 + 3 * 3600 + 12 * 3600
    for k, figs in enumerate(ann["intervals"]):
        expect = agent_figures(ANN_DAY, T0 + 900 * k, T0 + 900 * (k + 1), horizon)
        assert figures(figs) == asdict(expect)
    first = ann["intervals"][0]
    assert (first["acw_s"], first["handled"], first["aht_s"]) == (10.0, 1, 427.25)  # ACW followed past 08:15
    assert body["agents"][1]["total"]["logged_in_s"] == 1200.0  # logged in before the range: prior state used
    assert body["agents"][2]["total"]["logged_in_s"] == 0.0 and body["agents"][2]["total"]["utilization"] is None


async def test_a_team_supervisor_sees_their_team_only(api: TestClient) -> None:  # type: ignore[type-arg]
    _, body = await get(api, f"/api/v1/reports/agents?{RANGE}", SUP_BLUE)
    assert [a["agent"] for a in body["agents"]] == ["ann"]
    _, body = await get(api, f"/api/v1/reports/agents?{RANGE}&agent=bob", SUP_BLUE)
    assert body["agents"] == []
    _, body = await get(api, f"/api/v1/reports/agents?{RANGE}&agent=bob", SUP_ALL)
    assert [a["agent"] for a in body["agents"]] == ["bob"]
    for path in ("reports/queues", "reports/agents", "reports/ivr", "calls"):
        assert (await get(api, f"/api/v1/{path}?{RANGE}", AGENT_TOKEN))[0] == 403
        assert (await get(api, f"/api/v1/{path}?{RANGE}", SUP_BLUE))[0] == 200


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


async def test_queue_report_api_and_csv_equal_json(api: TestClient, pool: asyncpg.Pool) -> None:  # type: ignore[type-arg]
    await seed(pool)
    await pool.execute("INSERT INTO event_gaps (node, since, until, reconciled_at) VALUES ('n1', $1, $2, NULL), "
                       "('n1', $3, NULL, NULL), ('n2', $4, $5, NULL), ('n2', $6, $7, now())",
                       at(-30), at(10), at(170), at(-90), at(-60), at(20), at(30))
    status, body = await get(api, f"/api/v1/reports/queues?{RANGE}&tz=Europe/Berlin")
    assert status == 200
    assert (body["from"], body["to"], body["interval"], body["tz"]) == (
        "2024-05-01T10:00:00+02:00", "2024-05-01T13:00:00+02:00", "1h", "Europe/Berlin")
    assert body["incomplete_ranges"] == [
        {"node": "n1", "since": "2024-05-01T09:30:00+02:00", "until": "2024-05-01T10:10:00+02:00", "reconciled": False},
        {"node": "n1", "since": "2024-05-01T12:50:00+02:00", "until": None, "reconciled": False}]
    _, agents = await get(api, f"/api/v1/reports/agents?{RANGE}")  # agent states of a reconciled gap stay missing
    assert [(g["node"], g["since"], g["reconciled"]) for g in agents["incomplete_ranges"]] == [
        ("n1", "2024-05-01T07:30:00+00:00", False), ("n2", "2024-05-01T08:20:00+00:00", True),
        ("n1", "2024-05-01T10:50:00+00:00", False)]
    sales = body["queues"][0]
    assert sales["intervals"][0]["start"] == "2024-05-01T10:00:00+02:00"
    assert figures(sales["intervals"][0])["offered"] == 6  # FCR here uses the real clock: the windows elapsed
    assert sales["total"] == SALES_TOTAL
    status, (text, headers) = await get(api, f"/api/v1/reports/queues?{RANGE}&format=csv")
    assert status == 200 and json.loads(headers["X-Incomplete-Ranges"])[0]["node"] == "n1"
    _, body = await get(api, f"/api/v1/reports/queues?{RANGE}")
    expected = []
    for q in body["queues"]:
        for i in q["intervals"]:
            expected.append({"queue": q["queue"], **{k: cell(v) for k, v in i.items()}})
        expected.append({"queue": q["queue"], "start": "total", "end": "",
                         **{k: cell(v) for k, v in q["total"].items()}})
    assert csv_rows(text) == expected
    assert list(csv_rows(text)[0]) == ["queue", "start", "end", *reports.QUEUE_FIELDS]
    _, (text2, _) = await get(api, f"/api/v1/reports/queues?{RANGE}", **{"Accept": "text/csv"})
    assert text2 == text
    status, body = await get(api, f"/api/v1/reports/queues?{RANGE}&queue=sales&sl_threshold_s=10")
    assert [q["queue"] for q in body["queues"]] == ["sales"] and body["queues"][0]["total"]["service_level"] == 1 / 7


async def test_agent_csv_equals_json(api: TestClient) -> None:  # type: ignore[type-arg]
    _, body = await get(api, f"/api/v1/reports/agents?{RANGE}&interval=30m")
    _, (text, _) = await get(api, f"/api/v1/reports/agents?{RANGE}&interval=30m&format=csv")
    expected = []
    for a in body["agents"]:
        expected += [{"agent": a["agent"], **{k: cell(v) for k, v in i.items()}} for i in a["intervals"]]
        expected.append({"agent": a["agent"], "start": "total", "end": "",
                         **{k: cell(v) for k, v in a["total"].items()}})
    assert csv_rows(text) == expected


async def test_calls_api_and_csv(api: TestClient, pool: asyncpg.Pool) -> None:  # type: ignore[type-arg]
    await seed(pool)
    status, body = await get(api, f"/api/v1/calls?{RANGE}&queue=sales&limit=3&offset=1")
    assert status == 200
    assert [c["uniqueid"] for c in body["calls"]] == ["a2", "ab", "sa"]
    assert body["calls"][0] == {
        "linkedid": "a2", "uniqueid": "a2", "queue": "sales", "caller_number": "+492222", "outcome": "answered",
        "wait_s": 40.0, "agent": "bob", "ring_s": None, "talk_s": 200.0, "hold_s": 0.0, "acw_s": 10.0,
        "transferred": True, "disposition": None, "csat": 3, "final": True,
        "entered_at": "2024-05-01T08:02:00+00:00", "ended_at": "2024-05-01T08:06:00+00:00"}
    _, (text, _) = await get(api, f"/api/v1/calls?{RANGE}&queue=sales&limit=3&offset=1&format=csv")
    assert csv_rows(text) == [{k: cell(c[k]) for k in CALL_FIELDS} for c in body["calls"]]
    # an unencoded `+` offset arrives as a space and is read back as `+`
    status, body = await get(api, "/api/v1/calls?from=2024-05-01T10:00:00+02:00&to=2024-05-01T13:00:00+02:00"
                                  "&caller=%2B491111")
    assert status == 200 and [c["uniqueid"] for c in body["calls"]] == ["a1", "a1b"]


async def test_ivr_api(api: TestClient, pool: asyncpg.Pool) -> None:  # type: ignore[type-arg]
    await step(pool, "u1", 1, "main", "menu", "option 1", D)
    await step(pool, "u1", 2, "sales", "queue", "queued", D)
    status, body = await get(api, f"/api/v1/reports/ivr?{RANGE}&flow=main")
    assert status == 200 and body["flows"][0]["calls"] == 1 and body["flows"][0]["containment"] == 0.0
    assert body["incomplete_ranges"] == []


async def test_ivr_csv_equals_json(api: TestClient, pool: asyncpg.Pool) -> None:  # type: ignore[type-arg]
    await step(pool, "u1", 1, "main", "menu", "option 1", D)
    await step(pool, "u1", 2, "sales", "queue", "queued", D)
    await step(pool, "u2", 1, "main", "menu", "caller_hangup", D)
    _, body = await get(api, f"/api/v1/reports/ivr?{RANGE}")
    status, (text, headers) = await get(api, f"/api/v1/reports/ivr?{RANGE}&format=csv")
    assert status == 200 and json.loads(headers["X-Incomplete-Ranges"]) == body["incomplete_ranges"]
    node_cols, flow_cols = IVR_NODE_FIELDS, IVR_FLOW_FIELDS
    expected = []
    for f in body["flows"]:
        expected += [{"flow": f["flow"], "node_id": n["node_id"], **{k: cell(n[k]) for k in node_cols},
                      **dict.fromkeys(flow_cols, "")} for n in f["nodes"]]
        expected.append({"flow": f["flow"], "node_id": "total", **dict.fromkeys(node_cols, ""),
                         "hung_up": cell(f["hung_up"]), **{k: cell(f[k]) for k in flow_cols}})
    assert csv_rows(text) == expected and len(expected) == 3
    assert list(expected[0]) == ["flow", "node_id", *node_cols, *flow_cols]
    _, (text2, _) = await get(api, f"/api/v1/reports/ivr?{RANGE}", **{"Accept": "text/csv"})
    assert text2 == text


@pytest.mark.parametrize(("query", "field"), [
    ("to=2024-05-01T11:00:00Z", "from"),
    ("from=2024-05-01T11:00:00Z&to=2024-05-01T11:00:00Z", "to"),
    ("from=2024-05-01T11:00:00Z&to=2024-05-01T10:00:00Z", "to"),
    ("from=2023-01-01T00:00:00Z&to=2024-05-01T00:00:00Z", "to"),
    ("from=2024-05-01T08:00:00&to=2024-05-01T11:00:00Z", "from"),
    (f"{RANGE}&tz=Mars/Olympus", "tz"),
    (f"{RANGE}&tz=../../etc/passwd", "tz"),
    (f"{RANGE}&interval=2h", "interval"),
    (f"{RANGE}&sl_threshold_s=0", "sl_threshold_s"),
    (f"{RANGE}&queue=Sales!", "queue"),
    (f"{RANGE}&format=xml", "format"),
    (f"{RANGE}&bogus=1", "bogus"),
])
async def test_queue_report_validation(api: TestClient, query: str, field: str) -> None:  # type: ignore[type-arg]
    status, body = await get(api, f"/api/v1/reports/queues?{query}")
    assert status == 422 and body["error"] == "invalid"
    assert field in [p["field"] for p in body["problems"]], body


@pytest.mark.parametrize(("path", "field"), [
    (f"calls?{RANGE}&limit=0", "limit"),
    (f"calls?{RANGE}&limit=1001", "limit"),
    (f"calls?{RANGE}&offset=-1", "offset"),
    (f"calls?{RANGE}&outcome=lost", "outcome"),
    (f"calls?{RANGE}&caller=abc", "caller"),
    (f"reports/agents?{RANGE}&interval=5m", "interval"),
    (f"reports/agents?{RANGE}&tz=Nowhere", "tz"),
    (f"reports/ivr?{RANGE}&format=xml", "format"),
    ("reports/ivr?from=2024-05-01T08:00:00Z", "to"),
])
async def test_other_validation(api: TestClient, path: str, field: str) -> None:  # type: ignore[type-arg]
    status, body = await get(api, f"/api/v1/{path}")
    assert status == 422 and field in [p["field"] for p in body["problems"]], body


async def test_a_report_too_large_to_answer_quickly_is_refused_with_a_way_out(
    api: TestClient, pool: asyncpg.Pool,  # type: ignore[type-arg]
) -> None:
    year = "from=2024-01-01T00:00:00Z&to=2024-12-31T00:00:00Z"
    n_queues = await pool.fetchval("SELECT count(*) FROM queues")
    await pool.executemany("INSERT INTO queues (name) VALUES ($1)", [(f"bulk{i:02d}",) for i in range(40)])
    status, body = await get(api, f"/api/v1/reports/queues?{year}&interval=1h")
    assert status == 422 and body["error"] == "too_large", body
    assert f"{n_queues + 40} queue(s)" in body["message"] and "longer interval" in body["message"]
    status, body = await get(api, f"/api/v1/reports/queues?{year}&interval=1d")  # 40+ queues × 365 days: fine
    assert status == 200 and len(body["queues"]) >= 40
    status, body = await get(api, f"/api/v1/reports/queues?{year}&interval=1h&queue=bulk01")  # one queue: fine
    assert status == 200 and len(body["queues"][0]["intervals"]) == 365 * 24  # 2024 is a leap year
    status, _ = await get(api, f"/api/v1/reports/queues?{year}&interval=1h&format=csv")  # an export may be larger
    assert status == 200
