#!/usr/bin/env bash
# The README's run command: set up (idempotent), then start PostgreSQL + Asterisk + the service and a demo
# of simulated agents answering simulated calls. Everything keeps running; `bash scripts/stop.sh` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ccpbx-ctl up --demo
.venv/bin/ccpbx-ctl status
.venv/bin/ccpbx-ctl softphone | grep -A0 "web UI" || true
