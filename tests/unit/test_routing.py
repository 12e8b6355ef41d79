"""Inbound routing from PostgreSQL: DID → queue with its limits, VIP priority, the skills entry penalty."""

from __future__ import annotations

import asyncpg
import pytest

from acd.routing import InboundRouter, RouteTarget
from reporting.migrate import migrate

pytestmark = pytest.mark.asyncio


async def test_route_queue_limits_and_vip(pg_db: str) -> None:
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=2)
    try:
        await migrate(pool)
        await pool.execute("INSERT INTO skills (name) VALUES ('billing')")
        await pool.execute("INSERT INTO queues (name) VALUES ('spill')")
        await pool.execute(
            """INSERT INTO queues (name, required_skill, escalation, max_wait_s, overflow_queue)
               VALUES ('billing', 'billing', '[{"after_s": 0, "min_level": 4}, {"after_s": 30, "min_level": 1}]',
                       60, 'spill')""")
        await pool.execute("INSERT INTO inbound_routes (did, queue) VALUES ('5550100', 'billing')")
        await pool.execute("INSERT INTO vip_callers (number, priority) VALUES ('+15551234567', 50)")
        router = InboundRouter(pool)
        assert await router.target_for("5550100", "+15551234567") == RouteTarget("billing", 50, 60, "spill", 1)
        assert await router.target_for("5550100", "15550000000") == RouteTarget("billing", 0, 60, "spill", 1)
        assert await router.target_for("5550100", "'; DROP TABLE queues; --") == RouteTarget(
            "billing", 0, 60, "spill", 1)
        assert await router.target_for("5550199", "+15551234567") is None
    finally:
        await pool.close()


async def test_routes_from_memory_while_the_database_is_down(pg_db: str, pg_cluster) -> None:  # type: ignore[no-untyped-def]
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=2)
    try:
        await migrate(pool)
        await pool.execute("INSERT INTO queues (name) VALUES ('sales')")
        await pool.execute("INSERT INTO inbound_routes (did, queue) VALUES ('100', 'sales')")
        await pool.execute("INSERT INTO vip_callers (number, priority) VALUES ('+15551234567', 20)")
        router = InboundRouter(pool)
        await router.warm()
        pg_cluster.stop(mode="immediate")
        assert await router.target_for("100", "+15551234567") == RouteTarget("sales", 20, None, None, None)
        assert await router.target_for("100", "+15550000000") == RouteTarget("sales", 0, None, None, None)
        assert await router.target_for("999", "+15551234567") is None
        assert router.fallbacks == 3
    finally:
        pg_cluster.start()
        await pool.close()
