"""Logins that hold and sessions that end: the login throttle, server-side sessions, Origin checks
and refused WebSocket upgrades, over real sockets (aiohttp's test server) and a real database.

Other loopback addresses (127.0.0.2, 127.0.0.3, …) stand in for other people's machines: the
client binds its end of the connection to them, so the server sees a different ``remote``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, insert, select

from infra.bus import InProcessBus
from infra.storage import Transactions, create_engine, transactions_for
from queue_stats.journal import CallRow
from queue_stats.service import SNAPSHOT_KEY
from recording.db import add_recording
from recording.store import DirectoryStore
from recording.wav import wav_header
from web.app import WebParts, create_app
from web.live import LiveHub
from web.recordings import RecordingPlayback
from web.sessions import COOKIE_NAME, Attempt, Blocked, LoginThrottle, SessionCodec
from web.users import (
    Authenticator,
    Role,
    User,
    WebSessionRow,
    hash_password,
    remove_user,
    save_user,
    set_password,
)

PASSWORD = "session test password"
NEW_PASSWORD = "a brand new password"
AT = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
AUDIO = wav_header(8000, 1600) + b"\x01\x02" * 800
SNAPSHOT = {"seq": 1, "queues": {"hotline": {"offered": 3}}, "agents": {}}
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def basic(username: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def _healthy() -> dict[str, object]:
    return {}


@dataclass
class Site:
    client: TestClient
    units: Transactions
    secret: str
    recording_id: int
    bus: InProcessBus
    hub: LiveHub
    store: DirectoryStore
    database: str

    def app_over_the_same_database(self) -> TestClient:
        """Another web process (or this one restarted) with the same secret and database."""
        app, _ = build_app(self.units, self.secret, self.store, self.bus)
        return TestClient(TestServer(app))

    async def login(
        self, username: str, password: str = PASSWORD, client: TestClient | None = None
    ) -> tuple[str, str]:
        """Logs in; the session cookie's value and the CSRF token."""
        response = await (client or self.client).post(
            "/api/v1/login", json={"username": username, "password": password}
        )
        assert response.status == 200, await response.text()
        return response.cookies[COOKIE_NAME].value, (await response.json())["csrf"]

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    @property
    def origin(self) -> str:
        return f"http://{self.client.server.host}:{self.client.server.port}"


def build_app(
    units: Transactions, secret: str, store: DirectoryStore, bus: InProcessBus
) -> tuple[aiohttp.web.Application, LiveHub]:
    """One web process: the login routes, playback and the live socket (checked every 0.2 s)."""

    async def stats() -> dict | None:
        return await bus.load_snapshot(SNAPSHOT_KEY)

    hub = LiveHub(bus, stats, recheck_seconds=0.2)
    parts = WebParts(
        _healthy,
        SessionCodec(secret, units),
        Authenticator(units),
        playback=RecordingPlayback(units, store, clock=lambda: AT),
        live=hub,
    )
    return create_app(parts), hub


def _seed(connection, recording_key: str, stored) -> int:  # type: ignore[no-untyped-def]
    connection.execute(
        insert(CallRow.__table__).values(
            uniqueid="1.1", linkedid="1.1", channel="PJSIP/citizens-1",
            caller_number="13800138000", caller_name="", dialled_number="12345",
            agent_interface="PJSIP/agent1", started_at=AT, outcome="answered",
            ticket="12345-20261205-000001", talk_seconds=1,
        )
    )  # fmt: skip
    add_recording(
        connection,
        {
            "key": recording_key, "uniqueid": "1.1", "ticket": "12345-20261205-000001",
            "recorded_on": date(2026, 12, 5), "sha256": stored.sha256,
            "size_bytes": stored.size_bytes, "duration_seconds": 0.1,
            "format": "wav/pcm/8000/1/16", "ingested_at": AT, "integrity": "ok",
        },
    )  # fmt: skip
    for name, role, phones in (("li", "agent", "PJSIP/agent1"), ("wang", "supervisor", "")):
        save_user(
            connection,
            {
                "username": name, "password_hash": hash_password(PASSWORD), "role": role,
                "agent_interfaces": phones, "created_at": AT,
            },
        )  # fmt: skip
    return 1


