"""Hostile FastAGI peers on a real loopback socket: none of them may stall the server.

Every test plays Asterisk's side with its own small client, throws something nasty at a
``FastAgiServer`` on 127.0.0.1, and then checks that an ordinary call is still routed at once.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agi.codec import MAX_HEADER_LINES, MAX_LINE_BYTES, AgiRequest
from agi.routing import Decider, route_handler
from agi.server import AgiHandler, AgiSession, FastAgiServer
from ivr_bypass.decision import IncomingCall, RoutingDecision, RoutingReason
from tests.agi_commands import variables_set

READ_TIMEOUT = 0.4


# --- the server under test --------------------------------------------------------------------


@dataclass
class Harness:
    """A running server plus what its routes saw."""

    agi: FastAgiServer
    calls: list[IncomingCall]
    requests: list[AgiRequest]
    routing: Counter[str]

    @property
    def port(self) -> int:
        return self.agi.port


async def start_harness(read_timeout: float) -> Harness:
    """Routes: ``route`` (fixed default decision) and ``echo`` (caller ID as the queue name)."""
    calls: list[IncomingCall] = []
    requests: list[AgiRequest] = []
    routing: Counter[str] = Counter()

    async def default(call: IncomingCall, start_by: float) -> RoutingDecision:
        calls.append(call)
        return RoutingDecision(queue="hotline", priority=0, reason=RoutingReason.DEFAULT)

    async def echo(call: IncomingCall, start_by: float) -> RoutingDecision:
        calls.append(call)
        return RoutingDecision(queue=call.caller_number, priority=0, reason=RoutingReason.DEFAULT)

    def recorded(decider: Decider) -> AgiHandler:
        handle = route_handler(
            decider,
            RoutingDecision(queue="hotline", priority=0, reason=RoutingReason.FALLBACK),
            budget_seconds=0.2,
            on_routed=lambda uniqueid, decision: None,
            counters=routing,
        )

        async def wrapper(request: AgiRequest, session: AgiSession) -> None:
            requests.append(request)
            await handle(request, session)

        return wrapper

    agi = FastAgiServer(
        {"route": recorded(default), "echo": recorded(echo)},
        host="127.0.0.1",
        port=0,
        read_timeout=read_timeout,
    )
    harness = Harness(agi, calls, requests, routing)
    await harness.agi.start()
    return harness


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    running = await start_harness(READ_TIMEOUT)
    yield running
    await running.agi.close()


# --- playing Asterisk -------------------------------------------------------------------------


def request_block(
    script: str = "route", extra: list[bytes] | None = None, **values: str | bytes
) -> bytes:
    """A FastAGI header block; ``values`` override ``agi_<name>`` (raw bytes are sent as is)."""
    headers: dict[str, str | bytes] = {
        "network": "yes",
        "network_script": script,
        "request": f"agi://127.0.0.1/{script}",
        "channel": "PJSIP/citizens-00000001",
        "uniqueid": "1795575495.1",
        "callerid": "13800138000",
        "calleridname": "张三",
        "dnid": "12345",
        "context": "from-citizens",
        "extension": "12345",
    }
    headers.update(values)
    lines = [
        b"agi_" + name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        for name, value in headers.items()
    ]
    lines.extend(extra or [])
    return b"\n".join(lines) + b"\n\n"


async def answer_commands(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, timeout: float = 3.0
) -> list[bytes]:
    """Answer ``200 result=1`` to every command until the server closes; the raw lines."""
    commands: list[bytes] = []
    async with asyncio.timeout(timeout):
        while True:
            try:
                line = await reader.readline()
            except ConnectionResetError:
                break
            if not line:
                break
            commands.append(line)
            writer.write(b"200 result=1\n")
            await writer.drain()
    return commands


async def dial(port: int, payload: bytes, *, timeout: float = 3.0) -> list[bytes]:
    """One whole dialogue: send ``payload``, answer every command, return the raw command lines."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await answer_commands(reader, writer, timeout=timeout)
    finally:
        writer.close()


