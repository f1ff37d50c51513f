"""The queue_log parser against lines Asterisk 22 wrote in the recorded test-bed runs.

``tests/fixtures/<name>.queue_log`` was written by Asterisk in the same run as
``tests/fixtures/<name>.ami`` (``scripts/record-transcript``); the QueueParams at the end of
the transcript are Asterisk's own counters for the same calls.
"""

from __future__ import annotations

from pathlib import Path

from tests.queue_log import (
    PauseChange,
    parse_line,
    read_queue_log,
    service_levels,
    summarize,
)
from tests.recorder.wire import FRAME_END, parse_frame

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
QUEUES_CONF = Path(__file__).resolve().parents[2] / "asterisk-conf" / "queues.conf"


def queue_params(name: str) -> dict[str, dict[str, str]]:
    """QueueParams per queue from the end of a recorded transcript."""
    params = {}
    for frame in (FIXTURES / f"{name}.ami").read_bytes().split(FRAME_END):
        message = parse_frame(frame)
        if message.get("Event") == "QueueParams":
            params[message["Queue"]] = message
    return params


def test_a_line_splits_into_its_fields() -> None:
    entry = parse_line("1795579090|1795579082.10|hotline|Agent Four|CONNECT|8|1795579090.14|0\n")
    assert entry is not None
    assert (entry.time, entry.callid, entry.queue, entry.agent, entry.event) == (
        1795579090, "1795579082.10", "hotline", "Agent Four", "CONNECT",
    )  # fmt: skip
    assert entry.data == ("8", "1795579090.14", "0")
    assert (entry.number(1), entry.field(2), entry.field(9)) == (8, "1795579090.14", "")
    assert parse_line("not a queue_log line") is None
    assert parse_line("") is None


def test_counts_per_queue_and_agent() -> None:
    lines = """\
1795579072|1795579072.2|hotline|NONE|ENTERQUEUE||13800130101|1
1795579072|1795579072.2|hotline|Agent One|CONNECT|0|1795579072.3|0
1795579077|1795579069.0|enterprise|Agent Three|RINGNOANSWER|8000
1795579085|1795579072.2|hotline|Agent One|COMPLETECALLER|0|13|1
1795579080|1795579080.8|hotline|NONE|ENTERQUEUE||13800130104|2
1795579082|1795579080.8|hotline|Agent Four|CONNECT|22|1795579082.9|0
1795579088|1795579080.8|hotline|Agent Four|COMPLETEAGENT|22|6|2
1795579077|1795579077.6|hotline|NONE|ENTERQUEUE||13800130103|1
1795579090|1795579077.6|hotline|NONE|ABANDON|1|1|13
1795579217|1795579211.59|hotline|NONE|EXITWITHTIMEOUT|1|1|6
""".splitlines()
    stats = summarize(lines, service_level=20)
    hotline = stats.queues["hotline"]
    assert (hotline.offered, hotline.answered, hotline.abandoned, hotline.timed_out) == (3, 2, 1, 1)
    assert (hotline.completed_by_caller, hotline.completed_by_agent) == (1, 1)
    assert hotline.answered_within_sl == 1  # 22 s > 20 s
    assert (hotline.hold_seconds_answered, hotline.talk_seconds) == (22, 19)
    assert hotline.asterisk_abandoned == 2
    assert stats.agents["Agent One"].answered == 1
    assert stats.agents["Agent Four"].talk_seconds == 6
    assert stats.agents["Agent Three"].ring_no_answer == 1
    assert stats.queue_agents[("enterprise", "Agent Three")].ring_no_answer_ms == 8000


def test_service_level_is_read_from_queues_conf() -> None:
    assert service_levels(QUEUES_CONF) == {"hotline": 20, "enterprise": 20, "emergency": 20}


