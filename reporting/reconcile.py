"""Reconciliation: queue calls the service did not see (it was down, or AMI was disconnected) rebuilt from
Asterisk's own durable record, `queue_log`.

Why queue_log: Asterisk writes it whether anyone listens or not, one line per queue event
(`epoch|callid|queue|agent|event|data...`). Each line becomes the AMI event the projector already understands
(ENTERQUEUE → QueueCallerJoin, CONNECT → AgentConnect, ...), stored in call_events like a received event (its
key is the line itself, so reading the file again inserts nothing twice), and the calls are projected as usual:
one code path for facts, live or reconciled. An event of a kind already stored for that caller and queue (seen
live, with µs instants) is not added again.

queue_log's instants are whole seconds; Asterisk's CEL (Master.csv, µs) gives the exact ones: each event taken
from queue_log gets the instant of the matching CEL event of the caller's channel (APP_START of Queue for the
join, BRIDGE_ENTER for the answer, BRIDGE_EXIT for the end of talk, APP_END of Queue for an abandon or exit,
the agent channel's CHAN_START for the ring) when one lies within the second queue_log names.

What neither gives: holds (not logged: hold_s = 0) and the agents' states during the outage (after-call work
stays unknown).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger("reporting.reconcile")

SOURCE = "queue_log"


@dataclass(frozen=True)
class QueueLogLine:
    at: float
    callid: str
    queue: str
    agent: str
    event: str
    data: tuple[str, ...]
    raw: str


def parse(lines: Iterable[str]) -> Iterator[QueueLogLine]:
    """Lines of queue_log; anything malformed is skipped (the file is not ours to trust blindly)."""
    for raw in lines:
        raw = raw.rstrip("\n")
        parts = raw.split("|")
        if len(parts) < 5 or not parts[0].isdigit() or len(raw) > 2000:
            continue
        at, callid, queue, agent, event = parts[:5]
        if callid in ("NONE", "MANAGER", "REALTIME", "CLI") or not callid or not queue:
            continue
        yield QueueLogLine(float(at), callid, queue, agent, event, tuple(parts[5:]), raw)


def _d(line: QueueLogLine, i: int) -> str:
    return line.data[i] if len(line.data) > i else ""


_EXIT = {"EXITWITHTIMEOUT": "TIMEOUT", "EXITEMPTY": "LEAVEEMPTY", "EXITWITHKEY": "CONTINUE"}


def to_events(line: QueueLogLine) -> list[tuple[str, float, dict[str, str]]]:
    """The AMI events (name, instant, headers) one queue_log line stands for."""
    base = {"Uniqueid": line.callid, "Linkedid": line.callid, "Queue": line.queue, "Source": SOURCE,
            "QueueLogLine": line.raw}
    member = {"MemberName": line.agent} if line.agent and line.agent != "NONE" else {}
    ev = line.event
    if ev == "ENTERQUEUE":
        return [("QueueCallerJoin", line.at, {**base, "CallerIDNum": _d(line, 1)})]
    if ev == "CONNECT":
        ring = float(_d(line, 2) or 0) if _d(line, 2).isdigit() else 0.0
        out = [("AgentConnect", line.at, {**base, **member, "DestUniqueid": _d(line, 1)})]
        if ring > 0:
            out.insert(0, ("AgentCalled", line.at - ring, {**base, **member}))
        return out
    if ev in ("COMPLETECALLER", "COMPLETEAGENT"):
        return [("AgentComplete", line.at, {**base, **member, "Reason": "caller" if ev == "COMPLETECALLER"
                                            else "agent"})]
    if ev in ("BLINDTRANSFER", "ATTENDEDTRANSFER", "TRANSFER"):
        return [("AgentComplete", line.at, {**base, **member, "Reason": "transfer"})]
    if ev == "ABANDON":
        return [("QueueCallerAbandon", line.at, base)]
    if ev in _EXIT:
        if ev == "EXITWITHKEY" and _d(line, 0) == "1":
            return [("QueueCallerLeave", line.at, base),
                    ("UserEvent", line.at, {**base, "UserEvent": "CallbackRequest"})]
        return [("QueueCallerLeave", line.at, base),
                ("UserEvent", line.at, {**base, "UserEvent": "QueueExit", "Status": _EXIT[ev]})]
    return []


#: AMI event taken from queue_log -> (CEL event type, CEL appname or None) of the caller's channel at that instant.
_CEL_MATCH: dict[str, tuple[str, str | None]] = {
    "QueueCallerJoin": ("APP_START", "Queue"), "AgentConnect": ("BRIDGE_ENTER", None),
    "AgentComplete": ("BRIDGE_EXIT", None), "QueueCallerAbandon": ("APP_END", "Queue"),
    "QueueCallerLeave": ("APP_END", "Queue"), "UserEvent": ("APP_END", "Queue"),
}

CelIndex = dict[str, list[tuple[str, float, str]]]  # uniqueid -> [(event type, instant, appname)]


def parse_cel(lines: Iterable[str]) -> CelIndex:
    """Master.csv as cel_custom.conf writes it: eventtype, eventtime (epoch.µs), ..., appname (8th), uniqueid
    (10th). Malformed rows are skipped."""
    out: CelIndex = {}
    for row in csv.reader(lines):
        if len(row) < 11:
            continue
        try:
            at = float(row[1])
        except ValueError:
            continue
        out.setdefault(row[9], []).append((row[0], at, row[7]))
    return out


def refine(name: str, at: float, uniqueid: str, cel: CelIndex, *, agent_uid: str | None = None) -> float:
    """The exact instant of a queue_log event from CEL, if a matching CEL event lies in its second."""
    if name == "AgentCalled" and agent_uid:
        cands = [t for kind, t, _ in cel.get(agent_uid, []) if kind == "CHAN_START"]
    else:
        kind_app = _CEL_MATCH.get(name)
        if kind_app is None:
            return at
        kind, app = kind_app
        cands = [t for k, t, a in cel.get(uniqueid, []) if k == kind and (app is None or a == app)]
    best = min(cands, key=lambda t: abs(t - (at + 0.5)), default=None)
    return best if best is not None and at - 0.5 <= best < at + 2.0 else at


def _key(node: str, name: str, fields: dict[str, str]) -> str:
    canon = json.dumps([node, name, sorted(fields.items())], separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


async def reconcile(pool: asyncpg.Pool, node: str, queue_log: Path, since: float, until: float,
                    cel_file: Path | None = None) -> list[str]:
    """Store, as events, what queue_log knows of calls active in [since, until] and the stored events lack (a
    whole call, or its end when the outage began mid-call); return the linkedids to project."""
    try:
        text = await asyncio.to_thread(queue_log.read_text, errors="replace")
    except FileNotFoundError:
        return []
    lines = list(parse(text.splitlines()))
    # Every call with a line in the window (one that entered before the gap may have ended in it), with all
    # its lines: the stored events are then completed with what they lack.
    entered = {ln.callid for ln in lines if since - 1 <= ln.at <= until + 1}
    if not entered:
        return []
    stored = await pool.fetch(
        """SELECT uniqueid, queue, name, fields->>'UserEvent' AS sub, linkedid FROM call_events
           WHERE uniqueid = ANY($1::text[]) AND name IN ('QueueCallerJoin', 'AgentCalled', 'AgentConnect',
                 'AgentComplete', 'QueueCallerAbandon', 'QueueCallerLeave', 'UserEvent')""", sorted(entered))
    have = {(r["uniqueid"], r["queue"], r["name"], r["sub"] or "") for r in stored}
    linked = {r["uniqueid"]: r["linkedid"] for r in stored if r["linkedid"]}
    cel: CelIndex = {}
    if cel_file is not None:
        try:
            cel_text = await asyncio.to_thread(cel_file.read_text, errors="replace")
            cel = parse_cel(cel_text.splitlines())
        except FileNotFoundError:
            pass
    rows: list[tuple[Any, ...]] = []
    touched: set[str] = set()
    for ln in lines:
        if ln.callid not in entered:
            continue
        agent_uid = _d(ln, 1) if ln.event == "CONNECT" else None
        for name, at, fields in to_events(ln):
            if name == "AgentCalled":
                at = refine(name, at, ln.callid, cel, agent_uid=agent_uid)
            else:
                at = refine(name, ln.at, ln.callid, cel)
            sub = fields.get("UserEvent", "")
            if (ln.callid, ln.queue, name, sub) in have:
                continue  # seen live: the received event is more precise
            linkedid = linked.get(ln.callid, ln.callid)
            fields = {"Event": name, "Timestamp": f"{at:.6f}", **fields, "Linkedid": linkedid}
            ts = datetime.fromtimestamp(at, UTC)
            rows.append((node, _key(node, name, fields), name, ts, ts, ln.callid, linkedid, ln.queue,
                         json.dumps(fields)))
            touched.add(linkedid)
    if rows:
        await pool.executemany(
            """INSERT INTO call_events (node, event_key, name, ts, received_at, uniqueid, linkedid, queue, fields)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb) ON CONFLICT (node, event_key) DO NOTHING""", rows)
        log.info("reconciled %d call(s) from queue_log (%d events)", len(touched), len(rows))
    return sorted(touched)


#: Source of the events that close a call Asterisk lost (it crashed or restarted under it): no record of its end.
LOST = "pbx_lost"
#: How far back a lost call can have entered its queue (nobody waits or talks longer in one queue call).
LOST_HORIZON = timedelta(hours=12)


async def close_lost_calls(pool: asyncpg.Pool, node: str, live: frozenset[str], cut_at: float) -> list[str]:
    """End the queue calls Asterisk lost: the caller joined the queue before `cut_at`, Asterisk no longer has the
    caller's channel (`live`: the uniqueids of a fresh `CoreShowChannels`), and no stored event ends the call
    (no Hangup of the caller, no abandon or leave while waiting, no AgentComplete once answered) — neither a
    received one nor one reconciled from queue_log. Returns the linkedids to project.

    Why: queue_log and CEL write nothing for a call that was up when Asterisk was killed, so its fact would stay
    open for ever (counted in `offered`, re-projected every second). The call ended, for its caller, when the PBX
    went away: at `cut_at` (the start of the gap: the instant the AMI connection dropped), or at the call's last
    known event if that is later. A waiting caller becomes an abandon at that instant (the caller got no answer;
    a short wait is a short abandon, as for any abandon), an answered call's talk ends there. The events carry
    `Source: pbx_lost`. Call it after `reconcile` of the same gap and after the events received before the gap
    are stored, so every end that was recorded is known.
    """
    cut = datetime.fromtimestamp(cut_at, UTC)
    joins = [r for r in await pool.fetch(
        """SELECT DISTINCT ON (uniqueid, queue) uniqueid, queue, linkedid FROM call_events
           WHERE node = $1 AND name = 'QueueCallerJoin' AND ts < $2 AND ts > $3 AND uniqueid IS NOT NULL
           ORDER BY uniqueid, queue, ts DESC""", node, cut, cut - LOST_HORIZON) if r["uniqueid"] not in live]
    if not joins:
        return []
    events = await pool.fetch(
        """SELECT uniqueid, queue, name, ts, fields->>'MemberName' AS member FROM call_events
           WHERE node = $1 AND linkedid = ANY($2::text[])
             AND name IN ('AgentConnect', 'AgentComplete', 'QueueCallerAbandon', 'QueueCallerLeave', 'Hangup')""",
        node, sorted({r["linkedid"] for r in joins if r["linkedid"]}))
    latest = {r["uniqueid"]: r["at"].timestamp() for r in await pool.fetch(
        """SELECT uniqueid, max(ts) AS at FROM call_events WHERE node = $1 AND linkedid = ANY($2::text[])
           GROUP BY uniqueid""", node, sorted({r["linkedid"] for r in joins if r["linkedid"]}))}
    hung = {e["uniqueid"] for e in events if e["name"] == "Hangup"}
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        d = seen.setdefault((e["uniqueid"], e["queue"]), {"names": set(), "member": None})
        d["names"].add(e["name"])
        if e["name"] == "AgentConnect":
            d["member"] = e["member"]
    rows: list[tuple[Any, ...]] = []
    touched: set[str] = set()
    for j in joins:
        uid, queue, linkedid = j["uniqueid"], j["queue"], j["linkedid"] or j["uniqueid"]
        d = seen.get((uid, queue), {"names": set(), "member": None})
        names = d["names"]
        if uid in hung or "AgentComplete" in names or "QueueCallerAbandon" in names:
            continue  # its end is recorded
        answered = "AgentConnect" in names
        if not answered and "QueueCallerLeave" in names:
            continue  # it left the queue (exit, overflow): the projection decides how
        at = max(cut_at, latest.get(uid, 0.0))
        base = {"Uniqueid": uid, "Linkedid": linkedid, "Queue": queue, "Source": LOST}
        if answered:
            name, fields = "AgentComplete", {**base, "MemberName": d["member"] or "", "Reason": LOST}
        else:
            name, fields = "QueueCallerAbandon", base
        fields = {"Event": name, "Timestamp": f"{at:.6f}", **fields}
        ts = datetime.fromtimestamp(at, UTC)
        rows.append((node, _key(node, name, fields), name, ts, ts, uid, linkedid, queue, json.dumps(fields)))
        touched.add(linkedid)
    if rows:
        await pool.executemany(
            """INSERT INTO call_events (node, event_key, name, ts, received_at, uniqueid, linkedid, queue, fields)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb) ON CONFLICT (node, event_key) DO NOTHING""", rows)
        log.warning("closed %d queue call(s) Asterisk lost (no record of their end) at %s", len(rows), cut.isoformat())
    return sorted(touched)
