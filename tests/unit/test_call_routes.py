"""How a call's route reaches the AMI side, and the call events other systems are told about.

The route rides on AMI events as ``ChanVariable: HOTLINE_ROUTE=<reason>/<ticket>`` (manager.conf
``channelvars``); the frames below have the layout Asterisk 22 sends.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from ami.codec import parse_message
from ami.events import parse_event
from pbx.facts import AgentConnected, CallerJoinedQueue, DialAnswered
from queue_stats.calls import CallOutcome, CallTracker
from queue_stats.pipeline import EventPipeline
from queue_stats.stats import QueueStats
from tests.ami_feeding import through_ami
from tickets.cti import CtiNotifier
from tickets.webhook import CtiEvent, CtiEventName

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
UNIQUEID = "1795586095.6"


def frame(event: str, timestamp: float, *lines: str) -> str:
    return "\r\n".join(
        [
            f"Event: {event}",
            "Privilege: agent,all",
            f"Timestamp: {timestamp:.6f}",
            "Channel: PJSIP/citizens-00000006",
            "CallerIDNum: 13800138000",
            "CallerIDName: 张三",
            "Context: hotline-call",
            "Exten: 12345",
            f"Uniqueid: {UNIQUEID}",
            f"Linkedid: {UNIQUEID}",
            "ChanVariable: HOTLINE_ROUTE=ticket-owner/12345-20261125-000001",
            *lines,
        ]
    )


NEWCHANNEL = (
    "Event: Newchannel\r\nPrivilege: call,all\r\nTimestamp: 1795586095.600000\r\n"
    "Channel: PJSIP/citizens-00000006\r\nCallerIDNum: 13800138000\r\nCallerIDName: 张三\r\n"
    f"Context: from-citizens\r\nExten: 12345\r\nUniqueid: {UNIQUEID}\r\nLinkedid: {UNIQUEID}\r\n"
    "ChanVariable: HOTLINE_ROUTE="
)
JOIN = frame("QueueCallerJoin", 1795586095.7, "Queue: hotline", "Position: 1", "Count: 1")
CONNECT = frame(
    "AgentConnect",
    1795586098.0,
    "DestChannel: PJSIP/agent2-00000007",
    "DestChanVariable: HOTLINE_ROUTE=",
    "Queue: hotline",
    "Interface: PJSIP/agent2",
    "MemberName: Agent Two",
    "HoldTime: 2",
    "RingTime: 1",
)
DIAL_END = frame(
    "DialEnd",
    1795586098.0,
    "DestChannel: PJSIP/agent2-00000007",
    "DestChanVariable: HOTLINE_ROUTE=",
    "DialStatus: ANSWER",
)
HANGUP = frame("Hangup", 1795586160.0, "Cause: 16", "Cause-txt: Normal Clearing")


def event(text: str):  # type: ignore[no-untyped-def]
    return parse_event(parse_message(text), T0)


def test_the_route_on_the_channel_reaches_the_events() -> None:
    assert event(JOIN).route == ("ticket-owner", "12345-20261125-000001")
    assert event(CONNECT).route == ("ticket-owner", "12345-20261125-000001")
    assert isinstance(event(DIAL_END), DialAnswered)
    assert event(DIAL_END).route == ("ticket-owner", "12345-20261125-000001")
    fallback = JOIN.replace("ticket-owner/12345-20261125-000001", "bridge-timeout/")
    assert event(fallback).route == ("bridge-timeout", None)
    assert event(JOIN.replace("HOTLINE_ROUTE", "OTHER_VAR")).route == (None, None)


def test_a_call_routed_by_another_process_is_journalled_with_its_route() -> None:
    tracker = CallTracker(frozenset({"from-citizens"}))
    for text in (NEWCHANNEL, JOIN, CONNECT):
        tracker.handle(event(text))
    [call] = tracker.handle(event(HANGUP))
    assert (call.ticket, call.routing_reason) == ("12345-20261125-000001", "ticket-owner")
    assert call.outcome is CallOutcome.ANSWERED


def test_the_pipeline_says_when_a_call_is_offered_and_answered() -> None:
    pipeline = EventPipeline(CallTracker(frozenset({"from-citizens"})), QueueStats(UTC), lambda: T0)
    assert through_ami(pipeline, parse_message(NEWCHANNEL)).offered_call is None
    offered = through_ami(pipeline, parse_message(JOIN)).offered_call
    assert offered is not None and offered.queue == "hotline"
    answered = through_ami(pipeline, parse_message(CONNECT)).answered_call
    assert answered is not None and answered.agent_interface == "PJSIP/agent2"
    # Queue's own dial ends in the same instant; it must not count as a second answer.
    assert through_ami(pipeline, parse_message(DIAL_END)).answered_call is None
    assert isinstance(event(CONNECT), AgentConnected)
    assert isinstance(event(JOIN), CallerJoinedQueue)


class Recorder:
    def __init__(self) -> None:
        self.events: list[CtiEvent] = []

    def submit(self, cti_event: CtiEvent) -> None:
        self.events.append(cti_event)


def test_other_ticket_systems_see_new_call_answer_hangup_in_order() -> None:
    sender = Recorder()
    notifier = CtiNotifier(sender)  # type: ignore[arg-type]
    pipeline = EventPipeline(CallTracker(frozenset({"from-citizens"})), QueueStats(UTC), lambda: T0)
    for text in (NEWCHANNEL, JOIN, CONNECT, HANGUP):
        result = through_ami(pipeline, parse_message(text))
        if result.offered_call:
            notifier.call_offered(result.offered_call)
        if result.answered_call:
            notifier.call_answered(result.answered_call)
        for call in result.finished_calls:
            notifier.call_finished(call)
    assert [e.event for e in sender.events] == [
        CtiEventName.NEW_CALL,
        CtiEventName.ANSWER,
        CtiEventName.HANGUP,
    ]
    hangup = sender.events[-1].payload()
    assert hangup["callId"] == UNIQUEID and hangup["cause"] == "normalClearing"
    assert hangup["ticket"] == "12345-20261125-000001"
    assert sender.events[1].payload()["user"] == "Agent Two"


def test_a_call_that_ends_before_a_queue_still_starts_with_new_call() -> None:
    sender = Recorder()
    notifier = CtiNotifier(sender)  # type: ignore[arg-type]
    tracker = CallTracker(frozenset({"from-citizens"}))
    tracker.handle(event(NEWCHANNEL))
    [call] = tracker.handle(event(HANGUP))
    notifier.call_finished(call)
    assert [e.event for e in sender.events] == [CtiEventName.NEW_CALL, CtiEventName.HANGUP]
    assert sender.events[1].payload()["cause"] == "cancel"


def test_classic_agi_script_routes_over_stdin_and_stdout(tmp_path: Path) -> None:
    """``hotline-agi`` as Asterisk runs it: a process per call, AGI on its stdin and stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env["HOTLINE_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/hotline.db"
    env["HOTLINE_ROUTING_BUDGET_MS"] = "2000"  # a cold process migrates the database first

    def run_script(caller: str) -> list[str]:
        request = (
            "agi_request: hotline-agi\nagi_channel: PJSIP/citizens-00000001\n"
            f"agi_uniqueid: 1795586095.{caller[-1]}\nagi_callerid: {caller}\n"
            "agi_calleridname: 张三\nagi_extension: 12345\nagi_context: hotline-call\n\n"
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "hotline.classic_agi"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(request.encode())
        process.stdin.flush()
        commands = []
        while line := process.stdout.readline():
            commands.append(line.decode().rstrip("\n"))
            process.stdin.write(b"200 result=1\n")
            process.stdin.flush()
        assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
        return commands

    from hotline.schema import upgrade_database_sync

    upgrade_database_sync(env["HOTLINE_DATABASE_URL"])
    first = run_script("13800138000")
    assert first[:3] == [
        'SET VARIABLE "HOTLINE_QUEUE" "hotline"',
        'SET VARIABLE "HOTLINE_PRIORITY" "0"',
        'SET VARIABLE "HOTLINE_AGENT" ""',
    ]
    assert re.fullmatch(r'SET VARIABLE "HOTLINE_TICKET" "12345-\d{8}-000001"', first[3])
    assert first[4:] == ['SET VARIABLE "HOTLINE_REASON" "default"']
    second = run_script("13800138000")
    assert second[3] == first[3]  # the open ticket is reused
    assert second == [
        first[0],
        'SET VARIABLE "HOTLINE_PRIORITY" "5"',
        first[2],
        first[3],
        'SET VARIABLE "HOTLINE_REASON" "open-ticket"',
    ]
