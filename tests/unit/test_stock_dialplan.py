"""Timeouts told apart from abandons from AMI alone, on a dialplan without our user event.

``tests/fixtures/stock-dialplan.ami`` was recorded (``scripts/record-transcript stock-dialplan``)
through the shipped ``hotline`` account, which receives ``HangupRequest`` and
``SoftHangupRequest``, on a site's own dialplan: Answer, Queue with a 6 s limit, an announcement,
Hangup; no FastAGI and no ``HotlineQueueResult``. Asterisk's queue_log of the same run says which
caller abandoned (ABANDON) and which timed out (EXITWITHTIMEOUT).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ami.events import parse_event
from ami.feed import replay_file
from ami.queue_log import parse_line
from ami.replay import ReplayClock, read_transcript
from pbx.facts import (
    AgentConnected,
    CallerAbandoned,
    CallerJoinedQueue,
    CallerLeftQueue,
    ChannelCreated,
    ChannelHungUp,
    DomainEvent,
    HangupRequested,
    PbxBooted,
    QueueExited,
)
from queue_stats.calls import CallOutcome, CallRecord, CallTracker
from queue_stats.pipeline import EventPipeline
from queue_stats.stats import QueueStats
from tests.queue_log import read_queue_log

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STOCK = FIXTURES / "stock-dialplan.ami"
STOCK_LOG = FIXTURES / "stock-dialplan.queue_log"
SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
OUTCOME_OF_EXIT = {
    "ABANDON": CallOutcome.ABANDONED,
    "EXITWITHTIMEOUT": CallOutcome.TIMEOUT,
    "EXITEMPTY": CallOutcome.TIMEOUT,
    "CONNECT": CallOutcome.ANSWERED,
}


def replay(path: Path) -> tuple[dict, list[CallRecord], EventPipeline]:
    clock = ReplayClock()
    pipeline = EventPipeline(
        CallTracker(frozenset({"from-citizens"})), QueueStats(SHANGHAI), clock.current
    )
    calls = replay_file(path, pipeline, clock)
    return pipeline.stats.snapshot(clock.current()), calls, pipeline


def without_events(names: set[str], target: Path) -> Path:
    """The recording as an account that filters ``names`` out would have received it."""
    frames = STOCK.read_bytes().split(b"\r\n\r\n")
    kept = [f for f in frames if not any(b"Event: " + n.encode() + b"\r\n" in f for n in names)]
    target.write_bytes(b"\r\n\r\n".join(kept))
    return target


# -- the recorded session --------------------------------------------------------------------


def test_the_recording_is_a_stock_dialplan_with_both_kinds_of_exit_in_each_queue() -> None:
    events = Counter(message.event for message in read_transcript(STOCK))
    assert events["UserEvent"] == 0  # no HotlineQueueResult
    assert events["HangupRequest"] > 0 and events["SoftHangupRequest"] > 0
    logged = read_queue_log(STOCK_LOG)
    for queue in ("hotline", "enterprise"):
        counts = logged.queues[queue]
        assert counts.abandoned > 0 and counts.timed_out > 0 and counts.answered > 0, queue
    lines = STOCK_LOG.read_text().splitlines()
    assert not [line for line in lines if "|HOTLINECALL|" in line]  # not our dialplan


def test_hang_up_requests_parse_into_one_typed_frozen_event() -> None:
    requests = [
        (message.event, parse_event(message, T0))
        for message in read_transcript(STOCK)
        if message.event in ("HangupRequest", "SoftHangupRequest")
    ]
    assert requests
    for name, event in requests:
        assert isinstance(event, HangupRequested)
        assert event.soft is (name == "SoftHangupRequest")
        assert event.channel.startswith("PJSIP/") and event.uniqueid
    # soft-hangup flags: 16 as every channel ends here, 32 for the operator's CLI hang-up
    assert {e.cause for _, e in requests if e.soft} == {16, 32}
    with pytest.raises(FrozenInstanceError):
        requests[0][1].soft = True  # type: ignore[misc]


def test_timeouts_and_abandons_per_queue_equal_queue_log() -> None:
    snapshot, calls, pipeline = replay(STOCK)
    logged = read_queue_log(STOCK_LOG)
    for queue, counts in logged.queues.items():
        ours = snapshot["queues"][queue]
        assert ours["abandoned"] == counts.abandoned, queue
        assert ours["timed_out"] == counts.timed_out + counts.exited_empty, queue
        journal = Counter(call.outcome for call in calls if call.queue == queue)
        assert journal[CallOutcome.ABANDONED] == counts.abandoned, queue
        assert journal[CallOutcome.TIMEOUT] == counts.timed_out + counts.exited_empty, queue
    assert not pipeline.stats.anomalies and not pipeline.tracker.anomalies


def test_each_call_has_the_outcome_asterisk_logged_for_it() -> None:
    _, calls, _ = replay(STOCK)
    entries = [e for e in map(parse_line, STOCK_LOG.read_text().splitlines()) if e]
    logged = {e.callid: OUTCOME_OF_EXIT[e.event] for e in entries if e.event in OUTCOME_OF_EXIT}
    assert {call.uniqueid: call.outcome for call in calls} == logged


def test_without_hangup_requests_every_timeout_counts_as_an_abandon_as_before(
    tmp_path: Path,
) -> None:
    """What the bridge counted through the account that filtered them out (Asterisk's own
    ``Abandoned``): the hang-up requests are what tells a timeout apart here."""
    filtered = without_events({"HangupRequest", "SoftHangupRequest"}, tmp_path / "f.ami")
    snapshot, calls, _ = replay(filtered)
    logged = read_queue_log(STOCK_LOG)
    for queue, counts in logged.queues.items():
        ours = snapshot["queues"][queue]
        assert ours["abandoned"] == counts.abandoned + counts.timed_out, queue
        assert ours["timed_out"] == 0, queue
    assert CallOutcome.TIMEOUT not in {call.outcome for call in calls}


def test_without_soft_hangup_requests_the_caller_an_operator_hung_up_is_a_timeout(
    tmp_path: Path,
) -> None:
    """Why the shipped account receives SoftHangupRequest too: one caller was hung up by an
    operator while waiting (queue_log: ABANDON), and only a soft request came before it."""
    _, calls, _ = replay(STOCK)
    _, filtered_calls, _ = replay(without_events({"SoftHangupRequest"}, tmp_path / "f.ami"))
    changed = [
        (call.outcome, other.outcome)
        for call, other in zip(calls, filtered_calls, strict=True)
        if call.outcome is not other.outcome
    ]
    assert changed == [(CallOutcome.ABANDONED, CallOutcome.TIMEOUT)]


def test_nothing_about_hang_up_requests_is_kept_after_the_calls_ended() -> None:
    _, _, pipeline = replay(STOCK)
    assert pipeline.tracker.live_calls == 0
    assert not pipeline.tracker._hangup_requested
    assert not pipeline.tracker._unrequested_abandons
    assert not pipeline.tracker._reported_by_dialplan
    assert not pipeline.stats._left


# -- the ordering rule on hand-made sequences ------------------------------------------------


class Hotline:
    """Hand-made AMI facts through the one pipeline (call tracker and statistics)."""

    def __init__(self) -> None:
        self.pipeline = EventPipeline(
            CallTracker(frozenset({"from-citizens"})), QueueStats(SHANGHAI), lambda: T0
        )
        self.calls: dict[str, CallRecord] = {}
        self._seconds = 0

    def _at(self) -> datetime:
        self._seconds += 1
        return T0 + timedelta(seconds=self._seconds)

    def feed(self, event: DomainEvent) -> None:
        for call in self.pipeline.on_event(event).finished_calls:
            self.calls[call.uniqueid] = call

    def arrives(self, uid: str, queue: str = "hotline", our_dialplan: bool = False) -> None:
        """Joins ``queue``; ``our_dialplan``: with the HOTLINE_ROUTE it sets on the channel."""
        channel = f"PJSIP/citizens-{uid}"
        route = ("default", None) if our_dialplan else (None, None)
        self.feed(ChannelCreated(self._at(), uid, uid, channel, "138", "", "from-citizens", "1"))
        self.feed(
            CallerJoinedQueue(self._at(), uid, uid, channel, queue, "138", "", 1, route=route)
        )

    def asked_to_hang_up(self, uid: str, soft: bool = False) -> None:
        cause = 32 if soft else 16
        self.feed(HangupRequested(self._at(), uid, uid, f"PJSIP/citizens-{uid}", cause, soft))

    def abandoned(self, uid: str, queue: str = "hotline") -> None:
        """Asterisk's QueueCallerAbandon (a hang-up or a timeout), then QueueCallerLeave."""
        channel = f"PJSIP/citizens-{uid}"
        self.feed(CallerAbandoned(self._at(), uid, uid, channel, queue, 6, 1, 1))
        self.feed(CallerLeftQueue(self._at(), uid, uid, channel, queue))

    def answered(self, uid: str) -> None:
        channel = f"PJSIP/citizens-{uid}"
        self.feed(CallerLeftQueue(self._at(), uid, uid, channel, "hotline"))
        member = ("hotline", "PJSIP/agent1", "Agent One", "PJSIP/agent1-01")
        self.feed(AgentConnected(self._at(), uid, uid, channel, *member, 2, 1))

    def hangs_up(self, uid: str) -> None:
        self.feed(ChannelHungUp(self._at(), uid, uid, f"PJSIP/citizens-{uid}", 16, ""))

    def figures(self, queue: str = "hotline") -> tuple[int, int]:
        """(abandoned, timed out) as the panel shows them now."""
        today = self.pipeline.stats.queues[queue].today
        return today.abandoned, today.timed_out

    def outcome(self, uid: str) -> CallOutcome | None:
        return self.calls[uid].outcome


