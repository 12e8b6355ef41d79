"""Seed the configuration tables from the TOML file: its phones, queues and inbound routes.

Why: Asterisk reads phones and queues from PostgreSQL (realtime views, migration 0005), so what the generated
TOML declares must be in the tables before a phone registers or a call reaches a queue. Idempotent and
non-destructive: rows that exist (maybe changed through the API since) are left as they are.
"""

from __future__ import annotations

import logging

import asyncpg

from service.config import Config

log = logging.getLogger("acd.seed")


async def seed_from_config(pool: asyncpg.Pool, cfg: Config) -> dict[str, int]:
    """Insert the configuration's phones, queues and routes that are missing; return how many were added."""
    async with pool.acquire() as conn, conn.transaction():
        phones = await conn.fetch(
            """INSERT INTO phones (name, password, kind)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
               ON CONFLICT DO NOTHING RETURNING name""",
            [p.user for p in cfg.phones], [p.password for p in cfg.phones], [p.role for p in cfg.phones],
        )
        queues = await conn.fetch(
            """INSERT INTO queues (name, strategy, ring_timeout_s)
               SELECT * FROM unnest($1::text[], $2::text[], $3::int[])
               ON CONFLICT DO NOTHING RETURNING name""",
            [q.name for q in cfg.queues], [q.strategy for q in cfg.queues], [q.timeout_s for q in cfg.queues],
        )
        routes = await conn.fetch(
            """INSERT INTO inbound_routes (did, queue)
               SELECT * FROM unnest($1::text[], $2::text[])
               ON CONFLICT DO NOTHING RETURNING did""",
            [r.did for r in cfg.routes], [r.queue for r in cfg.routes],
        )
    added = {"phones": len(phones), "queues": len(queues), "routes": len(routes)}
    if any(added.values()):
        log.info("seeded from the configuration file: %s", added)
    return added
