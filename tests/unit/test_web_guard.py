"""The web port's guard over real sockets on 127.0.0.1: header deadlines, idle keep-alive, caps.

Each test starts a tiny aiohttp app through ``start_guarded_site`` with deadlines of a fraction
of a second, and stops by itself within a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from infra.config import ConfigError, load_settings
from web.guard import (
    ConnectionLimits,
    GuardedSite,
    address_key,
    fd_budget,
    start_guarded_site,
)
from web.metrics import prometheus_text

QUICK = ConnectionLimits(header_timeout=0.3, idle_timeout=0.8, per_address=64, total=256)
HOLDING = ConnectionLimits(header_timeout=5.0, idle_timeout=5.0, per_address=4, total=100)
REQUEST = b"GET / HTTP/1.1\r\nHost: guard.test\r\n\r\n"
BIG = b"x" * (8 << 20)
# Valid header lines without the blank line that would end them: what a slowloris sends.
DRIP = REQUEST[:-2] + b"X-Drip: 1\r\n" * 20


async def hello(request: web.Request) -> web.Response:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return web.Response(text=f"hello {peer[1] if peer else '?'}")


async def download(request: web.Request) -> web.StreamResponse:
    """Ten chunks over a second: longer than both deadlines."""
    response = web.StreamResponse()
    response.content_length = 10 * 1000
    await response.prepare(request)
    for _ in range(10):
        await response.write(b"a" * 1000)
        await asyncio.sleep(0.1)
    await response.write_eof()
    return response


async def big(request: web.Request) -> web.Response:
    """Written after the handler returns, in the idle phase: more than the sockets hold."""
    return web.Response(body=BIG)


async def echo(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        if message.type is aiohttp.WSMsgType.TEXT:
            await socket.send_str(f"echo {message.data}")
    return socket


def tiny_app(static_file: Path | None = None) -> web.Application:
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/download", download)
    app.router.add_get("/big", big)
    app.router.add_get("/ws", echo)
    if static_file is not None:

        async def send_file(request: web.Request) -> web.FileResponse:
            return web.FileResponse(static_file)

        app.router.add_get("/file", send_file)
    return app


@contextlib.asynccontextmanager
async def guarded(
    limits: ConnectionLimits, static_file: Path | None = None
) -> AsyncIterator[GuardedSite]:
    runner = web.AppRunner(tiny_app(static_file), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = await start_guarded_site(runner, "127.0.0.1", 0, limits)
    try:
        yield site
    finally:
        await site.stop()
        await runner.cleanup()


async def until(condition: Callable[[], bool], seconds: float = 3.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while not condition():
        if loop.time() > give_up:
            raise AssertionError(f"still not {what or 'so'} after {seconds} s")
        await asyncio.sleep(0.01)


async def seconds_until_closed(reader: asyncio.StreamReader, limit: float = 3.0) -> float | None:
    """How long until the server closed the connection (None: still open after ``limit``)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asyncio.wait_for(reader.read(), limit)
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return loop.time() - started


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_idle_connections_are_closed_after_the_header_timeout() -> None:
    async with guarded(QUICK) as site:
        peers = [await asyncio.open_connection("127.0.0.1", site.port) for _ in range(20)]
        waits = await asyncio.gather(*(seconds_until_closed(reader) for reader, _ in peers))
        for _, writer in peers:
            writer.close()
        assert all(wait is not None and 0.2 <= wait < 2.0 for wait in waits), waits
        await until(lambda: site.counters["open"] == 0, what="all closed")
        assert site.counters["closed_header_timeout"] == 20
        assert site.counters["accepted"] == 20


async def test_a_slowloris_peer_is_closed_however_steadily_it_sends() -> None:
    async with guarded(QUICK) as site:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        closed = asyncio.create_task(seconds_until_closed(reader, limit=4.0))
        sent = 0
        for byte in DRIP:
            if closed.done() or writer.is_closing():
                break
            writer.write(bytes([byte]))
            sent += 1
            await asyncio.sleep(0.1)
        wait = await closed
        writer.close()
        assert wait is not None and 0.2 <= wait < 1.5, wait
        assert 2 <= sent < 15
        assert site.counters["closed_header_timeout"] == 1


