"""SIP password guessing noticed and its source blocked (docs/security-sip.md).

Asterisk reports every failed SIP authentication as an AMI security event (``ChallengeResponseFailed`` for a
wrong digest, ``InvalidAccountID``, ``InvalidPassword``, ``FailedACL``) with the source in ``RemoteAddress``.
:class:`SipGuard` counts them per source address in a sliding window; at ``threshold`` failures within
``window_s`` seconds the address is blocked for ``ban_s`` seconds, recorded in PostgreSQL (``sip_bans``) and
listed/lifted over the REST API (web/api_security.py).

How a source is blocked: :class:`NftBlocker` puts ``address . port`` into an nftables set with a per-element
timeout (table ``inet ccpbx``); one rule drops UDP and TCP from set members to the SIP port(s). The kernel
drops the packets before Asterisk sees them (no CPU spent, no answer: the prober learns nothing), the element's
timeout ends the ban even when the service is down, and nothing needs an Asterisk reload (the service's AMI
user may not reload). Keyed by port, so several PBX instances on one machine (dev stack, test runs) share the
table without blocking each other's traffic.

Nothing from the event reaches a command unchecked: the address is an :mod:`ipaddress` object
(:func:`telephony.ami.events.parse_remote_address`), the port an int, and ``nft`` runs without a shell with
its script on stdin. Exempt networks (loopback by default: the PBX's own phones) are never blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from telephony.ami.events import SECURITY_FAILURE_EVENTS, AmiEvent, SecurityEvent

log = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Sources tracked at once; past it, sources whose failures all left the window are forgotten first, then the
#: oldest (a spoofed-source flood cannot grow memory without bound).
MAX_TRACKED = 50_000
#: Account names remembered per source (for the ban's record).
MAX_ACCOUNTS = 10
NFT_TIMEOUT_S = 5.0


class BlockerError(RuntimeError):
    """The firewall refused or could not be run: the ban is recorded as not enforced."""


class Blocker(Protocol):
    name: str

    async def setup(self) -> None: ...

    async def block(self, address: IpAddress, seconds: int) -> None: ...

    async def unblock(self, address: IpAddress) -> None: ...


class NullBlocker:
    """Detect and record only (``sip_guard.blocker = "none"``, or nftables unavailable)."""

    name = "none"
    enforces = False

    async def setup(self) -> None:
        return None

    async def block(self, address: IpAddress, seconds: int) -> None:
        raise BlockerError("no blocker configured (sip_guard.blocker = none)")

    async def unblock(self, address: IpAddress) -> None:
        return None


class NftBlocker:
    """Blocks ``address`` to ``ports`` with an nftables set element that times out by itself."""

    name = "nftables"
    enforces = True

    def __init__(self, ports: Sequence[int], *, table: str = "ccpbx", nft: str | None = None,
                 timeout_s: float = NFT_TIMEOUT_S) -> None:
        if not ports or not all(isinstance(p, int) and 1 <= p <= 65535 for p in ports):
            raise ValueError(f"ports: 1-65535, got {ports!r}")
        if not table.isidentifier():
            raise ValueError(f"bad nftables table name {table!r}")
        self.ports = tuple(dict.fromkeys(ports))
        self.table = table
        self.nft = nft or shutil.which("nft") or "/usr/sbin/nft"
        self.timeout_s = timeout_s

    def setup_script(self) -> str:
        t = f"inet {self.table}"
        # The chain is flushed and its rules added again in the same transaction: idempotent, atomic, and the
        # same for every instance sharing the table (the sets carry the port).
        return "\n".join([
            f"add table {t}",
            f"add set {t} banned4 {{ type ipv4_addr . inet_service; flags timeout; }}",
            f"add set {t} banned6 {{ type ipv6_addr . inet_service; flags timeout; }}",
            f"add chain {t} input {{ type filter hook input priority -10; policy accept; }}",
            f"flush chain {t} input",
            f"add rule {t} input meta l4proto {{ tcp, udp }} ip saddr . th dport @banned4 drop",
            f"add rule {t} input meta l4proto {{ tcp, udp }} ip6 saddr . th dport @banned6 drop",
            "",
        ])

    def _elements(self, address: IpAddress, suffix: str = "") -> tuple[str, str]:
        addr = ipaddress.ip_address(str(address))  # re-validated: only an address object's text goes on
        set_name = "banned4" if addr.version == 4 else "banned6"
        return set_name, ", ".join(f"{addr.compressed} . {port}{suffix}" for port in self.ports)

    def block_script(self, address: IpAddress, seconds: int) -> str:
        secs = int(seconds)
        if secs < 1:
            raise ValueError("seconds must be >= 1")
        set_name, with_timeout = self._elements(address, f" timeout {secs}s")
        _, plain = self._elements(address)
        t = f"inet {self.table}"
        # add (no-op when present) + delete + add: the element exists afterwards with the new timeout.
        return (f"add element {t} {set_name} {{ {with_timeout} }}\n"
                f"delete element {t} {set_name} {{ {plain} }}\n"
                f"add element {t} {set_name} {{ {with_timeout} }}\n")

    def unblock_script(self, address: IpAddress) -> str:
        set_name, with_timeout = self._elements(address, " timeout 1s")
        _, plain = self._elements(address)
        t = f"inet {self.table}"
        # add first so that the delete cannot fail on an element that already timed out.
        return f"add element {t} {set_name} {{ {with_timeout} }}\ndelete element {t} {set_name} {{ {plain} }}\n"

    async def _run(self, script: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.nft, "-f", "-", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise BlockerError(f"cannot run {self.nft}: {exc}") from exc
        try:
            _, err = await asyncio.wait_for(proc.communicate(script.encode()), self.timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise BlockerError(f"nft did not finish within {self.timeout_s} s") from None
        if proc.returncode != 0:
            raise BlockerError(f"nft failed ({proc.returncode}): {err.decode(errors='replace').strip()[:300]}")

    async def setup(self) -> None:
        await self._run(self.setup_script())

    async def block(self, address: IpAddress, seconds: int) -> None:
        await self._run(self.block_script(address, seconds))

    async def unblock(self, address: IpAddress) -> None:
        await self._run(self.unblock_script(address))


class BanStore(Protocol):
    async def insert(self, ban: Ban) -> dict[str, Any]: ...

    async def lift(self, address: IpAddress, by: str) -> dict[str, Any] | None: ...

    async def active(self) -> list[dict[str, Any]]: ...

    async def list(self, include_past: bool = False, limit: int = 500) -> list[dict[str, Any]]: ...


_COLUMNS = ("id, host(address) AS address, banned_at, expires_at, failures, reason, accounts, enforced, lifted_at, "
            "lifted_by, (lifted_at IS NULL AND expires_at > now()) AS active")


def _row(r: asyncpg.Record) -> dict[str, Any]:
    out = dict(r)
    for k in ("banned_at", "expires_at", "lifted_at"):
        if out.get(k) is not None:
            out[k] = out[k].isoformat()
    out["accounts"] = list(out.get("accounts") or [])
    return out


class PgBanStore:
    """The ``sip_bans`` table (migration 0017)."""

    def __init__(self, pool: asyncpg.Pool, node: str) -> None:
        self.pool = pool
        self.node = node

    async def insert(self, ban: Ban) -> dict[str, Any]:
        r = await self.pool.fetchrow(
            f"""INSERT INTO sip_bans (node, address, expires_at, failures, reason, accounts, enforced)
                VALUES ($1, $2::inet, now() + make_interval(secs => $3), $4, $5, $6, $7) RETURNING {_COLUMNS}""",
            self.node, str(ban.address), float(ban.seconds), ban.failures, ban.reason, list(ban.accounts),
            ban.enforced)
        assert r is not None  # INSERT ... RETURNING always returns the row
        return _row(r)

    async def lift(self, address: IpAddress, by: str) -> dict[str, Any] | None:
        rows = await self.pool.fetch(
            f"""UPDATE sip_bans SET lifted_at = now(), lifted_by = $3
                WHERE node = $1 AND address = $2::inet AND lifted_at IS NULL AND expires_at > now()
                RETURNING {_COLUMNS}""", self.node, str(address), by[:200])
        return _row(rows[-1]) if rows else None

    async def active(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"""SELECT {_COLUMNS} FROM sip_bans WHERE node = $1 AND lifted_at IS NULL AND expires_at > now()
                ORDER BY banned_at""", self.node)
        return [_row(r) for r in rows]

    async def list(self, include_past: bool = False, limit: int = 500) -> list[dict[str, Any]]:
        if not include_past:
            return await self.active()
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM sip_bans WHERE node = $1 ORDER BY banned_at DESC LIMIT $2", self.node, limit)
        return [_row(r) for r in rows]


@dataclass
class Ban:
    """A decision to block ``address`` for ``seconds``; ``enforced`` once the firewall took it."""

    address: IpAddress
    seconds: float
    failures: int
    reason: str
    accounts: tuple[str, ...] = ()
    enforced: bool = False


@dataclass
class _Source:
    times: deque[float] = field(default_factory=deque)
    accounts: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_ACCOUNTS))
    last_reason: str = ""


@dataclass
class GuardStats:
    failures_seen: int = 0
    exempt_ignored: int = 0
    bans: int = 0
    enforce_errors: int = 0
    lifted: int = 0


class SipGuard:
    """Sliding-window failure counting per source and timed bans (see the module docstring).

    ``on_event`` is called by the service's one ordered AMI consumer and never blocks it: a ban's firewall
    command and database row run in a task of their own. ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(self, blocker: Blocker, store: BanStore | None = None, *, threshold: int = 10,
                 window_s: float = 60.0, ban_s: float = 600.0, exempt: Iterable[IpNetwork | str] = (),
                 services: Iterable[str] = ("PJSIP",), clock: Callable[[], float] = time.monotonic,
                 enabled: bool = True) -> None:
        if threshold < 1 or window_s <= 0 or ban_s < 1:
            raise ValueError("threshold >= 1, window_s > 0, ban_s >= 1")
        self.blocker = blocker
        self.store = store
        self.threshold = threshold
        self.window_s = float(window_s)
        self.ban_s = float(ban_s)
        self.exempt = tuple(ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in exempt)
        self.services = frozenset(s.upper() for s in services)
        self.clock = clock
        self.enabled = enabled
        self.stats = GuardStats()
        self.ready = False  # the blocker's setup succeeded
        self._sources: dict[IpAddress, _Source] = {}
        self._banned: dict[IpAddress, float] = {}  # address -> monotonic end of its ban
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Prepare the firewall, then block again what PostgreSQL says is still banned (the kernel's set is
        empty after a reboot; re-adding an element that is there only sets its timeout again)."""
        if not self.enabled:
            return
        try:
            await self.blocker.setup()
            self.ready = True
        except BlockerError as exc:
            log.error("SIP guard: the firewall cannot be prepared, bans will be recorded but not enforced: %s", exc)
        if self.store is None:
            return
        try:
            active = await self.store.active()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("SIP guard: active bans not restored: %s", exc)
            return
        now = self.clock()
        for row in active:
            try:
                addr = ipaddress.ip_address(row["address"])
            except ValueError:
                continue
            left = max(1, int(_seconds_left(row["expires_at"])))
            self._banned[addr] = now + left
            if self.ready:
                try:
                    await self.blocker.block(addr, left)
                except BlockerError as exc:
                    log.error("SIP guard: ban of %s not restored: %s", addr, exc)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_idle(self) -> None:
        """Until every ban in progress has reached the firewall and the database (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ events
    def on_event(self, ev: AmiEvent) -> Ban | None:
        """One AMI event; a failure from a source past the threshold starts its ban (returned)."""
        if not self.enabled or ev.name not in SECURITY_FAILURE_EVENTS or not isinstance(ev, SecurityEvent):
            return None
        if (ev.service or "").upper() not in self.services:
            return None
        addr = ev.remote_ip
        if addr is None:
            return None
        ban = self.record_failure(addr, ev.account_id, ev.name)
        if ban is not None:
            task = asyncio.get_running_loop().create_task(self._enforce(ban), name=f"sip-ban-{addr}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return ban

    def is_exempt(self, address: IpAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.exempt)

    def is_banned(self, address: IpAddress) -> bool:
        end = self._banned.get(address)
        if end is None:
            return False
        if end <= self.clock():
            del self._banned[address]
            return False
        return True

    def record_failure(self, address: IpAddress, account: str | None = None, reason: str = "") -> Ban | None:
        """Count one failure (pure bookkeeping, no I/O); the ban to apply when this one reached the threshold.
        Failures of a source already banned (late events) and of exempt sources do not count."""
        self.stats.failures_seen += 1
        if self.is_exempt(address):
            self.stats.exempt_ignored += 1
            return None
        if self.is_banned(address):
            return None
        now = self.clock()
        src = self._sources.get(address)
        if src is None:
            if len(self._sources) >= MAX_TRACKED:
                self._prune(now)
            src = self._sources[address] = _Source()
        src.times.append(now)
        if account:
            clean = "".join(c for c in account if c.isprintable())[:64]
            if clean and clean not in src.accounts:
                src.accounts.append(clean)
        src.last_reason = reason
        horizon = now - self.window_s
        while src.times and src.times[0] <= horizon:
            src.times.popleft()
        if len(src.times) < self.threshold:
            return None
        del self._sources[address]
        self._banned[address] = now + self.ban_s
        self.stats.bans += 1
        return Ban(address, self.ban_s, len(src.times), reason or src.last_reason, tuple(src.accounts))

    def failures(self, address: IpAddress) -> int:
        """Failures of ``address`` inside the window now."""
        src = self._sources.get(address)
        if src is None:
            return 0
        horizon = self.clock() - self.window_s
        return sum(1 for t in src.times if t > horizon)

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        for addr in [a for a, s in self._sources.items() if not s.times or s.times[-1] <= horizon]:
            del self._sources[addr]
        while len(self._sources) >= MAX_TRACKED:
            del self._sources[next(iter(self._sources))]
        for addr in [a for a, end in self._banned.items() if end <= now]:
            del self._banned[addr]

    async def _enforce(self, ban: Ban) -> None:
        try:
            await self.blocker.block(ban.address, max(1, round(ban.seconds)))
            ban.enforced = True
        except BlockerError as exc:
            self.stats.enforce_errors += 1
            log.error("SIP guard: %s not blocked: %s", ban.address, exc)
        log.warning("SIP guard: %s banned for %.0f s after %d failed authentications (%s; accounts %s)%s",
                    ban.address, ban.seconds, ban.failures, ban.reason, ", ".join(ban.accounts) or "-",
                    "" if ban.enforced else " - NOT enforced")
        if self.store is not None:
            try:
                await self.store.insert(ban)
            except (OSError, asyncpg.PostgresError) as exc:
                log.error("SIP guard: ban of %s not recorded: %s", ban.address, exc)

    # ------------------------------------------------------------------ the API's side
    async def unban(self, address: IpAddress, by: str) -> dict[str, Any] | None:
        """Lift a ban early: the firewall element goes, the row says who lifted it, counting starts afresh.
        ``None`` when ``address`` had no active ban."""
        await self.wait_idle()  # a ban being applied right now is lifted too, not re-applied after this
        known = self._banned.pop(address, None) is not None
        self._sources.pop(address, None)
        row = await self.store.lift(address, by) if self.store is not None else None
        if not known and row is None:
            return None
        out = row or {"address": str(address), "active": False, "lifted_by": by}
        try:
            await self.blocker.unblock(address)
        except BlockerError as exc:
            log.error("SIP guard: %s not unblocked: %s", address, exc)
            out = {**out, "firewall_error": str(exc)}
        self.stats.lifted += 1
        log.warning("SIP guard: ban of %s lifted by %s", address, by)
        return out

    async def bans(self, include_past: bool = False) -> list[dict[str, Any]]:
        if self.store is None:
            now = self.clock()
            return [{"address": str(a), "active": True, "expires_in_s": round(end - now, 1)}
                    for a, end in self._banned.items() if end > now]
        return await self.store.list(include_past)

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "blocker": self.blocker.name, "ready": self.ready,
                "threshold": self.threshold, "window_s": self.window_s, "ban_s": self.ban_s,
                "tracked_sources": len(self._sources), "banned_now": sum(1 for a in list(self._banned)
                                                                         if self.is_banned(a)),
                **self.stats.__dict__}


def _seconds_left(expires_at: Any) -> float:
    """Seconds until an ISO timestamp (or datetime) from the store."""
    when = datetime.fromisoformat(expires_at) if isinstance(expires_at, str) else expires_at
    return float((when - datetime.now(UTC)).total_seconds())


def make_blocker(kind: str, ports: Sequence[int]) -> Blocker:
    """The configured blocker; nftables when asked for and installed, else detect-only (logged)."""
    if kind == "nftables":
        if shutil.which("nft") is None and not os.path.exists("/usr/sbin/nft"):
            log.error("SIP guard: sip_guard.blocker = nftables but `nft` is not installed (apt-get install "
                      "nftables): bans are recorded, not enforced")
            return NullBlocker()
        return NftBlocker(ports)
    return NullBlocker()
