"""The web UI's pages: sign-in, the role-checked page shells, the session API and the static assets.

Why thin shells: each page is one HTML shell plus one ES module under web/static that builds the page from the
REST API and the live feed, so the browser sees exactly what an API client sees and every action is checked by
the same server-side guards. The shell itself is refused (403) to a role that may not use the page, and a page
asked for without a session redirects to /login.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from web.api_config import read_model
from web.auth import K_SESSION, Handler, guard, principal
from web.errors import error
from web.passwords import WeakPassword, verify_password
from web.sessions import COOKIE, Session, SessionStore, TooManyFailures

STATIC = Path(__file__).resolve().parent / "static"
VENDOR = Path(__file__).resolve().parent / "ui" / "node_modules"
#: The only files served from the npm packages (installed at setup by `npm ci` in web/ui).
VENDOR_FILES = {
    "chart.umd.min.js": VENDOR / "chart.js" / "dist" / "chart.umd.min.js",
    "drawflow.min.js": VENDOR / "drawflow" / "dist" / "drawflow.min.js",
    "drawflow.min.css": VENDOR / "drawflow" / "dist" / "drawflow.min.css",
    # JsSIP ships CommonJS only: `npm ci` bundles it into one script (web/ui/bundle-jssip.mjs, postinstall)
    "jssip.js": VENDOR / ".ccpbx-vendor" / "jssip.js",
}

#: page -> (title, roles that may open it). The navigation shows a user only the pages of their role.
PAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "agent": ("Agent desktop", ("agent",)),
    "supervisor": ("Supervisor console", ("supervisor", "admin")),
    "reports": ("Reports", ("supervisor", "admin")),
    "admin": ("Administration", ("admin",)),
}
HOME = {"agent": "/agent", "supervisor": "/supervisor", "admin": "/admin"}

K_SESSIONS = web.AppKey("sessions", SessionStore)
K_SECURE = web.AppKey("secure_cookies", bool)

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data:; media-src 'self' blob:; connect-src 'self' wss:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _page(title: str, body: str, *, status: int = 200, head: str = "") -> web.Response:
    doc = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f'<title>{html.escape(title)} · ccpbx</title><link rel="stylesheet" href="/static/app.css">{head}'
           f"</head><body>{body}</body></html>")
    return web.Response(text=doc, content_type="text/html", status=status, headers=SECURITY_HEADERS)


async def current_session(request: web.Request) -> Session | None:
    token = request.cookies.get(COOKIE, "")
    return await request.app[K_SESSIONS].lookup(token) if token else None


def _safe_next(value: str) -> str:
    """Only a local path may be a redirect target (no `//host`, no scheme)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value and len(value) < 200:
        return value
    return ""


def _login_form(message: str = "", user: str = "", next_path: str = "", status: int = 200) -> web.Response:
    note = f'<p class="form-error" role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""
<main class="signin">
  <form method="post" action="/login" class="card signin-card" autocomplete="on">
    <h1>ccpbx</h1><p class="muted">Contact center sign-in</p>{note}
    <label>User name <input name="user" id="user" value="{html.escape(user)}" required maxlength="64"
      autocomplete="username" autofocus></label>
    <label>Password <input name="password" id="password" type="password" required maxlength="256"
      autocomplete="current-password"></label>
    <input type="hidden" name="next" value="{html.escape(next_path)}">
    <button type="submit" class="primary">Sign in</button>
  </form>
</main>"""
    return _page("Sign in", body, status=status)


async def login_get(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    if session is not None:
        raise web.HTTPSeeOther(HOME.get(session.role, "/"))
    return _login_form(next_path=_safe_next(request.query.get("next", "")))


def _same_origin(request: web.Request) -> bool:
    """Browsers send Origin on a form POST; when they do it must be this host (login CSRF)."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def login_post(request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        return _login_form("This sign-in form came from another site.", status=403)
    form = await request.post()
    user = str(form.get("user", "")).strip().lower()
    password = str(form.get("password", ""))
    next_path = _safe_next(str(form.get("next", "")))
    if not user or not password:
        return _login_form("Enter your user name and password.", user, next_path, status=422)
    try:
        token = await request.app[K_SESSIONS].sign_in(
            user, password, remote=request.remote or "", user_agent=request.headers.get("User-Agent", ""))
    except TooManyFailures as exc:
        return _login_form(str(exc).capitalize() + ".", user, next_path, status=429)
    if token is None:
        return _login_form("Wrong user name or password.", user, next_path, status=401)
    session = await request.app[K_SESSIONS].lookup(token)
    target = next_path or HOME.get(session.role if session else "", "/")
    resp = web.HTTPSeeOther(target)
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                    secure=request.app[K_SECURE] or request.secure)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    form = await request.post()
    if session is not None:
        if str(form.get("csrf", "")) != session.csrf:
            return _page("Sign out", '<main class="signin"><p class="form-error">Reload the page, then sign out.</p>'
                         "</main>", status=403)
        await request.app[K_SESSIONS].sign_out(request.cookies.get(COOKIE, ""))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


