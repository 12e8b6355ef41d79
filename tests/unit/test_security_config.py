"""Security checks over the RENDERED Asterisk configuration and the facts of the stack that need no PBX.

Rendered exactly as setup does (ops/asterisk_config.py render() of asterisk-conf/ from a freshly generated
ccpbx.toml), then read back with a small parser of Asterisk's .conf syntax, so a template edit that weakens AMI,
PJSIP or the dialplan fails here in CI. What each test proves is in its docstring; docs/security.md is the map.

The Asterisk version check against the CVE table (tests/asterisk_cves.py) needs the root filesystem, so it lives
in tests/live/test_asterisk_version.py; the version parsing and table logic it relies on are checked here.
CVE-2026-57191: no record of it could be found (see tests/asterisk_cves.py); the version floor used for it is
the latest 22.x fix that can be cited, CVE-2026-23738 (22.8.2).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from acd import config_models as m
from acd.config_store import RESOURCES, ConfigStore, new_secret
from ops import generate
from ops.asterisk_config import PbxPaths, render
from ops.generate import build_config_data, write_config
from reporting.migrate import migrate
from service.config import Config, load_config
from telephony.fastagi import AgiSession, FastAgiServer
from tests import asterisk_cves, dialplan_taint

REPO = Path(__file__).resolve().parents[2]
URLSAFE = re.compile(r"^[A-Za-z0-9_-]+$")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


# ------------------------------------------------------------------ a small reader of Asterisk .conf files
@dataclass
class Section:
    name: str
    templates: tuple[str, ...] = ()
    is_template: bool = False
    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> list[str]:
        return [v for k, v in self.items if k == key]

    def one(self, key: str) -> str | None:
        values = self.get(key)
        return values[-1] if values else None


def parse_conf(text: str) -> list[Section]:
    sections: list[Section] = []
    for raw in text.splitlines():
        line = re.sub(r"(?<!\\);.*$", "", raw).strip()
        if not line:
            continue
        head = re.match(r"^\[([^\]]+)\](?:\(([^)]*)\))?$", line)
        if head:
            opts = [o.strip() for o in (head.group(2) or "").split(",") if o.strip()]
            sections.append(Section(head.group(1), tuple(o for o in opts if o != "!"), "!" in opts))
            continue
        key, sep, value = line.partition("=")
        assert sep and sections, f"unparsable line {raw!r}"
        sections[-1].items.append((key.strip(), value.lstrip(">").strip()))
    return sections


def resolved(sections: list[Section], sec: Section) -> Section:
    """The section with its templates' items first (Asterisk's inheritance), its own after."""
    items: list[tuple[str, str]] = []
    for t in sec.templates:
        base = next(s for s in sections if s.name == t and s.is_template)
        items += resolved(sections, base).items
    return Section(sec.name, sec.templates, sec.is_template, items + sec.items)


@dataclass
class Rendered:
    cfg: Config
    files: dict[str, str]

    def conf(self, name: str) -> list[Section]:
        return parse_conf(self.files[name])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    base = tmp_path_factory.mktemp("render")
    path = base / "ccpbx.toml"
    assert write_config(path, build_config_data(base))
    cfg = load_config(path)
    files = render(cfg, base / "etc", PbxPaths())
    return Rendered(cfg, {f.name: f.read_text() for f in files})


# ------------------------------------------------------------------ AMI
Rule = tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]


def _acl(section: Section) -> list[Rule]:
    rules = []
    for k, v in section.items:
        if k in ("deny", "permit"):
            addr, _, mask = v.partition("/")
            rules.append((k, ipaddress.ip_network(f"{addr}/{mask or '32'}", strict=False)))
    return rules


def allowed_by_acl(rules: list[Rule], ip: str) -> bool:
    """Asterisk's ACL: no rules = allowed; otherwise the last rule that matches decides (default permit)."""
    verdict = True
    for kind, net in rules:
        if ipaddress.ip_address(ip) in net:
            verdict = kind == "permit"
    return verdict


