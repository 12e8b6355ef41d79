"""``ccpbx-sim``: drive real SIP traffic through the contact center with baresip phones.

``ccpbx-sim --agents N --calls M [--rate calls/s] [--talk-s 10] [--config PATH]`` registers N agent
phones (auto-answer, each with its own tone so recordings show who talked to whom), then places M calls from
caller phones that present the trunk's credentials to the inbound number, a few at a time, each hung up
``talk-s`` seconds after it was answered. One line per call, then a summary; ``--forever`` repeats rounds of
M calls until SIGINT/SIGTERM. Exit status: 0 all calls established, 1 some failed, 2 could not start.

The caller phones do not REGISTER by default: a carrier trunk authenticates each INVITE (digest, endpoint
found by username) and several phones registering the same trunk user would fight over its single Contact.
``--register-callers`` turns it on for PBX set-ups that want it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.config import ConfigError, parse_config
from sim.baresip import BaresipError, BaresipPhone, CallFailed

__all__ = ["SimConfig", "SimStats", "Simulator", "load_sim_config", "main", "parse_sim_config"]

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "var/ccpbx.toml"
CALLER_TONE_HZ = 440.0


def agent_tone(index: int) -> float:
    """Agent i's tone: 500, 550, ... 3350 Hz (inside G.711's band, 50 Hz apart so Goertzel tells them apart,
    never the callers' 440 Hz); it wraps after 58 agents."""
    return 500.0 + 50.0 * (index % 58)


@dataclass(frozen=True)
class SimConfig:
    """What the simulator needs to know about the PBX."""

    pbx_host: str
    sip_port: int
    agents: list[tuple[str, str]]
    trunk_user: str
    trunk_password: str
    inbound_number: str

    @property
    def registrar(self) -> str:
        return f"{self.pbx_host}:{self.sip_port}"

    @property
    def inbound_uri(self) -> str:
        return f"sip:{self.inbound_number}@{self.registrar}"


def parse_sim_config(data: Mapping[str, Any]) -> SimConfig:
    """Map the service's configuration file (docs/configuration.md) to :class:`SimConfig`.

    The PBX address, the trunk's credentials, the demo number and the agent phones all come from the same
    file the PBX was rendered from, so the simulator always matches the running PBX.
    """
    try:
        cfg = parse_config(dict(data))
    except ConfigError as e:
        raise ValueError(f"simulator config: {e}") from e
    return SimConfig(
        pbx_host=cfg.sip.public_host,
        sip_port=cfg.sip.port,
        agents=[(p.user, p.password) for p in cfg.phones if p.role == "agent"],
        trunk_user=cfg.sip.trunk.user,
        trunk_password=cfg.sip.trunk.password,
        inbound_number=cfg.demo_inbound_number,
    )


def load_sim_config(path: str | os.PathLike[str]) -> SimConfig:
    """Read the configuration file (default: ``$CCPBX_CONFIG`` or ``var/ccpbx.toml``)."""
    with open(path, "rb") as f:
        return parse_sim_config(tomllib.load(f))


@dataclass
class SimStats:
    """Running tallies; ``setup_s`` are dial-to-answer times of established calls."""

    placed: int = 0
    established: int = 0
    completed: int = 0
    remote_hangups: int = 0
    failed: int = 0
    interrupted: int = 0  # still up when the simulator was stopped
    reasons: Counter[str] = field(default_factory=Counter)
    setup_s: list[float] = field(default_factory=list)
    max_concurrent: int = 0

    def line(self) -> str:
        setup = (
            f" setup avg={sum(self.setup_s) / len(self.setup_s):.2f}s max={max(self.setup_s):.2f}s"
            if self.setup_s
            else ""
        )
        why = ", ".join(f"{r}: {n}" for r, n in self.reasons.most_common())
        return (
            f"placed={self.placed} established={self.established} completed={self.completed} "
            f"remote_hangup={self.remote_hangups} failed={self.failed}{f' ({why})' if why else ''}"
            f"{f' interrupted={self.interrupted}' if self.interrupted else ''}"
            f"{setup} max_concurrent={self.max_concurrent}"
        )


