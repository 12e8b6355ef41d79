#!/usr/bin/env bash
# One idempotent setup for a fresh Debian/Ubuntu machine (run as root): system packages, the Python venv
# with pinned dependencies, generated config + secrets (var/ccpbx.toml), the Asterisk 22 root filesystem
# (cached in /var/cache/ccpbx, built once per machine), the PostgreSQL cluster and the rendered PBX config.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup needs root (apt-get, chroot and bind mounts for the PBX): run it with sudo" >&2
  exit 1
fi

# --- system packages -----------------------------------------------------------------------------------
# postgresql: the database server; mmdebstrap: builds the Asterisk root filesystem; sip-tester (SIPp) and
# baresip-core: SIP phones for the simulator and the tests; sox: audio checks and prompt conversion
# (libsox-fmt-mp3: MP3 prompt uploads); util-linux: unshare/nsenter; nftables: the SIP guard blocks password-
# guessing sources with it (docs/security-sip.md).
PKGS=(python3 python3-venv python3-dev build-essential postgresql mmdebstrap sip-tester baresip-core sox
      libsox-fmt-mp3 util-linux ca-certificates debian-archive-keyring docker-compose nftables)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's postgresql package starts a cluster of its own on 5432; ours is private and on its own port.

# --- Python venv with pinned dependencies ----------------------------------------------------------------
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Python 3.11 or newer is needed ($PY is $("$PY" -V 2>&1))" >&2
  exit 1
fi
stamp=.venv/.ccpbx-deps
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating the Python environment (.venv)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi

# --- front-end libraries (Chart.js, Drawflow) from the npm registry, served by the service; no CDN at run time ---
if ! command -v npm >/dev/null 2>&1; then
  say "installing Node.js and npm (front-end libraries)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
ui_stamp=web/ui/node_modules/.ccpbx-lock
ui_want=$(sha256sum web/ui/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$ui_stamp" 2>/dev/null)" != "$ui_want" ]; then
  say "installing the web UI's front-end libraries (npm ci in web/ui)"
  (cd web/ui && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$ui_want" > "$ui_stamp"
fi

# --- config, secrets, PBX root filesystem, DB cluster, rendered Asterisk config --------------------------
say "preparing the stack (config, Asterisk root filesystem, PostgreSQL cluster)"
.venv/bin/ccpbx-ctl setup "$@"
