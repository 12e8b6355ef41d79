"""Phones and queues added to PostgreSQL work in the running Asterisk, and keep working through a database outage.

Phones are read per request (realtime views) with a last-known-good memory cache behind the database; queues and
their penalty rules are read at load and on AMI QueueReload only (static realtime), so an outage cannot drop them.
Every row here is inserted while Asterisk runs, under a random name, and removed afterwards. Both SIP parties of
the queue call are phones that exist only in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from acd.seed import seed_from_config
from sim.baresip import BaresipError, BaresipPhone
from telephony.ami import AmiActionError, AmiEvent
from tests.live.support import EventRecorder, eventually
from tests.live_stack import AGENT_TONE, CALLER_TONE, LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]


def new_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass
class Rows:
    """Rows a test inserted, deleted again at teardown (queues after phones: nothing references them)."""

    db: asyncpg.Connection
    phones: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)

    async def phone(self, kind: str = "agent") -> tuple[str, str]:
        name, password = new_name("rt"), secrets.token_urlsafe(18)  # 24 characters
        await self.db.execute("INSERT INTO phones (name, password, kind) VALUES ($1, $2, $3)", name, password, kind)
        self.phones.append(name)
        return name, password

    async def queue(self, **columns: object) -> str:
        name = new_name("rtq")
        cols = {"name": name, **columns}
        placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        await self.db.execute(f"INSERT INTO queues ({', '.join(cols)}) VALUES ({placeholders})", *cols.values())
        self.queues.append(name)
        return name


@pytest_asyncio.fixture
async def rows(db: asyncpg.Connection) -> AsyncIterator[Rows]:
    r = Rows(db)
    yield r
    await db.execute("DELETE FROM phones WHERE name = ANY($1::text[])", r.phones)
    await db.execute("DELETE FROM queues WHERE name = ANY($1::text[])", r.queues)


def db_phone(live_stack: LiveStack, user: str, password: str, tone_hz: float) -> BaresipPhone:
    tag = secrets.token_hex(3)
    return BaresipPhone(f"{user}-{tag}", workdir=live_stack.runtime / "phones" / f"{user}-{tag}", sip_user=user,
                        sip_password=password, registrar=live_stack.sip_registrar, tone_hz=tone_hz)


async def queue_params(ami: EventRecorder, queue: str) -> AmiEvent | None:
    items = await ami.client.list_events("QueueStatus", {"Queue": queue})
    return next((e for e in items if e.name == "QueueParams" and e.queue == queue), None)


async def queue_members(ami: EventRecorder, queue: str) -> list[str]:
    items = await ami.client.list_events("QueueStatus", {"Queue": queue})
    return [str(e.fields.get("Name")) for e in items if e.name == "QueueMember"]


#: What the service sends (acd/pbx_sync.py) after start-up, every AMI reconnect and every queue change.
QUEUE_RELOAD = {"Members": "no", "Rules": "yes", "Parameters": "yes"}


async def queue_reload(ami: EventRecorder) -> None:
    """app_queue re-reads queues.conf and queuerules.conf from PostgreSQL (no manager privilege needed)."""
    reply = await ami.client.action("QueueReload", QUEUE_RELOAD, as_list=False)
    assert not isinstance(reply, list) and "success" in str(reply.get("Response", "")).lower(), reply


async def sql(live_stack: LiveStack, query: str, *args: Any) -> None:
    """One statement on a connection of its own: tests that stop PostgreSQL cannot keep the `db` fixture's."""
    conn = await asyncpg.connect(live_stack.cfg.database.dsn)
    try:
        await conn.execute(query, *args)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database_down(live_stack: LiveStack) -> AsyncIterator[None]:
    """PostgreSQL stopped for the block; afterwards started again and the service healthy again."""
    await asyncio.to_thread(live_stack.stack.pg.stop)
    try:
        yield
    finally:
        await asyncio.to_thread(live_stack.stack.pg.start)

    async def db_back() -> bool:
        h = await asyncio.to_thread(live_stack.stack.health)
        return bool(h and h["checks"]["db"])

    await eventually(db_back, timeout=20, interval=0.2, what="the service sees PostgreSQL again")


