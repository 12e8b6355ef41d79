"""The append-only event store writer: buffer in memory, write in batches, idempotently, survive outages.

Why this shape:
- The single ordered event consumer must never wait on PostgreSQL, so ``submit()`` only appends to an
  in-memory buffer; one background task writes batches.
- The buffer is bounded: when the database is down for long, memory must not grow without limit, and
  losing events silently is never acceptable, so a full buffer raises ``EventBufferFull`` at the
  producer, who can decide (alarm, back-pressure, spill).
- Every row carries a caller-supplied idempotency key, unique per ``(node, event_key)``, and every
  write is ``INSERT ... ON CONFLICT DO NOTHING``.  A retried batch (after a commit whose outcome was
  unknown), a replay of recorded AMI or a reconciliation from Asterisk's own records therefore never
  inserts an event twice.  That is what makes "keep the batch and retry until it commits" safe.
- When the database is unreachable the batch is kept and retried with exponential backoff
  (0.2 s .. 5 s); one warning is logged per outage, and one line when it comes back.
- A batch that the server rejects for its *data* (an event no encoding can store) is split in halves
  until the bad events are isolated; only those are set aside (logged as errors, counted in
  ``stats.rejected`` and kept in ``rejected_events``), the rest is written.

Write method: ``unnest`` (one ``INSERT ... SELECT FROM unnest($1::text[], ...) ON CONFLICT DO
NOTHING`` per batch) is the default.  Measured here (bench/ingest.py, 2 cores, fsync on): at the
default batch of 500 both methods write ~24-26k events/s; for the small batches of normal live load
unnest commits in 1.3 ms median vs 2.2 ms for COPY into a temp table + ``INSERT ... ON CONFLICT``
(one round trip instead of three, no session state); COPY is ~10 % faster only for bulk batches of
2000+, so ``method="copy"`` is kept for bulk importers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import asyncpg.exceptions as pgexc
from asyncpg.exceptions import _base as pgbase

log = logging.getLogger(__name__)

PoolFactory = Callable[[], Awaitable[asyncpg.Pool]]
WriteMethod = Literal["unnest", "copy"]

_COLUMNS = ("node", "event_key", "name", "ts", "received_at", "uniqueid", "linkedid", "queue", "fields")

_INSERT_UNNEST = """
INSERT INTO call_events (node, event_key, name, ts, received_at, uniqueid, linkedid, queue, fields)
SELECT node, event_key, name, ts, received_at, uniqueid, linkedid, queue, fields::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::text[], $7::text[], $8::text[], $9::text[])
     WITH ORDINALITY AS t(node, event_key, name, ts, received_at, uniqueid, linkedid, queue, fields, ord)
ORDER BY ord
ON CONFLICT (node, event_key) DO NOTHING
"""

_TEMP_TABLE = "call_events_in"
_CREATE_TEMP = f"""
CREATE TEMP TABLE IF NOT EXISTS {_TEMP_TABLE} (
    ord int, node text, event_key text, name text, ts timestamptz, received_at timestamptz,
    uniqueid text, linkedid text, queue text, fields jsonb
) ON COMMIT DELETE ROWS
"""
_INSERT_FROM_TEMP = f"""
INSERT INTO call_events (node, event_key, name, ts, received_at, uniqueid, linkedid, queue, fields)
SELECT node, event_key, name, ts, received_at, uniqueid, linkedid, queue, fields
FROM {_TEMP_TABLE} ORDER BY ord
ON CONFLICT (node, event_key) DO NOTHING
"""

# Errors meaning "the database is not reachable right now": keep the batch, back off, retry.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # connection refused / reset, unreachable host
    TimeoutError,  # connect or command timeout (asyncio.TimeoutError is TimeoutError on 3.11)
    pgexc.PostgresConnectionError,  # class 08, incl. TransactionResolutionUnknownError
    pgexc.OperatorInterventionError,  # class 57: admin shutdown, crash, "starting up"
    pgexc.InsufficientResourcesError,  # class 53: too many connections, disk full
    pgbase.InterfaceError,  # "connection is closed", "pool is closing"
    # "cannot switch to state 12; another operation (2) is in progress": asyncpg left a connection in a broken
    # protocol state while PostgreSQL was shutting down (seen in tests/live/test_chaos.py). Not a bug of ours and
    # not the rows' fault: drop the pool and retry like any outage.
    pgbase.InternalClientError,
)
# Errors caused by the rows themselves: isolate and set aside the bad events.
_DATA: tuple[type[BaseException], ...] = (
    pgexc.DataError, pgbase.DataError, UnicodeError, ValueError, TypeError,
)


class EventStoreError(RuntimeError):
    """Base class of the event store's own errors."""


class _ConnectSetupError(EventStoreError):
    """Connecting failed for a reason other than "unreachable" (bad DSN, password, missing db)."""


