"""FastAGI sessions recorded from the real Asterisk 22 (``tests/recorder/agi_session.py``).

The codec must read exactly what Asterisk sends, and the real routing server, fed Asterisk's
side of the recording, must answer exactly what it answered then.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from agi.codec import parse_reply, parse_request
from agi.server import FastAgiServer
from hotline.schema import upgrade_database
from hotline.service import build_route_server
from infra.config import Settings
from infra.storage import create_engine, transactions_for
from tests.conftest import FIXTURES, free_port

RECORDING = FIXTURES / "agi" / "route-sessions.agi"


def sessions() -> tuple[datetime, list[list[tuple[str, str]]]]:
    recorded_at = None
    found: list[list[tuple[str, str]]] = []
    for line in RECORDING.read_text(encoding="utf-8").splitlines():
        if line.startswith("# recorded "):
            recorded_at = datetime.fromisoformat(line.split()[2])
        elif line.startswith("# connection"):
            found.append([])
        elif line[:2] in ("> ", "< ") or line in (">", "<"):
            found[-1].append((line[0], line[2:]))
    if recorded_at is None:
        raise ValueError("recording without its time")
    return recorded_at, found


def request_lines(session: list[tuple[str, str]]) -> list[str]:
    lines = []
    for direction, text in session:
        if direction != ">" or text == "":
            break
        lines.append(text)
    return lines


def test_the_codec_reads_what_asterisk_sent() -> None:
    _, recorded = sessions()
    assert len(recorded) == 3
    first, _, withheld = (parse_request(request_lines(s)) for s in recorded)
    assert (first.script, first.channel, first.extension) == (
        "route",
        "PJSIP/citizens-00000000",
        "12345",
    )
    assert (first.caller_number, first.caller_name) == ("13800138000", "张三")
    assert first.uniqueid == "1796238051.0"
    assert withheld.caller_number == "anonymous"
    for session in recorded:
        replies = [
            text
            for direction, text in session[len(request_lines(session)) + 1 :]
            if direction == ">"
        ]
        assert replies and all(parse_reply(reply).ok for reply in replies), replies


@pytest.fixture
async def route_server(tmp_path: Path) -> AsyncIterator[FastAgiServer]:
    """The production routing server on a new database, its clock at the recording's time."""
    recorded_at, _ = sessions()
    url = f"sqlite+aiosqlite:///{tmp_path}/hotline.db"
    await upgrade_database(url)
    engine = create_engine(url)
    # The point here is the bytes, not the time: a budget no busy CI machine can exceed.
    settings = Settings(
        database_url=url, agi_host="127.0.0.1", agi_port=free_port(), routing_budget_ms=2000
    )
    units = transactions_for(engine)
    server = build_route_server(
        settings,
        engine,
        units,
        lambda: None,
        on_routed=lambda uniqueid, decision: None,
        counters=Counter(),
        clock=lambda: recorded_at,
    )
    await server.start()
    yield server
    await server.close()
    await units.close()
    await engine.dispose()


async def test_the_routing_server_answers_as_it_did_on_the_real_pbx(
    route_server: FastAgiServer,
) -> None:
    _, recorded = sessions()
    for session in recorded:
        reader, writer = await asyncio.open_connection("127.0.0.1", route_server.port)
        for direction, text in session:
            if direction == ">":
                writer.write(text.encode() + b"\n")
                await writer.drain()
            else:
                sent = await asyncio.wait_for(reader.readline(), 2)
                assert sent.decode().rstrip("\n") == text
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
    assert route_server.counters["handled"] == 3


@pytest.mark.parametrize("cut", [1, 5, 24])
async def test_a_session_cut_anywhere_in_the_headers_ends_cleanly(
    route_server: FastAgiServer, cut: int
) -> None:
    """Asterisk's real header block, with the connection lost after ``cut`` lines."""
    _, recorded = sessions()
    _, writer = await asyncio.open_connection("127.0.0.1", route_server.port)
    writer.write("".join(line + "\n" for line in request_lines(recorded[0])[:cut]).encode())
    writer.close()
    await asyncio.sleep(0.1)
    assert route_server.counters["hangups"] == 1 and route_server.counters["handled"] == 0


async def test_with_the_database_gone_the_recorded_call_gets_the_default_route(
    tmp_path: Path,
) -> None:
    """A database that cannot answer (here: never migrated) costs the caller nothing."""
    _, recorded = sessions()
    url = f"sqlite+aiosqlite:///{tmp_path}/missing-tables.db"
    engine = create_engine(url)
    counters: Counter[str] = Counter()
    settings = Settings(database_url=url, agi_host="127.0.0.1", agi_port=free_port())
    units = transactions_for(engine)
    server = build_route_server(
        settings, engine, units, lambda: None, on_routed=lambda *_: None, counters=counters
    )
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write("".join(line + "\n" for line in request_lines(recorded[0])).encode() + b"\n")
        commands = []
        while line := await asyncio.wait_for(reader.readline(), 2):
            commands.append(line.decode().rstrip("\n"))
            writer.write(b"200 result=1\n")
        writer.close()
    finally:
        await server.close()
        await units.close()
        await engine.dispose()
    assert commands == [
        'EXEC MSet "HOTLINE_QUEUE=hotline,HOTLINE_PRIORITY=0,HOTLINE_REASON=fallback"'
    ]
    assert counters["fallback_error"] == 1