async def test_phone_inserted_while_asterisk_runs_registers_and_a_wrong_password_is_refused(
    live_stack: LiveStack, phones: list[BaresipPhone], rows: Rows,
) -> None:
    user, password = await rows.phone()

    wrong = db_phone(live_stack, user, secrets.token_urlsafe(18), AGENT_TONE)
    phones.append(wrong)
    await wrong.start()
    with pytest.raises(BaresipError, match=r"401|403"):
        await wrong.wait_registered(10)

    phone = db_phone(live_stack, user, password, AGENT_TONE)
    phones.append(phone)
    t0 = time.monotonic()
    await phone.start()
    ok = await phone.wait_registered(10)
    # Read from the database on its first REGISTER (the memory cache is only asked when the database is not):
    # no refresh period to wait for. Measured ~35 ms including baresip's start.
    assert ok.type == "REGISTER_OK" and time.monotonic() - t0 < 3

    # The endpoint comes from the ps_* views with the settings of the agents' template.
    show = live_stack.stack.asterisk.cli(f"pjsip show endpoint {user}").stdout
    settings = dict(re.findall(r"^ (\w+)\s+: (.*?)\s*$", show, re.M))
    assert {k: settings.get(k) for k in ("context", "allow", "direct_media", "dtmf_mode")} == {
        "context": "agents", "allow": "(ulaw)", "direct_media": "false", "dtmf_mode": "rfc4733",
    }
    assert settings.get("callerid", "").startswith(f'"{user}" <')  # Asterisk drops '-' from the number part

    # And its endpoint becomes available (first qualify), which is what app_queue checks before ringing it.
    async def available() -> str | None:
        out = live_stack.stack.asterisk.cli(f"pjsip show endpoint {user}").stdout
        return out if "Not in use" in out else None

    await eventually(available, timeout=5, what=f"endpoint {user} available")


async def test_queue_and_phones_inserted_while_asterisk_runs_take_a_call_with_the_queue_rule(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone], rows: Rows,
) -> None:
    # Escalation: level 5 only at first (penalty 0), level >= 4 (penalty <= 1) from 2 s of waiting.
    steps = [{"after_s": 0, "min_level": 5}, {"after_s": 2, "min_level": 4}]
    queue = await rows.queue(strategy="leastrecent", ring_timeout_s=20, max_len=7, escalation=json.dumps(steps))
    agent_user, agent_password = await rows.phone()
    caller_user, caller_password = await rows.phone()

    # Queues and rules are read at load and on QueueReload (the service's AMI user may send it: no privilege).
    await queue_reload(ami)
    params = await queue_params(ami, queue)
    assert params is not None, f"QueueStatus does not know queue {queue}"
    assert params.fields["Strategy"] == "leastrecent" and params.fields["Max"] == "7"
    rules = live_stack.stack.asterisk.cli(f"queue show rules {queue}").stdout
    assert f"Rule: {queue}" in rules, rules
    assert "After 0 seconds, adjust QUEUE_MAX_PENALTY to 0" in rules
    assert "After 2 seconds, adjust QUEUE_MAX_PENALTY to 1" in rules

    agent = db_phone(live_stack, agent_user, agent_password, AGENT_TONE)
    caller = db_phone(live_stack, caller_user, caller_password, CALLER_TONE)
    phones.extend([agent, caller])
    await asyncio.gather(agent.start(), caller.start())
    await asyncio.gather(agent.wait_registered(10), caller.wait_registered(10))

    interface = f"PJSIP/{agent_user}"
    await ami.client.action("QueueAdd", {"Queue": queue, "Interface": interface, "MemberName": agent_user,
                                         "StateInterface": interface, "Penalty": "1"}, as_list=False)
    try:
        async def member_free() -> AmiEvent | None:
            items = await ami.client.list_events("QueueStatus", {"Queue": queue})
            return next((e for e in items if e.name == "QueueMember" and e.fields.get("Status") == "1"), None)

        await eventually(member_free, timeout=5, what=f"{agent_user} free in {queue}")

        # The caller phone is rung, answers, and is put into the queue with the rule's starting penalty.
        mark = ami.mark()
        await ami.client.originate({
            "Channel": f"PJSIP/{caller_user}", "Application": "Queue", "Data": f"{queue},r",
            "Variable": "QUEUE_MAX_PENALTY=0", "CallerID": "rt <5550100>", "Timeout": "15000",
        })
        joined = await ami.wait_for("QueueCallerJoin", lambda e: e.queue == queue, since=mark)
        connect = await ami.wait_for("AgentConnect", lambda e: e.fields.get("MemberName") == agent_user,
                                     since=mark, timeout=20)
        await agent.wait_event("CALL_ESTABLISHED", 10)
        waited = connect.timestamp - joined.timestamp
        assert 1.5 <= waited < 10, f"the penalty-1 member was connected after {waited:.2f} s"
        await caller.hangup()
        await ami.wait_for("AgentComplete", lambda e: e.fields.get("MemberName") == agent_user, since=mark)
    finally:
        await ami.client.action("QueueRemove", {"Queue": queue, "Interface": interface}, as_list=False)


