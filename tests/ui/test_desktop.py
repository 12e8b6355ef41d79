"""Browser tests of sign-in, roles, the agent desktop and the supervisor console, with real SIP calls.

An agent goes ready in the page, a real call rings the agent's phone and pops on the page with the caller's
number, the supervisor's wallboard shows the call within a second of the AMI event, and a whisper started from
the console is really heard on the agent's phone (tone detection on what the phone received).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, WebSocketRoute, expect

from sim.baresip import BaresipPhone
from tests.live.scene import (
    SUP_TONE,
    Scene,
    drop_scene,
    make_scene,
    scene_fixture,  # noqa: F401  (the `scene` fixture, used by name)
    start_trunk_caller,
    tone_seconds,
)
from tests.live.support import EventRecorder, eventually
from tests.live.test_acd import acd  # noqa: F401  (a fixture, used by name)
from tests.live_stack import CALLER_TONE, LiveStack
from tests.ui.conftest import Ui

pytestmark = [pytest.mark.live, pytest.mark.ui, pytest.mark.asyncio]

CALLER = "+493055501234"
WHISPER_S = 2.5  # audio flows for a known time while the supervisor whispers


async def _password(ui: Ui, user: str) -> str:
    password = f"pw-{user}-0123456789"
    await ui.api("PUT", f"/api/v1/users/{user}/password", {"password": password}, 200)
    return password


async def _cookie_fetch(page: Page, method: str, path: str, csrf: bool) -> int:
    """An API call from the page with its session cookie, with or without the CSRF header; the status."""
    status: int = await page.evaluate(
        """async ([method, path, csrf]) => {
             const token = document.querySelector('meta[name="csrf-token"]').content;
             const r = await fetch(path, {method, headers: csrf ? {'X-CSRF-Token': token} : {}});
             return r.status; }""", [method, path, csrf])
    return status


async def test_sign_in_roles_and_csrf(ui: Ui, live_stack: LiveStack, scene: Scene) -> None:
    agent_user = f"a-{scene.team[2:]}"
    password = await _password(ui, agent_user)
    context = await ui.browser.new_context()
    page = await context.new_page()
    await page.goto(f"{ui.base}/agent")
    assert page.url.startswith(f"{ui.base}/login?next=/agent"), page.url  # no session: to the sign-in form
    await page.fill("#user", agent_user)
    await page.fill("#password", "wrong-password-123")
    await page.click("button[type=submit]")
    await expect(page.locator(".form-error")).to_have_text("Wrong user name or password.")
    await ui.shot(page, "signin-error")
    await context.close()

    page = await ui.sign_in(agent_user, password)
    assert page.url == f"{ui.base}/agent", page.url  # an agent lands on the desktop
    await expect(page.locator("#state")).to_contain_text("Ready")
    for path in ("/admin", "/supervisor", "/reports"):  # by URL: refused server-side
        resp = await page.goto(f"{ui.base}{path}")
        assert resp is not None and resp.status == 403, path
        await expect(page.locator("h1")).to_have_text("Not for your role")
    await page.goto(f"{ui.base}/agent")
    assert await _cookie_fetch(page, "GET", "/api/v1/users", csrf=True) == 403  # by API: refused too
    assert await _cookie_fetch(page, "GET", f"/api/v1/agents/{scene.agent}/state", csrf=False) == 200
    # A write without the CSRF header is refused and changes nothing; with it, it works.
    assert await _cookie_fetch(page, "POST", f"/api/v1/agents/{scene.agent}/pause", csrf=False) == 403
    _, state = await asyncio.to_thread(live_stack.api, "GET", f"/api/v1/agents/{scene.agent}/state")
    assert state["state"] == "available", state
    await page.click("#btn-logout")
    await expect(page.locator("#state")).to_contain_text("Logged out")
    _, state = await asyncio.to_thread(live_stack.api, "GET", f"/api/v1/agents/{scene.agent}/state")
    assert state["state"] == "logged_out", state
    await page.click(".signout button")
    await page.wait_for_url(f"{ui.base}/login")
    resp = await page.goto(f"{ui.base}/agent")
    assert page.url.startswith(f"{ui.base}/login"), page.url  # the session is gone


async def test_agent_ready_call_pops_wallboard_updates_and_whisper_is_heard(
    ui: Ui, live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], scene: Scene,
) -> None:
    tag = scene.team[2:]
    agent_page = await ui.sign_in(f"a-{tag}", await _password(ui, f"a-{tag}"))
    sup_page = await ui.sign_in(f"s-{tag}", await _password(ui, f"s-{tag}"))
    assert sup_page.url.startswith(f"{ui.base}/supervisor"), sup_page.url
    await expect(agent_page.locator("#feed-status")).to_have_text("live")
    await expect(sup_page.locator("#feed-status")).to_have_text("live")

    # The agent pauses and goes ready from the page.
    # The supervisor picks a pause reason in the agent's row before the agent's own changes re-render the table:
    # the pick survives them.
    row = sup_page.locator(f'#agents tr[data-agent="{scene.agent}"]')
    await row.locator(f"#force-reason-{scene.agent}").select_option("training")
    await agent_page.select_option("#pause-reason", "break")
    await agent_page.click("#btn-pause")
    await expect(agent_page.locator("#state")).to_contain_text("Paused · break")
    await expect(row).to_have_attribute("data-state", "paused")
    await agent_page.click("#btn-ready")
    await expect(agent_page.locator("#state")).to_contain_text("Ready")
    await expect(row).to_have_attribute("data-state", "available")
    await row.locator(".btn-force-pause").click()
    await expect(agent_page.locator("#state")).to_contain_text("Paused · training")
    await agent_page.click("#btn-ready")
    await expect(agent_page.locator("#state")).to_contain_text("Ready")
    _, state = await asyncio.to_thread(live_stack.api, "GET", f"/api/v1/agents/{scene.agent}/state")
    assert state["state"] == "available", state

    # A real call: it rings the agent's phone (which answers) and pops on the desktop with the caller's number.
    caller = await start_trunk_caller(live_stack, phones, CALLER)
    connect = await scene.call(caller)
    await expect(row).to_have_attribute("data-state", "on_call", timeout=5000)
    seen_after = time.time() - connect.timestamp
    assert seen_after < 1.0, f"the wallboard showed the call {seen_after:.3f} s after AgentConnect"
    print(f"wallboard: on_call seen {seen_after:.3f} s after AgentConnect (an upper bound: includes polling)")
    await expect(agent_page.locator("#call-caller")).to_have_text(CALLER)
    await expect(agent_page.locator("#call-queue")).to_have_text(scene.queue)
    await expect(agent_page.locator("#state")).to_contain_text("On call")
    card = sup_page.locator(f'.queue-card[data-queue="{scene.queue}"]')
    await expect(card.locator('[data-kpi="answered"] .value')).to_have_text("1")
    await expect(card.locator('[data-kpi="offered"] .value')).to_have_text("1")
    await expect(row.locator("td").nth(4)).to_have_text(CALLER)
    await ui.shot(agent_page, "agent-desktop-on-call")
    await ui.shot(sup_page, "supervisor-wallboard")

    # Whisper from the console: the supervisor's phone rings, answers, and the agent hears it; the caller not.
    mark = ami.mark()
    await row.locator(".btn-whisper").click()
    await ami.wait_for("ChanSpyStart", since=mark, timeout=15)
    session_row = sup_page.locator("#sessions-table tr[data-status=active]")
    await expect(session_row).to_have_attribute("data-mode", "whisper", timeout=5000)
    await asyncio.sleep(WHISPER_S)  # audio flows for the whisper phase
    await session_row.locator(".btn-end").click()
    await expect(sup_page.locator("#sessions-table")).to_have_count(0)
    await ui.shot(sup_page, "supervisor-after-whisper")
    await caller.hangup()
    await expect(agent_page.locator("#state")).not_to_contain_text("On call")
    agent_heard = tone_seconds(scene.agent_phone.recordings()[-1], SUP_TONE)
    assert agent_heard > 1.0, f"the agent heard the whisper for {agent_heard:.2f} s"
    assert tone_seconds(caller.recordings()[-1], SUP_TONE) < 0.2
    assert tone_seconds(scene.agent_phone.recordings()[-1], CALLER_TONE) > 1.0


async def test_supervisor_recordings_search_plays_in_the_browser(
    ui: Ui, live_stack: LiveStack, phones: list[BaresipPhone], scene: Scene,
) -> None:
    tag = scene.team[2:]
    caller = await start_trunk_caller(live_stack, phones, CALLER)
    await scene.call(caller)
    rec = await scene.recording_now()
    await asyncio.sleep(2.0)  # two seconds of conversation are recorded
    await caller.hangup()
    sup_page = await ui.sign_in(f"s-{tag}", await _password(ui, f"s-{tag}"))
    await sup_page.click('.tabs button[data-tab="recordings"]')

    async def finished() -> dict[str, Any] | None:
        status, body = await scene.as_(scene.sup_token, "GET", f"/api/v1/recordings/{rec['id']}")
        return body if status == 200 and body["duration_s"] else None
    stored = await eventually(finished, timeout=10, what="the recording finished")
    await sup_page.fill('#recordings-form input[name="caller"]', CALLER)
    await sup_page.click('#recordings-form button[type="submit"]')
    play = sup_page.locator(f'.btn-play[data-recording="{rec["id"]}"]')
    await expect(play).to_be_visible()
    await play.click()
    # The browser really fetched and decoded the WAV: the player knows its duration.
    duration = await sup_page.wait_for_function(
        "() => { const p = document.getElementById('player'); return p.duration > 0 && p.duration; }")
    assert abs(float(await duration.json_value()) - stored["duration_s"]) < 0.3, stored
    assert stored["duration_s"] > 1.5, stored
    await ui.shot(sup_page, "supervisor-recordings")
    # A caller filter in a bad shape is a clear message, not a crash.
    await sup_page.fill('#recordings-form input[name="caller"]', "12; DROP")
    await sup_page.click('#recordings-form button[type="submit"]')
    await expect(sup_page.locator("#recordings .form-error")).to_contain_text("caller")


@pytest_asyncio.fixture
async def wrapup_scene(live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone],
                       acd: Any) -> AsyncIterator[Scene]:  # noqa: F811
    """The scene with after-call work long enough to code the call in the page (ended there by Ready)."""
    s = await make_scene(live_stack, ami, phones, acd, wrapup_s=120)
    yield s
    await drop_scene(live_stack, s)


async def test_agent_holds_resumes_pci_pauses_and_codes_the_call_from_the_page(
    ui: Ui, live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], wrapup_scene: Scene,
) -> None:
    scene = wrapup_scene
    tag = scene.team[2:]
    page = await ui.sign_in(f"a-{tag}", await _password(ui, f"a-{tag}"))
    # The feed runs through Playwright so the test can cut it: the page re-renders when it comes back.
    feeds: list[WebSocketRoute] = []

    def through(ws: WebSocketRoute) -> None:
        ws.connect_to_server()
        feeds.append(ws)
    await page.route_web_socket("**/api/v1/feed", through)
    await page.reload()
    await expect(page.locator("#feed-status")).to_have_text("live")
    caller = await start_trunk_caller(live_stack, phones, CALLER)
    connect = await scene.call(caller)
    await expect(page.locator("#state")).to_contain_text("On call")

    mark = ami.mark()
    await page.click("#btn-hold")
    await ami.wait_for("Hold", since=mark)
    await expect(page.locator("#state")).to_contain_text("On hold")
    await page.click("#btn-unhold")
    await ami.wait_for("Unhold", since=mark)
    await expect(page.locator("#state")).to_contain_text("On call")

    await expect(page.locator("#rec-state")).to_have_text("recording")
    await page.click("#btn-pci")
    await expect(page.locator("#rec-state")).to_have_text("recording paused")
    _, rec = await asyncio.to_thread(live_stack.api, "GET", f"/api/v1/agents/{scene.agent}/recording")
    assert rec["recording"]["paused"] is True, rec
    await page.click("#btn-pci")
    await expect(page.locator("#rec-state")).to_have_text("recording")

    await page.fill("#transfer-to", "12ab")  # refused in the page, nothing sent
    await page.click("#btn-transfer")
    await expect(page.locator(".toast.error").last).to_contain_text("2 to 20 digits")
    await expect(page.locator("#state")).to_contain_text("On call")

    await caller.hangup()
    await expect(page.locator("#state")).to_contain_text("After-call work")
    await page.select_option("#disposition", "resolved")
    # A re-render between the choice and "Save code" (any feed event does one) keeps the choice: the feed is cut
    # and comes back, the page refreshes and draws a new select, which still holds "resolved".
    await page.evaluate("document.getElementById('disposition').dataset.old = '1'")
    await feeds[-1].close()
    await expect(page.locator("#feed-status")).to_have_text("live")
    await expect(page.locator("#disposition:not([data-old])")).to_have_value("resolved")
    await page.click("#btn-disposition")
    await expect(page.locator("#disposed")).to_have_text("code: resolved")
    await ui.shot(page, "agent-desktop-wrap-up")
    await page.click("#btn-ready")
    await expect(page.locator("#state")).to_contain_text("Ready")

    async def coded() -> dict[str, Any] | None:
        _, body = await asyncio.to_thread(live_stack.api, "GET", f"/api/v1/calls?from={_iso(connect.timestamp - 60)}"
                                          f"&to={_iso(time.time() + 60)}&queue={scene.queue}")
        rows = body if isinstance(body, list) else body.get("calls", [])
        done = [r for r in rows if r.get("disposition") == "resolved" and r.get("hold_s")]
        return done[0] if done else None
    fact = await eventually(coded, timeout=10, what="the call's fact with its code and hold time")
    assert fact["hold_s"] > 0 and fact["agent"] == scene.agent, fact


def _iso(ts: float) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+", "%2B")
