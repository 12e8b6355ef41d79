"""Schema migrations: numbered SQL files shipped inside the package, applied in order, once.

Why not a migration framework: the schema is small, PostgreSQL-only and append-mostly; numbered SQL
files plus a checksum table are enough and keep the schema readable as plain SQL.

Rules:
- files are ``NNNN_name.sql`` in ``reporting/migrations`` (package data, read via importlib.resources);
- each file runs in its own transaction together with its ``schema_migrations`` row, so a failed file
  leaves nothing behind and is retried next time;
- an applied file must never change: its sha256 is stored and a mismatch stops the run with a clear
  error (edit the schema with a new file instead);
- a database that has a version this code does not know (newer code ran against it) is refused;
- concurrent runs (several service instances starting together) serialise on an advisory lock.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

#: pg_advisory_lock key ("ccpbxmig" as an int64): one migration run at a time per database.
ADVISORY_LOCK_KEY = int.from_bytes(b"ccpbxmig", "big", signed=True)
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# The bookkeeping table is created by the runner itself (not by 0001) because the runner must read it
# before it can know whether 0001 was applied.
_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    checksum   text NOT NULL
)
"""


class MigrationError(RuntimeError):
    """The database schema and the shipped migration files disagree; nothing further was applied."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: ``version`` from its number, ``checksum`` = sha256 of its bytes."""

    version: int
    name: str
    sql: str
    checksum: str


def load_migrations(package: str = "reporting", folder: str = "migrations") -> list[Migration]:
    """Read the shipped ``NNNN_name.sql`` files, sorted by number; duplicates are an error."""
    found: dict[int, Migration] = {}
    root = resources.files(package).joinpath(folder)
    for entry in root.iterdir():
        m = _NAME_RE.match(entry.name)
        if not m:
            continue
        data = entry.read_bytes()
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migration files share number {version:04d}: "
                                 f"{found[version].name} and {entry.name}")
        checksum = hashlib.sha256(data).hexdigest()
        found[version] = Migration(version, entry.name, data.decode("utf-8"), checksum)
    return [found[v] for v in sorted(found)]


async def migrate(
    conn_or_pool: asyncpg.Connection | asyncpg.Pool,
    migrations: Iterable[Migration] | None = None,
) -> list[str]:
    """Apply pending migrations; return the names of the files applied by this call ([] = up to date).

    ``migrations`` defaults to the shipped files (a parameter so tests can feed their own).
    """
    todo = list(migrations) if migrations is not None else load_migrations()
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            return await _migrate(conn, todo)
    return await _migrate(conn_or_pool, todo)


async def _migrate(conn: asyncpg.Connection | PoolConnectionProxy, todo: list[Migration]) -> list[str]:
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_BOOTSTRAP)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {r["version"]: r for r in rows}
        known = {m.version for m in todo}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                "database has migrations this code does not ship: "
                + ", ".join(f"{v:04d} ({applied[v]['name']})" for v in unknown)
                + " — it was migrated by newer code; run that version"
            )
        for m in todo:
            row = applied.get(m.version)
            if row is not None and row["checksum"] != m.checksum:
                raise MigrationError(
                    f"migration {m.name} was changed after it was applied "
                    f"(stored sha256 {row['checksum'][:12]}…, file {m.checksum[:12]}…); "
                    "never edit an applied migration: add a new numbered file instead"
                )
        done: list[str] = []
        for m in todo:
            if m.version in applied:
                continue
            log.info("applying migration %s", m.name)
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version, m.name, m.checksum,
                )
            done.append(m.name)
        return done
    finally:
        if not conn.is_closed():  # a lost connection released the lock with its session
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