async def test_queue_additions_changes_and_deletion_apply_on_queue_reload(
    ami: EventRecorder, rows: Rows, db: asyncpg.Connection,
) -> None:
    queue = await rows.queue(strategy="ringall", ring_timeout_s=15)
    assert await queue_params(ami, queue) is None  # not read per use any more: only on (re)load
    await queue_reload(ami)
    params = await queue_params(ami, queue)
    assert params is not None and params.fields["Strategy"] == "ringall"

    await db.execute("UPDATE queues SET strategy = 'fewestcalls', max_len = 3 WHERE name = $1", queue)
    await queue_reload(ami)
    params = await queue_params(ami, queue)
    assert params is not None and params.fields["Strategy"] == "fewestcalls" and params.fields["Max"] == "3"

    await db.execute("DELETE FROM queues WHERE name = $1", queue)
    await queue_reload(ami)
    assert await queue_params(ami, queue) is None


async def test_queue_its_members_and_its_rule_survive_reloads_and_a_database_outage(
    live_stack: LiveStack, ami: EventRecorder,
) -> None:
    queue = new_name("rtq")
    steps = [{"after_s": 0, "min_level": 5}, {"after_s": 3, "min_level": 3}]
    await sql(live_stack, "INSERT INTO queues (name, strategy, max_len, escalation) VALUES ($1, 'linear', 4, $2)",
              queue, json.dumps(steps))
    interface = "PJSIP/agent3"
    try:
        await queue_reload(ami)
        await ami.client.action("QueueAdd", {"Queue": queue, "Interface": interface, "MemberName": "agent3",
                                             "StateInterface": interface, "Penalty": "2"}, as_list=False)
        # A dynamic member survives a reload of the parameters (what the service sends after every change).
        await queue_reload(ami)
        assert await queue_members(ami, queue) == ["agent3"]

        def rules() -> str:
            return live_stack.stack.asterisk.cli(f"queue show rules {queue}").stdout

        rules_before = rules()
        assert "After 3 seconds, adjust QUEUE_MAX_PENALTY to 2" in rules_before, rules_before

        async with database_down(live_stack):
            # The reload fails as a whole (queues.conf cannot be read) and changes nothing.
            with pytest.raises(AmiActionError, match="Error encountered while reloading"):
                await ami.client.action("QueueReload", QUEUE_RELOAD, as_list=False)
            params = await queue_params(ami, queue)
            assert params is not None and params.fields["Strategy"] == "linear" and params.fields["Max"] == "4"
            assert await queue_members(ami, queue) == ["agent3"]
            assert rules() == rules_before  # the realtime rules family emptied them here

        await queue_reload(ami)
        assert await queue_members(ami, queue) == ["agent3"]
        assert rules() == rules_before
    finally:
        with contextlib.suppress(AmiActionError):
            await ami.client.action("QueueRemove", {"Queue": queue, "Interface": interface}, as_list=False)
        await sql(live_stack, "DELETE FROM queues WHERE name = $1", queue)
        await queue_reload(ami)


