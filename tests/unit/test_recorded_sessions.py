"""Replays of sessions recorded on our Asterisk 22 test bed agree with that run's queue_log.

Each ``tests/fixtures/<name>.ami`` is the raw AMI stream the bridge's own account received
(``scripts/record-transcript``); ``<name>.queue_log`` is what Asterisk itself logged for the
same calls. The replay goes through the same decoder, filter and pipeline as live traffic.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ami.feed import CALLER_HEADERS, AmiTranslator, replay_file
from ami.replay import ReplayClock
from queue_stats.calls import CallOutcome, CallTracker
from queue_stats.pipeline import EventPipeline
from queue_stats.stats import QueueStats
from tests.queue_log import read_queue_log

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDED = sorted(path.stem for path in FIXTURES.glob("*.queue_log"))
# Per queue (offered, answered, abandoned, timed out, short abandoned), and the journal's
# outcomes, as the bridge gave them before it read hang-up requests: they must not move.
# (stock-dialplan, recorded on a dialplan without our user event, is what they changed.)
FIGURES_BEFORE_HANGUP_REQUESTS = {
    "hotline-3-agents-40-calls": (
        {"hotline": (40, 22, 18, 0, 6)},
        {"abandoned": 18, "answered": 22},
    ),
    "multi-queue-pause": (
        {"emergency": (4, 2, 2, 0, 0), "enterprise": (5, 1, 4, 0, 0), "hotline": (17, 13, 4, 0, 0)},
        {"abandoned": 10, "answered": 16},
    ),
    "timeouts": (
        {"emergency": (4, 0, 1, 3, 1), "enterprise": (3, 0, 0, 3, 0), "hotline": (11, 4, 2, 5, 2)},
        {"abandoned": 3, "answered": 4, "timeout": 11},
    ),
    "unreachable-agent": (
        {"emergency": (0, 0, 0, 0, 0), "enterprise": (5, 1, 4, 0, 0), "hotline": (9, 8, 1, 0, 0)},
        {"abandoned": 5, "answered": 9},
    ),
}
HANGUP_REQUESTS = (b"HangupRequest", b"SoftHangupRequest")


def replay(name: str, path: Path | None = None) -> tuple[dict, list, EventPipeline]:
    snapshot, calls, pipeline, _ = replay_counting(name, path)
    return snapshot, calls, pipeline


def replay_counting(
    name: str, path: Path | None = None
) -> tuple[dict, list, EventPipeline, AmiTranslator]:
    """The session's figures and journal, its pipeline, and the AMI translator (its counters)."""
    clock = ReplayClock()
    pipeline = EventPipeline(
        CallTracker(frozenset({"from-citizens"})),
        QueueStats(ZoneInfo("Asia/Shanghai")),
        clock.current,
    )
    translator = AmiTranslator()
    calls = replay_file(path or FIXTURES / f"{name}.ami", pipeline, clock, translator)
    return pipeline.stats.snapshot(clock.current()), calls, pipeline, translator


def test_there_are_recorded_sessions_to_check() -> None:
    assert len(RECORDED) >= 2


@pytest.mark.parametrize("name", RECORDED)
def test_queue_figures_agree_with_queue_log(name: str) -> None:
    snapshot, _, pipeline = replay(name)
    logged = read_queue_log(FIXTURES / f"{name}.queue_log")
    assert set(logged.queues) <= set(snapshot["queues"])
    for queue in set(snapshot["queues"]) - set(logged.queues):  # known only from QueueStatus
        assert snapshot["queues"][queue]["offered"] == 0
    for queue, counts in logged.queues.items():
        ours = snapshot["queues"][queue]
        today = pipeline.stats.queues[queue].today
        assert ours["offered"] == counts.offered, queue
        assert ours["answered"] == counts.answered, queue
        assert ours["abandoned"] == counts.abandoned, queue
        assert ours["timed_out"] == counts.timed_out + counts.exited_empty, queue
        assert ours["waiting_now"] == 0
        assert today.answered_within_sl == counts.answered_within_sl, queue
        assert today.hold_seconds_answered == counts.hold_seconds_answered, queue
        assert today.talk_seconds == counts.talk_seconds, queue
    assert not pipeline.stats.anomalies


@pytest.mark.parametrize("name", RECORDED)
def test_agent_figures_agree_with_queue_log(name: str) -> None:
    snapshot, _, _ = replay(name)
    logged = read_queue_log(FIXTURES / f"{name}.queue_log")
    by_name = {agent["name"]: agent for agent in snapshot["agents"].values()}
    for member_name, counts in logged.agents.items():
        if member_name == "NONE":  # queue_log's placeholder on caller lines
            continue
        ours = by_name[member_name]
        assert ours["answered"] == counts.answered, member_name
        assert ours["ring_no_answer"] == counts.ring_no_answer, member_name
        assert ours["talk_seconds"] == counts.talk_seconds, member_name
    for agent in snapshot["agents"].values():
        assert agent["state"] in ("idle", "wrap_up", "logged_out", "paused")


