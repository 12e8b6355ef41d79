"""The browser phone's pieces without a PBX: the credentials endpoint (who may read them, for which phone, which
URL), the realtime view Asterisk reads for a webrtc phone, the WSS settings in the rendered configuration and the
certificate made at setup."""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from acd.agent_service import AgentService
from acd.config_store import ConfigStore
from ops.asterisk_config import PbxPaths, render
from ops.generate import build_config_data, upgrade_config, write_config
from ops.tls import ensure_certificate
from reporting.live import LiveState
from reporting.migrate import migrate
from service.config import load_config
from web.app import create_app

ADMIN = "b" * 40
WSS_PORT = 50443


async def _healthy() -> dict[str, Any]:
    return {"checks": {}}


@pytest_asyncio.fixture
async def client(pg_db: str) -> AsyncIterator[tuple[TestClient, asyncpg.Pool]]:
    pool = await asyncpg.create_pool(pg_db, min_size=1, max_size=3)
    await migrate(pool)
    agents = AgentService(None, pool, "n1", None)  # type: ignore[arg-type]
    app = create_app(admin_token=ADMIN, health=_healthy, membership=None,  # type: ignore[arg-type]
                     live_state=LiveState(), pool=pool, config_store=ConfigStore(pool), agents=agents,
                     wss_port=WSS_PORT, node="n1")
    async with TestClient(TestServer(app)) as c:
        yield c, pool
    await pool.close()


