"""Render `asterisk-conf/` templates into an instance's runtime folder.

Templates use `@@NAME@@` placeholders (Asterisk's own `${...}` syntax stays untouched). Secrets and ports
come from the generated configuration file, never from git. Phones and queues are generated from the
configuration so the templates stay static.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from service.config import Config

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "asterisk-conf"
PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")
TEMPLATE_SUFFIXES = (".conf",)


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
    return {
        "NODE": cfg.node,
        "AMI_PORT": str(cfg.ami.port),
        "AMI_USER": cfg.ami.user,
        "AMI_SECRET": cfg.ami.secret,
        "AGI_PORT": str(cfg.agi.port),
        "SIP_BIND": cfg.sip.bind,
        "SIP_PORT": str(cfg.sip.port),
        "RTP_START": str(cfg.sip.rtp_start),
        "RTP_END": str(cfg.sip.rtp_end),
        "TRUNK_USER": cfg.sip.trunk.user,
        "TRUNK_PASSWORD": cfg.sip.trunk.password,
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


def phones_conf(cfg: Config) -> str:
    """One endpoint + auth + aor per configured phone, from the role's template."""
    out = ["; generated from the configuration: do not edit\n"]
    for phone in cfg.phones:
        template = "agent-phone" if phone.role == "agent" else "supervisor-phone"
        out.append(
            f"[{phone.user}]({template})\nauth = {phone.user}-auth\naors = {phone.user}\n"
            f'callerid = "{phone.user}" <{phone.user}>\n\n'
            f"[{phone.user}-auth](auth-userpass)\nusername = {phone.user}\npassword = {phone.password}\n\n"
            f"[{phone.user}](aor-phone)\n\n"
        )
    return "".join(out)


def queues_conf(cfg: Config) -> str:
    out = ["; generated from the configuration: do not edit\n"]
    for queue in cfg.queues:
        out.append(f"[{queue.name}](queue-common)\nstrategy = {queue.strategy}\ntimeout = {queue.timeout_s}\n\n")
    return "".join(out)


def render(cfg: Config, dest: Path, paths: PbxPaths, template_dir: Path = TEMPLATE_DIR) -> list[Path]:
    """Write every rendered file into `dest` (created, files replaced atomically). Returns the files."""
    dest.mkdir(parents=True, exist_ok=True)
    values = template_values(cfg, paths)
    generated = {"pjsip_phones.conf": phones_conf(cfg), "queues_generated.conf": queues_conf(cfg)}
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
    return written