class Simulator:
    """Agent phones + a pool of caller phones; places calls at a rate with bounded concurrency."""

    def __init__(
        self,
        cfg: SimConfig,
        *,
        agents: int,
        calls: int,
        rate: float = 1.0,
        talk_s: float = 10.0,
        concurrency: int = 4,
        answer_timeout: float = 30.0,
        forever: bool = False,
        workdir: Path,
        dtmf: str = "",
        dtmf_delay: float = 1.0,
        register_callers: bool = False,
        record: bool = False,
        target: str | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        if agents > len(cfg.agents):
            raise ValueError(f"--agents {agents}: the config lists only {len(cfg.agents)} agents")
        if rate <= 0 or concurrency < 1 or talk_s < 0 or calls < 0:
            raise ValueError("rate and concurrency must be positive, calls and talk time not negative")
        self.cfg = cfg
        self.n_agents = agents
        self.calls = calls
        self.rate = rate
        self.talk_s = talk_s
        self.concurrency = concurrency
        self.answer_timeout = answer_timeout
        self.forever = forever
        self.workdir = workdir
        self.dtmf = dtmf
        self.dtmf_delay = dtmf_delay
        self.register_callers = register_callers
        self.record = record
        self.target = target or cfg.inbound_uri
        self.out = out
        self.stats = SimStats()
        self.agent_phones: list[BaresipPhone] = []
        self.caller_phones: list[BaresipPhone] = []
        self._active = 0
        # The tone source must outlast a call (baresip ends the call when its WAV ends).
        self._tone_s = max(120.0, talk_s + answer_timeout + 120.0)

    def _say(self, text: str) -> None:
        self.out(f"{time.strftime('%H:%M:%S')} {text}")

    async def run(self, stop: asyncio.Event) -> int:
        """Start phones, place the calls, stop everything; return the exit status."""
        try:
            if not await self._start_phones(stop):
                return 2
            rounds = 0
            while not stop.is_set():
                rounds += 1
                await self._place_round(stop, first=self.stats.placed + 1)
                if not self.forever or self.calls == 0 or stop.is_set():
                    break
                self._say(f"round {rounds}: {self.stats.line()}")
        finally:
            await self._stop_phones()
            self._print_summary()
        if self.stats.failed:
            return 1
        # The IVR answers every call at once, so "established" alone proves little (like SIPp's success
        # count): a call counts only if an agent's phone answered it.
        return 0 if not self.agent_phones or self.agent_answers() >= self.stats.established else 1

    def agent_answers(self) -> int:
        return sum(p.event_counts["CALL_ESTABLISHED"] for p in self.agent_phones)

    async def _start_phones(self, stop: asyncio.Event) -> bool:
        cfg = self.cfg
        for i, (user, password) in enumerate(cfg.agents[: self.n_agents]):
            self.agent_phones.append(
                BaresipPhone(
                    f"agent-{user}",
                    workdir=self.workdir / f"agent-{user}",
                    sip_user=user,
                    sip_password=password,
                    registrar=cfg.registrar,
                    tone_hz=agent_tone(i),
                    register=True,
                    auto_answer=True,
                    record=self.record,
                    tone_seconds=self._tone_s,
                )
            )
        for j in range(self.concurrency):
            self.caller_phones.append(
                BaresipPhone(
                    f"caller-{j + 1}",
                    workdir=self.workdir / f"caller-{j + 1}",
                    sip_user=cfg.trunk_user,
                    sip_password=cfg.trunk_password,
                    registrar=cfg.registrar,
                    tone_hz=CALLER_TONE_HZ,
                    register=self.register_callers,
                    auto_answer=False,
                    record=self.record,
                    tone_seconds=self._tone_s,
                )
            )
        phones = self.agent_phones + self.caller_phones
        n_agents, n_callers = len(self.agent_phones), len(self.caller_phones)
        self._say(f"starting {n_agents} agents and {n_callers} callers (logs: {self.workdir})")
        started = await asyncio.gather(*(p.start() for p in phones), return_exceptions=True)
        bad = [(p, r) for p, r in zip(phones, started, strict=True) if isinstance(r, BaseException)]
        for p, r in bad:
            self._say(f"{p.name}: could not start: {r}")
        if bad or stop.is_set():
            return False
        to_register = [p for p in phones if p.register]
        regs = await asyncio.gather(
            *(p.wait_registered(timeout=10) for p in to_register), return_exceptions=True
        )
        failed = 0
        for p, reg in zip(to_register, regs, strict=True):
            if isinstance(reg, BaseException):
                failed += 1
                self._say(f"{p.name}: not registered: {reg or type(reg).__name__}")
        if failed:
            return False
        if to_register:
            self._say(f"{len(to_register)} phones registered at {self.cfg.registrar}")
        return True

    async def _stop_phones(self) -> None:
        phones = self.agent_phones + self.caller_phones
        await asyncio.gather(*(p.stop() for p in phones), return_exceptions=True)

    async def _place_round(self, stop: asyncio.Event, *, first: int) -> None:
        idle: asyncio.Queue[BaresipPhone] = asyncio.Queue()
        for p in self.caller_phones:
            idle.put_nowait(p)
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            for n in range(first, first + self.calls):
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.wait([stop_wait], timeout=delay)
                get = asyncio.ensure_future(idle.get())
                await asyncio.wait([get, stop_wait], return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    get.cancel()
                    break
                phone = get.result()
                next_at = max(next_at + 1.0 / self.rate, loop.time())
                task = asyncio.create_task(self._one_call(n, phone, idle), name=f"sim-call-{n}")
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks and not stop.is_set():
                await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            for t in list(tasks):
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _one_call(self, n: int, phone: BaresipPhone, idle: asyncio.Queue[BaresipPhone]) -> None:
        label = f"call {n}" + ("" if self.forever else f"/{self.calls}")
        self.stats.placed += 1
        self._active += 1
        self.stats.max_concurrent = max(self.stats.max_concurrent, self._active)
        t0 = time.monotonic()
        try:
            try:
                est = await phone.dial(self.target, timeout=self.answer_timeout)
            except CallFailed as e:
                self._fail(label, phone, e.reason, t0)
                return
            except TimeoutError:
                self._fail(label, phone, f"not answered in {self.answer_timeout:g}s", t0)
                return
            setup = time.monotonic() - t0
            self.stats.established += 1
            self.stats.setup_s.append(setup)
            self._say(f"{label} established via {phone.name} in {setup:.2f}s")
            talk_end = time.monotonic() + self.talk_s
            if self.dtmf:
                if await self._remote_closed(phone, est.seq, min(self.dtmf_delay, self.talk_s), label, t0):
                    return
                await phone.send_dtmf(self.dtmf)
            if await self._remote_closed(phone, est.seq, max(0.0, talk_end - time.monotonic()), label, t0):
                return
            await phone.hangup(timeout=5)
            self.stats.completed += 1
            self._say(f"{label} done after {time.monotonic() - t0:.1f}s")
        except BaresipError as e:
            self._fail(label, phone, str(e), t0)
        except asyncio.CancelledError:
            self.stats.interrupted += 1
            raise
        finally:
            self._active -= 1
            # Back to the pool even if its baresip died: the next call on it then fails at once and says why,
            # instead of the round waiting forever for a free caller.
            idle.put_nowait(phone)

    async def _remote_closed(
        self, phone: BaresipPhone, since: int, wait_s: float, label: str, t0: float
    ) -> bool:
        """Wait up to ``wait_s`` for the far end to hang up; True (and counted) if it did."""
        try:
            ev = await phone.wait_event("CALL_CLOSED", timeout=wait_s, since=since)
        except TimeoutError:
            return False
        self.stats.remote_hangups += 1
        self._say(f"{label} hung up by the far end after {time.monotonic() - t0:.1f}s ({ev.param})")
        return True

    def _fail(self, label: str, phone: BaresipPhone, reason: str, t0: float) -> None:
        self.stats.failed += 1
        self.stats.reasons[reason] += 1
        self._say(f"{label} FAILED via {phone.name} after {time.monotonic() - t0:.2f}s: {reason}")

    def _print_summary(self) -> None:
        self._say(f"summary: {self.stats.line()}")
        if self.agent_phones:
            answered = " ".join(
                f"{p.sip_user}={p.event_counts['CALL_ESTABLISHED']}" for p in self.agent_phones
            )
            self._say(f"agents answered: {answered}")
            if self.agent_answers() < self.stats.established:
                self._say(
                    f"only {self.agent_answers()} of {self.stats.established} established calls reached an agent:"
                    " are the agents logged into the queue? (PUT /api/v1/queues/<queue>/members/<phone>)"
                )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ccpbx-sim", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--config", default=os.environ.get("CCPBX_CONFIG", DEFAULT_CONFIG), help="TOML config")
    ap.add_argument("--agents", type=int, default=0, help="agent phones to register (first N of the config)")
    ap.add_argument("--calls", type=int, default=10, help="calls to place (per round with --forever)")
    ap.add_argument("--rate", type=float, default=1.0, help="calls started per second")
    ap.add_argument("--talk-s", type=float, default=10.0, help="seconds from answer to hang-up")
    ap.add_argument("--concurrency", type=int, default=4, help="caller phones = most calls at once")
    ap.add_argument("--answer-timeout", type=float, default=30.0, help="give up on an unanswered call")
    ap.add_argument("--forever", action="store_true", help="repeat rounds of --calls until interrupted")
    ap.add_argument("--target", help="SIP URI to call instead of the config's inbound number")
    ap.add_argument("--dtmf", default="", help="digits each caller sends after answer (IVR menus)")
    ap.add_argument("--dtmf-delay", type=float, default=1.0, help="seconds after answer before --dtmf")
    ap.add_argument("--register-callers", action="store_true", help="caller phones REGISTER as the trunk")
    ap.add_argument("--record", action="store_true", help="keep each phone's received audio (WAV)")
    ap.add_argument("--workdir", type=Path, help="logs and recordings (default: a new temporary folder)")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


async def _amain(sim: Simulator) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()

    def on_signal(signame: str) -> None:
        if stop.is_set():  # second signal: stop waiting for a graceful end
            if main_task is not None:
                main_task.cancel()
            return
        sim.out(f"{signame}: stopping (hanging up, unregistering)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        return await sim.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        cfg = load_sim_config(args.config)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        print(f"ccpbx-sim: {args.config}: {e}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ccpbx-sim-"))
    try:
        sim = Simulator(
            cfg,
            agents=args.agents,
            calls=args.calls,
            rate=args.rate,
            talk_s=args.talk_s,
            concurrency=args.concurrency,
            answer_timeout=args.answer_timeout,
            forever=args.forever,
            workdir=workdir,
            dtmf=args.dtmf,
            dtmf_delay=args.dtmf_delay,
            register_callers=args.register_callers,
            record=args.record,
            target=args.target,
            out=lambda s: print(s, flush=True),
        )
    except ValueError as e:
        print(f"ccpbx-sim: {e}", file=sys.stderr)
        return 2
    with contextlib.suppress(asyncio.CancelledError):
        return asyncio.run(_amain(sim))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