def test_ami_listens_on_loopback_and_every_user_is_loopback_only_least_privilege(rendered: Rendered) -> None:
    """AMI: bound to 127.0.0.1; every user has `deny=0.0.0.0/0.0.0.0` then only loopback `permit`s (so no other
    address may log in, checked by evaluating the ACL), the service user has no system/command/config/all in
    `write=` (read=system is needed for FullyBooted), a 24+ character generated secret, and no AMI over HTTP."""
    sections = rendered.conf("manager.conf")
    general = next(s for s in sections if s.name == "general")
    assert general.one("enabled") == "yes"
    assert general.one("bindaddr") == "127.0.0.1"
    assert general.one("webenabled") in (None, "no"), "AMI over HTTP"
    assert general.one("tlsenable") in (None, "no")
    if "http.conf" in rendered.files:  # Asterisk's HTTP server (WebSocket SIP for browser phones)
        http = next(s for s in rendered.conf("http.conf") if s.name == "general")
        assert ipaddress.ip_address(http.one("bindaddr") or "0.0.0.0") in LOOPBACK, "plain HTTP off the loopback"
        # no static files, no /httpstatus page (CVE-2026-23738 was there); both default to no in Asterisk 22
        for key in ("enable_static", "enablestatic", "enable_status"):
            assert http.one(key) in (None, "no"), key
        tls_host = (http.one("tlsbindaddr") or "").rpartition(":")[0]
        assert not tls_host or tls_host == rendered.cfg.sip.bind, "TLS HTTP listener where SIP is, nowhere else"
    users = [s for s in sections if s.name != "general"]
    assert [u.name for u in users] == [rendered.cfg.ami.user], "exactly one AMI user: the service's"
    for user in users:
        rules = _acl(user)
        assert rules and rules[0] == ("deny", ipaddress.ip_network("0.0.0.0/0")), f"{user.name}: deny all first"
        assert all(isinstance(net, ipaddress.IPv4Network) and net.subnet_of(LOOPBACK)
                   for kind, net in rules if kind == "permit"), f"{user.name}: {rules}"
        assert allowed_by_acl(rules, "127.0.0.1")
        for outside in ("192.0.2.2", "10.0.0.1", "0.0.0.0", "255.255.255.255", "128.0.0.1"):
            assert not allowed_by_acl(rules, outside), f"{user.name} may log in from {outside}"
        write = {p.strip() for v in user.get("write") for p in v.split(",")}
        assert write and not write & {"system", "command", "config", "all"}, write
        read = {p.strip() for v in user.get("read") for p in v.split(",")}
        assert "system" in read and "all" not in read  # FullyBooted needs read=system, nothing needs all
        secret = user.one("secret") or ""
        assert secret == rendered.cfg.ami.secret and len(secret) >= 24 and URLSAFE.match(secret)
    # the service itself connects to loopback
    assert ipaddress.ip_address(rendered.cfg.ami.host) in LOOPBACK


def test_acl_evaluation_used_above_can_fail() -> None:
    """The ACL reading above is not vacuous: a permit of the world, or a missing deny, lets outsiders in."""
    assert allowed_by_acl([("deny", ipaddress.ip_network("0.0.0.0/0")),
                           ("permit", ipaddress.ip_network("0.0.0.0/0"))], "192.0.2.2")
    assert allowed_by_acl([("permit", ipaddress.ip_network("127.0.0.1/32"))], "192.0.2.2")
    assert not allowed_by_acl([("permit", ipaddress.ip_network("127.0.0.1/32")),
                               ("deny", ipaddress.ip_network("0.0.0.0/0"))], "127.0.0.1")


