"""The service's configuration: one TOML file written by `ccpbx-ctl setup`, read by every process.

Why one file: the PBX templates, the service, the simulator and the tests must agree on ports and secrets.
The file lives in the runtime folder (`var/` by default, ignored by git) because it holds generated secrets.
Every key has a documented default (docs/configuration.md); `CCPBX_CONFIG` points at another file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
"""Names that may reach the dialplan (queues, SIP users): lower-case, digits, `_` and `-` only."""

DID_RE = re.compile(r"^[0-9]{1,20}$")

DEFAULT_CONFIG_PATH = Path("var/ccpbx.toml")


class ConfigError(ValueError):
    """The configuration file is missing a value or holds one that cannot be used."""


@dataclass(frozen=True)
class DatabaseConfig:
    host: str = "127.0.0.1"
    port: int = 55432
    user: str = "ccpbx"
    password: str = ""
    name: str = "ccpbx"
    datadir: str = "var/pg"
    #: Events the service keeps in memory while PostgreSQL is unreachable; beyond it new events are refused
    #: (counted as `event_writer.refused` in /healthz, logged) rather than memory growing without limit.
    buffer_events: int = 200_000

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True)
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 55038
    user: str = "ccpbx"
    secret: str = ""
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 3.0
    action_timeout: float = 10.0


@dataclass(frozen=True)
class AgiConfig:
    host: str = "127.0.0.1"
    port: int = 54573


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 58080
    admin_token: str = ""
    #: The password of the web UI's bootstrap user `admin` (set on every start; empty: no such sign-in).
    admin_password: str = ""
    #: Mark the session cookie Secure (serve the UI behind TLS, e.g. a reverse proxy, and set this true).
    secure_cookies: bool = False
    #: Hours a web session lasts without activity (one shift by default).
    session_idle_h: float = 12.0


@dataclass(frozen=True)
class TrunkConfig:
    user: str = "carrier"
    password: str = ""


@dataclass(frozen=True)
class SipConfig:
    bind: str = "127.0.0.1"
    port: int = 55060
    public_host: str = "127.0.0.1"
    #: SIP over secure WebSocket for browser phones (Asterisk's TLS HTTP server, http.conf; same bind as SIP)
    wss_port: int = 55089
    #: the plain listener Asterisk's HTTP server needs besides the TLS one: always on 127.0.0.1 (http.conf)
    ws_port: int = 55088
    rtp_start: int = 30000
    rtp_end: int = 30999
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


@dataclass(frozen=True)
class PhoneConfig:
    """A SIP phone (desk phone or softphone) Asterisk knows as an endpoint."""

    user: str
    password: str
    role: str = "agent"  # agent | supervisor


@dataclass(frozen=True)
class QueueConfig:
    name: str
    strategy: str = "rrmemory"
    timeout_s: int = 15


@dataclass(frozen=True)
class RouteConfig:
    """An inbound route: a DID the carrier sends us, and the queue its calls go to."""

    did: str
    queue: str


@dataclass(frozen=True)
class AsteriskConfig:
    mode: str = "chroot"  # chroot (Debian sid root filesystem) | host (installed asterisk) | docker
    rootfs: str = "/var/cache/ccpbx/rootfs-22"
    binary: str = "/usr/sbin/asterisk"


@dataclass(frozen=True)
class ScreenPopConfig:
    """The CRM webhook called when an agent's phone rings (empty url: only the WebSocket feed)."""

    url: str = ""
    secret: str = ""


@dataclass(frozen=True)
class IvrConfig:
    """IVR flows: the hosts an `http_lookup` node may call (anything else is refused when a flow is saved)."""

    http_allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordingConfig:
    """Call recording (docs/recording.md): PCI pauses end by themselves after `pci_max_pause_s`; the retention
    purge runs every `purge_interval_s`; agents may play their own calls' recordings only if `agents_play_own`."""

    pci_max_pause_s: float = 180.0
    purge_interval_s: float = 3600.0
    agents_play_own: bool = False
    supervision_ring_s: int = 30