@pytest.fixture
async def site(tmp_path: Path, database: str) -> AsyncIterator[Site]:
    engine = create_engine(database)
    units = transactions_for(engine)
    store = DirectoryStore(tmp_path / "store")
    source = tmp_path / "call.wav"
    source.write_bytes(AUDIO)
    key = "2026/12/05/1.1_12345-20261205-000001.wav"
    stored = store.put(source, key)
    recording_id = await units(lambda connection: _seed(connection, key, stored))
    bus = InProcessBus()
    await bus.store_snapshot(SNAPSHOT_KEY, SNAPSHOT)
    secret = SessionCodec.new_secret()
    app, hub = build_app(units, secret, store, bus)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield Site(client, units, secret, recording_id, bus, hub, store, database)
    await client.close()
    await units.close()
    await engine.dispose()


@contextlib.asynccontextmanager
async def from_address(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from ``address`` (another loopback address)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


# --- A. the login throttle ------------------------------------------------------------------


async def test_simultaneous_wrong_logins_are_held_to_the_limit(
    site: Site, password_checks: Callable[[], int]
) -> None:
    answers = await asyncio.gather(
        *(
            site.client.post("/api/v1/login", json={"username": "wang", "password": f"guess {i}"})
            for i in range(100)
        )
    )
    statuses = [answer.status for answer in answers]
    assert statuses.count(401) == 5 and statuses.count(429) == 95, statuses
    assert password_checks() == 5  # the other 95 were refused before any scrypt


async def test_http_basic_goes_through_the_throttle_and_its_failures_are_logged(
    site: Site, password_checks: Callable[[], int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="web.auth")
    for i in range(5):
        wrong = await site.client.get("/api/v1/session", headers=basic("wang", f"guess {i}"))
        assert wrong.status == 401
    failures = [r.getMessage() for r in caplog.records if "failed HTTP Basic" in r.getMessage()]
    assert len(failures) == 5 and "'wang'" in failures[0] and "127.0.0.1" in failures[0]
    checked_before = password_checks()
    blocked = await site.client.get("/api/v1/session", headers=basic("wang"))
    assert blocked.status == 429 and 0 < int(blocked.headers["Retry-After"]) <= 301
    assert (await blocked.json())["error"].startswith("too many failed logins")
    audio = await site.client.get(
        f"/api/v1/recordings/{site.recording_id}/audio", headers=basic("wang")
    )
    assert audio.status == 401  # the public playback route: refused as anonymous
    assert password_checks() == checked_before  # the right password was not even looked at


async def test_a_stranger_cannot_lock_a_real_user_out(site: Site) -> None:
    async with from_address("127.0.0.3") as attacker:
        statuses = []
        for i in range(50):
            async with attacker.post(
                site.url("/api/v1/login"), json={"username": "wang", "password": f"guess {i}"}
            ) as answer:
                statuses.append(answer.status)
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}  # that address is blocked

    async def guess_from(address: str) -> int:
        async with (
            from_address(address) as somewhere,
            somewhere.post(
                site.url("/api/v1/login"), json={"username": "wang", "password": address}
            ) as answer,
        ):
            return answer.status

    spread = await asyncio.gather(*(guess_from(f"127.0.0.{n}") for n in range(10, 40)))
    assert set(spread) == {401}  # many addresses, one guess each: slowed, never blocked

    async with from_address("127.0.0.2") as real_user:
        started = time.monotonic()
        async with real_user.post(
            site.url("/api/v1/login"), json={"username": "wang", "password": PASSWORD}
        ) as answer:
            assert answer.status == 200, await answer.text()
        took = time.monotonic() - started
    assert took < LoginThrottle().name_delay_cap + 1.0


def test_the_throttle_blocks_address_and_name_pairs_and_addresses_but_only_slows_names() -> None:
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])

    def fail(remote: str, username: str, password: str) -> Attempt:
        attempt = throttle.reserve(remote, username, password)
        assert isinstance(attempt, Attempt), (remote, username, password)
        attempt.failed()
        return attempt

    for i in range(5):
        fail("10.0.0.1", "wang", f"guess {i}")
    blocked = throttle.reserve("10.0.0.1", "wang", PASSWORD)
    assert isinstance(blocked, Blocked) and 299 < blocked.retry_after <= 300
    delays = [fail(f"10.1.0.{i}", "wang", "guess").delay for i in range(40)]
    assert delays[0] == 0.1 and delays == sorted(delays) and max(delays) == 2.0
    real = throttle.reserve("192.168.1.20", "wang", PASSWORD)
    assert isinstance(real, Attempt) and real.delay == 2.0  # slowed, never locked out
    real.succeeded()
    script = throttle.reserve("10.0.0.9", "li", PASSWORD)
    assert isinstance(script, Attempt)
    script.succeeded()
    for i in range(50):  # one address, many names: at most per_address failures
        fail("10.0.0.9", f"user{i}", "guess")
    assert isinstance(throttle.reserve("10.0.0.9", "user99", "guess"), Blocked)
    again = throttle.reserve("10.0.0.9", "li", PASSWORD)  # that pair logged in lately
    assert isinstance(again, Attempt)
    again.succeeded()
    now[0] += 301
    assert isinstance(throttle.reserve("10.0.0.1", "wang", PASSWORD), Attempt)


