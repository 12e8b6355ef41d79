"""The live stack for tests (tests/live, tests/ui): a real Asterisk 22, a real PostgreSQL and the real service.

Started once per session through the same code path as `ccpbx-ctl up` (ops.stack.Stack), in a private
runtime folder; reset between tests (all channels hung up, queue members removed). Logs are copied to
artifacts/live/ at the end so a failure can be read after the run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from ops import rootfs
from ops.generate import build_config_data, free_port, write_config
from ops.stack import Stack
from service.config import Config, load_config
from sim.baresip import BaresipPhone
from telephony.ami import AmiClient
from tests.live.support import EventRecorder

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "live"

AGENT_TONE = 1300.0
CALLER_TONE = 700.0


@dataclass
class LiveStack:
    cfg: Config
    config_path: Path
    stack: Stack
    runtime: Path
    _phone_seq: int = field(default=0)

    @property
    def sip_registrar(self) -> str:
        return f"127.0.0.1:{self.cfg.sip.port}"

    def api(self, method: str, path: str, body: dict[str, Any] | None = None,
            token: str | None = None) -> tuple[int, Any]:
        """Call the service's REST API; returns (status, parsed JSON)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://{self.cfg.http.host}:{self.cfg.http.port}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.cfg.http.admin_token if token is None else token}",
                     "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def reset(self) -> None:
        """Between tests: no call left up, no agent left in a queue."""
        if self.stack.asterisk.is_running():
            self.stack.asterisk.cli("channel request hangup all", check=False)
        if self.stack.health() is not None:
            for queue in self.cfg.queues:
                _, members = self.api("GET", f"/api/v1/queues/{queue.name}/members")
                for m in members if isinstance(members, list) else []:
                    self.api("DELETE", f"/api/v1/queues/{queue.name}/members/{m['member']}")

    def phone(self, user: str, tone_hz: float) -> BaresipPhone:
        self._phone_seq += 1
        if user == self.cfg.sip.trunk.user:
            password = self.cfg.sip.trunk.password
        else:
            password = self.cfg.phone(user).password
        return BaresipPhone(
            f"{user}-{self._phone_seq}", workdir=self.runtime / "phones" / f"{self._phone_seq}-{user}",
            sip_user=user, sip_password=password, registrar=self.sip_registrar, tone_hz=tone_hz,
        )


@pytest.fixture(scope="session")
def live_stack() -> Iterator[LiveStack]:
    runtime = Path(tempfile.mkdtemp(prefix="ccpbx-live-"))
    runtime.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data folder
    config_path = runtime / "ccpbx.toml"
    data = build_config_data(runtime, agents=3, supervisors=1, node="live1")
    # The CRM webhook of the screen-pop tests: they listen on this port while they run.
    data["screenpop"]["url"] = f"http://127.0.0.1:{free_port()}/hook"
    # The IVR http_lookup tests call a CRM stand-in on this machine.
    data["ivr"] = {"http_allowed_hosts": ["127.0.0.1"]}
    # SIP attack tests (tests/live/test_sip_attacks.py): bans short enough to watch one end.
    data["sip_guard"] = {"ban_s": 6}
    write_config(config_path, data)
    cfg = load_config(config_path)
    rootfs.ensure_rootfs(Path(cfg.asterisk.rootfs))
    stack = Stack(cfg, config_path)
    live = LiveStack(cfg, config_path, stack, runtime)
    try:
        stack.up(timeout=60)
        yield live
    finally:
        try:
            stack.down()
        finally:
            _keep_logs(runtime)
            if os.environ.get("CCPBX_KEEP_RUNTIME") != "1":
                shutil.rmtree(runtime, ignore_errors=True)


def _keep_logs(runtime: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for src in [*runtime.glob("log/*.log"), *runtime.glob("asterisk/log/*"), *runtime.glob("phones/*/*.log")]:
        if src.is_file():
            rel = src.relative_to(runtime)
            dest = ARTIFACTS / str(rel).replace("/", "__")
            shutil.copyfile(src, dest)


@pytest.fixture(autouse=True)
def _reset_between_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "live_stack" in request.fixturenames:
        request.getfixturevalue("live_stack").reset()


@pytest_asyncio.fixture
async def ami(live_stack: LiveStack) -> AsyncIterator[EventRecorder]:
    """A second AMI login (like a supervisor tool would have) that records every event for the test."""
    a = live_stack.cfg.ami
    rec = EventRecorder(AmiClient(a.host, a.port, a.user, a.secret, node="test-observer"))
    await rec.start()
    yield rec
    await rec.stop()


@pytest_asyncio.fixture
async def db(live_stack: LiveStack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(live_stack.cfg.database.dsn)
    yield conn
    await conn.close()


@pytest_asyncio.fixture
async def phones(live_stack: LiveStack) -> AsyncIterator[list[BaresipPhone]]:
    """Phones a test starts are appended here and stopped after it."""
    started: list[BaresipPhone] = []
    yield started
    for p in started:
        await p.stop()