class EventBufferFull(EventStoreError):
    """The in-memory buffer reached ``max_buffer``: the event was NOT accepted."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as it is stored.

    ``event_key`` is the idempotency key (unique per ``node``): the same real event must always get
    the same key, e.g. derived from the AMI stream position or from its content.  ``ts`` is the
    event's own instant (tz-aware datetime or POSIX seconds, µs precision), ``received_at`` when the
    service got it.  ``fields`` holds every field as received.
    """

    node: str
    event_key: str
    name: str
    ts: datetime | float
    received_at: datetime | float
    uniqueid: str | None
    linkedid: str | None
    queue: str | None
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class WriterStats:
    """A snapshot of the writer's counters."""

    submitted: int
    written: int
    duplicates_skipped: int
    rejected: int
    buffered: int
    batches: int
    outages: int
    last_error: str | None
    refused: int = 0  # events not taken because the buffer was full (EventBufferFull): lost to the store


def _as_datetime(value: datetime | float) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(value, UTC)


def _check_time(value: object, what: str) -> None:
    # Naive datetimes are refused: which zone they meant cannot be known, and a silent offset in
    # stored instants would skew every KPI.
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"StoredEvent.{what} must be timezone-aware")
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"StoredEvent.{what} must be a datetime or POSIX seconds, not {type(value).__name__}")


def _clean(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: replace it (U+FFFD) rather than lose the whole event."""
    if value is not None and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


# One shared encoder: json.dumps() with non-default options builds a new encoder per call (~30 % slower).
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _fields_json(fields: Mapping[str, str]) -> str:
    data = fields if isinstance(fields, dict) else dict(fields)
    text = _encode_json(data)
    if "\\u0000" in text:  # jsonb rejects \u0000 as well
        text = _encode_json({_clean(str(k)): _clean(str(v)) for k, v in data.items()})
    return text


def _row(ev: StoredEvent) -> tuple[Any, ...]:
    return (
        _clean(ev.node), _clean(ev.event_key), _clean(ev.name),
        _as_datetime(ev.ts), _as_datetime(ev.received_at),
        _clean(ev.uniqueid), _clean(ev.linkedid), _clean(ev.queue), _fields_json(ev.fields),
    )


def _inserted_count(status: str) -> int:
    """Rows inserted, from a command status like ``INSERT 0 497``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, IndexError):
        return 0


