"""The survey after the human: its scale, its dialogue, the FastAGI script over a real socket,
the ``HotlineRating`` event, the call's rating and the satisfaction figures."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agi.server import FastAgiServer
from agi.survey import survey_handler_for
from ami.codec import parse_message
from ami.events import parse_event
from ami.feed import replay_file
from ami.queue_log import parse_line, recover_calls
from ami.replay import ReplayClock
from hotline.service import build_pipeline
from infra.config import Settings
from pbx.facts import (
    AgentConnected,
    CallerJoinedQueue,
    CallRated,
    ChannelCreated,
    ChannelHungUp,
    DialAnswered,
    SurveyOffered,
)
from queue_stats.calls import CallOutcome, CallRecord, CallTracker
from queue_stats.satisfaction import Rating, SatisfactionStats
from survey.dialogue import Ask, Miss, Prompt, Rated, SurveyDialogue
from survey.prompts import prompt_texts
from survey.scale import DEFAULT_SCALE, NOT_RATED, ScaleError, parse_scale
from tests.agi_commands import asterisk_args

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


# -- the scale ---------------------------------------------------------------------------------


def test_the_default_scale_is_the_hotlines_three_answers() -> None:
    assert [(a.key, a.code, a.label_zh, a.kind) for a in DEFAULT_SCALE.answers] == [
        ("1", "satisfied", "满意", "good"),
        ("2", "basic", "基本满意", "good"),
        ("3", "dissatisfied", "不满意", "review"),
    ]
    assert DEFAULT_SCALE.keys == "123"
    assert DEFAULT_SCALE.answer_for_key("9") is None


def test_a_five_point_scale_parses() -> None:
    scale = parse_scale(
        "5=excellent/非常满意/Excellent/good;4=good/满意/Good/good;3=fair/一般/Fair/neutral;"
        "2=poor/不满意/Poor/review;1=bad/非常不满意/Very bad/review"
    )
    assert scale.codes == ("excellent", "good", "fair", "poor", "bad")
    assert [a.needs_review for a in scale.answers] == [False, False, False, True, True]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("1=ok/好/Good/good", "at least two"),
        ("1=ok/好/Good/good;1=no/差/Bad/review", "once"),
        ("12=ok/好/Good/good;2=no/差/Bad/review", "one digit"),
        ("1=OK/好/Good/good;2=no/差/Bad/review", "code"),
        ("1=not_rated/好/Good/good;2=no/差/Bad/review", "code"),
        ("1=ok/好/Good/great;2=no/差/Bad/review", "kind"),
        ("1=ok/好/good;2=no/差/Bad/review", "key=code"),
        ("1=ok//Good/good;2=no/差/Bad/review", "both labels"),
        ("1=ok/好/Good/neutral;2=no/差/Bad/review", "good answer"),
    ],
)
def test_an_unusable_scale_is_refused_with_the_reason(text: str, complaint: str) -> None:
    with pytest.raises(ScaleError, match=complaint):
        parse_scale(text)


def test_the_prompts_say_the_scale_in_both_languages() -> None:
    zh = prompt_texts(DEFAULT_SCALE, "zh")
    assert "满意请按1" in zh[Prompt.ASK] and "不满意请按3" in zh[Prompt.ASK]
    assert zh[Prompt.AGAIN].endswith(zh[Prompt.ASK]) and zh[Prompt.AGAIN] != zh[Prompt.ASK]
    en = prompt_texts(DEFAULT_SCALE, "en")
    assert "For basically satisfied, press 2." in en[Prompt.ASK]
    with pytest.raises(ValueError, match="no prompts"):
        prompt_texts(DEFAULT_SCALE, "fr")


# -- the dialogue ------------------------------------------------------------------------------


def test_a_valid_key_rates_at_once() -> None:
    dialogue = SurveyDialogue(DEFAULT_SCALE)
    assert dialogue.first() == Ask(Prompt.ASK)
    assert dialogue.key("2") == Rated("basic", "2")
    assert dialogue.result is not None and dialogue.result.closing_prompt is Prompt.THANKS


def test_a_wrong_key_is_asked_once_more_then_not_rated() -> None:
    dialogue = SurveyDialogue(DEFAULT_SCALE)
    dialogue.first()
    assert dialogue.key("7") == Ask(Prompt.AGAIN)
    assert dialogue.key("9") == Rated(NOT_RATED, "9", Miss.WRONG_KEY)


def test_a_wrong_key_then_a_valid_one_counts_the_valid_one() -> None:
    dialogue = SurveyDialogue(DEFAULT_SCALE)
    dialogue.first()
    dialogue.key("#")
    assert dialogue.key("3") == Rated("dissatisfied", "3")


def test_silence_twice_is_not_rated_and_a_hang_up_is_never_a_guess() -> None:
    silent = SurveyDialogue(DEFAULT_SCALE)
    silent.first()
    assert silent.silence() == Ask(Prompt.AGAIN)
    assert silent.silence() == Rated(NOT_RATED, "", Miss.NO_KEY)
    gone = SurveyDialogue(DEFAULT_SCALE)
    gone.first()
    gone.key("8")
    rated = gone.hung_up()
    assert rated == Rated(NOT_RATED, "8", Miss.HUNG_UP) and rated.closing_prompt is None
    assert gone.key("1") == rated  # one rating per call: nothing changes it afterwards


# -- the FastAGI script, against a fake Asterisk on a real socket -----------------------------

SURVEY_REQUEST = (
    "agi_network: yes\nagi_network_script: survey\nagi_request: agi://127.0.0.1:4573/survey\n"
    "agi_channel: PJSIP/citizens-00000009\nagi_language: zh\nagi_uniqueid: 1795575495.9\n"
    "agi_callerid: 13800138000\nagi_context: hotline-survey\nagi_extension: s\n\n"
)


async def run_survey(answers: Callable[[str], str | None]) -> tuple[list[str], Counter[str]]:
    """Serve ``survey`` and play Asterisk: each command is answered with ``answers(command)``
    (``None``: the caller hangs up now). Returns the commands the script sent."""
    counters: Counter[str] = Counter()
    server = FastAgiServer(
        {"survey": survey_handler_for(DEFAULT_SCALE, key_seconds=1.5, counters=counters)},
        host="127.0.0.1",
        port=0,
    )
    await server.start()
    commands: list[str] = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(SURVEY_REQUEST.encode())
        while line := await asyncio.wait_for(reader.readline(), 5):
            command = line.decode().strip()
            commands.append(command)
            reply = answers(command)
            # None: the caller hangs up now; Asterisk says so in-band, then answers -1.
            writer.write(b"HANGUP\n200 result=-1\n" if reply is None else f"{reply}\n".encode())
        writer.close()
    finally:
        await server.close()
    return commands, counters


def survey_variables(commands: list[str]) -> dict[str, str]:
    """What the script's one ``EXEC MSet`` set, read as Asterisk's MSet reads it."""
    [mset] = [asterisk_args(c) for c in commands if c.startswith("EXEC MSet")]
    return dict(pair.split("=", 1) for pair in mset[2].split(","))


def scripted(*keys: str | None) -> Callable[[str], str | None]:
    """Asterisk's replies: for each GET DATA the next of ``keys`` ("" for a time-out)."""
    pending = list(keys)

    def reply(command: str) -> str | None:
        if command.startswith("GET DATA"):
            key = pending.pop(0)
            if key is None:
                return None
            return "200 result= (timeout)" if key == "" else f"200 result={key}"
        return "200 result=0"

    return reply


