"""Historical reports over REST: queue and agent figures per interval (KPIS.md), call facts, IVR paths.

Every query parameter is validated by a pydantic model (422 with `problems[]`, as the rest of the API); the same
models document the parameters in the OpenAPI document. JSON by default; `?format=csv` (or `Accept: text/csv`
without a `format`) gives the same columns as CSV: for the queue and agent reports one row per (queue or
agent, interval) followed by that queue's or agent's total row, whose `start` is `total` and `end` empty; for
calls one row per fact; for IVR paths one row per (flow, node) followed by the flow's total row (`node_id`
`total`: the flow's `hung_up`, `calls`, `contained`, `containment`, `to_queue`, `transferred`).
`paused_by_reason` and a node's `outcomes` and `next` are one CSV cell each holding the JSON object.

Every answer states `incomplete_ranges`: the ranges overlapping the request in which a node's AMI connection
was down, so events (and the figures built on them) may be missing. The queue report and the call facts leave
out the ranges already reconciled from queue_log (their queue calls were rebuilt); the agent and IVR reports
list them too (`reconciled: true`): agent states and IVR steps of a gap cannot be rebuilt. CSV answers carry
them as JSON in the `X-Incomplete-Ranges` header.

Who sees what (roles supervisor and admin only): a supervisor with a team sees only the agents of their team
in the agent report; the queue report, the call facts and the IVR report are not filtered (queues are shared
between teams, and a queue's figures cannot be split by team without misstating them).
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from acd.agent_figures import AgentFigures, agent_figures
from acd.agent_state import CALL_STATES, State, Transition
from acd.state_store import AgentStateStore
from reporting import projection, reports
from reporting.projection import fact_json
from web.api_config import validation_response
from web.auth import guard, principal
from web.errors import error

K_REPORT_POOL = web.AppKey("report_pool", asyncpg.Pool)
K_REPORT_NODE = web.AppKey("report_node", str)

MAX_RANGE = timedelta(days=400)
#: Most interval rows (queues × intervals) one queue report returns: a year per day for 40 queues fits (14 640,
#: answered in ~130–210 ms from the rollups, docs/performance.md); a year per hour for 40 queues (350 000 rows, ~3 s
#: and ~100 MB of JSON) is refused with a message saying how to narrow it. CSV exports may be larger.
MAX_REPORT_ROWS = 20_000
MAX_CSV_ROWS = 400_000
INTERVAL_S = {"15m": 900, "30m": 1800, "1h": 3600, "1d": 86400}
#: How far past the range's end an agent's calls answered in it are followed to the end of their after-call
#: work (for `aht_s`); a handling still open then is counted up to there.
FOLLOW_S = 12 * 3600.0
NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
OUTCOMES = Literal["answered", "abandoned", "short_abandoned", "timeout", "exit_empty", "transferred_out",
                   "callback_requested"]
AGENT_FIELDS = tuple(f.name for f in fields(AgentFigures))
#: IVR CSV: one row per (flow, node), then the flow's total row (`node_id` = `total`) with the flow's figures.
IVR_NODE_FIELDS = ("node_type", "entered", "steps", "outcomes", "next", "hung_up", "ended_here")
IVR_FLOW_FIELDS = ("calls", "contained", "containment", "to_queue", "transferred")
CALL_FIELDS = ("linkedid", "uniqueid", "queue", "caller_number", "entered_at", "outcome", "wait_s", "agent",
               "ring_s", "talk_s", "hold_s", "acw_s", "transferred", "disposition", "csat", "ended_at", "final")
_HANDLING = CALL_STATES | {State.ACW}
M = TypeVar("M", bound=BaseModel)
# In a query string `+` means a space: an unencoded `+01:00` offset arrives as ` 01:00`. Put it back.
_SPACED_OFFSET = re.compile(r"(T[0-9:.]+) ([0-9]{2}(:?[0-9]{2})?)$")


def _zone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError; "../x" is a ValueError
        raise ValueError(f"unknown time zone {tz!r}: an IANA name such as Europe/Berlin or UTC") from None
    return tz


Tz = Annotated[str, Field(max_length=64, description="IANA time zone the intervals are aligned to"),
               AfterValidator(_zone)]
Interval = Literal["15m", "30m", "1h", "1d"]
Format = Literal["json", "csv"] | None


class _Range(BaseModel):
    """`from` < `to`, both ISO 8601 with an offset, at most 400 days apart."""

    model_config = ConfigDict(extra="forbid")
    since: AwareDatetime = Field(alias="from", description="start of the range (ISO 8601 with offset)")
    until: AwareDatetime = Field(alias="to", description="end of the range, exclusive (ISO 8601 with offset)")

    @field_validator("since", "until", mode="before")
    @classmethod
    def _plus(cls, v: Any) -> Any:
        return _SPACED_OFFSET.sub(r"\1+\2", v) if isinstance(v, str) else v

    @field_validator("until")
    @classmethod
    def _order(cls, v: datetime, info: ValidationInfo) -> datetime:
        since = info.data.get("since")
        if since is not None:
            if v <= since:
                raise ValueError("must be after from")
            if v - since > MAX_RANGE:
                raise ValueError("the range may span at most 400 days")
        return v


class QueueReportIn(_Range):
    interval: Interval = "1h"
    tz: Tz = "UTC"
    queue: str | None = Field(default=None, pattern=NAME)
    sl_threshold_s: float | None = Field(default=None, gt=0, le=3600)
    format: Format = None


class AgentReportIn(_Range):
    interval: Interval = "1h"
    tz: Tz = "UTC"
    agent: str | None = Field(default=None, pattern=NAME)
    format: Format = None


class CallsIn(_Range):
    queue: str | None = Field(default=None, pattern=NAME)
    agent: str | None = Field(default=None, pattern=NAME)
    outcome: OUTCOMES | None = None
    caller: str | None = Field(default=None, pattern=r"^\+?[0-9]{1,20}$")
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    format: Format = None


class IvrReportIn(_Range):
    flow: str | None = Field(default=None, pattern=NAME)
    format: Format = None


def _parse(request: web.Request, model: type[M]) -> M | web.Response:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        return validation_response(exc)


def _wants_csv(request: web.Request, fmt: str | None) -> bool:
    return fmt == "csv" or (fmt is None and "text/csv" in request.headers.get("Accept", ""))


def _iso(dt: datetime | None, zone: ZoneInfo) -> str | None:
    return dt.astimezone(zone).isoformat() if dt is not None else None


async def _gaps(request: web.Request, since: datetime, until: datetime, zone: ZoneInfo, *,
                reconciled: bool) -> list[dict[str, Any]]:
    """`reconciled`: list the gaps whose queue calls were rebuilt from queue_log too (the agent and IVR
    reports: states and IVR steps of a gap cannot be rebuilt)."""
    rows = await reports.incomplete_ranges(request.app[K_REPORT_POOL], since, until, include_reconciled=reconciled)
    return [{**g, "since": _iso(g["since"], zone), "until": _iso(g["until"], zone)} for g in rows]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]], name: str, gaps: list[dict[str, Any]]) -> web.Response:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows([_cell(v) for v in row] for row in rows)
    return web.Response(text=buf.getvalue(), content_type="text/csv", charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="{name}.csv"', "X-Incomplete-Ranges": json.dumps(gaps)})


def _report_csv(key: str, items: list[dict[str, Any]], columns: Sequence[str], name: str,
                gaps: list[dict[str, Any]]) -> web.Response:
    rows: list[list[Any]] = []
    for item in items:
        rows.extend([item[key], i["start"], i["end"], *(i[c] for c in columns)] for i in item["intervals"])
        rows.append([item[key], "total", "", *(item["total"][c] for c in columns)])
    return _csv([key, "start", "end", *columns], rows, name, gaps)


async def queue_report(request: web.Request) -> web.StreamResponse:
    q = _parse(request, QueueReportIn)
    if isinstance(q, web.Response):
        return q
    zone = ZoneInfo(q.tz)
    pool = request.app[K_REPORT_POOL]
    n_queues = 1 if q.queue else max(1, await pool.fetchval("SELECT count(*) FROM queues"))
    rows = n_queues * -(-int((q.until - q.since).total_seconds()) // INTERVAL_S[q.interval])
    limit = MAX_CSV_ROWS if _wants_csv(request, q.format) else MAX_REPORT_ROWS
    if rows > limit:
        return error(422, "too_large", f"this report would have about {rows} interval rows ({n_queues} queue(s) × "
                     f"intervals of {q.interval}); at most {limit}: choose a longer interval, a shorter range or one "
                     "queue (CSV exports allow more)",
                     problems=[{"field": "interval", "message": f"at most {limit} interval rows per report"}])
    items = await reports.queue_report(pool, since=q.since, until=q.until, interval=q.interval,
                                       queues=[q.queue] if q.queue else None, sl_threshold_s=q.sl_threshold_s,
                                       tz=q.tz)
    gaps = await _gaps(request, q.since, q.until, zone, reconciled=False)
    if _wants_csv(request, q.format):
        return _report_csv("queue", items, reports.QUEUE_FIELDS, "queues", gaps)
    return web.json_response({"from": _iso(q.since, zone), "to": _iso(q.until, zone), "interval": q.interval,
                              "tz": q.tz, "queues": items, "incomplete_ranges": gaps})


async def _agent_names(request: web.Request, q: AgentReportIn) -> list[str]:
    """The agents to report: configured ones and those with state changes in the range; a supervisor with a
    team only their team's (configured) agents."""
    pool, p = request.app[K_REPORT_POOL], principal(request)
    team = p.team if p.role == "supervisor" else None
    if team is not None:
        names = {r["name"] for r in await pool.fetch("SELECT name FROM agents WHERE team = $1", team)}
        return sorted(names & {q.agent} if q.agent else names)
    if q.agent:
        return [q.agent]
    rows = await pool.fetch(
        "SELECT name FROM agents UNION SELECT DISTINCT agent FROM agent_state_log "
        "WHERE node = $1 AND at >= $2 AND at < $3", request.app[K_REPORT_NODE], q.since, q.until)
    return sorted(r["name"] for r in rows)


