"""The citizen's one-key rating after the human, on the real Asterisk 22 test bed.

``hotline run`` routes and serves the ``survey`` FastAGI script; SIPp plays an agent who
answers and hangs up after two seconds, and a citizen who stays on the line and presses keys
as SIP INFO (or hangs up). The prompts are the espeak-ng files ``hotline prompts`` made when
the sandbox was installed. Timings: the agent answers within a second of the call, hangs up
two seconds later, and the question (7.5 s in zh) is interrupted by the first key.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser.test_panel_browser import CHROMIUM, SCREENSHOTS, browser_or_skip
from tests.integration.bridge import RunningBridge, start_bridge

pytestmark = pytest.mark.integration

ADMIN = {"username": "chief", "password": "survey bed password"}
AGENT_TALKS = 2.0


def only_agent1_hangs_up(asterisk, sipp_phones) -> None:  # type: ignore[no-untyped-def]
    sipp_phones.start_agent("agent1", hang_up_after=AGENT_TALKS)
    for agent in ("agent2", "agent3"):
        asterisk.cli(f"queue pause member PJSIP/{agent} queue hotline reason test")


def rated_row(bridge: RunningBridge, caller: str) -> Any:
    return bridge.wait_for_row(
        "SELECT * FROM calls WHERE caller_number = ? AND rating IS NOT NULL", caller, timeout=30
    )


async def supervisor_get(bridge: RunningBridge, path: str) -> Any:
    base = f"http://127.0.0.1:{bridge.web_port}"
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        async with client.post(f"{base}/api/v1/login", json=ADMIN) as response:
            assert response.status == 200, await response.text()
        async with client.get(f"{base}{path}") as response:
            assert response.status == 200, await response.text()
            return await response.json()


def start(asterisk, tmp_path: Path, **env: str) -> RunningBridge:  # type: ignore[no-untyped-def]
    return start_bridge(
        asterisk,
        tmp_path,
        HOTLINE_ADMIN_USER=ADMIN["username"],
        HOTLINE_ADMIN_PASSWORD=ADMIN["password"],
        **env,
    )


async def test_a_citizen_who_presses_2_after_the_agent_left_is_basically_satisfied(
    asterisk,
    tmp_path: Path,
    sipp_phones,  # type: ignore[no-untyped-def]
) -> None:
    only_agent1_hangs_up(asterisk, sipp_phones)
    bridge = start(asterisk, tmp_path)
    logged_before = len(asterisk.log_lines())
    try:
        started = time.monotonic()
        citizen = sipp_phones.call_and_rate("13900139001", "王五", [(6.0, "2")])
        assert await citizen.wait_async(timeout=90) == 0, citizen.diagnostics()
        ended = time.monotonic() - started
        row = rated_row(bridge, "13900139001")
        assert (row["outcome"], row["agent_interface"]) == ("answered", "PJSIP/agent1")
        assert (row["rating"], row["rating_key"]) == ("basic", "2")
        ticket = bridge.ticket(row["ticket"])
        assert (ticket["rating"], ticket["rated_agent"], ticket["rated_call"]) == (
            "basic", "PJSIP/agent1", row["uniqueid"],
        )  # fmt: skip
        assert ticket["review_requested_at"] is None
        stats = await supervisor_get(bridge, "/api/v1/stats")
        today = stats["satisfaction"]["today"]
        assert (today["rated"], today["answers"]["basic"], today["not_rated"]) == (1, 1, 0)
        assert (today["satisfaction_rate"], today["participation_rate"]) == (1.0, 1.0)
        assert stats["satisfaction"]["agents"]["PJSIP/agent1"]["rated"] == 1
        assert stats["satisfaction"]["queues"]["hotline"]["answers"]["basic"] == 1
        # The question in the call's language: the citizens' trunk says zh (pjsip.conf).
        played = [line for line in asterisk.log_lines()[logged_before:] if "Playing" in line]
        assert any("'hotline/survey-ask." in line and "(language 'zh')" in line for line in played)
        print(f"\nrated call: {ended:.1f} s from dialling to Asterisk's hang-up")
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


async def test_a_citizen_who_hangs_up_instead_is_not_rated(
    asterisk,
    tmp_path: Path,
    sipp_phones,  # type: ignore[no-untyped-def]
) -> None:
    only_agent1_hangs_up(asterisk, sipp_phones)
    bridge = start(asterisk, tmp_path)
    try:
        # On the line 5 s: the agent has left and the question is playing when the BYE goes.
        citizen = sipp_phones.call("13900139002", "赵六", 5.0)
        assert await citizen.wait_async(timeout=60) == 0, citizen.diagnostics()
        row = rated_row(bridge, "13900139002")
        assert (row["outcome"], row["rating"], row["rating_key"]) == ("answered", "not_rated", None)
        ticket = bridge.ticket(row["ticket"])
        assert ticket["rating"] is None  # no guess on the ticket either
        stats = await supervisor_get(bridge, "/api/v1/stats")
        today = stats["satisfaction"]["today"]
        assert (today["rated"], today["not_rated"], today["participation_rate"]) == (0, 1, 0.0)
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


async def test_a_wrong_key_is_asked_again_and_dissatisfied_goes_to_review(
    asterisk,
    tmp_path: Path,
    sipp_phones,  # type: ignore[no-untyped-def]
) -> None:
    only_agent1_hangs_up(asterisk, sipp_phones)
    bridge = start(asterisk, tmp_path)
    try:
        # 7 is not on the scale: the question comes again, and 3 answers it.
        citizen = sipp_phones.call_and_rate("13900139003", "钱七", [(5.5, "7"), (9.0, "3")])
        assert await citizen.wait_async(timeout=90) == 0, citizen.diagnostics()
        row = rated_row(bridge, "13900139003")
        assert (row["rating"], row["rating_key"]) == ("dissatisfied", "3")
        ticket = bridge.ticket(row["ticket"])
        assert ticket["rating"] == "dissatisfied" and ticket["review_requested_at"] is not None
        listed = await supervisor_get(bridge, "/api/v1/tickets?review=1")
        assert [t["number"] for t in listed] == [row["ticket"]]
        assert listed[0]["rating"] == {
            "code": "dissatisfied", "agent": "PJSIP/agent1", "call": row["uniqueid"],
            "at": listed[0]["rating"]["at"], "to_review": True,
        }  # fmt: skip
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


async def test_a_dialplan_with_the_survey_switched_off_still_reaches_a_person(
    asterisk,
    tmp_path: Path,
    sipp_phones,  # type: ignore[no-untyped-def]
) -> None:
    only_agent1_hangs_up(asterisk, sipp_phones)
    asterisk.cli("dialplan set global HOTLINE_SURVEY no")
    bridge = start(asterisk, tmp_path, HOTLINE_SURVEY="off")
    try:
        citizen = sipp_phones.call_and_rate("13900139004", "孙八", [(6.0, "1")])
        assert await citizen.wait_async(timeout=90) == 0, citizen.diagnostics()
        row = bridge.wait_for_row("SELECT * FROM calls WHERE caller_number = ?", "13900139004")
        assert (row["outcome"], row["agent_interface"]) == ("answered", "PJSIP/agent1")
        assert row["rating"] is None  # nobody was asked, so nobody counts as not rated
        # Asterisk hung up once the agent left: the citizen never got as far as a key.
        assert "INFO sip:" not in citizen.messages, citizen.messages
        assert row["talk_seconds"] is not None and row["talk_seconds"] <= AGENT_TALKS + 1
    finally:
        asterisk.cli("dialplan set global HOTLINE_SURVEY yes")
        assert bridge.stop() == 0, bridge.log_tail()


async def test_a_supervisor_sees_the_satisfaction_tiles_and_reviews_a_dissatisfied_rating(
    asterisk,
    tmp_path: Path,
    sipp_phones,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    """Two real rated calls (满意, then 不满意), then Chromium on the supervisor's panel: the
    tiles say 50 %, the review list holds the dissatisfied call's ticket until it is marked
    reviewed. Screenshots for people: panel-satisfaction-zh.png and -en.png."""
    sync_playwright = browser_or_skip()
    only_agent1_hangs_up(asterisk, sipp_phones)
    bridge = start(asterisk, tmp_path)
    base = f"http://127.0.0.1:{bridge.web_port}"
    try:
        async with ami_events(asterisk.ami_probe_username, asterisk.ami_probe_secret) as ami:
            for caller, key in (("13900139005", "1"), ("13900139006", "3")):
                citizen = sipp_phones.call_and_rate(caller, "周九", [(6.0, key)])
                assert await citizen.wait_async(timeout=90) == 0, citizen.diagnostics()
                rated_row(bridge, caller)
                # The probe's session may lag the bridge's: the call's end is in it too.
                await ami.wait_for("Hangup", timeout=20, CallerIDNum=caller)
            transcript = tmp_path / "survey-session.ami"
            transcript.write_bytes(bytes(ami.wire.raw))
        dissatisfied = rated_row(bridge, "13900139006")["ticket"]
        # The same AMI session, replayed: `hotline replay --json` counts what the bridge did.
        replay = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "hotline.cli", "replay", str(transcript), "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        replayed = json.loads(replay.stdout)["satisfaction"]["today"]
        assert (replayed["rated"], replayed["answers"]["satisfied"]) == (2, 1)
        assert replayed["answers"]["dissatisfied"] == 1 and replayed["satisfaction_rate"] == 0.5

        def at_the_panel() -> tuple[str, int]:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                try:
                    page = browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
                    page.goto(f"{base}/login")
                    page.fill("#username", ADMIN["username"])
                    page.fill("#password", ADMIN["password"])
                    page.click("button[type=submit]")
                    page.wait_for_url(f"{base}/")
                    tile = '.rating-tile[data-satisfaction="all"]'
                    page.wait_for_selector(tile, timeout=20_000)
                    page.wait_for_selector(f'#reviews tr[data-ticket="{dissatisfied}"]')
                    rate = page.text_content(f"{tile} .satisfaction_rate") or ""
                    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                    page.screenshot(
                        path=str(SCREENSHOTS / "panel-satisfaction-zh.png"), full_page=True
                    )
                    page.click("#language")
                    page.wait_for_selector("h2:has-text('Satisfaction')")
                    page.screenshot(
                        path=str(SCREENSHOTS / "panel-satisfaction-en.png"), full_page=True
                    )
                    page.click(f'#reviews tr[data-ticket="{dissatisfied}"] button')
                    page.wait_for_selector("#no-reviews:not([hidden])")
                    return rate, page.locator("#reviews tr").count()
                finally:
                    browser.close()

        rate, left = await asyncio.to_thread(at_the_panel)
        assert rate == "50.0 %" and left == 0
        assert bridge.ticket(dissatisfied)["reviewed_at"] is not None
    finally:
        assert bridge.stop() == 0, bridge.log_tail()
