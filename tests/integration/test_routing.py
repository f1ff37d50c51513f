"""Routing without menus on the real Asterisk 22 test bed (issue: FastAGI routing and tickets).

Each test runs the real processes an operator runs: ``hotline run`` (AMI, journal, tickets, and
FastAGI unless ``hotline agi`` serves it apart) against the sandboxed Asterisk, with SIPp playing
citizens and agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path

import pytest
import redis
from aiohttp import web

from tests.conftest import free_port, need_service
from tests.integration.bridge import (
    RunningBridge,
    hotline_command,
    start_bridge,
    start_router,
)
from tickets.webhook import signature

pytestmark = pytest.mark.integration

REDIS_DB = 6
WEBHOOK_SECRET = "help-desk-test-secret"
CALLER = "13800138000"


async def routing_reason(ami, channel: str) -> str:  # type: ignore[no-untyped-def]
    answer = await ami.action("Getvar", Channel=channel, Variable="HOTLINE_REASON")
    return answer.get("Value", "")


async def route_twice(bridge: RunningBridge, ami, place_citizen_call) -> None:  # type: ignore[no-untyped-def]
    # First call: a new caller, the default queue, a new ticket signed by whoever answers.
    first = place_citizen_call(CALLER, talk_seconds=5, name="张三")
    connect = await ami.wait_for("AgentConnect", timeout=20, CallerIDNum=CALLER)
    owner = connect["Interface"]
    assert await first.wait_async(timeout=60) == 0, first.diagnostics()
    row = bridge.call_row(CALLER)
    assert row["routing_reason"] == "default" and row["ticket"]
    ticket = bridge.ticket(row["ticket"])
    assert (ticket["status"], ticket["owner_agent"]) == ("signed", owner)
    assert ticket["caller_number"] == CALLER and ticket["caller_name"] == "张三"

    # The round robin would now offer the other agent; the ticket's owner is rung alone instead.
    await asyncio.sleep(3)  # the owner's wrap-up
    since = ami.mark()
    second = place_citizen_call(f"+86{CALLER}", talk_seconds=5)
    dial = await ami.wait_for("DialBegin", timeout=20, since=since, CallerIDNum=f"+86{CALLER}")
    assert dial["DestChannel"].startswith(owner + "-")
    answered = await ami.wait_for("DialEnd", timeout=20, since=since, DialStatus="ANSWER")
    assert answered["DestChannel"].startswith(owner + "-")
    assert await routing_reason(ami, answered["Channel"]) == "ticket-owner"
    assert await second.wait_async(timeout=60) == 0, second.diagnostics()
    assert not ami.find("QueueCallerJoin", since=since)  # never waited in a queue
    rows = bridge.wait_for_rows(
        "SELECT * FROM calls WHERE ticket = ? ORDER BY started_at", row["ticket"], count=2
    )
    assert [(r["outcome"], r["agent_interface"]) for r in rows] == [
        ("answered", owner),
        ("answered", owner),
    ]
    assert bridge.rows("SELECT COUNT(*) AS n FROM tickets")[0]["n"] == 1


async def test_a_caller_routed_twice_reaches_the_owner_of_their_ticket(
    asterisk,
    tmp_path: Path,
    sipp_agents,
    place_citizen_call,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    """Also: a help desk's webhook hears newCall, answer and hangup of both calls, signed."""
    received: list[dict] = []
    all_six = asyncio.Event()

    async def help_desk(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers["X-Hotline-Signature"] != signature(body, WEBHOOK_SECRET):
            return web.Response(status=401)
        received.append(json.loads(body))
        if len(received) == 6:
            all_six.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/cti", help_desk)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    asterisk.cli("queue pause member PJSIP/agent3 queue hotline reason test")
    bridge = start_bridge(
        asterisk,
        tmp_path,
        HOTLINE_WEBHOOK_URL=f"http://127.0.0.1:{port}/cti",
        HOTLINE_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    try:
        async with ami_events(asterisk.ami_probe_username, asterisk.ami_probe_secret) as ami:
            await route_twice(bridge, ami, place_citizen_call)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_six.wait(), 10)
    finally:
        assert bridge.stop() == 0, bridge.log_tail()
        await runner.cleanup()
    assert [event["event"] for event in received] == ["newCall", "answer", "hangup"] * 2
    [ticket] = {event["ticket"] for event in received if event["event"] != "newCall"}
    assert ticket and all(event["from"].endswith(CALLER) for event in received)
    assert {event["cause"] for event in received if event["event"] == "hangup"} == {
        "normalClearing"
    }


async def test_hotline_agi_in_its_own_process_routes_with_the_bridge_signing_tickets(
    asterisk,
    tmp_path: Path,
    sipp_agents,
    place_citizen_call,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    """``hotline agi`` decides; ``hotline run`` learns the ticket from AMI's ``ChanVariable`` and
    shares the agents' states through the snapshot in Redis."""
    need_service("Redis", "127.0.0.1", 6379)
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    redis_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    asterisk.cli("queue pause member PJSIP/agent3 queue hotline reason test")
    bridge = start_bridge(asterisk, tmp_path, serve_agi=False, HOTLINE_REDIS_URL=redis_url)
    router = start_router(tmp_path, bridge.database, HOTLINE_REDIS_URL=redis_url)
    try:
        async with ami_events(asterisk.ami_probe_username, asterisk.ami_probe_secret) as ami:
            await route_twice(bridge, ami, place_citizen_call)
    finally:
        assert router.stop() == 0, router.log_tail()
        assert bridge.stop() == 0, bridge.log_tail()
    assert "routed" in router.log_path.read_text()


async def test_an_enterprise_caller_is_served_ahead_of_waiting_citizens(
    asterisk,
    tmp_path: Path,
    sipp_agents,
    place_citizen_call,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    database = tmp_path / "journal.db"
    assert "2165432100" in hotline_command(
        database, "enterprise", "add", "021-6543 2100", "上海电力"
    )
    bridge = start_bridge(asterisk, tmp_path)
    try:
        for agent in ("agent1", "agent2", "agent3"):
            asterisk.cli(f"queue pause member PJSIP/{agent}")  # in every queue
        async with ami_events(asterisk.ami_probe_username, asterisk.ami_probe_secret) as ami:
            citizens = [place_citizen_call(f"1391111000{n}", talk_seconds=25) for n in (1, 2)]
            for n in (1, 2):
                await ami.wait_for("QueueCallerJoin", timeout=20, CallerIDNum=f"1391111000{n}")
            enterprise = place_citizen_call("02165432100", talk_seconds=25, name="上海电力")
            joined = await ami.wait_for("QueueCallerJoin", timeout=20, CallerIDNum="02165432100")
            assert joined["Queue"] == "enterprise"
            assert await routing_reason(ami, joined["Channel"]) == "enterprise"
            asterisk.cli("queue unpause member PJSIP/agent1")
            first = await ami.wait_for("AgentConnect", timeout=20)
            assert (first["CallerIDNum"], first["Queue"]) == ("02165432100", "enterprise")
            asterisk.cli("channel request hangup all")
            for call in (enterprise, *citizens):
                await call.wait_async(timeout=30)
        row = bridge.call_row("02165432100")
        assert (row["queue"], row["routing_reason"], row["outcome"]) == (
            "enterprise",
            "enterprise",
            "answered",
        )
        for n in (1, 2):
            waited = bridge.call_row(f"1391111000{n}")
            assert waited["queue"] == "hotline" and waited["agent_interface"] is None
    finally:
        assert bridge.stop() == 0, bridge.log_tail()


@pytest.mark.parametrize("fault", ["killed", "frozen"])
async def test_a_dead_or_frozen_router_never_keeps_a_caller_from_a_person(
    asterisk,
    tmp_path: Path,
    sipp_agents,
    place_citizen_call,
    ami_events,
    fault: str,  # type: ignore[no-untyped-def]
) -> None:
    """Frozen is the dangerous case: the kernel still accepts the connection for a stopped
    process, so Asterisk would wait forever; the dialplan's guard sends the call on."""
    asterisk.cli("queue pause member PJSIP/agent3 queue hotline reason test")
    router = start_router(tmp_path, tmp_path / "journal.db")
    if fault == "killed":
        router.process.kill()
        router.process.wait(timeout=10)
    else:
        router.process.send_signal(signal.SIGSTOP)
    try:
        async with ami_events(asterisk.ami_probe_username, asterisk.ami_probe_secret) as ami:
            started = time.monotonic()
            call = place_citizen_call("13700137000", talk_seconds=5)
            connect = await ami.wait_for("AgentConnect", timeout=20, CallerIDNum="13700137000")
            waited = time.monotonic() - started
            reason = await routing_reason(ami, connect["Channel"])
            assert await call.wait_async(timeout=60) == 0, call.diagnostics()
    finally:
        router.stop()
    expected = "bridge-unavailable" if fault == "killed" else "bridge-timeout"
    assert reason == expected
    assert connect["Queue"] == "hotline"
    # The guard is 1.5 s; then the queue rings a free agent, who answers after ~0.1 s.
    assert waited < (3 if fault == "killed" else 5), waited
    print(f"\n{fault} router: an agent connected {waited:.2f} s after the call started")