def test_attempts_under_way_count_and_the_same_guess_at_once_is_one_attempt() -> None:
    throttle = LoginThrottle(clock=lambda: 0.0)
    first = throttle.reserve("10.0.0.1", "wang", "guess")
    assert throttle.reserve("10.0.0.1", "wang", "guess") is first
    others = [throttle.reserve("10.0.0.1", "wang", f"guess {i}") for i in range(4)]
    assert all(isinstance(attempt, Attempt) for attempt in others)
    sixth = throttle.reserve("10.0.0.1", "wang", "guess 5")
    assert isinstance(sixth, Blocked) and sixth.retry_after == 1.0
    assert isinstance(first, Attempt) and first.failed() and not first.failed()  # once
    for attempt in others:
        assert isinstance(attempt, Attempt)
        attempt.succeeded()  # the right one ends the pair's record
    assert isinstance(throttle.reserve("10.0.0.1", "wang", "guess 6"), Attempt)


def test_the_throttles_memory_is_bounded_and_evicting_it_is_no_bypass() -> None:
    throttle = LoginThrottle(clock=lambda: 0.0)

    def fail(remote: str, username: str) -> None:
        attempt = throttle.reserve(remote, username, "guess")
        if isinstance(attempt, Attempt):
            attempt.failed()

    for i in range(50):  # wang, then other names, until the address is blocked
        fail("10.0.0.1", "wang" if i < 5 else f"other{i}")
    kept = len(throttle)
    for i in range(10_000):  # a blocked address spraying names adds nothing
        assert isinstance(throttle.reserve("10.0.0.1", f"name{i}", "guess"), Blocked)
    assert len(throttle) == kept
    for address in range(300):  # 15,000 failures: more than the 10,000 keys once "forgotten"
        for name in range(60):
            fail(f"10.2.{address // 256}.{address % 256}", f"name{name}")
    assert isinstance(throttle.reserve("10.0.0.1", "wang", PASSWORD), Blocked)
    for address in range(25_000):  # a botnet, one guess each: the tables stay within bounds
        fail(f"10.3.{address // 256}.{address % 256}", f"n{address}")
    assert len(throttle) <= 3 * throttle.max_entries


# --- B. sessions end when they should ---------------------------------------------------------


async def test_a_logged_out_cookie_does_not_work_again_after_a_restart(site: Site) -> None:
    cookie, csrf = await site.login("wang")
    site.client.session.cookie_jar.clear()
    jar = {"Cookie": f"{COOKIE_NAME}={cookie}"}
    async with site.app_over_the_same_database() as restarted:
        assert (await restarted.get("/api/v1/session", headers=jar)).status == 200  # kept
        out = await site.client.post("/api/v1/logout", headers={**jar, "X-CSRF-Token": csrf})
        assert out.status == 200
        assert (await restarted.get("/api/v1/session", headers=jar)).status == 401
    async with site.app_over_the_same_database() as restarted_again:
        assert (await restarted_again.get("/api/v1/session", headers=jar)).status == 401


async def test_the_session_row_holds_a_hash_of_the_id_and_expired_rows_are_purged(
    site: Site,
) -> None:
    now = [AT.timestamp()]
    codec = SessionCodec(site.secret, site.units, clock=lambda: now[0])
    user = User("wang", Role.SUPERVISOR, None)
    first, first_cookie = await codec.issue(user)

    def rows(connection) -> list:  # type: ignore[no-untyped-def]
        return list(connection.execute(select(WebSessionRow.__table__)))

    (row,) = await site.units(rows)
    assert first.id not in set(map(str, row)) and len(row.id_hash) == 64
    assert (row.username, row.role, row.csrf) == ("wang", "supervisor", first.csrf)
    assert await codec.read(first_cookie) == first
    now[0] += 12 * 3600 + 1
    assert await codec.read(first_cookie) is None
    second, second_cookie = await codec.issue(user)
    assert [r.username for r in await site.units(rows)] == ["wang"]  # the first one is gone
    assert await codec.read(second_cookie) == second


