"""The service process: AMI → typed events → (live state, event store); FastAGI IVR; REST API.

One ordered consumer reads the AMI client's bounded queue, so events are applied and stored in the order
Asterisk sent them. Every part keeps running when another fails: a DB outage buffers events (bounded) in the
writer, an AMI outage reconnects and resyncs, a bad AGI client only ends its own session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp import web

from acd.agent_service import AgentService
from acd.callback import CallbackService
from acd.config_store import ConfigStore
from acd.membership import QueueMembership
from acd.pbx_sync import reload_queues
from acd.routing import InboundRouter
from acd.screenpop import ScreenPopNotifier
from acd.seed import seed_from_config
from acd.sip_guard import PgBanStore, SipGuard, make_blocker
from acd.supervision import SupervisionService
from ivr.executor import FlowExecutor, Step
from ivr.flow_model import Flow
from ivr.flow_store import FlowStore
from ivr.inbound import InboundIvr, QueueTarget
from ivr.prompts import PromptStore
from ivr.validate import ValidationContext
from recording.service import RecordingService
from reporting.event_store import EventBufferFull, EventWriter
from reporting.gaps import EventGaps
from reporting.ingest import SYNTHETIC, to_stored
from reporting.live import LiveState
from reporting.migrate import migrate
from reporting.projection import ProjectionService
from reporting.realtime import RealtimeBoard
from service.config import Config, load_config
from telephony.ami import AmiClient, AmiError
from telephony.ami.events import AgentCalled, Hangup, QueueEntry, QueueMember
from telephony.fastagi import FastAgiServer
from web.api_security import K_SIP_GUARD
from web.app import create_app
from web.feed import FeedHub
from web.sessions import SessionStore

log = logging.getLogger("service")
#: After a reconnect, when the calls Asterisk lost are looked for (the writer has stored the backlog by then).
LOST_CALLS_DELAY_S = 3.0

DB_WAIT_S = 60.0


async def connect_pool(dsn: str, wait_s: float = DB_WAIT_S) -> asyncpg.Pool:
    """Create the pool, waiting for PostgreSQL to accept connections (it may still be starting)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await asyncpg.create_pool(dsn, min_size=1, max_size=5, timeout=5, command_timeout=10)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL not reachable after {wait_s:.0f} s: {exc}") from exc
            log.warning("waiting for PostgreSQL: %s", exc)
            await asyncio.sleep(1.0)