async def test_the_script_plays_the_question_reads_2_and_sets_the_rating() -> None:
    commands, counters = await run_survey(scripted("2"))
    assert commands[0] == "GET DATA hotline/survey-ask 1500 1"
    assert survey_variables(commands) == {
        "HOTLINE_RATING": "basic",
        "HOTLINE_RATING_KEY": "2",
    }
    assert commands[-1] == 'STREAM FILE hotline/survey-thanks ""'
    assert counters["survey_basic"] == 1


async def test_the_script_asks_again_after_silence_and_gives_up_after_a_wrong_key() -> None:
    commands, counters = await run_survey(scripted("", "5"))
    assert [c for c in commands if c.startswith("GET DATA")] == [
        "GET DATA hotline/survey-ask 1500 1",
        "GET DATA hotline/survey-again 1500 1",
    ]
    assert survey_variables(commands) == {
        "HOTLINE_RATING": NOT_RATED,
        "HOTLINE_RATING_KEY": "5",
    }
    assert counters["survey_wrong_key"] == 1 and counters["survey_not_rated"] == 1


async def test_a_caller_who_hangs_up_mid_question_gets_no_rating_set() -> None:
    commands, counters = await run_survey(scripted(None))
    assert commands == ["GET DATA hotline/survey-ask 1500 1"]
    assert counters["survey_hung_up"] == 1


