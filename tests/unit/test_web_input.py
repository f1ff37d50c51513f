"""Hardening: what clients may send the panel, what each role gets back, and what reaches an
operator's logs and terminal.

The web tests run the real app over real sockets on a real database (SQLite, then PostgreSQL,
which refuses NUL characters in text: the reason they are refused before any query).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hotline.recordings_cli import _list as list_recordings
from hotline.terminal import json_text, printable
from infra.config import Settings, masked_url
from infra.storage import create_engine, session_factory, transactions_for
from recording.db import Recording
from tickets.model import TicketError, TicketStatus
from tickets.sla import SlaPolicy, WorkingCalendar, sla_report
from tickets.store import TicketEdit, TicketStore
from tickets.webhook import CtiEvent, CtiEventName, WebhookSender
from web.api import MAX_BODY, PanelApi
from web.app import WebParts, create_app
from web.bodies import nesting_depth, read_json
from web.errors import json_refusals
from web.sessions import SessionCodec
from web.users import Authenticator, hash_password, save_user

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
PASSWORD = "desk test password"
ESCAPE = "\x1b[31m"
BOARD = {
    "seq": 3,
    "queues": {"hotline": {"offered": 2, "answered": 2}},
    "agents": {
        "PJSIP/agent1": {"state": "on_call", "caller": "13800138000"},
        "PJSIP/agent2": {"state": "on_call", "caller": "13900139000"},
    },
}


def basic(username: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AGENT, SUPERVISOR = basic("li"), basic("wang")


@dataclass
class Desk:
    """The panel with an agent (li: phones agent1 and agent3), another agent's ticket, an
    unsigned one, and a supervisor (wang)."""

    client: TestClient
    store: TicketStore
    tickets: dict[str, str]
    health: dict[str, Any] = field(default_factory=dict)
    board: dict[str, Any] | None = None

    def url(self, name: str) -> str:
        return f"/api/v1/tickets/{self.tickets[name]}"


@pytest.fixture
async def desk(database: str) -> AsyncIterator[Desk]:
    engine = create_engine(database)
    units = transactions_for(engine)
    store = TicketStore(session_factory(engine), SHANGHAI, units=units)
    tickets = {
        "mine": await store.create("13800138000", NOW, caller_name="张三"),
        "other_phone": await store.create("13700137000", NOW),
        "theirs": await store.create("13900139000", NOW),
        "unsigned": await store.create("13600136000", NOW),
    }
    await store.sign(tickets["mine"], "PJSIP/agent1", NOW)
    await store.sign(tickets["other_phone"], "PJSIP/agent3", NOW)
    await store.sign(tickets["theirs"], "PJSIP/agent2", NOW)

    def people(connection) -> None:  # type: ignore[no-untyped-def]
        for name, role, phones in (
            ("li", "agent", "PJSIP/agent1,PJSIP/agent3"),
            ("wang", "supervisor", ""),
        ):
            save_user(
                connection,
                {"username": name, "password_hash": hash_password(PASSWORD), "role": role,
                 "agent_interfaces": phones, "created_at": NOW},
            )  # fmt: skip

    await units(people)
    policy, calendar = SlaPolicy(), WorkingCalendar()
    made: list[Desk] = []

    async def health() -> dict[str, Any]:
        return made[0].health

    async def stats() -> dict[str, Any] | None:
        return made[0].board

    api = PanelApi(
        store,
        units,
        SHANGHAI,
        lambda ticket, now: sla_report(ticket.clock_facts(), now, policy, calendar, SHANGHAI),
        stats,
        clock=lambda: NOW,
    )
    sessions = SessionCodec(SessionCodec.new_secret(), units)
    parts = WebParts(health, sessions, Authenticator(units), api=api)
    client = TestClient(TestServer(create_app(parts)))
    await client.start_server()
    made.append(
        Desk(
            client,
            store,
            tickets,
            health={
                "ami": {"up": True, "reconnects": 2, "source": "/srv/hotline/replay.ami"},
                "database": {"up": True},
                "agi": {"up": True, "port": 4573, "routed": 9},
                "journal": {"pending_writes": 0},
            },
        )
    )
    yield made[0]
    await client.close()
    await units.close()
    await engine.dispose()


async def answer(response: Any) -> tuple[int, Any]:
    """Status and JSON body; the body must be JSON whatever the status."""
    return response.status, json.loads(await response.text())


# --- read_json: bounded, typed, NUL-free --------------------------------------------------------


@pytest.fixture
async def echo() -> AsyncIterator[TestClient]:
    """An app whose one route answers with the JSON it read (at most 1024 bytes, depth 4)."""

    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"got": await read_json(request, max_bytes=1024, max_depth=4)})

    app = web.Application()
    app.router.add_post("/echo", handle)
    async with TestClient(TestServer(app)) as client:
        yield client


async def raw_status(client: TestClient, head: str, *chunks: bytes) -> bytes:
    """Send a request's head and some body by hand, never finishing it; the status line."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"".join(chunks))
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


