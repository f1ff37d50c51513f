"""Recordings on the real Asterisk 22 test bed (issue: recordings kept, verified, linked, heard).

MixMonitor writes into the chroot's spool as the dialplan names the file; the real ``hotline run``
ingests it into the test's store. The agent is a SIPp phone that talks: it streams a real prompt of
Debian's asterisk-core-sounds-en (converted to u-law by Asterisk) as RTP.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import sqlite3
import struct
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from recording.wav import HEADER_READ_BYTES, parse_wav_header
from tests.browser.test_panel_browser import CHROMIUM, SCREENSHOTS, browser_or_skip
from tests.integration.bridge import RunningBridge, add_user, start_bridge

pytestmark = pytest.mark.integration

CALLER = "13700137000"


@pytest.fixture
def talking_agent(asterisk, sipp_phones):  # type: ignore[no-untyped-def]
    """agent1 answers and talks; agent2 and agent3 are paused; the spool starts empty."""
    spool = asterisk.recordings_spool
    if spool.exists():
        shutil.rmtree(spool)
    voice = asterisk.agent_voice()
    sipp_phones.start_agent("agent1", voice=voice)
    for agent in ("agent2", "agent3"):
        asterisk.cli(f"queue pause member PJSIP/{agent} queue hotline reason test")
    yield sipp_phones.agents["agent1"]


def recording_rows(bridge: RunningBridge, uniqueid: str) -> list[sqlite3.Row]:
    return bridge.rows("SELECT * FROM recordings WHERE uniqueid = ?", uniqueid)


def spool_files(asterisk, uniqueid: str) -> list[Path]:  # type: ignore[no-untyped-def]
    return sorted(asterisk.recordings_spool.glob(f"*/*/*/{uniqueid}_*"))


def loudness(wav: bytes) -> float:
    """RMS of the 16-bit samples after the header: silence is near 0, speech in the thousands."""
    data = wav[wav.index(b"data") + 8 :]
    samples = struct.unpack(f"<{len(data) // 2}h", data[: len(data) // 2 * 2])
    return (sum(s * s for s in samples) / max(1, len(samples))) ** 0.5


async def ingest_counter_reaches(bridge: RunningBridge, name: str, value: int) -> None:
    deadline = time.monotonic() + 10
    while bridge.health()["recordings"].get(name, 0) < value:
        assert time.monotonic() < deadline, f"ingest counter {name} < {value}\n{bridge.log_tail()}"
        await asyncio.sleep(0.2)


PASSWORD = "test bed password"


def http_get(bridge: RunningBridge, path: str, user: str, **headers: str) -> tuple[int, bytes]:
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{bridge.web_port}{path}",
        headers={"Authorization": f"Basic {token}", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http, above)
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def check_stored(bridge: RunningBridge, tmp_path: Path, recording: sqlite3.Row) -> bytes:
    """The store holds exactly what the row says: hash, size, a closed WAV of that duration."""
    stored = (tmp_path / "recordings" / recording["key"]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == recording["sha256"]
    assert len(stored) == recording["size_bytes"]
    info = parse_wav_header(stored[:HEADER_READ_BYTES], len(stored))
    assert info.duration_seconds == pytest.approx(recording["duration_seconds"], abs=0.001)
    assert recording["format"] == info.format
    return stored


async def test_an_answered_call_is_recorded_with_its_talk_time_hash_call_and_ticket(
    asterisk,
    tmp_path: Path,
    talking_agent,
    place_citizen_call,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    bridge = start_bridge(asterisk, tmp_path)
    try:
        async with ami_events(asterisk.ami_probe_username, asterisk.ami_probe_secret) as ami:
            call = place_citizen_call(CALLER, talk_seconds=7)
            assert await call.wait_async(timeout=60) == 0, call.diagnostics()
            connect = await ami.wait_for("AgentConnect", timeout=20, CallerIDNum=CALLER)
            complete = await ami.wait_for_completion(connect, timeout=20)
        row = bridge.call_row(CALLER)
        assert row["outcome"] == "answered" and row["agent_interface"] == "PJSIP/agent1"
        recording = bridge.wait_for_row(
            "SELECT * FROM recordings WHERE uniqueid = ?", row["uniqueid"]
        )
        assert len(recording_rows(bridge, row["uniqueid"])) == 1
        # The name carries the day, the uniqueid and the ticket routing opened for the call.
        assert row["ticket"]
        assert recording["key"].endswith(f"/{row['uniqueid']}_{row['ticket']}.wav")
        assert recording["ticket"] == row["ticket"]
        linked = bridge.rows(
            "SELECT coalesce(r.ticket, c.ticket) AS ticket FROM recordings r "
            "JOIN calls c ON c.uniqueid = r.uniqueid WHERE r.id = ?",
            recording["id"],
        )
        assert [r["ticket"] for r in linked] == [row["ticket"]]

        talk = seconds_between(row["answered_at"], row["ended_at"])
        assert recording["duration_seconds"] == pytest.approx(talk, abs=1.0)
        assert recording["duration_seconds"] == pytest.approx(float(complete["TalkTime"]), abs=1.0)
        assert recording["duration_seconds"] > 3
        stored = check_stored(bridge, tmp_path, recording)
        assert recording["format"] == "wav/pcm/8000/1/16"
        assert loudness(stored) > 300, "the agent's speech is not in the recording"
        assert spool_files(asterisk, row["uniqueid"]) == []  # moved, not copied

        # Played back by the running bridge: the agent who took the call, by ranges; not the
        # other agent; every request in the audit log.
        add_user(bridge, "li", PASSWORD, "agent", "PJSIP/agent1")
        add_user(bridge, "zhao", PASSWORD, "agent", "PJSIP/agent2")
        url = f"/api/v1/recordings/{recording['id']}/audio"
        assert http_get(bridge, url, "li") == (200, stored)
        status, head = http_get(bridge, url, "li", Range="bytes=0-43")
        assert (status, head) == (206, stored[:44])
        assert http_get(bridge, url, "zhao")[0] == 403
        audits = bridge.rows("SELECT username, outcome FROM recording_access ORDER BY id")
        assert [(a["username"], a["outcome"]) for a in audits] == [
            ("li", 200),
            ("li", 206),
            ("zhao", 403),
        ]
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


async def test_a_named_pbx_journals_and_records_its_calls_under_its_name(
    asterisk,
    tmp_path: Path,
    talking_agent,
    place_citizen_call,  # type: ignore[no-untyped-def]
) -> None:
    """With HOTLINE_PBX_NAME, the call's ids in the journal carry the PBX's name with
    Asterisk's own uniqueid, and its ticket and recording are found under that id."""
    bridge = start_bridge(asterisk, tmp_path, HOTLINE_PBX_NAME="east")
    try:
        call = place_citizen_call(CALLER, talk_seconds=5)
        assert call.wait(timeout=60) == 0, call.diagnostics()
        row = bridge.call_row(CALLER)
        assert row["outcome"] == "answered"
        own = row["uniqueid"].removeprefix("east/")
        assert row["uniqueid"] == f"east/{own}" and row["linkedid"].startswith("east/")
        assert own.replace(".", "").isdigit()  # Asterisk's own uniqueid, whole
        assert row["ticket"] and bridge.ticket(row["ticket"])["caller_number"] == CALLER
        recording = bridge.wait_for_row(
            "SELECT * FROM recordings WHERE uniqueid = ?", row["uniqueid"]
        )
        assert recording["key"].endswith(f"/{own}_{row['ticket']}.wav")  # the PBX's file name
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


