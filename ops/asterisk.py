"""Run one Asterisk instance: chrooted into the cached root filesystem, or an installed Asterisk.

Why a private mount namespace (`unshare --mount`): several instances (the dev stack and a test run) can share
one root filesystem, each seeing its own config, run, log and spool folders bind-mounted on the usual paths.
The mounts vanish with the process, so a crash never leaves stale mounts on the host.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ops import rootfs as rootfs_mod
from ops.asterisk_config import PbxPaths, render
from ops.tls import ensure_certificate
from service.config import Config

log = logging.getLogger("ops.asterisk")


class AsteriskError(RuntimeError):
    """Asterisk could not be started, or did not become ready."""


@dataclass(frozen=True)
class InstanceDirs:
    """The instance's own folders on the host."""

    base: Path

    @property
    def etc(self) -> Path:
        return self.base / "etc"

    @property
    def run(self) -> Path:
        return self.base / "run"

    @property
    def log(self) -> Path:
        return self.base / "log"

    @property
    def spool(self) -> Path:
        return self.base / "spool"

    @property
    def recordings(self) -> Path:
        return self.spool / "monitor"

    @property
    def pidfile(self) -> Path:
        return self.base / "asterisk.pid"

    @property
    def console_log(self) -> Path:
        return self.log / "console.log"

    def create(self) -> None:
        for d in (self.etc, self.run, self.log, self.log / "cel-custom", self.spool, self.recordings,
                  self.spool / "cache", self.spool / "messages", self.spool / "prompts"):
            d.mkdir(parents=True, exist_ok=True)


class AsteriskInstance:
    """Start, check and stop one Asterisk for a given configuration."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.dirs = InstanceDirs(cfg.runtime_path.resolve() / "asterisk")
        self.rootfs = Path(cfg.asterisk.rootfs)
        self.chroot = cfg.asterisk.mode == "chroot"

    # ------------------------------------------------------------------ config
    def paths(self) -> PbxPaths:
        if self.cfg.asterisk.mode == "docker":
            return PbxPaths()
        if self.chroot:
            return PbxPaths(modules=rootfs_mod.module_dir(self.rootfs))
        d = self.dirs
        return PbxPaths(
            etc=str(d.etc), run=str(d.run), log=str(d.log), spool=str(d.spool),
            data="/usr/share/asterisk", modules=_host_module_dir(),
        )

    def render_config(self) -> None:
        self.dirs.create()
        render(self.cfg, self.dirs.etc, self.paths())
        # http.conf's WSS listener needs a certificate: made once per instance (ops/tls.py), kept afterwards
        ensure_certificate(self.dirs.etc / "keys", self.cfg.sip.public_host)

    # ------------------------------------------------------------------ process
    def pid(self) -> int | None:
        try:
            pid = int(self.dirs.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def command(self) -> list[str]:
        if not self.chroot:
            return [self.cfg.asterisk.binary, "-f", "-n", "-C", str(self.dirs.etc / "asterisk.conf")]
        d, r = self.dirs, str(self.rootfs)
        script = (
            'set -e; r="$1"; '
            'mount --bind "$2" "$r/etc/asterisk"; mount --bind "$3" "$r/run/asterisk"; '
            'mount --bind "$4" "$r/var/log/asterisk"; mount --bind "$5" "$r/var/spool/asterisk"; '
            'exec chroot "$r" /usr/sbin/asterisk -f -n'
        )
        return [
            "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "asterisk",
            r, str(d.etc), str(d.run), str(d.log), str(d.spool),
        ]

    def start(self, timeout: float = 30.0) -> int:
        """Start Asterisk (rendering the config first) and wait until it is fully booted."""
        if self.cfg.asterisk.mode == "docker":
            raise AsteriskError("asterisk.mode is docker: start it with docker compose")
        existing = self.pid()
        if existing:
            log.info("Asterisk already running (pid %d)", existing)
            return existing
        if self.chroot:
            if not rootfs_mod.is_ready(self.rootfs):
                raise AsteriskError(f"{self.rootfs}: no Asterisk root filesystem; run `ccpbx-ctl setup`")
            for sub in ("etc/asterisk", "run/asterisk", "var/log/asterisk", "var/spool/asterisk"):
                (self.rootfs / sub).mkdir(parents=True, exist_ok=True)
        self.render_config()
        console = self.dirs.console_log.open("ab")
        # res_config_pgsql has no connect timeout of its own: bound it, so a database host that drops packets
        # cannot hang the PBX's lookups (libpq reads PGCONNECT_TIMEOUT).
        proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PGCONNECT_TIMEOUT": "3"},
        )
        console.close()
        self.dirs.pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AsteriskError(
                    f"Asterisk exited with {proc.returncode} while starting; see {self.dirs.console_log} "
                    f"and {self.dirs.log / 'messages.log'}"
                )
            done = self.cli("core waitfullybooted", timeout=5, check=False)
            if done.returncode == 0 and "fully booted" in done.stdout.lower():
                log.info("Asterisk fully booted (pid %d)", proc.pid)
                return proc.pid
            time.sleep(0.1)
        self.stop()
        raise AsteriskError(f"Asterisk did not finish booting within {timeout:.0f} s")

    def cli(self, command: str, timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run an Asterisk CLI command (`asterisk -rx`) against this instance's control socket."""
        if self.chroot:
            pid = self.pid()
            if pid is None:
                raise AsteriskError("Asterisk is not running")
            argv = ["nsenter", "-t", str(pid), "-m", "--", "chroot", str(self.rootfs),
                    "/usr/sbin/asterisk", "-rx", command]
        else:
            argv = [self.cfg.asterisk.binary, "-C", str(self.dirs.etc / "asterisk.conf"), "-rx", command]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AsteriskError(f"asterisk -rx {command!r} timed out") from exc
        if check and out.returncode != 0:
            raise AsteriskError(f"asterisk -rx {command!r} failed: {out.stderr.strip() or out.stdout.strip()}")
        return out

    def stop(self, timeout: float = 15.0) -> None:
        """Stop gracefully (SIGTERM), then forcefully after `timeout`."""
        pid = self.pid()
        if pid is None:
            self.dirs.pidfile.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            log.warning("Asterisk (pid %d) ignored SIGTERM for %.0f s: killing it", pid, timeout)
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5)
        self.dirs.pidfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would: for fault tests."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _host_module_dir() -> str:
    for candidate in [*sorted(Path("/usr/lib").glob("*/asterisk/modules")), Path("/usr/lib/asterisk/modules")]:
        if candidate.is_dir():
            return str(candidate)
    raise AsteriskError("no installed Asterisk modules folder found")


def host_asterisk_usable(min_major: int = 22) -> bool:
    """True when an installed Asterisk of at least `min_major` exists (e.g. Ubuntu's package)."""
    binary = shutil.which("asterisk")
    if binary is None:
        return False
    out = subprocess.run([binary, "-V"], capture_output=True, text=True)
    try:
        major = int(out.stdout.split()[1].split(".")[0])
    except (IndexError, ValueError):
        return False
    return major >= min_major
