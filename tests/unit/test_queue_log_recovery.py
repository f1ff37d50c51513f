"""Calls rebuilt from queue_log, for the time the bridge could not see AMI.

The recorded test-bed runs hold both witnesses of the same calls: what AMI said
(``tests/fixtures/<name>.ami``) and what Asterisk logged (``<name>.queue_log``). A call rebuilt
from the log alone must be the call the live pipeline journalled, to the second.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ami.feed import replay_file
from ami.queue_log import (
    SOURCE_QUEUE_LOG,
    parse_line,
    queue_log_files,
    read_entries,
    recover_calls,
)
from ami.replay import ReplayClock
from queue_stats.calls import CallOutcome, CallRecord, CallTracker
from queue_stats.pipeline import EventPipeline
from queue_stats.stats import QueueStats

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDED = sorted(path.stem for path in FIXTURES.glob("*.queue_log"))
SHANGHAI = ZoneInfo("Asia/Shanghai")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def replay(name: str) -> tuple[list[CallRecord], EventPipeline]:
    clock = ReplayClock()
    pipeline = EventPipeline(
        CallTracker(frozenset({"from-citizens"})), QueueStats(SHANGHAI), clock.current
    )
    return replay_file(FIXTURES / f"{name}.ami", pipeline, clock), pipeline


def logged(name: str) -> list:
    return [e for e in map(parse_line, (FIXTURES / f"{name}.queue_log").open()) if e]


def close_in_time(logged: datetime | None, live: datetime | None) -> bool:
    """queue_log has whole seconds (cut, not rounded), AMI microseconds, and an event may come
    a little after Asterisk's log line (a Hangup after COMPLETECALLER)."""
    if logged is None or live is None:
        return logged is live
    return -0.1 < (live - logged).total_seconds() < 2.0


@pytest.mark.parametrize("name", RECORDED)
def test_calls_rebuilt_from_queue_log_are_the_calls_ami_showed(name: str) -> None:
    live_calls, pipeline = replay(name)
    queue_calls = {call.uniqueid: call for call in live_calls if call.queue is not None}
    names = {agent.name: interface for interface, agent in pipeline.stats.agents.items()}
    recovery = recover_calls(logged(name), since=EPOCH, agent_interfaces=names)
    rebuilt = {call.uniqueid: call for call in recovery.calls}
    assert len(queue_calls) >= 5
    assert set(rebuilt) == set(queue_calls)
    assert not recovery.in_progress
    for uniqueid, live in queue_calls.items():
        call = rebuilt[uniqueid]
        assert call.source == SOURCE_QUEUE_LOG and live.source == "ami"
        assert (call.outcome, call.queue, call.hold_seconds) == (
            live.outcome,
            live.queue,
            live.hold_seconds,
        ), uniqueid
        assert call.caller_number == live.caller_number
        assert close_in_time(call.entered_queue_at, live.entered_queue_at), uniqueid
        if live.outcome is CallOutcome.ANSWERED:
            assert (call.agent_name, call.agent_interface) == (
                live.agent_name,
                live.agent_interface,
            ), uniqueid
            assert call.talk_seconds == live.talk_seconds, uniqueid  # Asterisk's TalkTime
            assert close_in_time(call.answered_at, live.answered_at), uniqueid
            assert close_in_time(call.ended_at, live.ended_at), uniqueid
        if live.outcome is CallOutcome.ABANDONED:
            assert close_in_time(call.ended_at, live.ended_at), uniqueid
    outcomes = {call.outcome for call in recovery.calls}
    assert CallOutcome.ANSWERED in outcomes


@pytest.mark.parametrize("name", RECORDED)
def test_statistics_counted_from_rebuilt_calls_equal_the_live_ones(name: str) -> None:
    _, pipeline = replay(name)
    names = {agent.name: interface for interface, agent in pipeline.stats.agents.items()}
    stats = QueueStats(SHANGHAI)
    for interface, agent in pipeline.stats.agents.items():
        stats.agents[interface] = replace(agent, today=type(agent.today)())
    for call in recover_calls(logged(name), since=EPOCH, agent_interfaces=names).calls:
        assert stats.count_recovered(call)
    live = pipeline.stats
    for queue_name, queue in stats.queues.items():
        assert queue.today == live.queues[queue_name].today, queue_name
    for interface, agent in stats.agents.items():
        mine, theirs = agent.today, live.agents[interface].today
        assert (mine.answered, mine.talk_seconds) == (theirs.answered, theirs.talk_seconds)


def lines(*text: str) -> list:
    return [parse_line(line) for line in text]


