"""Web sessions: a random cookie per signed-in browser, its SHA-256 and CSRF token in PostgreSQL.

Why in the database: a session survives a service restart (agents are not thrown out mid-shift), a sign-out or a
deleted user ends it on every node at once, and the cookie itself carries nothing but randomness.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from web.passwords import hash_password, verify_password

COOKIE = "ccpbx_session"
#: Failed sign-ins of one user name within FAIL_WINDOW before further tries are refused until it passes.
MAX_FAILURES = 10
FAIL_WINDOW = timedelta(minutes=15)


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    agent: str | None
    team: str | None
    phone: str | None
    csrf: str


class TooManyFailures(RuntimeError):
    """Too many wrong passwords for this user name lately; the message says for how long sign-in is refused."""


class SessionStore:
    def __init__(self, pool: asyncpg.Pool, *, idle: timedelta = timedelta(hours=12)) -> None:
        self.pool = pool
        self.idle = idle

    async def ensure_bootstrap_admin(self, password: str) -> None:
        """The config file's admin password signs in as user `admin` (created if missing, hash refreshed)."""
        if not password:
            return
        row = await self.pool.fetchrow("SELECT password_hash FROM api_users WHERE name = 'admin'")
        if row is not None and row["password_hash"] and await verify_password(row["password_hash"], password):
            return
        hashed = await hash_password(password)
        await self.pool.execute(
            "INSERT INTO api_users (name, role, token_sha256, password_hash, password_set_at) "
            "VALUES ('admin', 'admin', $1, $2, now()) "
            "ON CONFLICT (name) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'admin', "
            "password_set_at = now()",
            _sha(secrets.token_urlsafe(32)), hashed)

    async def set_password(self, user: str, password: str) -> bool:
        """Set a user's password (WeakPassword when it breaks the rules); ends their other sessions."""
        hashed = await hash_password(password)
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE api_users SET password_hash = $2, password_set_at = now() WHERE name = $1", user, hashed)
            if status == "UPDATE 0":
                return False
            await conn.execute("DELETE FROM web_sessions WHERE user_name = $1", user)
        return True

    async def sign_in(self, user: str, password: str, *, remote: str = "", user_agent: str = "") -> str | None:
        """A new session cookie value for the right password, else None (and the failure counted)."""
        failures = await self.pool.fetchval(
            "SELECT count(*) FROM web_sign_in_failures WHERE user_name = $1 AND at > now() - $2::interval",
            user[:64], FAIL_WINDOW)
        if failures >= MAX_FAILURES:
            raise TooManyFailures(f"too many wrong passwords for {user!r}: try again in "
                                  f"{int(FAIL_WINDOW.total_seconds() // 60)} minutes")
        row = await self.pool.fetchrow("SELECT name, password_hash FROM api_users WHERE name = $1", user[:64])
        if not await verify_password(row["password_hash"] if row else None, password) or row is None:
            await self.pool.execute("INSERT INTO web_sign_in_failures (user_name, remote) VALUES ($1, $2)",
                                    user[:64], remote[:64])
            return None
        token = secrets.token_urlsafe(32)
        await self.pool.execute(
            "INSERT INTO web_sessions (id_sha256, user_name, csrf, expires_at, user_agent, remote) "
            "VALUES ($1, $2, $3, now() + $4::interval, $5, $6)",
            _sha(token), row["name"], secrets.token_urlsafe(24), self.idle, user_agent[:200], remote[:64])
        await self.pool.execute("DELETE FROM web_sign_in_failures WHERE user_name = $1", row["name"])
        return token

    async def lookup(self, token: str) -> Session | None:
        """The live session of a cookie value (sliding expiry), or None when unknown or expired."""
        if not token or len(token) > 128:
            return None
        row = await self.pool.fetchrow(
            "UPDATE web_sessions s SET last_seen = now(), expires_at = now() + $2::interval "
            "FROM api_users u WHERE s.id_sha256 = $1 AND s.expires_at > now() AND u.name = s.user_name "
            "RETURNING u.name, u.role, u.agent, u.team, u.phone, s.csrf", _sha(token), self.idle)
        return Session(row["name"], row["role"], row["agent"], row["team"], row["phone"], row["csrf"]) if row else None

    async def sign_out(self, token: str) -> None:
        await self.pool.execute("DELETE FROM web_sessions WHERE id_sha256 = $1", _sha(token))

    async def purge_expired(self) -> int:
        status = await self.pool.execute("DELETE FROM web_sessions WHERE expires_at <= now()")
        await self.pool.execute("DELETE FROM web_sign_in_failures WHERE at <= now() - $1::interval", FAIL_WINDOW)
        return int(status.split()[-1])

    async def user_info(self, user: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT name, role, agent, team, phone FROM api_users WHERE name = $1", user)
        return dict(row) if row else None