# ------------------------------------------------------------------ PJSIP
def test_pjsip_has_no_anonymous_or_unauthenticated_endpoint(rendered: Rendered) -> None:
    """PJSIP: no `anonymous` endpoint/identify, no IP or anonymous identification (module not loaded either),
    every endpoint section (templates applied) names an `auth` that exists, is userpass with a 24+ character
    password, and nothing allows unauthenticated requests (`allow_unauthenticated_options`, chan_sip's guest)."""
    sections = rendered.conf("pjsip.conf")
    assert not [s for s in sections if s.name.lower() == "anonymous"]
    glob = next(s for s in sections if s.one("type") == "global")
    order = {o.strip() for o in (glob.one("endpoint_identifier_order") or "").split(",")}
    assert order and order <= {"username", "auth_username"}, order
    objects = [resolved(sections, s) for s in sections if not s.is_template]
    assert not [s for s in objects if s.one("type") == "identify"], "identify = match by IP: not wanted"
    auths = {s.name: s for s in objects if s.one("type") == "auth"}
    endpoints = [s for s in objects if s.one("type") == "endpoint"]
    assert endpoints, "the trunk endpoint must be found"
    for ep in endpoints:
        name = ep.one("auth")
        assert name and name in auths, f"endpoint {ep.name} has no (existing) auth"
        auth = auths[name]
        assert auth.one("auth_type") == "userpass"
        password = auth.one("password") or ""
        assert len(password) >= 24 and URLSAFE.match(password), f"auth {name}: weak password"
        assert ep.one("allow_unauthenticated_options") in (None, "no")
        assert ep.one("context") in ("from-trunk", "agents", "supervisors")
    everything = "\n".join(rendered.files.values()).lower()
    assert "allowguest" not in everything and "allow_unauthenticated" not in everything
    modules = next(s for s in rendered.conf("modules.conf") if s.name == "modules")
    assert modules.one("autoload") == "no"
    loaded = set(modules.get("load")) | set(modules.get("require"))
    for bad in ("res_pjsip_endpoint_identifier_anonymous.so", "res_pjsip_endpoint_identifier_ip.so", "chan_sip.so",
                "chan_iax2.so", "res_ari.so", "res_ari_channels.so", "pbx_lua.so", "pbx_ael.so"):
        assert bad not in loaded, bad