async def test_a_request_is_answered_and_keep_alive_lasts_the_idle_timeout_not_less() -> None:
    async with guarded(QUICK) as site, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{site.port}/"
        first = await (await session.get(url)).text()
        await asyncio.sleep(0.5)  # past the header timeout, within the idle timeout
        second = await (await session.get(url)).text()
        assert first.startswith("hello ") and first == second  # the same client port
        assert site.counters["accepted"] == 1
        assert site.counters["closed_header_timeout"] == 0


async def test_keep_alive_idle_ends_after_the_idle_timeout() -> None:
    async with guarded(QUICK) as site:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(REQUEST)
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        wait = await seconds_until_closed(reader)
        writer.close()
        assert wait is not None and 0.7 <= wait < 2.0, wait
        assert site.counters["closed_idle_timeout"] == 1
        assert site.counters["closed_header_timeout"] == 0


async def test_the_next_request_after_a_response_has_its_own_header_deadline() -> None:
    async with guarded(QUICK) as site:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(REQUEST)
        await read_response(reader)
        closed = asyncio.create_task(seconds_until_closed(reader))
        for byte in DRIP:
            if closed.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
        wait = await closed
        writer.close()
        assert wait is not None and wait < 1.5, wait
        assert site.counters["closed_header_timeout"] == 1
        assert site.counters["closed_idle_timeout"] == 0


async def test_a_websocket_outlives_both_deadlines() -> None:
    async with guarded(QUICK) as site, aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{site.port}/ws") as socket:
            await asyncio.sleep(1.2)  # four header timeouts, one and a half idle timeouts
            await socket.send_str("still here")
            assert await socket.receive_str(timeout=2) == "echo still here"
        assert site.counters["closed_header_timeout"] == 0
        assert site.counters["closed_idle_timeout"] == 0


async def test_a_long_download_is_not_cut(tmp_path: Path) -> None:
    async with guarded(QUICK) as site, aiohttp.ClientSession() as session:
        response = await session.get(f"http://127.0.0.1:{site.port}/download")
        assert (response.status, len(await response.read())) == (200, 10_000)
        assert site.counters["closed_header_timeout"] == 0


async def small_window_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client whose receive buffer is small, so the server has to keep what it cannot send."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=client, limit=1 << 16)


async def test_a_slow_reader_gets_a_big_response_whole() -> None:
    async with guarded(QUICK) as site:
        reader, writer = await small_window_connection(site.port)
        writer.write(b"GET /big HTTP/1.1\r\nHost: guard.test\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        received = 0
        started = asyncio.get_running_loop().time()
        while received < len(BIG):
            chunk = await asyncio.wait_for(reader.read(1 << 20), 3)
            assert chunk, f"cut off after {received} bytes"
            received += len(chunk)
            await asyncio.sleep(0.05)
        took = asyncio.get_running_loop().time() - started
        writer.close()
        assert took > QUICK.idle_timeout  # it did outlast the idle deadline


async def test_a_reader_that_stops_reading_is_cut_off() -> None:
    async with guarded(QUICK) as site:
        _, writer = await small_window_connection(site.port)
        writer.write(b"GET /big HTTP/1.1\r\nHost: guard.test\r\n\r\n")
        await until(
            lambda: site.counters["closed_idle_timeout"] == 1 and site.counters["open"] == 0,
            seconds=4.0,
            what="cut off",
        )
        writer.close()


async def test_files_are_sent_through_the_guard(tmp_path: Path) -> None:
    page = tmp_path / "page.bin"
    page.write_bytes(os.urandom(300_000))  # larger than the socket buffers
    async with guarded(QUICK, static_file=page) as site, aiohttp.ClientSession() as session:
        for _ in range(2):
            response = await session.get(f"http://127.0.0.1:{site.port}/file")
            assert (response.status, await response.read()) == (200, page.read_bytes())
        assert site.counters["accepted"] == 1


async def test_the_per_address_cap_refuses_at_once_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="web.guard")
    async with guarded(HOLDING) as site:
        held = [await asyncio.open_connection("127.0.0.1", site.port) for _ in range(4)]
        await until(lambda: site.counters["open"] == 4, what="4 open")
        refused = [await asyncio.open_connection("127.0.0.1", site.port) for _ in range(3)]
        waits = await asyncio.gather(*(seconds_until_closed(reader, 2.0) for reader, _ in refused))
        assert all(wait is not None and wait < 0.5 for wait in waits), waits
        assert site.counters["refused_per_address"] == 3
        assert site.counters["refused_total"] == 0
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(lines) == 1 and "127.0.0.1" in lines[0], lines
        # As the bridge's health report carries them, so /metrics shows them.
        metrics = prometheus_text({"web": dict(site.counters)}, None)
        assert "hotline_web_refused_per_address 3\n" in metrics
        assert "hotline_web_open 4\n" in metrics

        held[0][1].close()  # a place is free again
        await until(lambda: site.counters["open"] == 3, what="3 open")
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(REQUEST)
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        for _, other in [*held[1:], *refused, (reader, writer)]:
            other.close()