def _change_role(connection) -> None:  # type: ignore[no-untyped-def]
    save_user(
        connection,
        {
            "username": "wang", "password_hash": hash_password(PASSWORD), "role": "admin",
            "agent_interfaces": "", "created_at": AT,
        },
    )  # fmt: skip


@pytest.mark.parametrize("change", ["remove", "role", "password"])
async def test_removing_a_user_or_changing_their_role_or_password_ends_their_sessions(
    site: Site, change: str
) -> None:
    cookie, _ = await site.login("wang")
    other, _ = await site.login("li")
    site.client.session.cookie_jar.clear()
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"}
    assert (await site.client.get("/api/v1/session", headers=headers)).status == 200
    if change == "remove":
        assert await site.units(lambda connection: remove_user(connection, "wang"))
    elif change == "role":
        await site.units(_change_role)
    else:
        await set_password(site.units, "wang", Role.SUPERVISOR, NEW_PASSWORD)
    assert (await site.client.get("/api/v1/session", headers=headers)).status == 401
    li = {"Cookie": f"{COOKIE_NAME}={other}"}
    assert (await site.client.get("/api/v1/session", headers=li)).status == 200  # not theirs

    def sessions_of_wang(connection) -> int:  # type: ignore[no-untyped-def]
        table = WebSessionRow.__table__
        query = select(func.count()).select_from(table).where(table.c.username == "wang")
        return connection.execute(query).scalar_one()

    assert await site.units(sessions_of_wang) == 0