# -- the event, the call and the figures --------------------------------------------------------


def test_the_dialplans_user_event_becomes_a_rating() -> None:
    message = parse_message(
        "Event: UserEvent\r\nUserEvent: HotlineRating\r\nChannel: PJSIP/citizens-00000009\r\n"
        "Uniqueid: 1795575495.9\r\nLinkedid: 1795575495.9\r\nQueue: hotline\r\n"
        "Agent: PJSIP/agent1\r\nRating: basic\r\nKey: 2\r\nStatus: SUCCESS\r\n\r\n"
    )
    event = parse_event(message, T0)
    assert event == CallRated(
        T0, "1795575495.9", "1795575495.9", "PJSIP/citizens-00000009",
        rating="basic", key="2", agent="PJSIP/agent1", queue="hotline",
    )  # fmt: skip


def answered_call(tracker: CallTracker, uid: str, at: datetime) -> None:
    chan = f"PJSIP/citizens-{uid}"
    tracker.handle(ChannelCreated(at, uid, uid, chan, "13800138000", "", "from-citizens", "12345"))
    tracker.handle(CallerJoinedQueue(at, uid, uid, chan, "hotline", "13800138000", "", 1))
    tracker.handle(
        AgentConnected(
            at + timedelta(seconds=3), uid, uid, chan, "hotline", "PJSIP/agent1", "Agent One",
            "PJSIP/agent1-1", hold_seconds=3, ring_seconds=1,
        )
    )  # fmt: skip


def test_a_rated_call_keeps_its_rating_and_an_unrated_one_is_not_rated() -> None:
    tracker = CallTracker(frozenset({"from-citizens"}), surveys=True)
    answered_call(tracker, "1.1", T0)
    rated_at = T0 + timedelta(seconds=40)
    tracker.handle(CallRated(rated_at, "1.1", "1.1", "c", "basic", "2", "PJSIP/agent1", "hotline"))
    tracker.handle(CallRated(rated_at, "1.1", "1.1", "c", "satisfied", "1", "", "hotline"))
    [rated] = tracker.handle(ChannelHungUp(T0 + timedelta(seconds=45), "1.1", "1.1", "c", 16, ""))
    assert (rated.rating, rated.rating_key, rated.rated_at) == ("basic", "2", rated_at)
    assert tracker.anomalies["second-rating"] == 1
    answered_call(tracker, "1.2", T0)
    [gone] = tracker.handle(ChannelHungUp(T0 + timedelta(seconds=20), "1.2", "1.2", "c", 16, ""))
    assert (gone.outcome, gone.rating) == (CallOutcome.ANSWERED, NOT_RATED)


def test_without_surveys_an_answered_call_has_no_rating_and_an_abandoned_one_never_has() -> None:
    quiet = CallTracker(frozenset({"from-citizens"}))
    answered_call(quiet, "2.1", T0)
    [call] = quiet.handle(ChannelHungUp(T0 + timedelta(seconds=20), "2.1", "2.1", "c", 16, ""))
    assert call.rating is None
    surveyed = CallTracker(frozenset({"from-citizens"}), surveys=True)
    surveyed.handle(
        ChannelCreated(T0, "2.2", "2.2", "c", "13800138000", "", "from-citizens", "12345")
    )
    surveyed.handle(CallRated(T0, "2.2", "2.2", "c", "satisfied", "1", "", ""))  # a forgery
    [abandoned] = surveyed.handle(ChannelHungUp(T0, "2.2", "2.2", "c", 16, ""))
    assert abandoned.outcome is not CallOutcome.ANSWERED and abandoned.rating is None
    assert surveyed.anomalies["rating-of-unanswered-call"] == 1


def rating(code: str, minutes: float = 0, queue: str = "hotline", agent: str = "PJSIP/agent1"):  # type: ignore[no-untyped-def]
    return Rating(queue, agent, T0 + timedelta(minutes=minutes), code)