@pytest.mark.parametrize("name", RECORDED)
def test_call_journal_outcomes_agree_with_queue_log(name: str) -> None:
    _, calls, pipeline = replay(name)
    logged = read_queue_log(FIXTURES / f"{name}.queue_log")
    outcomes = Counter(call.outcome for call in calls)
    assert outcomes[CallOutcome.ANSWERED] == sum(q.answered for q in logged.queues.values())
    assert outcomes[CallOutcome.ABANDONED] == sum(q.abandoned for q in logged.queues.values())
    assert outcomes[CallOutcome.TIMEOUT] == sum(
        q.timed_out + q.exited_empty for q in logged.queues.values()
    )
    assert pipeline.tracker.live_calls == 0


def test_every_recording_made_on_our_dialplan_is_pinned() -> None:
    recorded = {path.stem for path in FIXTURES.glob("*.ami")}
    assert recorded - {"stock-dialplan"} == set(FIGURES_BEFORE_HANGUP_REQUESTS)


@pytest.mark.parametrize("name", sorted(FIGURES_BEFORE_HANGUP_REQUESTS))
def test_figures_and_journal_are_what_they_were(name: str) -> None:
    snapshot, calls, _ = replay(name)
    figures = {
        queue: tuple(
            ours[key]
            for key in ("offered", "answered", "abandoned", "timed_out", "short_abandoned")
        )
        for queue, ours in snapshot["queues"].items()
    }
    outcomes = dict(Counter(call.outcome.value for call in calls))
    assert (figures, outcomes) == FIGURES_BEFORE_HANGUP_REQUESTS[name]


@pytest.mark.parametrize("name", sorted(FIGURES_BEFORE_HANGUP_REQUESTS))
def test_hang_up_requests_change_nothing_where_our_dialplan_ran(name: str, tmp_path: Path) -> None:
    """Replayed as an account that filters hang-up requests out (the shipped one did until
    stock dialplans needed them), every figure and every journal row is the same."""
    frames = (FIXTURES / f"{name}.ami").read_bytes().split(b"\r\n\r\n")
    kept = [
        frame
        for frame in frames
        if not any(b"Event: " + event + b"\r\n" in frame for event in HANGUP_REQUESTS)
    ]
    path = tmp_path / f"{name}.ami"
    path.write_bytes(b"\r\n\r\n".join(kept))
    snapshot, calls, _ = replay(name)
    assert replay(name, path)[:2] == (snapshot, calls)


def test_utf8_caller_names_survive_the_real_stream() -> None:
    _, calls, _ = replay("multi-queue-pause")
    assert {"张三", "李四", "王五"} <= {call.caller_name for call in calls}


def test_pause_reasons_and_membership_changes_are_followed() -> None:
    snapshot, _, _ = replay("multi-queue-pause")
    logged = read_queue_log(FIXTURES / "multi-queue-pause.queue_log")
    assert any(change.reason == "lunch" for change in logged.pauses)
    assert snapshot["agents"]["PJSIP/agent4"]["state"] == "logged_out"  # added, then removed
    assert not snapshot["agents"]["PJSIP/agent1"]["paused"]  # back from lunch


def _without_callers_in_agent_complete(text: str) -> str:
    """The transcript as Asterisk sends it when every caller hung up just before app_queue
    wrote its AgentComplete: that event then carries the member's channel fields only."""
    frames = text.split("\r\n\r\n")
    for index, frame in enumerate(frames):
        lines = frame.split("\r\n")
        if "Event: AgentComplete" in lines:
            kept = [line for line in lines if line.split(":", 1)[0] not in CALLER_HEADERS]
            frames[index] = "\r\n".join(kept)
    return "\r\n\r\n".join(frames)


@pytest.mark.parametrize("name", RECORDED)
def test_an_agent_complete_without_its_caller_changes_nothing(name: str, tmp_path: Path) -> None:
    original = (FIXTURES / f"{name}.ami").read_bytes().decode()
    stripped = _without_callers_in_agent_complete(original)
    assert stripped.count("Event: AgentComplete") == original.count("Event: AgentComplete") > 0
    assert stripped != original
    path = tmp_path / f"{name}.ami"
    path.write_text(stripped, encoding="utf-8", newline="")

    expected_snapshot, expected_calls, _ = replay(name)
    snapshot, calls, _, translator = replay_counting(name, path)

    assert translator.counters["agent_complete_without_caller"] == original.count(
        "Event: AgentComplete"
    )
    assert translator.counters["malformed_events"] == 0
    assert snapshot == expected_snapshot
    assert calls == expected_calls


def test_an_agent_complete_for_no_known_call_is_counted_not_guessed(tmp_path: Path) -> None:
    text = (FIXTURES / "multi-queue-pause.ami").read_bytes().decode()
    completes = text.count("Event: AgentComplete")
    without_connects = "\r\n\r\n".join(
        frame for frame in text.split("\r\n\r\n") if "Event: AgentConnect" not in frame
    )
    path = tmp_path / "no-connects.ami"
    path.write_text(
        _without_callers_in_agent_complete(without_connects), encoding="utf-8", newline=""
    )
    *_, translator = replay_counting("multi-queue-pause", path)
    assert completes > 0
    assert translator.counters["agent_complete_without_caller"] == completes
    assert translator.counters["malformed_events"] == completes
