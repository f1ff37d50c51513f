"""The FastAGI codec without a socket, and the server on a real loopback socket."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from agi.codec import (
    MAX_MSET_BYTES,
    AgiProtocolError,
    mset_command,
    parse_reply,
    parse_request,
    set_variable_command,
)
from agi.routing import route_handler
from agi.server import AgiSession, FastAgiServer
from ivr_bypass.decision import (
    CallerFacts,
    IncomingCall,
    RoutingDecision,
    RoutingRules,
    decide,
    fallback_decision,
)
from tests.agi_commands import variables_set

REQUEST = (
    "agi_network: yes\n"
    "agi_network_script: route\n"
    "agi_request: agi://127.0.0.1:4573/route\n"
    "agi_channel: PJSIP/citizens-00000007\n"
    "agi_language: en\n"
    "agi_uniqueid: 1795575495.7\n"
    "agi_callerid: 13800138000\n"
    "agi_calleridname: 张三\n"
    "agi_dnid: 12345\n"
    "agi_context: from-citizens\n"
    "agi_extension: 12345\n"
    "agi_arg_1: first\n"
    "\n"
)


def test_request_headers_become_a_request() -> None:
    request = parse_request(REQUEST.strip("\n").split("\n"))
    assert request.script == "route"
    assert request.uniqueid == "1795575495.7"
    assert request.caller_number == "13800138000"
    assert request.caller_name == "张三"
    assert request.extension == "12345"
    assert request.arguments == ("first",)


def test_script_falls_back_to_the_request_path_and_unknown_caller_is_empty() -> None:
    request = parse_request(
        ["agi_request: agi://127.0.0.1/route?x=1", "agi_channel: c", "agi_callerid: unknown"]
    )
    assert request.script == "route"
    assert request.caller_number == ""


@pytest.mark.parametrize("lines", [["GET / HTTP/1.1"], ["agi_request: agi://h/"], []])
def test_garbage_is_a_protocol_error(lines: list[str]) -> None:
    with pytest.raises(AgiProtocolError):
        parse_request(lines)


def test_set_variable_quotes_and_refuses_line_breaks() -> None:
    assert set_variable_command("HOTLINE_REASON", 'say "hi" \\') == (
        'SET VARIABLE HOTLINE_REASON "say \\"hi\\" \\\\"\n'
    )
    with pytest.raises(ValueError):
        set_variable_command("HOTLINE_QUEUE", "a\nEXEC System rm")
    with pytest.raises(ValueError):
        set_variable_command("BAD NAME", "x")


def test_mset_sets_plain_values_in_one_command_and_leaves_the_rest_to_set_variable() -> None:
    variables = {
        "HOTLINE_QUEUE": "enterprise",
        "HOTLINE_PRIORITY": "10",
        "HOTLINE_AGENT": "PJSIP/agent2",
        "HOTLINE_TICKET": "12345-20261202-000042",
        "HOTLINE_REASON": "ticket-owner",
    }
    command = mset_command(variables)
    assert command == (
        'EXEC MSet "HOTLINE_QUEUE=enterprise,HOTLINE_PRIORITY=10,HOTLINE_AGENT=PJSIP/agent2,'
        'HOTLINE_TICKET=12345-20261202-000042,HOTLINE_REASON=ticket-owner"\n'
    )
    assert variables_set([command.encode()]) == variables
    # Anything MSet's parser could read otherwise goes through SET VARIABLE, which quotes it.
    for value in ("a,b", "a=b", "a b", 'a"b', "a\\b", "${SHELL(id)}", "a|b", "a\nb", "队列"):
        assert mset_command({**variables, "HOTLINE_QUEUE": value}) is None, value
    assert mset_command({"HOTLINE_QUEUE": "q" * MAX_MSET_BYTES}) is None
    assert mset_command(dict.fromkeys(variables, "")) is None
    with pytest.raises(ValueError):
        mset_command({"BAD NAME": "x"})


@pytest.mark.parametrize(
    ("variables", "mset_reply"),
    [
        ({"HOTLINE_QUEUE": "hotline", "HOTLINE_REASON": "a, b"}, None),
        ({"HOTLINE_QUEUE": "hotline", "HOTLINE_REASON": "default"}, b"200 result=-2\n"),
    ],
    ids=["value-needs-quoting", "mset-refused"],
)
async def test_set_variables_falls_back_to_one_set_variable_each(
    variables: dict[str, str], mset_reply: bytes | None
) -> None:
    """A value MSet could misread, or an Asterisk without MSet (``200 result=-2``)."""
    sent: list[bytes] = []

    async def fake_asterisk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            sent.append(line)
            is_mset = line.startswith(b"EXEC MSet ")
            writer.write(mset_reply if is_mset and mset_reply else b"200 result=1\n")
        writer.close()

    asterisk = await asyncio.start_server(fake_asterisk, "127.0.0.1", 0)
    port = asterisk.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await AgiSession(reader, writer, 1.0).set_variables(variables)
    finally:
        writer.close()
        asterisk.close()
    expected = [set_variable_command(name, value).encode() for name, value in variables.items()]
    assert sent[-2:] == expected
    assert len(sent) == (3 if mset_reply else 2)


def test_replies_parse() -> None:
    assert parse_reply("200 result=1").ok
    assert parse_reply("200 result=0 (timeout)").data == "timeout"
    assert not parse_reply("200 result=-1").ok
    assert parse_reply("510 Invalid or unknown command").code == 510


class FakeAsterisk:
    """Plays Asterisk's side of one FastAGI dialogue and records the commands it got."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def run(self, request: str) -> list[str]:
        self.writer.write(request.encode())
        await self.writer.drain()
        commands = []
        while line := await asyncio.wait_for(self.reader.readline(), 2):
            commands.append(line.decode().rstrip("\n"))
            self.writer.write(b"200 result=1\n")
            await self.writer.drain()
        self.writer.close()
        return commands


