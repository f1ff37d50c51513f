"""One hotline over two real Asterisks and three bridge processes, on PostgreSQL and Redis.

While SIPp citizens call both PBXs, the bridge that owns them is killed (``kill -9``), and later
the next owner is frozen (``SIGSTOP``). Each time another process must take both PBXs over
within 10 s. At the end the journal holds exactly the queue calls of both queue_logs (none
lost, none twice), the panel's figures equal what the two Asterisks counted, and every caller
reached a person.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.health import MONITOR_ENV
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
from tests.recorder.testbed import Phones, Sandbox, SippProcess

pytestmark = pytest.mark.integration

AGI_PORTS = (4573, 4574, 4575)
REDIS_DB = 11  # the test's own Redis database: emptied before and after
TAKEOVER_LIMIT = 10.0
ROUNDS, ROUND_SECONDS, TALK_SECONDS = 18, 2.0, 2.0


@pytest.fixture
async def hotline(asterisk: Sandbox, asterisk_b: Sandbox, tmp_path: Path) -> AsyncIterator[Hotline]:
    pbxs = [pbx_entry(pbx) for pbx in (asterisk, asterisk_b)]
    async with hotline_over(pbxs, tmp_path, redis_db=REDIS_DB, agi_ports=AGI_PORTS) as hotline:
        yield hotline


def queue_log_calls(pbx: Sandbox, offset: int) -> dict[str, list[str]]:
    """Each queue call of ``pbx`` since ``offset``: its uniqueid and its queue_log verbs."""
    calls: dict[str, list[str]] = {}
    for line in pbx.queue_log_since(offset).decode(errors="replace").splitlines():
        fields = line.split("|")
        if len(fields) > 4 and fields[2] == "hotline":
            calls.setdefault(fields[1], []).append(fields[4])
    return {uniqueid: verbs for uniqueid, verbs in calls.items() if "ENTERQUEUE" in verbs}


async def take_over_time(hotline: Hotline, gone: Bridge, since: float) -> float:
    """Seconds from ``since`` until another bridge owns both PBXs and is logged in to both."""

    def taken() -> bool:
        return all(
            (owner := hotline.owner_of(pbx)) is not None and owner is not gone
            for pbx in PBX_NAMES.values()
        )

    await wait_for(taken, 20, f"both PBXs taken over from bridge {gone.number}", hotline)
    return time.monotonic() - since


async def test_two_pbxs_stay_counted_through_a_killed_and_a_frozen_owner(
    asterisk: Sandbox,
    asterisk_b: Sandbox,
    sipp_phones: Phones,
    hotline: Hotline,
    record_property: Callable[[str, object], None],
) -> None:
    for pbx in (asterisk, asterisk_b):  # two phones a PBX take calls; the others never ring
        for agent in ("agent3", "agent4"):
            pbx.cli(f"queue pause member PJSIP/{agent} queue hotline reason failover-test")
        for agent in ("agent1", "agent2"):
            sipp_phones.start_agent(agent, instance=pbx.instance)

    first = hotline.start(1)
    await wait_for(
        lambda: all(first.owns(pbx) for pbx in PBX_NAMES.values()),
        20,
        "bridge 1 owning both PBXs",
        hotline,
    )
    hotline.start(2)
    hotline.start(3)
    # The PBXs spread over the processes: bridge 1 gives one up for a process with none.
    await wait_for(
        lambda: hotline.spread_over() == 2,
        20,
        "the two PBXs followed by two processes",
        hotline,
    )
    offsets = {pbx.instance: pbx.queue_log_size() for pbx in (asterisk, asterisk_b)}

    calls: list[SippProcess] = []
    takeovers: dict[str, float] = {}
    killed: list[Bridge] = []

    async def traffic() -> None:
        for round_number in range(ROUNDS):
            for pbx, digit in ((asterisk, "1"), (asterisk_b, "2")):
                caller = f"139{digit}{round_number:07d}"
                calls.append(
                    sipp_phones.call(caller, f"Citizen {caller[-3:]}", TALK_SECONDS,
                                     instance=pbx.instance)
                )  # fmt: skip
            await asyncio.sleep(ROUND_SECONDS)

    async def faults() -> None:
        await asyncio.sleep(8)
        owner = hotline.owner_of("west")
        assert owner is not None, hotline.logs()
        killed.append(owner)
        killed_at = time.monotonic()
        owner.process.send_signal(signal.SIGKILL)
        takeovers["kill -9"] = await take_over_time(hotline, owner, killed_at)
        await asyncio.sleep(6)
        frozen = hotline.owner_of("west")
        assert frozen is not None and frozen is not owner, hotline.logs()
        stopped_at = time.monotonic()
        frozen.process.send_signal(signal.SIGSTOP)
        try:
            takeovers["SIGSTOP"] = await take_over_time(hotline, frozen, stopped_at)
            await asyncio.sleep(4)
        finally:
            frozen.process.send_signal(signal.SIGCONT)
        # Awake again, it finds its leases gone and follows neither PBX any more.
        await wait_for(
            lambda: (
                not any(
                    frozen.health().get("pbxs", {}).get(pbx, {}).get("owner")
                    for pbx in PBX_NAMES.values()
                )
            ),
            10,
            "the thawed bridge giving its PBXs up",
            hotline,
        )

    with every_bridge_routes(AGI_PORTS, asterisk, asterisk_b):
        await asyncio.gather(traffic(), faults())
        for call in calls:
            assert await call.wait_async(timeout=60) == 0, call.diagnostics()

    record_property("takeover_seconds", takeovers)
    print(f"takeover times: {takeovers}")
    assert set(takeovers) == {"kill -9", "SIGSTOP"}
    assert all(seconds < TAKEOVER_LIMIT for seconds in takeovers.values()), takeovers

    # Every call reached a person: each one of both queue_logs was answered.
    expected: dict[str, list[str]] = {}
    for pbx in (asterisk, asterisk_b):
        for uniqueid, verbs in queue_log_calls(pbx, offsets[pbx.instance]).items():
            expected[f"{PBX_NAMES[pbx.instance]}/{uniqueid}"] = verbs
    assert len(expected) == 2 * ROUNDS
    unanswered = {u: v for u, v in expected.items() if "CONNECT" not in v}
    assert not unanswered, unanswered

    # The journal is the union of both queue_logs: 0 lost, 0 doubled.
    async def journal() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(hotline.database.replace("+asyncpg", ""))
        try:
            return await connection.fetch(
                "SELECT uniqueid, caller_number, outcome FROM calls WHERE queue IS NOT NULL"
            )
        finally:
            await connection.close()

    rows: list[asyncpg.Record] = []
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        rows = await journal()
        if {row["uniqueid"] for row in rows} == set(expected):
            break
        await asyncio.sleep(1)
    journalled = sorted(row["uniqueid"] for row in rows)
    assert sorted(set(journalled)) == sorted(expected), (
        f"missing {set(expected) - set(journalled)}, extra {set(journalled) - set(expected)}\n"
        + hotline.logs()
    )
    assert len(journalled) == len(expected)
    assert len({row["caller_number"] for row in rows}) == len(rows)
    assert {row["outcome"] for row in rows} == {"answered"}

    # The panel's figures (any live bridge's merged view) equal what the Asterisks counted.
    survivor = next(b for b in hotline.bridges if b.process.poll() is None)
    assert killed and killed[0].process.poll() is not None
    per_pbx = {
        name: sum(1 for u in expected if u.startswith(name + "/")) for name in PBX_NAMES.values()
    }

    def figures_settled(bridge: Bridge = survivor) -> dict[str, Any] | None:
        hotline_queue = stats_of(bridge)["queues"].get("hotline", {})
        by_pbx = hotline_queue.get("by_pbx", {})
        settled = hotline_queue.get("offered") == len(expected) and all(
            by_pbx.get(name, {}).get("offered") == count for name, count in per_pbx.items()
        )
        return hotline_queue if settled else None

    try:
        figures = await wait_for(figures_settled, 45, "the panel's figures", hotline)
    except AssertionError:
        print(json.dumps(stats_of(survivor)["queues"], indent=1))
        raise
    assert figures["answered"] == len(expected)
    assert figures["abandoned"] == figures["timed_out"] == 0
    assert figures["answer_rate"] == 1.0
    for name, count in per_pbx.items():
        assert figures["by_pbx"][name]["answered"] == count
    pbx_states = stats_of(survivor)["pbxs"]
    assert {name: state["up"] for name, state in pbx_states.items()} == {
        "west": True,
        "east": True,
    }
    journal_health = [b.health().get("calls_stream", {}) for b in hotline.bridges
                      if b.process.poll() is None]  # fmt: skip
    record_property("calls_stream", journal_health)

    # The web side keeps no state: a login made on one process opens the live panel on another
    # (cookies know no port, as behind a load balancer), with the same merged figures.
    live = [b for b in hotline.bridges if b.process.poll() is None]
    assert len(live) == 2
    # Each process merges on its own half-second beat: the other one may be a beat behind.
    await wait_for(lambda: figures_settled(live[1]), 10, "the other process's figures", hotline)
    jar = aiohttp.CookieJar(unsafe=True)
    login = {"username": MONITOR_ENV["HOTLINE_ADMIN_USER"],
             "password": MONITOR_ENV["HOTLINE_ADMIN_PASSWORD"]}  # fmt: skip
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        one, other = (f"http://127.0.0.1:{b.web_port}" for b in live)
        async with browser.post(f"{one}/api/v1/login", json=login) as response:
            assert response.status == 200, await response.text()
        async with browser.ws_connect(f"{other}/api/v1/live") as socket:
            snapshot = await socket.receive_json(timeout=10)
    assert snapshot["type"] == "snapshot"
    assert snapshot["queues"]["hotline"]["offered"] == len(expected)
    assert {name: state["up"] for name, state in snapshot["pbxs"].items()} == {
        "west": True,
        "east": True,
    }