async def dial_dropped(port: int, payload: bytes) -> list[bytes]:
    """Send a payload the server should refuse; whatever it wrote back before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(payload)
            await writer.drain()
        except ConnectionError:
            return []
        async with asyncio.timeout(3):
            try:
                return (await reader.read()).splitlines(keepends=True)
            except ConnectionResetError:
                return []
    finally:
        writer.close()


async def served_promptly(harness: Harness, within: float = 1.0) -> None:
    """An ordinary call still gets all five variables, well inside one read deadline or two."""
    started = time.monotonic()
    commands = await dial(harness.port, request_block(uniqueid="after.hostile"), timeout=within)
    assert time.monotonic() - started < within
    assert variables_set(commands)["HOTLINE_QUEUE"] == "hotline"
    assert harness.calls[-1].uniqueid == "after.hostile"


async def counted(agi: FastAgiServer, name: str, value: int, within: float = 2.0) -> None:
    """Wait until ``agi.counters[name]`` reaches ``value`` (the server counts after the peer)."""
    deadline = time.monotonic() + within
    while agi.counters[name] < value and time.monotonic() < deadline:  # noqa: ASYNC110 - no event
        await asyncio.sleep(0.005)
    assert agi.counters[name] == value, f"{name}: {dict(agi.counters)}"


def reset_on_close(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the server gets a TCP RST instead of an orderly EOF."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --- 1. hostile caller IDs --------------------------------------------------------------------

# Long enough to fill a whole line as ``agi_calleridname`` (the longer of the two header names).
LONGEST_CALLER_ID = "1" * (MAX_LINE_BYTES - len("agi_calleridname: "))


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        pytest.param("'; DROP TABLE tickets;--", "'; DROP TABLE tickets;--", id="sql"),
        pytest.param("<script>alert(1)</script>", "<script>alert(1)</script>", id="html"),
        pytest.param(
            '1380" \\n SET VARIABLE HOTLINE_QUEUE "vip\\',
            '1380" \\n SET VARIABLE HOTLINE_QUEUE "vip\\',
            id="quote-backslash-n",
        ),
        pytest.param(LONGEST_CALLER_ID, LONGEST_CALLER_ID, id="4078-bytes"),
        pytest.param("张三".encode("gbk"), "\ufffd" * 4, id="gbk"),
        pytest.param(b"\xff\xfe1380\xff", "\ufffd\ufffd1380\ufffd", id="raw-0xff"),
    ],
)
async def test_hostile_caller_id_is_parsed_quoted_on_one_line_and_served(
    harness: Harness, raw: str | bytes, text: str
) -> None:
    commands = await dial(harness.port, request_block("echo", callerid=raw, calleridname=raw))

    assert harness.calls[-1].caller_number == text
    assert harness.requests[-1].caller_name == text
    # The echo route puts the caller ID into HOTLINE_QUEUE: Asterisk must read back exactly it.
    values = variables_set(commands)
    assert values["HOTLINE_QUEUE"] == text
    assert values["HOTLINE_REASON"] == "default"
    assert harness.agi.counters["handled"] == 1
    await served_promptly(harness)


@pytest.mark.parametrize("bad", ["\r", "\0"])
async def test_carriage_return_or_nul_in_a_caller_id_is_never_written_back(
    harness: Harness, bad: str
) -> None:
    caller = f"13800{bad}EXEC System reboot"
    # The default route does not echo the caller ID: routed normally, the decider saw the text.
    assert variables_set(await dial(harness.port, request_block(callerid=caller)))
    assert harness.calls[-1].caller_number == caller

    # Echoed into a variable, set_variable_command refuses it: nothing at all reaches Asterisk
    # (its dialplan then falls back by itself) and the connection ends.
    assert await dial(harness.port, request_block("echo", callerid=caller)) == []
    assert harness.agi.counters["handler_errors"] == 1
    await served_promptly(harness)


# --- 2. peers that go away --------------------------------------------------------------------


async def test_two_hundred_clients_that_close_at_once_are_dropped_quietly(
    harness: Harness,
) -> None:
    started = time.monotonic()
    for _ in range(200):
        _, writer = await asyncio.open_connection("127.0.0.1", harness.port)
        writer.close()
        await writer.wait_closed()
    await counted(harness.agi, "hangups", 200)
    assert time.monotonic() - started < 3
    assert harness.agi.counters["connections"] == 200
    assert harness.agi.counters["handler_errors"] == 0
    assert harness.agi.counters["protocol_errors"] == 0
    assert harness.calls == []
    await served_promptly(harness)


@pytest.mark.parametrize("when", ["before-headers", "after-first-command"])
async def test_client_that_resets_the_connection_is_a_hangup(harness: Harness, when: str) -> None:
    """A TCP RST (SO_LINGER 0) is the peer going away, not a failing handler."""
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    if when == "before-headers":
        await counted(harness.agi, "connections", 1)
    else:
        writer.write(request_block())
        assert (await asyncio.wait_for(reader.readline(), 1)).startswith(b"EXEC MSet ")
    reset_on_close(writer)
    await served_promptly(harness)  # never stalled, whatever the count says
    await counted(harness.agi, "hangups", 1, within=0.5)
    assert harness.agi.counters["handler_errors"] == 0


# --- 3. a client that dribbles ----------------------------------------------------------------


async def test_header_block_sent_one_byte_at_a_time_is_served(harness: Harness) -> None:
    payload = "".join(
        f"{line}\n"
        for line in (
            "agi_network_script: route",
            "agi_channel: PJSIP/citizens-00000002",
            "agi_uniqueid: dribble.1",
            "agi_callerid: 13800138000",
            "agi_calleridname: 张三",
            "",
        )
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    started = time.monotonic()
    try:
        for index in range(len(payload)):  # also splits the UTF-8 bytes of 张三 across sends
            writer.write(payload[index : index + 1])
            await writer.drain()
            await asyncio.sleep(0.0005)
        sending = time.monotonic() - started
        commands = await answer_commands(reader, writer)
    finally:
        writer.close()
    print(f"\n{len(payload)} header bytes sent one by one in {sending:.3f} s")
    assert sending < READ_TIMEOUT  # the whole block inside one read deadline
    assert variables_set(commands)["HOTLINE_QUEUE"] == "hotline"
    assert harness.requests[-1].caller_name == "张三"
    assert harness.calls[-1].uniqueid == "dribble.1"
    await served_promptly(harness)


async def test_one_line_dribbled_slower_than_the_deadline_is_a_timeout(harness: Harness) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    started = time.monotonic()
    try:
        for byte in b"agi_network_script: route\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
            if harness.agi.counters["timeouts"]:
                break
        assert await asyncio.wait_for(reader.read(), 1) == b""
    finally:
        writer.close()
    elapsed = time.monotonic() - started
    assert READ_TIMEOUT * 0.9 < elapsed < READ_TIMEOUT + 0.5
    assert harness.agi.counters["timeouts"] == 1
    await served_promptly(harness)


# --- 4. over-long lines and blocks ------------------------------------------------------------


def padding_line(length: int) -> bytes:
    """An ``agi_padding: xxx`` header line of exactly ``length`` bytes (without its newline)."""
    prefix = b"agi_padding: "
    return prefix + b"x" * (length - len(prefix))


async def test_header_line_of_max_line_bytes_is_still_served(harness: Harness) -> None:
    commands = await dial(harness.port, request_block(extra=[padding_line(MAX_LINE_BYTES)]))
    assert variables_set(commands)
    assert harness.requests[-1].headers["agi_padding"] == "x" * (MAX_LINE_BYTES - 13)


@pytest.mark.parametrize(
    "length", [MAX_LINE_BYTES + 1, 4 * MAX_LINE_BYTES, 1024 * 1024], ids=["+1", "x4", "1MB"]
)
async def test_header_line_over_max_line_bytes_is_a_protocol_error(
    harness: Harness, length: int
) -> None:
    assert await dial_dropped(harness.port, request_block(extra=[padding_line(length)])) == []
    await counted(harness.agi, "protocol_errors", 1)
    assert harness.requests == []
    await served_promptly(harness)


async def test_caller_id_of_a_full_4kb_is_routed(harness: Harness) -> None:
    """A 4,096-byte caller ID fits a header line (the limit is twice that) and gets a route."""
    commands = await dial(harness.port, request_block(callerid="1" * 4096))
    assert variables_set(commands)["HOTLINE_QUEUE"] == "hotline"
    assert harness.requests[-1].caller_number == "1" * 4096
    await served_promptly(harness)


def header_block_of(lines: int, *, ended: bool = True) -> bytes:
    """A valid request with exactly ``lines`` header lines; ``ended=False`` omits the empty line."""
    base = request_block().rstrip(b"\n").split(b"\n")
    padding = [b"agi_pad_%d: x" % index for index in range(lines - len(base))]
    return b"\n".join(base + padding) + (b"\n\n" if ended else b"\n")


async def test_max_header_lines_is_still_served(harness: Harness) -> None:
    commands = await dial(harness.port, header_block_of(MAX_HEADER_LINES))
    assert variables_set(commands)
    assert len(harness.requests[-1].headers) == MAX_HEADER_LINES


@pytest.mark.parametrize(
    ("lines", "ended"),
    [(MAX_HEADER_LINES + 1, True), (MAX_HEADER_LINES + 1, False), (10_000, False)],
    ids=["129-ended", "129-never-ended", "10000-never-ended"],
)
async def test_more_header_lines_than_allowed_is_a_protocol_error(
    harness: Harness, lines: int, ended: bool
) -> None:
    # Without the closing empty line the drop must come from counting lines as they arrive,
    # at once, not from parsing the block nor from the read deadline.
    started = time.monotonic()
    assert await dial_dropped(harness.port, header_block_of(lines, ended=ended)) == []
    await counted(harness.agi, "protocol_errors", 1)
    assert time.monotonic() - started < READ_TIMEOUT / 2
    assert harness.agi.counters["timeouts"] == 0
    assert harness.requests == []
    await served_promptly(harness)


# --- 5. and 6. silent peers -------------------------------------------------------------------


async def test_silent_client_is_dropped_after_the_deadline_while_others_are_served(
    harness: Harness,
) -> None:
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", harness.port)
    started = time.monotonic()
    try:
        for _ in range(3):
            await served_promptly(harness, within=READ_TIMEOUT / 2)
        assert harness.agi.counters["timeouts"] == 0  # the others did not wait for it
        assert await asyncio.wait_for(silent_reader.read(), READ_TIMEOUT + 1) == b""
    finally:
        silent_writer.close()
    assert READ_TIMEOUT * 0.9 < time.monotonic() - started < READ_TIMEOUT + 0.5
    assert harness.agi.counters["timeouts"] == 1
    assert harness.agi.counters["handled"] == 3


async def test_peer_that_never_answers_a_command_is_dropped_after_the_deadline(
    harness: Harness,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    try:
        writer.write(request_block(uniqueid="mute.1"))
        first = await asyncio.wait_for(reader.readline(), 1)
        started = time.monotonic()
        for _ in range(3):
            await served_promptly(harness, within=READ_TIMEOUT / 2)
        # No reply from us: no second command, only the close after the deadline.
        assert await asyncio.wait_for(reader.read(), READ_TIMEOUT + 1) == b""
        elapsed = time.monotonic() - started
    finally:
        writer.close()
    assert variables_set([first])["HOTLINE_QUEUE"] == "hotline"
    assert elapsed < READ_TIMEOUT + 0.5
    assert harness.agi.counters["timeouts"] == 1
    assert harness.agi.counters["handled"] == 3


@pytest.mark.parametrize(
    ("reply", "counter"),
    [(b"HTTP/1.1 200 OK\n", "protocol_errors"), (b"511 Command Not Permitted\n", "hangups")],
)
async def test_peer_that_answers_garbage_or_511_is_dropped_at_once(
    harness: Harness, reply: bytes, counter: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    try:
        writer.write(request_block())
        assert (await asyncio.wait_for(reader.readline(), 1)).startswith(b"EXEC MSet ")
        writer.write(reply)
        assert await asyncio.wait_for(reader.read(), READ_TIMEOUT / 2) == b""
    finally:
        writer.close()
    assert harness.agi.counters[counter] == 1
    assert harness.agi.counters["handled"] == 0
    await served_promptly(harness)


async def test_peer_with_an_endless_usage_reply_is_dropped(harness: Harness) -> None:
    """Every read meets its deadline, so only a cap on continued lines ends this session."""
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    try:
        writer.write(request_block())
        assert (await asyncio.wait_for(reader.readline(), 1)).startswith(b"EXEC MSet ")
        writer.write(b"520-Invalid command syntax.  Proper usage follows:\n" * 1000)
        assert await asyncio.wait_for(reader.read(), READ_TIMEOUT / 2) == b""
    finally:
        writer.close()
    assert harness.agi.counters["protocol_errors"] == 1
    await served_promptly(harness)


# --- 7. a flood of concurrent sessions --------------------------------------------------------

SESSIONS = 1000


def enough_file_descriptors(needed: int) -> tuple[int, int] | None:
    """Raise the soft fd limit to ``needed`` if lower; the old limits, or None if it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            return None
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        except (ValueError, OSError):
            return None
    return soft, hard


