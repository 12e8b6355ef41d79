"""FastAGI server against real TCP clients that behave like Asterisk — and like broken peers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from telephony.fastagi import AgiError, AgiHangup, AgiSession, FastAgiServer, quote_arg

HEADER = {
    "agi_network": "yes",
    "agi_network_script": "ivr/main?flow=sales&lang=en&empty=",
    "agi_request": "agi://127.0.0.1:4573/ivr/main?flow=sales&lang=en&empty=",
    "agi_channel": "PJSIP/trunk-00000001",
    "agi_language": "en",
    "agi_uniqueid": "1763900000.1",
    "agi_callerid": "+4930123456",
    "agi_calleridname": "Zoë \"Q\" Tester",
    "agi_dnid": "5000",
    "agi_accountcode": "",
    "agi_arg_1": "first",
    "agi_arg_2": "second",
}


def header_bytes(env: dict[str, str] | None = None, *, crlf: bool = False) -> bytes:
    eol = "\r\n" if crlf else "\n"
    return ("".join(f"{k}: {v}{eol}" for k, v in (env or HEADER).items()) + eol).encode()


def default_reply(cmd: str) -> str:
    if cmd.startswith("GET VARIABLE UNSET"):
        return "200 result=0"
    if cmd.startswith("GET VARIABLE"):
        return "200 result=1 (hello (nested) world)"
    if cmd.startswith("GET DATA"):
        return "200 result=12# (timeout)"
    if cmd.startswith("STREAM FILE"):
        return "200 result=50 endpos=1234"  # '2' pressed
    return "200 result=0"


async def fake_asterisk(
    port: int, reply: Callable[[str], str | None] = default_reply, header: bytes | None = None,
) -> list[str]:
    """Connect like Asterisk, send the header, answer every command; return the commands seen."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(header if header is not None else header_bytes())
    await writer.drain()
    seen: list[str] = []
    try:
        while line := await reader.readline():
            cmd = line.decode().rstrip("\n")
            seen.append(cmd)
            answer = reply(cmd)
            if answer is not None:
                writer.write(answer.encode() + b"\n")
                await writer.drain()
    finally:
        writer.close()
    return seen


@asynccontextmanager
async def serving(
    handler: Callable[[AgiSession], Awaitable[None]], **kw: Any,
) -> AsyncIterator[FastAgiServer]:
    opts: dict[str, Any] = {"header_timeout": 1.0, "command_timeout": 1.0}
    opts.update(kw)
    server = FastAgiServer("127.0.0.1", 0, handler, **opts)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def until(cond: Callable[[], bool], within: float = 2.0) -> None:
    """Wait for a condition on the server's plain-int counters (nothing to await on: poll briefly)."""
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@asynccontextmanager
async def loop_watchdog() -> AsyncIterator[list[float]]:
    """Measure the longest stall of the event loop meanwhile (a frozen loop shows up here)."""
    gaps: list[float] = [0.0]

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps[0] = max(gaps[0], now - last)
            last = now

    task = asyncio.create_task(tick())
    try:
        yield gaps
    finally:
        task.cancel()


# ---------------------------------------------------------------- a good session
@pytest.mark.asyncio
async def test_good_session_runs_handler_with_params_and_helpers() -> None:
    seen: dict[str, Any] = {}

    async def handler(s: AgiSession) -> None:
        seen["script"], seen["params"], seen["args"] = s.script, s.params, s.args
        seen["cid"] = s.env["agi_calleridname"]
        await s.answer()
        seen["var"] = await s.get_variable("CALLERID(num)")
        seen["unset"] = await s.get_variable("UNSET")
        seen["digit"] = await s.stream_file("custom/welcome", "12#")
        seen["digits"] = await s.get_data("custom/menu", 3000, 4)
        await s.set_variable("IVR_CHOICE", 'say "hi" \\ bye')
        await s.exec("Queue", ["sales", "t"])
        await s.verbose("flow done", 2)
        await s.hangup()

    async with serving(handler, allowed_apps={"Queue"}) as server:
        commands = await asyncio.wait_for(fake_asterisk(server.port), 3)
        await until(lambda: server.stats.completed == 1)
    assert seen == {
        "script": "ivr/main", "params": {"flow": "sales", "lang": "en", "empty": ""},
        "args": ["first", "second"], "cid": 'Zoë "Q" Tester', "var": "hello (nested) world", "unset": None,
        "digit": "2", "digits": "12#",
    }
    assert commands == [
        "ANSWER",
        "GET VARIABLE CALLERID(num)",
        "GET VARIABLE UNSET",
        'STREAM FILE custom/welcome "12#"',
        "GET DATA custom/menu 3000 4",
        'SET VARIABLE IVR_CHOICE "say \\"hi\\" \\\\ bye"',
        'EXEC Queue "sales,t"',
        'VERBOSE "flow done" 2',
        "HANGUP",
    ]
    st = server.stats
    assert (st.sessions, st.completed, st.errors, st.bad_headers, st.active) == (1, 1, 0, 0, 0)