def _cut(ts: list[Transition], ats: list[float], start: float, end: float) -> list[Transition]:
    """The transitions `agent_figures` needs for `[start, end)`: the last one before `start`, those in the
    interval, and those after it while the agent is still handling a call (so `aht_s` follows the calls
    answered in the interval to the end of their after-call work). Gives the figures of the whole list, in
    time proportional to the interval's own transitions."""
    lo = max(bisect.bisect_left(ats, start) - 1, 0)
    hi = bisect.bisect_left(ats, end)
    while hi < len(ts) and ts[hi].to_state in _HANDLING:
        hi += 1
    return ts[lo:hi + 1]


def _agent_json(f: AgentFigures) -> dict[str, Any]:
    return asdict(f)


async def agent_report(request: web.Request) -> web.StreamResponse:
    q = _parse(request, AgentReportIn)
    if isinstance(q, web.Response):
        return q
    zone = ZoneInfo(q.tz)
    store = AgentStateStore(request.app[K_REPORT_POOL], request.app[K_REPORT_NODE])
    bounds = [b.timestamp() for b in reports.interval_bounds(q.since, q.until, q.interval, q.tz)]
    now = time.time()
    horizon = min(now, bounds[-1] + FOLLOW_S)
    items = []
    for name in await _agent_names(request, q):
        ts = await store.history(name, bounds[0], max(horizon, bounds[0]), include_prior=True)
        ats = [t.at for t in ts]
        intervals = []
        for a, b in pairwise(bounds):
            end = min(b, now)
            figures = agent_figures(_cut(ts, ats, a, end), a, end, horizon)
            intervals.append({"start": _iso(datetime.fromtimestamp(a, zone), zone),
                              "end": _iso(datetime.fromtimestamp(b, zone), zone), **_agent_json(figures)})
        total = agent_figures(ts, bounds[0], min(bounds[-1], now), horizon)
        items.append({"agent": name, "total": _agent_json(total), "intervals": intervals})
    gaps = await _gaps(request, q.since, q.until, zone, reconciled=True)
    if _wants_csv(request, q.format):
        return _report_csv("agent", items, AGENT_FIELDS, "agents", gaps)
    return web.json_response({"from": _iso(q.since, zone), "to": _iso(q.until, zone), "interval": q.interval,
                              "tz": q.tz, "agents": items, "incomplete_ranges": gaps})


