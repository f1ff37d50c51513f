"""Holding the web port's connections: idle sockets, slowloris, one address's flood, upgrades.

The guard of the process under attack wants request headers within 1 s and lets one address
hold 50 connections (see ``GUARD_ENV``). Meanwhile the hotline must keep working: /healthz
answers and a call still gets its route over FastAGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from tests.security.conftest import (
    HEADER_TIMEOUT,
    PER_ADDRESS,
    SUPERVISOR,
    Highest,
    Hotline,
    assert_refusal,
    connect_from,
    ended_by_server,
    fresh_caller,
    log_in,
    read_answer,
    route_call,
    session_cookie,
    web_client,
)

pytestmark = pytest.mark.security

IDLE_PEERS = 300
IDLE_ADDRESSES = [f"127.0.2.{n}" for n in range(1, 11)]  # 30 each
SLOW_PEERS = 100
SLOW_ADDRESSES = [f"127.0.3.{n}" for n in range(1, 5)]  # 25 each
DRIP_SECONDS = 0.3
CLOSE_MARGIN = 1.5  # seconds past the header deadline a cut may take on a busy host
FLOOD_ADDRESS = "127.0.4.1"
FLOOD_PEERS = 80
AT_ONCE = 0.5  # a refused connection is closed well before any deadline could close it


async def idle_peer(hotline: Hotline, address: str) -> float:
    """Connect and send nothing: seconds until the server hangs up (inf if it never does)."""
    reader, writer = await connect_from(address, hotline.web_port)
    opened = time.monotonic()
    try:
        ended = await ended_by_server(reader, HEADER_TIMEOUT + CLOSE_MARGIN + 2)
    finally:
        writer.close()
    return time.monotonic() - opened if ended else float("inf")


async def slowloris_peer(hotline: Hotline, address: str) -> float:
    """A request whose headers come a byte every 0.3 s: seconds until the server hangs up."""
    reader, writer = await connect_from(address, hotline.web_port)
    opened = time.monotonic()

    async def drip() -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(100):  # 30 s at most; the server cuts it long before
            await asyncio.sleep(DRIP_SECONDS)
            writer.write(b"X")
            await writer.drain()

    dripping = asyncio.create_task(drip())
    try:
        ended = await ended_by_server(reader, HEADER_TIMEOUT + CLOSE_MARGIN + 2)
    finally:
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await dripping
        writer.close()
    return time.monotonic() - opened if ended else float("inf")


async def test_idle_and_slowloris_peers_are_cut_at_the_header_deadline(hotline: Hotline) -> None:
    """300 silent connections and 100 slowloris peers from 14 addresses: all cut within the
    header deadline, descriptors given back, /healthz and FastAGI routing served meanwhile."""
    fds_before = hotline.open_fds()
    accepted_before = hotline.health()["web"]["accepted"]
    async with Highest(hotline.open_fds, every=0.025, most_seconds=10) as descriptors:
        peers = [
            *(
                idle_peer(hotline, IDLE_ADDRESSES[n % len(IDLE_ADDRESSES)])
                for n in range(IDLE_PEERS)
            ),
            *(
                slowloris_peer(hotline, SLOW_ADDRESSES[n % len(SLOW_ADDRESSES)])
                for n in range(SLOW_PEERS)
            ),
        ]
        attack = asyncio.gather(*peers)
        await asyncio.sleep(0.3)  # all connected (the listen backlog is 1024), none cut yet
        started = time.monotonic()
        async with web_client() as client, client.get(hotline.url("/healthz")) as response:
            health_status = response.status
        health_seconds = time.monotonic() - started
        started = time.monotonic()
        route = await route_call(hotline, fresh_caller())
        route_seconds = time.monotonic() - started
        lifetimes = await attack
    fds_peak = descriptors.value
    idle, slow = lifetimes[:IDLE_PEERS], lifetimes[IDLE_PEERS:]
    fds_after = await eventually_fds(hotline, fds_before + 5)
    web = hotline.health()["web"]
    print(
        f"\n{IDLE_PEERS} idle + {SLOW_PEERS} slowloris: idle cut after {min(idle):.2f}-"
        f"{max(idle):.2f} s, slowloris after {min(slow):.2f}-{max(slow):.2f} s; fds "
        f"{fds_before} -> peak {fds_peak} -> {fds_after}; /healthz {health_status} in "
        f"{health_seconds * 1000:.0f} ms, route {route['HOTLINE_REASON']} in "
        f"{route_seconds * 1000:.0f} ms; guard {web}"
    )
    assert web["accepted"] - accepted_before >= IDLE_PEERS + SLOW_PEERS  # none refused by a cap
    assert fds_peak >= fds_before + (IDLE_PEERS + SLOW_PEERS) // 2
    assert health_status == 200 and route["HOTLINE_QUEUE"] and route["HOTLINE_TICKET"]
    assert min(lifetimes) >= HEADER_TIMEOUT / 2  # timed from when this busy loop saw connect
    assert max(lifetimes) <= HEADER_TIMEOUT + CLOSE_MARGIN
    assert web["closed_header_timeout"] >= IDLE_PEERS + SLOW_PEERS


async def eventually_fds(hotline: Hotline, at_most: int, seconds: float = 5) -> int:
    """The process's descriptor count once it is at most ``at_most`` (or the last seen)."""
    count = hotline.open_fds()
    for _ in range(int(seconds / 0.1)):
        if count <= at_most:
            break
        await asyncio.sleep(0.1)
        count = hotline.open_fds()
    assert count <= at_most, f"{count} descriptors open, expected at most {at_most}"
    return count


