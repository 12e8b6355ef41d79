"""Generate an instance's configuration file with fresh secrets and free ports.

Why generated: no secret may live in git, and two PBXs on one machine (the dev stack and a test run) must not
collide, so ports are chosen free at generation time. An existing file is kept as it is (setup is idempotent:
re-running it must not change the passwords phones were configured with).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import socket
from pathlib import Path
from typing import Any


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 for TCP (or UDP with kind=SOCK_DGRAM) right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP (SIP listens on UDP; keep TCP free too for a later transport)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port found")


def rtp_range(size: int = 2400) -> tuple[int, int]:
    """A random even-aligned RTP range in 20000-39999, so parallel PBXs rarely overlap. 2 400 ports hold ~600
    concurrent calls (two channels a call, an RTP and an RTCP port each): more than this 2-core machine carries
    (bench/load.py); a smaller range was the first limit a busy center would hit."""
    start = random.randrange(20000, 40000 - size, 2)
    return start, start + size - 1


def world_traversable(path: Path) -> bool:
    """True when every folder above `path` lets other users through (the `postgres` user must reach it)."""
    for parent in path.resolve().parents:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return False
    return True


def pg_datadir(runtime_dir: Path) -> Path:
    """The cluster's folder: in the runtime folder when PostgreSQL's own user can reach it, else under
    /var/lib/ccpbx (a clone in a private temporary folder is not reachable by `postgres`)."""
    inside = runtime_dir.resolve() / "pg"
    if world_traversable(inside):
        return inside
    digest = hashlib.sha256(str(runtime_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/var/lib/ccpbx") / digest / "pg"


def default_rootfs() -> str:
    """Where the Asterisk root filesystem is cached (outside any clone): `$CCPBX_ROOTFS` overrides."""
    return os.environ.get("CCPBX_ROOTFS", "/var/cache/ccpbx/rootfs-22")


def password() -> str:
    return secrets.token_urlsafe(24)


def build_config_data(
    runtime_dir: Path, *, agents: int = 4, supervisors: int = 1, node: str = "pbx1",
    rootfs: str | None = None, asterisk_mode: str = "chroot",
    http_port: int | None = None, sip_bind: str = "127.0.0.1",
) -> dict[str, Any]:
    rtp_start, rtp_end = rtp_range()
    phones = [{"user": f"agent{i}", "password": password(), "role": "agent"} for i in range(1, agents + 1)]
    phones += [
        {"user": f"super{i}", "password": password(), "role": "supervisor"} for i in range(1, supervisors + 1)
    ]
    return {
        "node": node,
        "runtime_dir": str(runtime_dir.resolve()),
        "demo_inbound_number": "2000",
        "database": {
            "host": "127.0.0.1", "port": free_port(), "user": "ccpbx", "password": password(),
            "name": "ccpbx", "datadir": str(pg_datadir(runtime_dir)),
        },
        "ami": {"host": "127.0.0.1", "port": free_port(), "user": "ccpbx-service", "secret": password()},
        "agi": {"host": "127.0.0.1", "port": free_port()},
        "http": {"host": "127.0.0.1", "port": http_port or free_port(), "admin_token": secrets.token_urlsafe(32),
                 "admin_password": password()},
        "sip": {
            "bind": sip_bind, "port": free_udp_tcp_port(), "public_host": "127.0.0.1",
            "wss_port": free_port(), "ws_port": free_port(),
            "rtp_start": rtp_start, "rtp_end": rtp_end,
            "trunk": {"user": "carrier", "password": password()},
        },
        "asterisk": {"mode": asterisk_mode, "rootfs": rootfs or default_rootfs()},
        "screenpop": {"url": "", "secret": secrets.token_urlsafe(24)},
        "phones": phones,
        "queues": [{"name": "support", "strategy": "rrmemory", "timeout_s": 15}],
        "routes": [{"did": "2000", "queue": "support"}],
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of these characters is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(data: dict[str, Any]) -> str:
    """Tiny TOML writer for this file's shape: scalars, tables (one level of sub-table), arrays of tables."""
    lines: list[str] = ["# Generated by `ccpbx-ctl setup`: holds secrets, keep out of git. Docs: docs/configuration.md"]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_table_array(v)}
    for k, v in scalars.items():
        lines.append(f"{k} = {_toml_value(v)}")

    def table(name: str, body: dict[str, Any]) -> None:
        lines.append(f"\n[{name}]")
        for k, v in body.items():
            if not isinstance(v, dict):
                lines.append(f"{k} = {_toml_value(v)}")
        for k, v in body.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for k, v in data.items():
        if isinstance(v, dict):
            table(k, v)
    for k, v in data.items():
        if _is_table_array(v):
            for item in v:
                lines.append(f"\n[[{k}]]")
                lines.extend(f"{ik} = {_toml_value(iv)}" for ik, iv in item.items())
    return "\n".join(lines) + "\n"


def upgrade_config(path: Path) -> list[str]:
    """Add the secrets that newer code needs to an existing file (keeping every value it has); the names added."""
    import tomllib

    data = tomllib.loads(path.read_text())
    added = []
    http = data.setdefault("http", {})
    if not http.get("admin_password"):
        http["admin_password"] = password()
        added.append("http.admin_password")
    sip = data.setdefault("sip", {})
    for key in ("wss_port", "ws_port"):  # browser phones (SIP over WebSocket), added after the first release
        if not sip.get(key):
            sip[key] = free_port()
            added.append(f"sip.{key}")
    if added:
        write_config(path, data, overwrite=True)
    return added


def write_config(path: Path, data: dict[str, Any], *, overwrite: bool = False) -> bool:
    """Write the file with mode 0600. Returns False (and leaves it) when it exists and overwrite is off."""
    if path.exists() and not overwrite:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(to_toml(data))
    tmp.chmod(0o600)
    tmp.replace(path)
    return True