def test_a_hang_up_request_before_the_abandon_is_an_abandon() -> None:
    bed = Hotline()
    bed.arrives("a")
    bed.asked_to_hang_up("a")  # the caller's BYE
    bed.abandoned("a")
    bed.hangs_up("a")
    assert bed.figures() == (1, 0)
    assert bed.outcome("a") is CallOutcome.ABANDONED


def test_no_request_before_the_abandon_is_a_timeout_once_the_login_has_shown_requests() -> None:
    bed = Hotline()
    bed.arrives("a")
    bed.asked_to_hang_up("a")
    bed.abandoned("a")
    bed.hangs_up("a")
    bed.arrives("b")
    bed.abandoned("b")  # Queue() timed out; the channel goes on in the dialplan
    assert bed.figures() == (1, 1)  # settled at once, not at the end of the announcement
    bed.asked_to_hang_up("b", soft=True)  # Hangup() at the end of the dialplan
    bed.hangs_up("b")
    assert bed.figures() == (1, 1)
    assert (bed.outcome("a"), bed.outcome("b")) == (CallOutcome.ABANDONED, CallOutcome.TIMEOUT)


def test_a_request_heard_after_the_abandon_decides_at_the_hangup() -> None:
    """The first exit of a login: no request heard yet, so the abandon waits for its Hangup.
    The caller then hangs up during the announcement: requests do reach this login, and none
    came before the abandon."""
    bed = Hotline()
    bed.arrives("a")
    bed.abandoned("a")
    assert bed.figures() == (0, 0)
    bed.asked_to_hang_up("a")
    bed.hangs_up("a")
    assert bed.figures() == (0, 1)
    assert bed.outcome("a") is CallOutcome.TIMEOUT


