"""Password guessing: bursts, HTTP Basic, and a stranger trying to lock the supervisor out.

The throttle allows 5 failures per address and name in 5 minutes; blocked attempts are refused
(429) before their password is looked at. Each test guesses from addresses of its own.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.security.conftest import (
    AGENT,
    AGENT2,
    SUPERVISOR,
    Hotline,
    basic_authorization,
    web_client,
)

pytestmark = pytest.mark.security

PER_PAIR = 5
BURST = 100
ATTACKER_TRIES = 30
REAL_LOGIN_SECONDS = 2.5


async def try_login(
    client: aiohttp.ClientSession, hotline: Hotline, name: str, password: str
) -> int:
    body = {"username": name, "password": password}
    async with client.post(hotline.url("/api/v1/login"), json=body) as response:
        if response.status == 429:
            assert int(response.headers["Retry-After"]) >= 1
        await response.read()
        return response.status


async def test_a_burst_of_guesses_for_one_name_gets_five_tries(hotline: Hotline) -> None:
    """100 different passwords for agent1 at once, from one address (40 connections, under
    its cap): at most 5 are checked (401); the rest are refused unchecked (429)."""
    async with web_client("127.0.6.1", limit=40) as client:
        statuses = await asyncio.gather(
            *(try_login(client, hotline, AGENT.username, f"guess {n}") for n in range(BURST))
        )
    counts = {status: statuses.count(status) for status in set(statuses)}
    print(f"\n{BURST} simultaneous wrong logins for one name: {counts}")
    assert set(statuses) <= {401, 429}, counts
    assert counts.get(401, 0) <= PER_PAIR
    assert counts.get(429, 0) >= BURST - PER_PAIR


async def test_http_basic_guesses_are_throttled_and_logged(hotline: Hotline) -> None:
    """Scripts' HTTP Basic goes through the same throttle as the login form, and is logged."""
    statuses = []
    async with web_client("127.0.6.2") as client:
        for n in range(10):
            guess = {"Authorization": basic_authorization(AGENT2.username, f"guess {n}")}
            async with client.get(hotline.url("/api/v1/session"), headers=guess) as response:
                statuses.append(response.status)
    print(f"\n10 wrong HTTP Basic logins in a row: {statuses}")
    assert statuses == [401] * PER_PAIR + [429] * (10 - PER_PAIR)
    assert f"failed HTTP Basic login for '{AGENT2.username}' from 127.0.6.2" in hotline.log()


async def test_a_stranger_cannot_lock_the_supervisor_out(hotline: Hotline) -> None:
    """30 failures for the supervisor's name from an attacker's address block that address
    only: the supervisor, at their own desk, logs in at once."""
    async with web_client("127.0.6.3") as attacker:
        statuses = [
            await try_login(attacker, hotline, SUPERVISOR.username, f"attack {n}")
            for n in range(ATTACKER_TRIES)
        ]
        # The right password does not get through either: the pair is blocked, not checked.
        right_from_attacker = await try_login(
            attacker, hotline, SUPERVISOR.username, SUPERVISOR.password
        )
    started = time.monotonic()
    async with web_client("127.0.6.4") as desk:
        real = await try_login(desk, hotline, SUPERVISOR.username, SUPERVISOR.password)
    seconds = time.monotonic() - started
    counts = {status: statuses.count(status) for status in set(statuses)}
    print(
        f"\n{ATTACKER_TRIES} wrong logins for {SUPERVISOR.username} from the attacker: {counts};"
        f" right password from there: {right_from_attacker}; from the desk: {real} in "
        f"{seconds:.2f} s"
    )
    assert statuses == [401] * PER_PAIR + [429] * (ATTACKER_TRIES - PER_PAIR)
    assert right_from_attacker == 429
    assert real == 200
    assert seconds < REAL_LOGIN_SECONDS