@pytest.mark.asyncio
async def test_crlf_header_and_agi_request_fallback() -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    async def handler(s: AgiSession) -> None:
        seen.append((s.script, s.params))

    env = {k: v for k, v in HEADER.items() if k != "agi_network_script"}
    async with serving(handler) as server:
        await asyncio.wait_for(fake_asterisk(server.port, header=header_bytes(env, crlf=True)), 3)
        await until(lambda: server.stats.completed == 1)
    assert seen == [("ivr/main", {"flow": "sales", "lang": "en", "empty": ""})]


# ---------------------------------------------------------------- broken peers
@pytest.mark.asyncio
async def test_disconnect_mid_header_does_not_freeze_the_server(caplog: pytest.LogCaptureFixture) -> None:
    done = asyncio.Event()

    async def handler(s: AgiSession) -> None:
        await s.answer()
        done.set()

    async with serving(handler) as server, loop_watchdog() as gaps:
        _, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(b"agi_network: yes\nagi_network_script: ivr/ma")  # partial header, then gone
        await w.drain()
        w.close()
        await until(lambda: server.stats.bad_headers == 1)

        t0 = time.monotonic()
        commands = await asyncio.wait_for(fake_asterisk(server.port), 2)
        await asyncio.wait_for(done.wait(), 1)
        assert time.monotonic() - t0 < 0.5  # promptly, not after some timeout
    assert commands == ["ANSWER"]
    assert gaps[0] < 0.2, f"event loop stalled for {gaps[0]:.3f}s"
    assert server.stats.completed == 1 and server.stats.bad_headers == 1
    assert any("closed mid-header" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_oversize_header_line_is_refused() -> None:
    async def handler(s: AgiSession) -> None:
        raise AssertionError("handler must not run")

    async with serving(handler, max_line=1024) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\nagi_callerid: " + b"9" * 5000 + b"\n\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # server closed on us
        writer.close()
        await until(lambda: server.stats.bad_headers == 1)
        assert server.stats.sessions == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [
    b"agi_callerid: 123\x07456\n\n",  # control character
    b"not a header\n\n",
    b"agi_callerid 123\n\n",
    b"\n",  # empty header
    b"agi_network_script: ivr?" + b"&".join(b"p%d=1" % i for i in range(200)) + b"\n\n",  # parameter flood
])
async def test_malformed_headers_are_refused(bad: bytes) -> None:
    async def handler(s: AgiSession) -> None:
        raise AssertionError("handler must not run")

    async with serving(handler) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(bad)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        await until(lambda: server.stats.bad_headers == 1)


@pytest.mark.asyncio
async def test_silent_client_times_out_while_others_are_served() -> None:
    async def handler(s: AgiSession) -> None:
        await s.answer()

    async with serving(handler, header_timeout=0.3) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        t0 = time.monotonic()
        # Meanwhile a normal call is served at once.
        assert await asyncio.wait_for(fake_asterisk(server.port), 1) == ["ANSWER"]
        assert time.monotonic() - t0 < 0.25
        assert await asyncio.wait_for(reader.read(), 2) == b""
        assert 0.25 < time.monotonic() - t0 < 1.5
        writer.close()
        await until(lambda: server.stats.timeouts == 1)
        assert server.stats.completed == 1


# ---------------------------------------------------------------- command safety
@pytest.mark.asyncio
async def test_crlf_injection_is_refused_before_anything_is_sent() -> None:
    errors: list[str] = []

    async def handler(s: AgiSession) -> None:
        for call in (
            lambda: s.set_variable("X", "ok\nEXEC System rm -rf /"),
            lambda: s.set_variable("X", "ok\rHANGUP"),
            lambda: s.set_variable("BAD NAME", "v"),
            lambda: s.set_variable("X=Y", "v"),
            lambda: s.command("ANSWER\nHANGUP"),
            lambda: s.stream_file("../../etc/passwd"),
            lambda: s.get_data("menu 1 2"),
            lambda: s.exec("System", "echo pwned"),
            lambda: s.exec("Playback", "${SHELL(id)}"),
        ):
            try:
                await call()
            except (ValueError, PermissionError) as e:
                errors.append(type(e).__name__)
        await s.set_variable("SAFE", "done")

    async with serving(handler, allowed_apps={"Playback"}) as server:
        commands = await asyncio.wait_for(fake_asterisk(server.port), 3)
    assert errors == ["ValueError"] * 7 + ["PermissionError", "ValueError"]
    assert commands == ['SET VARIABLE SAFE "done"']