async def test_known_phone_registers_and_is_rung_during_a_database_outage_and_a_deleted_one_never(
    live_stack: LiveStack, ami: EventRecorder, phones: list[BaresipPhone],
) -> None:
    known, known_pw = new_name("rt"), secrets.token_urlsafe(18)
    gone, gone_pw = new_name("rt"), secrets.token_urlsafe(18)
    await sql(live_stack, "INSERT INTO phones (name, password) VALUES ($1, $2), ($3, $4)",
              known, known_pw, gone, gone_pw)
    try:
        first = db_phone(live_stack, known, known_pw, AGENT_TONE)
        gone_phone = db_phone(live_stack, gone, gone_pw, AGENT_TONE)
        phones.extend([first, gone_phone])
        await asyncio.gather(first.start(), gone_phone.start())
        await asyncio.gather(first.wait_registered(10), gone_phone.wait_registered(10))

        # A deleted phone is refused at once (its tombstone replaces the cached copy), not when the cache expires.
        await sql(live_stack, "DELETE FROM phones WHERE name = $1", gone)
        again = db_phone(live_stack, gone, gone_pw, AGENT_TONE)
        phones.append(again)
        await again.start()
        with pytest.raises(BaresipError, match=r"401|403"):
            await again.wait_registered(10)

        async with database_down(live_stack):
            # A new REGISTER (challenge and answer) of a phone Asterisk read before: from the memory cache.
            fresh = db_phone(live_stack, known, known_pw, AGENT_TONE)
            phones.append(fresh)
            await fresh.start()
            await fresh.wait_registered(10)
            # And it is rung (endpoint, AOR from the cache; its contact is in Asterisk's own astdb).
            mark = fresh.mark()
            await ami.client.originate({"Channel": f"PJSIP/{known}", "Application": "Echo", "Timeout": "10000"})
            await fresh.wait_event("CALL_ESTABLISHED", 10, since=mark)
            await fresh.hangup()
            # The deleted phone stays refused.
            ghost = db_phone(live_stack, gone, gone_pw, AGENT_TONE)
            phones.append(ghost)
            await ghost.start()
            with pytest.raises(BaresipError, match=r"401|403"):
                await ghost.wait_registered(10)
    finally:
        await sql(live_stack, "DELETE FROM phones WHERE name = ANY($1::text[])", [known, gone])


async def test_realtime_views_cannot_be_written_through(db: asyncpg.Connection, rows: Rows) -> None:
    user, _ = await rows.phone()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("UPDATE ps_auths SET password = 'x' WHERE id = $1", user)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("DELETE FROM asterisk_queues")
    # Views with UNION or window functions are not updatable at all (and their write rights are revoked too).
    refused = (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectNotInPrerequisiteStateError)
    with pytest.raises(refused):
        await db.execute("UPDATE asterisk_ps_auths SET password = 'x' WHERE id = $1", user)
    for view in ("asterisk_queues_conf", "asterisk_queuerules_conf", "asterisk_ps_endpoints"):
        with pytest.raises(refused):
            await db.execute(f"DELETE FROM {view}")


async def test_seeding_from_the_configuration_is_idempotent(live_stack: LiveStack, db: asyncpg.Connection) -> None:
    pool = await asyncpg.create_pool(live_stack.cfg.database.dsn, min_size=1, max_size=1)
    try:
        assert await seed_from_config(pool, live_stack.cfg) == {"phones": 0, "queues": 0, "routes": 0}
    finally:
        await pool.close()
    names = {r["name"] for r in await db.fetch("SELECT name FROM phones")}
    assert {p.user for p in live_stack.cfg.phones} <= names
    supervisors = {r["id"] for r in await db.fetch("SELECT id FROM ps_endpoints WHERE context = 'supervisors'")}
    assert {p.user for p in live_stack.cfg.phones if p.role == "supervisor"} <= supervisors
    assert not {p.user for p in live_stack.cfg.phones if p.role == "agent"} & supervisors
