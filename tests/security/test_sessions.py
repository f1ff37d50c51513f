"""Cookies that should be dead: a removed user, a changed password, a logout and a restart.

The changes are made the way an operator makes them, with ``hotline users`` in another process;
a stolen cookie is replayed from a client of its own, as an attacker who copied it would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.conftest import (
    AGENT,
    AGENT2,
    SUPERVISOR,
    Hotline,
    log_in,
    running_hotline,
    session_cookie,
    start_hotline,
    web_client,
)

pytestmark = pytest.mark.security


async def replay_cookie(hotline: Hotline, cookie: str, address: str = "127.0.7.9") -> int:
    """``GET /api/v1/session`` with a copied cookie, from a client that never logged in."""
    async with (
        web_client(address) as thief,
        thief.get(
            hotline.url("/api/v1/session"), headers={"Cookie": f"hotline_session={cookie}"}
        ) as response,
    ):
        return response.status


async def test_removing_a_user_ends_their_session_at_once(hotline: Hotline) -> None:
    async with web_client("127.0.7.1") as client:
        await log_in(client, hotline, AGENT)
        cookie = session_cookie(client)
        assert await replay_cookie(hotline, cookie) == 200
        removed = hotline.cli("users", "remove", AGENT.username)
        assert removed.returncode == 0, removed.stderr
        async with client.get(hotline.url("/api/v1/tickets")) as response:
            own_client = response.status
    after = await replay_cookie(hotline, cookie)
    print(f"\nafter 'users remove': the agent's own request {own_client}, copied cookie {after}")
    assert own_client == 401 and after == 401


async def test_a_new_password_ends_the_old_session(hotline: Hotline) -> None:
    new_password = "a new password for the supervisor"
    async with web_client("127.0.7.2") as client:
        await log_in(client, hotline, SUPERVISOR)
        cookie = session_cookie(client)
        assert await replay_cookie(hotline, cookie) == 200
        changed = hotline.cli(
            "users", "add", SUPERVISOR.username, "--role", "supervisor", "--password-stdin",
            stdin=new_password + "\n",
        )  # fmt: skip
        assert changed.returncode == 0, changed.stderr
    after = await replay_cookie(hotline, cookie)
    async with web_client("127.0.7.3") as client:
        old = {"username": SUPERVISOR.username, "password": SUPERVISOR.password}
        async with client.post(hotline.url("/api/v1/login"), json=old) as response:
            old_password = response.status
        new = {"username": SUPERVISOR.username, "password": new_password}
        async with client.post(hotline.url("/api/v1/login"), json=new) as response:
            new_password_status = response.status
    print(
        f"\nafter a new password: old cookie {after}, old password {old_password}, "
        f"new password {new_password_status}"
    )
    assert after == 401
    assert old_password == 401 and new_password_status == 200


async def test_a_logged_out_cookie_stays_dead_across_a_restart(tmp_path: Path) -> None:
    """Two sessions of one agent; one logs out. After a restart with the same secret and
    database the other still works (so the cookie format is read), the logged-out one not."""
    with running_hotline(tmp_path) as first:
        async with web_client("127.0.7.4") as leaving, web_client("127.0.7.5") as staying:
            csrf = await log_in(leaving, first, AGENT2)
            await log_in(staying, first, AGENT2)
            logged_out, kept = session_cookie(leaving), session_cookie(staying)
            async with leaving.post(
                first.url("/api/v1/logout"), headers={"X-CSRF-Token": csrf}
            ) as response:
                assert response.status == 200
        before_restart = await replay_cookie(first, logged_out)
        env = first.env
    second = start_hotline(tmp_path, env=env)
    try:
        after_restart = await replay_cookie(second, logged_out)
        kept_after_restart = await replay_cookie(second, kept)
    finally:
        second.stop()
    print(
        f"\nlogged-out cookie: {before_restart} before the restart, {after_restart} after; "
        f"the other session after the restart: {kept_after_restart}"
    )
    assert before_restart == 401 and after_restart == 401
    assert kept_after_restart == 200
