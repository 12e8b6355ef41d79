"""Browser tests of the admin pages: configuration forms (with the server's field errors), one-time secrets, the
visual IVR flow editor (built, validated, fixed and published by mouse and keyboard only), and a screenshot of
every tab (artifacts/ui/admin-*.png)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from playwright.async_api import Dialog, Page, expect

from sim.baresip import BaresipPhone
from tests.live.scene import start_trunk_caller
from tests.live.support import EventRecorder, eventually
from tests.live.test_ivr import dial_flow, press, steps
from tests.live_stack import LiveStack
from tests.ui.conftest import Ui

pytestmark = [pytest.mark.live, pytest.mark.ui, pytest.mark.asyncio]

TABS = ["agents", "phones", "skills", "teams", "queues", "routes", "hours", "pause-reasons", "dispositions",
        "vip-callers", "prompts", "users", "security", "flows"]


class Cleanup:
    """API deletes run after the test, last created first (agents before their phone and skills)."""

    def __init__(self, ui: Ui) -> None:
        self.ui = ui
        self.paths: list[str] = []

    def add(self, path: str) -> None:
        self.paths.append(path)

    async def run(self) -> None:
        for path in reversed(self.paths):
            await self.ui.api("DELETE", path)


@pytest_asyncio.fixture
async def cleanup(ui: Ui) -> AsyncIterator[Cleanup]:
    c = Cleanup(ui)
    yield c
    await c.run()


async def admin_page(ui: Ui) -> Page:
    name, password = await ui.user("admin")
    page = await ui.sign_in(name, password)
    assert "/admin" in page.url, page.url

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()
    page.on("dialog", accept)
    await expect(page.locator("nav.tabs button[data-tab=agents]")).to_be_visible()
    return page


async def open_tab(page: Page, tab: str) -> None:
    await page.click(f"nav.tabs button[data-tab='{tab}']")
    await expect(page.locator(f"nav.tabs button.active[data-tab='{tab}']")).to_be_visible()
    await page.wait_for_load_state("networkidle")


def tag() -> str:
    return secrets.token_hex(3)


async def test_config_forms_and_field_errors(ui: Ui, cleanup: Cleanup) -> None:
    page = await admin_page(ui)
    t = tag()
    skill, agent = f"sk-{t}", f"ag-{t}"

    await open_tab(page, "skills")
    await page.fill("#form-skills input[name=name]", skill)
    await page.click("#form-skills button[type=submit]")
    cleanup.add(f"/api/v1/skills/{skill}")
    await expect(page.locator(f"#table-skills tr[data-key='{skill}']")).to_be_visible()
    # a duplicate: the 409 message on top of the form
    await page.fill("#form-skills input[name=name]", skill)
    await page.click("#form-skills button[type=submit]")
    await expect(page.locator("#form-skills .form-error")).to_contain_text("already exists")

    await open_tab(page, "agents")
    await page.fill("#form-agents input[name=name]", agent)
    await page.fill("#form-agents input[name=display_name]", "Ada Test")
    await page.click("#form-agents button.add-skill")
    await page.select_option("#form-agents .map-row select.skill-name", skill)
    await page.select_option("#form-agents .map-row select.skill-level", "4")
    await page.click("#form-agents button[type=submit]")
    cleanup.add(f"/api/v1/agents/{agent}")
    row = page.locator(f"#table-agents tr[data-key='{agent}']")
    await expect(row).to_contain_text("Ada Test")
    await expect(row).to_contain_text(f"{skill} 4")
    stored = await ui.api("GET", f"/api/v1/agents/{agent}", want=200)
    assert stored["skills"] == {skill: 4} and stored["display_name"] == "Ada Test"

    # edit (a PATCH-like PUT): the display name changes, the skills stay
    await row.locator("button", has_text="Edit").click()
    await page.fill("#form-agents input[name=display_name]", "Ada Lovelace")
    await page.click("#form-agents button[type=submit]")
    await expect(row).to_contain_text("Ada Lovelace")
    assert (await ui.api("GET", f"/api/v1/agents/{agent}"))["skills"] == {skill: 4}

    # a bad name: the server's 422 problem next to the name input, nothing created
    await page.fill("#form-agents input[name=name]", "Bad Name!")
    await page.click("#form-agents button[type=submit]")
    err = page.locator("#form-agents label:has(input[name=name]) .field-error")
    await expect(err).to_contain_text("should match pattern")
    await expect(page.locator("#form-agents input[name=name]")).to_contain_class("invalid")
    assert len(await page.locator("#table-agents tbody tr").all()) == len(await ui.api("GET", "/api/v1/agents"))

    # delete through the table (confirm accepted)
    await row.locator("button", has_text="Delete").click()
    await expect(row).to_have_count(0)
    assert (await ui.api("GET", f"/api/v1/agents/{agent}"))["error"] == "not_found"


async def test_phone_and_user_secrets_shown_once(ui: Ui, live_stack: LiveStack, cleanup: Cleanup) -> None:
    page = await admin_page(ui)
    t = tag()
    phone, user = f"ph-{t}", f"us-{t}"

    await open_tab(page, "phones")
    await page.fill("#form-phones input[name=name]", phone)
    await page.click("#form-phones button[type=submit]")
    cleanup.add(f"/api/v1/phones/{phone}")
    box = page.locator("#form-card-phones .secret-card")
    await expect(box).to_be_visible()
    await expect(box.locator("dd[data-secret='SIP user']")).to_have_text(phone)
    first = await box.locator("dd[data-secret='Password']").inner_text()
    assert len(first) >= 20
    await expect(box.locator("dd[data-secret='Server']")).to_have_text(f"127.0.0.1:{live_stack.cfg.sip.port}")
    await expect(box.locator("dd[data-secret='Transport']")).to_have_text("UDP")
    await ui.shot(page, "admin-phone-secret")
    await box.locator("button", has_text="I have noted it").click()
    await expect(box).to_have_count(0)
    await page.locator(f"#table-phones tr[data-key='{phone}'] button", has_text="New password").click()
    await expect(box.locator("dd[data-secret='Password']")).not_to_have_text(first)
    assert "password" not in await ui.api("GET", f"/api/v1/phones/{phone}")  # never readable afterwards

    await open_tab(page, "users")
    await page.fill("#form-users input[name=name]", user)
    await page.select_option("#form-users select[name=role]", "supervisor")
    await page.select_option("#form-users select[name=phone]", phone)
    await page.click("#form-users button[type=submit]")
    cleanup.add(f"/api/v1/users/{user}")
    token = await page.locator("#form-card-users .secret-card dd[data-secret='Bearer token']").inner_text()
    status, me = await asyncio.to_thread(live_stack.api, "GET", "/api/v1/session", None, token)
    assert status == 200 and me["user"] == user and me["role"] == "supervisor"

    await page.locator(f"#table-users tr[data-key='{user}'] button", has_text="Set password").click()
    await page.fill("#form-password input[name=password]", "short")
    await page.click("#form-password button[type=submit]")
    await expect(page.locator("#form-password label:has(input[name=password]) .field-error")).to_contain_text(
        "characters")
    await page.fill("#form-password input[name=password]", f"pw-{t}-long-enough")
    await page.click("#form-password button[type=submit]")
    await expect(page.locator("#form-users")).to_be_visible()
    # the new password signs in through the real form
    other = await ui.sign_in(user, f"pw-{t}-long-enough")
    assert "/supervisor" in other.url, other.url


async def _drag(page: Page, src: str, port: str, dst: str) -> None:
    out = page.locator(f".drawflow-node[data-node-id='{src}'] .output[data-port='{port}']")
    into = page.locator(f".drawflow-node[data-node-id='{dst}'] .input")
    a, b = await out.bounding_box(), await into.bounding_box()
    assert a and b
    await page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    await page.mouse.down()
    await page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=12)
    await page.mouse.up()


async def _select_node(page: Page, node: str) -> None:
    await page.locator(f".drawflow-node[data-node-id='{node}'] .node-title").click()
    await expect(page.locator(f"#node-form[data-node='{node}']")).to_be_visible()


async def test_visual_flow_editor_builds_validates_and_publishes(
    ui: Ui, cleanup: Cleanup, live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone],
    db: asyncpg.Connection,
) -> None:
    page = await admin_page(ui)
    flow = f"ui-flow-{tag()}"
    await open_tab(page, "flows")
    await page.fill("#flow-new-name", flow)
    await page.click("#flow-new")
    await expect(page.locator("#flow-title")).to_have_text(flow)

    # three boxes from the palette; each new box is selected, so its fields are in the side panel
    await page.click("#palette button[data-type=play]")
    await expect(page.locator("#node-form[data-node='play-1']")).to_be_visible()
    await page.fill("#node-form input[name=prompt]", "hello-world")
    await page.click("#palette button[data-type=menu]")
    await expect(page.locator("#node-form[data-node='menu-1']")).to_be_visible()
    await page.fill("#node-form input[name=prompt]", "demo-congrats")
    await page.fill("#node-form input[name=timeout_ms]", "3000")
    await page.click("#palette button[data-type=hangup]")
    await expect(page.locator(".drawflow-node[data-node-id='hangup-1']")).to_be_visible()
    # rename the hangup box through the panel
    await page.fill("#node-id", "bye")
    await page.click("#node-rename")
    await expect(page.locator(".drawflow-node[data-node-id='bye']")).to_be_visible()

    # arrows by dragging from an output dot to an input dot; menu invalid is left unconnected
    await _drag(page, "play-1", "next", "menu-1")
    await _drag(page, "menu-1", "options.1", "bye")
    await _drag(page, "menu-1", "timeout", "bye")
    await expect(page.locator(".drawflow .connection")).to_have_count(3)

    await page.click("#flow-validate")
    menu = page.locator(".drawflow-node[data-node-id='menu-1']")
    await expect(menu).to_contain_class("has-problem")
    await expect(menu.locator(".node-problem")).to_contain_text("invalid: field required")
    await expect(page.locator("#flow-problem-list")).to_contain_text("menu-1")
    await expect(page.locator(".drawflow-node[data-node-id='play-1']")).not_to_contain_class("has-problem")
    await ui.shot(page, "admin-flow-problem")

    # fix it in the side panel: the invalid branch goes to the bye box too (drawn as a fourth arrow)
    await _select_node(page, "menu-1")
    await expect(page.locator("#node-panel .panel-problems")).to_contain_text("field required")
    await page.select_option("#node-form select[name=invalid]", "bye")
    await expect(page.locator(".drawflow .connection")).to_have_count(4)
    await page.click("#flow-validate")
    await expect(page.locator("#flow-ok")).to_be_visible()
    await expect(menu).not_to_contain_class("has-problem")

    await page.click("#flow-publish")
    cleanup.add(f"/api/v1/flows/{flow}")
    await expect(page.locator("#flow-status")).to_contain_text("version 1 is live")
    await expect(page.locator("#table-versions")).to_contain_text("live")
    await ui.shot(page, "admin-flow-published")

    meta: dict[str, Any] = await ui.api("GET", f"/api/v1/flows/{flow}", want=200)
    assert meta["published_version"] == 1
    published = (await ui.api("GET", f"/api/v1/flows/{flow}/versions/1", want=200))["document"]
    assert published == {
        "start": "play-1",
        "nodes": {
            "play-1": {"type": "play", "prompt": "hello-world", "next": "menu-1"},
            "menu-1": {"type": "menu", "prompt": "demo-congrats", "timeout_ms": 3000, "options": {"1": "bye"},
                       "timeout": "bye", "invalid": "bye"},
            "bye": {"type": "hangup"},
        },
    }, published

    # reopening the flow draws the same graph (document <-> graph round trip, positions kept)
    await page.reload()
    await open_tab(page, "flows")
    await page.select_option("#flow-select", flow)
    await page.click("#flow-open")
    await expect(page.locator(".drawflow .connection")).to_have_count(4)
    await expect(page.locator(".drawflow-node[data-node-id='play-1']")).to_contain_class("is-start")
    await page.click("#flow-validate")
    await expect(page.locator("#flow-ok")).to_be_visible()

    # A real call follows the flow built in the editor: a DID routed to it, the caller presses 1 at the menu.
    did = f"5{secrets.randbelow(10**6):06d}"
    await ui.api("POST", "/api/v1/routes", {"did": did, "ivr_flow": flow}, 201)
    cleanup.add(f"/api/v1/routes/{did}")
    caller = await start_trunk_caller(live_stack, phones, "+493055509876")
    uid, mark = await dial_flow(live_stack, ami, caller, did)
    await press(ami, caller, uid, "1", nth=1, mark=mark)
    await ami.wait_for("Hangup", lambda e: e.uniqueid == uid, since=mark)
    walked = await eventually(lambda: _walked(db, uid), timeout=10, what="the flow's steps stored")
    assert [(v, node, digits) for v, node, digits, _ in walked] == [
        (1, "play-1", None), (1, "menu-1", "1"), (1, "bye", None)], walked


async def _walked(db: asyncpg.Connection, uid: str) -> list[tuple[int, str, str | None, str]] | None:
    got = await steps(db, uid)
    return got if len(got) == 3 else None


async def test_screenshots_of_every_tab(ui: Ui, cleanup: Cleanup) -> None:
    """Some rows in every table (made over the API), then one screenshot per tab."""
    t = tag()
    made: list[tuple[str, dict[str, Any]]] = [
        ("skills", {"name": f"billing-{t}"}), ("teams", {"name": f"team-{t}"}),
        ("phones", {"name": f"desk-{t}"}),
        ("agents", {"name": f"agent-{t}", "display_name": "Grace Hopper", "phone": f"desk-{t}", "team": f"team-{t}",
                    "skills": {f"billing-{t}": 5}}),
        ("queues", {"name": f"billing-{t}", "required_skill": f"billing-{t}", "callback_enabled": True,
                    "escalation": [{"after_s": 30, "min_level": 4}, {"after_s": 90, "min_level": 1}]}),
        ("pause-reasons", {"code": f"lunch-{t}", "label": "Lunch break"}),
        ("dispositions", {"code": f"sold-{t}", "label": "Sale closed"}),
        ("vip-callers", {"number": f"+4930{int(t, 16) % 10**7:07d}", "priority": 50}),
    ]
    for path, body in made:
        await ui.api("POST", f"/api/v1/{path}", body, 201)
        key = body.get("name") or body.get("code") or body["number"]
        cleanup.add(f"/api/v1/{path}/{key}")
    flow = f"hours-{t}"
    doc = {"start": "hours", "nodes": {
        "hours": {"type": "time_condition", "timezone": "Europe/Berlin",
                  "hours": {d: [["08:00", "12:30"], ["13:30", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri")},
                  "holidays": ["2026-12-25", "2026-12-26"], "open": "menu", "closed": "closed", "holiday": "closed"},
        "menu": {"type": "menu", "prompt": "demo-congrats", "options": {"1": "billing", "2": "voicemail"},
                 "timeout": "billing", "invalid": "menu"},
        "billing": {"type": "queue", "queue": f"billing-{t}"},
        "voicemail": {"type": "voicemail", "prompt": "vm-intro"},
        "closed": {"type": "hangup", "prompt": "vm-goodbye"}}}
    await ui.api("POST", "/api/v1/flows", {"name": flow, "document": doc}, 201)
    cleanup.add(f"/api/v1/flows/{flow}")
    await ui.api("POST", f"/api/v1/flows/{flow}/publish", {}, 200)
    await ui.api("POST", "/api/v1/routes", {"did": f"49{int(t, 16) % 10**6:06d}", "ivr_flow": flow}, 201)
    cleanup.add(f"/api/v1/routes/49{int(t, 16) % 10**6:06d}")

    page = await admin_page(ui)
    for tab in TABS:
        await open_tab(page, tab)
        if tab == "hours":
            await expect(page.locator("#table-hours")).to_contain_text(flow)
        await ui.shot(page, f"admin-{tab}")
    # the hours tab's link opens the flow in the editor with the time condition selected
    await open_tab(page, "hours")
    await page.locator("#table-hours tr", has_text=flow).locator("button", has_text="Edit in flow editor").click()
    await expect(page.locator("#node-form[data-node='hours']")).to_be_visible()
    await expect(page.locator("#node-form input[name=hours-mon]")).to_have_value("08:00-12:30, 13:30-18:00")
    await expect(page.locator(".drawflow .connection")).to_have_count(7)
    await ui.shot(page, "admin-flows-hours-node")
