"""Generated configuration and rendered Asterisk config: secrets fresh, placeholders filled, security rules kept."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from ops.asterisk_config import TEMPLATE_DIR, PbxPaths, render
from ops.generate import build_config_data, to_toml, upgrade_config, write_config
from service.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def make_cfg(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "ccpbx.toml"
    assert write_config(path, build_config_data(tmp_path))
    return path, load_config(path)


def test_generated_config_round_trips_and_is_private(tmp_path: Path) -> None:
    path, cfg = make_cfg(tmp_path)
    assert path.stat().st_mode & 0o077 == 0
    assert len(cfg.ami.secret) >= 24 and len(cfg.sip.trunk.password) >= 24 and len(cfg.http.admin_token) >= 32
    assert len({p.password for p in cfg.phones}) == len(cfg.phones)
    # idempotent: a second setup keeps the file (phones keep their passwords)
    assert not write_config(path, build_config_data(tmp_path))
    assert load_config(path) == cfg


def test_two_generations_never_share_secrets(tmp_path: Path) -> None:
    a = build_config_data(tmp_path)
    b = build_config_data(tmp_path)
    assert a["ami"]["secret"] != b["ami"]["secret"]
    assert a["sip"]["trunk"]["password"] != b["sip"]["trunk"]["password"]


def test_no_secret_or_password_literal_in_templates() -> None:
    for f in TEMPLATE_DIR.iterdir():
        text = f.read_text()
        for m in re.finditer(r"^\s*(secret|password)\s*=\s*(.*)$", text, re.M):
            assert m.group(2).startswith("@@"), f"{f.name}: literal {m.group(1)}"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"queues": [{"name": "Bad Queue"}]}, "queue"),
        ({"routes": [{"did": "12a", "queue": "support"}]}, "DID"),
        ({"routes": [{"did": "123", "queue": "nope"}]}, "not configured"),
        ({"phones": [{"user": "agent1", "password": "short"}]}, "16 characters"),
        ({"phones": [{"user": "x;y", "password": "p" * 20}]}, "SIP user"),
        ({"ami": {"colour": "blue"}}, "unknown key"),
    ],
)
def test_bad_config_is_refused_with_a_message_naming_it(tmp_path: Path, patch: dict, message: str) -> None:  # type: ignore[type-arg]
    data = build_config_data(tmp_path)
    data.update(patch)
    with pytest.raises(ConfigError, match=message):
        parse_config(tomllib.loads(to_toml(data)))


def test_render_fills_every_placeholder_and_keeps_security_rules(tmp_path: Path) -> None:
    _, cfg = make_cfg(tmp_path)
    out = tmp_path / "etc"
    files = render(cfg, out, PbxPaths())
    assert {f.name for f in files} >= {"manager.conf", "pjsip.conf", "extensions.conf", "modules.conf",
                                       "res_pgsql.conf", "extconfig.conf", "sorcery.conf"}
    for f in files:
        assert "@@" not in f.read_text(), f.name
        assert f.stat().st_mode & 0o077 == 0
    manager = (out / "manager.conf").read_text()
    assert "bindaddr = 127.0.0.1" in manager and "deny = 0.0.0.0/0.0.0.0" in manager
    write = re.search(r"^write = (.*)$", manager, re.M)
    assert write and not {"system", "command", "config", "all"} & set(write.group(1).split(","))
    assert cfg.ami.secret in manager
    pjsip = (out / "pjsip.conf").read_text()
    sections = re.findall(r"^\[([^\]]+)\]", pjsip, re.M)
    assert "anonymous" not in sections and "endpoint_identifier_order = username" in pjsip
    assert "res_pjsip_endpoint_identifier_anonymous" not in (out / "modules.conf").read_text()
    assert cfg.sip.trunk.password in pjsip
    assert not any(p.password in pjsip for p in cfg.phones)  # phones live in PostgreSQL (realtime), not in files
    assert f"dbpass = {cfg.database.password}" in (out / "res_pgsql.conf").read_text()
    assert "autoload = no" in (out / "modules.conf").read_text()
    dialplan = (out / "extensions.conf").read_text()
    assert f"agi://127.0.0.1:{cfg.agi.port}" in dialplan
    assert 'REGEX("^[a-z0-9][a-z0-9_-]{0,63}$" ${IVR_QUEUE})' in dialplan
    assert 'REGEX("^[a-z0-9][a-z0-9_-]{0,63}$" ${IVR_OVERFLOW})' in dialplan


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (apt) not installed")
def test_docker_compose_file_is_valid() -> None:
    env = {"PATH": "/usr/bin:/bin", "CCPBX_DB_PASSWORD": "x"}
    proc = subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_setup_adds_a_missing_admin_password_and_keeps_every_other_value(tmp_path: Path) -> None:
    path = tmp_path / "ccpbx.toml"
    data = build_config_data(tmp_path)
    del data["http"]["admin_password"]  # a file written before the web UI existed
    write_config(path, data)
    before = tomllib.loads(path.read_text())
    assert upgrade_config(path) == ["http.admin_password"]
    after = tomllib.loads(path.read_text())
    assert len(after["http"].pop("admin_password")) >= 24
    assert after == before and path.stat().st_mode & 0o777 == 0o600
    assert upgrade_config(path) == []  # idempotent: a second setup changes nothing
    assert load_config(path).http.admin_password
