"""Queue callback that keeps the caller's place: "press 1, hang up, be called back when your turn comes".

How it works with an unpatched Asterisk (details and measurements in docs/acd.md, "Callback"):

1. A queue with ``callback_enabled`` has app_queue's ``context = queue-callback`` (migration 0007). A waiting
   caller who presses 1 leaves the queue (``QueueCallerLeave`` with the place they had) and runs
   ``[queue-callback]``, which sends ``UserEvent(CallbackRequest, Queue, Number, ...)`` and hangs up.
2. This service stores the request (table ``callbacks``; one row per caller channel, one open callback per
   number and queue: a replayed event or a second key press creates nothing) and originates a placeholder:
   ``Local/cb@callback-place/n``. Its half ``;2`` (uniqueid ``<node>-cb<id>-b``) waits in the queue at the
   caller's place (Queue()'s position argument) with the caller's number as caller ID, so the agent sees it.
3. When an agent answers the placeholder, app_queue answers ``;2``, so ``;1`` (``<node>-cb<id>-a``) is answered
   and runs ``[callback-dial]``: ``Dial(PJSIP/<number>@<trunk>)``. The agent is on the line first, then the
   customer. ``AgentConnect`` / ``DialBegin`` / ``DialEnd`` / ``Hangup`` of those two uniqueids move the row.

The caller's place: the service mirrors every queue's order from ``QueueCallerJoin``/``QueueCallerLeave``
(``Position`` is exact in both) and remembers who was ahead of the caller when they pressed 1. The placeholder is
inserted right behind the last of those still waiting (those served meanwhile no longer count), which is the
position the caller would have now. Without that knowledge (service restarted) the position they left at is used.

Never twice: the placeholder is originated only by the transition ``pending -> queued`` of the row (an UPDATE
that one worker wins) and an ``Originate`` is never re-sent (AmiClient). When the PBX is not connected the row
stays ``pending`` and :meth:`resume` (called after every AMI (re)connect) originates it. A placeholder that
vanished while the service was not connected is marked ``failed`` ("outcome unknown"): the customer may have been
called already, so it is never retried.

Like acd/agent_service.py, :meth:`on_event` (the ordered AMI consumer) never waits: effects on PostgreSQL and
Asterisk run in order in one worker; an effect that failed because PostgreSQL was unreachable is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from telephony.ami import AmiActionError, AmiClient, AmiConnectionLost, AmiEvent, AmiNotConnected, AmiTimeout
from telephony.ami.events import (
    AgentConnect,
    CallbackRequest,
    CoreShowChannel,
    DialBegin,
    DialEnd,
    Hangup,
    OriginateResponse,
    QueueCallerJoin,
    QueueCallerLeave,
    QueueEntry,
    UserEvent,
)

log = logging.getLogger("acd.callback")

NUMBER_RE = re.compile(r"^\+?[0-9]{2,20}$")
QUEUE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DID_RE = re.compile(r"^[0-9]{1,20}$")
UNIQUEID_RE = re.compile(r"^[A-Za-z0-9._-]{1,150}$")

OPEN_STATES = ("pending", "queued", "agent_answered", "dialing")
#: Longest a placeholder waits in the queue (Originate's Timeout: the time until ;1 is answered).
MAX_WAIT_S = 4 * 3600
#: An effect that failed because PostgreSQL was unreachable is tried again this often, this many times.
RETRY_DELAY_S = 2.0
MAX_RETRIES = 150
#: What is remembered of callers who left a queue, to match the CallbackRequest that follows the leave.
LEFT_KEEP = 2000
LEFT_MAX_AGE_S = 600.0

TRANSIENT_DB = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                asyncpg.CannotConnectNowError)
Effect = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class _Left:
    """A caller who just left a queue: where they were."""

    queue: str
    position: int | None
    ahead: frozenset[str] | None  # uniqueids of the callers ahead of them then (None: order not known)
    entered_at: float | None  # their QueueCallerJoin
    at: float


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


class CallbackService:
    def __init__(self, ami: AmiClient, pool: asyncpg.Pool, node: str, *, max_wait_s: int = MAX_WAIT_S,
                 retry_delay_s: float = RETRY_DELAY_S, clock: Callable[[], float] = time.time) -> None:
        self.ami = ami
        self.pool = pool
        self.node = node
        self.max_wait_s = max_wait_s
        self.retry_delay_s = retry_delay_s
        self.clock = clock
        #: prefix of the placeholders' uniqueids (the node name, kept to characters safe in a uniqueid)
        self.prefix = re.sub(r"[^A-Za-z0-9._-]", "_", node)[:64] or "node"
        self._leg_re = re.compile(rf"^{re.escape(self.prefix)}-cb(?P<id>[0-9]{{1,18}})-(?P<leg>[ab])$")
        # the mirror of app_queue's order: queue -> waiting callers' uniqueids, first = position 1
        self._queues: dict[str, list[str]] = {}
        self._where: dict[str, str] = {}  # uniqueid -> queue
        self._joined_at: dict[str, float] = {}
        self._left: OrderedDict[str, _Left] = OrderedDict()
        self._pending_ahead: dict[int, frozenset[str] | None] = {}  # who was ahead, for callbacks not originated
        self._epoch = 0  # AMI connections seen by resume(); a placeholder is settled only by a later connection
        self._originated_in: dict[int, int] = {}
        self._effects: asyncio.Queue[tuple[Effect, int, asyncio.Future[None] | None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.stats: dict[str, int] = {"requests": 0, "stored": 0, "duplicates": 0, "refused": 0, "originated": 0,
                                      "originate_unsent": 0, "originate_unknown": 0, "db_retries": 0}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._worker(), name="callback-effects")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def legs(self, callback_id: int) -> tuple[str, str]:
        """Uniqueids of the placeholder's halves: (;1 that calls the customer, ;2 that waits in the queue)."""
        return f"{self.prefix}-cb{callback_id}-a", f"{self.prefix}-cb{callback_id}-b"

    def _leg(self, uniqueid: str | None) -> tuple[int, str] | None:
        m = self._leg_re.match(uniqueid or "")
        return (int(m.group("id")), m.group("leg")) if m else None

    # ------------------------------------------------------------------ events (ordered consumer, never waits)
    def on_event(self, ev: AmiEvent) -> None:
        if isinstance(ev, QueueCallerJoin):
            self._join(ev)
        elif isinstance(ev, QueueCallerLeave):
            self._leave(ev)
        elif isinstance(ev, UserEvent):
            req = ev.callback_request()
            if req is not None:
                self.stats["requests"] += 1
                uid = ev.uniqueid or ""
                self._queue(self._request_effect(uid, ev.linkedid or "", req, self._left.get(uid), ev.timestamp))
        elif isinstance(ev, AgentConnect):
            leg = self._leg(ev.uniqueid)
            if leg and leg[1] == "b":
                self._queue(self._move_effect(leg[0], "agent_answered", ("queued",), agent=ev.member_name or ""))
        elif isinstance(ev, DialBegin):
            leg = self._leg(ev.uniqueid)
            if leg and leg[1] == "a":
                self._queue(self._move_effect(leg[0], "dialing", ("queued", "agent_answered")))
        elif isinstance(ev, DialEnd):
            leg = self._leg(ev.uniqueid)
            if leg and leg[1] == "a":
                status = ev.dial_status or "UNKNOWN"
                if status == "ANSWER":
                    self._queue(self._move_effect(leg[0], "completed", OPEN_STATES[1:], dial_status=status))
                else:
                    self._queue(self._move_effect(leg[0], "failed", OPEN_STATES[1:], dial_status=status,
                                                  detail=f"the customer's phone did not answer ({status})"))
        elif isinstance(ev, Hangup):
            uid = ev.uniqueid or ""
            self._forget(uid)
            leg = self._leg(uid)
            if leg and leg[1] == "a":  # ;1 outlives ;2 and ends after DialEnd: the callback is over
                self._queue(self._move_effect(leg[0], "failed", OPEN_STATES[1:],
                                              detail=f"ended before the customer answered (cause {ev.cause})"))
        elif isinstance(ev, OriginateResponse) and (ev.response or "").lower() == "failure":
            leg = self._leg(ev.uniqueid)
            if leg:
                self._queue(self._move_effect(leg[0], "failed", ("queued",),
                                              detail=f"originate failed (reason {ev.reason})"))

    def _join(self, ev: QueueCallerJoin) -> None:
        uid, queue = ev.uniqueid, ev.queue
        if not uid or not queue:
            return
        self._forget(uid)
        order = self._queues.setdefault(queue, [])
        pos = ev.position if ev.position is not None else len(order) + 1
        order.insert(min(max(pos - 1, 0), len(order)), uid)
        self._where[uid] = queue
        self._joined_at[uid] = ev.timestamp

    def _leave(self, ev: QueueCallerLeave) -> None:
        uid, queue = ev.uniqueid, ev.queue
        if not uid or not queue:
            return
        order = self._queues.get(queue)
        ahead: frozenset[str] | None = None
        if order is not None and uid in order:
            idx = order.index(uid)
            if ev.position is not None and ev.position - 1 != idx:
                log.warning("queue %s: %s left at position %s, mirrored at %d", queue, uid, ev.position, idx + 1)
            ahead = frozenset(order[:idx])
        entered_at = self._joined_at.get(uid)
        self._forget(uid)
        now = ev.timestamp
        self._left[uid] = _Left(queue, ev.position, ahead, entered_at, now)
        self._left.move_to_end(uid)
        while self._left and (len(self._left) > LEFT_KEEP
                              or now - next(iter(self._left.values())).at > LEFT_MAX_AGE_S):
            self._left.popitem(last=False)

    def _forget(self, uid: str) -> None:
        queue = self._where.pop(uid, None)
        self._joined_at.pop(uid, None)
        if queue is not None:
            order = self._queues.get(queue, [])
            if uid in order:
                order.remove(uid)

    def position_now(self, queue: str, ahead: Iterable[str] | None, fallback: int | None) -> int | None:
        """Where a placeholder joins: right behind the last caller still waiting who was ahead of the caller.

        ``ahead`` None (order unknown): ``fallback`` (the position the caller left at). No one left: 1 (app_queue
        still puts callers of a higher priority first).
        """
        order = self._queues.get(queue)
        if ahead is None or order is None:
            return fallback
        ahead = set(ahead)
        last = max((i for i, uid in enumerate(order) if uid in ahead), default=-1)
        return last + 2

    def waiting(self, queue: str) -> list[str]:
        """The mirrored order of a queue (uniqueids, position 1 first)."""
        return list(self._queues.get(queue, []))

    # ------------------------------------------------------------------ resync (after every AMI (re)connect)
    async def resume(self) -> None:
        """Rebuild the queue mirror, settle placeholders lost meanwhile and originate pending callbacks.

        Never raises: what cannot be done now is done after the next reconnect.
        """
        self._epoch += 1
        epoch = self._epoch
        try:
            entries = [e for e in await self.ami.list_events("QueueStatus") if isinstance(e, QueueEntry)]
            channels = {e.uniqueid for e in await self.ami.list_events("CoreShowChannels")
                        if isinstance(e, CoreShowChannel) and e.uniqueid}
        except (AmiActionError, AmiNotConnected, AmiConnectionLost, AmiTimeout) as exc:
            log.warning("callbacks not resumed (%s): after the next reconnect", exc)
            return
        self._rebuild(entries)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(self._resume_effect(channels, epoch), done)
        await done

    def _rebuild(self, entries: list[QueueEntry]) -> None:
        now = self.clock()
        self._queues.clear()
        self._where.clear()
        known = dict(self._joined_at)
        self._joined_at.clear()
        for e in sorted(entries, key=lambda e: (e.queue or "", e.position or 0)):
            if not e.uniqueid or not e.queue:
                continue
            self._queues.setdefault(e.queue, []).append(e.uniqueid)
            self._where[e.uniqueid] = e.queue
            self._joined_at[e.uniqueid] = known.get(e.uniqueid, now - (e.wait_s or 0))

    def _resume_effect(self, channels: set[str], epoch: int) -> Effect:
        async def run() -> None:
            rows = await self.pool.fetch(
                "SELECT id, status FROM callbacks WHERE node = $1 AND status = ANY($2::text[]) "
                "ORDER BY requested_at, id", self.node, list(OPEN_STATES))
            for r in rows:
                # originated on this connection (maybe after the channel list was taken): its events will come
                if r["status"] == "pending" or self._originated_in.get(r["id"], 0) >= epoch:
                    continue
                if not set(self.legs(r["id"])) & channels:
                    await self._move(r["id"], "failed", OPEN_STATES[1:],
                                     detail=f"placeholder gone while not connected ({r['status']}): outcome unknown")
            for r in rows:
                if r["status"] == "pending":
                    await self._originate(r["id"], self._pending_ahead.pop(r["id"], None))
        return run

    # ------------------------------------------------------------------ effects
    async def settle(self) -> None:
        """Wait until every effect queued so far ran once (tests, orderly shutdown)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def nothing() -> None:
            return None

        self._queue(nothing, done)
        await done

    def _queue(self, effect: Effect, done: asyncio.Future[None] | None = None) -> None:
        self._effects.put_nowait((effect, 0, done))

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            effect, attempt, done = await self._effects.get()
            try:
                await effect()
            except TRANSIENT_DB as exc:
                if attempt < MAX_RETRIES:
                    self.stats["db_retries"] += 1
                    log.warning("callback effect failed (%s); retrying in %.0f s", exc, self.retry_delay_s)
                    loop.call_later(self.retry_delay_s, self._effects.put_nowait, (effect, attempt + 1, None))
                else:
                    log.error("callback effect given up after %d attempts: %s", attempt + 1, exc)
            except Exception:
                log.exception("callback effect failed")
            finally:
                if done is not None and not done.done():
                    done.set_result(None)

    def _request_effect(self, uid: str, linkedid: str, req: CallbackRequest, left: _Left | None,
                        at: float) -> Effect:
        async def run() -> None:
            queue, number = req.queue or "", req.number or ""
            if not UNIQUEID_RE.match(uid) or not QUEUE_RE.match(queue) or not NUMBER_RE.match(number):
                self.stats["refused"] += 1
                log.warning("callback request refused: caller %r queue %r number %r", uid[:40], queue[:70],
                            number[:30])
                return
            if left is not None and left.queue != queue:
                log.warning("callback request for %s names queue %s but the caller left %s", uid, queue, left.queue)
                left_here = None
            else:
                left_here = left
            # A caller who joined while the queue offered callbacks keeps the key after it was switched off
            # (app_queue keeps the option per waiting caller): honoured when the caller was seen leaving it.
            enabled = await self.pool.fetchval("SELECT callback_enabled FROM queues WHERE name = $1", queue)
            if enabled is None or (not enabled and left_here is None):
                self.stats["refused"] += 1
                log.warning("callback request refused: queue %s does not offer callbacks", queue)
                return
            did = req.did if req.did and DID_RE.match(req.did) else None
            prio = req.queue_prio if req.queue_prio is not None and 0 <= req.queue_prio <= 999 else 0
            position = left_here.position if left_here and left_here.position else req.queue_position
            position = position if position is not None and 1 <= position <= 99999 else None
            cb_id = await self.pool.fetchval(
                """INSERT INTO callbacks (node, queue, number, did, priority, caller_uniqueid, linkedid, position,
                                          entered_at, requested_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                   ON CONFLICT DO NOTHING RETURNING id""",
                self.node, queue, number, did, prio, uid, linkedid[:150], position,
                _ts(left_here.entered_at if left_here else None), _ts(at))
            if cb_id is None:
                self.stats["duplicates"] += 1
                log.info("callback request of %s for %s in %s: already requested, nothing more", uid, number, queue)
                return
            self.stats["stored"] += 1
            log.info("callback %d stored: %s in %s, left at position %s", cb_id, number, queue, position)
            await self._originate(cb_id, left_here.ahead if left_here else None)
        return run

    async def _originate(self, cb_id: int, ahead: frozenset[str] | None) -> None:
        """pending -> queued and one Originate; a row another run already claimed is left alone."""
        if not self.ami.connected:
            log.info("callback %d stays pending: PBX not connected (originated after the reconnect)", cb_id)
            self._pending_ahead[cb_id] = ahead
            return
        dial_leg, queue_leg = self.legs(cb_id)
        row = await self.pool.fetchrow(
            "UPDATE callbacks SET status = 'queued', placeholder_uniqueid = $3, updated_at = now() "
            "WHERE id = $1 AND node = $2 AND status = 'pending' "
            "RETURNING queue, number, did, priority, position", cb_id, self.node, queue_leg)
        if row is None:
            return
        self._originated_in[cb_id] = self._epoch
        position = self.position_now(row["queue"], ahead, row["position"])
        fields: dict[str, str | list[str]] = {
            "Channel": "Local/cb@callback-place/n",
            "Context": "callback-dial", "Exten": "cb", "Priority": "1",
            "Timeout": str(self.max_wait_s * 1000),
            "CallerID": f'"Callback" <{row["number"]}>',
            "ChannelId": dial_leg, "OtherChannelId": queue_leg,
            "Variable": [f"CB_ID={cb_id}", f"CB_QUEUE={row['queue']}", f"CB_NUMBER={row['number']}",
                         f"CB_DID={row['did'] or ''}", f"CB_PRIO={row['priority']}",
                         f"CB_POSITION={position or ''}"],
        }
        try:
            await self.ami.originate(fields)
        except AmiNotConnected as exc:  # not sent: back to pending, originated after the reconnect
            self.stats["originate_unsent"] += 1
            self._pending_ahead[cb_id] = ahead
            log.warning("callback %d: originate not sent (%s); pending until the reconnect", cb_id, exc)
            await self.pool.execute("UPDATE callbacks SET status = 'pending', placeholder_uniqueid = NULL, "
                                    "updated_at = now() WHERE id = $1 AND status = 'queued'", cb_id)
            return
        except (AmiConnectionLost, AmiTimeout) as exc:  # sent, outcome unknown: never sent again
            self.stats["originate_unknown"] += 1
            log.error("callback %d: originate outcome unknown (%s); settled at the reconnect", cb_id, exc)
            return
        except AmiActionError as exc:
            await self._move(cb_id, "failed", ("queued",), detail=f"originate refused: {exc}"[:300])
            return
        self.stats["originated"] += 1
        log.info("callback %d: placeholder %s waits in %s at position %s", cb_id, queue_leg, row["queue"], position)

    def _move_effect(self, cb_id: int, status: str, allowed_from: tuple[str, ...], **values: Any) -> Effect:
        async def run() -> None:
            await self._move(cb_id, status, allowed_from, **values)
        return run

    async def _move(self, cb_id: int, status: str, allowed_from: tuple[str, ...], *, agent: str | None = None,
                    dial_status: str | None = None, detail: str | None = None) -> None:
        """One forward transition: from a state in ``allowed_from`` only, so a replay or a late event cannot
        move a callback back."""
        done = await self.pool.fetchval(
            """UPDATE callbacks SET status = $3, agent = COALESCE($5, agent), dial_status = COALESCE($6, dial_status),
                      detail = COALESCE($7, detail), updated_at = now()
               WHERE id = $1 AND node = $2 AND status = ANY($4::text[]) RETURNING id""",
            cb_id, self.node, status, list(allowed_from), agent, dial_status, detail)
        if done is not None:
            log.info("callback %d: %s%s", cb_id, status, f" ({detail})" if detail else "")