async def test_one_address_gets_at_most_its_cap(hotline: Hotline) -> None:
    """80 connections from one address: 50 stay, the other 30 are closed at once, counted."""
    refused_before = hotline.health()["web"]["refused_per_address"]
    streams = await asyncio.gather(
        *(connect_from(FLOOD_ADDRESS, hotline.web_port) for _ in range(FLOOD_PEERS))
    )
    try:
        ended = await asyncio.gather(*(ended_by_server(r, AT_ONCE) for r, _ in streams))
    finally:
        for _, writer in streams:
            writer.close()
    refused_after = hotline.health()["web"]["refused_per_address"]
    kept, closed = ended.count(False), ended.count(True)
    print(
        f"\n{FLOOD_PEERS} connections from {FLOOD_ADDRESS}: {kept} kept, {closed} closed at "
        f"once; refused_per_address {refused_before} -> {refused_after}"
    )
    assert kept == PER_ADDRESS
    assert closed == FLOOD_PEERS - PER_ADDRESS
    assert refused_after - refused_before == FLOOD_PEERS - PER_ADDRESS


def upgrade_request(hotline: Hotline, *headers: str) -> bytes:
    lines = [
        "GET /api/v1/live HTTP/1.1",
        f"Host: 127.0.0.1:{hotline.web_port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_refused_websocket_upgrade_closes_its_connection(hotline: Hotline) -> None:
    """No login (401), or a login from another site's page (403): the answer, then the end of
    the connection, so nothing more can be sent on it as if the upgrade had been made."""
    async with web_client("127.0.5.1") as client:
        await log_in(client, hotline, SUPERVISOR)
        cookie = session_cookie(client)
    attempts = {
        "anonymous": ((), 401),
        "cross-site": (
            (f"Cookie: hotline_session={cookie}", "Origin: http://evil.example"),
            403,
        ),
    }
    for name, (headers, expected) in attempts.items():
        reader, writer = await connect_from("127.0.5.2", hotline.web_port)
        try:
            writer.write(upgrade_request(hotline, *headers))
            answer = await read_answer(reader)
            closed = await ended_by_server(reader, AT_ONCE)
        finally:
            writer.close()
        print(f"\nWebSocket upgrade, {name}: {answer.status}, closed at once: {closed}")
        assert answer.status == expected, answer
        if answer.headers.get("content-type", "").startswith("application/json"):
            assert_refusal(answer.status, answer.body)
        assert closed, f"{name}: the connection stayed open after a refused upgrade"