def test_multi_queue_pause_log() -> None:
    stats = read_queue_log(FIXTURES / "multi-queue-pause.queue_log")
    assert not stats.ignored
    offered = {q: c.offered for q, c in stats.queues.items()}
    assert offered == {"hotline": 17, "enterprise": 5, "emergency": 4}
    assert sum(offered.values()) == 26  # every citizen of the run, once
    for counts in stats.queues.values():
        assert counts.offered == counts.answered + counts.asterisk_abandoned
        assert counts.answered == counts.completed_by_caller + counts.completed_by_agent
    # agent1's lunch: QueuePause without Queue = one PAUSEALL plus one PAUSE per queue
    lunch = [p for p in stats.pauses if p.agent == "Agent One" and p.paused]
    assert {(p.queue, p.all_queues, p.reason) for p in lunch} == {
        ("NONE", True, "lunch"),
        ("hotline", False, "lunch"),
        ("enterprise", False, "lunch"),
        ("emergency", False, "lunch"),
    }
    meeting = [p for p in stats.pauses if p.agent == "Agent Two"]
    assert [(p.queue, p.paused, p.reason) for p in meeting] == [
        ("emergency", True, "meeting"),
        ("emergency", False, ""),  # UNPAUSE carries no reason
    ]
    assert all(isinstance(p, PauseChange) for p in stats.pauses)
    assert [(m.agent, m.queue, m.added) for m in stats.members] == [
        ("Agent Four", "hotline", True),
        ("Agent Four", "hotline", False),
    ]
    assert stats.agents["Agent Three"].answered == 0  # agent3 never answers
    assert stats.agents["Agent Three"].ring_no_answer == 7
    assert stats.agents["Agent Four"].answered == 6


def test_multi_queue_pause_agrees_with_asterisk_except_for_the_removed_members_call() -> None:
    stats = read_queue_log(FIXTURES / "multi-queue-pause.queue_log")
    params = queue_params("multi-queue-pause")
    for name in ("enterprise", "emergency"):
        counts = stats.queues[name]
        assert int(params[name]["Completed"]) == counts.answered
        assert int(params[name]["Abandoned"]) == counts.asterisk_abandoned
        assert float(params[name]["ServicelevelPerf"]) == round(counts.service_level_percent(), 1)
        assert float(params[name]["ServicelevelPerf2"]) == round(counts.service_level2_percent(), 1)
    # Agent Four's last hotline call was still going when QueueRemove took it out of the
    # queue: queue_log has its CONNECT and COMPLETECALLER, Asterisk's Completed misses it.
    hotline = stats.queues["hotline"]
    assert (hotline.answered, int(params["hotline"]["Completed"])) == (13, 12)
    assert int(params["hotline"]["Abandoned"]) == hotline.asterisk_abandoned == 4


def test_timeouts_log_counts_exits_with_timeout_as_asterisk_abandoned() -> None:
    stats = read_queue_log(FIXTURES / "timeouts.queue_log")
    params = queue_params("timeouts")
    timed_out = {q: c.timed_out for q, c in stats.queues.items()}
    assert timed_out == {"hotline": 5, "enterprise": 3, "emergency": 3}
    for name, counts in stats.queues.items():
        assert counts.offered == counts.answered + counts.abandoned + counts.timed_out
        assert int(params[name]["Completed"]) == counts.answered
        # Asterisk's "Abandoned" counts EXITWITHTIMEOUT too
        assert int(params[name]["Abandoned"]) == counts.abandoned + counts.timed_out
        assert float(params[name]["ServicelevelPerf2"]) == round(counts.service_level2_percent(), 1)
    # HOTLINE_MAX_WAIT was 6 s: every timed-out caller waited exactly that long
    lines = (FIXTURES / "timeouts.queue_log").read_text().splitlines()
    waits = {e.number(3) for e in map(parse_line, lines) if e and e.event == "EXITWITHTIMEOUT"}
    assert waits == {6}


def test_unreachable_agent_log_agrees_with_asterisk() -> None:
    stats = read_queue_log(FIXTURES / "unreachable-agent.queue_log")
    params = queue_params("unreachable-agent")
    for name, counts in stats.queues.items():
        assert int(params[name]["Completed"]) == counts.answered
        assert int(params[name]["Abandoned"]) == counts.asterisk_abandoned
    # agent2's dead softphone is rung into the void until the caller leaves: RINGCANCELED,
    # never RINGNOANSWER (the PJSIP INVITE keeps retransmitting past the 8 s ring timeout)
    assert stats.agents["Agent Two"].ring_no_answer == 0
    assert stats.events[("enterprise", "RINGCANCELED")] == 3