async def root(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    raise web.HTTPSeeOther(HOME.get(session.role, "/login") if session else "/login")


def _nav(session: Session, active: str) -> str:
    links = "".join(
        f'<a href="/{name}" class="{"active" if name == active else ""}">{html.escape(title)}</a>'
        for name, (title, roles) in PAGES.items() if session.role in roles)
    who = html.escape(session.user) + (f" · agent {html.escape(session.agent)}" if session.agent else "")
    return (f'<header class="topbar"><span class="brand">ccpbx</span><nav>{links}</nav>'
            f'<span class="who" id="who">{who} <span class="role">{html.escape(session.role)}</span></span>'
            f'<form method="post" action="/logout" class="signout"><input type="hidden" name="csrf" '
            f'value="{html.escape(session.csrf)}"><button type="submit">Sign out</button></form></header>')


def page_handler(name: str) -> Handler:
    title, roles = PAGES[name]

    async def handler(request: web.Request) -> web.StreamResponse:
        session = await current_session(request)
        if session is None:
            raise web.HTTPSeeOther(f"/login?next=/{name}")
        if session.role not in roles:
            body = (f"{_nav(session, '')}<main class='page'><div class='card'><h1>Not for your role</h1>"
                    f"<p>{html.escape(title)} needs the role {' or '.join(roles)}; you are signed in as "
                    f"{html.escape(session.role)}.</p><p><a href='{HOME.get(session.role, '/')}'>Back to your "
                    f"page</a></p></div></main>")
            return _page("Forbidden", body, status=403)
        head = (f'<meta name="csrf-token" content="{html.escape(session.csrf)}">'
                f'<meta name="ccpbx-user" content="{html.escape(session.user)}">'
                f'<meta name="ccpbx-role" content="{html.escape(session.role)}">'
                f'<meta name="ccpbx-agent" content="{html.escape(session.agent or "")}">'
                f'<script type="module" src="/static/{name}.js"></script>')
        body = f'{_nav(session, name)}<main class="page" id="app" data-page="{name}"></main>' \
               '<div id="toasts" aria-live="polite"></div>'
        return _page(title, body, head=head)

    return handler


async def vendor(request: web.Request) -> web.StreamResponse:
    path = VENDOR_FILES.get(request.match_info["name"])
    if path is None or not path.is_file():
        return error(404, "not_found", "front-end library missing: run scripts/setup.sh (npm ci in web/ui)")
    return web.FileResponse(path, headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})


async def session_info(request: web.Request) -> web.Response:
    p = principal(request)
    session = request.get(K_SESSION)
    return web.json_response({"user": p.name, "role": p.role, "agent": p.agent, "team": p.team, "phone": p.phone,
                              "csrf": session.csrf if session else None,
                              "pages": [n for n, (_, roles) in PAGES.items() if p.role in roles]})


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    password: str


class OwnPasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    current: str
    password: str


async def set_user_password(request: web.Request) -> web.Response:
    body = await read_model(request, PasswordIn)
    if not isinstance(body, PasswordIn):
        return body  # type: ignore[return-value]  # the 400/422 response
    try:
        found = await request.app[K_SESSIONS].set_password(request.match_info["name"], body.password)
    except WeakPassword as exc:
        return error(422, "invalid", str(exc), problems=[{"field": "password", "message": str(exc)}])
    if not found:
        return error(404, "not_found", f"users: {request.match_info['name']!r} not found")
    return web.json_response({"name": request.match_info["name"], "password_set": True})


async def set_own_password(request: web.Request) -> web.Response:
    body = await read_model(request, OwnPasswordIn)
    if not isinstance(body, OwnPasswordIn):
        return body  # type: ignore[return-value]  # the 400/422 response
    store = request.app[K_SESSIONS]
    name = principal(request).name
    row = await store.pool.fetchrow("SELECT password_hash FROM api_users WHERE name = $1", name)
    if row is None or not await verify_password(row["password_hash"], body.current):
        return error(403, "forbidden", "current: wrong password")
    try:
        await store.set_password(name, body.password)
    except WeakPassword as exc:
        return error(422, "invalid", str(exc), problems=[{"field": "password", "message": str(exc)}])
    return web.json_response({"name": name, "password_set": True})


def add_page_routes(app: web.Application, sessions: SessionStore, *, secure_cookies: bool = False) -> None:
    app[K_SESSIONS] = sessions
    app[K_SECURE] = secure_cookies
    r = app.router
    r.add_get("/", root)
    r.add_get("/login", login_get)
    r.add_post("/login", login_post)
    r.add_post("/logout", logout)
    for name in PAGES:
        r.add_get(f"/{name}", page_handler(name))
    r.add_get("/static/vendor/{name}", vendor)
    r.add_static("/static/", STATIC, append_version=False)
    r.add_get("/api/v1/session", guard(session_info, "agent", "supervisor", "admin"))
    r.add_put("/api/v1/users/{name}/password", guard(set_user_password, "admin"))
    r.add_post("/api/v1/session/password", guard(set_own_password, "agent", "supervisor", "admin"))

