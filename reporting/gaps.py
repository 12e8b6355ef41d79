"""Ranges in which AMI events may be missing (`event_gaps`), and closing them by reconciliation.

A gap opens when the AMI connection drops (or, at start, from the last event this node stored: the service
was not running) and closes when the connection is back. Closing runs reconciliation from queue_log over the
gap (reporting/reconcile.py) and marks the gap reconciled: queue figures are then whole again; agents' states
during the gap stay unknown, which the agent report says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from reporting.reconcile import close_lost_calls, reconcile

log = logging.getLogger("reporting.gaps")

MIN_GAP_S = 1.0
MARGIN_S = 5.0  # reconcile a little before the gap: a call that entered just before it may have lost its end


class EventGaps:
    def __init__(self, pool: asyncpg.Pool, node: str, queue_log: Path, *, cel_file: Path | None = None,
                 mark: Callable[[str], None], clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.node = node
        self.queue_log = queue_log
        self.cel_file = cel_file
        self.mark = mark
        self.clock = clock
        self.closed_since: list[float] = []

    async def open_since_last_event(self) -> None:
        """At start: the service was not running since the last event it stored."""
        last = await self.pool.fetchval("SELECT max(received_at) FROM call_events WHERE node = $1", self.node)
        if last is not None and self.clock() - last.timestamp() > MIN_GAP_S:
            await self.open(last.timestamp())

    async def open(self, since: float | None = None) -> None:
        """The connection dropped: open a gap (one per node at a time)."""
        await self.pool.execute(
            """INSERT INTO event_gaps (node, since) SELECT $1, $2
               WHERE NOT EXISTS (SELECT 1 FROM event_gaps WHERE node = $1 AND until IS NULL)""",
            self.node, datetime.fromtimestamp(self.clock() if since is None else since, UTC))

    async def close(self) -> int:
        """The connection is back: close the open gap, reconcile it from queue_log; returns the calls rebuilt.
        The starts of the gaps closed are kept in `closed_since` for `close_lost` (called a little later)."""
        now = self.clock()
        rows = await self.pool.fetch(
            """UPDATE event_gaps SET until = $2 WHERE node = $1 AND until IS NULL RETURNING id, since""",
            self.node, datetime.fromtimestamp(now, UTC))
        rows += await self.pool.fetch(
            "SELECT id, since FROM event_gaps WHERE node = $1 AND until IS NOT NULL AND reconciled_at IS NULL",
            self.node)
        n = 0
        for r in {row["id"]: row for row in rows}.values():
            linkedids = await reconcile(self.pool, self.node, self.queue_log, r["since"].timestamp() - MARGIN_S,
                                        now, self.cel_file)
            self.closed_since.append(r["since"].timestamp())
            for linkedid in linkedids:
                self.mark(linkedid)
            n += len(linkedids)
            await self.pool.execute("UPDATE event_gaps SET reconciled_at = now() WHERE id = $1", r["id"])
        if n:
            log.info("reconciled %d call(s) from queue_log", n)
        return n

    async def close_lost(self, live: frozenset[str]) -> int:
        """After the gaps are closed and the events from before them stored: end the calls Asterisk lost in them
        (reconcile.close_lost_calls; `live` = the uniqueids of a fresh CoreShowChannels). Returns how many calls."""
        if not self.queue_log.exists():  # without queue_log no recorded end can be ruled out
            self.closed_since.clear()
            return 0
        n = 0
        while self.closed_since:
            since = self.closed_since.pop(0)
            for linkedid in await close_lost_calls(self.pool, self.node, live, since):
                self.mark(linkedid)
                n += 1
        return n
