"""FreeSWITCH sessions recorded from a real 1.11 with mod_callcenter, replayed through the same
pipeline as Asterisk's: every figure equals FreeSWITCH's own CDR for the session."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from esl.codec import EslFrameDecoder, EslProtocolError, events_in, parse_event
from esl.replay import EslClock, is_esl_transcript, replay_esl_file
from hotline.cli import main
from hotline.service import build_pipeline
from infra.config import Settings
from queue_stats.calls import CallOutcome

FIXTURES = Path(__file__).parent.parent / "fixtures" / "esl"
SESSIONS = ("basic-queue", "timeouts-and-changes", "outbound-socket")
COLUMNS = (FIXTURES / "cdr-columns.txt").read_text().splitlines()[0].split(",")
# CDR cc_cause / cc_cancel_reason of the member leg, as our outcomes say it.
OUTCOME_OF_CDR = {
    ("answered", ""): CallOutcome.ANSWERED,
    ("cancel", "BREAK_OUT"): CallOutcome.ABANDONED,
    ("cancel", "TIMEOUT"): CallOutcome.TIMEOUT,
    ("cancel", "EXIT_WITH_KEY"): CallOutcome.TIMEOUT,  # left the queue alive, as on Asterisk
}


def cdr_rows(session: str) -> list[dict[str, str]]:
    with (FIXTURES / f"{session}.Master.csv").open(newline="", encoding="utf-8") as handle:
        return [dict(zip(COLUMNS, row, strict=True)) for row in csv.reader(handle)]


def cdr_figures(session: str) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """Per queue and per agent, what FreeSWITCH's CDR says happened."""
    queues: dict[str, Counter[str]] = defaultdict(Counter)
    agents: dict[str, Counter[str]] = defaultdict(Counter)
    for row in cdr_rows(session):
        if row["cc_side"] == "member":
            queue = queues[row["cc_queue"]]
            queue["offered"] += 1
            outcome = OUTCOME_OF_CDR[(row["cc_cause"], row["cc_cancel_reason"])]
            name = {"answered": "answered", "abandoned": "abandoned"}.get(
                outcome.value, "timed_out"
            )
            queue[name] += 1
        elif row["cc_side"] == "agent":
            agent = agents[row["cc_agent"]]
            if row["answer_stamp"]:
                agent["answered"] += 1
                agent["talk_seconds"] += int(row["billsec"])
            elif row["hangup_cause"] != "ORIGINATOR_CANCEL":  # the caller gave up meanwhile
                agent["ring_no_answer"] += 1
    return queues, agents


def replayed(session: str):  # type: ignore[no-untyped-def]
    clock = EslClock()
    pipeline = build_pipeline(Settings(_env_file=None), clock.current)  # type: ignore[call-arg]
    calls = replay_esl_file(FIXTURES / f"{session}.esl.gz", pipeline, clock)
    return pipeline.stats.snapshot(clock.current()), calls


@pytest.mark.parametrize("session", SESSIONS)
def test_replayed_figures_equal_freeswitchs_cdr_per_queue_and_per_agent(session: str) -> None:
    snapshot, _calls = replayed(session)
    queues, agents = cdr_figures(session)
    assert sum(q["offered"] for q in queues.values()) > 0
    for name, expected in queues.items():
        figures = snapshot["queues"][name]
        got = {k: figures[k] for k in ("offered", "answered", "abandoned", "timed_out")}
        assert got == {k: expected[k] for k in got}, name
        assert figures["waiting_now"] == 0
    assert set(snapshot["queues"]) == set(queues)
    for name, expected in agents.items():
        figures = snapshot["agents"][name]
        got = {k: figures[k] for k in ("answered", "ring_no_answer", "talk_seconds")}
        assert got == {k: expected[k] for k in got}, name


@pytest.mark.parametrize("session", SESSIONS)
def test_every_caller_is_journalled_with_the_cdrs_outcome_agent_and_name(session: str) -> None:
    _snapshot, calls = replayed(session)
    members = {r["uuid"]: r for r in cdr_rows(session) if r["cc_side"] == "member"}
    assert {call.uniqueid for call in calls} == set(members)
    for call in calls:
        row = members[call.uniqueid]
        assert call.outcome is OUTCOME_OF_CDR[(row["cc_cause"], row["cc_cancel_reason"])]
        assert call.queue == row["cc_queue"]
        assert call.caller_number == row["caller_id_number"]
        assert call.caller_name == row["caller_id_name"]
        if call.outcome is CallOutcome.ANSWERED:
            assert call.agent_interface == row["cc_agent"]
            # mod_callcenter's whole-second stamps, read a moment apart from the CDR's own.
            answered = int(row["cc_queue_answered_epoch"]) - int(row["cc_queue_joined_epoch"])
            assert call.hold_seconds in (answered - 1, answered)