GAP = lines(
    "1000|1000.1|hotline|NONE|ENTERQUEUE||13800000001|1",  # before the window
    "1010|1000.1|hotline|Agent One|CONNECT|10|1010.2|2",
    "1100|1100.1|hotline|NONE|ENTERQUEUE||13800000002|1",  # already journalled
    "1105|1100.1|hotline|NONE|ABANDON|1|1|5",
    "1199|1200.1|hotline|NONE|HOTLINECALL|12345|open-ticket|12345-19700101-000007|13800000003|李四|x",
    "1200|1200.1|hotline|NONE|ENTERQUEUE||13800000003|1",  # wholly in the gap
    "1203|1200.1|hotline|Agent One|CONNECT|3|1203.2|1",
    "1260|1200.1|hotline|Agent One|BLINDTRANSFER|2000|from-agents|3|57|1",
    "1300|1300.1|enterprise|NONE|ENTERQUEUE||13900000004|1",  # still talking
    "1302|1300.1|enterprise|Agent Two|CONNECT|2|1302.2|1",
    "1310|1310.1|hotline|NONE|ENTERQUEUE||13800000005|1",  # timed out
    "1316|1310.1|hotline|NONE|EXITWITHTIMEOUT|1|1|6",
    "1320|NONE|hotline|Agent One|PAUSE|lunch",
)


def test_a_window_takes_whole_calls_skips_known_ones_and_reports_calls_still_going() -> None:
    recovery = recover_calls(GAP, since=EPOCH + timedelta(seconds=1100), skip={"1100.1"})
    by_id = {call.uniqueid: call for call in recovery.calls}
    assert list(by_id) == ["1200.1", "1310.1"]
    transferred = by_id["1200.1"]
    assert (transferred.outcome, transferred.hold_seconds, transferred.talk_seconds) == (
        CallOutcome.ANSWERED,
        3,
        57,
    )
    assert transferred.started_at == EPOCH + timedelta(seconds=1199)  # the dialplan's line
    assert transferred.entered_queue_at == EPOCH + timedelta(seconds=1200)
    assert (transferred.dialled_number, transferred.routing_reason, transferred.ticket) == (
        "12345",
        "open-ticket",
        "12345-19700101-000007",
    )
    assert transferred.caller_name == "李四|x"
    assert transferred.ended_at == EPOCH + timedelta(seconds=1260)
    assert transferred.agent_name == "Agent One" and transferred.agent_interface is None
    timed_out = by_id["1310.1"]
    assert (timed_out.outcome, timed_out.hold_seconds) == (CallOutcome.TIMEOUT, 6)
    assert (timed_out.dialled_number, timed_out.ticket) == ("", None)  # no HOTLINECALL line
    assert recovery.in_progress == {"1300.1"}


def test_a_call_seen_starting_keeps_what_ami_told_and_takes_its_end_from_the_log() -> None:
    seen = CallRecord(
        uniqueid="1000.1",
        linkedid="1000.1",
        channel="PJSIP/citizens-00000001",
        caller_number="13800000001",
        caller_name="张三",
        dialled_number="12345",
        started_at=EPOCH + timedelta(seconds=999.4),
        queue="hotline",
        entered_queue_at=EPOCH + timedelta(seconds=1000.2),
        outcome=CallOutcome.UNKNOWN,
        ticket="12345-19700101-000001",
        routing_reason="open-ticket",
    )
    more = lines("1070|1000.1|hotline|Agent One|COMPLETEAGENT|10|60|2")
    recovery = recover_calls(
        [*GAP, *more],
        since=EPOCH + timedelta(seconds=1100),
        skip={"1000.1"},  # the tracker's: it is also in partial, which wins
        partial={"1000.1": seen},
        agent_interfaces={"Agent One": "PJSIP/agent1"},
    )
    call = next(call for call in recovery.calls if call.uniqueid == "1000.1")
    assert call.source == "ami"
    assert (call.channel, call.caller_name, call.ticket, call.routing_reason) == (
        seen.channel,
        "张三",
        seen.ticket,
        "open-ticket",
    )
    assert call.entered_queue_at == seen.entered_queue_at  # AMI's finer time is kept
    assert (call.outcome, call.agent_interface, call.hold_seconds, call.talk_seconds) == (
        CallOutcome.ANSWERED,
        "PJSIP/agent1",
        10,
        60,
    )
    assert call.ended_at == EPOCH + timedelta(seconds=1070)


def test_a_caller_who_tries_a_second_queue_is_one_call_with_its_last_visit() -> None:
    recovery = recover_calls(
        lines(
            "2000|2000.1|enterprise|NONE|ENTERQUEUE||13900000001|1",
            "2006|2000.1|enterprise|NONE|EXITWITHTIMEOUT|1|1|6",
            "2006|2000.1|hotline|NONE|ENTERQUEUE||13900000001|1",
            "2009|2000.1|hotline|NONE|ABANDON|1|1|3",
        ),
        since=EPOCH,
    )
    [call] = recovery.calls
    assert (call.queue, call.outcome, call.hold_seconds) == ("hotline", CallOutcome.ABANDONED, 3)
    assert call.entered_queue_at == EPOCH + timedelta(seconds=2000)


