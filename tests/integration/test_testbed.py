"""The Asterisk 22 test bed and the production Asterisk configuration, end to end.

Real Asterisk (scripts/asterisk-sandbox), real SIP (SIPp citizens and agents), real
AMI (the least-privilege ``hotline`` account from asterisk-conf/manager.conf).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time

import pytest

pytestmark = pytest.mark.integration

AGI_HOST = "127.0.0.1"
AGI_PORT = 4573

# Never wanted by the bridge: dropped by read classes or eventfilter in manager.conf.
UNWANTED_EVENTS = {
    "VarSet",
    "Newexten",
    "TestEvent",
    "NewConnectedLine",
    "DialState",
    "BridgeCreate",
    "BridgeDestroy",
    "RTCPSent",
    "RTCPReceived",
    "DeviceStateChange",
}


def is_citizen(event: dict[str, str]) -> bool:
    return event.get("Channel", "").startswith("PJSIP/citizens-")


def agi_port_closed() -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((AGI_HOST, AGI_PORT)) != 0


class FakeRouteAgi:
    """Stands in for the bridge's FastAGI ``route`` service on 127.0.0.1:4573.

    Every call gets ``SET VARIABLE`` for each of ``variables``; ``requests`` keeps
    the ``agi_*`` environment Asterisk sent.
    """

    def __init__(self, variables: dict[str, str]) -> None:
        self.variables = variables
        self.requests: list[dict[str, str]] = []
        self.replies: list[str] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeRouteAgi:
        if not agi_port_closed():
            pytest.fail(f"something already listens on {AGI_HOST}:{AGI_PORT} (a running bridge?)")
        self._server = await asyncio.start_server(self._serve, AGI_HOST, AGI_PORT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env: dict[str, str] = {}
        while True:
            line = (await reader.readline()).decode("utf-8", errors="replace")
            if not line.strip():
                break
            key, _, value = line.partition(":")
            env[key.strip()] = value.strip()
        self.requests.append(env)
        for name, value in self.variables.items():
            quoted = value.replace("\\", "\\\\").replace('"', '\\"')
            writer.write(f'SET VARIABLE {name} "{quoted}"\n'.encode())
            await writer.drain()
            self.replies.append((await reader.readline()).decode().strip())
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def getvar(ami, channel: str, variable: str) -> str:
    response = await ami.action("Getvar", Channel=channel, Variable=variable)
    assert response["Response"] == "Success", response
    return response.get("Value", "")


# --------------------------------------------------------------------------- basics


def test_asterisk_version_is_22(asterisk) -> None:
    output = asterisk.cli("core show version")
    assert re.match(r"Asterisk 22\.\d+", output), output


def test_production_config_is_loaded(asterisk) -> None:
    queues = asterisk.cli("queue show")
    for queue in ("hotline", "enterprise", "emergency"):
        assert f"{queue} has 0 calls" in queues
    members = asterisk.queue_members("hotline")
    assert [m["interface"] for m in members] == ["PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3"]
    contacts = asterisk.cli("pjsip show contacts")
    for agent, port in (("agent1", 5071), ("agent4", 5074)):
        assert f"{agent}/sip:{agent}@127.0.0.1:{port}" in contacts
    assert "127.0.0.2/32" in asterisk.cli("pjsip show identify citizens")
    assert "hotline-call" in asterisk.cli("dialplan show 12345@from-citizens")
    # no module failed to load
    assert "Not Running" not in asterisk.cli("module show like .so")


# --------------------------------------------------------------------------- AMI account


async def test_ami_hotline_user_can_run_the_bridge_actions(
    asterisk, sipp_agents, ami_events
) -> None:
    async with ami_events() as ami:
        assert ami.banner.startswith("Asterisk Call Manager/")
        assert (await ami.action("Ping"))["Response"] == "Success"

        # QueueStatus: QueueParams for hotline with its three static members
        response, events = await ami.action_list("QueueStatus", Queue="hotline")
        assert response["Response"] == "Success", response
        params = [e for e in events if e["Event"] == "QueueParams"]
        members = [e for e in events if e["Event"] == "QueueMember"]
        assert [p["Queue"] for p in params] == ["hotline"]
        assert params[0]["Strategy"] == "rrmemory"
        assert params[0]["ServiceLevel"] == "20"
        assert sorted(m["StateInterface"] for m in members) == [
            "PJSIP/agent1",
            "PJSIP/agent2",
            "PJSIP/agent3",
        ]
        assert events[-1]["Event"] == "QueueStatusComplete"

        response, events = await ami.action_list("QueueSummary")
        assert response["Response"] == "Success", response
        summaries = {e["Queue"] for e in events if e["Event"] == "QueueSummary"}
        assert summaries == {"hotline", "enterprise", "emergency"}
        assert events[-1]["Event"] == "QueueSummaryComplete"

        response, events = await ami.action_list("CoreShowChannels")
        assert response["Response"] == "Success", response
        assert events[-1]["Event"] == "CoreShowChannelsComplete"

        # pause / unpause agent1 in hotline
        mark = ami.mark()
        response = await ami.action(
            "QueuePause", Queue="hotline", Interface="PJSIP/agent1", Paused="true", Reason="lunch"
        )
        assert response["Response"] == "Success", response
        event = await ami.wait_for("QueueMemberPause", since=mark, Interface="PJSIP/agent1")
        assert event["Paused"] == "1"
        assert event["PausedReason"] == "lunch"
        response = await ami.action(
            "QueuePause", Queue="hotline", Interface="PJSIP/agent1", Paused="false"
        )
        assert response["Response"] == "Success", response
        await ami.wait_for("QueueMemberPause", since=mark, Interface="PJSIP/agent1", Paused="0")

        # add / remove agent4 as a dynamic member
        mark = ami.mark()
        response = await ami.action(
            "QueueAdd", Queue="hotline", Interface="PJSIP/agent4", MemberName="Agent Four"
        )
        assert response["Response"] == "Success", response
        await ami.wait_for("QueueMemberAdded", since=mark, Interface="PJSIP/agent4")
        _, events = await ami.action_list("QueueStatus", Queue="hotline")
        assert "PJSIP/agent4" in {e.get("StateInterface") for e in events}
        response = await ami.action("QueueRemove", Queue="hotline", Interface="PJSIP/agent4")
        assert response["Response"] == "Success", response
        await ami.wait_for("QueueMemberRemoved", since=mark, Interface="PJSIP/agent4")

        # Setvar / Getvar (global variable)
        response = await ami.action("Setvar", Variable="HOTLINE_TESTBED", Value="42")
        assert response["Response"] == "Success", response
        response = await ami.action("Getvar", Variable="HOTLINE_TESTBED")
        assert response["Value"] == "42"

        # Originate: ring agent4 (answering SIPp), run Wait(1), hang up
        sipp_agents.start("agent4")
        mark = ami.mark()
        response = await ami.action(
            "Originate",
            Channel="PJSIP/agent4",
            Application="Wait",
            Data="1",
            Async="true",
            Timeout="5000",
        )
        assert response["Response"] == "Success", response
        event = await ami.wait_for("OriginateResponse", timeout=10, since=mark)
        assert event["Response"] == "Success", event

        # least privilege: no CLI over AMI
        response = await ami.action("Command", Command="core show version")
        assert response["Response"] == "Error"
        assert "Permission denied" in response.get("Message", "")


async def test_ami_login_with_a_wrong_secret_fails(asterisk, ami_events) -> None:
    with pytest.raises(RuntimeError, match="login"):
        async with ami_events(secret="not-the-secret"):
            pass


# --------------------------------------------------------------------------- events


async def test_event_filters_during_a_real_call(
    asterisk, sipp_agents, place_citizen_call, ami_events
) -> None:
    asterisk.cli("queue pause member PJSIP/agent3 queue hotline reason test")  # never answers
    async with (
        ami_events() as ami,
        ami_events(username=asterisk.ami_probe_username, secret=asterisk.ami_probe_secret) as probe,
    ):
        # agent3 never answers: keep it out of the way so that an agent takes the call
        await ami.action("QueuePause", Queue="hotline", Interface="PJSIP/agent3", Paused="true")
        call = place_citizen_call("13800138000", talk_seconds=2, name="张三")
        join = await ami.wait_for("QueueCallerJoin", timeout=10, Queue="hotline")
        assert join["CallerIDNum"] == "13800138000"
        assert join["CallerIDName"] == "张三"
        connect = await ami.wait_for("AgentConnect", timeout=15, Queue="hotline")
        await ami.wait_for_completion(connect)
        await ami.wait_for("Hangup", timeout=10, predicate=is_citizen)
        assert await call.wait_async(timeout=30) == 0, call.diagnostics()
        # let the probe (no filters) catch up with the tail of the call
        await probe.wait_for("Hangup", timeout=10, predicate=is_citizen)
        await asyncio.sleep(0.5)

    received = ami.event_names()
    for wanted in ("Newchannel", "QueueCallerJoin", "AgentConnect", "AgentComplete", "Hangup"):
        assert wanted in received, f"{wanted} missing from {sorted(received)}"
    assert not received & UNWANTED_EVENTS, sorted(received & UNWANTED_EVENTS)
    for frame in ami.frames:
        assert not re.search(r"^Event: (VarSet|Newexten|TestEvent)\r?$", frame, re.M), frame
    # timestampevents = yes: every broadcast event is stamped (the FullyBooted that
    # Asterisk writes right after login and the replies to list actions are not)
    stamped = [e for e in ami.events if "Privilege" in e and e["Event"] != "FullyBooted"]
    assert stamped
    assert all(re.fullmatch(r"\d+\.\d{6}", e.get("Timestamp", "")) for e in stamped)

    # The same call, seen by an account without filters: these events did exist.
    seen_by_probe = probe.event_names()
    assert {"VarSet", "Newexten", "NewConnectedLine"} <= seen_by_probe, sorted(seen_by_probe)


# --------------------------------------------------------------------------- dialplan


@pytest.mark.parametrize("service", ["12345", "96110"])
async def test_fallback_to_hotline_queue_when_the_bridge_is_down(
    asterisk, sipp_agents, place_citizen_call, ami_events, service: str
) -> None:
    asterisk.cli("queue pause member PJSIP/agent3 queue hotline reason test")  # never answers
    if not agi_port_closed():
        pytest.fail(f"{AGI_HOST}:{AGI_PORT} must be closed for this test (a bridge is running?)")
    async with ami_events() as ami:
        # agent3 never answers: keep it out of the way so the timing is deterministic
        await ami.action("QueuePause", Queue="hotline", Interface="PJSIP/agent3", Paused="true")
        started = time.monotonic()
        call = place_citizen_call("13900139000", talk_seconds=2, service=service)
        join = await ami.wait_for("QueueCallerJoin", timeout=10, Queue="hotline")
        joined_after = time.monotonic() - started
        connect = await ami.wait_for("AgentConnect", timeout=10, Queue="hotline")
        connected_after = time.monotonic() - started
        assert connect["Interface"] in {"PJSIP/agent1", "PJSIP/agent2"}
        channel = join["Channel"]
        assert await getvar(ami, channel, "HOTLINE_REASON") == "bridge-unavailable"
        assert await getvar(ami, channel, "AGISTATUS") == "FAILURE"
        assert await getvar(ami, channel, "QUEUE_PRIO") == "0"
        assert await call.wait_async(timeout=30) == 0, call.diagnostics()

    assert joined_after < 2.0, f"queued only after {joined_after:.2f}s"
    assert connected_after < 4.0, f"agent connected only after {connected_after:.2f}s"


async def test_queue_log_records_the_call(
    asterisk, sipp_agents, place_citizen_call, ami_events
) -> None:
    # agent3 never answers; with the round robin on it a 2 s caller could abandon first.
    asterisk.cli("queue pause member PJSIP/agent3 queue hotline reason test")
    async with ami_events() as ami:
        call = place_citizen_call("13700137000", talk_seconds=2)
        join = await ami.wait_for("QueueCallerJoin", timeout=10, Queue="hotline")
        connect = await ami.wait_for("AgentConnect", timeout=30, Uniqueid=join["Uniqueid"])
        await ami.wait_for_completion(connect, timeout=30)
        assert await call.wait_async(timeout=30) == 0, call.diagnostics()

    uniqueid = join["Uniqueid"]
    deadline = time.monotonic() + 5
    while True:
        lines = [line.split("|") for line in asterisk.queue_log_lines()]
        verbs = [f[4] for f in lines if len(f) > 4 and f[1] == uniqueid]
        if "HOTLINEEND" in verbs or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    # The dialplan's own lines (for a bridge that was away) around Queue's.
    assert verbs[:2] == ["HOTLINECALL", "ENTERQUEUE"], verbs
    assert "CONNECT" in verbs, verbs
    assert verbs[-2:] == ["COMPLETECALLER", "HOTLINEEND"], verbs
    enter = next(f for f in lines if f[1] == uniqueid and f[4] == "ENTERQUEUE")
    assert enter[2] == "hotline"
    assert enter[6] == "13700137000"  # ENTERQUEUE|url|callerid|position


async def test_bridge_routes_to_emergency_with_priority(
    asterisk, sipp_agents, place_citizen_call, ami_events
) -> None:
    asterisk.cli("queue pause member PJSIP/agent3 queue emergency reason test")  # never answers
    route = {
        "HOTLINE_QUEUE": "emergency",
        "HOTLINE_PRIORITY": "7",
        "HOTLINE_TICKET": "T-2024-0001",
        "HOTLINE_REASON": "keyword-fire",
    }
    async with FakeRouteAgi(route) as agi, ami_events() as ami:
        await ami.action("QueuePause", Queue="emergency", Interface="PJSIP/agent3", Paused="true")
        call = place_citizen_call("13600136000", talk_seconds=2, name="李四")
        join = await ami.wait_for("QueueCallerJoin", timeout=10)
        assert join["Queue"] == "emergency"
        channel = join["Channel"]
        assert await getvar(ami, channel, "QUEUE_PRIO") == "7"
        assert await getvar(ami, channel, "HOTLINE_TICKET") == "T-2024-0001"
        assert await getvar(ami, channel, "HOTLINE_REASON") == "keyword-fire"
        await ami.wait_for("AgentConnect", timeout=10, Queue="emergency")
        assert await call.wait_async(timeout=30) == 0, call.diagnostics()

    [request] = agi.requests
    assert request["agi_network_script"] == "route"
    assert request["agi_callerid"] == "13600136000"
    assert request["agi_extension"] == "12345"
    assert all(reply.startswith("200 result=1") for reply in agi.replies), agi.replies


@pytest.mark.parametrize(
    ("queue", "reason"),
    [
        ("", "bridge-no-queue"),
        ("vip", "bridge-unknown-queue"),
        ('hotline" & "1', "bridge-unknown-queue"),
        ("${SHELL(id)}", "bridge-unknown-queue"),
    ],
)
async def test_bad_queue_from_the_bridge_falls_back_to_hotline(
    asterisk,
    sipp_agents,
    place_citizen_call,
    ami_events,
    queue: str,
    reason: str,
) -> None:
    route = {"HOTLINE_QUEUE": queue, "HOTLINE_PRIORITY": "9; Hangup()"}
    async with FakeRouteAgi(route) as agi, ami_events() as ami:
        call = place_citizen_call("13500135000", talk_seconds=1)
        join = await ami.wait_for("QueueCallerJoin", timeout=10)
        assert join["Queue"] == "hotline"
        assert await getvar(ami, join["Channel"], "HOTLINE_REASON") == reason
        assert await getvar(ami, join["Channel"], "QUEUE_PRIO") == "0"
        assert await call.wait_async(timeout=30) == 0, call.diagnostics()
    assert agi.replies == ["200 result=1"] * 2, agi.replies


async def test_preferred_agent_is_rung_alone_first(
    asterisk, sipp_agents, place_citizen_call, ami_events
) -> None:
    route = {"HOTLINE_QUEUE": "enterprise", "HOTLINE_AGENT": "PJSIP/agent2"}
    async with FakeRouteAgi(route), ami_events() as ami:
        call = place_citizen_call("13400134000", talk_seconds=2)
        dial = await ami.wait_for("DialBegin", timeout=10, predicate=is_citizen)
        assert dial["DestChannel"].startswith("PJSIP/agent2-")
        end = await ami.wait_for("DialEnd", timeout=10, predicate=is_citizen)
        assert end["DialStatus"] == "ANSWER"
        await ami.wait_for("Hangup", timeout=15, predicate=is_citizen)
        assert await call.wait_async(timeout=30) == 0, call.diagnostics()
    # answered directly: the call never entered a queue
    assert not ami.find("QueueCallerJoin")


async def test_preferred_agent_not_answering_goes_to_the_queue(
    asterisk, sipp_agents, place_citizen_call, ami_events
) -> None:
    route = {"HOTLINE_QUEUE": "hotline", "HOTLINE_AGENT": "PJSIP/agent3"}
    async with FakeRouteAgi(route), ami_events() as ami:
        await ami.action("QueuePause", Queue="hotline", Interface="PJSIP/agent3", Paused="true")
        started = time.monotonic()
        call = place_citizen_call("13300133000", talk_seconds=12)
        dial = await ami.wait_for("DialBegin", timeout=10, predicate=is_citizen)
        assert dial["DestChannel"].startswith("PJSIP/agent3-")
        end = await ami.wait_for("DialEnd", timeout=15, predicate=is_citizen)
        assert end["DialStatus"] == "NOANSWER"
        rang = time.monotonic() - started
        await ami.wait_for("QueueCallerJoin", timeout=5, Queue="hotline")
        await ami.wait_for("AgentConnect", timeout=10, Queue="hotline")
        assert await call.wait_async(timeout=40) == 0, call.diagnostics()
    assert 7.0 < rang < 10.0, f"preferred agent rang for {rang:.1f}s"


async def test_unsafe_agent_from_the_bridge_is_ignored(
    asterisk, sipp_agents, place_citizen_call, ami_events
) -> None:
    route = {"HOTLINE_QUEUE": "hotline", "HOTLINE_AGENT": "Local/123@from-citizens"}
    async with FakeRouteAgi(route), ami_events() as ami:
        call = place_citizen_call("13200132000", talk_seconds=1)
        join = await ami.wait_for("QueueCallerJoin", timeout=10, Queue="hotline")
        assert join["Channel"].startswith("PJSIP/citizens-")
        assert await call.wait_async(timeout=30) == 0, call.diagnostics()
    assert not [e for e in ami.find("DialBegin") if is_citizen(e) and "Local/" in e["DestChannel"]]