def test_chinese_caller_names_arrive_whole() -> None:
    _snapshot, calls = replayed("basic-queue")
    names = {call.caller_name for call in calls}
    assert {"市民1号", "市民2号", "王小明", "李华", "张伟"} <= names


def raw(session: str) -> bytes:
    return gzip.decompress((FIXTURES / f"{session}.esl.gz").read_bytes())


@pytest.mark.parametrize("session", SESSIONS)
def test_the_real_tcp_chunks_give_the_same_frames_as_the_whole_transcript(session: str) -> None:
    data = raw(session)
    whole = list(EslFrameDecoder().feed(data))
    decoder = EslFrameDecoder()
    chunked = []
    for line in (FIXTURES / f"{session}.jsonl").read_text().splitlines():
        chunk = json.loads(line)
        if chunk.get("dir") == "in":
            chunked += decoder.feed(data[chunk["off"] : chunk["off"] + chunk["len"]])
    assert chunked == whole and decoder.pending_bytes == 0
    kinds = Counter(frame.content_type for frame in whole)
    assert kinds["auth/request"] == 1 and kinds["text/disconnect-notice"] == 1
    assert kinds["text/event-plain"] > 400


def test_frames_split_anywhere_decode_the_same() -> None:
    """Seven bytes at a time: a header line, a UTF-8 name and the body all cut apart."""
    data = raw("outbound-socket")[:200_000]
    whole = list(EslFrameDecoder().feed(data))
    decoder = EslFrameDecoder()
    pieces = [frame for i in range(0, len(data), 7) for frame in decoder.feed(data[i : i + 7])]
    assert pieces == whole


def test_an_event_body_of_its_own_is_kept_raw_after_its_headers() -> None:
    """A background job's result: an inner Content-Length, then bytes that are not URL-encoded."""
    data = raw("basic-queue")
    jobs = [e for e in events_in(EslFrameDecoder().feed(data)) if e.name == "BACKGROUND_JOB"]
    assert len(jobs) == 3
    listing = next(e for e in jobs if "list members" in e.get("Job-Command-Arg"))
    assert listing.body.startswith(b"queue|instance_id|uuid|session_uuid|")
    assert len(listing.body) == int(listing.get("Content-Length"))


def test_header_values_are_url_decoded_and_names_are_not() -> None:
    event = parse_event(
        b"Event-Subclass: callcenter%3A%3Ainfo\nEvent-Name: CUSTOM\n"
        b"CC-Member-CID-Name: %E5%B8%82%E6%B0%911%E5%8F%B7\n"
        b"Event-Date-Timestamp: 1796638724847549\n"
    )
    assert event.subclass == "callcenter::info" and event.name == "CUSTOM"
    assert event.get("CC-Member-CID-Name") == "市民1号"
    assert event.timestamp_us == 1796638724847549


@pytest.mark.parametrize(
    "garbage",
    [
        b"Content-Length: 12x\n\n",
        b"Content-Length: 99999999999\n\n",
        b"no colon in this line\n\n",
        b"X: " + b"y" * 300_000,
    ],
)
def test_what_is_not_the_event_socket_is_refused(garbage: bytes) -> None:
    with pytest.raises(EslProtocolError):
        list(EslFrameDecoder().feed(garbage))


def test_hotline_replay_takes_an_esl_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "timeouts-and-changes.esl.gz"
    assert is_esl_transcript(path)
    assert main(["replay", "--json", str(path)]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["queues"]["enterprise"]["timed_out"] == 2
    assert snapshot["agents"]["agent4"]["answered"] == 4


def test_record_stop_tells_where_the_recording_was_closed() -> None:
    from esl.callcenter import CallcenterTranslator
    from esl.replay import read_transcript

    translator = CallcenterTranslator()
    closed = [
        fact
        for event in read_transcript(FIXTURES / "timeouts-and-changes.esl.gz")
        for fact in translator.translate(event)
        if type(fact).__name__ == "RecordingFinished"
    ]
    assert len(closed) == 20  # one per answered call, on the member channel
    assert all(fact.path.endswith(f"_{fact.uniqueid}.wav") for fact in closed)  # type: ignore[attr-defined]
