"""IVR flow storage: drafts, immutable published versions, rollback, and the route reference."""

from __future__ import annotations

import asyncpg
import pytest

from ivr.flow_store import FlowConflict, FlowNotFound, FlowStore
from reporting.migrate import migrate

pytestmark = pytest.mark.asyncio

V1 = {"start": "a", "nodes": {"a": {"type": "hangup"}}}
V2 = {"start": "b", "nodes": {"b": {"type": "hangup"}}}


async def test_publish_rollback_and_versions_are_kept(pg_db: str) -> None:
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=2)
    try:
        await migrate(pool)
        store = FlowStore(pool)
        await store.create("main", V1)
        with pytest.raises(FlowConflict):
            await store.create("main", V1)
        with pytest.raises(FlowNotFound):
            await store.version("main")  # nothing published yet
        assert await store.publish("main", V1, "admin") == 1
        await store.save_draft("main", V2)
        assert (await store.version("main")).document == V1  # a draft change does not touch the published one
        assert await store.publish("main", V2, "admin") == 2
        assert (await store.version("main")).document == V2
        await store.rollback("main", 1)
        assert (await store.version("main")).version == 1
        assert (await store.version("main", 2)).document == V2  # every published version is kept
        with pytest.raises(FlowNotFound):
            await store.rollback("main", 7)
        got = await store.get("main")
        assert got["published_version"] == 1 and [v["version"] for v in got["versions"]] == [1, 2]
        assert got["draft"] == V2
        # A route using the flow keeps it from being deleted.
        await pool.execute("INSERT INTO inbound_routes (did, ivr_flow) VALUES ('4000', 'main')")
        with pytest.raises(FlowConflict):
            await store.delete("main")
        await pool.execute("DELETE FROM inbound_routes WHERE did = '4000'")
        await store.delete("main")
        assert await store.list() == []
    finally:
        await pool.close()