def test_a_login_that_delivers_no_requests_counts_abandons_as_asterisk_does() -> None:
    """A manager account that filters HangupRequest out: no absence means anything."""
    bed = Hotline()
    for uid in ("a", "b"):
        bed.arrives(uid)
        bed.abandoned(uid)
        bed.asked_to_hang_up(uid, soft=True)  # soft requests prove nothing about the filter
        bed.hangs_up(uid)
    assert bed.figures() == (2, 0)
    assert {bed.outcome("a"), bed.outcome("b")} == {CallOutcome.ABANDONED}


def test_a_caller_an_operator_hangs_up_while_waiting_is_an_abandon() -> None:
    bed = Hotline()
    bed.arrives("x")
    bed.asked_to_hang_up("x")
    bed.abandoned("x")
    bed.hangs_up("x")
    bed.arrives("a")
    bed.asked_to_hang_up("a", soft=True)  # channel request hangup, or AMI's Hangup
    bed.abandoned("a")
    bed.hangs_up("a")
    assert bed.figures() == (2, 0)
    assert bed.outcome("a") is CallOutcome.ABANDONED


def test_an_abandon_of_a_caller_not_seen_waiting_stays_an_abandon() -> None:
    """Events were lost (or the bridge came late without a resync): whether a hang-up was asked
    before is unknown, so Asterisk's word stands, even on a login that shows requests."""
    bed = Hotline()
    bed.arrives("x")
    bed.asked_to_hang_up("x")
    bed.abandoned("x")
    bed.hangs_up("x")
    bed.abandoned("ghost")
    bed.hangs_up("ghost")
    assert bed.figures() == (2, 0)