def test_steps_counted_live_are_not_counted_again() -> None:
    stats = QueueStats(SHANGHAI)
    call = CallRecord(
        uniqueid="1.1",
        linkedid="1.1",
        channel="",
        caller_number="1",
        caller_name="",
        dialled_number="",
        started_at=datetime(2026, 12, 4, 1, 0, tzinfo=UTC),
        queue="hotline",
        entered_queue_at=datetime(2026, 12, 4, 1, 0, tzinfo=UTC),
        answered_at=datetime(2026, 12, 4, 1, 0, 30, tzinfo=UTC),
        ended_at=datetime(2026, 12, 4, 1, 2, tzinfo=UTC),
        hold_seconds=30,
        talk_seconds=90,
        outcome=CallOutcome.ANSWERED,
    )
    assert stats.count_recovered(call, frozenset({"offered", "answered"}))
    today = stats.queues["hotline"].today
    assert (today.offered, today.answered, today.completed, today.talk_seconds) == (0, 0, 1, 90)
    assert not stats.count_recovered(replace(call, queue=None))


def test_rotated_files_are_read_oldest_first_and_torn_lines_skipped(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    (tmp_path / "queue_log.0").write_text(
        "900|900.1|hotline|NONE|ENTERQUEUE||1|1\n1000|1000.1|hotline|NONE|ENTERQUEUE||2|1\n"
    )
    os.utime(tmp_path / "queue_log.0", (1005, 1005))
    log.write_text("1004|1000.1|hotline|NONE|ABANDON|1|1|4\n1006|1006.1|hot")  # torn last line
    os.utime(log, (1006, 1006))
    (tmp_path / "queue_log.old-unrelated").mkdir()
    (tmp_path / "queue_log.1").write_text("100|100.1|hotline|NONE|ENTERQUEUE||0|1\n")
    os.utime(tmp_path / "queue_log.1", (200, 200))  # rotated before the window: not opened
    assert queue_log_files(log, 1000) == [tmp_path / "queue_log.0", log]
    entries = read_entries(log, EPOCH + timedelta(seconds=1000))
    assert [(e.time, e.event) for e in entries] == [(1000, "ENTERQUEUE"), (1004, "ABANDON")]
    with pytest.raises(FileNotFoundError, match="no queue_log at"):
        read_entries(tmp_path / "missing", EPOCH)


def test_the_dialplans_end_line_gives_the_calls_that_never_reached_a_queue() -> None:
    recovery = recover_calls(
        lines(
            # The preferred agent's own Dial, answered: no queue lines at all.
            "3000|3000.1|hotline|NONE|HOTLINECALL|12345|ticket-owner|12345-19700101-000009|"
            "13800000009|赵六",
            "3090|3000.1|hotline|NONE|HOTLINEEND|ANSWER|80|PJSIP/agent2|16|13800000009",
            # Hung up while being routed: only the end line.
            "3102|3100.5|NONE|NONE|HOTLINEEND||||127|13800000010",
            # Timed out of the queue, then the dialplan hung up: the channel ended later.
            "3200|3200.1|hotline|NONE|HOTLINECALL|12345|default||13800000011|",
            "3200|3200.1|hotline|NONE|ENTERQUEUE||13800000011|1",
            "3260|3200.1|hotline|NONE|EXITWITHTIMEOUT|1|1|60",
            "3261|3200.1|hotline|NONE|HOTLINEEND||||16|13800000011",
            # Routed, ringing its preferred agent now: still going.
            "3300|3300.1|hotline|NONE|HOTLINECALL|12345|ticket-owner|12345-19700101-000010|"
            "13800000012|",
        ),
        since=EPOCH,
        agent_interfaces={"Agent Two": "PJSIP/agent2"},
    )
    by_id = {call.uniqueid: call for call in recovery.calls}
    owner = by_id["3000.1"]
    assert (owner.outcome, owner.queue, owner.agent_interface, owner.agent_name) == (
        CallOutcome.ANSWERED,
        None,
        "PJSIP/agent2",
        "Agent Two",
    )
    assert (owner.hold_seconds, owner.talk_seconds, owner.hangup_cause) == (10, 80, 16)
    assert owner.answered_at == EPOCH + timedelta(seconds=3010)
    assert (owner.ticket, owner.caller_number, owner.caller_name) == (
        "12345-19700101-000009",
        "13800000009",
        "赵六",
    )
    routing = by_id["3100.5"]
    assert (routing.outcome, routing.caller_number, routing.hangup_cause) == (
        CallOutcome.HUNG_UP_BEFORE_QUEUE,
        "13800000010",
        127,
    )
    assert routing.started_at == EPOCH + timedelta(seconds=3100)  # from its Uniqueid
    timed_out = by_id["3200.1"]
    assert (timed_out.outcome, timed_out.hold_seconds) == (CallOutcome.TIMEOUT, 60)
    assert timed_out.left_queue_at == EPOCH + timedelta(seconds=3260)
    assert timed_out.ended_at == EPOCH + timedelta(seconds=3261)
    assert recovery.in_progress == {"3300.1"}
