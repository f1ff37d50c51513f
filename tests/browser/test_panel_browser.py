"""The panel in a real browser: Debian's Chromium, headless, driven by Playwright.

``hotline demo`` replays a real recorded session a little faster than real time; the browser logs
in as the printed demo user, watches a queue tile change as the calls come in, switches to
Chinese, and saves screenshots (``HOTLINE_SCREENSHOTS`` or ``.cache/screenshots``) for people to
look at.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, services_required
from tests.unit.test_cli import hotline_env

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("HOTLINE_SCREENSHOTS", ROOT / ".cache" / "screenshots"))


def browser_or_skip():  # type: ignore[no-untyped-def]
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    else:
        if Path(CHROMIUM).exists():
            return sync_playwright
        reason = "Debian's chromium is not installed (apt-get install chromium)"
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Demo:
    url: str
    user: str
    password: str


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    env = hotline_env(tmp_path, HOTLINE_WEB_PORT=str(free_port()))
    log = (tmp_path / "demo.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "hotline.cli", "demo", "--speed", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        match = re.match(r"hotline demo: open (\S+) and log in as (\S+) / (\S+) ", line)
        assert match, line
        yield Demo(*match.groups())
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, (tmp_path / "demo.log").read_text()
        log.close()


def offered(page) -> int:  # type: ignore[no-untyped-def]
    text = page.locator('.tile[data-queue="hotline"] .answered_offered').inner_text()
    return int(text.split("/")[1])


def test_a_supervisor_logs_in_and_watches_the_queue_tile_move(demo: Demo) -> None:
    sync_playwright = browser_or_skip()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(demo.url)
            assert page.url.endswith("/login")  # not logged in: sent to the login page

            page.fill("#username", demo.user)
            page.fill("#password", "not the password")
            page.click("button[type=submit]")
            page.wait_for_selector("#login-error:not([hidden])")
            assert "Wrong user name or password" in page.inner_text("#login-error")
            page.screenshot(path=str(SCREENSHOTS / "login-refused.png"))

            page.fill("#password", demo.password)
            page.click("button[type=submit]")
            page.wait_for_url(demo.url)
            page.wait_for_selector('.tile[data-queue="hotline"]', timeout=20_000)
            page.wait_for_selector("#link-state.live")
            first = offered(page)
            deadline = time.monotonic() + 30
            while offered(page) <= first and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            assert offered(page) > first, "the tile did not move while the session replayed"
            assert page.locator("#agents tr").count() == 3
            assert page.locator('.hour-chart[data-queue="hotline"] .bar').count() >= 1
            assert page.locator("h2").first.text_content() == "Queues"
            page.screenshot(path=str(SCREENSHOTS / "panel-en.png"), full_page=True)

            page.click("#language")
            assert page.locator("h2").first.text_content() == "队列"
            assert "接通率" in page.inner_text('.tile[data-queue="hotline"]')
            page.screenshot(path=str(SCREENSHOTS / "panel-zh.png"), full_page=True)

            page.click("#logout")
            page.wait_for_url(re.compile(r".*/login$"))
            page.goto(demo.url)
            page.wait_for_url(re.compile(r".*/login$"))  # the session is gone
        finally:
            browser.close()


def test_an_agent_sees_the_caller_pop_up_as_their_phone_rings(demo: Demo) -> None:
    sync_playwright = browser_or_skip()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 800})
            page.goto(demo.url + "login")
            page.fill("#username", "agent1")
            page.fill("#password", demo.password)
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/agent$"))  # agents land in their own view
            assert page.locator("h2").first.text_content() == "我的话机"
            assert page.text_content("#my-interface") == "PJSIP/agent1"
            page.wait_for_selector("#popup:not([hidden])", timeout=40_000)
            caller = page.text_content("#popup-caller") or ""
            assert re.fullmatch(r"138000[0-9]{2}", caller), caller
            # A replay has no FastAGI routing, so no ticket is chosen before the answer: the
            # pop-up says so (on the real bed, routing names it as the phone rings).
            assert page.text_content("#popup-ticket") == "尚无工单"
            assert page.locator("#ticket-form").is_hidden()
            page.screenshot(path=str(SCREENSHOTS / "agent-popup-zh.png"), full_page=True)
        finally:
            browser.close()
