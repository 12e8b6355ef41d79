"""The Reports page in a real browser, on real calls: one answered and one abandoned SIP call through the live
stack into a fresh queue, then a supervisor runs today's report for that queue and sees the API's figures, drawn
charts, the abandoned caller's number to call back, and CSV downloads; an agent is refused the page and the API."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any
from urllib.parse import urlparse

import asyncpg
import pytest
from playwright.async_api import Page

from sim.baresip import BaresipPhone
from tests.live.scene import start_trunk_caller
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import acd, api, phone_for  # noqa: F401  (acd: a fixture, used by name)
from tests.live.test_call_flow import start_caller
from tests.live.test_ivr import dial_flow, press, steps
from tests.live.test_reporting import facts_final
from tests.live_stack import LiveStack
from tests.ui.conftest import Ui

pytestmark = [pytest.mark.live, pytest.mark.ui, pytest.mark.asyncio]

ANSWERED_CALLER = "+4940700100"
ABANDONED_CALLER = "+4940700200"

# A chart is drawn when Chart.js has an instance on the canvas and the canvas has coloured pixels.
CHART_STATE = """(id) => {
  const canvas = document.getElementById(id);
  const chart = canvas && window.Chart && window.Chart.getChart(canvas);
  if (!chart) return null;
  const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < px.length; i += 4) if (px[i] > 0) painted++;
  const scales = Object.fromEntries(Object.entries(chart.options.scales || {})
    .map(([k, s]) => [k, s.title && s.title.display ? s.title.text : ""]));
  return {type: chart.config.type, title: chart.options.plugins.title.text,
          legend: chart.options.plugins.legend.display, scales, painted, width: canvas.width,
          labels: chart.data.labels.length,
          datasets: chart.data.datasets.map((d) => ({label: d.label, data: d.data}))};
}"""

FETCH = """async (u) => {
  const r = await fetch(u, {credentials: "same-origin"});
  return {status: r.status, type: r.headers.get("content-type") || "", text: await r.text()};
}"""


async def _available(live_stack: LiveStack, agent: str) -> bool:
    body = await api(live_stack, "GET", f"/api/v1/agents/{agent}/state")
    return bool(body["state"] == "available")


async def _chart(page: Page, canvas_id: str) -> dict[str, Any]:
    await page.wait_for_function(f"() => {{ const c = document.getElementById({canvas_id!r}); "
                                 "return !!(c && window.Chart && window.Chart.getChart(c)); }", timeout=10_000)
    state: dict[str, Any] = await page.evaluate(CHART_STATE, canvas_id)
    assert state["painted"] > 500 and state["width"] > 200, state
    assert state["title"] and state["legend"], state
    assert all(state["scales"].values()), f"every axis titled: {state}"
    return state


async def _csv(page: Page, link: str) -> dict[str, Any]:
    href = await page.get_attribute(link, "href")
    assert href and await page.get_attribute(link, "download") is not None
    out: dict[str, Any] = await page.evaluate(FETCH, href)
    assert out["status"] == 200 and out["type"].startswith("text/csv"), (href, out)
    return out


async def test_reports_page_shows_real_calls(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], acd: Any,  # noqa: F811
    db: asyncpg.Connection, ui: Ui,
) -> None:
    # Real calls on a fresh queue: one answered, one abandoned after ~6 s with the agent paused.
    s = await acd({"rex": ("agent1", 3)}, wrapup_s=1)
    (agent,) = s.agents
    await phone_for(live_stack, phones, "agent1")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/login")

    async def enter(number: str) -> BaresipPhone:
        caller = await start_trunk_caller(live_stack, phones, number)
        mark = ami.mark()
        await caller.dial_nowait(f"sip:{s.did}@{live_stack.sip_registrar}")
        await ami.wait_for("QueueCallerJoin", lambda e: e.queue == s.queue, since=mark)
        return caller

    mark = ami.mark()
    c1 = await enter(ANSWERED_CALLER)
    await ami.wait_for("AgentConnect", lambda e: e.queue == s.queue, since=mark)
    await asyncio.sleep(1.0)
    await c1.hangup()
    await ami.wait_for("AgentComplete", lambda e: e.queue == s.queue, since=mark)
    await eventually(lambda: _available(live_stack, agent), timeout=10, what="wrap-up over")
    await api(live_stack, "POST", f"/api/v1/agents/{agent}/pause", {"reason": "break"})
    c2 = await enter(ABANDONED_CALLER)
    await asyncio.sleep(6.0)  # the caller waits past the short-abandon threshold: the wait is the scenario
    mark = ami.mark()
    await c2.hangup()
    await ami.wait_for("QueueCallerAbandon", lambda e: e.queue == s.queue, since=mark)
    rows = await facts_final(db, s.queue, 2)
    assert [r["outcome"] for r in rows] == ["answered", "abandoned"]

    # A real IVR call: a menu where 2 ends the call (self-service, contained), 1 would queue.
    flow, did = f"f-{secrets.token_hex(3)}", f"4{secrets.randbelow(10**6):06d}"
    menu = {"type": "menu", "prompt": "beep", "timeout_ms": 6000, "retries": 1, "timeout": "bye", "invalid": "bye",
            "options": {"1": "q", "2": "bye"}}
    document = {"start": "main", "nodes": {"main": menu, "q": {"type": "queue", "queue": s.queue},
                                           "bye": {"type": "hangup"}}}
    await api(live_stack, "POST", "/api/v1/flows", {"name": flow, "document": document}, 201)
    await api(live_stack, "POST", f"/api/v1/flows/{flow}/publish")
    await api(live_stack, "POST", "/api/v1/routes", {"did": did, "ivr_flow": flow}, 201)
    try:
        c3 = await start_caller(live_stack, phones)
        uid, mark3 = await dial_flow(live_stack, ami, c3, did)
        await press(ami, c3, uid, "2", nth=1, mark=mark3)
        await c3.wait_event("CALL_CLOSED", 15)
        await eventually(lambda: _two_steps(db, uid), what="the IVR call's steps")
    finally:
        await api(live_stack, "DELETE", f"/api/v1/routes/{did}", None, 204)
        await api(live_stack, "DELETE", f"/api/v1/flows/{flow}", None, 204)

    # A supervisor runs today's report for the queue, with a (made-up) outage of another node in the range.
    gap = await db.fetchval("INSERT INTO event_gaps (node, since, until) VALUES ('ui-check', now() - interval '60 s', "
                            "now() - interval '30 s') RETURNING id")
    try:
        await _supervisor_reports(ui, s.queue, agent, flow, gap_node="ui-check")
    finally:
        await db.execute("DELETE FROM event_gaps WHERE id = $1", gap)


async def _two_steps(db: asyncpg.Connection, uid: str) -> bool:
    return len(await steps(db, uid)) >= 2


async def _supervisor_reports(ui: Ui, queue: str, agent: str, flow: str, gap_node: str) -> None:
    name, pw = await ui.user("supervisor")
    page = await ui.sign_in(name, pw, "/reports")
    assert urlparse(page.url).path == "/reports"
    await page.wait_for_selector(f'#r-queue option[value="{queue}"]', state="attached")
    await page.select_option("#r-queue", queue)
    async with page.expect_response(lambda r: "/api/v1/reports/queues?" in r.url) as got:
        await page.click("#r-run")
    query = urlparse((await got.value).url).query
    section = f'section.queue-report[data-queue="{queue}"]'
    await page.wait_for_selector(section)
    report = await ui.api("GET", f"/api/v1/reports/queues?{query}", want=200)
    (q,) = report["queues"]
    total = q["total"]
    assert [g["node"] for g in report["incomplete_ranges"]] == [gap_node]
    banner = await page.text_content(".tab-body .incomplete")
    assert banner and "Incomplete range" in banner and gap_node in banner
    assert (total["offered"], total["answered"], total["abandoned"]) == (2, 1, 1), total
    for kpi in ("offered", "answered", "abandoned", "short_abandoned", "timeout"):
        shown = await page.text_content(f'{section} [data-kpi="{kpi}"] .value')
        assert shown == str(total[kpi]), (kpi, shown, total[kpi])
    sl_shown = await page.text_content(f'{section} [data-kpi="service_level"] .value')
    assert sl_shown == f"{total['service_level'] * 100:.1f} %"
    asa_shown = await page.text_content(f'{section} [data-kpi="asa_s"] .value')
    assert asa_shown and ":" in asa_shown  # m:ss

    calls = await _chart(page, f"chart-calls-{queue}")
    assert calls["type"] == "bar" and calls["labels"] == len(q["intervals"])
    sums = {d["label"]: sum(v or 0 for v in d["data"]) for d in calls["datasets"]}
    assert sums == {"Offered": 2, "Answered": 1, "Abandoned": 1}, sums
    trend = await _chart(page, f"chart-sl-{queue}")
    assert trend["type"] == "line" and set(trend["scales"]) == {"x", "ySl", "yAsa"}
    assert [d["label"] for d in trend["datasets"]] == ["Service level (%)", "ASA (m:ss)"]
    asa = [v for v in trend["datasets"][1]["data"] if v is not None]
    assert asa and abs(asa[0] - total["asa_s"]) < 1e-6  # one interval holds both calls (or the answered one)
    interval_rows = await page.locator(f"#intervals-{queue} tbody tr").count()
    assert interval_rows >= 2  # at least one interval with calls, and the total row
    assert await page.locator(f"#intervals-{queue} tr.total").count() == 1
    queues_csv = await _csv(page, "#csv-queues")
    assert queues_csv["text"].splitlines()[0].startswith("queue,start,end,offered,answered,abandoned")
    assert f"{queue},total,,2,1,1" in queues_csv["text"]
    await ui.shot(page, "reports-queues")

    # Agents: the queue's agent with its state breakdown.
    await page.click('.tabs button[data-tab="agents"]')
    await page.wait_for_selector("#agents-table")
    assert agent in (await page.text_content("#agents-table") or "")
    agents_chart = await _chart(page, "chart-agents")
    assert [d["label"] for d in agents_chart["datasets"]][:2] == ["Available", "Ringing"]
    agents_csv = await _csv(page, "#csv-agents")
    assert agents_csv["text"].splitlines()[0].startswith("agent,start,end,logged_in_s")
    await ui.shot(page, "reports-agents")

    # Abandoned calls: the number to call back, not the answered caller's.
    await page.click('.tabs button[data-tab="abandoned"]')
    await page.wait_for_selector("#abandoned-table")
    listed = await page.text_content("#abandoned-table") or ""
    assert ABANDONED_CALLER in listed and ANSWERED_CALLER not in listed
    ab_csv = await _csv(page, "#csv-abandoned")
    lines = ab_csv["text"].splitlines()
    assert lines[0].startswith("linkedid,uniqueid,queue,caller_number,entered_at,outcome,wait_s")
    assert len(lines) == 2 and ABANDONED_CALLER in lines[1]
    await ui.shot(page, "reports-abandoned")

    # IVR paths: the flow's menu with the choice taken, contained in the flow.
    await page.click('.tabs button[data-tab="ivr"]')
    flow_card = page.locator(f'section.ivr-flow[data-flow="{flow}"]')
    await flow_card.wait_for()
    card_text = await flow_card.text_content() or ""
    assert "option 2" in card_text and "100.0 %" in card_text, card_text
    ivr_csv = await _csv(page, "#csv-ivr")
    assert ivr_csv["text"].splitlines()[0].startswith("flow,node_id,node_type,entered")
    assert f"{flow},main,menu,1," in ivr_csv["text"] and f"{flow},total," in ivr_csv["text"]
    await ui.shot(page, "reports-ivr")

    # Another time zone: the days and intervals are that zone's, and the page still shows the API's figures.
    await page.click('.tabs button[data-tab="queues"]')
    await page.fill("#r-tz", "Asia/Kolkata")
    async with page.expect_response(lambda r: "/api/v1/reports/queues?" in r.url) as got:
        await page.click("#r-run")
    kolkata = urlparse((await got.value).url).query
    assert "tz=Asia%2FKolkata" in kolkata and ("T18%3A30%3A00" in kolkata or "T18:30:00" in kolkata), kolkata
    report = await ui.api("GET", f"/api/v1/reports/queues?{kolkata}", want=200)
    await page.wait_for_selector(f'{section} th:has-text("Asia/Kolkata")')
    shown = await page.text_content(f'{section} [data-kpi="offered"] .value')
    assert shown == str(report["queues"][0]["total"]["offered"])
    await page.fill("#r-tz", "Mars/Olympus")
    await page.click("#r-run")
    error = page.locator("#report-error")
    await error.wait_for(state="visible")
    assert "unknown time zone" in (await error.text_content() or "")
    await page.fill("#r-tz", "UTC")

    # A range whose start is after its end: the API's 422, shown inline and as a toast.
    today = await page.input_value("#r-to")
    tomorrow = await page.evaluate("(d) => new Date(Date.parse(d) + 86400000).toISOString().slice(0, 10)", today)
    await page.fill("#r-from", tomorrow)
    await page.click("#r-run")
    await page.wait_for_function("() => document.getElementById('report-error').textContent.includes('after')")
    assert "after from" in (await error.text_content() or "")
    assert await page.locator("#toasts .toast.error").count() >= 1
    await ui.shot(page, "reports-error")

    # An agent may not open the page nor read the report API.
    aname, apw = await ui.user("agent", agent=agent)
    apage = await ui.sign_in(aname, apw, "/reports")
    resp = await apage.goto(f"{ui.base}/reports")
    assert resp is not None and resp.status == 403
    refused = await apage.evaluate(FETCH, f"/api/v1/reports/queues?{query}")
    assert refused["status"] == 403, refused
