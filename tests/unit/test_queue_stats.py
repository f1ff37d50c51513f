"""Queue and agent statistics: against Asterisk's own counters in the real transcript, and
against invariants over arbitrary event sequences."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from ami.feed import replay_file
from ami.replay import ReplayClock, read_transcript
from pbx.facts import (
    AgentCalled,
    AgentCompleted,
    AgentConnected,
    AgentRingNoAnswer,
    CallerAbandoned,
    CallerJoinedQueue,
    CallerLeftQueue,
    CallerReported,
    ChannelHungUp,
    MemberAdded,
    MemberPaused,
    MemberRemoved,
    MemberReported,
    MemberStatus,
    QueueExited,
    QueueReported,
)
from queue_stats.calls import CallTracker
from queue_stats.pipeline import EventPipeline
from queue_stats.stats import QueueStats
from tests.ami_feeding import through_ami

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def replay(path: Path) -> tuple[dict, QueueStats]:
    clock = ReplayClock()
    pipeline = EventPipeline(
        CallTracker(frozenset({"from-citizens"})), QueueStats(SHANGHAI), clock.current
    )
    replay_file(path, pipeline, clock)
    return pipeline.stats.snapshot(clock.current()), pipeline.stats


def transcript_facts(path: Path) -> tuple[dict[str, str], Counter[str], Counter[str]]:
    """Asterisk's QueueParams at the end, and AgentConnect/RingNoAnswer counts per interface."""
    params: dict[str, str] = {}
    connects: Counter[str] = Counter()
    no_answers: Counter[str] = Counter()
    for message in read_transcript(path):
        if message.event == "QueueParams":
            params = dict(message)
        elif message.event == "AgentConnect":
            connects[message["Interface"]] += 1
        elif message.event == "AgentRingNoAnswer":
            no_answers[message["Interface"]] += 1
    return params, connects, no_answers


def test_real_session_agrees_with_asterisks_counters(real_session: Path) -> None:
    snapshot, stats = replay(real_session)
    params, connects, no_answers = transcript_facts(real_session)
    hotline = snapshot["queues"]["hotline"]

    assert (hotline["offered"], hotline["answered"], hotline["abandoned"]) == (40, 22, 18)
    assert hotline["answered"] == int(params["Completed"])
    assert hotline["abandoned"] == int(params["Abandoned"])
    assert hotline["service_level"] * 100 == float(params["ServicelevelPerf"])
    assert hotline["service_level_seconds"] == int(params["ServiceLevel"])
    assert hotline["timed_out"] == 0 and hotline["waiting_now"] == 0
    for interface, agent in snapshot["agents"].items():
        assert agent["answered"] == connects[interface]
        assert agent["ring_no_answer"] == no_answers[interface]
    assert not stats.anomalies


def test_figures_are_derived_consistently(real_session: Path) -> None:
    snapshot, stats = replay(real_session)
    hotline = snapshot["queues"]["hotline"]
    today = stats.queues["hotline"].today
    rated = 40 - hotline["short_abandoned"]
    assert hotline["answer_rate"] == round(22 / rated, 4)
    assert hotline["abandon_rate"] == round((18 - hotline["short_abandoned"]) / rated, 4)
    assert hotline["asa_seconds"] == round(today.hold_seconds_answered / 22, 4)
    assert hotline["aht_seconds"] == round(today.talk_seconds / today.completed, 4)
    talk = sum(agent["talk_seconds"] for agent in snapshot["agents"].values())
    assert talk == today.talk_seconds


