"""Playback over real HTTP (aiohttp's test server) on a real SQLite file and a real store folder."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import insert

from infra.storage import Transactions, create_engine, transactions_for
from queue_stats.journal import CallRow
from recording.db import access_log, add_recording
from recording.store import DirectoryStore
from recording.wav import wav_header
from web.app import WebParts, create_app
from web.recordings import RangeNotSatisfiable, RecordingPlayback, byte_range
from web.sessions import SessionCodec, basic_credentials
from web.users import Authenticator, User, hash_password, password_matches, save_user

AT = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
PASSWORD = "correct horse battery"
AUDIO = wav_header(8000, 48000) + bytes(range(256)) * 187 + b"\x00" * 128


def auth(username: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=0-1,5-9", None),  # several ranges: the whole file
        ("items=0-5", None),
        ("bytes=9-3", None),
        ("bytes=-", None),
    ],
)
def test_one_byte_range_is_honoured_and_anything_else_is_the_whole_file(
    header: str | None, expected: tuple[int, int] | None
) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_cannot_be_satisfied(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, 1000)


def test_basic_credentials_are_read_and_garbage_is_not() -> None:
    assert basic_credentials(auth("ann")["Authorization"]) == ("ann", PASSWORD)
    for header in (None, "Bearer x", "Basic ???", "Basic " + base64.b64encode(b"nocolon").decode()):
        assert basic_credentials(header) is None


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and first.startswith("scrypt$")
    assert password_matches(PASSWORD, first) and not password_matches("wrong", first)
    assert not password_matches(PASSWORD, "md5$abc")


def test_roles_decide_whose_calls_a_user_hears() -> None:
    agent = User("li", "agent", "PJSIP/agent1")  # type: ignore[arg-type]
    assert agent.may_hear("PJSIP/agent1") and not agent.may_hear("PJSIP/agent2")
    assert not agent.may_hear(None)
    assert User("wang", "supervisor", None).may_hear("PJSIP/agent2")  # type: ignore[arg-type]


@dataclass
class Panel:
    client: TestClient
    units: Transactions
    store_root: Path
    recording_id: int
    playback: RecordingPlayback

    async def audits(self) -> list[dict[str, object]]:
        return await self.units(lambda connection: access_log(connection))


@pytest.fixture
async def panel(tmp_path: Path, database: str) -> AsyncIterator[Panel]:
    engine = create_engine(database)
    units = transactions_for(engine)
    store = DirectoryStore(tmp_path / "store")
    source = tmp_path / "call.wav"
    source.write_bytes(AUDIO)
    key = "2026/12/02/1796215475.1_12345-20261202-000001.wav"
    stored = store.put(source, key)

    def seed(connection) -> int:  # type: ignore[no-untyped-def]
        connection.execute(
            insert(CallRow.__table__).values(
                uniqueid="1796215475.1", linkedid="1796215475.1", channel="PJSIP/citizens-1",
                caller_number="13800138000", caller_name="张三", dialled_number="12345",
                agent_interface="PJSIP/agent1", started_at=AT, outcome="answered",
                ticket="12345-20261202-000001", talk_seconds=3,
            )
        )  # fmt: skip
        add_recording(
            connection,
            {
                "key": key, "uniqueid": "1796215475.1", "ticket": "12345-20261202-000001",
                "recorded_on": date(2026, 12, 2), "sha256": stored.sha256,
                "size_bytes": stored.size_bytes, "duration_seconds": 3.0,
                "format": "wav/pcm/8000/1/16", "ingested_at": AT, "integrity": "ok",
            },
        )  # fmt: skip
        for name, role, interface in (
            ("li", "agent", "PJSIP/agent1"),
            ("zhao", "agent", "PJSIP/agent2"),
            ("wang", "supervisor", None),
        ):
            save_user(
                connection,
                {
                    "username": name, "password_hash": hash_password(PASSWORD), "role": role,
                    "agent_interfaces": interface or "", "created_at": AT,
                },
            )  # fmt: skip
        return 1

    recording_id = await units(seed)
    playback = RecordingPlayback(units, store, clock=lambda: AT)
    parts = WebParts(
        _healthy,
        SessionCodec(None, units),
        Authenticator(units),
        playback=playback,
    )
    client = TestClient(TestServer(create_app(parts)))
    await client.start_server()
    yield Panel(client, units, tmp_path / "store", recording_id, playback)
    await client.close()
    await units.close()
    await engine.dispose()


async def _healthy() -> dict[str, object]:
    return {}


AUDIO_URL = "/api/v1/recordings/{}/audio"


async def test_the_agent_of_the_call_hears_it_whole_and_by_ranges(panel: Panel) -> None:
    url = AUDIO_URL.format(panel.recording_id)
    whole = await panel.client.get(url, headers=auth("li"))
    assert whole.status == 200
    assert await whole.read() == AUDIO
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Content-Type"] == "audio/wav"
    assert whole.headers["ETag"] == f'"{hashlib.sha256(AUDIO).hexdigest()}"'

    part = await panel.client.get(url, headers={**auth("li"), "Range": "bytes=44-1043"})
    assert part.status == 206
    assert await part.read() == AUDIO[44:1044]
    assert part.headers["Content-Range"] == f"bytes 44-1043/{len(AUDIO)}"
    tail = await panel.client.get(url, headers={**auth("li"), "Range": "bytes=-10"})
    assert (tail.status, await tail.read()) == (206, AUDIO[-10:])

    audits = await panel.audits()
    assert [(a["username"], a["outcome"], a["byte_range"]) for a in reversed(audits)] == [
        ("li", 200, f"0-{len(AUDIO) - 1}"),
        ("li", 206, "44-1043"),
        ("li", 206, f"{len(AUDIO) - 10}-{len(AUDIO) - 1}"),
    ]
    assert all(a["recording_id"] == panel.recording_id and a["remote"] for a in audits)
    assert audits[0]["at"].replace(tzinfo=UTC) == AT


async def test_a_supervisor_hears_every_call(panel: Panel) -> None:
    response = await panel.client.get(AUDIO_URL.format(panel.recording_id), headers=auth("wang"))
    assert (response.status, await response.read()) == (200, AUDIO)


async def test_refusals_send_no_audio_and_are_audited(panel: Panel) -> None:
    url = AUDIO_URL.format(panel.recording_id)
    cases = [
        (url, {}, 401),
        (url, auth("li", "wrong password"), 401),
        (url, auth("nobody"), 401),
        (url, auth("zhao"), 403),  # another agent's call
        (AUDIO_URL.format(999), auth("wang"), 404),
        (AUDIO_URL.format("..%2F..%2Fhotline.db"), auth("wang"), 404),
        (AUDIO_URL.format("1%20OR%201=1"), auth("wang"), 404),
        (url, {**auth("li"), "Range": f"bytes={len(AUDIO)}-"}, 416),
    ]
    for path, headers, status in cases:
        response = await panel.client.get(path, headers=headers)
        body = await response.read()
        assert response.status == status, (path, headers)
        assert AUDIO[44:200] not in body
    unauthorised = await panel.client.get(url)
    assert unauthorised.headers["WWW-Authenticate"].startswith("Basic")
    refused = await panel.client.get(url, headers={**auth("li"), "Range": "bytes=99999-"})
    assert refused.headers["Content-Range"] == f"bytes */{len(AUDIO)}"

    outcomes = [(a["username"], a["outcome"]) for a in reversed(await panel.audits())]
    # The three 401s (and the fourth above) come from one address within a minute: one row
    # now, their count later (see test_an_anonymous_flood_writes_a_row_a_minute_per_address).
    assert outcomes[:6] == [
        ("", 401), ("zhao", 403), ("wang", 404), ("wang", 404), ("wang", 404), ("li", 416),
    ]  # fmt: skip


async def test_a_file_gone_from_the_store_is_a_404_not_a_crash(panel: Panel) -> None:
    for stored in panel.store_root.glob("*/*/*/*.wav"):
        stored.unlink()
    response = await panel.client.get(AUDIO_URL.format(panel.recording_id), headers=auth("wang"))
    assert response.status == 404
    assert (await panel.audits())[0]["byte_range"] == "missing"


HUGE = "9" * 5000  # past the 4,300 digits int() takes


@pytest.mark.parametrize(
    "header, expected",
    [
        (f"bytes=0-{HUGE}", (0, 999)),  # to the end, like any last byte past it
        (f"bytes=990-{HUGE}", (990, 999)),
        (f"bytes=-{HUGE}", (0, 999)),  # a suffix longer than the file: all of it
        (f"bytes={'0' * 5000}5-9", (5, 9)),  # leading zeros are no size
        (f"bytes={'9' * 19}-3", None),  # last before first: malformed, the whole file
    ],
)
def test_absurdly_long_positions_count_as_past_the_end(
    header: str, expected: tuple[int, int] | None
) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", [f"bytes={HUGE}-", f"bytes={HUGE}-{HUGE}"])
def test_an_absurdly_long_first_position_cannot_be_satisfied(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, 1000)


async def test_a_range_of_thousands_of_digits_is_not_a_server_error(panel: Panel) -> None:
    url = AUDIO_URL.format(panel.recording_id)
    response = await panel.client.get(url, headers={**auth("li"), "Range": f"bytes=0-{HUGE}"})
    assert (response.status, await response.read()) == (206, AUDIO)
    assert response.headers["Content-Range"] == f"bytes 0-{len(AUDIO) - 1}/{len(AUDIO)}"
    beyond = await panel.client.get(url, headers={**auth("li"), "Range": f"bytes={HUGE}-"})
    assert beyond.status == 416
    assert [a["outcome"] for a in reversed(await panel.audits())] == [206, 416]


async def test_an_anonymous_flood_writes_a_row_a_minute_per_address(panel: Panel) -> None:
    url = AUDIO_URL.format(panel.recording_id)
    for _ in range(500):
        response = await panel.client.get(url)
        assert response.status == 401
        await response.release()
    rows = await panel.audits()
    assert [(a["username"], a["outcome"], a["byte_range"]) for a in rows] == [("", 401, "401 x 1")]
    assert rows[0]["remote"] == "127.0.0.1"
    assert rows[0]["requested_id"] == str(panel.recording_id)
    assert rows[0]["at"].replace(tzinfo=UTC) == AT
    assert panel.playback.counters["anonymous_refused"] == 500
    assert panel.playback.counters["anonymous_folded"] == 499

    # Logged-in users are still written one row a request, flood or not.
    for _ in range(2):
        assert (await panel.client.get(url, headers=auth("li"))).status == 200
    assert [a["outcome"] for a in reversed(await panel.audits())] == [401, 200, 200]


async def test_the_folded_count_is_written_when_the_window_ends(panel: Panel) -> None:
    panel.playback.anonymous_window = 0.3
    url = AUDIO_URL.format(panel.recording_id)
    for recording in (panel.recording_id, 999, *[panel.recording_id] * 28, 4242):
        assert (await panel.client.get(AUDIO_URL.format(recording))).status == 401
    assert len(await panel.audits()) == 1
    for _ in range(100):  # the window ends 0.3 s after the first refusal
        await asyncio.sleep(0.02)
        if len(await panel.audits()) == 2:
            break
    folded = (await panel.audits())[0]
    assert (folded["byte_range"], folded["outcome"]) == ("401 x 30", 401)
    assert folded["remote"] == "127.0.0.1"
    assert folded["requested_id"] == "4242"  # the last one asked for
    await asyncio.sleep(0.5)  # a quiet window: nothing more is written
    assert len(await panel.audits()) == 2
    assert (await panel.client.get(url)).status == 401  # written at once again
    assert [a["byte_range"] for a in await panel.audits()] == ["401 x 1", "401 x 30", "401 x 1"]


async def test_counts_still_folded_at_shutdown_are_written(panel: Panel) -> None:
    url = AUDIO_URL.format(panel.recording_id)
    for _ in range(10):
        assert (await panel.client.get(url)).status == 401
    await panel.client.close()
    assert [a["byte_range"] for a in await panel.audits()] == ["401 x 9", "401 x 1"]
