"""Live statistics on the real test bed: the bridge's state survives a dropped AMI session.

The bridge runs as ``hotline run`` with Redis as its bus; the test reads the full snapshot the
bridge keeps in Redis (what a late panel would get) and compares it with Asterisk's own
``QueueStatus``, after Asterisk kicked the bridge's AMI session in the middle of traffic.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import need_service
from tests.integration.bridge import RunningBridge, start_bridge

pytestmark = pytest.mark.integration

REDIS_DB = 13
SNAPSHOT_KEY = "hotline:snapshot:stats"


def bridge_sessions(asterisk) -> list[str]:  # type: ignore[no-untyped-def]
    """File descriptors of the AMI sessions of the bridge's account (``manager show connected``)."""
    output = asterisk.cli("manager show connected")
    return [
        match.group(1)
        for line in output.splitlines()
        if (match := re.match(rf"\s*{asterisk.ami_username}\s+\S+\s+\d+\s+\d+\s+(\d+)", line))
    ]


async def wait_until(check, timeout: float, what: str, bridge: RunningBridge):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; bridge log:\n{bridge.log_tail()}")


async def queue_status(ami) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    _, events = await ami.action_list("QueueStatus", Queue="hotline")
    params = next(e for e in events if e.get("Event") == "QueueParams")
    members = {e["Location"]: e for e in events if e.get("Event") == "QueueMember"}
    return params, members


async def test_after_a_kicked_ami_session_the_live_state_equals_queue_status(
    asterisk,
    tmp_path: Path,
    sipp_agents,
    place_citizen_call,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    store = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, decode_responses=True)
    store.flushdb()
    running: RunningBridge = start_bridge(
        asterisk,
        tmp_path,
        HOTLINE_REDIS_URL=f"redis://127.0.0.1:6379/{REDIS_DB}",
        HOTLINE_AMI_MAX_BACKOFF="2",
    )
    try:
        asterisk.cli("queue pause member PJSIP/agent3 queue hotline reason test")
        # The test watches through the test-only account, so the bridge's session is the only
        # one of the bridge's account and the one to kick.
        async with ami_events(asterisk.ami_probe_username, asterisk.ami_probe_secret) as ami:
            # Two callers talk for a while, a third waits (both answering agents are busy).
            talking = [place_citizen_call(f"1380000{n:04d}", talk_seconds=25) for n in (1, 2)]
            for n in (1, 2):
                await ami.wait_for("AgentConnect", timeout=20, CallerIDNum=f"1380000{n:04d}")
            waiting = place_citizen_call("13800000003", talk_seconds=20, name="王五")
            await ami.wait_for("QueueCallerJoin", timeout=10, CallerIDNum="13800000003")

            [session] = bridge_sessions(asterisk)
            asterisk.cli(f"manager kick session {session}")
            # While the bridge is away, a supervisor pauses agent2 with a reason.
            asterisk.cli("queue pause member PJSIP/agent2 queue hotline reason 培训")
            await wait_until(
                lambda: (
                    running.health()["ami"]["up"]
                    and running.health()["journal"].get("resyncs", 0) >= 2
                ),
                20,
                "reconnect",
                running,
            )
            assert running.health()["ami"]["reconnects"] >= 1
            await asyncio.sleep(0.5)  # one publish interval

            params, members = await queue_status(ami)
            snapshot = json.loads(store.get(SNAPSHOT_KEY))
            hotline = snapshot["queues"]["hotline"]
            assert hotline["waiting_now"] == int(params["Calls"]) == 1
            assert [w["uniqueid"] for w in snapshot["waiting"]["hotline"]] != []
            for interface, member in members.items():
                ours = snapshot["agents"][interface]
                assert ours["paused"] == (member["Paused"] == "1"), interface
                assert ours["pause_reason"] == member["PausedReason"], interface
                assert (ours["state"] == "on_call") == (member["InCall"] == "1"), interface
            assert snapshot["agents"]["PJSIP/agent2"]["pause_reason"] == "培训"
            assert snapshot["pbx"]["up"] is True

            for call in [*talking, waiting]:
                assert await call.wait_async(timeout=60) == 0, call.diagnostics()
        await wait_until(
            lambda: (
                json.loads(store.get(SNAPSHOT_KEY))["queues"]["hotline"]["offered"] == 3
                and json.loads(store.get(SNAPSHOT_KEY))["queues"]["hotline"]["waiting_now"] == 0
            ),
            15,
            "the calls to end",
            running,
        )
        final = json.loads(store.get(SNAPSHOT_KEY))["queues"]["hotline"]
        assert (final["offered"], final["answered"], final["abandoned"]) == (3, 2, 1)
        rows = [running.call_row(n) for n in ("13800000001", "13800000002", "13800000003")]
        assert [row["outcome"] for row in rows] == ["answered", "answered", "abandoned"]
    finally:
        assert running.stop() == 0, running.log_tail()
        store.flushdb()
        store.close()
