"""Queue callback service against a real PostgreSQL, fed recorded-style AMI frames, with a fake AMI.

What is checked: one callback per request however often the frames are replayed or 1 is pressed; the place in
the queue (callers ahead served meanwhile no longer count, later VIPs still go first); no Originate while the
PBX is away and exactly one after the reconnect; an Originate whose outcome is unknown is never sent again; the
status follows the placeholder's events and never moves back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import asyncpg
import pytest
import pytest_asyncio

from acd.callback import CallbackService
from reporting.migrate import migrate
from telephony.ami import AmiClient, AmiConnectionLost, AmiEvent, AmiNotConnected
from telephony.ami.events import parse_event

pytestmark = pytest.mark.asyncio

Q = "sales"
NUMBER = "+15550001"
T0 = 1_732_370_000.0


def ev(name: str, at: float, **fields: str) -> AmiEvent:
    return parse_event({"Event": name, "Timestamp": f"{T0 + at:.6f}", **fields}, T0 + at)


def join(uid: str, position: int, at: float, queue: str = Q) -> AmiEvent:
    return ev("QueueCallerJoin", at, Uniqueid=uid, Linkedid=uid, Queue=queue, Position=str(position), Count="0")


def leave(uid: str, position: int, at: float, queue: str = Q) -> AmiEvent:
    return ev("QueueCallerLeave", at, Uniqueid=uid, Linkedid=uid, Queue=queue, Position=str(position), Count="0")


def request(uid: str, at: float, number: str = NUMBER, queue: str = Q, position: str = "3") -> AmiEvent:
    return ev("UserEvent", at, UserEvent="CallbackRequest", Uniqueid=uid, Linkedid=uid, Channel="PJSIP/carrier-1",
              Context="queue-callback", Exten="1", Priority="11", Queue=queue, Number=number, QueuePrio="0",
              Did="2000", QueuePosition=position)


class FakeAmi:
    """What CallbackService uses of AmiClient: ``connected``, ``originate``, ``list_events``."""

    def __init__(self) -> None:
        self.connected = True
        self.originates: list[dict[str, Any]] = []
        self.fail: Exception | None = None
        self.lists: dict[str, list[AmiEvent]] = {"QueueStatus": [], "CoreShowChannels": []}

    async def originate(self, fields: Mapping[str, str | Sequence[str]], *, timeout: float | None = None) -> None:
        if self.fail is not None:
            exc, self.fail = self.fail, None
            if not isinstance(exc, AmiNotConnected):
                self.originates.append(dict(fields))  # sent: Asterisk may have it
            raise exc
        self.originates.append(dict(fields))

    async def list_events(self, name: str, fields: Any = None, *, timeout: float | None = None) -> list[AmiEvent]:
        return list(self.lists.get(name, []))


def variables(fields: dict[str, Any]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in fields["Variable"])


@pytest_asyncio.fixture
async def pool(pg_db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(pg_db, min_size=1, max_size=4)
    try:
        await migrate(p)
        await p.execute("INSERT INTO queues (name, callback_enabled) VALUES ($1, true), ('plain', false)", Q)
        yield p
    finally:
        await p.close()


@pytest_asyncio.fixture
async def fake() -> FakeAmi:
    return FakeAmi()


@pytest_asyncio.fixture
async def svc(pool: asyncpg.Pool, fake: FakeAmi) -> AsyncIterator[CallbackService]:
    s = CallbackService(cast(AmiClient, fake), pool, "pbx1", retry_delay_s=0.05)
    await s.start()
    yield s
    await s.stop()


def feed(svc: CallbackService, *events: AmiEvent) -> None:
    for e in events:
        svc.on_event(e)


async def rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM callbacks ORDER BY id")


async def test_replays_and_a_second_key_press_make_one_callback(svc: CallbackService, fake: FakeAmi,
                                                               pool: asyncpg.Pool) -> None:
    feed(svc, join("A", 1, 0), join("B", 2, 1), join("C", 3, 2), join("D", 4, 3), leave("C", 3, 10))
    first = request("C", 10.01)
    feed(svc, first, first, request("C", 10.5))  # the frame replayed, then 1 pressed again
    await svc.settle()
    feed(svc, first)  # replayed again later
    await svc.settle()
    got = await rows(pool)
    assert len(got) == 1 and len(fake.originates) == 1
    cb = got[0]
    assert (cb["queue"], cb["number"], cb["did"], cb["caller_uniqueid"], cb["position"], cb["status"]) == (
        Q, NUMBER, "2000", "C", 3, "queued")
    assert cb["entered_at"].timestamp() == pytest.approx(T0 + 2)
    assert cb["requested_at"].timestamp() == pytest.approx(T0 + 10.01)
    o = fake.originates[0]
    dial_leg, queue_leg = svc.legs(cb["id"])
    assert (o["Channel"], o["Context"], o["Exten"], o["ChannelId"], o["OtherChannelId"]) == (
        "Local/cb@callback-place/n", "callback-dial", "cb", dial_leg, queue_leg)
    assert cb["placeholder_uniqueid"] == queue_leg
    assert variables(o) == {"CB_ID": str(cb["id"]), "CB_QUEUE": Q, "CB_NUMBER": NUMBER, "CB_DID": "2000",
                            "CB_PRIO": "0", "CB_POSITION": "3"}
    assert svc.stats["duplicates"] == 3

    # The same number calling again and pressing 1 while its callback is open: still one callback.
    feed(svc, join("C2", 4, 20), leave("C2", 4, 21), request("C2", 21.01, position="4"))
    await svc.settle()
    assert len(await rows(pool)) == 1 and len(fake.originates) == 1


async def test_the_place_is_the_callers_even_when_callers_ahead_were_served_meanwhile(
    svc: CallbackService, fake: FakeAmi, pool: asyncpg.Pool,
) -> None:
    feed(svc, join("A", 1, 0), join("B", 2, 1), join("C", 3, 2), join("D", 4, 3), leave("C", 3, 10),
         request("C", 10.01))
    # Before the placeholder joins: A is served and a VIP joins at the head.
    feed(svc, leave("A", 1, 10.02), join("V", 1, 10.03))
    await svc.settle()
    assert svc.waiting(Q) == ["V", "B", "D"]
    assert variables(fake.originates[0])["CB_POSITION"] == "3"  # behind V and B, ahead of D
    # The placeholder's own join is mirrored, so a second callback lands behind it.
    (cb,) = await rows(pool)
    feed(svc, join(svc.legs(cb["id"])[1], 3, 10.05), leave("D", 4, 11))
    feed(svc, ev("UserEvent", 11.01, UserEvent="CallbackRequest", Uniqueid="D", Linkedid="D", Queue=Q,
                 Number="0301234567", QueuePrio="0", QueuePosition="4"))
    await svc.settle()
    assert variables(fake.originates[1])["CB_POSITION"] == "4"

    # Without the order (the service did not see the caller wait): the position they left at.
    feed(svc, request("X", 12, number="+4930111", position="2"))
    await svc.settle()
    assert variables(fake.originates[2])["CB_POSITION"] == "2"


async def test_no_originate_while_the_pbx_is_away_and_exactly_one_after(
    svc: CallbackService, fake: FakeAmi, pool: asyncpg.Pool,
) -> None:
    fake.connected = False
    feed(svc, join("A", 1, 0), join("B", 2, 1), join("C", 3, 2), join("D", 4, 3), leave("C", 3, 10),
         request("C", 10.01))
    await svc.settle()
    (cb,) = await rows(pool)
    assert cb["status"] == "pending" and not fake.originates
    # Reconnected: the queue as Asterisk has it now (A was served meanwhile), the placeholder goes behind B.
    fake.connected = True
    fake.lists["QueueStatus"] = [ev("QueueEntry", 20, Queue=Q, Position="1", Uniqueid="B", Wait="19"),
                                 ev("QueueEntry", 20, Queue=Q, Position="2", Uniqueid="D", Wait="17")]
    await svc.resume()
    assert len(fake.originates) == 1 and variables(fake.originates[0])["CB_POSITION"] == "2"
    fake.lists["CoreShowChannels"] = [ev("CoreShowChannel", 21, Uniqueid=u) for u in svc.legs(cb["id"])]
    await svc.resume()  # another reconnect: the placeholder is still there, nothing more is sent
    assert len(fake.originates) == 1
    assert (await rows(pool))[0]["status"] == "queued"
    # Asterisk restarted meanwhile (the placeholder is gone): failed, never originated again.
    fake.lists["CoreShowChannels"] = []
    await svc.resume()
    (cb,) = await rows(pool)
    assert cb["status"] == "failed" and "outcome unknown" in cb["detail"] and len(fake.originates) == 1


async def test_an_originate_with_unknown_outcome_is_never_sent_again(svc: CallbackService, fake: FakeAmi,
                                                                     pool: asyncpg.Pool) -> None:
    fake.fail = AmiConnectionLost("lost while waiting for the reply")
    feed(svc, request("C", 1, position="1"))
    await svc.settle()
    assert (await rows(pool))[0]["status"] == "queued" and len(fake.originates) == 1
    await svc.resume()
    (cb,) = await rows(pool)
    assert cb["status"] == "failed" and len(fake.originates) == 1
    # Not sent at all (disconnected at that instant): back to pending, sent once after the reconnect.
    fake.fail = AmiNotConnected("not connected")
    feed(svc, request("E", 2, number="+15550002", position="1"))
    await svc.settle()
    assert (await rows(pool))[1]["status"] == "pending" and len(fake.originates) == 1
    await svc.resume()
    assert len(fake.originates) == 2 and (await rows(pool))[1]["status"] == "queued"
    fake.lists["CoreShowChannels"] = [ev("CoreShowChannel", 3, Uniqueid=u) for u in svc.legs(2)]
    await svc.resume()
    assert len(fake.originates) == 2 and (await rows(pool))[1]["status"] == "queued"


async def test_status_follows_the_placeholder_and_never_moves_back(svc: CallbackService, fake: FakeAmi,
                                                                   pool: asyncpg.Pool) -> None:
    feed(svc, request("C", 1, position="1"), request("F", 1.5, number="+15550003", position="2"))
    await svc.settle()
    first, second = await rows(pool)
    a, b = svc.legs(first["id"])
    connect = ev("AgentConnect", 5, Uniqueid=b, Linkedid=a, Queue=Q, MemberName="ann", Interface="PJSIP/agent1")
    feed(svc, connect)
    await svc.settle()
    assert (await rows(pool))[0]["status"] == "agent_answered"
    feed(svc, ev("DialBegin", 5.01, Uniqueid=a, Linkedid=a, DestUniqueid="x", DialString="+15550001@carrier"))
    await svc.settle()
    assert (await rows(pool))[0]["status"] == "dialing"
    feed(svc, ev("DialEnd", 7, Uniqueid=a, Linkedid=a, DialStatus="ANSWER"), ev("Hangup", 60, Uniqueid=b, Cause="16"),
         ev("Hangup", 60.01, Uniqueid=a, Cause="16"), connect)
    await svc.settle()
    done = (await rows(pool))[0]
    assert (done["status"], done["agent"], done["dial_status"]) == ("completed", "ann", "ANSWER")

    # The second: the customer does not answer.
    a2, b2 = svc.legs(second["id"])
    feed(svc, ev("AgentConnect", 70, Uniqueid=b2, Linkedid=a2, Queue=Q, MemberName="bob"),
         ev("DialBegin", 70.01, Uniqueid=a2), ev("DialEnd", 115, Uniqueid=a2, DialStatus="NOANSWER"),
         ev("Hangup", 115.1, Uniqueid=a2, Cause="16"))
    await svc.settle()
    failed = (await rows(pool))[1]
    assert (failed["status"], failed["agent"], failed["dial_status"]) == ("failed", "bob", "NOANSWER")

    # A placeholder that ends while waiting (e.g. the originate's time limit): failed.
    feed(svc, request("G", 200, number="+15550004", position="1"))
    await svc.settle()
    third = (await rows(pool))[2]
    feed(svc, ev("Hangup", 300, Uniqueid=svc.legs(third["id"])[0], Cause="16"))
    await svc.settle()
    assert (await rows(pool))[2]["status"] == "failed"
    # Events of another node's placeholders are not ours.
    feed(svc, ev("AgentConnect", 301, Uniqueid=f"pbx2-cb{third['id']}-b", MemberName="eve"))
    await svc.settle()
    assert (await rows(pool))[2]["agent"] is None


@pytest.mark.parametrize(("number", "queue", "uid"), [
    ("abc", Q, "C"), ("1;2", Q, "C"), ("+1", Q, "C"), ("+" + "1" * 21, Q, "C"), ("", Q, "C"),
    (NUMBER, "plain", "C"), (NUMBER, "no-such-queue", "C"), (NUMBER, "Bad Queue", "C"), (NUMBER, Q, ""),
])
async def test_bad_requests_create_nothing(svc: CallbackService, fake: FakeAmi, pool: asyncpg.Pool, number: str,
                                           queue: str, uid: str) -> None:
    feed(svc, request(uid, 1, number=number, queue=queue))
    await svc.settle()
    assert not await rows(pool) and not fake.originates
    assert svc.stats["refused"] == 1


async def test_other_user_events_are_ignored(svc: CallbackService, fake: FakeAmi, pool: asyncpg.Pool) -> None:
    feed(svc, ev("UserEvent", 1, UserEvent="SomethingElse", Uniqueid="C", Queue=Q, Number=NUMBER))
    await svc.settle()
    assert not await rows(pool) and svc.stats["requests"] == 0


async def test_a_placeholder_originated_after_the_channel_list_was_taken_is_not_settled(
    svc: CallbackService, fake: FakeAmi, pool: asyncpg.Pool,
) -> None:
    feed(svc, request("C", 1, position="1"))
    await svc.resume()  # reconnect: its channel list (empty) was taken before the request's Originate ran
    (cb,) = await rows(pool)
    assert cb["status"] == "queued" and len(fake.originates) == 1


class FlakyPool:
    """The pool, failing the first ``failures`` calls as an unreachable PostgreSQL does."""

    def __init__(self, pool: asyncpg.Pool, failures: int) -> None:
        self.pool = pool
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.pool, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.failures > 0:
                self.failures -= 1
                raise ConnectionRefusedError("database down")
            return await target(*args, **kwargs)
        return call


async def test_a_request_is_stored_and_called_back_once_the_database_is_back(fake: FakeAmi,
                                                                            pool: asyncpg.Pool) -> None:
    svc = CallbackService(cast(AmiClient, fake), cast(asyncpg.Pool, FlakyPool(pool, 3)), "pbx1", retry_delay_s=0.02)
    await svc.start()
    try:
        feed(svc, request("C", 1, position="1"), request("C", 1))
        for _ in range(200):
            if fake.originates:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the replay's retries too
        await svc.settle()
        assert len(await rows(pool)) == 1 and len(fake.originates) == 1
        assert svc.stats["db_retries"] >= 3
    finally:
        await svc.stop()


async def test_a_caller_who_joined_before_callbacks_were_switched_off_is_still_called_back(
    svc: CallbackService, fake: FakeAmi, pool: asyncpg.Pool,
) -> None:
    # app_queue keeps the key for callers already waiting; the service saw this one leave the queue by it.
    feed(svc, join("A", 1, 0, queue="plain"), join("C", 2, 1, queue="plain"), leave("C", 2, 5, queue="plain"),
         request("C", 5.01, queue="plain", position="2"))
    await svc.settle()
    (cb,) = await rows(pool)
    assert cb["queue"] == "plain" and variables(fake.originates[0])["CB_POSITION"] == "2"
