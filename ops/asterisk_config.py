"""Render `asterisk-conf/` templates into an instance's runtime folder.

Templates use `@@NAME@@` placeholders (Asterisk's own `${...}` syntax stays untouched). Secrets and ports
come from the generated configuration file, never from git. Phones and queues are not rendered: Asterisk reads
them from PostgreSQL (res_pgsql.conf, extconfig.conf, sorcery.conf; migrations 0005-0006): phones per request
(with a memory copy for database outages), queues and penalty rules at `QueueReload`, which the service sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from service.config import Config

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "asterisk-conf"
PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")
TEMPLATE_SUFFIXES = (".conf",)
#: Files earlier versions generated (with phone passwords): removed from an instance's folder when rendering.
OBSOLETE_FILES = ("pjsip_phones.conf", "queues_generated.conf")
#: Characters that would end or break a value in an Asterisk .conf file (`;` starts a comment).
_UNSAFE_CONF_VALUE = re.compile(r"[;\r\n]")


class RenderError(RuntimeError):
    """A template refers to a value the configuration does not provide."""


@dataclass(frozen=True)
class PbxPaths:
    """Where Asterisk sees its folders (inside the chroot, or on the host for an installed Asterisk)."""

    etc: str = "/etc/asterisk"
    run: str = "/run/asterisk"
    log: str = "/var/log/asterisk"
    spool: str = "/var/spool/asterisk"
    data: str = "/usr/share/asterisk"
    modules: str = "/usr/lib/x86_64-linux-gnu/asterisk/modules"


def template_values(cfg: Config, paths: PbxPaths) -> dict[str, str]:
    db = cfg.database
    for key, value in (("database.user", db.user), ("database.password", db.password), ("database.name", db.name),
                       ("database.host", db.host)):
        if _UNSAFE_CONF_VALUE.search(value):
            raise RenderError(f"{key} holds ';' or a line break: Asterisk's res_pgsql.conf cannot carry it")
    return {
        "NODE": cfg.node,
        "AMI_PORT": str(cfg.ami.port),
        "AMI_USER": cfg.ami.user,
        "AMI_SECRET": cfg.ami.secret,
        "AGI_PORT": str(cfg.agi.port),
        "SIP_BIND": cfg.sip.bind,
        "SIP_PORT": str(cfg.sip.port),
        "WSS_PORT": str(cfg.sip.wss_port),
        "WS_PORT": str(cfg.sip.ws_port),
        "RTP_START": str(cfg.sip.rtp_start),
        "RTP_END": str(cfg.sip.rtp_end),
        "TRUNK_USER": cfg.sip.trunk.user,
        "TRUNK_PASSWORD": cfg.sip.trunk.password,
        "DB_HOST": db.host,
        "DB_PORT": str(db.port),
        "DB_NAME": db.name,
        "DB_USER": db.user,
        "DB_PASSWORD": db.password,
        "ETC_DIR": paths.etc,
        "RUN_DIR": paths.run,
        "LOG_DIR": paths.log,
        "SPOOL_DIR": paths.spool,
        "DATA_DIR": paths.data,
        "MODULE_DIR": paths.modules,
    }


def render_text(text: str, values: dict[str, str], source: str) -> str:
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise RenderError(f"{source}: no value for @@{key}@@")
        return values[key]

    return PLACEHOLDER.sub(sub, text)


def render(cfg: Config, dest: Path, paths: PbxPaths, template_dir: Path = TEMPLATE_DIR) -> list[Path]:
    """Write every rendered file into `dest` (created, files replaced atomically). Returns the files."""
    dest.mkdir(parents=True, exist_ok=True)
    values = template_values(cfg, paths)
    generated: dict[str, str] = {}
    written = []
    for src in sorted(template_dir.iterdir()):
        if src.suffix not in TEMPLATE_SUFFIXES:
            continue
        generated[src.name] = render_text(src.read_text(), values, src.name)
    for name, text in generated.items():
        target = dest / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        tmp.replace(target)
        written.append(target)
    for name in OBSOLETE_FILES:
        (dest / name).unlink(missing_ok=True)
    return written