@pytest.fixture
async def server() -> AsyncIterator[tuple[FastAgiServer, Counter[str], list]]:
    counters: Counter[str] = Counter()
    routed: list = []
    rules = RoutingRules(default_queue="hotline")

    async def quick(call: IncomingCall, start_by: float) -> RoutingDecision:
        return decide(call, CallerFacts(), rules)

    async def slow(call: IncomingCall, start_by: float) -> RoutingDecision:
        await asyncio.sleep(1)
        return decide(call, CallerFacts(), rules)

    async def broken(call: IncomingCall, start_by: float) -> RoutingDecision:
        raise RuntimeError("database is down")

    def handler(decider):  # type: ignore[no-untyped-def]
        return route_handler(
            decider,
            fallback_decision(rules),
            budget_seconds=0.05,
            on_routed=lambda uid, decision: routed.append((uid, decision)),
            counters=counters,
        )

    agi = FastAgiServer(
        {"route": handler(quick), "slow": handler(slow), "broken": handler(broken)},
        host="127.0.0.1",
        port=0,
        read_timeout=0.5,
    )
    await agi.start()
    yield agi, counters, routed
    await agi.close()


async def call_route(port: int, script: str = "route") -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return await FakeAsterisk(reader, writer).run(
        REQUEST.replace("agi_network_script: route", f"agi_network_script: {script}")
    )


async def test_route_sets_every_hotline_variable(server) -> None:  # type: ignore[no-untyped-def]
    agi, counters, routed = server
    commands = await call_route(agi.port)
    # One round trip; the empty ones are left out (the dialplan clears them all before asking).
    assert commands == [
        'EXEC MSet "HOTLINE_QUEUE=hotline,HOTLINE_PRIORITY=0,HOTLINE_REASON=default"'
    ]
    assert variables_set(commands) == {
        "HOTLINE_QUEUE": "hotline",
        "HOTLINE_PRIORITY": "0",
        "HOTLINE_AGENT": "",
        "HOTLINE_TICKET": "",
        "HOTLINE_REASON": "default",
    }
    assert routed[0][0] == "1795575495.7"
    assert counters["routed"] == 1