async def test_a_body_announced_too_large_is_refused_before_it_is_read(echo: TestClient) -> None:
    head = "POST /echo HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 9999\n\n"
    assert (await raw_status(echo, head, b"[")).startswith(b"HTTP/1.1 413")


async def test_a_chunked_body_is_refused_as_soon_as_it_outgrows_the_limit(
    echo: TestClient,
) -> None:
    """No Content-Length and no end: the refusal comes once 1024 bytes are passed."""
    head = "POST /echo HTTP/1.1\nHost: x\nContent-Type: application/json\n"
    head += "Transfer-Encoding: chunked\n\n"
    chunk = b"200\r\n" + b" " * 512 + b"\r\n"
    assert (await raw_status(echo, head, chunk, chunk, chunk)).startswith(b"HTTP/1.1 413")


async def test_a_chunked_body_within_the_limit_is_read(echo: TestClient) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b'{"category": ', b'"roads"}'):
            yield piece

    status, body = await answer(await echo.post("/echo", data=pieces()))
    assert (status, body) == (200, {"got": {"category": "roads"}})


@pytest.mark.parametrize(
    "raw, status, message",
    [
        (b"x" * 1025, 413, "request too large"),
        (b"[[[[[1]]]]]", 400, "nested deeper than 4"),
        (b"[" * 1000, 400, "nested deeper than 4"),
        (b'{"a": "\xff"}', 400, "UTF-8"),
        (b'{"a": ', 400, "valid JSON"),
        (b"NaN", 400, "valid JSON"),
        (b"", 400, "valid JSON"),
        (b'{"a": "\\u0000"}', 400, "NUL"),
        (b'{"a\\u0000": 1}', 400, "NUL"),
        (b'[{"a": ["b", "c\\u0000d"]}]', 400, "NUL"),
    ],
)
async def test_bad_bodies_get_a_short_reason(
    echo: TestClient, raw: bytes, status: int, message: str
) -> None:
    got, body = await answer(await echo.post("/echo", data=raw))
    assert got == status and message in body["error"]
    assert "Expecting" not in body["error"] and "codec" not in body["error"]  # no parser text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "[[[[[[[["}',
        b'{"a": "\\"[[[[[[[["}',
        b'{"a": "\\\\", "b": [[[1]]]}',
        b'"\\\\u0000"',  # a backslash and "u0000": text, not a NUL
    ],
)
async def test_brackets_and_escapes_inside_strings_are_text(echo: TestClient, raw: bytes) -> None:
    status, body = await answer(await echo.post("/echo", data=raw))
    assert status == 200 and body["got"] == json.loads(raw)


def test_the_depth_scan_reads_strings_as_json_does() -> None:
    assert nesting_depth('[{"a": "]]]]"}, [[]]]') == 3
    assert nesting_depth('["\\\\", ["\\"[["]]') == 2
    assert nesting_depth('"' + '\\"' * 50_000) == 0  # one pass, however many quotes


async def test_an_unexpected_failure_is_a_json_500_that_tells_nothing() -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("password=hunter2 in /srv/hotline/secret.toml")

    async def plain(request: web.Request) -> web.Response:
        raise web.HTTPBadRequest(text="plain text from aiohttp")

    app = web.Application()
    app.router.add_get("/broken", json_refusals(broken))
    app.router.add_get("/plain", json_refusals(plain))
    async with TestClient(TestServer(app)) as client:
        assert await answer(await client.get("/broken")) == (500, {"error": "internal error"})
        assert await answer(await client.get("/plain")) == (400, {"error": "bad request"})


