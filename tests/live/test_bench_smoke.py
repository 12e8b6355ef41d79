"""`bench/load.py --smoke` works: 5 recorded queue calls on bare Asterisk and on a full stack of its own, each
judged by AMI (and the stored facts), both capacities printed. The benchmark itself is not part of the suite
(docs/performance.md, "Load"); this only keeps the command from rotting. Uses no session fixture: the bench
starts and stops its own PBXs, PostgreSQL and service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[2]


def test_bench_load_smoke_runs_both_targets_and_prints_both_capacities() -> None:
    out = subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--smoke"], cwd=REPO,
                         capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "capacity (a) bare Asterisk: 5 concurrent recorded calls" in out.stdout, out.stdout
    assert "capacity (b) full stack: 5 concurrent recorded calls" in out.stdout, out.stdout
    assert "ratio (b)/(a): 100 %" in out.stdout, out.stdout