def test_our_user_event_still_wins() -> None:
    bed = Hotline()
    bed.arrives("a")
    bed.abandoned("a")
    bed.feed(QueueExited(T0, "a", "a", "PJSIP/citizens-a", "hotline", "TIMEOUT"))
    bed.hangs_up("a")
    assert bed.figures() == (0, 1)
    assert bed.outcome("a") is CallOutcome.TIMEOUT


def test_for_a_caller_our_dialplan_queued_the_user_event_alone_decides() -> None:
    """Our dialplan reports every return of Queue(); without that report the caller was hung up,
    even with no request first: AMI's Hangup action or a Redirect of a waiting caller send none,
    and queue_log says ABANDON for them."""
    bed = Hotline()
    bed.arrives("x")
    bed.asked_to_hang_up("x")  # this login delivers requests
    bed.abandoned("x")
    bed.hangs_up("x")
    bed.arrives("a", our_dialplan=True)
    bed.abandoned("a")  # hung up by AMI's Hangup action: no request before
    bed.hangs_up("a")
    bed.arrives("b", our_dialplan=True)
    bed.abandoned("b")
    bed.feed(QueueExited(T0, "b", "b", "PJSIP/citizens-b", "hotline", "TIMEOUT"))
    bed.hangs_up("b")
    assert bed.figures() == (2, 1)
    assert (bed.outcome("a"), bed.outcome("b")) == (CallOutcome.ABANDONED, CallOutcome.TIMEOUT)


def test_a_new_login_has_to_show_requests_again() -> None:
    """After a reconnect the account (and its filter) may be another."""
    bed = Hotline()
    bed.arrives("a")
    bed.asked_to_hang_up("a")
    bed.abandoned("a")
    bed.hangs_up("a")
    bed.feed(PbxBooted(T0 + timedelta(minutes=1)))
    bed.arrives("b")
    bed.abandoned("b")
    bed.hangs_up("b")
    assert bed.figures() == (2, 0)
    assert bed.outcome("b") is CallOutcome.ABANDONED


def test_requests_are_remembered_only_for_callers_waiting_in_a_queue() -> None:
    bed = Hotline()
    tracker, stats = bed.pipeline.tracker, bed.pipeline.stats
    bed.asked_to_hang_up("agent-leg")  # not a call the tracker follows
    bed.arrives("a")
    bed.answered("a")
    bed.asked_to_hang_up("a")  # talking to an agent, not waiting
    bed.arrives("b")
    bed.asked_to_hang_up("b")
    assert tracker._hangup_requested == {"b"}
    assert [w.uniqueid for w in stats.queues["hotline"].waiting.values()] == ["b"]
    bed.abandoned("b")
    assert not tracker._hangup_requested and not stats.queues["hotline"].waiting
    bed.hangs_up("a")
    bed.hangs_up("b")
    bed.arrives("c", our_dialplan=True)
    bed.asked_to_hang_up("c")
    bed.abandoned("c")
    bed.hangs_up("c")
    assert not tracker._hangup_requested and not tracker._unrequested_abandons
    assert not tracker._reported_by_dialplan and not stats._left
    assert bed.outcome("a") is CallOutcome.ANSWERED
    assert bed.outcome("b") is CallOutcome.ABANDONED


def test_a_caller_sent_on_to_another_queue_timed_out_of_the_first() -> None:
    """A dialplan that queues timed-out callers again: joining is no hang-up, even on a login
    that shows no requests."""
    bed = Hotline()
    bed.arrives("a", "hotline")
    bed.abandoned("a", "hotline")
    bed.feed(CallerJoinedQueue(T0 + timedelta(minutes=1), "a", "a", "c", "enterprise", "", "", 1))
    assert bed.figures("hotline") == (0, 1)
    bed.asked_to_hang_up("a")
    bed.abandoned("a", "enterprise")
    bed.hangs_up("a")
    assert bed.figures("enterprise") == (1, 0)
    assert bed.outcome("a") is CallOutcome.ABANDONED
