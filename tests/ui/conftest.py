"""Browser tests: Debian's Chromium driven by Playwright (headless) against the live stack of tests/conftest.py.

Each test gets a fresh browser; `ui.sign_in(user, password)` opens a new context (its own cookies), so one test can
have an agent, a supervisor and an admin signed in side by side. Screenshots go to artifacts/ui/ (not committed).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

from tests.live_stack import REPO, LiveStack

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "artifacts" / "ui"


@dataclass
class Ui:
    live: LiveStack
    browser: Browser
    users: list[str] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught JavaScript errors: the test fails on any

    @property
    def base(self) -> str:
        return f"http://{self.live.cfg.http.host}:{self.live.cfg.http.port}"

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None,
                  want: int | None = None) -> Any:
        status, out = await asyncio.to_thread(self.live.api, method, path, body)
        if want is not None:
            assert status == want, (method, path, status, out)
        return out

    async def user(self, role: str, **extra: Any) -> tuple[str, str]:
        """A user with a password (removed after the test); returns (name, password)."""
        name = f"u{role[0]}-{secrets.token_hex(3)}"
        password = f"pw-{secrets.token_urlsafe(12)}"
        await self.api("POST", "/api/v1/users", {"name": name, "role": role, **extra}, 201)
        await self.api("PUT", f"/api/v1/users/{name}/password", {"password": password}, 200)
        self.users.append(name)
        return name, password

    async def sign_in(self, user: str, password: str, path: str = "/") -> Page:
        """A new browser context signed in through the real form; lands on the role's page (or `path`)."""
        context = await self.browser.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{user}: {exc}"))
        self.pages.append(page)
        await page.goto(f"{self.base}/login?next={path}" if path != "/" else f"{self.base}/login")
        await page.fill("#user", user)
        await page.fill("#password", password)
        await page.click("button[type=submit]")
        await page.wait_for_load_state("networkidle")
        return page

    async def shot(self, page: Page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


@pytest_asyncio.fixture
async def ui(live_stack: LiveStack) -> AsyncIterator[Ui]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        u = Ui(live_stack, browser)
        try:
            yield u
        finally:
            await browser.close()
            for name in u.users:
                await asyncio.to_thread(live_stack.api, "DELETE", f"/api/v1/users/{name}")
    assert not u.errors, f"JavaScript errors on the pages: {u.errors}"
