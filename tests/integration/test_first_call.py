"""The first end-to-end calls on the real Asterisk 22 test bed, with the real ``hotline run``.

A SIPp citizen dials 12345; Asterisk asks the bridge over FastAGI; the call is queued; a SIPp
agent answers; AMI events reach the bridge; the call journal gets one row that agrees with
Asterisk's own ``queue_log``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import port_open
from tests.integration.bridge import AGI_PORT, RunningBridge, start_bridge, start_router

pytestmark = pytest.mark.integration


@pytest.fixture
def bridge(asterisk, tmp_path: Path) -> Iterator[RunningBridge]:  # type: ignore[no-untyped-def]
    running = start_bridge(asterisk, tmp_path)
    yield running
    assert running.stop() == 0, running.log_tail()
    # The bridge logged at DEBUG level for the whole call; the AMI secret never shows.
    assert asterisk.ami_secret not in running.log_path.read_text(errors="replace")


def queue_log_event(asterisk, uniqueid: str, event: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Asterisk's own queue_log fields for ``event`` of call ``uniqueid`` (after the event name)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in asterisk.queue_log_lines():
            fields = line.split("|")
            if len(fields) >= 5 and fields[1] == uniqueid and fields[4] == event:
                return fields[5:]
        time.sleep(0.2)
    raise AssertionError(f"queue_log has no {event} for {uniqueid}")


def test_answered_call_lands_in_the_journal_as_asterisk_counted_it(
    asterisk,
    bridge: RunningBridge,
    sipp_agents,
    place_citizen_call,  # type: ignore[no-untyped-def]
) -> None:
    # agent3 rings and never answers; keep the round robin off it so the wait stays short.
    asterisk.cli("queue pause member PJSIP/agent3 queue hotline reason test")
    call = place_citizen_call("13800138000", talk_seconds=6, name="张三")
    assert call.wait(timeout=60) == 0, call.diagnostics()

    row = bridge.call_row("13800138000")
    assert row["outcome"] == "answered"
    assert row["queue"] == "hotline"
    assert row["agent_interface"] in ("PJSIP/agent1", "PJSIP/agent2")
    assert row["agent_name"] in ("Agent One", "Agent Two")
    assert row["caller_name"] == "张三"
    assert row["dialled_number"] == "12345"
    assert row["routing_reason"] == "default"  # the dialplan asked the bridge over FastAGI
    # Signed at answer by the agent who took the call.
    ticket = bridge.ticket(row["ticket"])
    assert (ticket["status"], ticket["owner_agent"]) == ("signed", row["agent_interface"])
    assert ticket["signed_at"] == row["answered_at"]
    assert row["answered_at"] is not None and row["ended_at"] is not None
    hold, talk, _position = queue_log_event(asterisk, row["uniqueid"], "COMPLETECALLER")
    assert (row["hold_seconds"], row["talk_seconds"]) == (int(hold), int(talk))
    assert row["hold_seconds"] <= 3
    assert 3 <= row["talk_seconds"] <= 8  # 6 s on the line; SIPp and Asterisk round to seconds


def test_citizen_hanging_up_while_waiting_is_abandoned(
    asterisk,
    bridge: RunningBridge,
    sipp_agents,
    place_citizen_call,  # type: ignore[no-untyped-def]
) -> None:
    for agent in ("agent1", "agent2", "agent3"):
        asterisk.cli(f"queue pause member PJSIP/{agent} queue hotline reason test")
    call = place_citizen_call("13900139000", talk_seconds=4)
    assert call.wait(timeout=60) == 0, call.diagnostics()

    row = bridge.call_row("13900139000")
    assert row["outcome"] == "abandoned"
    assert row["queue"] == "hotline"
    assert row["agent_interface"] is None and row["talk_seconds"] is None
    _position, _original, wait = queue_log_event(asterisk, row["uniqueid"], "ABANDON")
    assert row["hold_seconds"] == int(wait)
    assert 3 <= row["hold_seconds"] <= 6  # 4 s of patience; Asterisk counts whole seconds
    # The ticket opened at routing time is now a task to call the citizen back.
    ticket = bridge.ticket(row["ticket"])
    assert (ticket["status"], ticket["owner_agent"]) == ("callback", None)
    assert ticket["callback_requested_at"] is not None


async def test_with_the_bridge_stopped_a_citizen_still_reaches_an_agent(
    asterisk,
    tmp_path: Path,
    sipp_agents,
    place_citizen_call,
    ami_events,  # type: ignore[no-untyped-def]
) -> None:
    running = start_bridge(asterisk, tmp_path)
    assert running.stop() == 0, running.log_tail()
    assert not port_open("127.0.0.1", AGI_PORT)
    # agent3's phone rings and never answers: with the queue's round-robin memory left on it
    # by an earlier test, the 3-second caller would give up before the next agent rang.
    asterisk.cli("queue pause member PJSIP/agent3 queue hotline reason test")

    async with ami_events() as ami:
        started = time.monotonic()
        call = place_citizen_call("13700137000", talk_seconds=3)
        connect = await ami.wait_for("AgentConnect", timeout=20, Queue="hotline")
        waited = time.monotonic() - started
        assert connect["CallerIDNum"] == "13700137000"
        assert await call.wait_async(timeout=60) == 0, call.diagnostics()
    assert waited < 10


def test_calls_made_while_the_bridge_was_away_get_their_rows_and_tickets(
    asterisk,
    tmp_path: Path,
    sipp_agents,
    place_citizen_call,  # type: ignore[no-untyped-def]
) -> None:
    reading_queue_log = {"HOTLINE_QUEUE_LOG": str(asterisk.queue_log)}
    asterisk.cli("queue pause member PJSIP/agent3 queue hotline reason test")
    running = start_bridge(asterisk, tmp_path, **reading_queue_log)
    seen = place_citizen_call("13800138001", talk_seconds=2)
    assert seen.wait(timeout=60) == 0, seen.diagnostics()
    assert running.call_row("13800138001")["source"] == "ami"
    assert running.stop() == 0, running.log_tail()

    first = running.call_row("13800138001")
    # Away, with only ``hotline agi`` routing: the first caller again, rung to the owner of
    # their ticket alone (no queue); a citizen answered from the queue; one who gives up.
    router = start_router(tmp_path, running.database)
    try:
        again = place_citizen_call("13800138001", talk_seconds=3)
        assert again.wait(timeout=60) == 0, again.diagnostics()
        answered = place_citizen_call("13800138002", talk_seconds=3, name="王五, 先生|甲")
        assert answered.wait(timeout=60) == 0, answered.diagnostics()
        for agent in ("agent1", "agent2"):
            asterisk.cli(f"queue pause member PJSIP/{agent} queue hotline reason test")
        gave_up = place_citizen_call("13800138003", talk_seconds=3)
        assert gave_up.wait(timeout=60) == 0, gave_up.diagnostics()
    finally:
        assert router.stop() == 0, router.log_tail()
    routed = {
        row["caller_number"]: row["number"]
        for row in running.rows("SELECT number, caller_number FROM tickets")
    }

    running = start_bridge(asterisk, tmp_path, **reading_queue_log)  # the same database
    try:
        row = running.call_row("13800138002")
        assert (row["outcome"], row["queue"], row["source"]) == ("answered", "hotline", "queue_log")
        # The dialplan's HOTLINECALL line: the route, its ticket, the number and name as dialled.
        assert (row["dialled_number"], row["routing_reason"]) == ("12345", "default")
        assert row["ticket"] == routed["13800138002"]
        assert row["caller_name"] == "王五, 先生|甲"
        assert row["agent_interface"] in ("PJSIP/agent1", "PJSIP/agent2")
        hold, talk, _position = queue_log_event(asterisk, row["uniqueid"], "COMPLETECALLER")
        assert (row["hold_seconds"], row["talk_seconds"]) == (int(hold), int(talk))
        assert 2 <= row["talk_seconds"] <= 5
        # Matched to a ticket and signed by the agent who answered, at queue_log's answer time.
        ticket = running.wait_for_row(
            "SELECT * FROM tickets WHERE number = ? AND status = 'signed'", row["ticket"]
        )
        assert ticket["owner_agent"] == row["agent_interface"]
        assert ticket["signed_at"] == row["answered_at"]

        row = running.call_row("13800138003")
        assert (row["outcome"], row["source"]) == ("abandoned", "queue_log")
        assert row["ticket"] == routed["13800138003"]
        _position, _original, wait = queue_log_event(asterisk, row["uniqueid"], "ABANDON")
        assert row["hold_seconds"] == int(wait)
        ticket = running.wait_for_row(
            "SELECT * FROM tickets WHERE number = ? AND status = 'callback'", row["ticket"]
        )
        assert ticket["callback_requested_at"] is not None

        # The owner's own Dial is in no queue line: the dialplan's hangup handler (HOTLINEEND)
        # gives its answer, its talk and who took it.
        owner = running.wait_for_row(
            "SELECT * FROM calls WHERE caller_number = ? AND source = 'queue_log'", "13800138001"
        )
        assert (owner["outcome"], owner["queue"], owner["routing_reason"]) == (
            "answered",
            None,
            "ticket-owner",
        )
        assert (owner["agent_interface"], owner["ticket"]) == (
            first["agent_interface"],
            first["ticket"],
        )
        assert 2 <= owner["talk_seconds"] <= 5 and owner["hangup_cause"] == 16
        assert len(running.rows("SELECT * FROM calls")) == 4
    finally:
        assert running.stop() == 0, running.log_tail()
    assert ": 3 calls recovered, 0 still going" in running.log_path.read_text(errors="replace")
