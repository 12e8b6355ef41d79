"""Agents at work: commands and AMI events → the state machine → effects on Asterisk, the store and the feed.

Why a separate effects worker: the ordered AMI consumer must never wait on Asterisk or PostgreSQL. Every
effect (QueueAdd/QueueRemove/QueuePause, recording transitions) is queued to one worker that runs them in
order; commands from the API wait for their own effects so the caller learns whether Asterisk accepted them.

How the states reach app_queue (no patched Asterisk):
- logged in = a dynamic member of every queue whose required skill the agent has, penalty = 5 - level
  (level 5, the expert, gets penalty 0 and is tried first; queue rules widen the accepted penalty over time);
- paused (any reason) = member paused in all queues, reason `ccpbx:<reason>` (the state machine ignores
  those echoes);
- after-call work: when an agent connects to a call of a queue with wrap-up time, the member is paused
  (`ccpbx:acw`) right away, so no call can be offered between hang-up and ACW; it is unpaused when ACW ends;
- ring no answer: the state machine moves the agent to paused(`missed`), and the member is paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import asyncpg

from acd.agent_state import (
    ECHO_PREFIX,
    AgentBook,
    AgentStatus,
    Disposition,
    IllegalCommand,
    State,
    Transition,
)
from acd.call_control import CallControl, CallControlFailed, InvalidTarget, Transfer
from acd.membership import MembershipError, PbxUnavailable, QueueMembership, interface_for
from acd.state_store import AgentStateStore
from telephony.ami import AmiActionError, AmiClient, AmiConnectionLost, AmiEvent, AmiNotConnected, AmiTimeout
from telephony.ami.events import AgentConnect

log = logging.getLogger("acd.agents")

Effect = Callable[[], Awaitable[None]]
MAX_PENALTY_LEVEL = 5


class AgentNotFound(LookupError):
    pass


class AgentService:
    def __init__(self, ami: AmiClient, pool: asyncpg.Pool, node: str, membership: QueueMembership, *,
                 publish: Callable[[dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ami = ami
        self.pool = pool
        self.membership = membership
        self.store = AgentStateStore(pool, node)
        self.book = AgentBook()
        self.publish = publish
        self.clock = clock
        self.phones: dict[str, str] = {}  # agent -> phone
        self.teams: dict[str, str | None] = {}
        self._effects: asyncio.Queue[tuple[Effect, asyncio.Future[None] | None]] = asyncio.Queue()
        self._unrecorded: list[Transition] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._tick_wake = asyncio.Event()
        #: hold / unhold / blind transfer of an agent's call (acd/call_control.py), on the channels ``book`` knows
        self.calls = CallControl(ami, self.book, is_phone=self._is_phone)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.reload_config()
        for agent, status in (await self.store.sessions()).items():
            self.book.restore(agent, status)
        self._tasks = [asyncio.create_task(self._worker(), name="agent-effects"),
                       asyncio.create_task(self._ticker(), name="agent-acw-timer")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def reload_config(self) -> None:
        """Agents' phones and teams, queues' wrap-up times: read again so API changes apply."""
        for r in await self.pool.fetch("SELECT name, phone, team FROM agents"):
            self.teams[r["name"]] = r["team"]
            if r["phone"]:
                old = self.phones.get(r["name"])
                if old and old != r["phone"]:
                    self.book.unregister(interface_for(old), r["name"])
                self.phones[r["name"]] = r["phone"]
                self.book.register(r["name"], interface_for(r["phone"]), member_name=r["name"])
        self.book.wrapup_s = {r["name"]: float(r["wrapup_s"])
                              for r in await self.pool.fetch("SELECT name, wrapup_s FROM queues")}

    # ------------------------------------------------------------------ commands (API)
    def _phone(self, agent: str) -> str:
        phone = self.phones.get(agent)
        if phone is None:
            raise AgentNotFound(f"agent {agent!r} does not exist or has no phone")
        return phone

    async def _queues_for(self, agent: str) -> list[tuple[str, int]]:
        """(queue, penalty) for every queue the agent serves: by required skill, penalty = 5 - level."""
        rows = await self.pool.fetch(
            """SELECT q.name, s.level, q.required_skill FROM queues q
               LEFT JOIN agent_skills s ON s.skill = q.required_skill AND s.agent = $1
               WHERE q.required_skill IS NULL OR s.level IS NOT NULL ORDER BY q.name""", agent)
        return [(r["name"], 0 if r["required_skill"] is None else MAX_PENALTY_LEVEL - r["level"]) for r in rows]

    async def login(self, agent: str) -> AgentStatus:
        await self.reload_config()
        phone = self._phone(agent)
        targets = await self._queues_for(agent)
        if not targets:
            raise MembershipError(f"agent {agent!r} has none of the skills any queue requires")
        for queue, penalty in targets:
            await self.membership.login(phone, queue, penalty, member_name=agent)
        trs = self.book.login(agent, self.clock())
        await self._apply(trs, wait=True)
        return self.book.state(agent)

    async def logout(self, agent: str) -> AgentStatus:
        phone = self._phone(agent)
        trs = self.book.logout(agent, self.clock())  # raises IllegalCommand while ringing / on a call
        for queue in await self.membership.queues_of(phone):
            await self.membership.logout(phone, queue)
        await self._apply(trs, wait=True)
        return self.book.state(agent)

    async def pause(self, agent: str, reason: str) -> AgentStatus:
        self._phone(agent)
        if not await self.pool.fetchval("SELECT 1 FROM pause_reasons WHERE code = $1", reason):
            raise MembershipError(f"reason: unknown pause reason {reason!r}")
        await self._apply(self.book.pause(agent, reason, self.clock()), wait=True)
        return self.book.state(agent)

    async def ready(self, agent: str) -> AgentStatus:
        self._phone(agent)
        await self._apply(self.book.ready(agent, self.clock()), wait=True)
        return self.book.state(agent)

    async def force(self, agent: str, state: str, reason: str | None, by: str) -> AgentStatus:
        phone = self._phone(agent)
        if state == State.PAUSED and not await self.pool.fetchval(
                "SELECT 1 FROM pause_reasons WHERE code = $1", reason or ""):
            raise MembershipError(f"reason: unknown pause reason {reason!r}")
        if state == State.AVAILABLE and self.book.state(agent).state == State.LOGGED_OUT:
            for queue, penalty in await self._queues_for(agent):
                await self.membership.login(phone, queue, penalty, member_name=agent)
        trs = self.book.force(agent, state, reason, self.clock(), by)
        if state == State.LOGGED_OUT:
            for queue in await self.membership.queues_of(phone):
                await self.membership.logout(phone, queue)
        await self._apply(trs, wait=True)
        return self.book.state(agent)

    async def disposition(self, agent: str, code: str) -> Disposition:
        d = self.book.set_disposition(agent, code, self.clock())
        await self.store.record_disposition(d)
        if self.publish is not None:  # reports re-read the call's facts on this
            self.publish({"type": "disposition", "agent": agent, "linkedid": d.linkedid, "queue": d.queue,
                          "code": d.code, "at": d.at})
        return d

    def status(self, agent: str) -> AgentStatus:
        self._phone(agent)
        return self.book.state(agent)

    async def hold(self, agent: str) -> AgentStatus:
        """Put the caller on hold (server-side, the call stays in the queue's bridge): state ``on_hold``."""
        self._phone(agent)
        await self.calls.hold(agent)
        return self.book.state(agent)

    async def unhold(self, agent: str) -> AgentStatus:
        """Take the caller off a hold made by :meth:`hold`: state ``on_call`` again."""
        self._phone(agent)
        await self.calls.unhold(agent)
        return self.book.state(agent)

    async def transfer(self, agent: str, to: str) -> Transfer:
        """Blind-transfer the caller to an extension (a phone named by the digits) or a number."""
        self._phone(agent)
        return await self.calls.transfer(agent, to)

    async def _is_phone(self, name: str) -> bool:
        return bool(await self.pool.fetchval("SELECT 1 FROM phones WHERE name = $1", name))

    # ------------------------------------------------------------------ events (ordered consumer)
    def on_event(self, ev: AmiEvent) -> None:
        """Fold one AMI event; effects are queued, never awaited here."""
        trs = self.book.on_event(ev)
        if isinstance(ev, AgentConnect) and any(t.to_state == State.ON_CALL for t in trs):
            agent = trs[-1].agent
            if self.book.wrapup_s.get(ev.queue or "", 0) > 0:
                self._queue_effect(self._pause_effect(agent, True, "acw"))
        if trs:
            self._queue_apply(trs)
        self.calls.on_event(ev)  # after the state machine: a command awaiting Hold/Unhold sees the new state

    # ------------------------------------------------------------------ effects
    def _pause_effect(self, agent: str, paused: bool, reason: str) -> Effect:
        async def run() -> None:
            phone = self.phones.get(agent)
            if phone is None:
                return
            try:
                await self.ami.action("QueuePause", {"Interface": interface_for(phone),
                                                     "Paused": "true" if paused else "false",
                                                     "Reason": f"{ECHO_PREFIX}{reason}"}, as_list=False)
            except AmiActionError as exc:
                log.warning("QueuePause %s (%s) refused: %s", agent, reason, exc)
            except (AmiNotConnected, AmiConnectionLost, AmiTimeout) as exc:
                # re-applied from the stored state after the reconnect
                log.warning("QueuePause %s (%s) not sent: %s", agent, reason, exc)
        return run

    def _effects_for(self, t: Transition) -> list[Effect]:
        if t.to_state == State.PAUSED:
            return [self._pause_effect(t.agent, True, t.reason or "paused")]
        if t.to_state == State.ACW:
            return [self._pause_effect(t.agent, True, "acw")]
        if t.to_state == State.AVAILABLE and t.from_state in (State.PAUSED, State.ACW):
            return [self._pause_effect(t.agent, False, "ready")]
        return []

    def _queue_effect(self, effect: Effect, done: asyncio.Future[None] | None = None) -> None:
        self._effects.put_nowait((effect, done))

    def _queue_apply(self, trs: list[Transition], done: asyncio.Future[None] | None = None) -> None:
        for t in trs:
            self._announce(t)
            for effect in self._effects_for(t):
                self._queue_effect(effect)
        self._queue_effect(self._record_effect(trs), done)
        self._tick_wake.set()

    async def _apply(self, trs: list[Transition], *, wait: bool) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue_apply(trs, done)
        if wait:
            await done

    def _record_effect(self, trs: list[Transition]) -> Effect:
        async def run() -> None:
            batch = [*self._unrecorded, *trs]
            try:
                await self.store.record(batch)
                self._unrecorded = []
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._unrecorded = batch[-100_000:]
                log.error("agent transitions not stored yet (%d kept for retry): %s", len(batch), exc)
        return run

    def _announce(self, t: Transition) -> None:
        if self.publish is not None:
            msg = {"type": "agent_state", **asdict(t)}
            msg["from_state"], msg["to_state"] = str(t.from_state), str(t.to_state)
            self.publish(msg)

    async def _worker(self) -> None:
        while True:
            effect, done = await self._effects.get()
            try:
                await effect()
            except Exception:
                log.exception("agent effect failed")
            finally:
                if done is not None and not done.done():
                    done.set_result(None)

    async def _ticker(self) -> None:
        """Ends after-call work at its deadline (the state machine gives the exact instant)."""
        while True:
            deadline = self.book.next_deadline()
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - self.clock()))
            self._tick_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick_wake.wait(), wait)
            trs = self.book.tick(self.clock())
            if trs:
                self._queue_apply(trs)

    # ------------------------------------------------------------------ after a (re)connect
    async def reapply(self) -> None:
        """Membership is re-added by QueueMembership.reapply; here pauses and ACW are re-applied."""
        for agent, status in self.book.snapshot().items():
            if status.state in (State.PAUSED, State.ACW):
                reason = "acw" if status.state == State.ACW else (status.reason or "paused")
                self._queue_effect(self._pause_effect(agent, True, reason))


__all__ = ["AgentNotFound", "AgentService", "CallControlFailed", "IllegalCommand", "InvalidTarget", "MembershipError",
           "PbxUnavailable", "Transfer"]
