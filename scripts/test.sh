#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, type-check, then every test: unit and live (a real
# Asterisk, a real PostgreSQL and real SIP phones, started by the tests on free ports).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo; echo "==> ruff"; .venv/bin/ruff check .
echo; echo "==> mypy"; .venv/bin/mypy
echo; echo "==> pytest"
exec .venv/bin/pytest -ra "$@"
