"""SIP guard: the sliding window, bans and their end, exempt sources, the AMI security events it reads, and the
nftables scripts it would run (a fake blocker and an injectable clock; no firewall, no PBX)."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest

from acd.sip_guard import Ban, BlockerError, NftBlocker, SipGuard
from service.config import ConfigError, parse_config
from telephony.ami.events import ChallengeResponseFailed, FailedACL, InvalidAccountID, parse_event, parse_remote_address

ATTACKER = ipaddress.ip_address("127.0.0.2")
PHONES = ipaddress.ip_address("127.0.0.1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeBlocker:
    name = "fake"

    def __init__(self, fail: bool = False) -> None:
        self.blocked: dict[Any, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail = fail
        self.setups = 0

    async def setup(self) -> None:
        self.setups += 1

    async def block(self, address: Any, seconds: int) -> None:
        self.calls.append(("block", str(address)))
        if self.fail:
            raise BlockerError("refused")
        self.blocked[address] = seconds

    async def unblock(self, address: Any) -> None:
        self.calls.append(("unblock", str(address)))
        self.blocked.pop(address, None)


class FakeStore:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def insert(self, ban: Ban) -> dict[str, Any]:
        row = {"address": str(ban.address), "failures": ban.failures, "reason": ban.reason,
               "accounts": list(ban.accounts), "enforced": ban.enforced, "active": True, "lifted_by": None,
               "expires_at": "2999-01-01T00:00:00+00:00"}
        self.rows.append(row)
        return row

    async def lift(self, address: Any, by: str) -> dict[str, Any] | None:
        for row in self.rows:
            if row["address"] == str(address) and row["active"]:
                row.update(active=False, lifted_by=by)
                return row
        return None

    async def active(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["active"]]

    async def list(self, include_past: bool = False, limit: int = 500) -> list[dict[str, Any]]:
        return list(self.rows) if include_past else await self.active()


def failure(ip: str = "127.0.0.2", name: str = "ChallengeResponseFailed", service: str = "PJSIP",
            account: str = "agent1", transport: str = "UDP") -> Any:
    version = "IPV6" if ":" in ip else "IPV4"
    return parse_event({"Event": name, "Privilege": "security,all", "EventTV": "2026-01-01T00:00:00.000+0000",
                        "Severity": "Error", "Service": service, "EventVersion": "1", "AccountID": account,
                        "SessionID": "0x7f", "LocalAddress": f"IPV4/{transport}/127.0.0.1/5060",
                        "RemoteAddress": f"{version}/{transport}/{ip}/5062", "Challenge": "abc",
                        "Response": "x", "ExpectedResponse": ""}, time.time())


def guard(clock: Clock, blocker: Any = None, store: Any = None, **kw: Any) -> SipGuard:
    kw = {"threshold": 3, "window_s": 60, "ban_s": 600, "exempt": ["127.0.0.1/32", "::1/128"], **kw}
    return SipGuard(blocker or FakeBlocker(), store, clock=clock, **kw)


def test_security_events_are_typed_and_the_remote_address_validated() -> None:
    ev = failure()
    assert isinstance(ev, ChallengeResponseFailed)
    assert ev.service == "PJSIP" and ev.account_id == "agent1" and ev.severity == "Error"
    assert ev.remote_ip == ATTACKER and ev.remote_transport == "UDP"
    assert isinstance(failure(name="InvalidAccountID"), InvalidAccountID)
    acl = parse_event({"Event": "FailedACL", "ACLName": "phones", "RemoteAddress": "IPV4/TCP/10.0.0.9/5060"}, 0)
    assert isinstance(acl, FailedACL) and acl.acl_name == "phones" and str(acl.remote_ip) == "10.0.0.9"
    assert parse_remote_address("IPV6/UDP/2001:db8::1/5060") == (ipaddress.ip_address("2001:db8::1"), "UDP", 5060)
    assert parse_remote_address("IPV6/UDP/[2001:db8::1]/5060") is not None
    assert parse_remote_address("IPV6/UDP/::ffff:192.0.2.7/5060")[0] == ipaddress.ip_address("192.0.2.7")  # type: ignore[index]
    for bad in (None, "", "127.0.0.2", "IPV4/UDP/127.0.0.2", "IPV4/UDP/127.0.0.2;nft flush ruleset/5060",
                "IPV4/UDP/$(id)/5060", "IPV4/UDP/999.1.1.1/5060", "X/UDP/1.2.3.4/5", "IPV4/UDP/1.2.3.4/5/6"):
        assert parse_remote_address(bad) is None, bad


@pytest.mark.asyncio
async def test_threshold_within_the_window_bans_then_the_ban_ends() -> None:
    clock, blocker, store = Clock(), FakeBlocker(), FakeStore()
    g = guard(clock, blocker, store)
    assert g.on_event(failure()) is None
    clock.now += 1
    assert g.on_event(failure(account="agent2")) is None
    assert g.failures(ATTACKER) == 2
    clock.now += 1
    ban = g.on_event(failure())
    assert ban is not None and ban.failures == 3 and ban.accounts == ("agent1", "agent2")
    assert ban.reason == "ChallengeResponseFailed"
    await g.wait_idle()
    assert blocker.blocked == {ATTACKER: 600} and ban.enforced
    assert store.rows[0]["enforced"] is True and store.rows[0]["failures"] == 3
    # late events of the banned source do not count nor ban again
    assert g.on_event(failure()) is None and g.is_banned(ATTACKER)
    clock.now += 600
    assert not g.is_banned(ATTACKER)
    assert g.failures(ATTACKER) == 0  # counting starts afresh after a ban
    assert g.on_event(failure()) is None


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    g = guard(clock)
    for _ in range(10):
        assert g.record_failure(ATTACKER, "agent1", "ChallengeResponseFailed") is None
        clock.now += 30.5  # never 3 within 60 s
    assert g.failures(ATTACKER) == 1
    clock.now += 0.1
    g.record_failure(ATTACKER)
    clock.now += 0.1
    assert g.record_failure(ATTACKER) is not None  # 3 within 60 s


def test_loopback_is_exempt_unless_configured_and_sources_count_apart() -> None:
    clock = Clock()
    g = guard(clock)
    for _ in range(10):
        assert g.record_failure(PHONES) is None
        assert g.record_failure(ipaddress.ip_address("::1")) is None
    assert g.stats.exempt_ignored == 20
    g.record_failure(ATTACKER)
    g.record_failure(ATTACKER)
    assert g.record_failure(ipaddress.ip_address("127.0.0.3")) is None  # another source: its own count
    assert g.record_failure(ATTACKER) is not None
    strict = guard(clock, exempt=[])
    for _ in range(2):
        strict.record_failure(PHONES)
    assert strict.record_failure(PHONES) is not None


def test_only_failures_of_sip_count() -> None:
    g = guard(Clock(), threshold=1)
    assert g.on_event(failure(service="AMI")) is None  # a manager login failure is not a SIP attack
    assert g.on_event(failure(name="ChallengeSent")) is None
    assert g.on_event(failure(name="SuccessfulAuth")) is None
    assert g.on_event(parse_event({"Event": "ChallengeResponseFailed", "Service": "PJSIP",
                                   "RemoteAddress": "garbage"}, 0)) is None
    assert g.stats.failures_seen == 0


@pytest.mark.asyncio
async def test_ipv6_and_the_refusing_firewall_is_recorded_as_not_enforced() -> None:
    clock, blocker, store = Clock(), FakeBlocker(fail=True), FakeStore()
    g = guard(clock, blocker, store, threshold=1)
    ban = g.on_event(failure(ip="2001:db8::5"))
    await g.wait_idle()
    assert ban is not None and not ban.enforced and g.stats.enforce_errors == 1
    assert store.rows[0]["address"] == "2001:db8::5" and store.rows[0]["enforced"] is False


@pytest.mark.asyncio
async def test_unban_lifts_at_once_and_counting_restarts() -> None:
    clock, blocker, store = Clock(), FakeBlocker(), FakeStore()
    g = guard(clock, blocker, store)
    for _ in range(3):
        g.on_event(failure())
    await g.wait_idle()
    lifted = await g.unban(ATTACKER, "admin")
    assert lifted is not None and lifted["lifted_by"] == "admin" and lifted["active"] is False
    assert ATTACKER not in blocker.blocked and not g.is_banned(ATTACKER)
    assert await g.unban(ATTACKER, "admin") is None  # nothing to lift any more
    assert g.on_event(failure()) is None and g.failures(ATTACKER) == 1


@pytest.mark.asyncio
async def test_start_prepares_the_firewall_and_restores_active_bans() -> None:
    clock, blocker, store = Clock(), FakeBlocker(), FakeStore()
    store.rows.append({"address": "192.0.2.9", "active": True, "expires_at": "2999-01-01T00:00:00+00:00"})
    g = guard(clock, blocker, store)
    await g.start()
    assert blocker.setups == 1 and g.ready
    assert g.is_banned(ipaddress.ip_address("192.0.2.9"))
    assert ipaddress.ip_address("192.0.2.9") in blocker.blocked


def test_tracked_sources_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import acd.sip_guard as mod

    monkeypatch.setattr(mod, "MAX_TRACKED", 100)
    clock = Clock()
    g = guard(clock, threshold=5)
    for i in range(1000):
        g.record_failure(ipaddress.ip_address(f"10.0.{i // 256}.{i % 256}"))
    assert len(g._sources) <= 100


def test_nft_scripts_carry_only_validated_addresses_and_ports() -> None:
    nft = NftBlocker([5060, 5089])
    script = nft.block_script(ATTACKER, 600)
    assert script.splitlines() == [
        "add element inet ccpbx banned4 { 127.0.0.2 . 5060 timeout 600s, 127.0.0.2 . 5089 timeout 600s }",
        "delete element inet ccpbx banned4 { 127.0.0.2 . 5060, 127.0.0.2 . 5089 }",
        "add element inet ccpbx banned4 { 127.0.0.2 . 5060 timeout 600s, 127.0.0.2 . 5089 timeout 600s }"]
    assert "banned6 { 2001:db8::1 . 5060" in nft.block_script(ipaddress.ip_address("2001:db8::1"), 5)
    assert nft.unblock_script(ATTACKER).splitlines()[-1] == \
        "delete element inet ccpbx banned4 { 127.0.0.2 . 5060, 127.0.0.2 . 5089 }"
    setup = nft.setup_script()
    assert "ip saddr . th dport @banned4 drop" in setup and "flags timeout" in setup
    with pytest.raises(ValueError):
        nft.block_script("127.0.0.2; flush ruleset", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        NftBlocker([0])
    with pytest.raises(ValueError):
        NftBlocker([5060], table="x; flush ruleset")


def test_configuration_defaults_and_validation() -> None:
    g = parse_config({}).sip_guard
    assert (g.enabled, g.threshold, g.window_s, g.ban_s, g.blocker) == (True, 10, 60.0, 600.0, "nftables")
    assert [str(n) for n in g.exempt_networks()] == ["127.0.0.1/32", "::1/128"]
    custom = parse_config({"sip_guard": {"threshold": 5, "ban_s": 30, "exempt": ["192.0.2.0/24"]}}).sip_guard
    assert custom.exempt == ("192.0.2.0/24",) and custom.ban_s == 30
    for bad in ({"threshold": 0}, {"threshold": True}, {"window_s": 0}, {"ban_s": 10**9}, {"blocker": "iptables"},
                {"exempt": ["not-an-ip"]}, {"exempt": "127.0.0.1"}, {"unknown": 1}):
        with pytest.raises(ConfigError, match="sip_guard"):
            parse_config({"sip_guard": bad})