async def test_a_call_abandoned_in_the_queue_leaves_no_recording(
    asterisk,
    tmp_path: Path,
    sipp_phones,
    place_citizen_call,  # type: ignore[no-untyped-def]
) -> None:
    sipp_phones.start_agent("agent3", answer=False)
    for agent in ("agent1", "agent2"):
        asterisk.cli(f"queue pause member PJSIP/{agent} queue hotline reason test")
    bridge = start_bridge(asterisk, tmp_path)
    try:
        call = place_citizen_call(CALLER, talk_seconds=4)
        assert call.wait(timeout=60) == 0, call.diagnostics()
        row = bridge.call_row(CALLER)
        assert row["outcome"].startswith("abandoned")
        asterisk.wait_idle()
        # MixMonitor did create a header-only file (it always does); the bridge drops it.
        await ingest_counter_reaches(bridge, "no-audio", 1)
        assert spool_files(asterisk, row["uniqueid"]) == []
        assert recording_rows(bridge, row["uniqueid"]) == []
        assert bridge.health()["recordings"].get("stored", 0) == 0
        assert not list((tmp_path / "recordings").glob("*/*/*/*.wav"))
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


async def test_a_bridge_killed_during_the_call_ingests_the_recording_once_after_restart(
    asterisk,
    tmp_path: Path,
    talking_agent,
    place_citizen_call,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    bridge = start_bridge(asterisk, tmp_path)
    async with ami_events(asterisk.ami_probe_username, asterisk.ami_probe_secret) as ami:
        call = place_citizen_call(CALLER, talk_seconds=8)
        connect = await ami.wait_for("AgentConnect", timeout=20, CallerIDNum=CALLER)
        uniqueid = connect["Uniqueid"]
        bridge.process.kill()  # no shutdown at all: SIGKILL while MixMonitor writes
        bridge.process.wait(timeout=10)
        assert await call.wait_async(timeout=60) == 0, call.diagnostics()
    asterisk.wait_idle()
    finished = spool_files(asterisk, uniqueid)
    assert len(finished) == 1 and not finished[0].name.endswith(".recording.wav"), finished
    assert recording_rows(bridge, uniqueid) == []

    restarted = start_bridge(asterisk, tmp_path)
    try:
        recording = restarted.wait_for_row("SELECT * FROM recordings WHERE uniqueid = ?", uniqueid)
        check_stored(restarted, tmp_path, recording)
        assert recording["duration_seconds"] > 3
        assert spool_files(asterisk, uniqueid) == []
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    # A third start finds nothing to do: still one row, one stored file.
    again = start_bridge(asterisk, tmp_path)
    try:
        await ingest_counter_reaches(again, "passes", 2)
        assert again.health()["recordings"].get("stored", 0) == 0
    finally:
        assert again.stop() == 0, again.log_tail()
    assert len(recording_rows(again, uniqueid)) == 1
    assert len(list((tmp_path / "recordings").glob(f"*/*/*/{uniqueid}_*.wav"))) == 1


@pytest.mark.browser
async def test_a_supervisor_plays_and_seeks_the_recording_in_a_real_browser(
    asterisk,
    tmp_path: Path,
    talking_agent,
    place_citizen_call,  # type: ignore[no-untyped-def]
) -> None:
    """Chromium's audio element on the ticket page loads the recording and seeks in it, which it
    does with Range requests; each is in the audit log."""
    sync_playwright = browser_or_skip()
    admin = {"HOTLINE_ADMIN_USER": "chief", "HOTLINE_ADMIN_PASSWORD": PASSWORD}
    bridge = start_bridge(asterisk, tmp_path, **admin)
    try:
        call = place_citizen_call(CALLER, talk_seconds=7)
        assert await call.wait_async(timeout=60) == 0, call.diagnostics()
        row = bridge.call_row(CALLER)
        recording = await asyncio.to_thread(
            bridge.wait_for_row, "SELECT * FROM recordings WHERE uniqueid = ?", row["uniqueid"]
        )

        def play() -> dict:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                try:
                    page = browser.new_page(locale="en-US")
                    base = f"http://127.0.0.1:{bridge.web_port}"
                    page.goto(f"{base}/login")
                    page.fill("#username", "chief")
                    page.fill("#password", PASSWORD)
                    page.click("button[type=submit]")
                    page.wait_for_url(f"{base}/")
                    page.goto(f"{base}/tickets?ticket={row['ticket']}")
                    page.wait_for_selector("#detail-recordings audio", timeout=10_000)
                    result = page.evaluate(SEEK_SCRIPT)
                    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(SCREENSHOTS / "ticket-recording.png"), full_page=True)
                    return result
                finally:
                    browser.close()

        played = await asyncio.to_thread(play)
        assert played["duration"] == pytest.approx(recording["duration_seconds"], abs=0.1)
        assert played["currentTime"] == pytest.approx(4.0, abs=0.5)
        audits = bridge.rows(
            "SELECT outcome, byte_range FROM recording_access WHERE username = 'chief'"
        )
        assert audits and all(a["outcome"] in (200, 206) for a in audits)
        assert any(a["outcome"] == 206 for a in audits), [dict(a) for a in audits]
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


SEEK_SCRIPT = """
async () => {
  const audio = document.querySelector("#detail-recordings audio");
  if (audio.readyState < 1) {
    await new Promise((ok) => audio.addEventListener("loadedmetadata", ok, { once: true }));
  }
  audio.currentTime = 4;
  await new Promise((ok) => audio.addEventListener("seeked", ok, { once: true }));
  return { duration: audio.duration, currentTime: audio.currentTime };
}
"""
