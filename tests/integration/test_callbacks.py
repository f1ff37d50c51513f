"""Callbacks that really dial, on the real Asterisk 22 test bed.

``hotline run`` puts each missed caller on the callback list (two missed calls of one number
are one task); an agent's "Call back" goes out as AMI Originate through a Local channel: SIPp's
agent1 rings first, and only once it answers does Asterisk dial the citizen's phone (SIPp on
127.0.0.2:5090, the trunk's AOR in the sandbox), presenting the hotline's number. The PBX's
report comes back as user events: the task moves on, the attempt is journalled as an outbound
call linked to the ticket, and a reached citizen stops the ticket's callback clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser.test_panel_browser import CHROMIUM, SCREENSHOTS, browser_or_skip
from tests.integration.bridge import RunningBridge, add_user, start_bridge

pytestmark = pytest.mark.integration

ADMIN = {"username": "chief", "password": "callback bed password"}
AGENT = {"username": "li", "password": "callback agent password"}
CALLER = "13700137001"


def pause_everyone(asterisk) -> None:  # type: ignore[no-untyped-def]
    for agent in ("agent1", "agent2", "agent3"):
        asterisk.cli(f"queue pause member PJSIP/{agent} queue hotline reason test")


async def missed_twice(bridge: RunningBridge, place_citizen_call, caller: str) -> str:  # type: ignore[no-untyped-def]
    """Two calls from ``caller`` that nobody answers (everyone paused): one callback task."""
    for _ in range(2):
        call = place_citizen_call(caller, talk_seconds=3, name="吴十")
        assert await call.wait_async(timeout=60) == 0, call.diagnostics()
    rows = bridge.wait_for_rows(
        "SELECT * FROM calls WHERE caller_number = ? AND direction = 'inbound'", caller, count=2
    )
    assert {row["outcome"] for row in rows} == {"abandoned"}
    task = bridge.wait_for_row("SELECT * FROM callbacks WHERE missed_calls = 2")
    assert task["status"] == "due" and task["caller_number"] == caller
    return str(task["ticket"])


class Desk:
    """An agent's browser session, over plain HTTP."""

    def __init__(self, base: str, client: aiohttp.ClientSession, csrf: str) -> None:
        self.base, self.client, self.csrf = base, client, csrf

    @classmethod
    async def log_in(cls, base: str, client: aiohttp.ClientSession, who: dict[str, str]) -> Desk:
        async with client.post(f"{base}/api/v1/login", json=who) as response:
            assert response.status == 200, await response.text()
            return cls(base, client, (await response.json())["csrf"])

    async def callbacks(self, *, every: bool = False) -> dict[str, Any]:
        query = "?all=true" if every else ""
        async with self.client.get(f"{self.base}/api/v1/callbacks{query}") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.client.post(
            f"{self.base}{path}", json=body, headers={"X-CSRF-Token": self.csrf}
        ) as response:
            return response.status, await response.json()

    async def resolve(self, ticket: str) -> None:
        for status in ("contacted", "resolved"):
            async with self.client.patch(
                f"{self.base}/api/v1/tickets/{ticket}",
                json={"status": status},
                headers={"X-CSRF-Token": self.csrf},
            ) as response:
                moved = await response.json()
            if moved.get("status") == "resolved":
                return
        assert moved.get("status") == "resolved", moved

    async def call_back(self, task_id: int) -> tuple[int, dict[str, Any]]:
        async with self.client.post(
            f"{self.base}/api/v1/callbacks/{task_id}/dial",
            json={},
            headers={"X-CSRF-Token": self.csrf},
        ) as response:
            return response.status, await response.json()


async def wait_for_task(desk: Desk, task_id: int, status: str, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: dict[str, Any] = {}
    while loop.time() < deadline:
        listed = await desk.callbacks(every=True)
        seen = next(t for t in listed["callbacks"] if t["id"] == task_id)
        if seen["status"] == status:
            return seen
        await asyncio.sleep(0.3)
    raise AssertionError(f"callback {task_id} is {seen.get('status')}, not {status}: {seen}")


def click_call_back(base: str, task_id: int) -> str:
    """Chromium: the supervisor's ticket view shows the callback list; the agent clicks "回拨"
    in the desk. Screenshots: callbacks-tickets-zh.png, callbacks-agent-desk-zh.png."""
    sync_playwright = browser_or_skip()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    row = f'#callback-rows tr[data-callback="{task_id}"]'
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            for who, page_path, shot in (
                (ADMIN, "/tickets", "callbacks-tickets-zh.png"),
                (AGENT, "/agent", "callbacks-agent-desk-zh.png"),
            ):
                page = browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 800})
                page.goto(f"{base}/login")
                page.fill("#username", who["username"])
                page.fill("#password", who["password"])
                page.click("button[type=submit]")
                page.wait_for_url(f"{base}{page_path}" if who is AGENT else f"{base}/")
                if who is ADMIN:
                    page.goto(f"{base}{page_path}")
                page.wait_for_selector(row, timeout=20_000)
                page.screenshot(path=str(SCREENSHOTS / shot), full_page=True)
            page.click(f"{row} button.call-back")
            page.wait_for_selector("#callback-result:not(:empty)")
            return page.text_content("#callback-result") or ""
        finally:
            browser.close()


