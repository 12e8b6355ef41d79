"""`ccpbx-ctl`: set up, start, stop and inspect the stack (PostgreSQL + Asterisk + service + demo).

    ccpbx-ctl setup            generate var/ccpbx.toml (secrets, free ports), build/reuse the PBX root
                               filesystem, create the DB cluster, render the Asterisk config
    ccpbx-ctl up [--demo]      start everything and wait until /healthz is ok; --demo adds simulated
                               agents and a stream of calls
    ccpbx-ctl down             stop everything
    ccpbx-ctl status           what runs, and the service's health report
    ccpbx-ctl softphone        the settings a softphone needs to register and call the demo number
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.request
from pathlib import Path

from ops import rootfs
from ops.asterisk import host_asterisk_usable
from ops.generate import build_config_data, upgrade_config, write_config
from ops.stack import ManagedProcess, Stack
from service.config import Config, load_config

log = logging.getLogger("ops.cli")

DEFAULT_RUNTIME = Path("var")


def config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("CCPBX_CONFIG") or DEFAULT_RUNTIME / "ccpbx.toml")


def cmd_setup(args: argparse.Namespace) -> int:
    path = config_path(args)
    if args.asterisk == "auto":
        mode = "host" if host_asterisk_usable() else "chroot"
    else:
        mode = args.asterisk
    data = build_config_data(path.parent, agents=args.agents, asterisk_mode=mode,
                             sip_bind=args.sip_bind)
    if write_config(path, data):
        log.info("wrote %s (new secrets and ports)", path)
    else:
        log.info("kept existing %s", path)
        for name in upgrade_config(path):
            log.info("added %s to %s", name, path)
    cfg = load_config(path)
    if cfg.asterisk.mode == "docker":
        write_compose_env(cfg, path.parent / "compose.env")
        Stack(cfg, path).asterisk.render_config()
        log.info("rendered for Docker: docker compose --env-file %s up -d", path.parent / "compose.env")
        return 0
    if cfg.asterisk.mode == "chroot":
        rootfs.ensure_rootfs(Path(cfg.asterisk.rootfs))
    # The database cluster is created by the first `up` (nothing to leave behind for a test-only run).
    Stack(cfg, path).asterisk.render_config()
    log.info("setup complete")
    return 0


def write_compose_env(cfg: Config, dest: Path) -> None:
    """Values docker-compose.yml reads (secrets: mode 0600, in the ignored runtime folder)."""
    db = cfg.database
    dest.write_text(f"CCPBX_DB_PORT={db.port}\nCCPBX_DB_USER={db.user}\nCCPBX_DB_PASSWORD={db.password}\n"
                    f"CCPBX_DB_NAME={db.name}\n")
    dest.chmod(0o600)


def demo_process(cfg: Config, path: Path) -> ManagedProcess:
    """The demo: simulated agents on all agent phones but the last (kept for a real softphone), and a
    steady stream of calls from the carrier trunk to the demo number."""
    agents = [p.user for p in cfg.phones if p.role == "agent"]
    argv = [sys.executable, "-m", "sim.cli", "--config", str(path), "--agents", str(max(1, len(agents) - 1)),
            "--calls", "4", "--forever", "--rate", "0.25", "--talk-s", "15", "--concurrency", "3"]
    return ManagedProcess("demo", argv, cfg.runtime_path.resolve())


def login_agents(cfg: Config) -> None:
    """Log every agent phone into every queue through the service's own API, as an admin would."""
    for phone in (p for p in cfg.phones if p.role == "agent"):
        for queue in cfg.queues:
            req = urllib.request.Request(
                f"http://{cfg.http.host}:{cfg.http.port}/api/v1/queues/{queue.name}/members/{phone.user}",
                data=b"{}", method="PUT",
                headers={"Authorization": f"Bearer {cfg.http.admin_token}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()


def cmd_up(args: argparse.Namespace) -> int:
    path = config_path(args)
    cfg = load_config(path)
    stack = Stack(cfg, path)
    started = time.monotonic()
    stack.up(service=not args.no_service)
    log.info("stack up in %.1f s", time.monotonic() - started)
    if args.demo:
        login_agents(cfg)
        demo = demo_process(cfg, path)
        demo.start()
        log.info("demo: simulated agents answer a call every ~4 s (log: %s)", demo.logfile)
    print_softphone(cfg)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    path = config_path(args)
    cfg = load_config(path)
    demo_process(cfg, path).stop()
    Stack(cfg, path).down()
    log.info("stack stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    path = config_path(args)
    cfg = load_config(path)
    status = Stack(cfg, path).status()
    status["demo"] = "running" if demo_process(cfg, path).pid() else "stopped"
    print(json.dumps(status, indent=2))
    health = status.get("health")
    return 0 if health and health.get("status") == "ok" else 1


def print_softphone(cfg: Config) -> None:
    agent_phones = [p for p in cfg.phones if p.role == "agent"]
    phone = agent_phones[-1] if agent_phones else None
    host = cfg.sip.public_host
    print("\nPoint a softphone at the PBX (UDP, codec G.711 u-law):")
    print(f"  server/domain: {host}:{cfg.sip.port}")
    if phone:
        print(f"  agent phone:   user {phone.user}  password {phone.password}")
        print("                 (logged into queue 'support'; the demo's simulated agents use the other agent")
        print("                 phones; all phones: var/ccpbx.toml [[phones]]; dial 600 for an echo test)")
    print(f"  carrier trunk: user {cfg.sip.trunk.user}  password {cfg.sip.trunk.password}")
    print(f"                 dial {cfg.demo_inbound_number} -> IVR -> queue 'support' -> an agent")
    print(f"  REST API:      http://{cfg.http.host}:{cfg.http.port}/api/v1  (Bearer token in var/ccpbx.toml)")
    print(f"  web UI:        http://{cfg.http.host}:{cfg.http.port}/  (user admin, password http.admin_password in "
          "var/ccpbx.toml)")


def cmd_softphone(args: argparse.Namespace) -> int:
    print_softphone(load_config(config_path(args)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ccpbx-ctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="configuration file (default: $CCPBX_CONFIG or var/ccpbx.toml)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="generate config and secrets, build the PBX root filesystem, init the DB")
    p.add_argument("--agents", type=int, default=4, help="number of agent phones to generate (default 4)")
    p.add_argument("--asterisk", choices=("auto", "chroot", "host", "docker"), default="auto")
    p.add_argument("--sip-bind", default="127.0.0.1",
                   help="address SIP listens on (0.0.0.0 lets phones on the LAN register)")
    p.set_defaults(func=cmd_setup)
    p = sub.add_parser("up", help="start PostgreSQL, Asterisk and the service")
    p.add_argument("--demo", action="store_true", help="also run simulated agents and calls")
    p.add_argument("--no-service", action="store_true", help="start only PostgreSQL and Asterisk")
    p.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show what runs and the health report").set_defaults(func=cmd_status)
    sub.add_parser("softphone", help="print softphone settings").set_defaults(func=cmd_softphone)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except Exception as exc:  # a clear one-line error for the operator; details in the logs
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
