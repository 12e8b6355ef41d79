"""The traffic simulator (`ccpbx-sim`, what the run command's demo uses) places real calls that agents answer."""

from __future__ import annotations

import asyncio
import sys

import pytest

from telephony.ami import AmiEvent
from tests.live.support import EventRecorder, eventually
from tests.live.test_call_flow import login
from tests.live_stack import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.asyncio]


async def test_simulator_calls_are_answered_by_simulated_agents(live_stack: LiveStack, ami: EventRecorder) -> None:
    for user in ("agent1", "agent2"):
        await login(live_stack, ami, user)
    mark = ami.mark()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.cli", "--config", str(live_stack.config_path), "--agents", "2",
        "--calls", "3", "--rate", "2", "--talk-s", "1.5", "--concurrency", "2",
        "--workdir", str(live_stack.runtime / "sim"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "established=3" in text and "failed=0" in text, text
    # Judged by the PBX, not by the simulator's own count: three agent connects and three completions.
    connects = ami.find("AgentConnect", since=mark)
    completes = await _wait_count(ami, "AgentComplete", 3, mark)
    assert len(connects) == 3, [e.fields.get("MemberName") for e in connects]
    assert {e.fields.get("MemberName") for e in connects} <= {"agent1", "agent2"}
    assert len(completes) == 3


async def _wait_count(ami: EventRecorder, name: str, n: int, mark: int) -> list[AmiEvent]:
    async def enough() -> list[AmiEvent] | None:
        found = ami.find(name, since=mark)
        return found if len(found) >= n else None

    return await eventually(enough, timeout=15, what=f"{n} x {name}")