class Service:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.live = LiveState()
        self.pool: asyncpg.Pool | None = None
        self.writer: EventWriter | None = None
        self.membership: QueueMembership | None = None
        self.ami = AmiClient(
            cfg.ami.host, cfg.ami.port, cfg.ami.user, cfg.ami.secret, node=cfg.node,
            action_timeout=cfg.ami.action_timeout, heartbeat_interval=cfg.ami.heartbeat_interval,
            heartbeat_timeout=cfg.ami.heartbeat_timeout, on_ready=self.resync,
        )
        self.router: InboundRouter | None = None
        self.flow_store: FlowStore | None = None
        self.agi = FastAgiServer(cfg.agi.host, cfg.agi.port, InboundIvr(
            self._queue_target, flows=self, executor=FlowExecutor(self._record_step, on_message=self._store_message,
                                                    pci=self._ivr_pci)))
        self.feed = FeedHub()
        self._sl_thresholds: dict[str, float] = {}
        self.board = RealtimeBoard(sl_threshold=self._sl_thresholds.get, publish=self.feed.publish)
        self.agents: AgentService | None = None
        self.callbacks: CallbackService | None = None
        self.recordings: RecordingService | None = None
        self.supervision: SupervisionService | None = None
        self.projection: ProjectionService | None = None
        self.gaps: EventGaps | None = None
        self.sip_guard: SipGuard | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._gap_opening: asyncio.Task[None] | None = None  # the INSERT of the gap the last disconnect opened
        self._session_purge: asyncio.Task[None] | None = None
        self.screenpop = ScreenPopNotifier(cfg.screenpop.url, cfg.screenpop.secret, publish=self.feed.publish)
        self.runner: web.AppRunner | None = None
        self._consumer: asyncio.Task[None] | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        cfg = self.cfg
        self.pool = await connect_pool(cfg.database.dsn)
        applied = await migrate(self.pool)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        await seed_from_config(self.pool, cfg)
        buffer = cfg.database.buffer_events
        self.writer = EventWriter(cfg.database.dsn, max_buffer=buffer, batch_size=min(500, buffer))
        await self.writer.start()
        self.router = InboundRouter(self.pool)
        self.flow_store = FlowStore(self.pool)
        await self.router.warm()
        self.membership = QueueMembership(self.ami, self.pool, cfg.node, {q.name for q in cfg.queues})
        self.projection = ProjectionService(self.pool, cfg.node, flush=self._flush_events)
        await self.projection.start()
        logs = cfg.runtime_path.resolve() / "asterisk" / "log"
        self.gaps = EventGaps(self.pool, cfg.node, logs / "queue_log", cel_file=logs / "cel-custom" / "Master.csv",
                              mark=self.projection.mark)
        await self.gaps.open_since_last_event()
        self.agents = AgentService(self.ami, self.pool, cfg.node, self.membership, publish=self._publish)
        await self.agents.start()
        self.callbacks = CallbackService(self.ami, self.pool, cfg.node)
        await self.callbacks.start()
        rec = cfg.recording
        self.supervision = SupervisionService(
            self.ami, self.pool, cfg.node, self.agents.book, is_paused=self._pci_paused,
            channel_up=lambda uid: uid in self.live.channels, ring_s=rec.supervision_ring_s)
        self.recordings = RecordingService(
            self.ami, self.pool, cfg.node, cfg.runtime_path.resolve() / "asterisk" / "spool" / "monitor",
            pci_max_pause_s=rec.pci_max_pause_s, purge_interval_s=rec.purge_interval_s,
            on_pci_pause=self.supervision.on_pci_pause)
        await self.recordings.start()
        self.sessions = SessionStore(self.pool, idle=timedelta(hours=cfg.http.session_idle_h))
        await self.sessions.ensure_bootstrap_admin(cfg.http.admin_password)
        self._session_purge = asyncio.create_task(self._purge_sessions(), name="web-session-purge")
        if cfg.sip_guard.enabled:
            self.sip_guard = self._make_sip_guard()
            await self.sip_guard.start()
        await self.agi.start()
        self._consumer = asyncio.create_task(self._consume(), name="ami-consumer")
        await self.ami.start()
        app = create_app(admin_token=cfg.http.admin_token, health=self.health, membership=self.membership,
                         live_state=self.live, pool=self.pool,
                         config_store=ConfigStore(self.pool, self._config_changed), feed=self.feed, agents=self.agents,
                         flows=(self.flow_store, self._flow_context),
                         prompts=PromptStore(cfg.runtime_path.resolve() / "asterisk" / "spool" / "prompts"),
                         recordings=self.recordings, supervision=self.supervision,
                         agents_play_own=rec.agents_play_own, node=cfg.node, board=self.board,
                         sessions=self.sessions, secure_cookies=cfg.http.secure_cookies,
                         sip=(cfg.sip.public_host, cfg.sip.port), wss_port=cfg.sip.wss_port)
        if self.sip_guard is not None:
            app[K_SIP_GUARD] = self.sip_guard
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, cfg.http.host, cfg.http.port).start()
        log.info("service up: http://%s:%d  FastAGI %s:%d  AMI %s:%d", cfg.http.host, cfg.http.port,
                 cfg.agi.host, cfg.agi.port, cfg.ami.host, cfg.ami.port)

    def _make_sip_guard(self) -> SipGuard:
        """Password guessing on the SIP port(s) noticed in AMI security events and blocked (acd/sip_guard.py)."""
        g, cfg = self.cfg.sip_guard, self.cfg
        ports = [cfg.sip.port, *([wss] if isinstance(wss := getattr(cfg.sip, "wss_port", None), int) else [])]
        assert self.pool is not None
        return SipGuard(make_blocker(g.blocker, ports), PgBanStore(self.pool, cfg.node), threshold=g.threshold,
                        window_s=g.window_s, ban_s=g.ban_s, exempt=g.exempt_networks())

    async def _purge_sessions(self) -> None:
        """Expired web sessions and old sign-in failures go hourly (a lookup refuses them anyway)."""
        while True:
            try:
                await self.sessions.purge_expired()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("web session purge failed (retried in an hour): %s", exc)
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
        await self.ami.stop()
        if self._session_purge is not None:
            self._session_purge.cancel()
        if self._consumer:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        await self.agi.stop()
        if self.sip_guard is not None:
            await self.sip_guard.stop()
        if self.agents:
            await self.agents.stop()
        if self.callbacks:
            await self.callbacks.stop()
        await self.screenpop.close()
        if self.writer:
            await self.writer.stop()
        if self.pool:
            await self.pool.close()

    async def _consume(self) -> None:
        """The one ordered consumer of AMI events."""
        assert self.writer is not None
        while True:
            ev = await self.ami.events.get()
            try:
                if ev.name == "AmiDisconnected" and self.gaps is not None:
                    self._gap_opening = self._spawn(self._gap_opened())
                if self.sip_guard is not None:
                    self.sip_guard.on_event(ev)
                self.live.apply(ev)
                self.board.apply(ev)
                if self.agents is not None:
                    self.agents.on_event(ev)
                if self.callbacks is not None:
                    self.callbacks.on_event(ev)
                if self.recordings is not None:
                    self.recordings.on_event(ev)
                if self.supervision is not None:
                    self.supervision.on_event(ev)
                if isinstance(ev, Hangup) and self.projection is not None:
                    self.projection.mark(ev.linkedid)  # the call's facts are projected again
                if isinstance(ev, AgentCalled):
                    self.screenpop.on_agent_called(ev)
                if ev.name not in SYNTHETIC:
                    self.writer.submit(to_stored(ev, self.cfg.node))
            except EventBufferFull as exc:
                # Counted by the writer (`event_writer.refused` in /healthz); logged once per outage, not per
                # event: a burst would otherwise write thousands of lines a second.
                if self.writer.stats.refused == 1 or self.writer.stats.refused % 10_000 == 0:
                    log.error("%s; %d event(s) not stored so far (first: %s)", exc, self.writer.stats.refused,
                              ev.name)
            except Exception:
                log.exception("failed to process event %s", ev.name)

    async def resync(self) -> None:
        """After every AMI (re)connect: queues, membership and pauses re-applied, live state rebuilt."""
        await reload_queues(self.ami)  # first: a queue must exist in app_queue to be joined
        if self.membership is not None:
            await self.membership.reapply()
        if self.agents is not None:
            await self.agents.reapply()
        channels = await self.ami.list_events("CoreShowChannels")
        status = await self.ami.list_events("QueueStatus")
        members = [ev for ev in status if isinstance(ev, QueueMember)]
        self.live.reset_from(channels, members)
        await self._reset_board([ev for ev in status if isinstance(ev, QueueEntry)])
        if self.recordings is not None:
            await self.recordings.reconcile({c.uniqueid: c.channel or "" for c in self.live.channels.values()})
        if self.callbacks is not None:
            await self.callbacks.resume()
        if self.agents is not None:
            for ev in members:  # ends rings/calls Asterisk no longer has (events lost while disconnected)
                self.agents.on_event(ev)
            # That snapshot leaves alone a ring or call younger than the book's grace (the snapshot may predate
            # newer events). After a reconnect no other snapshot comes, so an agent whose call began just before
            # the connection was lost (Asterisk crashed under it) would stay on_call forever: look once more
            # after the grace (tests/live/test_chaos.py).
            self._spawn(self._members_again(self.agents.book.reconcile_grace_s + 0.5))
        self.live.ami_connected = True
        if self.gaps is not None:
            if self._gap_opening is not None:  # the gap's row is written before it is closed (CI saw the reverse)
                await asyncio.shield(self._gap_opening)
                self._gap_opening = None
            try:
                await self.gaps.close()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("reconciliation failed (retried at the next reconnect): %s", exc)
            if self.gaps.closed_since:
                self._spawn(self._lost_calls_later(LOST_CALLS_DELAY_S))
        log.info("resynced: %d channel(s), %d queue member(s)", len(self.live.channels), len(self.live.members))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` beside the consumer, holding a reference until it is done (a bare task may be collected)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _lost_calls_later(self, delay: float) -> None:
        """A moment after the resync (the events received before the gap are stored by then): calls that were up
        when the connection dropped, that Asterisk no longer has and whose end nothing recorded, are closed at the
        gap's start (Asterisk died under them; reporting/reconcile.py close_lost_calls)."""
        await asyncio.sleep(delay)
        if self.gaps is None or self.writer is None or not self.ami.connected:
            return
        try:
            await self.writer.flush(10)
            channels = await self.ami.list_events("CoreShowChannels")
            live = frozenset(ev.uniqueid for ev in channels if ev.uniqueid)
            if not self.ami.connected:
                return  # a snapshot from a connection that dropped again proves nothing
            await self.gaps.close_lost(live)
        except (AmiError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("closing calls lost in the gap failed (retried at the next reconnect): %s", exc)

    async def _members_again(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.agents is None or not self.ami.connected:
            return  # the next reconnect's resync looks again
        try:
            status = await self.ami.list_events("QueueStatus")
        except AmiError as exc:
            log.warning("second QueueStatus snapshot after the resync failed: %s", exc)
            return
        for ev in status:
            if isinstance(ev, QueueMember):
                self.agents.on_event(ev)

    # ------------------------------------------------------------------ IVR flows (ivr.inbound.FlowBackend)
    async def flow_for(self, did: str) -> str | None:
        return await self.router.flow_for(did) if self.router is not None else None

    async def published(self, name: str) -> tuple[Flow, int]:
        assert self.flow_store is not None
        v = await self.flow_store.version(name)
        return Flow.model_validate(v.document), v.version

    async def queue_target(self, queue: str, caller: str, priority: int) -> QueueTarget | None:
        if self.router is None:
            return None
        t = await self.router.queue_target(queue, caller, priority)
        return None if t is None else QueueTarget(t.queue, t.priority, t.max_wait_s, t.overflow_queue, t.max_penalty)

    async def flow_version(self, name: str, version: int) -> Flow:
        assert self.flow_store is not None
        return Flow.model_validate((await self.flow_store.version(name, version)).document)

    async def store_survey(self, linkedid: str, uniqueid: str, flow: str, version: int, score: int) -> None:
        assert self.pool is not None
        await self.pool.execute(
            """INSERT INTO call_surveys (node, linkedid, uniqueid, flow, version, score) VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (node, uniqueid) DO UPDATE SET score = EXCLUDED.score, at = now()""",
            self.cfg.node, linkedid, uniqueid, flow, version, score)
        if self.projection is not None:
            self.projection.mark(linkedid)

    async def _store_message(self, flow: str, version: int, uniqueid: str, linkedid: str | None, file: str) -> None:
        """A caller's recorded message: the file is in var/asterisk/spool/messages on this host."""
        assert self.pool is not None
        await self.pool.execute(
            """INSERT INTO ivr_messages (node, uniqueid, linkedid, flow, version, file) VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT DO NOTHING""", self.cfg.node, uniqueid, linkedid, flow, version, file)

    async def _record_step(self, step: Step) -> None:
        if self.flow_store is not None:
            await self.flow_store.record_step(self.cfg.node, step)

    async def _flow_context(self) -> ValidationContext:
        """What a flow may refer to: the configured queues, the allowed lookup hosts."""
        assert self.pool is not None
        queues = frozenset(r["name"] for r in await self.pool.fetch("SELECT name FROM queues"))
        return ValidationContext(allowed_hosts=frozenset(self.cfg.ivr.http_allowed_hosts), known_queues=queues)

    async def _config_changed(self, resource: str) -> None:
        """A configuration change over the API: make the PBX and the ACD see it."""
        if resource == "queues":
            await reload_queues(self.ami)
            if self.pool is not None:
                self._sl_thresholds.update({r["name"]: float(r["sl_threshold_s"]) for r in await self.pool.fetch(
                    "SELECT name, sl_threshold_s FROM queues")})
            if self.recordings is not None:
                await self.recordings.reload_policies()
        if resource in ("agents", "queues") and self.agents is not None:
            await self.agents.reload_config()

    async def _queue_target(self, did: str, caller: str) -> QueueTarget | None:
        """The IVR's routing question, answered from the configuration in PostgreSQL."""
        if self.router is None:
            return None
        t = await self.router.target_for(did, caller)
        if t is None:
            return None
        return QueueTarget(t.queue, t.priority, t.max_wait_s, t.overflow_queue, t.max_penalty)

    async def _reset_board(self, waiting: list[QueueEntry]) -> None:
        """The wallboard rebuilt: today's facts from PostgreSQL, the callers waiting now from Asterisk."""
        assert self.pool is not None
        self._sl_thresholds.clear()
        self._sl_thresholds.update({r["name"]: float(r["sl_threshold_s"])
                                    for r in await self.pool.fetch("SELECT name, sl_threshold_s FROM queues")})
        facts = await self.pool.fetch(
            """SELECT uniqueid, queue, entered_at, outcome, wait_s FROM queue_calls
               WHERE node = $1 AND entered_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'""",
            self.cfg.node)
        self.board.reset(facts, waiting, time.time())

    async def _gap_opened(self) -> None:
        try:
            if self.gaps is not None:
                await self.gaps.open()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("could not record the AMI gap: %s", exc)

    def _publish(self, message: dict[str, Any]) -> None:
        """The ACD's announcements: to the live feed (an agent's state with the caller's number and the instant
        of the event that caused it), and a call's facts re-projected when its agent's state or disposition
        changes (after-call work ending completes the facts)."""
        if message.get("type") == "agent_state":
            info = self.live.channels.get(str(message.get("uniqueid") or ""))
            message = {**message, "caller": info.caller if info else None, "event_ts": message.get("at")}
        self.feed.publish(message)
        if self.projection is not None and message.get("linkedid"):
            self.projection.mark(str(message["linkedid"]))

    async def _flush_events(self) -> None:
        if self.writer is not None:
            await self.writer.flush(2.0)

    async def _ivr_pci(self, uniqueid: str, secure: bool) -> None:
        """An IVR `secure` collect (card number): pause any recording of that channel around it."""
        rec = self.recordings.for_channel(uniqueid) if self.recordings is not None else None
        if rec is None or self.recordings is None:
            return
        if secure and rec.paused_since is None:
            await self.recordings.pause(uniqueid, "ivr")
        elif not secure and rec.paused_since is not None:
            await self.recordings.resume(uniqueid, "ivr")

    def _pci_paused(self, linkedid: str) -> bool:
        return self.recordings is not None and self.recordings.is_paused(linkedid)

    def _agi_listening(self) -> bool:
        return any(sock.fileno() != -1 for sock in self.agi.sockets)

    async def health(self) -> dict[str, Any]:
        db_ok = False
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.fetchval("SELECT 1"), 2.0)
                db_ok = True
            except Exception:
                db_ok = False
        writer_stats = dataclasses.asdict(self.writer.stats) if self.writer else {}
        return {
            "node": self.cfg.node,
            "checks": {"ami": self.ami.connected, "fastagi": self._agi_listening(), "db": db_ok},
            "uptime_s": round(time.time() - self.started_at, 1),
            "ami": dict(self.ami.stats),
            "fastagi": dataclasses.asdict(self.agi.stats),
            "sip_guard": self.sip_guard.status() if self.sip_guard is not None else {"enabled": False},
            "event_writer": {k: v for k, v in writer_stats.items() if isinstance(v, int | float | str | None)},
        }


async def run(cfg: Config) -> None:
    service = Service(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await service.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ccpbx", description="Run the contact-center service.")
    parser.add_argument("--config", help="configuration file (default: $CCPBX_CONFIG or var/ccpbx.toml)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(load_config(args.config)))


if __name__ == "__main__":
    main()