async def test_at_the_total_cap_the_longest_idle_connection_makes_room() -> None:
    """A flood of idle connections fills the total cap: a newcomer (a monitor, a supervisor)
    still gets its answer, and the connection that waited longest without a request goes."""
    limits = ConnectionLimits(header_timeout=5.0, idle_timeout=5.0, per_address=3, total=5)
    async with guarded(limits) as site:
        held = []
        for host, count in (("127.0.0.1", 3), ("127.0.0.2", 2)):
            for _ in range(count):
                held.append(
                    await asyncio.open_connection("127.0.0.1", site.port, local_addr=(host, 0))
                )
                admitted = len(held)
                await until(lambda n=admitted: site.counters["open"] == n, what="admitted in turn")
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", site.port, local_addr=("127.0.0.3", 0)
        )
        writer.write(REQUEST)
        status = await asyncio.wait_for(reader.readline(), 2)
        assert status.startswith(b"HTTP/1.1 200"), status
        oldest = await seconds_until_closed(held[0][0], 1.0)
        assert oldest is not None and oldest < 0.5, oldest
        assert await seconds_until_closed(held[1][0], 0.2) is None  # only the oldest went
        assert site.counters["evicted_for_room"] == 1
        assert (site.counters["refused_total"], site.counters["open"]) == (0, 5)
        for _, other in [*held, (reader, writer)]:
            other.close()


async def test_the_total_cap_refuses_when_every_connection_is_busy() -> None:
    """Connections in the middle of a request (a WebSocket, a download) are never evicted: then
    the newcomer is refused at once, whatever its address."""
    limits = ConnectionLimits(header_timeout=5.0, idle_timeout=5.0, per_address=3, total=5)
    async with guarded(limits) as site:
        sockets = []
        for host, count in (("127.0.0.1", 3), ("127.0.0.2", 2)):
            connector = aiohttp.TCPConnector(local_addr=(host, 0), force_close=True)
            client = aiohttp.ClientSession(connector=connector)
            for _ in range(count):
                sockets.append(
                    (client, await client.ws_connect(f"http://127.0.0.1:{site.port}/ws"))
                )
        await until(lambda: site.counters["open"] == 5, what="5 open")
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", site.port, local_addr=("127.0.0.3", 0)
        )
        wait = await seconds_until_closed(reader, 2.0)
        assert wait is not None and wait < 0.5, wait
        assert (site.counters["refused_total"], site.counters["evicted_for_room"]) == (1, 0)
        for _, socket in sockets:
            await socket.send_str("still here")
            assert (await socket.receive_str(timeout=2)) == "echo still here"
            await socket.close()
        for client in {client for client, _ in sockets}:
            await client.close()
        writer.close()


