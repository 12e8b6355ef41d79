"""Helpers for live tests: an AMI event recorder to await real events, and small polling waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telephony.ami import AmiClient, AmiEvent

T = TypeVar("T")


class EventRecorder:
    """Consumes an AmiClient's event queue and lets tests await events that match (already seen or future)."""

    def __init__(self, client: AmiClient) -> None:
        self.client = client
        self.events: list[AmiEvent] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 15.0) -> None:
        await self.client.start()
        self._task = asyncio.create_task(self._run())
        await self.client.wait_ready(timeout)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.stop()

    async def _run(self) -> None:
        while True:
            ev = await self.client.events.get()
            self.events.append(ev)
            self._changed.set()
            self._changed = asyncio.Event()

    def mark(self) -> int:
        return len(self.events)

    def find(self, name: str, predicate: Callable[[AmiEvent], bool] | None = None, since: int = 0) -> list[AmiEvent]:
        return [e for e in self.events[since:] if e.name == name and (predicate is None or predicate(e))]

    async def wait_for(
        self, name: str, predicate: Callable[[AmiEvent], bool] | None = None, *, since: int = 0,
        timeout: float = 20.0,
    ) -> AmiEvent:
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(name, predicate, since)
            if found:
                return found[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = sorted({e.name for e in self.events[since:]})
                raise TimeoutError(f"no AMI {name} within {timeout} s; seen since mark: {seen}")
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0,
                     interval: float = 0.1, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy: for state with no event to await (database rows)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s (last: {last!r})")