def test_replay_json_is_exactly_one_object_of_the_documented_shape(real_session: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hotline.cli", "replay", str(real_session), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    document = json.loads(result.stdout)
    assert set(document) == {"queues", "agents", "satisfaction"}
    satisfaction = document["satisfaction"]
    assert set(satisfaction) == {
        "scale", "today", "queues", "agents", "last_15_minutes", "last_15_minutes_queues", "hours",
    }  # fmt: skip
    assert set(satisfaction["today"]) == {
        "rated", "not_rated", "answers", "to_review", "satisfaction_rate", "participation_rate",
    }  # fmt: skip
    # A dialplan of before the survey: every answered call of the session counts as not rated.
    answered = sum(queue["answered"] for queue in document["queues"].values())
    assert (satisfaction["today"]["rated"], satisfaction["today"]["not_rated"]) == (0, answered)
    assert set(document["queues"]["hotline"]) == {
        "offered",
        "answered",
        "abandoned",
        "timed_out",
        "short_abandoned",
        "answer_rate",
        "abandon_rate",
        "service_level",
        "service_level_seconds",
        "asa_seconds",
        "aht_seconds",
        "longest_wait_seconds",
        "waiting_now",
    }
    assert set(document["agents"]["PJSIP/agent1"]) == {
        "name",
        "state",
        "paused",
        "pause_reason",
        "answered",
        "ring_no_answer",
        "talk_seconds",
    }
    table = subprocess.run(
        [sys.executable, "-m", "hotline.cli", "replay", str(real_session)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "hotline" in table and "Agent One" in table


# -- hand-made sequences -------------------------------------------------------------------


def _join(uid: str, at: datetime, queue: str = "hotline") -> CallerJoinedQueue:
    return CallerJoinedQueue(at, uid, uid, f"PJSIP/c-{uid}", queue, "138", "", 1)


def _agent_fields(uid: str, at: datetime, interface: str = "PJSIP/agent1") -> tuple:
    return (at, uid, uid, f"PJSIP/c-{uid}", "hotline", interface, "Agent One", f"{interface}-1")


def _hangup(uid: str, at: datetime) -> ChannelHungUp:
    return ChannelHungUp(at, uid, uid, f"PJSIP/c-{uid}", 16, "")


def test_timeout_short_abandon_and_service_level() -> None:
    stats = QueueStats(SHANGHAI, short_abandon_seconds=5)
    stats.handle(_join("a", T0))
    stats.handle(CallerLeftQueue(T0 + timedelta(seconds=30), "a", "a", "c", "hotline"))
    stats.handle(_hangup("a", T0 + timedelta(seconds=30)))  # left unanswered: timed out
    stats.handle(_join("b", T0))
    stats.handle(CallerAbandoned(T0 + timedelta(seconds=3), "b", "b", "c", "hotline", 3, 1, 1))
    stats.handle(_hangup("b", T0 + timedelta(seconds=3)))
    stats.handle(_join("c", T0))
    stats.handle(CallerLeftQueue(T0 + timedelta(seconds=25), "c", "c", "c", "hotline"))
    stats.handle(AgentConnected(*_agent_fields("c", T0 + timedelta(seconds=25)), 25, 2))
    stats.handle(_join("d", T0))
    stats.handle(AgentConnected(*_agent_fields("d", T0 + timedelta(seconds=10)), 10, 2))
    figures = stats.snapshot(T0 + timedelta(seconds=40))["queues"]["hotline"]
    assert (figures["offered"], figures["answered"], figures["abandoned"]) == (4, 2, 1)
    assert (figures["timed_out"], figures["short_abandoned"]) == (1, 1)
    assert figures["service_level"] == 0.5  # 10 s within 20 s, 25 s not
    assert figures["answer_rate"] == round(2 / 3, 4)  # the short abandon is left out


def test_agent_board_follows_ringing_call_pause_and_membership() -> None:
    stats = QueueStats(SHANGHAI, wrap_up_seconds=5)
    stats.handle(MemberAdded(T0, "hotline", "PJSIP/agent4", "Agent Four", False, ""))
    stats.handle(_join("x", T0))
    stats.handle(AgentCalled(*_agent_fields("x", T0, "PJSIP/agent4")))
    assert stats.snapshot(T0)["agents"]["PJSIP/agent4"]["state"] == "ringing"
    stats.handle(AgentRingNoAnswer(*_agent_fields("x", T0, "PJSIP/agent4"), 8))
    stats.handle(AgentConnected(*_agent_fields("x", T0, "PJSIP/agent4"), 9, 1))
    board = stats.snapshot(T0)["agents"]["PJSIP/agent4"]
    assert (board["state"], board["ring_no_answer"], board["answered"]) == ("on_call", 1, 1)
    done = T0 + timedelta(seconds=60)
    stats.handle(AgentCompleted(*_agent_fields("x", done, "PJSIP/agent4"), 9, 51, "caller"))
    assert stats.snapshot(done)["agents"]["PJSIP/agent4"]["state"] == "wrap_up"
    later = done + timedelta(seconds=6)
    assert stats.snapshot(later)["agents"]["PJSIP/agent4"]["state"] == "idle"
    stats.handle(MemberPaused(later, "hotline", "PJSIP/agent4", "Agent Four", True, "午饭"))
    board = stats.snapshot(later)["agents"]["PJSIP/agent4"]
    assert (board["state"], board["paused"], board["pause_reason"]) == ("paused", True, "午饭")
    stats.handle(
        MemberStatus(later, "hotline", "PJSIP/agent4", "Agent Four", 5, True, "午饭", False)
    )
    assert stats.snapshot(later)["agents"]["PJSIP/agent4"]["state"] == "unavailable"
    stats.handle(MemberRemoved(later, "hotline", "PJSIP/agent4", "Agent Four"))
    assert stats.snapshot(later)["agents"]["PJSIP/agent4"]["state"] == "logged_out"
    assert stats.snapshot(later)["agents"]["PJSIP/agent4"]["talk_seconds"] == 51


def test_today_starts_at_local_midnight_and_recent_is_fifteen_minutes() -> None:
    stats = QueueStats(SHANGHAI)
    before_midnight = datetime(2026, 11, 25, 15, 50, tzinfo=UTC)  # 23:50 in Shanghai
    stats.handle(_join("1", before_midnight))
    stats.handle(CallerAbandoned(before_midnight, "1", "1", "c", "hotline", 9, 1, 1))
    after_midnight = datetime(2026, 11, 25, 16, 5, tzinfo=UTC)  # 00:05 the next day
    stats.handle(_join("2", after_midnight))
    figures = stats.snapshot(after_midnight)["queues"]["hotline"]
    assert (figures["offered"], figures["abandoned"], figures["waiting_now"]) == (1, 0, 1)
    recent = stats.recent_snapshot(after_midnight)["hotline"]
    assert recent["offered"] == 1
    much_later = after_midnight + timedelta(minutes=20)
    assert stats.recent_snapshot(much_later)["hotline"]["offered"] == 0
    assert stats.snapshot(much_later)["queues"]["hotline"]["longest_wait_seconds"] == 1200.0
    hours = {hour: counters.offered for _, hour, counters in stats.take_dirty_hours()}
    assert hours == {
        datetime(2026, 11, 25, 15, 0, tzinfo=UTC): 1,  # 23:00-24:00 local, kept for saving
        datetime(2026, 11, 25, 16, 0, tzinfo=UTC): 1,
    }
    assert stats.take_dirty_hours() == []


def test_resync_replaces_live_state_but_keeps_the_days_counts() -> None:
    stats = QueueStats(SHANGHAI)
    stats.handle(MemberAdded(T0, "hotline", "PJSIP/agent9", "Gone", False, ""))
    stats.handle(_join("old", T0))  # its leave was lost while AMI was down
    now = T0 + timedelta(minutes=5)
    stats.resync(
        now,
        [QueueReported(now, "hotline", 30, 10, 2, 1)],
        [MemberReported(now, "hotline", "PJSIP/agent1", "Agent One", 1, True, "meeting", False, 4)],
        [CallerReported(now, "hotline", "new", "new", "c", "139", "", 1, 40)],
    )
    stats.handle(_join("new", now - timedelta(seconds=40)))  # buffered live join of "new"
    stats.settle_resync()
    snapshot = stats.snapshot(now)
    figures = snapshot["queues"]["hotline"]
    assert figures["waiting_now"] == 1 and figures["service_level_seconds"] == 30
    assert figures["longest_wait_seconds"] == 40.0
    assert figures["offered"] == 2  # "old" was offered earlier; "new" once, not twice
    assert snapshot["agents"]["PJSIP/agent9"]["state"] == "logged_out"
    assert snapshot["agents"]["PJSIP/agent1"]["pause_reason"] == "meeting"


# -- invariants over arbitrary sequences ---------------------------------------------------

OUTCOMES = st.sampled_from(
    ["answer", "abandon", "timeout", "wait", "answer_late_leave", "timeout_reported_as_abandon"]
)


@settings(max_examples=300, deadline=None)
@given(
    plan=st.lists(st.tuples(OUTCOMES, st.integers(0, 120), st.integers(0, 3)), max_size=25),
    order_seed=st.randoms(use_true_random=False),
)
def test_offered_always_equals_answered_abandoned_timed_out_and_waiting(plan, order_seed) -> None:  # type: ignore[no-untyped-def]
    """Whatever the mix and interleaving, no count goes negative and every offer is accounted."""
    stats = QueueStats(SHANGHAI)
    streams = []
    for index, (outcome, wait, queue_number) in enumerate(plan):
        uid, queue = f"c{index}", ["hotline", "enterprise", "emergency", "hotline"][queue_number]
        start = T0 + timedelta(seconds=index)
        end = start + timedelta(seconds=wait)
        events: list = [CallerJoinedQueue(start, uid, uid, "c", queue, "1", "", 1)]
        fields = (end, uid, uid, "c", queue, "PJSIP/agent1", "A", "PJSIP/agent1-1")
        if outcome == "answer":
            events += [
                CallerLeftQueue(end, uid, uid, "c", queue),
                AgentConnected(*fields, wait, 1),
                AgentCompleted(*fields, wait, 5, "x"),
                ChannelHungUp(end, uid, uid, "c", 16, ""),
            ]
        elif outcome == "answer_late_leave":
            events += [AgentConnected(*fields, wait, 1), CallerLeftQueue(end, uid, uid, "c", queue)]
        elif outcome == "abandon":
            events += [
                CallerAbandoned(end, uid, uid, "c", queue, wait, 1, 1),
                CallerLeftQueue(end, uid, uid, "c", queue),
                ChannelHungUp(end, uid, uid, "c", 16, ""),
            ]
        elif outcome == "timeout":
            events += [
                CallerLeftQueue(end, uid, uid, "c", queue),
                ChannelHungUp(end, uid, uid, "c", 16, ""),
            ]
        elif outcome == "timeout_reported_as_abandon":  # what Asterisk 22 really sends
            events += [
                CallerAbandoned(end, uid, uid, "c", queue, wait, 1, 1),
                CallerLeftQueue(end, uid, uid, "c", queue),
                QueueExited(end, uid, uid, "c", queue, "TIMEOUT"),
                ChannelHungUp(end, uid, uid, "c", 16, ""),
            ]
        streams.append(events)
    while any(streams):  # interleave the calls, each call's own events staying in order
        stream = order_seed.choice([s for s in streams if s])
        stats.handle(stream.pop(0))
        for queue in stats.queues.values():
            today = queue.today
            left_pending = sum(1 for e in stats._left.values() if e.queue == queue.name)
            assert len(queue.waiting) >= 0 and min(vars_of(today)) >= 0
            assert today.offered == (
                today.answered
                + today.abandoned
                + today.timed_out
                + len(queue.waiting)
                + left_pending
            )
            assert today.short_abandoned <= today.abandoned
            assert today.answered_within_sl <= today.answered
    expected = Counter(outcome for outcome, _, _ in plan)
    totals = Counter()
    for queue in stats.queues.values():
        totals["answered"] += queue.today.answered
        totals["abandoned"] += queue.today.abandoned
        totals["timed_out"] += queue.today.timed_out
        totals["waiting"] += len(queue.waiting)
    assert totals["answered"] == expected["answer"] + expected["answer_late_leave"]
    assert totals["abandoned"] == expected["abandon"]
    assert totals["timed_out"] == expected["timeout"] + expected["timeout_reported_as_abandon"]
    assert totals["waiting"] == expected["wait"]


def vars_of(counters) -> list[int]:  # type: ignore[no-untyped-def]
    return [getattr(counters, name) for name in counters.__slots__]


def test_memory_does_not_grow_with_the_number_of_calls_seen(real_session: Path) -> None:
    """The same 40-call session fed 10 and then 40 more times: state stays the same size."""
    import tracemalloc

    from ami.codec import AmiFrameDecoder
    from ami.feed import keep_event

    raw = real_session.read_bytes()
    body = raw.split(b"\r\n", 1)[1]  # without the greeting: one long stream
    clock = ReplayClock()
    clock.seed(read_transcript(real_session, keep_event))
    pipeline = EventPipeline(
        CallTracker(frozenset({"from-citizens"})), QueueStats(SHANGHAI), clock.current
    )
    decoder = AmiFrameDecoder(keep_event)

    def feed(times: int) -> None:
        for chunk in [raw[: len(raw) - len(body)]] + [body] * times:
            for message in decoder.feed(chunk):
                through_ami(pipeline, message, clock.advance(message))

    feed(10)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    feed(40)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert pipeline.stats.queues["hotline"].today.offered == 40 * 50
    assert pipeline.tracker.live_calls == 0
    assert growth < 64 * 1024, f"state grew by {growth} bytes over 1,600 calls"


def test_apply_counts_as_on_event_does(real_session: Path) -> None:
    """A replay asks ``apply`` (the calls finished, whether figures changed); the live service
    asks ``on_event``, which adds whom to notify. The figures and the calls are the same."""
    from ami.feed import AmiTranslator, keep_event
    from queue_stats.satisfaction import SatisfactionStats
    from survey.scale import DEFAULT_SCALE

    def pipeline(clock: ReplayClock) -> EventPipeline:
        return EventPipeline(
            CallTracker(frozenset({"from-citizens"}), surveys=True),
            QueueStats(SHANGHAI),
            clock.current,
            SatisfactionStats(SHANGHAI, DEFAULT_SCALE),
        )

    messages = list(read_transcript(real_session, keep_event))
    live_clock, replay_clock = ReplayClock(), ReplayClock()
    live, replayed = pipeline(live_clock), pipeline(replay_clock)
    live_translator, replay_translator = AmiTranslator(), AmiTranslator()
    live_calls, replayed_calls = [], []
    live_changes, replayed_changes = [], []
    for message in live_clock.seeded(messages):
        fact = live_translator.translate(message, live_clock.advance(message))
        if fact is not None:
            result = live.on_event(fact)
            live_calls += result.finished_calls
            live_changes.append(result.stats_changed)
    for message in replay_clock.seeded(messages):
        fact = replay_translator.translate(message, replay_clock.advance(message))
        if fact is not None:
            finished, changed = replayed.apply(fact)
            replayed_calls += finished
            replayed_changes.append(changed)
    assert replayed_calls == live_calls and len(live_calls) == 40
    assert replayed_changes == live_changes
    assert replayed.snapshot(replay_clock.current()) == live.snapshot(live_clock.current())
    assert replayed.counters == live.counters