async def _call(c: TestClient, method: str, path: str, token: str = ADMIN,
                body: dict[str, Any] | None = None, host: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    if host:
        headers["Host"] = host
    resp = await c.request(method, path, json=body, headers=headers)
    return resp.status, (await resp.json() if resp.status != 204 else None)


@pytest.mark.asyncio
async def test_only_the_agent_or_an_admin_gets_a_browser_phones_credentials(
    client: tuple[TestClient, asyncpg.Pool],
) -> None:
    c, pool = client
    status, web_phone = await _call(c, "POST", "/api/v1/phones", body={"name": "web1", "webrtc": True})
    assert status == 201 and web_phone["webrtc"] is True
    status, desk = await _call(c, "POST", "/api/v1/phones", body={"name": "desk1"})
    assert status == 201 and desk["webrtc"] is False
    agents: tuple[tuple[str, str | None], ...] = (("ann", "web1"), ("bob", "desk1"), ("cid", None))
    for agent, phone in agents:
        assert (await _call(c, "POST", "/api/v1/agents", body={"name": agent, "phone": phone}))[0] == 201
    tokens = {}
    users: tuple[tuple[str, str, str | None], ...] = (
        ("u-ann", "agent", "ann"), ("u-bob", "agent", "bob"), ("u-cid", "agent", "cid"), ("u-sup", "supervisor", None))
    for user, role, linked in users:
        status, out = await _call(c, "POST", "/api/v1/users", body={"name": user, "role": role, "agent": linked})
        assert status == 201, out
        tokens[user] = out["token"]

    status, body = await _call(c, "GET", "/api/v1/agents/ann/softphone", tokens["u-ann"], host="pbx.example:8080")
    assert status == 200, body
    assert body == {"ws_url": f"wss://pbx.example:{WSS_PORT}/ws", "sip_uri": "sip:web1@pbx.example", "user": "web1",
                    "password": web_phone["password"], "display_name": "ann", "ice_servers": []}
    resp = await c.get("/api/v1/agents/ann/softphone", headers={"Authorization": f"Bearer {tokens['u-ann']}"})
    assert resp.headers["Cache-Control"] == "no-store"
    status, body = await _call(c, "GET", "/api/v1/agents/ann/softphone", host="[::1]:8080")
    assert status == 200 and body["ws_url"] == f"wss://[::1]:{WSS_PORT}/ws", body  # admin, IPv6 literal
    # Another agent, a supervisor: refused. A desk phone or no phone: no credentials for anyone.
    assert (await _call(c, "GET", "/api/v1/agents/ann/softphone", tokens["u-bob"]))[0] == 403
    assert (await _call(c, "GET", "/api/v1/agents/ann/softphone", tokens["u-sup"]))[0] == 403
    status, body = await _call(c, "GET", "/api/v1/agents/bob/softphone", tokens["u-bob"])
    assert (status, body["error"]) == (409, "not_webrtc"), body
    status, body = await _call(c, "GET", "/api/v1/agents/cid/softphone", tokens["u-cid"])
    assert (status, body["error"]) == (404, "no_phone"), body
    assert (await _call(c, "GET", "/api/v1/agents/nobody/softphone"))[0] == 404

    # What Asterisk reads: the webrtc endpoint on the WSS transport with webrtc=yes, the desk phone unchanged.
    rows = {r["id"]: r for r in await pool.fetch("SELECT id, transport, webrtc, allow FROM asterisk_ps_endpoints")}
    assert (rows["web1"]["transport"], rows["web1"]["webrtc"], rows["web1"]["allow"]) == ("transport-wss", "yes",
                                                                                          "ulaw")
    assert (rows["desk1"]["transport"], rows["desk1"]["webrtc"]) == ("transport-udp", None)
    # A deleted browser phone becomes a tombstone like any phone (no AOR, context `removed`).
    assert (await _call(c, "PUT", "/api/v1/agents/ann", body={"phone": None}))[0] == 200
    assert (await _call(c, "DELETE", "/api/v1/phones/web1"))[0] == 204
    row = await pool.fetchrow("SELECT aors, context, webrtc FROM asterisk_ps_endpoints WHERE id = 'web1'")
    assert row is not None and (row["aors"], row["context"], row["webrtc"]) == (None, "removed", None)


def test_wss_ports_are_generated_added_to_old_files_and_rendered(tmp_path: Path) -> None:
    path = tmp_path / "ccpbx.toml"
    data = build_config_data(tmp_path)
    for key in ("wss_port", "ws_port"):
        del data["sip"][key]  # a file written before browser phones existed
    write_config(path, data)
    assert upgrade_config(path) == ["sip.wss_port", "sip.ws_port"]
    assert upgrade_config(path) == []
    cfg = load_config(path)
    assert len({cfg.sip.port, cfg.sip.wss_port, cfg.sip.ws_port}) == 3
    assert tomllib.loads(path.read_text())["sip"]["wss_port"] == cfg.sip.wss_port
    out = tmp_path / "etc"
    render(cfg, out, PbxPaths())
    http = (out / "http.conf").read_text()
    assert f"tlsbindaddr = {cfg.sip.bind}:{cfg.sip.wss_port}" in http
    assert "bindaddr = 127.0.0.1\n" in http and f"bindport = {cfg.sip.ws_port}" in http  # plain: loopback only
    assert "tlscertfile = /etc/asterisk/keys/wss-cert.pem" in http
    pjsip = (out / "pjsip.conf").read_text()
    assert "[transport-wss]\ntype = transport\nprotocol = wss\n" in pjsip
    modules = (out / "modules.conf").read_text()
    for mod in ("res_http_websocket.so", "res_pjsip_transport_websocket.so", "res_srtp.so"):
        assert f"load = {mod}" in modules
    assert modules.index("res_http_websocket.so") < modules.index("res_pjsip_transport_websocket.so")


def test_the_certificate_is_made_once_for_the_sip_host_with_a_private_key(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path / "keys", "192.0.2.7")
    assert key.stat().st_mode & 0o777 == 0o600 and (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"], capture_output=True, text=True,
                          check=True).stdout
    assert "IP Address:192.0.2.7" in text and "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    before = cert.read_bytes()
    assert ensure_certificate(tmp_path / "keys", "192.0.2.7") == (cert, key) and cert.read_bytes() == before