# --- the ticket and call API: typed, bounded, NUL-free ------------------------------------------


BOTH_LISTS = ("/api/v1/tickets", "/api/v1/calls")


@pytest.mark.parametrize(
    "paths, query",
    [
        (BOTH_LISTS, "caller=138%00"),
        (BOTH_LISTS, "since=2026-12-02%00"),
        (("/api/v1/tickets",), "status=new%00"),
        (("/api/v1/calls",), "agent=PJSIP/agent1%00"),
        (BOTH_LISTS, "limit=5%00"),
        (BOTH_LISTS, "limit=%C2%B2"),  # "²": str.isdigit() says yes, int() says no
        (BOTH_LISTS, "limit=%D9%A3"),  # an Arabic-Indic three, the same
        (BOTH_LISTS, "since=0001-01-01"),  # a day whose midnight in UTC overflows
        (BOTH_LISTS, "since=9999-12-31"),
        (BOTH_LISTS, "since=2201-01-01"),
    ],
)
async def test_bad_query_text_is_a_400(desk: Desk, paths: tuple[str, ...], query: str) -> None:
    for path in paths:
        status, body = await answer(await desk.client.get(f"{path}?{query}", headers=SUPERVISOR))
        assert status == 400 and body["error"], (path, query)


async def test_days_from_1970_to_2200_are_accepted(desk: Desk) -> None:
    for day in ("1970-01-01", "2200-12-31"):
        response = await desk.client.get(f"/api/v1/tickets?since={day}", headers=SUPERVISOR)
        assert response.status == 200, day


@pytest.mark.parametrize(
    "body",
    [
        {"category": {"a": 1}},
        {"category": ["roads"]},
        {"description": 5},
        {"department": True},
        {"category": "x\x00y"},
        {"description": "ok", "department": "water\x00"},
        {"satisfaction": True},
        {"satisfaction": 3.5},
        {"satisfaction": 3.0},
        {"satisfaction": "3"},
        {"satisfaction": 6},
        {"status": 1},
        {"status": None},
        {"status": {"value": "contacted"}},
        {"category": "roads", "status": "new"},  # a good field, an impossible move
    ],
)
async def test_a_bad_patch_is_a_400_and_changes_nothing(desk: Desk, body: dict) -> None:
    before = await (await desk.client.get(desk.url("mine"), headers=SUPERVISOR)).json()
    response = await desk.client.patch(desk.url("mine"), json=body, headers=SUPERVISOR)
    status, refusal = await answer(response)
    assert status == 400 and refusal["error"]
    assert "Traceback" not in refusal["error"] and "TicketStatus" not in refusal["error"]
    after = await (await desk.client.get(desk.url("mine"), headers=SUPERVISOR)).json()
    assert after == before


async def test_fields_and_status_change_together(desk: Desk) -> None:
    body = {"category": "roads", "satisfaction": 4, "status": "contacted"}
    status, ticket = await answer(
        await desk.client.patch(desk.url("mine"), json=body, headers=SUPERVISOR)
    )
    assert status == 200
    assert (ticket["category"], ticket["satisfaction"], ticket["status"]) == (
        "roads",
        4,
        "contacted",
    )


async def test_a_patch_body_over_64_kib_is_a_413(desk: Desk) -> None:
    big = {"description": "x" * MAX_BODY}
    status, body = await answer(
        await desk.client.patch(desk.url("mine"), json=big, headers=SUPERVISOR)
    )
    assert status == 413 and "too large" in body["error"]
    token = SUPERVISOR["Authorization"]
    head = f"PATCH {desk.url('mine')} HTTP/1.1\nHost: x\nAuthorization: {token}\n"
    head += "Content-Type: application/json\nTransfer-Encoding: chunked\n\n"
    chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"  # 16 KiB each, never finished
    assert (await raw_status(desk.client, head, *[chunk] * 5)).startswith(b"HTTP/1.1 413")


