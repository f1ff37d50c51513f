"""Smaller holes: half-applied edits, a chatty /healthz, terminal escapes from a caller's name,
and ``hotline demo`` resetting a password someone already uses."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.security.conftest import (
    SUPERVISOR,
    Hotline,
    assert_refusal,
    fresh_caller,
    hotline_env,
    log_in,
    new_ticket,
    read_database,
    run_cli,
    web_client,
)

pytestmark = pytest.mark.security

HOSTILE_NAME = "\x1b[31mEvil\x1b[0m Caller"
DEMO_OLD_PASSWORD = "the demo password in use"


async def test_an_impossible_status_changes_no_field_either(hotline: Hotline) -> None:
    """A good category with a status the ticket cannot take: 400, and the category stays."""
    number = await new_ticket(hotline, fresh_caller())
    url = hotline.url(f"/api/v1/tickets/{number}")
    async with web_client("127.0.10.1") as client:
        csrf = await log_in(client, hotline, SUPERVISOR)
        async with client.get(url) as response:
            before = await response.json()
        async with client.patch(
            url, json={"category": "water supply", "status": "closed"},
            headers={"X-CSRF-Token": csrf},
        ) as response:  # fmt: skip
            status, body = response.status, await response.read()
        async with client.get(url) as response:
            after = await response.json()
    print(f"\nnew -> closed, and a category: {status} {body.decode()}; {after['category']=!r}")
    assert status == 400
    assert_refusal(status, body)
    assert after == before


def leaves(report: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) at the ends of a JSON document."""
    if isinstance(report, dict):
        return [pair for key, value in report.items() for pair in leaves(value, f"{path}/{key}")]
    if isinstance(report, list):
        return [pair for n, value in enumerate(report) for pair in leaves(value, f"{path}/{n}")]
    return [(path, report)]


async def test_anonymous_healthz_says_only_what_is_up(hotline: Hotline) -> None:
    """No paths, error texts, ports, pids or counters for whoever asks without a login (a wrong
    Basic password counts as no login)."""
    answers = []
    async with web_client("127.0.10.2") as client:
        for headers in ({}, {"Authorization": "Basic bm9ib2R5Om5vdGhpbmc="}):
            async with client.get(hotline.url("/healthz"), headers=headers) as response:
                answers.append((response.status, await response.json()))
    for status, report in answers:
        values = leaves(report)
        print(f"\nanonymous /healthz: {status} {report}")
        assert status == 200
        assert all(
            path == "/ok" or (path.count("/") == 2 and path.endswith("/up")) for path, _ in values
        ), values
        assert all(isinstance(value, bool) for _, value in values), values
        assert set(report) == {"ok", "ami", "database", "bus", "agi"}
    assert len(leaves(hotline.health())) > 20  # the same process, logged in: the whole report


async def test_a_hostile_caller_name_reaches_the_terminal_escaped(hotline: Hotline) -> None:
    """A caller ID name holding ANSI escapes, routed over FastAGI, then listed and shown by an
    operator: the ESC byte is printed as visible text, never raw."""
    number = await new_ticket(hotline, fresh_caller(), caller_name=HOSTILE_NAME)
    outputs = {
        "tickets list": hotline.cli("tickets", "list"),
        "tickets list --json": hotline.cli("tickets", "list", "--json"),
        "tickets show": hotline.cli("tickets", "show", number),
        "tickets show --json": hotline.cli("tickets", "show", number, "--json"),
    }
    for name, result in outputs.items():
        assert result.returncode == 0, (name, result.stderr)
        assert "\x1b" not in result.stdout and "\x1b" not in result.stderr, name
    assert number in outputs["tickets list"].stdout
    assert "\\x1b[31mEvil\\x1b[0m Caller" in outputs["tickets show"].stdout
    for name in ("tickets list --json", "tickets show --json"):
        assert "\\u001b[31mEvil\\u001b[0m Caller" in outputs[name].stdout, name
    shown = next(line for line in outputs["tickets show"].stdout.splitlines() if "Evil" in line)
    print(f"\ntickets show prints the name as: {shown!r}")


async def test_hotline_demo_keeps_a_password_in_use(tmp_path: Path) -> None:
    """``hotline demo`` on a database where ``demo`` already has a password: it says so, the
    old password still logs in, and the stored hash is the same after it stops."""
    env = hotline_env(tmp_path)
    added = run_cli(
        tmp_path, env, "users", "add", "demo", "--role", "supervisor", "--password-stdin",
        stdin=DEMO_OLD_PASSWORD + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    database = tmp_path / "hotline.db"
    stored_hash = "SELECT password_hash FROM users WHERE username = 'demo'"
    hash_before = read_database(database, stored_hash)
    log = (tmp_path / "demo.log").open("wb")
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline.cli", "demo", "--speed", "0",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=log,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        first_line = (await asyncio.wait_for(demo.stdout.readline(), 40)).decode()
        login_status = await demo_login(int(env["HOTLINE_WEB_PORT"]), DEMO_OLD_PASSWORD)
    finally:
        demo.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(demo.wait(), 30)
        log.close()
    hash_after = read_database(database, stored_hash)
    print(f"\nhotline demo said: {first_line.strip()!r}; old password: {login_status}")
    assert code == 0, (tmp_path / "demo.log").read_text()[-3000:]
    assert "with the password it already has" in first_line
    assert login_status == 200
    assert hash_after == hash_before


async def demo_login(web_port: int, password: str) -> int:
    """Log in as ``demo`` once the demo's web port answers (30 s at most)."""
    base = f"http://127.0.0.1:{web_port}"
    async with web_client("127.0.10.3") as client:
        for _ in range(150):
            with contextlib.suppress(aiohttp.ClientError):
                async with client.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        break
            await asyncio.sleep(0.2)
        body = {"username": "demo", "password": password}
        async with client.post(f"{base}/api/v1/login", json=body) as response:
            return response.status
