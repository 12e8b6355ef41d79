"""Bring the database to the shape the PBX expects before Asterisk starts: migrations, then the seed.

Why before Asterisk: Asterisk reads phones, queues and penalty rules from PostgreSQL views; started on an
empty database it would log missing relations and load no rules.
"""

from __future__ import annotations

import asyncpg

from acd.seed import seed_from_config
from reporting.migrate import migrate
from service.config import Config


async def prepare_database(cfg: Config) -> list[str]:
    pool = await asyncpg.create_pool(cfg.database.dsn, min_size=1, max_size=1, timeout=10)
    try:
        applied = await migrate(pool)
        await seed_from_config(pool, cfg)
    finally:
        await pool.close()
    return applied