async def dial_to(ami, prefix: str, since: int, timeout: float = 30) -> Any:  # type: ignore[no-untyped-def]
    """The first DialBegin (after ``since``) that rings a channel named ``prefix``..."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for frame in ami.events[since:]:
            if frame.get("Event") == "DialBegin" and frame.get("DestChannel", "").startswith(
                prefix
            ):
                return frame
        await asyncio.sleep(0.05)
    raise AssertionError(f"no DialBegin to {prefix}* in {timeout} s")


def start(asterisk, tmp_path: Path, **env: str) -> RunningBridge:  # type: ignore[no-untyped-def]
    bridge = start_bridge(
        asterisk,
        tmp_path,
        HOTLINE_ADMIN_USER=ADMIN["username"],
        HOTLINE_ADMIN_PASSWORD=ADMIN["password"],
        **env,
    )
    add_user(bridge, AGENT["username"], AGENT["password"], "agent", "PJSIP/agent1")
    return bridge


async def test_call_back_rings_the_agent_then_the_citizen_and_stops_the_callback_clock(
    asterisk,
    tmp_path: Path,
    sipp_phones,
    place_citizen_call,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    pause_everyone(asterisk)
    bridge = start(asterisk, tmp_path)
    base = f"http://127.0.0.1:{bridge.web_port}"
    try:
        ticket = await missed_twice(bridge, place_citizen_call, CALLER)
        assert bridge.ticket(ticket)["status"] == "callback"
        sipp_phones.start_agent("agent1", voice=asterisk.agent_voice())  # real audio to record
        sipp_phones.start_citizen_phone(answer=True, hang_up_after=3)
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client,
            ami_events(asterisk.ami_probe_username, asterisk.ami_probe_secret) as ami,
        ):
            desk = await Desk.log_in(base, client, AGENT)
            [task] = (await desk.callbacks())["callbacks"]
            assert (task["ticket"], task["missed_calls"], task["status"]) == (ticket, 2, "due")
            since = ami.mark()
            said = await asyncio.to_thread(click_call_back, base, task["id"])
            assert said.startswith("您的话机先振铃"), said
            agent_leg = await dial_to(ami, "PJSIP/agent1-", since)
            citizen_leg = await dial_to(ami, "PJSIP/citizens-", since)
            assert citizen_leg["CallerIDNum"] == "12345"  # the number the hotline presents
            assert float(citizen_leg["Timestamp"]) >= float(agent_leg["Timestamp"])
            reached = await wait_for_task(desk, task["id"], "reached")
            assert reached["attempts"] == 1 and reached["reached_at"]
            status, again = await desk.call_back(task["id"])
            assert status == 409, again  # a reached task is not dialled again
            figures = (await desk.callbacks())["today"]
        assert (figures["requested"], figures["reached"], figures["on_time_rate"]) == (1, 1, 1.0)
        row = bridge.wait_for_row("SELECT * FROM calls WHERE direction = 'outbound'")
        assert (row["outcome"], row["ticket"], row["agent_interface"]) == (
            "reached", ticket, "PJSIP/agent1",
        )  # fmt: skip
        assert row["caller_number"] == CALLER and row["talk_seconds"] >= 2
        after = bridge.ticket(ticket)
        assert after["status"] == "contacted" and after["called_back_at"] is not None
        recording = bridge.wait_for_row(
            "SELECT * FROM recordings WHERE uniqueid = ?", row["uniqueid"], timeout=30
        )
        assert recording["ticket"] == ticket
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


async def test_a_citizen_who_does_not_answer_is_tried_again_then_the_task_says_why_it_stopped(
    asterisk,
    tmp_path: Path,
    sipp_phones,
    place_citizen_call,  # type: ignore[no-untyped-def]
) -> None:
    pause_everyone(asterisk)
    asterisk.cli("dialplan set global HOTLINE_CALLBACK_RING 4")
    bridge = start(
        asterisk, tmp_path, HOTLINE_CALLBACK_ATTEMPTS="2", HOTLINE_CALLBACK_SPACING_MINUTES="0.05"
    )
    base = f"http://127.0.0.1:{bridge.web_port}"
    try:
        ticket = await missed_twice(bridge, place_citizen_call, "13700137002")
        sipp_phones.start_agent("agent1")
        sipp_phones.start_citizen_phone(answer=False)
        asterisk.cli("queue unpause member PJSIP/agent1 queue hotline")  # free for the retry
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            desk = await Desk.log_in(base, client, AGENT)
            [task] = (await desk.callbacks())["callbacks"]
            status, _ = await desk.call_back(task["id"])
            assert status == 200
            waiting = await wait_for_task(desk, task["id"], "retry")
            assert (waiting["attempts"], waiting["last_outcome"]) == (1, "no_answer")
            assert waiting["next_attempt_at"]
            # Nobody clicks again: the bridge dials the retry itself once the spacing passed.
            stopped = await wait_for_task(desk, task["id"], "gave_up")
        assert stopped["attempts"] == 2
        assert stopped["stopped_because"] == "no answer after 2 attempts"
        rows = bridge.wait_for_rows(
            "SELECT * FROM calls WHERE direction = 'outbound' ORDER BY started_at", count=2
        )
        assert [(r["outcome"], r["ticket"]) for r in rows] == [("no_answer", ticket)] * 2
        gap = (rows[1]["started_at"], rows[0]["ended_at"])
        print(f"\nattempts: {[r['started_at'] for r in rows]}; gap after the first: {gap}")
        assert bridge.ticket(ticket)["called_back_at"] is None  # the clock still runs
    finally:
        asterisk.cli("dialplan set global HOTLINE_CALLBACK_RING 30")
        assert bridge.stop() == 0, bridge.log_tail()


async def test_a_return_visit_asks_the_citizen_to_rate_the_whole_case(
    asterisk,
    tmp_path: Path,
    sipp_phones,
    place_citizen_call,  # type: ignore[no-untyped-def]
) -> None:
    """一事一评: a resolved ticket's return visit goes out like a callback; the agent hangs up
    after two seconds, the citizen hears the question and presses 1."""
    pause_everyone(asterisk)
    bridge = start(asterisk, tmp_path)
    base = f"http://127.0.0.1:{bridge.web_port}"
    try:
        ticket = await missed_twice(bridge, place_citizen_call, "13700137003")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            desk = await Desk.log_in(base, client, AGENT)
            status, refused = await desk.post(f"/api/v1/tickets/{ticket}/visit", {})
            assert status == 409 and "resolution" in refused["error"]  # not resolved yet
            await desk.resolve(ticket)
            sipp_phones.start_agent("agent1", hang_up_after=2.0)
            phone = sipp_phones.start_citizen_phone(answer=True, rate=(6.0, "1"))
            status, visit = await desk.post(f"/api/v1/tickets/{ticket}/visit", {})
            assert status == 200 and visit["kind"] == "visit", visit
            done = await wait_for_task(desk, visit["id"], "reached")
            assert done["attempts"] == 1
        rated = bridge.wait_for_row(
            "SELECT * FROM tickets WHERE number = ? AND visit_rating IS NOT NULL", ticket
        )
        assert (rated["visit_rating"], rated["visit_agent"]) == ("satisfied", "PJSIP/agent1")
        assert rated["status"] == "resolved"  # the visit rates the case; it does not move it
        row = bridge.wait_for_row("SELECT * FROM calls WHERE direction = 'outbound'")
        assert (row["routing_reason"], row["outcome"], row["ticket"]) == (
            "visit", "reached", ticket,
        )  # fmt: skip
        assert "Signal=1" in phone.messages
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


async def test_a_quiet_line_offers_the_oldest_callback_to_a_free_agent_who_accepts(
    asterisk,
    tmp_path: Path,
    sipp_phones,
    place_citizen_call,  # type: ignore[no-untyped-def]
) -> None:
    pause_everyone(asterisk)
    bridge = start(asterisk, tmp_path, HOTLINE_CALLBACK_OFFER_WHEN_QUIET="true")
    base = f"http://127.0.0.1:{bridge.web_port}"
    try:
        ticket = await missed_twice(bridge, place_citizen_call, "13700137004")
        sipp_phones.start_agent("agent1")
        sipp_phones.start_citizen_phone(answer=True, hang_up_after=2)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            desk = await Desk.log_in(base, client, AGENT)
            async with client.ws_connect(f"{base}/api/v1/live") as socket:
                await socket.receive_json(timeout=10)  # the snapshot
                # agent1 becomes free and nobody waits: the line is quiet.
                asterisk.cli("queue unpause member PJSIP/agent1 queue hotline")
                offer: dict[str, Any] = {}
                while offer.get("type") != "callback.offer":
                    offer = await socket.receive_json(timeout=20)
            assert (offer["agent"], offer["ticket"], offer["missed_calls"]) == (
                "PJSIP/agent1", ticket, 2,
            )  # fmt: skip
            status, accepted = await desk.call_back(offer["callback"])
            assert status == 200, accepted
            reached = await wait_for_task(desk, offer["callback"], "reached")
        assert reached["agent"] == "PJSIP/agent1"
        assert bridge.ticket(ticket)["called_back_at"] is not None
    finally:
        assert bridge.stop() == 0, bridge.log_tail()
