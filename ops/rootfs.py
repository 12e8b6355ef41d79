"""The Asterisk 22 root filesystem: built once per machine into a cache folder outside the clone.

Why a chroot: Debian bookworm has no Asterisk package and installing sid packages into the host would replace
libc (DESIGN §2). mmdebstrap builds a sid root filesystem with Asterisk 22 in under a minute; Asterisk then
runs chrooted into it, sharing the host network. The build goes to a temporary folder renamed into place at
the end, so an interrupted build never leaves a half-made root filesystem that looks complete.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger("ops.rootfs")

PACKAGES = ("asterisk", "asterisk-modules", "asterisk-core-sounds-en-gsm")
MARKER = "ccpbx-rootfs-ok"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class RootfsError(RuntimeError):
    """The root filesystem could not be built or is unusable."""


def host_mirror() -> str:
    """The Debian mirror the host already uses (the only one this machine may reach)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in sources:
        if not src.is_file() or src.name.endswith(".disabled-by-farm"):
            continue
        text = src.read_text(errors="replace")
        for match in re.finditer(r"(?:URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(https?://\S+)", text, re.M):
            url = match.group(1).rstrip("/")
            if "debian" in url and "security" not in url:
                return url
    return DEFAULT_MIRROR


def is_ready(rootfs: Path) -> bool:
    return (rootfs / MARKER).is_file() and (rootfs / "usr/sbin/asterisk").is_file()


def asterisk_version(rootfs: Path) -> str:
    out = subprocess.run(
        ["chroot", str(rootfs), "/usr/sbin/asterisk", "-V"], capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


def module_dir(rootfs: Path) -> str:
    """Where the root filesystem keeps Asterisk's modules (multiarch path differs by architecture)."""
    for candidate in sorted((rootfs / "usr/lib").glob("*/asterisk/modules")):
        return "/" + str(candidate.relative_to(rootfs))
    plain = rootfs / "usr/lib/asterisk/modules"
    if plain.is_dir():
        return "/usr/lib/asterisk/modules"
    raise RootfsError(f"{rootfs}: no Asterisk modules folder found")


def ensure_rootfs(rootfs: Path, mirror: str | None = None) -> Path:
    """Build the root filesystem at `rootfs` unless a complete one is already there."""
    if is_ready(rootfs):
        log.info("Asterisk root filesystem present: %s", rootfs)
        return rootfs
    if shutil.which("mmdebstrap") is None:
        raise RootfsError("mmdebstrap is not installed: run scripts/setup.sh (apt-get install mmdebstrap)")
    tmp = rootfs.with_name(rootfs.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    chosen = mirror or host_mirror()
    log.info("building the Asterisk 22 root filesystem in %s from %s (about a minute)", rootfs, chosen)
    cmd = [
        "mmdebstrap",
        "--variant=apt",
        "--aptopt=Acquire::Check-Valid-Until \"false\"",
        "--include=" + ",".join(PACKAGES),
        "sid",
        str(tmp),
        chosen,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RootfsError(f"mmdebstrap failed ({proc.returncode}): {proc.stderr[-2000:]}")
    (tmp / "run/asterisk").mkdir(parents=True, exist_ok=True)
    (tmp / MARKER).write_text(asterisk_version(tmp) + "\n")
    if rootfs.exists():
        shutil.rmtree(rootfs)
    tmp.rename(rootfs)
    log.info("root filesystem ready: %s", (rootfs / MARKER).read_text().strip())
    return rootfs