@pytest_asyncio.fixture
async def pool(pg_db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(pg_db, min_size=1, max_size=2)
    await migrate(p)
    yield p
    await p.close()


@pytest.mark.asyncio
async def test_realtime_phones_every_endpoint_authenticates(rendered: Rendered, pool: asyncpg.Pool) -> None:
    """Phones come from PostgreSQL (extconfig.conf maps ps_endpoints/ps_auths to views, migrations 0005-0006).
    Read through the very views the rendered extconfig.conf names: every endpoint row (live phones and the
    tombstones of deleted ones) has an `auth` that exists as a userpass auth with a password; API-created phones
    get a 24+ character URL-safe generated password; a removed phone's auth password is random on every read
    (no digest can match); the database refuses a weak password; the views cannot be written."""
    mapping = dict(next(s for s in rendered.conf("extconfig.conf") if s.name == "settings").items)
    ep_view = mapping["ps_endpoints"].split(",")[2]
    auth_view = mapping["ps_auths"].split(",")[2]
    store = ConfigStore(pool)
    created = [await store.create(RESOURCES["phones"], m.PhoneIn.model_validate({"name": f"desk{i}"}))
               for i in range(3)]
    for phone in created:
        assert len(phone["password"]) >= 24 and URLSAFE.match(phone["password"])
    rotated = await store.rotate_phone_password("desk0")
    assert rotated["password"] != created[0]["password"] and len(rotated["password"]) >= 24
    await pool.execute("INSERT INTO phones (name, password, kind) VALUES ('super9', $1, 'supervisor')", new_secret())
    await store.delete(RESOURCES["phones"], "desk2")  # leaves a tombstone

    endpoints = await pool.fetch(f"SELECT * FROM {ep_view}")
    auths = {r["id"]: r for r in await pool.fetch(f"SELECT * FROM {auth_view}")}
    assert {r["id"] for r in endpoints} == {"desk0", "desk1", "desk2", "super9"}
    for row in endpoints:
        auth = auths.get(row["auth"])
        assert auth is not None, f"endpoint {row['id']} without auth"
        assert auth["auth_type"] == "userpass" and auth["username"] == row["id"]
        assert len(auth["password"]) >= 24, f"{row['id']}: short password"
    columns = set(endpoints[0].keys())
    assert not {c for c in columns if "unauthenticated" in c or "identify" in c}, columns
    tomb1 = await pool.fetchval(f"SELECT password FROM {auth_view} WHERE id = 'desk2'")
    tomb2 = await pool.fetchval(f"SELECT password FROM {auth_view} WHERE id = 'desk2'")
    assert tomb1 != tomb2 and len(tomb1) >= 32
    assert await pool.fetchval(f"SELECT aors FROM {ep_view} WHERE id = 'desk2'") is None  # cannot be rung
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("INSERT INTO phones (name, password) VALUES ('weak', 'short')")
    # not writable through Asterisk's login: the mapped view (a UNION) nor the 0005 view under it (REVOKEd)
    with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.ObjectNotInPrerequisiteStateError)):
        await pool.execute(f"UPDATE {auth_view} SET password = 'x' WHERE id = 'desk0'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute("UPDATE ps_auths SET password = 'x' WHERE id = 'desk0'")


# ------------------------------------------------------------------ secrets
def test_generated_secrets_are_long_urlsafe_and_fresh(tmp_path: Path) -> None:
    """ops/generate.py: every SIP/AMI/database/web secret of a generated config is ≥ 24 URL-safe characters and
    unique; `password()` and acd/config_store.py `new_secret()` (API phone passwords and tokens) are ≥ 24 URL-safe
    characters drawn from the whole alphabet (no repeats in 300 draws, ≥ 60 of the 64 symbols seen)."""
    data = build_config_data(tmp_path)
    secrets_ = [p["password"] for p in data["phones"]] + [
        data["sip"]["trunk"]["password"], data["ami"]["secret"], data["database"]["password"],
        data["http"]["admin_password"], data["http"]["admin_token"]]
    assert len(set(secrets_)) == len(secrets_)
    for s in secrets_:
        assert len(s) >= 24 and URLSAFE.match(s), s
    for make in (generate.password, new_secret):
        drawn = [make() for _ in range(300)]
        assert len(set(drawn)) == len(drawn)
        assert min(len(d) for d in drawn) >= 24 and all(URLSAFE.match(d) for d in drawn)
        seen = set("".join(drawn))
        assert len(seen) >= 60 and seen <= set(string.ascii_letters + string.digits + "-_")


# ------------------------------------------------------------------ FastAGI and other listeners
def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: just picks the outgoing interface
            addr = str(s.getsockname()[0])
    except OSError:
        return None
    return None if ipaddress.ip_address(addr) in LOOPBACK else addr


@pytest.mark.asyncio
async def test_fastagi_binds_loopback_and_the_dialplan_calls_loopback(rendered: Rendered) -> None:
    """FastAGI: the generated config binds it to 127.0.0.1, the rendered dialplan calls agi://127.0.0.1, and the
    real server started with that host accepts on loopback while a connection to this machine's other address on
    the same port is refused. The other generated listeners (HTTP, PostgreSQL, SIP by default) are loopback too."""
    cfg = rendered.cfg
    assert cfg.agi.host == "127.0.0.1"
    assert re.search(rf"^AGI_URL = agi://127\.0\.0\.1:{cfg.agi.port}$", rendered.files["extensions.conf"], re.M)
    for host in (cfg.http.host, cfg.database.host, cfg.sip.bind):
        assert ipaddress.ip_address(host) in LOOPBACK, host

    async def handler(s: AgiSession) -> None:
        await s.answer()

    server = FastAgiServer(cfg.agi.host, 0, handler, header_timeout=1.0)
    await server.start()
    try:
        assert all(ipaddress.ip_address(s.getsockname()[0]) in LOOPBACK for s in server.sockets)
        _, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.close()
        other = _non_loopback_address()
        if other is not None:
            with pytest.raises(OSError):
                await asyncio.wait_for(asyncio.open_connection(other, server.port), 2)
    finally:
        await server.stop()


# ------------------------------------------------------------------ the dialplan
AGI_SET = re.compile(r'set_variable\("([A-Z][A-Z0-9_]*)"')
AMI_SET = re.compile(r'"([A-Z][A-Z0-9_]*)=\{')


def _outside_variables() -> set[str]:
    """Variables the service sets from outside the dialplan: FastAGI SET VARIABLE (ivr/) and AMI Originate
    `Variable` (acd/, recording/)."""
    names: set[str] = set()
    for folder in ("ivr", "acd", "recording"):
        for f in (REPO / folder).glob("*.py"):
            text = f.read_text()
            names |= set(AGI_SET.findall(text)) | set(AMI_SET.findall(text))
    return names


def test_dialplan_sinks_only_get_filtered_values(rendered: Rendered) -> None:
    """Rendered extensions.conf: along every path from every extension (tests/dialplan_taint.py says exactly
    what is modelled), no argument of Dial, Queue, MixMonitor, Playback, ChanSpy or UserEvent carries
    `${EXTEN}`, a `${CALLERID()}` field, DTMF or a variable set from outside (the FastAGI IVR's, an Originate's)
    that was not FILTERed or REGEX-checked on that path. Also: every sink call in the file was checked, and the
    variables the service really sets from outside are never assumed clean."""
    text = rendered.files["extensions.conf"]
    report = dialplan_taint.check(text)
    assert report.violations == [], "\n".join(map(str, report.violations))
    sink_lines = {n for n, line in enumerate(text.splitlines(), 1)
                  if re.search(r"\b(Dial|Queue|MixMonitor|Playback|ChanSpy|UserEvent)\(", line.split(";")[0])}
    assert sink_lines and report.sink_sites == sink_lines, "a sink call was not reached by the analysis"
    outside = _outside_variables()
    assert {"IVR_QUEUE", "IVR_TRANSFER_EXT", "IVR_TRANSFER_NUM", "CB_NUMBER", "REC_FILE", "SPY_TARGET"} <= outside
    assert not outside & (dialplan_taint.CLEAN_BUILTINS | dialplan_taint.parse(text).globals)
    # The outside values that do reach sinks (after their checks) were seen by the analysis.
    assert {"IVR_QUEUE", "IVR_TRANSFER_EXT", "IVR_TRANSFER_NUM", "CB_NUMBER", "REC_FILE"} <= report.sink_vars


_TRANSFER_GUARD = 'GotoIf($[${REGEX("^[0-9]{2,8}$" ${IVR_TRANSFER_EXT})}]?ext)'


@pytest.mark.parametrize(("mutate", "culprit"), [
    # the classic: a pattern extension dialled as it came in
    (lambda t: t + "\n[evil]\nexten => _X.,1,Dial(PJSIP/${EXTEN})\n", "EXTEN"),
    (lambda t: t + "\n[evil]\nexten => s,1,Playback(${CALLERID(num)})\n", "CALLERID(num)"),
    (lambda t: t + "\n[evil]\nexten => s,1,Read(DIGITS,beep,4)\n same => n,Playback(custom/${DIGITS})\n", "DIGITS"),
    # a guard removed, loosened, unanchored, or made an alternation
    (lambda t: t.replace(_TRANSFER_GUARD, "Goto(ext)"), "IVR_TRANSFER_EXT"),
    (lambda t: t.replace(_TRANSFER_GUARD, _TRANSFER_GUARD.replace("^[0-9]{2,8}$", "^.*$")), "IVR_TRANSFER_EXT"),
    (lambda t: t.replace(_TRANSFER_GUARD, _TRANSFER_GUARD.replace("^[0-9]{2,8}$", "[0-9]{2,8}")), "IVR_TRANSFER_EXT"),
    (lambda t: t.replace(_TRANSFER_GUARD, _TRANSFER_GUARD.replace("^[0-9]{2,8}$", "^[0-9&]{2,8}$")),
     "IVR_TRANSFER_EXT"),
    (lambda t: t.replace(_TRANSFER_GUARD, _TRANSFER_GUARD.replace("^[0-9]{2,8}$", "^[0-9]+|x$")), "IVR_TRANSFER_EXT"),
    # a checked value overwritten before use
    (lambda t: t.replace(" same => n,Set(QUEUE_MAX_PENALTY=)\n",
                         " same => n,Set(QUEUE_MAX_PENALTY=)\n same => n,Set(IVR_QUEUE=${IVR_INPUTS})\n", 1),
     "IVR_QUEUE"),
    # a FILTER that keeps a separator
    (lambda t: t.replace("Set(QW=${FILTER(0-9,${IVR_MAX_WAIT})})", "Set(QW=${FILTER(0-9\\x2C,${IVR_MAX_WAIT})})"),
     "QW"),
    # the check is on the wrong branch: reached when the regex did NOT match
    (lambda t: t.replace('${IVR_QUEUE})}]?:bad)\n same => n,Set(QP=${FILTER(0-9,${IVR_PRIORITY})})\n same => n,Set(__',
                         '${IVR_QUEUE})}]?bad:)\n same => n,Set(QP=${FILTER(0-9,${IVR_PRIORITY})})\n same => n,Set(__'),
     "IVR_QUEUE"),
    # the ChanSpy options unchecked (an Originate straight to `spy` could pass r() to record to a file)
    (lambda t: t.replace(' & ${REGEX("^qE[wB]?$" ${SPYOPTS})}', ""), "SPYOPTS"),
    # a file name check that allows ../
    (lambda t: t.replace("{0,119}[.]wav$", "{0,119}[./]wav$"), "REC_FILE"),
])
def test_dialplan_check_catches_injections(rendered: Rendered, mutate: object, culprit: str) -> None:
    """The dialplan check above can fail: each mutation of the real dialplan is a known injection shape, and the
    check must name the untrusted value that now reaches a sink."""
    text = rendered.files["extensions.conf"]
    assert callable(mutate)
    changed = mutate(text)
    assert changed != text, "the mutation did not apply: the dialplan changed, update the test"
    report = dialplan_taint.check(changed)
    assert any(culprit in v.tainted for v in report.violations), [str(v) for v in report.violations]


# ------------------------------------------------------------------ versions (the table the live check uses)
def test_version_parsing_and_cve_floors() -> None:
    """The live version check (tests/live/test_asterisk_version.py) reads `asterisk -V` of the root filesystem;
    here: Debian's banner parses, floors compare numerically (22.10 > 22.8), and docs/security.md lists every CVE
    with its floor (so the table and the documentation cannot drift apart)."""
    assert asterisk_cves.parse_version("Asterisk 22.10.1+dfsg+~cs6.17.60671434-1") == (22, 10, 1)
    assert asterisk_cves.parse_version("Asterisk 22.8.2") == (22, 8, 2)
    for bad in ("Asterisk GIT-master-abc", "", "22.1.0"):
        with pytest.raises(ValueError):
            asterisk_cves.parse_version(bad)
    assert asterisk_cves.unpatched((22, 10, 1)) == []
    assert [c.cve for c in asterisk_cves.unpatched((22, 8, 1))] == ["CVE-2026-57191"]
    assert len(asterisk_cves.unpatched((21, 4, 2))) == len(asterisk_cves.CVES)
    doc = (REPO / "docs" / "security.md").read_text()
    for c in asterisk_cves.CVES:
        assert c.cve in doc and ".".join(map(str, c.fixed_22)) in doc and c.source in doc, c.cve
        if not c.found:
            assert c.checked_as in doc