async def hotline_users(site: Site, *args: str, password: str = "") -> int:
    """``hotline users …`` in a process of its own, on the site's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env["HOTLINE_DATABASE_URL"] = site.database
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline.cli", "users", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    await asyncio.wait_for(process.communicate(password.encode()), 60)
    return await process.wait()


async def test_the_users_command_of_another_process_ends_sessions_at_once(site: Site) -> None:
    wang, _ = await site.login("wang")
    li, _ = await site.login("li")
    site.client.session.cookie_jar.clear()

    async def status(cookie: str) -> int:
        headers = {"Cookie": f"{COOKIE_NAME}={cookie}"}
        return (await site.client.get("/api/v1/session", headers=headers)).status

    assert (await status(wang), await status(li)) == (200, 200)
    changed = await hotline_users(
        site, "add", "wang", "--role", "supervisor", "--password-stdin",
        password=NEW_PASSWORD + "\n",
    )  # fmt: skip
    assert changed == 0
    assert (await status(wang), await status(li)) == (401, 200)
    assert await hotline_users(site, "remove", "li") == 0
    assert await status(li) == 401


async def test_a_removed_user_cannot_play_a_recording_with_an_old_cookie(site: Site) -> None:
    cookie, _ = await site.login("li")
    url = f"/api/v1/recordings/{site.recording_id}/audio"
    heard = await site.client.get(url)
    assert (heard.status, await heard.read()) == (200, AUDIO)
    assert await site.units(lambda connection: remove_user(connection, "li"))
    refused = await site.client.get(url, headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
    assert refused.status == 401 and AUDIO not in await refused.read()


async def test_a_picked_phone_ends_the_session_it_replaces(site: Site) -> None:
    await save_phones(site, "PJSIP/agent1,PJSIP/agent3")
    old, csrf = await site.login("li")
    moved = await site.client.post(
        "/api/v1/session/phone", json={"agent": "PJSIP/agent3"}, headers={"X-CSRF-Token": csrf}
    )
    assert moved.status == 200
    assert (await site.client.get("/api/v1/session")).status == 200  # the new cookie works
    site.client.session.cookie_jar.clear()
    stale = await site.client.get("/api/v1/session", headers={"Cookie": f"{COOKIE_NAME}={old}"})
    assert stale.status == 401


async def save_phones(site: Site, phones: str) -> None:
    values = {
        "username": "li", "password_hash": hash_password(PASSWORD), "role": "agent",
        "agent_interfaces": phones, "created_at": AT,
    }  # fmt: skip
    await site.units(lambda connection: save_user(connection, values))


async def test_a_remembered_basic_password_stops_at_once_after_a_change_or_removal(
    site: Site, password_checks: Callable[[], int]
) -> None:
    for _ in range(3):
        assert (await site.client.get("/api/v1/session", headers=basic("wang"))).status == 200
    assert password_checks() == 1  # remembered: later requests read the row, no scrypt
    await set_password(site.units, "wang", Role.ADMIN, NEW_PASSWORD)
    assert (await site.client.get("/api/v1/session", headers=basic("wang"))).status == 401
    now = await site.client.get("/api/v1/session", headers=basic("wang", NEW_PASSWORD))
    assert now.status == 200 and (await now.json())["user"]["role"] == "admin"
    assert await site.units(lambda connection: remove_user(connection, "wang"))
    gone = await site.client.get("/api/v1/session", headers=basic("wang", NEW_PASSWORD))
    assert gone.status == 401


async def test_the_live_socket_of_an_ended_session_closes_within_seconds(site: Site) -> None:
    site.hub.recheck_seconds = 0.2
    _, csrf = await site.login("li")
    async with site.client.ws_connect("/api/v1/live") as socket:
        assert (await socket.receive_json(timeout=5))["type"] == "snapshot"
        await asyncio.sleep(0.5)  # checked and still there
        out = await site.client.post("/api/v1/logout", headers={"X-CSRF-Token": csrf})
        assert out.status == 200
        closing = await socket.receive(timeout=3)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
    url = site.client.make_url("/api/v1/live")
    async with (
        aiohttp.ClientSession() as script,
        script.ws_connect(url, headers=basic("wang")) as basic_socket,
    ):
        assert (await basic_socket.receive_json(timeout=5))["type"] == "snapshot"
        await set_password(site.units, "wang", Role.SUPERVISOR, NEW_PASSWORD)
        closing = await basic_socket.receive(timeout=3)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008


# --- C. CSRF and Origin -----------------------------------------------------------------------


async def test_a_cross_site_form_cannot_log_a_browser_in(site: Site) -> None:
    # What <form enctype="text/plain"> with one well-named field posts: JSON-looking text.
    form_body = '{"username": "li", "password": "' + PASSWORD + '", "x": "="}'
    cross_site = await site.client.post(
        "/api/v1/login",
        data=form_body,
        headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
    )
    assert cross_site.status == 403 and "Set-Cookie" not in cross_site.headers
    as_text = await site.client.post(
        "/api/v1/login", data=form_body, headers={"Content-Type": "text/plain"}
    )
    assert as_text.status == 415 and "Set-Cookie" not in as_text.headers
    login = {"username": "li", "password": PASSWORD}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://{site.client.server.host}:1"},  # same host, another port
        {"Sec-Fetch-Site": "cross-site"},
    ):
        refused = await site.client.post("/api/v1/login", json=login, headers=headers)
        assert refused.status == 403, headers
        assert (await refused.json())["error"] == "cross-site request refused"
    for headers in ({"Origin": site.origin}, {"Sec-Fetch-Site": "same-origin"}, {}):
        allowed = await site.client.post("/api/v1/login", json=login, headers=headers)
        assert allowed.status == 200, headers


async def test_state_changes_from_another_origin_are_refused_with_basic_and_cookies(
    site: Site,
) -> None:
    evil = {"Origin": "https://evil.example"}
    refused = await site.client.post("/api/v1/logout", headers={**basic("wang"), **evil})
    assert refused.status == 403
    _, csrf = await site.login("li")
    with_cookie = await site.client.post(
        "/api/v1/logout", headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    )
    assert with_cookie.status == 403
    assert (await site.client.get("/api/v1/session")).status == 200  # still logged in
    no_token = await site.client.post("/api/v1/logout", headers={"Origin": site.origin})
    assert no_token.status == 403  # the CSRF token is still needed with a cookie
    done = await site.client.post(
        "/api/v1/logout", headers={"X-CSRF-Token": csrf, "Origin": site.origin}
    )
    assert done.status == 200
    script = await site.client.post("/api/v1/logout", headers=basic("wang"))
    assert script.status == 200  # no Origin at all: a script, allowed


# --- D. a refused WebSocket upgrade closes its connection --------------------------------------


async def _raw_upgrade(site: Site, extra: dict[str, str]) -> bytes:
    """Sends an upgrade request on a raw socket; everything the server sent before it closed."""
    host, port = site.client.server.host, site.client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    headers = {"Host": f"{host}:{port}", **UPGRADE, **extra}
    request = "GET /api/v1/live HTTP/1.1\r\n"
    request += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    writer.write(request.encode())
    try:
        return await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
    finally:
        writer.close()


async def test_a_refused_websocket_upgrade_closes_its_connection(site: Site) -> None:
    anonymous = await _raw_upgrade(site, {})
    assert anonymous.startswith(b"HTTP/1.1 401")
    cookie, _ = await site.login("wang")
    cross_site = await _raw_upgrade(
        site, {"Cookie": f"{COOKIE_NAME}={cookie}", "Origin": "https://evil.example"}
    )
    assert cross_site.startswith(b"HTTP/1.1 403")
