"""The call tracker against the real Asterisk 22 transcript and a few hand-made edge cases."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ami.codec import parse_message
from ami.events import WANTED_EVENTS, parse_event
from ami.replay import ReplayClock, read_transcript
from pbx.facts import (
    AgentCompleted,
    AgentConnected,
    CallerJoinedQueue,
    CallerLeftQueue,
    ChannelCreated,
    ChannelHungUp,
    DialAnswered,
)
from queue_stats.calls import CallOutcome, CallRecord, CallTracker, Routing

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def replay_calls(path: Path) -> tuple[list[CallRecord], CallTracker]:
    tracker = CallTracker(frozenset({"from-citizens"}))
    clock = ReplayClock()
    finished: list[CallRecord] = []
    for message in read_transcript(path, lambda name: name in WANTED_EVENTS):
        event = parse_event(message, clock.advance(message))
        if event is not None:
            finished += tracker.handle(event)
    return finished, tracker


def asterisk_counters(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Asterisk's own QueueParams and per-member CallsTaken, read from the transcript's end."""
    params: dict[str, str] = {}
    taken: dict[str, int] = {}
    for message in read_transcript(path):
        if message.event == "QueueParams":
            params = dict(message)
        elif message.event == "QueueMember":
            taken[message["Location"]] = int(message["CallsTaken"])
    return params, taken


def test_real_session_gives_one_record_per_call_matching_asterisk(real_session: Path) -> None:
    calls, tracker = replay_calls(real_session)
    params, taken = asterisk_counters(real_session)
    outcomes = Counter(call.outcome for call in calls)

    assert len(calls) == 40
    assert outcomes[CallOutcome.ANSWERED] == int(params["Completed"]) == 22
    assert outcomes[CallOutcome.ABANDONED] == int(params["Abandoned"]) == 18
    answered_by = Counter(c.agent_interface for c in calls if c.outcome is CallOutcome.ANSWERED)
    assert answered_by == {k: v for k, v in taken.items() if v}
    assert len({call.uniqueid for call in calls}) == 40
    assert tracker.live_calls == 0
    assert not tracker.anomalies


def test_real_session_records_carry_caller_queue_and_times(real_session: Path) -> None:
    calls, _ = replay_calls(real_session)
    first = calls[0]
    assert first.caller_number == "13800001"
    assert first.caller_name == "Citizen 1"
    assert first.dialled_number == "12345"
    assert first.queue == "hotline"
    assert first.agent_interface == "PJSIP/agent1"
    assert first.agent_name == "Agent One"
    assert first.talk_seconds == 5  # AgentComplete TalkTime
    assert first.started_at == datetime.fromtimestamp(1795575485, tz=UTC)
    for call in calls:
        assert call.ended_at is not None and call.ended_at >= call.started_at
        assert call.hold_seconds is not None and call.hold_seconds >= 0
        if call.outcome is CallOutcome.ANSWERED:
            assert call.talk_seconds is not None and call.answered_at is not None
        else:
            assert call.agent_interface is None and call.talk_seconds is None


def _created(uid: str, at: datetime, context: str = "from-citizens") -> ChannelCreated:
    return ChannelCreated(
        at, uid, uid, f"PJSIP/citizens-{uid}", "13800138000", "", context, "12345"
    )


def _joined(uid: str, at: datetime) -> CallerJoinedQueue:
    return CallerJoinedQueue(at, uid, uid, f"PJSIP/citizens-{uid}", "hotline", "13800138000", "", 1)


def _hangup(uid: str, at: datetime) -> ChannelHungUp:
    return ChannelHungUp(at, uid, uid, f"PJSIP/citizens-{uid}", 16, "Normal Clearing")


def test_leaving_the_queue_unanswered_is_a_timeout_with_its_wait() -> None:
    tracker = CallTracker(frozenset({"from-citizens"}))
    tracker.handle(_created("1.1", T0))
    tracker.handle(_joined("1.1", T0 + timedelta(seconds=1)))
    tracker.handle(CallerLeftQueue(T0 + timedelta(seconds=46), "1.1", "1.1", "c", "hotline"))
    [call] = tracker.handle(_hangup("1.1", T0 + timedelta(seconds=47)))
    assert call.outcome is CallOutcome.TIMEOUT
    assert call.hold_seconds == 45


def test_hanging_up_before_any_queue_is_its_own_outcome() -> None:
    tracker = CallTracker(frozenset({"from-citizens"}))
    tracker.handle(_created("2.1", T0))
    [call] = tracker.handle(_hangup("2.1", T0 + timedelta(seconds=2)))
    assert call.outcome is CallOutcome.HUNG_UP_BEFORE_QUEUE


def test_agent_channels_and_other_contexts_are_not_calls() -> None:
    tracker = CallTracker(frozenset({"from-citizens"}))
    tracker.handle(_created("3.1", T0, context="agents"))
    assert tracker.handle(_hangup("3.1", T0)) == []
    assert tracker.live_calls == 0


def test_routing_decided_before_amis_newchannel_is_kept_for_the_call() -> None:
    tracker = CallTracker(frozenset({"from-citizens"}))
    tracker.routed(
        "4.1", Routing(queue="hotline", reason="default", ticket="12345-20261125-000001")
    )
    tracker.handle(_created("4.1", T0))
    [call] = tracker.handle(_hangup("4.1", T0))
    assert call.ticket == "12345-20261125-000001"
    assert call.routing_reason == "default"


def test_preferred_agent_answering_outside_the_queue_is_answered() -> None:
    tracker = CallTracker(frozenset({"from-citizens"}))
    tracker.handle(_created("5.1", T0))
    tracker.handle(
        DialAnswered(
            T0 + timedelta(seconds=3), "5.1", "5.1", "c", "PJSIP/agent2-0000000a", "PJSIP/agent2"
        )
    )
    [call] = tracker.handle(_hangup("5.1", T0 + timedelta(seconds=63)))
    assert call.outcome is CallOutcome.ANSWERED
    assert call.agent_interface == "PJSIP/agent2"
    assert (call.hold_seconds, call.talk_seconds) == (3, 60)
    assert call.queue is None


def test_a_call_the_bridge_joined_late_starts_at_the_queue_and_unknowns_are_counted() -> None:
    tracker = CallTracker(frozenset({"from-citizens"}))
    tracker.handle(AgentConnected(T0, "9.9", "9.9", "c", "hotline", "PJSIP/agent1", "A", "x", 1, 1))
    assert tracker.anomalies["connect-unknown-call"] == 1
    tracker.handle(_joined("6.1", T0))
    tracker.handle(AgentConnected(T0, "6.1", "6.1", "c", "hotline", "PJSIP/agent1", "A", "x", 4, 2))
    tracker.handle(
        AgentCompleted(T0, "6.1", "6.1", "c", "hotline", "PJSIP/agent1", "A", "x", 4, 30, "agent")
    )
    [call] = tracker.handle(_hangup("6.1", T0))
    assert (call.outcome, call.hold_seconds, call.talk_seconds) == (CallOutcome.ANSWERED, 4, 30)


def test_asterisk_timestamp_header_is_the_event_time() -> None:
    message = parse_message(
        "Event: Hangup\r\nTimestamp: 1795575485.250000\r\nChannel: PJSIP/x-00000001\r\n"
        "Uniqueid: 1.1\r\nLinkedid: 1.1\r\nCause: 16"
    )
    event = parse_event(message, T0)
    assert event is not None
    assert event.at == datetime.fromtimestamp(1795575485.25, tz=UTC)
