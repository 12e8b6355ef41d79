"""Event store against a real PostgreSQL: migrations, batching, idempotent replay, outage, bounds."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import stat
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from ops.postgres import PgCluster, PgError, free_port
from reporting.event_store import (
    EventBufferFull,
    EventWriter,
    StoredEvent,
    count_events,
    events_for_linkedid,
)
from reporting.migrate import MigrationError, load_migrations, migrate

BASE_TS = 1_763_900_000.0


def make_events(n: int, *, node: str = "pbx1", start: int = 0, calls: int = 10) -> list[StoredEvent]:
    """n distinct AMI-like events spread over ``calls`` calls; the key is the stream position."""
    out = []
    for i in range(start, start + n):
        call = i % calls
        ts = BASE_TS + i * 0.000_123 + 0.000_001  # µs-precision instants
        out.append(StoredEvent(
            node=node, event_key=f"s1:{i}", name="Newstate" if i % 3 else "QueueCallerJoin",
            ts=ts, received_at=datetime.now(UTC), uniqueid=f"{BASE_TS:.0f}.{call}",
            linkedid=f"call-{call}", queue="sales" if i % 3 == 0 else None,
            fields={"Event": "Newstate", "Channel": f"PJSIP/agent{call}-0000{i:04x}", "Seq": str(i),
                    "CallerIDName": "Zoë “quoted” \\ back"},
        ))
    return out


@pytest_asyncio.fixture
async def db(pg_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A migrated fresh database."""
    conn = await asyncpg.connect(pg_db)
    await migrate(conn)
    try:
        yield conn
    finally:
        await conn.close()


def fast_writer(dsn: str, **kw: object) -> EventWriter:
    opts: dict[str, object] = {"batch_size": 200, "flush_interval": 0.01, "backoff_min": 0.05,
                               "backoff_max": 0.3, "connect_timeout": 1.0}
    opts.update(kw)
    return EventWriter(dsn, **opts)  # type: ignore[arg-type]


# ---------------------------------------------------------------- migrations
@pytest.mark.asyncio
async def test_migrations_apply_once_and_are_recorded(pg_db: str) -> None:
    conn = await asyncpg.connect(pg_db)
    try:
        shipped = load_migrations()
        assert shipped[0].name == "0001_call_events.sql"
        assert await migrate(conn) == [m.name for m in shipped]  # later files too, in numeric order
        assert await migrate(conn) == []
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
            (m.version, m.name, m.checksum) for m in shipped
        ]
        cols = {r["column_name"]: r["data_type"] for r in await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name='call_events'")}
        assert cols["ts"] == "timestamp with time zone" and cols["fields"] == "jsonb"
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_migrate_refuses_changed_file(db: asyncpg.Connection) -> None:
    await db.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(db)


@pytest.mark.asyncio
async def test_migrate_refuses_unknown_newer_version(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'x.sql', 'x')")
    with pytest.raises(MigrationError, match="does not ship"):
        await migrate(db)


@pytest.mark.asyncio
async def test_concurrent_migrate_applies_once(pg_db: str) -> None:
    pool = await asyncpg.create_pool(pg_db, min_size=3, max_size=3)
    try:
        results = await asyncio.gather(*(migrate(pool) for _ in range(3)))
        n = len(load_migrations())
        assert sorted(len(r) for r in results) == [0, 0, n]
        assert await pool.fetchval("SELECT count(*) FROM schema_migrations") == n
    finally:
        await pool.close()


# ---------------------------------------------------------------- writing
@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["unnest", "copy"])
async def test_batch_written_then_replay_adds_nothing(
    db: asyncpg.Connection, pg_db: str, method: str,
) -> None:
    events = make_events(1000)
    w = fast_writer(pg_db, method=method)
    await w.start()
    try:
        for ev in events:
            w.submit(ev)
        await w.flush(10)
        assert await count_events(db) == 1000
        assert w.stats.written == 1000 and w.stats.duplicates_skipped == 0 and w.stats.buffered == 0

        # Replay of the very same events (reconnect / reconciliation): nothing new.
        for ev in events:
            w.submit(ev)
        await w.flush(10)
        assert await count_events(db) == 1000
        assert w.stats.written == 1000 and w.stats.duplicates_skipped == 1000
    finally:
        assert await w.stop() == 0

    # Stored faithfully and in submission order.
    rows = await events_for_linkedid(db, "call-3")
    assert len(rows) == 100 and await count_events(db, "call-3") == 100
    first = rows[0]
    src = events[3]
    assert first["event_key"] == src.event_key and first["queue"] == src.queue
    assert first["ts"] == datetime.fromtimestamp(float(src.ts), UTC)  # type: ignore[arg-type]
    assert json.loads(first["fields"]) == dict(src.fields)
    keys = [r["event_key"] for r in await db.fetch("SELECT event_key FROM call_events ORDER BY id")]
    assert keys == [e.event_key for e in events]


