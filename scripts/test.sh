#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, type-check, then every test: unit and live (a real
# Asterisk, a real PostgreSQL and real SIP phones, started by the tests on free ports).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser tests (tests/ui) drive Debian's Chromium with Playwright (its own browser downloads are not used).
if [ ! -x /usr/bin/chromium ]; then
  echo; echo "==> installing Chromium for the browser tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
echo; echo "==> ruff"; .venv/bin/ruff check .
echo; echo "==> mypy"; .venv/bin/mypy
echo; echo "==> pytest"
exec .venv/bin/pytest -ra "$@"
