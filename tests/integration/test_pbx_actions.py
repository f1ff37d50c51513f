"""A supervisor acts on an agent of either PBX from whichever bridge process serves the panel.

Two real Asterisks (west and east) and two bridge processes, one following each PBX. The
supervisor's browser talks to one process only; the pause button and the queue buttons reach
the agent's PBX through that process's own action link, and the panel shows the result once
the owner of that PBX has seen Asterisk's events. A phone name both PBXs have must be named
with its PBX.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.health import MONITOR_AUTHORIZATION, MONITOR_ENV
from tests.integration.fleet import (
    PBX_NAMES,
    Bridge,
    Hotline,
    every_bridge_routes,
    hotline_over,
    pbx_entry,
    stats_of,
    wait_for,
)
from tests.recorder.testbed import Phones, Sandbox

pytestmark = pytest.mark.integration

AGI_PORTS = (4576, 4577)
REDIS_DB = 10  # the test's own Redis database: emptied before and after
CALLER = "13600136001"
LOGIN = {
    "username": MONITOR_ENV["HOTLINE_ADMIN_USER"],
    "password": MONITOR_ENV["HOTLINE_ADMIN_PASSWORD"],
}


@pytest.fixture
async def hotline(asterisk: Sandbox, asterisk_b: Sandbox, tmp_path: Path) -> AsyncIterator[Hotline]:
    pbxs = [pbx_entry(pbx) for pbx in (asterisk, asterisk_b)]
    async with hotline_over(pbxs, tmp_path, redis_db=REDIS_DB, agi_ports=AGI_PORTS) as hotline:
        yield hotline


class Supervisor:
    """A logged-in browser session on one bridge process, over plain HTTP."""

    def __init__(self, bridge: Bridge, client: aiohttp.ClientSession, csrf: str) -> None:
        self.bridge, self.client, self.csrf = bridge, client, csrf

    @classmethod
    async def log_in(cls, bridge: Bridge, client: aiohttp.ClientSession) -> Supervisor:
        async with client.post(f"{bridge.base}/api/v1/login", json=LOGIN) as response:
            assert response.status == 200, await response.text()
            return cls(bridge, client, (await response.json())["csrf"])

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.client.post(
            f"{self.bridge.base}{path}", json=body, headers={"X-CSRF-Token": self.csrf}
        ) as response:
            return response.status, await response.json()


def callbacks_of(bridge: Bridge, *, every: bool = False) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{bridge.web_port}/api/v1/callbacks{'?all=true' if every else ''}",
        headers={"Authorization": MONITOR_AUTHORIZATION},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
        listed: list[dict[str, Any]] = json.load(response)["callbacks"]
        return listed


async def database_rows(hotline: Hotline, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(hotline.database.replace("+asyncpg", ""))
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def member(pbx: Sandbox, interface: str) -> dict[str, Any] | None:
    return next((m for m in pbx.queue_members("hotline") if m["interface"] == interface), None)


def board_agent(bridge: Bridge, name: str) -> dict[str, Any] | None:
    agent: dict[str, Any] | None = stats_of(bridge).get("agents", {}).get(name)
    return agent


async def test_a_supervisor_on_one_process_pauses_and_moves_agents_of_the_other_pbx(
    asterisk: Sandbox, asterisk_b: Sandbox, hotline: Hotline
) -> None:
    sandboxes = {PBX_NAMES[pbx.instance]: pbx for pbx in (asterisk, asterisk_b)}
    hotline.start(1)
    hotline.start(2)
    await wait_for(lambda: hotline.spread_over() == 2, 30, "one PBX per process", hotline)
    served = hotline.bridges[0]
    [elsewhere] = [name for name in sandboxes if not served.owns(name)]  # the other one's PBX
    [here] = [name for name in sandboxes if name != elsewhere]
    # Both PBXs have a PJSIP/agent2: the board shows each with its PBX's name.
    await wait_for(
        lambda: all(board_agent(served, f"{name}/PJSIP/agent2") for name in sandboxes),
        20,
        "both PBXs' agents on the served process's board",
        hotline,
    )

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        supervisor = await Supervisor.log_in(served, client)

        status, said = await supervisor.post(
            "/api/v1/agent/pause", {"agent": "PJSIP/agent2", "paused": True, "reason": "lunch"}
        )
        assert status == 409, said
        assert (
            f"{elsewhere}/PJSIP/agent2" in said["error"]
            and f"{here}/PJSIP/agent2" in (said["error"])
        )

        status, said = await supervisor.post(
            "/api/v1/agent/pause",
            {"agent": f"{elsewhere}/PJSIP/agent2", "paused": True, "reason": "lunch"},
        )
        assert status == 200, said
        paused = member(sandboxes[elsewhere], "PJSIP/agent2")
        assert paused is not None and paused["paused"], paused
        untouched = member(sandboxes[here], "PJSIP/agent2")
        assert untouched is not None and not untouched["paused"], untouched
        # The owner of that PBX saw Asterisk's event; the served process's board shows it.
        shown = await wait_for(
            lambda: (a := board_agent(served, f"{elsewhere}/PJSIP/agent2")) and a["paused"] and a,
            10,
            "the pause on the board",
            hotline,
        )
        assert shown["pbx"] == elsewhere

        status, said = await supervisor.post(
            "/api/v1/agent/pause", {"agent": f"{elsewhere}/PJSIP/agent2", "paused": False}
        )
        assert status == 200, said
        back = member(sandboxes[elsewhere], "PJSIP/agent2")
        assert back is not None and not back["paused"], back

        # Queue login for a phone that is in no queue yet: named with its PBX.
        status, said = await supervisor.post(
            "/api/v1/agent/queues", {"agent": "PJSIP/agent4", "queue": "hotline", "member": True}
        )
        assert status == 409 and "name its PBX" in said["error"], said
        status, said = await supervisor.post(
            "/api/v1/agent/queues",
            {"agent": f"{elsewhere}/PJSIP/agent4", "queue": "hotline", "member": True},
        )
        assert status == 200, said
        assert member(sandboxes[elsewhere], "PJSIP/agent4") is not None
        assert member(sandboxes[here], "PJSIP/agent4") is None
        joined = await wait_for(
            lambda: board_agent(served, "PJSIP/agent4"), 10, "agent4 on the board", hotline
        )
        assert joined["pbx"] == elsewhere  # one PBX has it: the board needs no prefix
        # ... and out again, by the name the board shows.
        status, said = await supervisor.post(
            "/api/v1/agent/queues", {"agent": "PJSIP/agent4", "queue": "hotline", "member": False}
        )
        assert status == 200, said
        assert member(sandboxes[elsewhere], "PJSIP/agent4") is None

    health = served.health()
    assert set(health["action_links"]) == set(sandboxes)
    assert all(link["up"] for link in health["action_links"].values()), health["action_links"]


async def test_a_callback_is_dialled_and_recorded_by_the_agents_pbx(
    asterisk: Sandbox,
    asterisk_b: Sandbox,
    sipp_phones: Phones,
    tmp_path: Path,
) -> None:
    """A citizen nobody answered on east is called back through east's agent: the agent's
    phone on east rings, then the citizen's; the task is reached (east's owner saw it), the
    attempt is journalled under east's name, and its recording comes in from east's own spool."""
    pbxs = [
        pbx_entry(pbx, recordings_spool=str(pbx.recordings_spool)) for pbx in (asterisk, asterisk_b)
    ]
    for agent in ("agent1", "agent2", "agent3"):
        asterisk_b.cli(f"queue pause member PJSIP/{agent} queue hotline reason callback-test")
    async with hotline_over(pbxs, tmp_path, redis_db=REDIS_DB, agi_ports=AGI_PORTS) as hotline:
        served = hotline.start(1)
        hotline.start(2)
        await wait_for(lambda: hotline.spread_over() == 2, 30, "one PBX per process", hotline)
        with every_bridge_routes(AGI_PORTS, asterisk_b):
            missed = sipp_phones.call(CALLER, "周七", 3.0, instance="b")
            assert await missed.wait_async(timeout=60) == 0, missed.diagnostics()
        sipp_phones.start_agent("agent1", voice=asterisk_b.agent_voice(), instance="b")
        sipp_phones.start_citizen_phone(answer=True, hang_up_after=3)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            supervisor = await Supervisor.log_in(served, client)
            task = await wait_for(
                lambda: next(iter(callbacks_of(served)), None), 20, "the callback task", hotline
            )
            assert task["caller_number"] == CALLER
            status, said = await supervisor.post(
                f"/api/v1/callbacks/{task['id']}/dial", {"agent": "east/PJSIP/agent1"}
            )
            assert status == 200, said
            reached = await wait_for(
                lambda: next(
                    (t for t in callbacks_of(served, every=True) if t["status"] == "reached"),
                    None,
                ),
                60,
                "the callback reached",
                hotline,
            )
        assert reached["id"] == task["id"] and reached["attempts"] == 1
        rows = await database_rows(
            hotline, "SELECT uniqueid, outcome FROM calls WHERE direction = 'outbound'"
        )
        assert [row["outcome"] for row in rows] == ["reached"], rows
        uniqueid = rows[0]["uniqueid"]
        assert uniqueid.startswith("east/"), uniqueid
        recording: list[asyncpg.Record] = []
        for _ in range(150):  # the owner of east ingests its spool every second
            recording = await database_rows(
                hotline, "SELECT * FROM recordings WHERE uniqueid = $1", uniqueid
            )
            if recording:
                break
            await asyncio.sleep(0.2)
        assert recording, f"no recording of {uniqueid}\n{hotline.logs()}"
        assert recording[0]["size_bytes"] > 44, recording  # more than a WAV header
        assert recording[0]["key"].startswith("east/")  # east's folder of the shared store
        assert recording[0]["ticket"] == task["ticket"]