def test_the_figures_follow_their_definitions() -> None:
    stats = SatisfactionStats(SHANGHAI, DEFAULT_SCALE)
    for code in ("satisfied", "satisfied", "basic", "dissatisfied", NOT_RATED):
        stats.count(rating(code))
    stats.count(rating("satisfied", queue="enterprise", agent="PJSIP/agent2"))
    today = stats.snapshot(T0 + timedelta(minutes=1))["today"]
    assert today["answers"] == {"satisfied": 3, "basic": 1, "dissatisfied": 1}
    assert (today["rated"], today["not_rated"], today["to_review"]) == (5, 1, 1)
    assert today["satisfaction_rate"] == round(4 / 5, 4)  # (满意 + 基本满意) / rated
    assert today["participation_rate"] == round(5 / 6, 4)  # rated / (rated + not rated)


def test_per_queue_per_agent_last_15_minutes_and_by_hour() -> None:
    stats = SatisfactionStats(SHANGHAI, DEFAULT_SCALE)
    stats.count(rating("dissatisfied", minutes=0))
    stats.count(rating("satisfied", minutes=50, queue="enterprise", agent="PJSIP/agent2"))
    stats.count(rating("basic", minutes=70))
    snapshot = stats.snapshot(T0 + timedelta(minutes=75))
    assert snapshot["queues"]["hotline"]["rated"] == 2
    assert snapshot["agents"]["PJSIP/agent2"]["answers"]["satisfied"] == 1
    assert snapshot["last_15_minutes"]["answers"] == {"satisfied": 0, "basic": 1, "dissatisfied": 0}
    assert set(snapshot["last_15_minutes_queues"]) == {"hotline"}
    assert snapshot["hours"]["hotline"]["10"]["answers"]["dissatisfied"] == 1
    assert snapshot["hours"]["hotline"]["11"]["answers"]["basic"] == 1
    assert snapshot["hours"]["all"]["10"]["rated"] == 2


def test_a_new_day_starts_from_zero_and_an_unknown_code_is_not_rated() -> None:
    stats = SatisfactionStats(SHANGHAI, DEFAULT_SCALE)
    stats.count(rating("satisfied"))
    stats.count(rating("wonderful", minutes=1))
    assert stats.anomalies["rating-not-in-scale"] == 1
    assert stats.snapshot(T0 + timedelta(minutes=2))["today"]["not_rated"] == 1
    tomorrow = T0 + timedelta(days=1)
    assert stats.snapshot(tomorrow)["today"]["rated"] == 0
    assert not stats.count(rating("satisfied", minutes=-5))  # from a past day now
    assert stats.anomalies["rating-from-a-past-day"] == 1


def test_seeding_from_the_journal_gives_the_same_figures_as_counting_live() -> None:
    live, seeded = (SatisfactionStats(SHANGHAI, DEFAULT_SCALE) for _ in range(2))
    ratings = [rating(code, minutes=n) for n, code in enumerate(("basic", NOT_RATED, "satisfied"))]
    for each in ratings:
        live.count(each)
    seeded.seed(reversed(ratings), T0)
    now = T0 + timedelta(minutes=5)
    assert live.snapshot(now) == seeded.snapshot(now)


def test_a_finished_call_is_counted_by_its_end() -> None:
    stats = SatisfactionStats(SHANGHAI, DEFAULT_SCALE)
    call = CallRecord(
        "3.1", "3.1", "c", "13800138000", "", "12345", T0, queue="hotline",
        agent_interface="PJSIP/agent1", ended_at=T0 + timedelta(minutes=2),
        outcome=CallOutcome.ANSWERED, rating="satisfied",
    )  # fmt: skip
    assert stats.count_call(call)
    unanswered = CallRecord("3.2", "3.2", "c", "1", "", "12345", T0)
    assert not stats.count_call(unanswered)
    assert stats.snapshot(T0 + timedelta(minutes=3))["agents"]["PJSIP/agent1"]["rated"] == 1


# -- the survey's lines in queue_log, for a bridge that was away ------------------------------


def recovered(lines: list[str]) -> list[CallRecord]:
    entries = [entry for entry in map(parse_line, lines) if entry is not None]
    since = datetime.fromtimestamp(1795575000, UTC)
    calls = recover_calls(entries, since=since, agent_interfaces={"Agent One": "PJSIP/agent1"})
    return list(calls.calls)