@pytest.mark.asyncio
async def test_db_outage_loses_and_duplicates_nothing(
    db: asyncpg.Connection, pg_db: str, pg_cluster: PgCluster, caplog: pytest.LogCaptureFixture,
) -> None:
    w = fast_writer(pg_db)
    await w.start()
    try:
        for ev in make_events(50):
            w.submit(ev)
        await w.flush(10)  # the pool now holds live connections that the restart will kill
        await db.close()

        await asyncio.to_thread(pg_cluster.stop)
        caplog.set_level(logging.WARNING, logger="reporting.event_store")
        for ev in make_events(300, start=50):
            w.submit(ev)
        with pytest.raises(TimeoutError):
            await w.flush(1.0)  # several retries happen meanwhile
        s = w.stats
        assert s.buffered == 300 and s.written == 50 and s.outages == 1 and s.last_error

        await asyncio.to_thread(pg_cluster.start)
        await w.flush(15)
        s = w.stats
        assert s.written == 350 and s.duplicates_skipped == 0 and s.buffered == 0 and s.outages == 1
    finally:
        await w.stop()
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not once per retry
    conn = await asyncpg.connect(pg_db)
    try:
        assert await count_events(conn) == 350
        assert await conn.fetchval("SELECT count(DISTINCT event_key) FROM call_events") == 350
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_server_crash_during_steady_stream(db: asyncpg.Connection, pg_db: str, pg_cluster: PgCluster) -> None:
    """A crash-like stop (immediate: commits in flight have an unknown outcome) while events keep
    coming: after recovery every event is stored exactly once."""
    await db.close()
    w = fast_writer(pg_db, batch_size=50)
    await w.start()
    events = make_events(3000)
    try:
        async def produce() -> None:
            for i in range(0, len(events), 25):
                for ev in events[i:i + 25]:
                    w.submit(ev)
                await asyncio.sleep(0.005)

        producer = asyncio.create_task(produce())
        await asyncio.sleep(0.15)
        await asyncio.to_thread(pg_cluster.stop, "immediate")
        await asyncio.sleep(0.3)
        await asyncio.to_thread(pg_cluster.start)
        await producer
        await w.flush(20)
        assert w.stats.outages >= 1 and w.stats.buffered == 0
    finally:
        await w.stop()
    conn = await asyncpg.connect(pg_db)
    try:
        assert await count_events(conn) == 3000
        assert await conn.fetchval("SELECT count(DISTINCT event_key) FROM call_events") == 3000
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_buffer_bound_raises_and_keeps_what_it_took(db: asyncpg.Connection, pg_db: str) -> None:
    w = fast_writer(pg_db, batch_size=5, max_buffer=10)
    events = make_events(11)
    for ev in events[:10]:
        w.submit(ev)  # writer not started yet: everything waits in the buffer
    with pytest.raises(EventBufferFull, match="buffer full"):
        w.submit(events[10])
    assert w.stats.buffered == 10 and w.stats.refused == 1  # counted: /healthz shows it as event_writer.refused
    await w.start()
    try:
        await w.flush(10)
        w.submit(events[10])  # room again
        await w.flush(10)
    finally:
        await w.stop()
    assert await count_events(db) == 11