HOLDER = """
import socket, sys
sys.stdin.readline()
held = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(300)]
print("holding", flush=True)
sys.stdin.read()
"""


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_three_hundred_idle_peers_give_their_descriptors_back() -> None:
    """Another process holds the peers, so this process's descriptors are the server's alone.

    The header timeout leaves time for connections the kernel made retry (a full accept queue
    drops a SYN, retried after a second) to join the others before the first are closed.
    """
    limits = ConnectionLimits(header_timeout=2.5, idle_timeout=2.5, per_address=400, total=400)
    async with guarded(limits) as site:
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOLDER,
            str(site.port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdin is not None and holder.stdout is not None
        try:
            before = open_descriptors()
            holder.stdin.write(b"go\n")
            assert await asyncio.wait_for(holder.stdout.readline(), 10) == b"holding\n"
            await until(lambda: site.counters["accepted"] == 300, what="300 accepted")
            during = open_descriptors()
            await until(lambda: site.counters["open"] == 0, seconds=6.0, what="all closed")
            await asyncio.sleep(0.05)  # the transports' sockets close on the next loop turn
            after = open_descriptors()
        finally:
            holder.stdin.close()
            try:
                await asyncio.wait_for(holder.wait(), 5)
            except TimeoutError:
                holder.kill()
                await holder.wait()
        assert during - before >= 250, (before, during)
        assert after - before <= 3, (before, during, after)
        assert site.counters["closed_header_timeout"] == 300


def test_the_guard_works_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[float | None, bytes, int]:
        async with guarded(QUICK) as site:
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", site.port)
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            writer.write(REQUEST)
            answer = await read_response(reader)
            wait = await seconds_until_closed(idle_reader)
            idle_writer.close()
            writer.close()
            return wait, answer, site.counters["closed_header_timeout"]

    wait, answer, closed = uvloop.run(scenario())
    assert wait is not None and wait < 2.0
    assert answer.startswith(b"HTTP/1.1 200") and closed == 1


@pytest.mark.parametrize(
    ("peername", "key"),
    [
        (("192.0.2.7", 40000), "192.0.2.7"),
        (("2001:db8:1:2:aaaa::1", 40000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 40000, 0, 0), "2001:db8:1:2::/64"),  # the same /64
        (("::ffff:192.0.2.7", 40000, 0, 0), "192.0.2.7"),
        (("fe80::1%eth0", 40000, 0, 2), "fe80::/64"),
        (None, ""),
    ],
)
def test_caps_count_ipv4_addresses_and_ipv6_networks(peername: object, key: str) -> None:
    assert address_key(peername) == key


def test_the_total_keeps_half_the_descriptors_for_the_rest_of_the_bridge() -> None:
    assert fd_budget(1024, 1024) == 512
    assert fd_budget(1024, 65536) == 1024
    assert fd_budget(1024, -1) == 1024  # RLIM_INFINITY


@pytest.mark.parametrize(
    "limits",
    [
        {"header_timeout": 0},
        {"idle_timeout": -1},
        {"header_timeout": float("nan")},
        {"per_address": 0},
        {"total": 0},
    ],
)
def test_limits_that_would_not_work_are_refused(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ConnectionLimits(**limits)  # type: ignore[arg-type]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HOTLINE_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_environment")
def test_the_guard_settings_default_and_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    assert (settings.web_header_timeout, settings.web_idle_timeout) == (10.0, 30.0)
    assert (settings.web_max_connections_per_address, settings.web_max_connections) == (128, 4096)
    monkeypatch.setenv("HOTLINE_WEB_HEADER_TIMEOUT", "2.5")
    monkeypatch.setenv("HOTLINE_WEB_MAX_CONNECTIONS", "4096")
    settings = load_settings()
    assert (settings.web_header_timeout, settings.web_max_connections) == (2.5, 4096)


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HOTLINE_WEB_HEADER_TIMEOUT", "0", "invalid HOTLINE_WEB_HEADER_TIMEOUT='0'"),
        ("HOTLINE_WEB_IDLE_TIMEOUT", "soon", "invalid HOTLINE_WEB_IDLE_TIMEOUT='soon'"),
        ("HOTLINE_WEB_MAX_CONNECTIONS", "-5", "invalid HOTLINE_WEB_MAX_CONNECTIONS='-5'"),
        (
            "HOTLINE_WEB_MAX_CONNECTIONS_PER_ADDRESS",
            "5000",
            "web_max_connections_per_address (5000) is more than web_max_connections (4096)",
        ),
    ],
)
def test_bad_guard_settings_are_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)
