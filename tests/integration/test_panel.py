"""The web panel on the real test bed: a supervisor's live socket follows a real call.

``hotline run`` with Redis as its bus and its first admin from the environment; the test logs in
over HTTP like the panel's page does, opens ``/api/v1/live`` and watches a citizen wait in the
queue and be answered, while the probe's AMI session shows the events Asterisk sent. Latencies
are printed (the figure itself is the fan-out benchmark's job).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser.test_panel_browser import CHROMIUM, SCREENSHOTS, browser_or_skip
from tests.conftest import need_service
from tests.integration.bridge import add_user, start_bridge

pytestmark = pytest.mark.integration

ADMIN = {"username": "chief", "password": "panel bed password"}
CALLER = "13600136000"


async def next_matching(socket: aiohttp.ClientWebSocketResponse, wanted, timeout: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        message = await socket.receive_json(timeout=max(0.1, deadline - time.monotonic()))
        if wanted(message):
            return message, time.monotonic()


def waiting(message: dict[str, Any]) -> int | None:
    figures = (message.get("queues") or {}).get("hotline") or {}
    return figures.get("waiting_now")


async def test_a_supervisor_sees_a_real_caller_wait_and_be_answered_live(
    asterisk,
    tmp_path: Path,
    sipp_phones,
    place_citizen_call,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    sipp_phones.start_agent("agent1")
    for agent in ("agent2", "agent3"):
        asterisk.cli(f"queue pause member PJSIP/{agent} queue hotline reason test")
    asterisk.cli("queue pause member PJSIP/agent1 queue hotline reason lunch")
    bridge = start_bridge(
        asterisk,
        tmp_path,
        HOTLINE_REDIS_URL="redis://127.0.0.1:6379/12",
        HOTLINE_ADMIN_USER=ADMIN["username"],
        HOTLINE_ADMIN_PASSWORD=ADMIN["password"],
    )
    base = f"http://127.0.0.1:{bridge.web_port}"
    try:
        jar = aiohttp.CookieJar(unsafe=True)  # keep 127.0.0.1's cookie, as a browser does
        async with (
            aiohttp.ClientSession(cookie_jar=jar) as client,
            ami_events(asterisk.ami_probe_username, asterisk.ami_probe_secret) as ami,
        ):
            async with client.post(f"{base}/api/v1/login", json=ADMIN) as response:
                assert response.status == 200, await response.text()
            async with client.ws_connect(f"{base}/api/v1/live") as socket:
                first = await socket.receive_json(timeout=10)
                assert first["type"] == "snapshot" and first["pbx"]["up"] is True
                paused = first["agents"]["PJSIP/agent1"]
                assert (paused["state"], paused["pause_reason"]) == ("paused", "lunch")

                call = place_citizen_call(CALLER, talk_seconds=9)
                joined = await ami.wait_for("QueueCallerJoin", timeout=20, CallerIDNum=CALLER)
                joined_at = time.monotonic()
                _, seen_waiting = await next_matching(socket, lambda m: waiting(m) == 1)
                assert joined["Queue"] == "hotline"

                asterisk.cli("queue unpause member PJSIP/agent1 queue hotline")
                await ami.wait_for("AgentConnect", timeout=20, CallerIDNum=CALLER)
                connected_at = time.monotonic()
                _, seen_answered = await next_matching(socket, lambda m: waiting(m) == 0)
                assert await call.wait_async(timeout=60) == 0, call.diagnostics()
                finished, _ = await next_matching(
                    socket, lambda m: m.get("type") == "call.finished"
                )
                assert finished["outcome"] == "answered" and finished["agent"] == "PJSIP/agent1"
            async with client.get(f"{base}/api/v1/stats") as response:
                stats = await response.json()
            hotline = stats["queues"]["hotline"]
            assert (hotline["offered"], hotline["answered"]) == (1, 1)
            async with client.get(f"{base}/api/v1/calls") as response:
                [journal] = await response.json()
            assert journal["caller_number"] == CALLER and journal["agent"] == "PJSIP/agent1"
        print(
            f"AMI event -> panel socket: caller waiting "
            f"{1000 * (seen_waiting - joined_at):.0f} ms, "
            f"answered {1000 * (seen_answered - connected_at):.0f} ms"
        )
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


AGENT = {"username": "li", "password": "agent bed password"}


async def test_an_agent_gets_the_caller_as_the_phone_rings_and_pauses_through_asterisk(
    asterisk,
    tmp_path: Path,
    sipp_phones,
    place_citizen_call,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    sipp_phones.start_agent("agent1")
    for agent in ("agent2", "agent3"):
        asterisk.cli(f"queue pause member PJSIP/{agent} queue hotline reason test")
    bridge = start_bridge(
        asterisk,
        tmp_path,
        HOTLINE_ADMIN_USER=ADMIN["username"],
        HOTLINE_ADMIN_PASSWORD=ADMIN["password"],
    )
    add_user(bridge, AGENT["username"], AGENT["password"], "agent", "PJSIP/agent1")
    base = f"http://127.0.0.1:{bridge.web_port}"
    try:
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as agent,
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as chief,
        ):
            async with agent.post(f"{base}/api/v1/login", json=AGENT) as response:
                csrf = {"X-CSRF-Token": (await response.json())["csrf"]}
            async with chief.post(f"{base}/api/v1/login", json=ADMIN) as response:
                chief_csrf = {"X-CSRF-Token": (await response.json())["csrf"]}
            async with agent.ws_connect(f"{base}/api/v1/live") as socket:
                await socket.receive_json(timeout=10)  # the snapshot
                call = place_citizen_call(CALLER, talk_seconds=4, name="王五")
                ringing, _ = await next_matching(socket, lambda m: m.get("type") == "call.ringing")
                assert ringing["agent"] == "PJSIP/agent1"
                assert ringing["caller_number"] == CALLER and ringing["ticket"]
                async with agent.get(f"{base}/api/v1/tickets/{ringing['ticket']}") as response:
                    ticket = await response.json()
                assert ticket["caller_number"] == CALLER and ticket["caller_name"] == "王五"
                assert await call.wait_async(timeout=60) == 0, call.diagnostics()

                pause = {"paused": True, "reason": "break"}
                async with agent.post(
                    f"{base}/api/v1/agent/pause", json=pause, headers=csrf
                ) as response:
                    assert response.status == 200, await response.text()
                paused, _ = await next_matching(
                    socket,
                    lambda m: ((m.get("agents") or {}).get("PJSIP/agent1") or {}).get("paused"),
                )
                assert paused["agents"]["PJSIP/agent1"]["pause_reason"] == "break"
            shown = asterisk.cli("queue show hotline")
            assert re.search(r"Agent One \(PJSIP/agent1\).*paused:break", shown), shown
            async with agent.post(
                f"{base}/api/v1/agent/pause", json={"paused": False}, headers=csrf
            ) as response:
                assert response.status == 200
            assert "paused" not in agent_line(asterisk.cli("queue show hotline"), "agent1")

            # A supervisor logs agent4 in to the queue and out again; a static member cannot be
            # logged out, and Asterisk's refusal reaches the panel.
            member = {"agent": "PJSIP/agent4", "queue": "hotline", "member": True}
            async with chief.post(
                f"{base}/api/v1/agent/queues", json=member, headers=chief_csrf
            ) as response:
                assert response.status == 200, await response.text()
            assert "PJSIP/agent4" in asterisk.cli("queue show hotline")
            member["member"] = False
            async with chief.post(
                f"{base}/api/v1/agent/queues", json=member, headers=chief_csrf
            ) as response:
                assert response.status == 200
            assert "PJSIP/agent4" not in asterisk.cli("queue show hotline")
            static = {"agent": "PJSIP/agent1", "queue": "hotline", "member": False}
            async with chief.post(
                f"{base}/api/v1/agent/queues", json=static, headers=chief_csrf
            ) as response:
                assert response.status == 409
                print("Asterisk refused:", (await response.json())["error"])
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


def agent_line(shown: str, agent: str) -> str:
    return next(line for line in shown.splitlines() if f"PJSIP/{agent})" in line)


@pytest.mark.browser
async def test_an_agent_edits_the_popped_up_ticket_in_a_real_browser(
    asterisk,
    tmp_path: Path,
    sipp_phones,
    place_citizen_call,  # type: ignore[no-untyped-def]
) -> None:
    """Chromium at the agent's desk: the real call rings, its routed ticket pops up, the agent
    writes what the citizen reports and saves it; the ticket in the database says so."""
    sync_playwright = browser_or_skip()
    sipp_phones.start_agent("agent1")
    for agent in ("agent2", "agent3"):
        asterisk.cli(f"queue pause member PJSIP/{agent} queue hotline reason test")
    bridge = start_bridge(asterisk, tmp_path)
    add_user(bridge, AGENT["username"], AGENT["password"], "agent", "PJSIP/agent1")
    base = f"http://127.0.0.1:{bridge.web_port}"

    def at_the_desk() -> str:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page(locale="zh-CN")
                page.goto(f"{base}/login")
                page.fill("#username", AGENT["username"])
                page.fill("#password", AGENT["password"])
                page.click("button[type=submit]")
                page.wait_for_url(f"{base}/agent")
                page.wait_for_selector("#link-state.live")
                call = place_citizen_call(CALLER, talk_seconds=12, name="赵六")
                page.wait_for_selector("#ticket-form:not([hidden])", timeout=20_000)
                assert page.text_content("#popup-caller") == CALLER
                page.fill("#ticket-category", "路灯")
                page.fill("#ticket-description", "人民路 18 号路灯不亮")
                page.click("#ticket-form button[type=submit]")
                page.wait_for_selector("#ticket-result:has-text('已保存')")
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / "agent-popup-real-call.png"), full_page=True)
                assert call.wait(timeout=60) == 0, call.diagnostics()
                return page.text_content("#popup-ticket") or ""
            finally:
                browser.close()

    try:
        number = await asyncio.to_thread(at_the_desk)
        ticket = bridge.ticket(number)
        assert (ticket["category"], ticket["description"]) == ("路灯", "人民路 18 号路灯不亮")
        assert ticket["caller_name"] == "赵六" and ticket["owner_agent"] == "PJSIP/agent1"
    finally:
        assert bridge.stop() == 0, bridge.log_tail()
