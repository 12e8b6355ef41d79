"""Sign-in, sessions and CSRF of the web UI against a real PostgreSQL (aiohttp test client, no PBX)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from acd.agent_service import AgentService
from acd.config_store import ConfigStore
from reporting.live import LiveState
from reporting.migrate import migrate
from web.app import create_app
from web.feed import FeedHub
from web.passwords import WeakPassword, hash_password, verify_password
from web.sessions import COOKIE, MAX_FAILURES, SessionStore

pytestmark = pytest.mark.asyncio
ADMIN_TOKEN = "t" * 40
ADMIN_PW = "bootstrap-admin-pw"


async def _healthy() -> dict[str, Any]:
    return {"checks": {}}


@pytest_asyncio.fixture
async def web_client(pg_db: str, tmp_path: Path) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=3)
    await migrate(pool)
    sessions = SessionStore(pool)
    await sessions.ensure_bootstrap_admin(ADMIN_PW)
    store = ConfigStore(pool)
    app = create_app(admin_token=ADMIN_TOKEN, health=_healthy, membership=None,  # type: ignore[arg-type]
                     live_state=LiveState(), pool=pool, config_store=store, feed=FeedHub(),
                     agents=AgentService(None, pool, "n1", None), sessions=sessions,  # type: ignore[arg-type]
                     node="n1")
    async with TestClient(TestServer(app)) as client:
        yield client
    await pool.close()


async def _api(client: TestClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:  # type: ignore[type-arg]
    resp = await client.request(method, path, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return resp.status, await resp.json()


async def _sign_in(client: TestClient, user: str, password: str,  # type: ignore[type-arg]
                   next_path: str = "") -> Any:
    return await client.post("/login", data={"user": user, "password": password, "next": next_path},
                             allow_redirects=False)


async def _csrf(client: TestClient, page: str) -> str:  # type: ignore[type-arg]
    text = await (await client.get(page)).text()
    m = re.search(r'name="csrf-token" content="([^"]+)"', text)
    assert m, text[:300]
    return m.group(1)


async def test_passwords_are_argon2id_and_rules_hold() -> None:
    hashed = await hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$") and "correct" not in hashed
    assert await verify_password(hashed, "correct horse battery")
    assert not await verify_password(hashed, "correct horse batterY")
    assert not await verify_password(None, "anything at all")
    for weak in ("short", "aaaaaaaaaaaa", " padded-password "):
        with pytest.raises(WeakPassword):
            await hash_password(weak)


async def test_bootstrap_admin_signs_in_and_lands_on_admin(web_client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await _sign_in(web_client, "admin", ADMIN_PW)
    assert resp.status == 303 and resp.headers["Location"] == "/admin"
    cookie = resp.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    page = await web_client.get("/admin")
    assert page.status == 200 and 'src="/static/admin.js"' in await page.text()
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    me = await (await web_client.get("/api/v1/session")).json()
    assert me["user"] == "admin" and me["role"] == "admin" and me["csrf"]


async def test_wrong_password_and_unknown_user_look_the_same_and_are_counted(
    web_client: TestClient,  # type: ignore[type-arg]
) -> None:
    a = await _sign_in(web_client, "admin", "wrong-password-1")
    b = await _sign_in(web_client, "nobody", "wrong-password-1")
    assert a.status == b.status == 401
    assert "Wrong user name or password." in await a.text() and COOKIE not in a.cookies
    for _ in range(MAX_FAILURES - 1):
        await _sign_in(web_client, "admin", "wrong-password-1")
    locked = await _sign_in(web_client, "admin", ADMIN_PW)  # even the right password waits now
    assert locked.status == 429 and "too many wrong passwords" in (await locked.text()).lower()


async def test_roles_pages_and_csrf(web_client: TestClient) -> None:  # type: ignore[type-arg]
    assert (await _api(web_client, "POST", "/api/v1/teams", {"name": "red"}))[0] == 201
    status, sup = await _api(web_client, "POST", "/api/v1/users", {"name": "sue", "role": "supervisor", "team": "red"})
    assert status == 201
    status, out = await _api(web_client, "PUT", "/api/v1/users/sue/password", {"password": "short"})
    assert status == 422 and out["problems"][0]["field"] == "password"
    assert (await _api(web_client, "PUT", "/api/v1/users/sue/password", {"password": "sue-secret-pw"}))[0] == 200
    assert (await _api(web_client, "PUT", "/api/v1/users/ghost/password", {"password": "sue-secret-pw"}))[0] == 404

    resp = await _sign_in(web_client, "sue", "sue-secret-pw", next_path="//evil.example/x")
    assert resp.status == 303 and resp.headers["Location"] == "/supervisor"  # no open redirect
    assert (await web_client.get("/admin")).status == 403
    assert (await web_client.get("/supervisor")).status == 200
    assert (await web_client.get("/api/v1/users")).status == 403  # the cookie carries the role to the API
    token = await _csrf(web_client, "/supervisor")
    # Unsafe method with the cookie: refused without the CSRF header, accepted with it.
    no_csrf = await web_client.post("/api/v1/session/password", json={"current": "sue-secret-pw", "password": "x"})
    assert no_csrf.status == 403 and (await no_csrf.json())["error"] == "csrf"
    wrong = await web_client.post("/api/v1/session/password", json={"current": "nope", "password": "new-sue-pw-1"},
                                  headers={"X-CSRF-Token": token})
    assert wrong.status == 403
    ok = await web_client.post("/api/v1/session/password", json={"current": "sue-secret-pw",
                                                                 "password": "new-sue-pw-1"},
                               headers={"X-CSRF-Token": token})
    assert ok.status == 200
    # Changing the password ended the session: the next API call needs a new sign-in.
    assert (await web_client.get("/api/v1/session")).status == 401
    assert (await _sign_in(web_client, "sue", "new-sue-pw-1")).status == 303
    assert sup["token"]  # the API token still works beside the password
    resp = await web_client.get("/api/v1/session", headers={"Authorization": f"Bearer {sup['token']}"})
    assert (await resp.json())["csrf"] is None


async def test_sign_out_needs_the_token_and_ends_the_session(web_client: TestClient) -> None:  # type: ignore[type-arg]
    await _sign_in(web_client, "admin", ADMIN_PW)
    token = await _csrf(web_client, "/admin")
    refused = await web_client.post("/logout", data={"csrf": "forged"}, allow_redirects=False)
    assert refused.status == 403 and (await web_client.get("/api/v1/session")).status == 200
    out = await web_client.post("/logout", data={"csrf": token}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/login"
    page = await web_client.get("/admin", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/login?next=/admin"


async def test_login_from_another_origin_is_refused(web_client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await web_client.post("/login", data={"user": "admin", "password": ADMIN_PW},
                                 headers={"Origin": "http://evil.example"}, allow_redirects=False)
    assert resp.status == 403 and COOKIE not in resp.cookies


async def test_vendor_files_are_a_fixed_list(web_client: TestClient) -> None:  # type: ignore[type-arg]
    assert (await web_client.get("/static/vendor/..%2f..%2fpages.py")).status == 404
    assert (await web_client.get("/static/vendor/package.json")).status == 404
    resp = await web_client.get("/static/vendor/chart.umd.min.js")
    assert resp.status == 200 and "Chart" in (await resp.text())[:5000]