def test_queue_log_gives_a_queued_calls_rating() -> None:
    [call] = recovered(
        [
            "1795575100|1795575100.1|hotline|NONE|HOTLINECALL|12345|default|T1|13800138000|张三",
            "1795575100|1795575100.1|hotline|NONE|ENTERQUEUE||13800138000|1",
            "1795575103|1795575100.1|hotline|Agent One|CONNECT|3|1795575101.2|1",
            "1795575163|1795575100.1|hotline|Agent One|COMPLETEAGENT|3|60|1",
            "1795575163|1795575100.1|hotline|PJSIP/agent1|HOTLINESURVEY|",
            "1795575170|1795575100.1|hotline|PJSIP/agent1|HOTLINERATING|dissatisfied|3",
            "1795575172|1795575100.1|hotline|NONE|HOTLINEEND||||16|13800138000",
        ]
    )
    assert (call.outcome, call.agent_interface, call.talk_seconds) == (
        CallOutcome.ANSWERED, "PJSIP/agent1", 60,
    )  # fmt: skip
    assert (call.rating, call.rating_key) == ("dissatisfied", "3")
    assert call.rated_at == datetime.fromtimestamp(1795575170, UTC)


def test_queue_log_times_a_preferred_agents_talk_by_the_survey_not_the_hang_up() -> None:
    [call] = recovered(
        [
            "1795575100|1795575100.1|hotline|NONE|HOTLINECALL|12345|ticket-owner|T1|138|张三",
            "1795575145|1795575100.1|hotline|PJSIP/agent1|HOTLINESURVEY|40",
            "1795575170|1795575100.1|hotline|NONE|HOTLINEEND|ANSWER|40|PJSIP/agent1|16|138",
        ]
    )
    assert (call.outcome, call.talk_seconds) == (CallOutcome.ANSWERED, 40)
    assert call.answered_at == datetime.fromtimestamp(1795575105, UTC)  # 145 - 40, not 170 - 40
    assert call.rating is None  # hung up during the survey: no rating line
    assert CallTracker(surveys=True).settle_rating(call).rating == NOT_RATED


def test_a_preferred_agents_talk_ends_when_the_survey_begins() -> None:
    tracker = CallTracker(frozenset({"from-citizens"}), surveys=True)
    tracker.handle(ChannelCreated(T0, "4.1", "4.1", "c", "13800138000", "", "from-citizens", "1"))
    tracker.handle(
        DialAnswered(T0 + timedelta(seconds=4), "4.1", "4.1", "c", "PJSIP/agent1-9", "PJSIP/agent1")
    )
    tracker.handle(
        SurveyOffered(T0 + timedelta(seconds=34), "4.1", "4.1", "c", "PJSIP/agent1", "", 30)
    )
    [call] = tracker.handle(ChannelHungUp(T0 + timedelta(seconds=50), "4.1", "4.1", "c", 16, ""))
    assert (call.talk_seconds, call.rating) == (30, NOT_RATED)


# -- a real session: two calls on the Asterisk 22 test bed, rated 1 and 3 --------------------

SURVEY_SESSION = Path(__file__).resolve().parents[1] / "fixtures" / "survey" / "two-ratings.ami"


def test_a_recorded_session_gives_each_call_its_rating_and_the_figures() -> None:
    """Recorded by the survey's real-bed test (the probe's AMI session): agent1 answered each
    call and hung up after 2 s; one citizen pressed 1, the other 3."""
    clock = ReplayClock()
    pipeline = build_pipeline(Settings(), clock.current)
    calls = replay_file(SURVEY_SESSION, pipeline, clock)
    assert [(c.outcome, c.agent_interface, c.rating, c.rating_key) for c in calls] == [
        (CallOutcome.ANSWERED, "PJSIP/agent1", "satisfied", "1"),
        (CallOutcome.ANSWERED, "PJSIP/agent1", "dissatisfied", "3"),
    ]
    # The talk is the agent's 2 s, not the minute the survey kept the caller on the line.
    assert all(c.talk_seconds is not None and c.talk_seconds <= 3 for c in calls)
    assert all(c.ended_at and c.rated_at and c.rated_at <= c.ended_at for c in calls)
    figures = pipeline.snapshot(clock.current())["satisfaction"]
    assert figures["today"]["answers"] == {"satisfied": 1, "basic": 0, "dissatisfied": 1}
    assert figures["today"]["satisfaction_rate"] == 0.5
    assert figures["today"]["participation_rate"] == 1.0
    assert figures["agents"]["PJSIP/agent1"]["to_review"] == 1
