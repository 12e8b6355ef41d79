"""A recorded event stream replayed twice, and shuffled within the call, leaves the *database* identical: the same
call_events rows (the idempotency key drops the second copy) and the same queue_calls rows (the projector sorts
by the events' own instants). test_projector.py proves it for the facts in memory; this goes through the real
EventWriter, the real projection's loading and storing, into a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reporting.event_store import EventWriter
from reporting.ingest import to_stored
from reporting.migrate import migrate
from reporting.projection import load_events, store_facts
from reporting.projector import CallExtras, project
from telephony.ami import parse_event

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
NODE = "replay1"

pytestmark = pytest.mark.asyncio


def _recorded() -> list[Path]:
    return sorted(FIXTURES.glob("*.json"))


async def _load(dsn: str, events: list[dict[str, Any]], extras: CallExtras, passes: int) -> dict[str, Any]:
    """Migrate a fresh database, write `events` `passes` times through the EventWriter, project every call the
    way the service does, and return both tables' rows (without the serial id and the projection instant)."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        await migrate(pool)
        writer = EventWriter(dsn, batch_size=7)  # several batches per pass
        await writer.start()
        for _ in range(passes):
            for e in events:
                writer.submit(to_stored(parse_event(e["fields"], e["ts"]), NODE))
            await writer.flush(10)
        stats = writer.stats
        assert await writer.stop() == 0
        assert stats.written == len(events) and stats.duplicates_skipped == len(events) * (passes - 1)
        linkedids = sorted({r["linkedid"] for r in await pool.fetch(
            "SELECT DISTINCT linkedid FROM call_events WHERE name = 'QueueCallerJoin'")})
        for _ in range(passes):  # projecting again changes nothing either
            for lid in linkedids:
                async with pool.acquire() as conn:
                    calls = [c for c in project(await load_events(conn, lid), extras) if c.linkedid == lid]
                    await store_facts(conn, NODE, lid, calls)
        ev_rows = await pool.fetch("SELECT * FROM call_events ORDER BY node, event_key")
        qc_rows = await pool.fetch("SELECT * FROM queue_calls ORDER BY node, uniqueid, queue, entered_at")
    finally:
        await pool.close()

    def clean(r: asyncpg.Record) -> dict[str, Any]:
        d = {k: v for k, v in dict(r).items() if k not in ("id", "projected_at")}
        if isinstance(d.get("fields"), str):
            d["fields"] = json.loads(d["fields"])
        return d
    return {"call_events": [clean(r) for r in ev_rows], "queue_calls": [clean(r) for r in qc_rows]}


@pytest.mark.parametrize("path", _recorded(), ids=lambda p: p.stem)
async def test_replayed_twice_and_shuffled_gives_an_identical_database(path: Path, pg_cluster: Any) -> None:
    data = json.loads(await asyncio.to_thread(path.read_text))
    events = data["events"]
    extras = CallExtras(acw={(a, lid): v for a, lid, v in data["acw"]})
    dsns = []
    admin = await asyncpg.connect(pg_cluster.superuser_dsn)
    try:
        for i in range(2):
            name = f"replay_{path.stem.replace('-', '_')}_{i}"
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {name} OWNER {pg_cluster.user}")
            dsns.append((name, pg_cluster.dsn_for(name)))
        once = await _load(dsns[0][1], events, extras, passes=1)
        shuffled = events[:]
        random.Random(path.stem).shuffle(shuffled)
        twice = await _load(dsns[1][1], shuffled, extras, passes=2)
    finally:
        for name, _ in dsns:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
    assert len(once["call_events"]) == len(events)
    assert once["queue_calls"], "the fixture's call made no queue call"
    # The stored facts are the ones the live run stored (tests/live/test_reporting.py recorded them).
    want = data["facts"]
    assert [{k: r[k] for k in want[0]} for r in once["queue_calls"]] == want
    assert twice == once