@dataclass(frozen=True)
class SipGuardConfig:
    """SIP password-guessing protection (docs/security-sip.md): a source address with `threshold` failed
    authentications (AMI security events) within `window_s` seconds is blocked for `ban_s` seconds.
    `exempt`: addresses or networks never blocked (loopback by default: the PBX's own phones in development and
    tests live there). `blocker`: `nftables` (drop the source's packets to the SIP port) or `none` (detect and
    record only)."""

    enabled: bool = True
    threshold: int = 10
    window_s: float = 60.0
    ban_s: float = 600.0
    exempt: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    blocker: str = "nftables"

    def exempt_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(e, strict=False) for e in self.exempt)


@dataclass(frozen=True)
class Config:
    node: str = "pbx1"
    runtime_dir: str = "var"
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    sip: SipConfig = field(default_factory=SipConfig)
    asterisk: AsteriskConfig = field(default_factory=AsteriskConfig)
    screenpop: ScreenPopConfig = field(default_factory=ScreenPopConfig)
    ivr: IvrConfig = field(default_factory=IvrConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    sip_guard: SipGuardConfig = field(default_factory=SipGuardConfig)
    phones: tuple[PhoneConfig, ...] = ()
    queues: tuple[QueueConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    demo_inbound_number: str = "2000"

    @property
    def runtime_path(self) -> Path:
        return Path(self.runtime_dir)

    def phone(self, user: str) -> PhoneConfig:
        for phone in self.phones:
            if phone.user == user:
                return phone
        raise KeyError(user)

    def route_for(self, did: str) -> RouteConfig | None:
        for route in self.routes:
            if route.did == did:
                return route
        return None


def _section(data: dict[str, Any], name: str, cls: Any) -> Any:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = set(cls.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {sorted(unknown)}")
    return cls(**raw)


def _validate(cfg: Config) -> None:
    names = [p.user for p in cfg.phones] + [cfg.sip.trunk.user]
    for user in names:
        if not NAME_RE.match(user):
            raise ConfigError(f"SIP user {user!r}: use lower-case letters, digits, '_' and '-' only")
    if len(set(names)) != len(names):
        raise ConfigError("SIP users must be unique (phones and trunk)")
    for phone in cfg.phones:
        if phone.role not in ("agent", "supervisor"):
            raise ConfigError(f"phone {phone.user}: role must be agent or supervisor")
        if len(phone.password) < 16:
            raise ConfigError(f"phone {phone.user}: password must be at least 16 characters")
    queue_names = {q.name for q in cfg.queues}
    for q in cfg.queues:
        if not NAME_RE.match(q.name):
            raise ConfigError(f"queue {q.name!r}: use lower-case letters, digits, '_' and '-' only")
        if q.strategy not in ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom"):
            raise ConfigError(f"queue {q.name}: unknown strategy {q.strategy!r}")
    for r in cfg.routes:
        if not DID_RE.match(r.did):
            raise ConfigError(f"route {r.did!r}: a DID is 1-20 digits")
        if r.queue not in queue_names:
            raise ConfigError(f"route {r.did}: queue {r.queue!r} is not configured")
    if cfg.screenpop.url and not cfg.screenpop.url.startswith(("http://", "https://")):
        raise ConfigError("screenpop.url must be an http(s) URL")
    if cfg.screenpop.url and len(cfg.screenpop.secret) < 16:
        raise ConfigError("screenpop.secret must be at least 16 characters")
    if cfg.asterisk.mode not in ("chroot", "host", "docker"):
        raise ConfigError("asterisk.mode must be chroot, host or docker")
    rec = cfg.recording
    if not 1 <= rec.pci_max_pause_s <= 3600 or not 1 <= rec.purge_interval_s <= 86400:
        raise ConfigError("recording.pci_max_pause_s: 1-3600; recording.purge_interval_s: 1-86400")
    if not 5 <= rec.supervision_ring_s <= 120:
        raise ConfigError("recording.supervision_ring_s: 5-120")
    if not 10 <= cfg.database.buffer_events <= 10_000_000:
        raise ConfigError("database.buffer_events: 10-10000000")
    if not cfg.sip.rtp_start < cfg.sip.rtp_end:
        raise ConfigError("sip.rtp_start must be below sip.rtp_end")
    ports = (cfg.sip.port, cfg.sip.wss_port, cfg.sip.ws_port)
    if not all(1 <= p <= 65535 for p in ports) or len(set(ports)) != 3:
        raise ConfigError("sip.port, sip.wss_port, sip.ws_port: 1-65535 each, all different")
    _validate_sip_guard(cfg.sip_guard)


def _validate_sip_guard(g: SipGuardConfig) -> None:
    if not isinstance(g.enabled, bool):
        raise ConfigError("sip_guard.enabled: true or false")
    if not isinstance(g.threshold, int) or isinstance(g.threshold, bool) or not 1 <= g.threshold <= 10000:
        raise ConfigError("sip_guard.threshold: an integer from 1 to 10000")
    for key, value, low, high in (("window_s", g.window_s, 1, 86400), ("ban_s", g.ban_s, 1, 30 * 86400)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"sip_guard.{key}: {low}-{high} seconds")
    if g.blocker not in ("nftables", "none"):
        raise ConfigError("sip_guard.blocker must be nftables or none")
    for entry in g.exempt:
        try:
            ipaddress.ip_network(entry, strict=False)
        except (TypeError, ValueError):
            raise ConfigError(f"sip_guard.exempt: {entry!r} is not an IP address or network") from None


def _sip_guard_section(data: dict[str, Any]) -> SipGuardConfig:
    raw = data.get("sip_guard", {})
    if not isinstance(raw, dict):
        raise ConfigError("[sip_guard] must be a table")
    raw = dict(raw)
    if "exempt" in raw:
        exempt = raw["exempt"]
        if not isinstance(exempt, list) or not all(isinstance(e, str) for e in exempt):
            raise ConfigError("sip_guard.exempt: a list of IP addresses or networks (strings)")
        raw["exempt"] = tuple(exempt)
    guard: SipGuardConfig = _section({"sip_guard": raw}, "sip_guard", SipGuardConfig)
    return guard


def parse_config(data: dict[str, Any]) -> Config:
    """Build a validated Config from parsed TOML (tables as dicts)."""
    sip_raw = dict(data.get("sip", {}))
    trunk = TrunkConfig(**sip_raw.pop("trunk", {}))
    try:
        cfg = Config(
            node=str(data.get("node", "pbx1")),
            runtime_dir=str(data.get("runtime_dir", "var")),
            database=_section(data, "database", DatabaseConfig),
            ami=_section(data, "ami", AmiConfig),
            agi=_section(data, "agi", AgiConfig),
            http=_section(data, "http", HttpConfig),
            sip=SipConfig(trunk=trunk, **sip_raw),
            asterisk=_section(data, "asterisk", AsteriskConfig),
            screenpop=_section(data, "screenpop", ScreenPopConfig),
            ivr=IvrConfig(tuple(str(h) for h in data.get("ivr", {}).get("http_allowed_hosts", []))),
            recording=_section(data, "recording", RecordingConfig),
            sip_guard=_sip_guard_section(data),
            phones=tuple(PhoneConfig(**p) for p in data.get("phones", [])),
            queues=tuple(QueueConfig(**q) for q in data.get("queues", [])),
            routes=tuple(RouteConfig(**r) for r in data.get("routes", [])),
            demo_inbound_number=str(data.get("demo_inbound_number", "2000")),
        )
    except TypeError as exc:  # unknown or missing key in a table
        raise ConfigError(str(exc)) from exc
    _validate(cfg)
    return cfg


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the TOML file at `path`, `$CCPBX_CONFIG`, or `var/ccpbx.toml`."""
    chosen = Path(path or os.environ.get("CCPBX_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        with chosen.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{chosen}: not found; run `make setup` (or `ccpbx-ctl setup`) first") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: {exc}") from exc
    return parse_config(data)