class EventWriter:
    """Buffers ``StoredEvent``s and writes them to ``call_events`` in batches (see module doc).

    ``source`` is a DSN (the writer makes its own small pool with a short connect timeout) or an
    async factory returning a pool the writer then owns (it is closed on ``stop()`` and replaced
    after an outage).  Use from one event loop; ``submit`` is not thread-safe.
    """

    def __init__(
        self,
        source: str | PoolFactory,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        max_buffer: int = 200_000,
        method: WriteMethod = "unnest",
        connect_timeout: float = 2.0,
        command_timeout: float = 30.0,
        backoff_min: float = 0.2,
        backoff_max: float = 5.0,
        max_rejected_kept: int = 1000,
    ) -> None:
        if batch_size < 1 or max_buffer < batch_size:
            raise ValueError("need 1 <= batch_size <= max_buffer")
        if method not in ("unnest", "copy"):
            raise ValueError(f"unknown write method {method!r}")
        self._source = source
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.method: WriteMethod = method
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        #: Events the database refused for their content (kept for inspection, bounded).
        self.rejected_events: deque[tuple[StoredEvent, str]] = deque(maxlen=max_rejected_kept)

        self._buf: deque[StoredEvent] = deque()
        self._inflight: Sequence[StoredEvent] = ()
        self._pool: asyncpg.Pool | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._submitted = 0
        self._taken = 0  # events moved from the buffer into a batch
        self._done = 0  # events whose batch finished (written, duplicate or rejected)
        self._flush_target = 0
        self._written = 0
        self._duplicates = 0
        self._rejected = 0
        self._batches = 0
        self._outages = 0
        self._refused = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None

    # ------------------------------------------------------------------ producer side
    def submit(self, ev: StoredEvent) -> None:
        """Queue one event for writing; never blocks.

        Raises ``EventBufferFull`` when ``max_buffer`` events are already waiting (the event is not
        taken), and ``TypeError``/``ValueError`` for an event that could never be stored.
        """
        pending = len(self._buf) + len(self._inflight)
        if pending >= self.max_buffer:
            self._refused += 1
            raise EventBufferFull(
                f"event store buffer full: {pending} events not yet written (max_buffer={self.max_buffer}); "
                f"database {'unreachable since ' + self._since() if self._failing_since else 'too slow'}; "
                f"last error: {self._last_error}"
            )
        if not isinstance(ev, StoredEvent):
            raise TypeError(f"expected StoredEvent, got {type(ev).__name__}")
        _check_time(ev.ts, "ts")
        _check_time(ev.received_at, "received_at")
        if not ev.node or not ev.event_key or not ev.name:
            raise ValueError("StoredEvent.node, event_key and name must be non-empty")
        self._buf.append(ev)
        self._submitted += 1
        # Wake the writer for the first event (it sleeps on an empty buffer) and for a full batch
        # (it lingers up to flush_interval for one); not for every event, or batches stay tiny.
        n = len(self._buf)
        if n == 1 or n >= self.batch_size:
            self._wake.set()

    def pending(self) -> list[StoredEvent]:
        """Events submitted but not yet committed (in flight first), e.g. to spill them after stop()."""
        return [*self._inflight, *self._buf]

    @property
    def stats(self) -> WriterStats:
        """Counters: written (new rows), duplicates_skipped (already stored), buffered, outages…"""
        return WriterStats(
            submitted=self._submitted,
            written=self._written,
            duplicates_skipped=self._duplicates,
            rejected=self._rejected,
            buffered=len(self._buf) + len(self._inflight),
            batches=self._batches,
            outages=self._outages,
            last_error=self._last_error,
            refused=self._refused,
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the background writer (does not need the database to be up)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="event-store-writer")

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every event submitted before this call is committed (or set aside as rejected).

        Raises ``TimeoutError`` after ``timeout`` seconds (events stay buffered and keep being retried).
        """
        target = self._submitted
        if self._done >= target:
            return
        if self._task is None or self._task.done():
            raise EventStoreError("EventWriter is not running: call start() first")
        task = self._task
        self._flush_target = max(self._flush_target, target)
        self._wake.set()
        async with asyncio.timeout(timeout):
            while self._done < target:
                if task.done():
                    raise EventStoreError("EventWriter stopped before the flush completed")
                progress = asyncio.ensure_future(self._progress.wait())
                try:
                    await asyncio.wait({progress, task}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    progress.cancel()

    async def stop(self, timeout: float = 10.0) -> int:
        """Flush (up to ``timeout``), stop the writer and close the pool.

        Returns how many events remain unwritten (0 normally); they are logged as an error and stay
        available from ``pending()``.
        """
        if self._task is not None and not self._task.done():
            try:
                await self.flush(timeout)
            except (TimeoutError, EventStoreError):
                pass
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        await self._close_pool()
        left = len(self._buf) + len(self._inflight)
        if left:
            log.error("event store writer stopped with %d events NOT written (last error: %s); "
                      "they are available from EventWriter.pending()", left, self._last_error)
        return left

    # ------------------------------------------------------------------ writer task
    async def _run(self) -> None:
        while True:
            try:
                await self._wait_for_batch()
                n = min(self.batch_size, len(self._buf))
                batch = [self._buf.popleft() for _ in range(n)]
                self._inflight = batch
                self._taken += n
                await self._write_until_done(batch)
                self._inflight = ()
                self._done += n
                self._batches += 1
                self._progress.set()
                self._progress = asyncio.Event()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not silently end the writer: log, pause, go on
                log.exception("event store writer: unexpected error (batch kept, retrying)")
                if self._inflight:
                    self._buf.extendleft(reversed(self._inflight))
                    self._taken -= len(self._inflight)
                    self._inflight = ()
                await asyncio.sleep(self.backoff_max)

    async def _wait_for_batch(self) -> None:
        """Return when there is a full batch, a flush waiting, or events older than flush_interval."""
        while not self._buf:
            self._wake.clear()
            await self._wake.wait()
        if len(self._buf) < self.batch_size and self._taken >= self._flush_target:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()

    async def _write_until_done(self, batch: list[StoredEvent]) -> None:
        """Write ``batch``; retry through outages; isolate rows the server refuses for their data."""
        delay = self.backoff_min
        while True:
            try:
                inserted = await self._write(batch)
            except _DATA as e:  # checked first: asyncpg's client-side DataError is an InterfaceError
                if len(batch) == 1:
                    self._reject(batch[0], e)
                    return
                mid = len(batch) // 2
                await self._write_until_done(batch[:mid])
                await self._write_until_done(batch[mid:])
                return
            except _TRANSIENT as e:
                self._note_failure(e, transient=True)
                await self._drop_pool()
            except _ConnectSetupError as e:
                self._note_failure(e, transient=False)
                await self._drop_pool()
            except pgexc.PostgresError as e:
                # e.g. table missing (not migrated) or permissions: not the rows' fault, so keep them
                # and retry; an operator fixes it and the backlog is written.
                self._note_failure(e, transient=False)
            else:
                self._note_success()
                self._written += inserted
                self._duplicates += len(batch) - inserted
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _write(self, batch: Sequence[StoredEvent]) -> int:
        rows = [_row(ev) for ev in batch]
        conn = await self._acquire()
        try:
            if self.method == "unnest":
                cols = list(zip(*rows, strict=True))
                status = await conn.execute(_INSERT_UNNEST, *cols, timeout=self.command_timeout)
            else:
                status = await self._write_copy(conn, rows)
        finally:
            await self._release(conn)
        return _inserted_count(status)

    async def _acquire(self) -> Any:
        """A pooled connection; failures other than "unreachable" become ``_ConnectSetupError``.

        Why wrap: a bad DSN or password can surface as ValueError or a PostgresError at connect time,
        and must not be mistaken for a problem with the rows (which would set them aside).
        """
        try:
            pool = await self._get_pool()
            return await pool.acquire(timeout=self.connect_timeout)
        except _TRANSIENT:
            raise
        except Exception as e:
            raise _ConnectSetupError(f"cannot connect: {type(e).__name__}: {e}") from e

    async def _release(self, conn: Any) -> None:
        pool = self._pool
        if pool is None:  # dropped meanwhile
            conn.terminate()
            return
        with contextlib.suppress(Exception):
            await pool.release(conn, timeout=self.connect_timeout)

    async def _write_copy(self, conn: Any, rows: list[tuple[Any, ...]]) -> str:
        """COPY into a per-connection temp table, then one INSERT ... ON CONFLICT DO NOTHING."""
        records = [(i, *r) for i, r in enumerate(rows)]
        for attempt in (0, 1):
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        _TEMP_TABLE, records=records, columns=["ord", *_COLUMNS],
                        timeout=self.command_timeout,
                    )
                    return str(await conn.execute(_INSERT_FROM_TEMP, timeout=self.command_timeout))
            except pgexc.UndefinedTableError:
                if attempt:
                    raise
                await conn.execute(_CREATE_TEMP)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ pool
    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            if isinstance(self._source, str):
                # min_size=0: creating the pool never connects, so it works while the DB is down.
                self._pool = await asyncpg.create_pool(
                    self._source, min_size=0, max_size=2, timeout=self.connect_timeout,
                    command_timeout=self.command_timeout, reset=_keep_session,
                )
            else:
                self._pool = await self._source()
        return self._pool

    async def _drop_pool(self) -> None:
        """Forget the pool after a connection failure: its connections may all be dead."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except Exception:
                pool.terminate()

    # ------------------------------------------------------------------ bookkeeping
    def _since(self) -> str:
        return f"{time.monotonic() - (self._failing_since or time.monotonic()):.1f}s ago"

    def _note_failure(self, e: BaseException, *, transient: bool) -> None:
        self._last_error = f"{type(e).__name__}: {e}"
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self._outages += 1
            pending = len(self._buf) + len(self._inflight)
            if transient:
                log.warning("event store: database unreachable (%s); keeping %d events in memory and "
                            "retrying every %.1f..%.1fs", self._last_error, pending,
                            self.backoff_min, self.backoff_max)
            else:
                log.error("event store: database refuses writes (%s); keeping %d events in memory and "
                          "retrying", self._last_error, pending)
        else:
            log.debug("event store: still failing: %s", self._last_error)

    def _note_success(self) -> None:
        if self._failing_since is not None:
            log.warning("event store: database writable again after %.1fs; %d events still buffered",
                        time.monotonic() - self._failing_since, len(self._buf))
            self._failing_since = None

    def _reject(self, ev: StoredEvent, e: BaseException) -> None:
        self._rejected += 1
        self._last_error = f"{type(e).__name__}: {e}"
        self.rejected_events.append((ev, self._last_error))
        log.error("event store: event %s/%s (%s) refused by the database and set aside: %s",
                  ev.node, ev.event_key, ev.name, self._last_error)


async def _keep_session(conn: Any) -> None:
    """Pool reset hook that does nothing.

    asyncpg's default reset costs a round trip per release (per batch); the writer leaves no session
    state behind except its COPY temp table, which it wants to keep.
    """


# ---------------------------------------------------------------------- read helpers
async def count_events(pool: asyncpg.Pool | asyncpg.Connection, linkedid: str | None = None) -> int:
    """Number of stored events, optionally of one call (``linkedid``)."""
    if linkedid is None:
        return int(await pool.fetchval("SELECT count(*) FROM call_events"))
    return int(await pool.fetchval("SELECT count(*) FROM call_events WHERE linkedid = $1", linkedid))


async def events_for_linkedid(pool: asyncpg.Pool | asyncpg.Connection, linkedid: str) -> list[asyncpg.Record]:
    """All stored events of one call, in event order (``ts``, then arrival order)."""
    return list(await pool.fetch(
        "SELECT id, node, event_key, name, ts, received_at, uniqueid, linkedid, queue, fields "
        "FROM call_events WHERE linkedid = $1 ORDER BY ts, id",
        linkedid,
    ))