async def test_thousand_concurrent_sessions_are_all_routed_without_stalling_the_loop() -> None:
    limits = enough_file_descriptors(2 * SESSIONS + 500)
    if limits is None:
        pytest.skip(f"cannot raise the open-file limit to {2 * SESSIONS + 500} for this process")
    loop = asyncio.get_running_loop()
    # A roomy deadline: 1,000 peers in one Python thread send their headers late, and dropping
    # them is not what this test is about; the stall must still stay under READ_TIMEOUT.
    harness = await start_harness(5 * READ_TIMEOUT)
    stop = asyncio.Event()
    worst_stall = 0.0

    async def heartbeat(interval: float = 0.002) -> None:
        nonlocal worst_stall
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(interval)
            worst_stall = max(worst_stall, loop.time() - before - interval)

    async def session(index: int) -> list[bytes]:
        return await dial(harness.port, request_block(uniqueid=f"flood.{index}"), timeout=15)

    async def flood() -> list[list[bytes] | BaseException]:
        return await asyncio.gather(
            *(session(index) for index in range(SESSIONS)), return_exceptions=True
        )

    beat = asyncio.create_task(heartbeat())
    try:
        started = time.monotonic()
        # The peers run on a loop of their own (another thread), as Asterisk is another process:
        # the heartbeat then measures the server's loop, not the burst of 1,000 connects.
        results = await asyncio.to_thread(asyncio.run, flood())
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await beat
        await harness.agi.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    print(
        f"\n{SESSIONS} concurrent FastAGI sessions in {elapsed:.2f} s; "
        f"worst stall of the server's event loop {worst_stall * 1000:.1f} ms"
    )
    errors = [result for result in results if isinstance(result, BaseException)]
    assert errors == []
    for commands in results:
        assert isinstance(commands, list)
        assert variables_set(commands)["HOTLINE_QUEUE"] == "hotline"
    assert {call.uniqueid for call in harness.calls} == {f"flood.{i}" for i in range(SESSIONS)}
    assert harness.agi.counters["handled"] == SESSIONS
    assert harness.agi.counters["connections"] == SESSIONS
    assert harness.routing["routed"] == SESSIONS
    assert harness.routing["fallback_timeout"] == 0
    # A stall as long as a read deadline would start dropping honest peers.
    assert worst_stall < READ_TIMEOUT