async def test_the_store_updates_fields_and_status_in_one_transaction(desk: Desk) -> None:
    number = desk.tickets["mine"]
    with pytest.raises(TicketError):
        await desk.store.update(number, TicketEdit(category="roads"), TicketStatus.NEW, NOW)
    assert (await desk.store.get(number)).category == ""
    done = await desk.store.update(
        number, TicketEdit(category="roads"), TicketStatus.CONTACTED, NOW
    )
    assert (done.category, done.status) == ("roads", TicketStatus.CONTACTED)


# --- least privilege --------------------------------------------------------------------------


async def test_an_agent_lists_the_tickets_of_their_phones_and_unsigned_ones(desk: Desk) -> None:
    listed = await (await desk.client.get("/api/v1/tickets", headers=AGENT)).json()
    seen = {ticket["number"] for ticket in listed}
    assert seen == {desk.tickets[name] for name in ("mine", "other_phone", "unsigned")}
    everything = await (await desk.client.get("/api/v1/tickets", headers=SUPERVISOR)).json()
    assert {ticket["number"] for ticket in everything} == set(desk.tickets.values())


async def test_another_agents_ticket_is_as_unknown_to_an_agent_as_a_missing_one(
    desk: Desk,
) -> None:
    missing = await answer(
        await desk.client.get("/api/v1/tickets/12345-20261202-999999", headers=AGENT)
    )
    theirs = await answer(await desk.client.get(desk.url("theirs"), headers=AGENT))
    assert theirs == missing == (404, {"error": "no such ticket"})
    patched = await desk.client.patch(desk.url("theirs"), json={"category": "x"}, headers=AGENT)
    assert await answer(patched) == missing
    assert (await desk.client.get(desk.url("unsigned"), headers=AGENT)).status == 200
    assert (await desk.client.get(desk.url("theirs"), headers=SUPERVISOR)).status == 200


async def test_a_ticket_number_with_a_nul_is_simply_unknown(desk: Desk) -> None:
    response = await desk.client.get("/api/v1/tickets/12345-20261202-000001%00", headers=AGENT)
    assert response.status == 404


async def test_agents_get_the_board_without_other_agents_callers(desk: Desk) -> None:
    desk.board = BOARD
    agent = await (await desk.client.get("/api/v1/stats", headers=AGENT)).json()
    assert {entry["caller"] for entry in agent["agents"].values()} == {None}
    assert agent["queues"] == BOARD["queues"]
    chief = await (await desk.client.get("/api/v1/stats", headers=SUPERVISOR)).json()
    assert chief == BOARD


# --- /healthz ---------------------------------------------------------------------------------


async def test_health_without_a_login_says_only_what_is_up(desk: Desk) -> None:
    status, report = await answer(await desk.client.get("/healthz"))
    assert status == 200
    assert report == {
        "ok": True,
        "ami": {"up": True},
        "database": {"up": True},
        "agi": {"up": True},
    }
    status, full = await answer(await desk.client.get("/healthz", headers=AGENT))
    assert status == 200 and full == {"ok": True, **desk.health}


async def test_health_without_a_login_hides_the_problem_but_keeps_the_503(desk: Desk) -> None:
    desk.health["database"] = {"up": False, "problem": "OperationalError: /var/hotline.db"}
    status, report = await answer(await desk.client.get("/healthz"))
    assert status == 503
    assert report["ok"] is False and report["database"] == {"up": False}
    assert "OperationalError" not in json.dumps(report)
    status, full = await answer(await desk.client.get("/healthz", headers=SUPERVISOR))
    assert status == 503 and full["database"]["problem"].startswith("OperationalError")


# --- the terminal -----------------------------------------------------------------------------


def test_control_characters_are_shown_not_obeyed() -> None:
    assert printable(f"{ESCAPE}red\x00\x07\x7f\x9b2J张三\t") == (
        "\\x1b[31mred\\x00\\x07\\x7f\\x9b2J张三\\x09"
    )
    assert printable(None) == "None" and printable("PJSIP/agent1") == "PJSIP/agent1"


def test_json_output_escapes_what_json_dumps_lets_through() -> None:
    text = json_text({"caller_name": f"张三{ESCAPE}\x7f\x9b"})
    assert "\x1b" not in text and "\x7f" not in text and "\x9b" not in text
    assert "张三" in text and json.loads(text) == {"caller_name": f"张三{ESCAPE}\x7f\x9b"}
    assert "\x9b" in json.dumps({"a": "\x9b"}, ensure_ascii=False)  # why json_text exists


