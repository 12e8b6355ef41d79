"""Agents' queue membership: stored in PostgreSQL, applied to Asterisk over AMI.

Why stored: app_queue forgets dynamic members when Asterisk restarts, so the database holds what agents
asked for and `reapply()` replays it after every AMI (re)connect. The AMI action is sent first and the row is
written only once Asterisk accepted it, so the stored state never claims a membership Asterisk refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from service.config import NAME_RE
from telephony.ami import AmiActionError, AmiClient, AmiConnectionLost, AmiNotConnected, AmiTimeout

log = logging.getLogger("acd.membership")


class MembershipError(ValueError):
    """A login/logout request named something that does not exist or is not allowed."""


class PbxUnavailable(RuntimeError):
    """Asterisk did not answer (disconnected or timed out): nothing was changed."""


@dataclass(frozen=True)
class Member:
    queue: str
    interface: str
    member_name: str
    penalty: int


def interface_for(phone_user: str) -> str:
    """The dial string app_queue rings for a phone; built from a validated name only."""
    if not NAME_RE.match(phone_user):
        raise MembershipError(f"phone {phone_user!r}: invalid name")
    return f"PJSIP/{phone_user}"


class QueueMembership:
    def __init__(self, ami: AmiClient, pool: asyncpg.Pool, node: str, queues: set[str]) -> None:
        self.ami = ami
        self.pool = pool
        self.node = node
        self.queues = queues

    async def _refresh_queues(self, queue: str) -> None:
        """Queues are configured over the API: a queue unknown here may have been created since start."""
        if queue not in self.queues and await self.pool.fetchval("SELECT 1 FROM queues WHERE name = $1", queue):
            self.queues.add(queue)

    async def queues_of(self, phone_user: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT queue FROM queue_members WHERE node = $1 AND interface = $2 ORDER BY queue",
            self.node, interface_for(phone_user))
        return [r["queue"] for r in rows]

    def _check_queue(self, queue: str) -> None:
        if queue not in self.queues:
            raise MembershipError(f"queue {queue!r} is not configured")

    async def _action(self, name: str, fields: dict[str, str]) -> None:
        try:
            await self.ami.action(name, fields, as_list=False)
        except (AmiNotConnected, AmiConnectionLost, AmiTimeout) as exc:
            raise PbxUnavailable(f"{name}: the PBX did not answer ({exc.__class__.__name__})") from exc

    async def _queue_add(self, m: Member) -> None:
        try:
            await self._action(
                "QueueAdd",
                {
                    "Queue": m.queue, "Interface": m.interface, "MemberName": m.member_name,
                    "StateInterface": m.interface, "Penalty": str(m.penalty), "Paused": "false",
                },
            )
        except AmiActionError as exc:
            # Asterisk answers "Unable to add interface: Already there": the goal is reached.
            if "already there" not in str(exc).lower():
                raise

    async def login(self, phone_user: str, queue: str, penalty: int = 0, member_name: str | None = None) -> Member:
        """Add the phone to the queue (as `member_name`: the agent's name, or the phone's by default)."""
        await self._refresh_queues(queue)
        self._check_queue(queue)
        m = Member(queue, interface_for(phone_user), member_name or phone_user, penalty)
        await self._queue_add(m)
        await self.pool.execute(
            """INSERT INTO queue_members (node, queue, interface, member_name, penalty)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (node, queue, interface) DO UPDATE SET penalty = EXCLUDED.penalty""",
            self.node, m.queue, m.interface, m.member_name, m.penalty,
        )
        log.info("%s logged into queue %s", phone_user, queue)
        return m

    async def logout(self, phone_user: str, queue: str) -> None:
        await self._refresh_queues(queue)
        self._check_queue(queue)
        iface = interface_for(phone_user)
        try:
            await self._action("QueueRemove", {"Queue": queue, "Interface": iface})
        except AmiActionError as exc:
            if "not there" not in str(exc).lower():
                raise
        await self.pool.execute(
            "DELETE FROM queue_members WHERE node = $1 AND queue = $2 AND interface = $3", self.node, queue, iface
        )
        log.info("%s logged out of queue %s", phone_user, queue)

    async def members(self) -> list[Member]:
        rows = await self.pool.fetch(
            "SELECT queue, interface, member_name, penalty FROM queue_members WHERE node = $1 ORDER BY queue, since",
            self.node,
        )
        return [Member(r["queue"], r["interface"], r["member_name"], r["penalty"]) for r in rows]

    async def reapply(self) -> int:
        """Re-add every stored member to Asterisk (after a reconnect or a PBX restart). Returns the count."""
        applied = 0
        self.queues |= {r["name"] for r in await self.pool.fetch("SELECT name FROM queues")}
        for m in await self.members():
            if m.queue not in self.queues:
                log.warning("stored member %s of unknown queue %s skipped", m.member_name, m.queue)
                continue
            await self._queue_add(m)
            applied += 1
        log.info("re-applied %d queue membership(s)", applied)
        return applied