@pytest.mark.parametrize(
    ("script", "counter"), [("slow", "fallback_timeout"), ("broken", "fallback_error")]
)
async def test_slow_or_failing_routing_answers_the_default_route_at_once(
    server,
    script: str,
    counter: str,  # type: ignore[no-untyped-def]
) -> None:
    agi, counters, _ = server
    started = asyncio.get_running_loop().time()
    commands = await call_route(agi.port, script)
    assert asyncio.get_running_loop().time() - started < 0.5
    assert variables_set(commands)["HOTLINE_REASON"] == "fallback"
    assert counters[counter] == 1


async def test_clients_that_close_or_babble_do_not_stall_the_server(server) -> None:  # type: ignore[no-untyped-def]
    agi, _, _ = server
    for payload in (b"", b"GET / HTTP/1.1\r\n\r\n", b"agi_channel: half"):
        _, writer = await asyncio.open_connection("127.0.0.1", agi.port)
        writer.write(payload)
        writer.close()
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", agi.port)
    # While a silent peer waits for its deadline, a real request is still served at once.
    commands = await asyncio.wait_for(call_route(agi.port), 1)
    assert variables_set(commands)["HOTLINE_QUEUE"] == "hotline"
    assert await asyncio.wait_for(silent_reader.read(), 2) == b""  # closed after the deadline
    silent_writer.close()
    await asyncio.sleep(0.05)
    assert agi.counters["protocol_errors"] == 1
    assert agi.counters["timeouts"] == 1
    assert agi.counters["hangups"] == 2


async def test_unknown_route_is_closed_without_commands(server) -> None:  # type: ignore[no-untyped-def]
    agi, _, _ = server
    assert await call_route(agi.port, "nowhere") == []
    assert agi.counters["unknown_route"] == 1


async def test_a_late_decision_is_not_cancelled_and_too_many_late_ones_short_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelling a decision inside a database transaction can leave SQLite locked; a late one
    finishes in the background, and while too many are late new calls skip deciding."""
    monkeypatch.setattr("ivr_bypass.budget.MAX_LATE_DECISIONS", 2)
    rules = RoutingRules()
    finished: list[str] = []
    release = asyncio.Event()

    async def slow(call: IncomingCall, start_by: float) -> RoutingDecision:
        await release.wait()
        finished.append(call.uniqueid)
        return decide(call, CallerFacts(), rules)

    counters: Counter[str] = Counter()
    handler = route_handler(
        slow,
        fallback_decision(rules),
        budget_seconds=0.02,
        on_routed=lambda *_: None,
        counters=counters,
    )
    agi = FastAgiServer({"route": handler}, host="127.0.0.1", port=0, read_timeout=0.5)
    await agi.start()
    try:
        for _ in range(3):
            commands = await asyncio.wait_for(call_route(agi.port), 1)
            assert variables_set(commands)["HOTLINE_REASON"] == "fallback"
        assert (counters["fallback_timeout"], counters["fallback_overload"]) == (2, 1)
        release.set()
        await asyncio.sleep(0.05)
        assert finished == ["1795575495.7", "1795575495.7"]  # both ran to the end
        assert counters["late_decisions"] == 2
        assert await asyncio.wait_for(call_route(agi.port), 1)  # deciding again
        assert counters["fallback_timeout"] == 2 and counters["routed"] == 4
    finally:
        await agi.close()


async def test_the_server_warms_up_before_listening_and_a_failed_warm_up_stops_nothing() -> None:
    warmed: list[str] = []

    async def warm_up() -> None:
        warmed.append("database")
        raise ConnectionError("database not there yet")

    rules = RoutingRules()

    async def quick(call: IncomingCall, start_by: float) -> RoutingDecision:
        return decide(call, CallerFacts(), rules)

    handler = route_handler(
        quick,
        fallback_decision(rules),
        budget_seconds=0.05,
        on_routed=lambda *_: None,
        counters=Counter(),
    )
    agi = FastAgiServer({"route": handler}, host="127.0.0.1", port=0, warm_up=warm_up)
    await agi.start()
    try:
        assert warmed == ["database"]
        commands = await asyncio.wait_for(call_route(agi.port), 1)
        assert variables_set(commands)["HOTLINE_QUEUE"] == "hotline"
    finally:
        await agi.close()
