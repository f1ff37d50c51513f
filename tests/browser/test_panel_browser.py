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
import sqlite3
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
    database: Path


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
        yield Demo(*match.groups(), database=tmp_path / "hotline.db")
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
            # The board lists agents as the session's events name them: all three by its end.
            for _ in range(200):
                if page.locator("#agents tr").count() == 3:
                    break
                page.wait_for_timeout(200)
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

            # agent1 may also sit at agent2's desk: they pick it, and the view follows.
            page.select_option("#phone-select", "PJSIP/agent2")
            for _ in range(50):  # (the page's CSP forbids Playwright's string predicates)
                if page.text_content("#my-interface") == "PJSIP/agent2":
                    break
                page.wait_for_timeout(100)
            assert page.text_content("#my-interface") == "PJSIP/agent2"
            page.reload()
            assert page.text_content("#my-interface") == "PJSIP/agent2"  # the session moved
        finally:
            browser.close()


HOSTILE_NAME = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def test_a_hostile_caller_name_shows_as_text(demo: Demo) -> None:
    """A caller ID is whatever the caller's network sends; on the page it is only ever text."""
    sync_playwright = browser_or_skip()
    now = "2026-11-25T02:58:00+00:00"
    with sqlite3.connect(demo.database) as db:
        db.execute(
            "INSERT INTO tickets (number, caller_number, caller_name, category, description,"
            " status, emergency, opened_at, updated_at) VALUES"
            " ('12345-20261125-099999', '13900000000', ?, ?, '', 'new', 0, ?, ?)",
            (HOSTILE_NAME, HOSTILE_NAME, now, now),
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(locale="en-US")
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(demo.url + "login")
            page.fill("#username", demo.user)
            page.fill("#password", demo.password)
            page.click("button[type=submit]")
            page.wait_for_url(demo.url)
            page.goto(demo.url + "tickets?ticket=12345-20261125-099999")
            page.wait_for_selector("#detail:not([hidden])")
            row = page.locator('tr[data-ticket="12345-20261125-099999"]')
            assert HOSTILE_NAME in (row.text_content() or "")
            assert HOSTILE_NAME in (page.text_content("#detail-fields") or "")
            assert page.locator("#ticket-rows img, #ticket-rows script, #detail img").count() == 0
            page.wait_for_timeout(500)
            assert dialogs == []
            page.screenshot(path=str(SCREENSHOTS / "tickets-hostile-name.png"), full_page=True)
        finally:
            browser.close()


def test_the_panel_says_plainly_when_the_pbx_is_down(tmp_path: Path) -> None:
    sync_playwright = browser_or_skip()
    env = hotline_env(
        tmp_path,
        HOTLINE_AMI_SECRET="x",
        HOTLINE_AMI_PORT=str(free_port()),  # nothing listens there
        HOTLINE_ADMIN_USER="chief",
        HOTLINE_ADMIN_PASSWORD="browser test password",
    )
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "hotline.cli", "run"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{env['HOTLINE_WEB_PORT']}/"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page(locale="en-US")
                for _ in range(100):  # the bridge starts
                    try:
                        page.goto(url + "login")
                        break
                    except Exception:
                        time.sleep(0.2)
                page.fill("#username", "chief")
                page.fill("#password", "browser test password")
                page.click("button[type=submit]")
                page.wait_for_url(url)
                page.wait_for_selector("#pbx-banner:not([hidden])", timeout=20_000)
                banner = page.text_content("#pbx-banner") or ""
                assert banner.startswith("PBX connection down since") and "?" not in banner
                page.screenshot(path=str(SCREENSHOTS / "panel-pbx-down.png"), full_page=True)
            finally:
                browser.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, (tmp_path / "run.log").read_text()
        log.close()