@pytest.mark.asyncio
async def test_a_connection_asyncpg_left_broken_is_an_outage_not_a_bug(
    db: asyncpg.Connection, pg_db: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seen live while PostgreSQL shut down: InternalClientError("cannot switch to state 12; another operation (2)
    # is in progress"). It must count as an outage (pool dropped, retried), not as an unexpected error.
    w = fast_writer(pg_db, backoff_max=10.0)
    real = EventWriter._write
    calls = 0

    async def broken_once(self: EventWriter, batch: list[StoredEvent]) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.exceptions._base.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress")
        return await real(self, batch)
    monkeypatch.setattr(EventWriter, "_write", broken_once)
    await w.start()
    try:
        for ev in make_events(20):
            w.submit(ev)
        await w.flush(3)  # the unexpected-error path would sleep backoff_max (10 s) first
    finally:
        await w.stop()
    assert w.stats.outages == 1 and "InternalClientError" in (w.stats.last_error or "")
    assert await count_events(db) == 20


@pytest.mark.asyncio
async def test_unstorable_event_is_set_aside_not_the_batch(db: asyncpg.Connection, pg_db: str) -> None:
    events = make_events(100)
    bad = StoredEvent(node="pbx1", event_key="bad", name="Newstate", ts=BASE_TS, received_at=BASE_TS,
                      uniqueid=None, linkedid="x", queue=None, fields={"Channel": "lone \udcff surrogate"})
    nul = StoredEvent(node="pbx1", event_key="nul", name="Newstate", ts=BASE_TS, received_at=BASE_TS,
                      uniqueid="a\x00b", linkedid="x", queue=None, fields={"CallerIDName": "a\x00b"})
    w = fast_writer(pg_db, batch_size=1000)
    for ev in [*events[:50], bad, nul, *events[50:]]:
        w.submit(ev)
    await w.start()
    try:
        await w.flush(10)
    finally:
        await w.stop()
    s = w.stats
    assert s.written == 101 and s.rejected == 1
    assert [e.event_key for e, _ in w.rejected_events] == ["bad"]
    row = await db.fetchrow(
        "SELECT uniqueid, fields->>'CallerIDName' AS cid FROM call_events WHERE event_key = 'nul'")
    assert row is not None and row["uniqueid"] == "a\ufffdb" and row["cid"] == "a\ufffdb"


@pytest.mark.asyncio
async def test_unmigrated_database_keeps_events_until_fixed(pg_db: str) -> None:
    w = fast_writer(pg_db)
    await w.start()
    try:
        for ev in make_events(20):
            w.submit(ev)
        with pytest.raises(TimeoutError):
            await w.flush(0.5)
        assert w.stats.buffered == 20 and "call_events" in (w.stats.last_error or "")
        conn = await asyncpg.connect(pg_db)
        try:
            await migrate(conn)
            await w.flush(10)
            assert await count_events(conn) == 20
        finally:
            await conn.close()
    finally:
        await w.stop()


def test_submit_rejects_naive_time() -> None:
    w = EventWriter("postgresql://x@127.0.0.1:1/x")
    with pytest.raises(ValueError, match="timezone-aware"):
        w.submit(dataclasses.replace(make_events(1)[0], ts=datetime(2025, 1, 1)))
    assert w.stats.buffered == 0


# ---------------------------------------------------------------- the cluster helper itself
def test_cluster_init_and_start_are_idempotent(pg_cluster: PgCluster) -> None:
    pg_cluster.init()
    pg_cluster.start()
    assert pg_cluster.is_running()
    assert pg_cluster.dsn.startswith("postgresql://ccpbx:")
    assert pg_cluster.dsn.endswith(f"@127.0.0.1:{pg_cluster.port}/ccpbx")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_unreachable_datadir_gives_a_clear_error() -> None:
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, stat.S_IRWXU)  # 0700 root: `postgres` cannot traverse it
        c = PgCluster(Path(d) / "sub" / "data", free_port(), password="pw")
        os.makedirs(Path(d) / "sub")
        os.chmod(Path(d) / "sub", 0o755)
        with pytest.raises(PgError, match="cannot write"):
            c.init()
