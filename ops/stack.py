"""The whole stack on one machine: PostgreSQL, Asterisk and the service, started and stopped in order.

Used by `ccpbx-ctl` (the README's run command) and by the live tests' session fixture, so both exercise the
same start-up path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ops.asterisk import AsteriskInstance
from ops.postgres import PgCluster
from service.bootstrap import prepare_database
from service.config import Config

log = logging.getLogger("ops.stack")


class StackError(RuntimeError):
    """A part of the stack did not start or stop as expected."""


class ManagedProcess:
    """A background Python process of ours (the service, the demo simulator) with a pidfile and a log."""

    def __init__(self, name: str, argv: list[str], runtime: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.pidfile = runtime / "run" / f"{name}.pid"
        self.logfile = runtime / "log" / f"{name}.log"
        self.env = env

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid

    def start(self) -> int:
        existing = self.pid()
        if existing:
            return existing
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as out:
            proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env={**os.environ, **(self.env or {})})
        self.pidfile.write_text(f"{proc.pid}\n")
        self._proc = proc
        return proc.pid

    def exited(self) -> int | None:
        proc = getattr(self, "_proc", None)
        return None if proc is None else proc.poll()

    def kill(self) -> None:
        """SIGKILL, as a crash would (fault tests)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self._alive(pid):
                time.sleep(0.02)
        self.pidfile.unlink(missing_ok=True)

    def stop(self, timeout: float = 15.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._alive(pid):
                time.sleep(0.05)
            if self._alive(pid):
                log.warning("%s (pid %d) did not stop in %.0f s: killing it", self.name, pid, timeout)
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def _alive(self, pid: int) -> bool:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


class Stack:
    def __init__(self, cfg: Config, config_path: Path) -> None:
        self.cfg = cfg
        self.config_path = config_path.resolve()
        self.runtime = cfg.runtime_path.resolve()
        db = cfg.database
        self.pg = PgCluster(Path(db.datadir), db.port, user=db.user, password=db.password, dbname=db.name)
        self.asterisk = AsteriskInstance(cfg)
        self.service = ManagedProcess(
            "service", [sys.executable, "-m", "service.main", "--config", str(self.config_path)], self.runtime,
        )

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> None:
        """Create what the stack needs on disk (idempotent): the DB cluster and the rendered PBX config."""
        self.pg.init()
        self.asterisk.render_config()

    def up(self, *, service: bool = True, timeout: float = 60.0) -> None:
        self.prepare()
        self.pg.start()
        log.info("PostgreSQL up on 127.0.0.1:%d", self.cfg.database.port)
        applied = asyncio.run(prepare_database(self.cfg))
        if applied:
            log.info("database migrated: %s", ", ".join(applied))
        self.asterisk.start()
        log.info("Asterisk up: SIP udp/%d, AMI %d", self.cfg.sip.port, self.cfg.ami.port)
        if service:
            self.service.start()
            self.wait_healthy(timeout)
            log.info("service healthy: http://%s:%d/healthz", self.cfg.http.host, self.cfg.http.port)

    def down(self) -> None:
        self.service.stop()
        self.asterisk.stop()
        self.pg.stop()

    # ------------------------------------------------------------------ health
    def health(self) -> dict[str, Any] | None:
        url = f"http://{self.cfg.http.host}:{self.cfg.http.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return dict(json.load(resp))
        except urllib.error.HTTPError as exc:
            return dict(json.load(exc))
        except (OSError, ValueError):
            return None

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            code = self.service.exited()
            if code is not None:
                raise StackError(f"the service exited with {code}; see {self.service.logfile}")
            last = self.health()
            if last and last.get("status") == "ok":
                return last
            time.sleep(0.2)
        raise StackError(f"the service is not healthy after {timeout:.0f} s: {last}; see {self.service.logfile}")

    def status(self) -> dict[str, Any]:
        return {
            "postgresql": "running" if self.pg.is_running() else "stopped",
            "asterisk": "running" if self.asterisk.is_running() else "stopped",
            "service": "running" if self.service.pid() else "stopped",
            "health": self.health(),
        }