def test_ticket_tables_show_a_callers_escape_sequence_as_text(tmp_path: Path) -> None:
    from tests.unit.test_cli import hotline, hotline_env
    from tests.unit.test_cli_tickets import make_ticket

    env = hotline_env(tmp_path)
    assert hotline("db", "upgrade", env=env).returncode == 0
    now = datetime.now(UTC)
    make_ticket(
        tmp_path / "hotline.db",
        "12345-20261101-000001",
        now,
        caller_name=f"{ESCAPE}张三\x9b2J",
        owner_agent=f"PJSIP/{ESCAPE}x",
        status="signed",
        signed_at=now.strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    for args in (("list",), ("show", "12345-20261101-000001"), ("list", "--json")):
        shown = hotline("tickets", *args, env=env)
        assert shown.returncode == 0, shown.stderr
        assert "\x1b" not in shown.stdout and "\x9b" not in shown.stdout, args
    listed = hotline("tickets", "list", env=env).stdout
    assert "PJSIP/\\x1b[31mx" in listed
    shown = hotline("tickets", "show", "12345-20261101-000001", env=env).stdout
    assert "\\x1b[31m张三\\x9b2J" in shown
    as_json = hotline("tickets", "list", "--json", env=env).stdout
    assert json.loads(as_json)[0]["caller_name"] == f"{ESCAPE}张三\x9b2J"


async def test_recording_tables_show_an_agents_escape_sequence_as_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    found = [
        Recording(
            1, "k.wav", "1.1", f"T{ESCAPE}", date(2026, 12, 2), "ab" * 32, 10, 1.0, "wav",
            NOW, "ok", agent_interface=f"PJSIP/{ESCAPE}",
        )
    ]  # fmt: skip

    async def units(work: Any) -> list[Recording]:
        return found

    for as_json in (False, True):
        await list_recordings(units, SimpleNamespace(call=None, ticket=None, json=as_json))  # type: ignore[arg-type]
        printed = capsys.readouterr().out
        assert "\x1b" not in printed
    await list_recordings(units, SimpleNamespace(call=None, ticket=None, json=False))  # type: ignore[arg-type]
    assert "PJSIP/\\x1b[31m" in capsys.readouterr().out


# --- secrets in logs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://h/p?token=abc", "https://h/p?***"),
        (
            "https://zammad:s3cret@desk.example:8443/api/cti",
            "https://***@desk.example:8443/api/cti",
        ),
        ("https://h/cti?token=abc&x=1#frag", "https://h/cti?***#***"),
        ("https://h/cti", "https://h/cti"),
    ],
)
def test_the_webhook_url_is_masked_in_the_settings_log(url: str, shown: str) -> None:
    assert masked_url(url) == shown
    settings = Settings(webhook_url=url, webhook_secret="k")  # type: ignore[arg-type]
    assert settings.redacted()["webhook_url"] == shown
    assert "abc" not in repr(settings) and "s3cret" not in repr(settings)


async def test_a_webhook_failure_never_logs_the_urls_token_or_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A receiver answering garbage: aiohttp's error quotes the URL it posted to."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    caplog.set_level(logging.DEBUG, logger="tickets.webhook")
    try:
        for url in (
            f"http://127.0.0.1:{port}/cti?token=tok-q-1234",
            f"http://desk:pw-5678@LOCALHOST:{port}/cti?token=tok q 1234",
        ):
            sender = WebhookSender(url, "k", max_attempts=2, first_backoff=0, max_backoff=0)
            sender.submit(CtiEvent(CtiEventName.NEW_CALL, "1.1", "138", "12345", NOW))
            running = asyncio.ensure_future(sender.run())
            for _ in range(200):
                if sender.counters["dropped_exhausted"]:
                    break
                await asyncio.sleep(0.01)
            await sender.close(drain_timeout=0)
            await running
            assert sender.counters["dropped_exhausted"] == 1
    finally:
        server.close()
    logged = caplog.text
    assert "ClientResponseError" in logged  # the failure was logged, with aiohttp's text
    for secret in ("tok-q-1234", "tok q 1234", "tok+q+1234", "tok%20q%201234", "pw-5678"):
        assert secret not in logged