def test_quote_arg() -> None:
    assert quote_arg("") == '""'
    assert quote_arg('a "b" \\c\td') == '"a \\"b\\" \\\\c\td"'
    for bad in ("a\nb", "a\rb", "a\x00b", "a\x1bb"):
        with pytest.raises(ValueError):
            quote_arg(bad)


@pytest.mark.asyncio
async def test_replies_hangup_errors_and_usage() -> None:
    outcomes: list[str] = []
    script = iter([
        "HANGUP\n200 result=0",  # hangup notice, then the reply
        "510 Invalid or unknown command",
        "520-Invalid command syntax.  Proper usage follows:\n"
        "Usage: GET DATA <file>\n520 End of proper usage.",
        "200 result=1 (still in step)",
        "511 Command Not Permitted on a dead channel or intercept routine",
    ])

    async def handler(s: AgiSession) -> None:
        for cmd in ("STREAM FILE x \"\"", "BOGUS", "GET DATA", "GET VARIABLE V", "ANSWER"):
            try:
                res = await s.command(cmd)
                outcomes.append(f"ok:{res.data}")
            except AgiHangup:
                outcomes.append("hangup")
            except AgiError as e:
                outcomes.append("usage" if "syntax" in str(e) else "error")

    async with serving(handler) as server:
        await asyncio.wait_for(fake_asterisk(server.port, lambda c: next(script)), 3)
        await until(lambda: server.stats.completed == 1)
    assert outcomes == ["hangup", "error", "usage", "ok:still in step", "hangup"]


@pytest.mark.asyncio
async def test_handler_failures_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def handler(s: AgiSession) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug in a flow")
        if calls == 2:
            await s.command("ANSWER")  # the client closes without replying
        await s.answer()

    async with serving(handler) as server:
        # 1st call: the handler raises
        await asyncio.wait_for(fake_asterisk(server.port), 3)
        # 2nd: a client that closes as soon as it got a command -> AgiHangup (EOF)
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(header_bytes())
        await r.readline()
        w.close()
        assert await asyncio.wait_for(fake_asterisk(server.port), 3) == ["ANSWER"]
        await until(lambda: server.stats.completed == 1 and server.stats.hangups == 1)
    assert server.stats.errors == 1
    assert any("handler failed" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_command_timeout_and_oversize_reply() -> None:
    results: list[str] = []

    async def handler(s: AgiSession) -> None:
        try:
            await s.command("ANSWER")
        except AgiError as e:
            results.append(type(e).__name__)
            raise

    async with serving(handler, command_timeout=0.2, max_line=100) as server:
        await asyncio.wait_for(fake_asterisk(server.port, lambda c: None), 3)  # never replies
        await asyncio.wait_for(fake_asterisk(server.port, lambda c: "200 result=1 (" + "x" * 500 + ")"), 3)
        await until(lambda: server.stats.timeouts == 1 and server.stats.errors == 1)
    assert results == ["AgiTimeout", "AgiError"]


@pytest.mark.asyncio
async def test_max_sessions_refuses_extra_connections() -> None:
    release = asyncio.Event()

    async def handler(s: AgiSession) -> None:
        await release.wait()
        await s.answer()

    async with serving(handler, max_sessions=1) as server:
        first = asyncio.create_task(fake_asterisk(server.port))
        await until(lambda: server.stats.sessions == 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert server.stats.rejected == 1
        release.set()
        assert await asyncio.wait_for(first, 2) == ["ANSWER"]


@pytest.mark.asyncio
async def test_stop_ends_running_sessions() -> None:
    async def handler(s: AgiSession) -> None:
        await asyncio.sleep(60)

    server = FastAgiServer("127.0.0.1", 0, handler)
    await server.start()
    client = asyncio.create_task(fake_asterisk(server.port))
    await until(lambda: server.stats.active == 1)
    t0 = time.monotonic()
    await server.stop(grace=0.2)
    assert time.monotonic() - t0 < 1.5
    assert await asyncio.wait_for(client, 2) == []
    assert server.stats.active == 0
