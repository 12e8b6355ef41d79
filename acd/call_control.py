"""Call control from the agent desktop: hold, unhold and blind transfer of the agent's current queue call.

The channels acted on are the ones the agent state machine learnt from Asterisk's own events
(:meth:`acd.agent_state.AgentBook.call_channels`), never a value from a request.

**Hold: a dynamic bridge feature, triggered over AMI** (measured on Asterisk 22.10). Why this mechanism:

- Asterisk 22 has no AMI action that holds a channel (its action list has no ``Hold``; ARI's hold needs the
  channel in a Stasis app). ``Redirect`` or ``Park`` take the caller out of the queue's bridge: app_queue then
  delays ``AgentComplete`` and inflates ``TalkTime`` (DESIGN §7), and the call is no longer one queue call.
  ``MuteAudio`` silences but raises no ``Hold``/``Unhold`` events, so neither the state machine nor the reports
  would see a hold. ``PJSIPNotify`` asks the phone to hold itself: phone-specific, baresip ignores it.
- What does produce the events: a bridge runs a dynamic feature's application with a MOH class through
  ``ast_bridge_channel_run_app()``, which first writes HOLD into the bridge and publishes ``Hold`` for the channel
  running it, and writes UNHOLD and publishes ``Unhold`` when the application returns. The channel stays in the
  bridge throughout (suspended): no ``BridgeLeave``, no ``AgentComplete``, talk time keeps being cut exactly.
- So every queue call's agent leg gets ``DYNAMIC_FEATURES=ccpbx-hold`` before it rings (``Queue()`` option
  ``b(agent-leg^s^1)``; features.conf ``ccpbx-hold => A,self,Gosub(agent-hold,s,1),default``). To hold, the
  service sets ``HOLD_ID`` on the agent's channel and sends ``PlayDTMF`` with ``Receive: yes`` (the channel
  "receives" DTMF A, which only the bridge's feature detection sees: the caller hears no tone). The subroutine
  waits (``WaitForCondition``) until the service sets ``HOLD_RELEASE`` to the same ``HOLD_ID``, or the caller's
  channel is gone, or an hour passed. The ``Hold``/``Unhold`` events are those of a phone pressing hold, for the
  agent's channel, so the agent state machine (``on_hold``) and the reports' ``hold_s`` need nothing new.
- On hold the caller hears silence: ``default`` MOH has no files in the root filesystem (DESIGN §7); add files
  to musiconhold.conf's ``default`` class and callers hear them. The agent hears silence too.
- Measured: Hold 0.1 s after the request, Unhold 3 ms after the release; a caller hanging up while held frees the
  agent's channel within 10 ms; a blind transfer while held works (Asterisk sends Unhold itself).

**Blind transfer**: AMI ``BlindTransfer`` of the agent's channel: the caller leaves the queue's bridge for
``[agent-transfer]`` (a configured phone named by the digits) or ``[agent-transfer-out]`` (a number through the
trunk), app_queue reports ``AgentComplete Reason=transfer`` at once (DESIGN §7) and the projector marks the call
transferred. The target is checked here (2-20 digits) and again in the dialplan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from acd.agent_state import AgentBook, CallChannels, IllegalCommand, State
from acd.membership import PbxUnavailable
from telephony.ami import AmiActionError, AmiConnectionLost, AmiEvent, AmiNotConnected, AmiTimeout
from telephony.ami.events import Hangup, Hold, Unhold

log = logging.getLogger("acd.call_control")

#: The DTMF digit of the ``ccpbx-hold`` feature (features.conf): few phones have an A key.
HOLD_DIGIT = "A"
#: How long a command waits for Asterisk's Hold/Unhold event before it reports a failure.
EVENT_WAIT_S = 3.0
#: What a transfer target may be: digits only (an extension = a phone of that name, or a number).
TARGET_RE = re.compile(r"^[0-9]{2,20}\Z")
TRANSFER_CONTEXT = "agent-transfer"  # a configured phone
TRANSFER_OUT_CONTEXT = "agent-transfer-out"  # a number through the carrier trunk


class Ami(Protocol):
    async def action(self, name: str, fields: dict[str, Any] | None = None, *, as_list: bool,
                     timeout: float | None = None) -> Any: ...


class InvalidTarget(ValueError):
    """A transfer target that is not 2-20 digits (the API answers 422)."""


class CallControlFailed(RuntimeError):
    """Asterisk answered but the hold/unhold/transfer did not happen (the API answers 502)."""


@dataclass(frozen=True, slots=True)
class Transfer:
    agent: str
    to: str
    kind: Literal["extension", "number"]
    linkedid: str


@dataclass(slots=True)
class _Held:
    """A hold this service made: the subroutine on ``channel`` waits for ``HOLD_RELEASE = hold_id``."""

    call: CallChannels
    hold_id: str


class CallControl:
    """Hold, unhold and blind transfer over AMI; fed the ordered AMI events (:meth:`on_event`) after the agent
    state machine saw them, so a command that awaited its event returns with the state already changed.

    ``is_phone(name)``: whether a configured phone has that name (a transfer target's kind).
    """

    def __init__(self, ami: Ami | None, book: AgentBook, *, is_phone: Callable[[str], Awaitable[bool]],
                 event_wait_s: float = EVENT_WAIT_S) -> None:
        self.ami = ami
        self.book = book
        self.is_phone = is_phone
        self.event_wait_s = event_wait_s
        self._held: dict[str, _Held] = {}  # agent -> the hold this service made
        self._waiters: dict[tuple[str, str], list[asyncio.Future[AmiEvent]]] = {}  # (event, uniqueid)
        self._locks: dict[str, asyncio.Lock] = {}

    def held_by_service(self, agent: str) -> bool:
        return agent in self._held

    # ------------------------------------------------------------------ commands
    async def hold(self, agent: str) -> None:
        """Put the caller of the agent's call on hold; returns once Asterisk announced ``Hold``."""
        async with self._lock(agent):
            call = self._call(agent, "hold")
            if self.book.state(agent).state == State.ON_HOLD:
                raise IllegalCommand(State.ON_HOLD, f"agent {agent!r}: the call is already on hold")
            hold_id = str(secrets.randbelow(10**12))
            waiter = self._wait("Hold", call.agent_uniqueid)
            try:
                await self._send("Setvar", {"Channel": call.agent_channel, "Variable": "HOLD_ID", "Value": hold_id})
                await self._send("PlayDTMF", {"Channel": call.agent_channel, "Digit": HOLD_DIGIT, "Receive": "yes"})
                self._held[agent] = _Held(call, hold_id)
                await self._await(waiter, f"agent {agent!r}: the PBX did not put the call on hold")
            except BaseException:
                self._drop_waiter("Hold", call.agent_uniqueid, waiter)
                if agent in self._held:  # a hold that comes late returns at once
                    self._held.pop(agent)
                    with contextlib.suppress(PbxUnavailable, CallControlFailed):
                        await self._release(call, hold_id)
                raise

    async def unhold(self, agent: str) -> None:
        """Take the caller off a hold this service made; returns once Asterisk announced ``Unhold``."""
        async with self._lock(agent):
            call = self._call(agent, "take off hold")
            state = self.book.state(agent).state
            held = self._held.get(agent)
            if held is not None and held.call.agent_uniqueid != call.agent_uniqueid:
                del self._held[agent]  # of an earlier call whose end was missed (AMI outage)
                held = None
            if state != State.ON_HOLD:
                raise IllegalCommand(state, f"agent {agent!r}: the call is not on hold")
            if held is None:
                raise IllegalCommand(state, f"agent {agent!r}: the call was put on hold from the phone; "
                                            "take it off hold there")
            waiter = self._wait("Unhold", held.call.agent_uniqueid)
            try:
                await self._release(held.call, held.hold_id)
                await self._await(waiter, f"agent {agent!r}: the PBX did not take the call off hold")
            except BaseException:
                self._drop_waiter("Unhold", held.call.agent_uniqueid, waiter)
                raise

    async def transfer(self, agent: str, to: str) -> Transfer:
        """Blind-transfer the caller to ``to``: a configured phone of that name, else a number via the trunk."""
        if not TARGET_RE.match(to):
            raise InvalidTarget("to: 2 to 20 digits (an extension or a number)")
        async with self._lock(agent):
            call = self._call(agent, "transfer")
            kind: Literal["extension", "number"] = "extension" if await self.is_phone(to) else "number"
            context = TRANSFER_CONTEXT if kind == "extension" else TRANSFER_OUT_CONTEXT
            await self._send("BlindTransfer", {"Channel": call.agent_channel, "Context": context, "Exten": to})
            self._held.pop(agent, None)  # Asterisk takes a held call off hold as it leaves
            return Transfer(agent, to, kind, call.linkedid)

    # ------------------------------------------------------------------ events (ordered consumer)
    def on_event(self, ev: AmiEvent) -> None:
        uid = ev.uniqueid
        if uid is None:
            return
        if isinstance(ev, Hold | Unhold):
            for fut in self._waiters.pop((ev.name, uid), []):
                if not fut.done():
                    fut.set_result(ev)
        if isinstance(ev, Unhold | Hangup):  # our hold ended (released, caller or agent gone)
            for agent, held in list(self._held.items()):
                if uid in (held.call.agent_uniqueid, held.call.caller_uniqueid):
                    del self._held[agent]

    # ------------------------------------------------------------------ helpers
    def _call(self, agent: str, what: str) -> CallChannels:
        call = self.book.call_channels(agent)
        if call is None:
            raise IllegalCommand(self.book.state(agent).state, f"agent {agent!r} has no call to {what}")
        return call

    async def _release(self, call: CallChannels, hold_id: str) -> None:
        await self._send("Setvar", {"Channel": call.agent_channel, "Variable": "HOLD_RELEASE", "Value": hold_id})

    async def _send(self, name: str, fields: dict[str, Any]) -> None:
        if self.ami is None:
            raise PbxUnavailable(f"{name}: no PBX connection")
        try:
            await self.ami.action(name, fields, as_list=False)
        except (AmiNotConnected, AmiTimeout, AmiConnectionLost) as exc:
            raise PbxUnavailable(f"{name}: the PBX did not answer ({type(exc).__name__})") from exc
        except AmiActionError as exc:  # e.g. the channel is gone: the call ended meanwhile
            raise CallControlFailed(f"{name} refused by the PBX: {exc}") from exc

    def _wait(self, event: str, uniqueid: str) -> asyncio.Future[AmiEvent]:
        fut: asyncio.Future[AmiEvent] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((event, uniqueid), []).append(fut)
        return fut

    def _drop_waiter(self, event: str, uniqueid: str, fut: asyncio.Future[AmiEvent]) -> None:
        waiting = self._waiters.get((event, uniqueid), [])
        if fut in waiting:
            waiting.remove(fut)
        if not waiting:
            self._waiters.pop((event, uniqueid), None)

    async def _await(self, fut: asyncio.Future[AmiEvent], failure: str) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.event_wait_s)
        except TimeoutError:
            raise CallControlFailed(f"{failure} within {self.event_wait_s:g} s") from None

    def _lock(self, agent: str) -> asyncio.Lock:
        return self._locks.setdefault(agent, asyncio.Lock())


__all__ = ["HOLD_DIGIT", "TARGET_RE", "CallControl", "CallControlFailed", "InvalidTarget", "Transfer"]