async def call_facts(request: web.Request) -> web.StreamResponse:
    q = _parse(request, CallsIn)
    if isinstance(q, web.Response):
        return q
    rows = await reports.calls(request.app[K_REPORT_POOL], since=q.since, until=q.until, queue=q.queue,
                               agent=q.agent, outcome=q.outcome, caller_number=q.caller, limit=q.limit,
                               offset=q.offset)
    facts = [fact_json(r) for r in rows]
    gaps = await _gaps(request, q.since, q.until, ZoneInfo("UTC"), reconciled=False)
    if _wants_csv(request, q.format):
        return _csv(CALL_FIELDS, ([f[c] for c in CALL_FIELDS] for f in facts), "calls", gaps)
    return web.json_response({"from": q.since.isoformat(), "to": q.until.isoformat(), "limit": q.limit,
                              "offset": q.offset, "calls": facts, "incomplete_ranges": gaps})


async def ivr_report(request: web.Request) -> web.StreamResponse:
    q = _parse(request, IvrReportIn)
    if isinstance(q, web.Response):
        return q
    flows = await reports.ivr_paths(request.app[K_REPORT_POOL], q.since, q.until, q.flow)
    gaps = await _gaps(request, q.since, q.until, ZoneInfo("UTC"), reconciled=True)
    if _wants_csv(request, q.format):
        rows: list[list[Any]] = []
        for f in flows:
            rows.extend([f["flow"], n["node_id"], *(n[c] for c in IVR_NODE_FIELDS), *([None] * len(IVR_FLOW_FIELDS))]
                        for n in f["nodes"])
            rows.append([f["flow"], "total", *([None] * 5), f["hung_up"], None, *(f[c] for c in IVR_FLOW_FIELDS)])
        return _csv(["flow", "node_id", *IVR_NODE_FIELDS, *IVR_FLOW_FIELDS], rows, "ivr", gaps)
    return web.json_response({"from": q.since.isoformat(), "to": q.until.isoformat(), "flows": flows,
                              "incomplete_ranges": gaps})


class RebuildIn(_Range):
    pass


async def rebuild_facts(request: web.Request) -> web.StreamResponse:
    """Project every call that entered a queue in the range again from its stored events (after a fix of the
    projector, or to check that the facts are what the events say): the same function as the live path."""
    q = _parse(request, RebuildIn)
    if isinstance(q, web.Response):
        return q
    n = await projection.rebuild(request.app[K_REPORT_POOL], request.app[K_REPORT_NODE], q.since.timestamp(),
                                 q.until.timestamp())
    return web.json_response({"from": q.since.isoformat(), "to": q.until.isoformat(), "calls": n})


def add_report_routes(app: web.Application, pool: asyncpg.Pool, node: str) -> None:
    app[K_REPORT_POOL] = pool
    app[K_REPORT_NODE] = node
    roles = ("supervisor", "admin")
    app.router.add_get("/api/v1/reports/queues", guard(queue_report, *roles))
    app.router.add_get("/api/v1/reports/agents", guard(agent_report, *roles))
    app.router.add_get("/api/v1/reports/ivr", guard(ivr_report, *roles))
    app.router.add_get("/api/v1/calls", guard(call_facts, *roles))
    app.router.add_post("/api/v1/reports/rebuild", guard(rebuild_facts, "admin"))
