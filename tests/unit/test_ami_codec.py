from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami.codec import (
    AmiFrameDecoder,
    AmiProtocolError,
    decode_recording,
    encode_action,
    parse_message,
    read_recording,
)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
JOIN = (
    "Event: QueueCallerJoin\r\nChannel: PJSIP/citizens-00000001\r\nCallerIDNum: 13800138000\r\n"
    "CallerIDName: 张三丰\r\nUniqueid: 1.1\r\nQueue: hotline\r\n\r\n"
).encode()
VARSET = b"Event: VarSet\r\nChannel: PJSIP/x\r\nVariable: A\r\nValue: b\r\n\r\n"
RESPONSE = b"Response: Success\r\nActionID: a-1\r\nPing: Pong\r\n\r\n"


def test_chinese_caller_name_survives_a_split_inside_a_character() -> None:
    stream = BANNER + JOIN
    split_at = stream.index("张".encode()) + 1  # between the bytes of one character
    decoder = AmiFrameDecoder()
    messages = decoder.feed(stream[:split_at]) + decoder.feed(stream[split_at:])
    assert decoder.banner == "Asterisk Call Manager/11.0.0"
    assert [m["CallerIDName"] for m in messages] == ["张三丰"]


@settings(max_examples=200)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(BANNER + JOIN + VARSET + RESPONSE))))
def test_any_chunking_gives_the_same_messages(cuts: list[int]) -> None:
    stream = BANNER + JOIN + VARSET + RESPONSE + JOIN
    whole = AmiFrameDecoder().feed(stream)
    decoder = AmiFrameDecoder()
    pieces: list = []
    previous = 0
    for cut in sorted(set(cuts)):
        pieces += decoder.feed(stream[previous:cut])
        previous = cut
    pieces += decoder.feed(stream[previous:])
    assert pieces == whole
    assert [m.event or m.response for m in whole] == [
        "QueueCallerJoin",
        "VarSet",
        "Success",
        "QueueCallerJoin",
    ]


def test_unwanted_events_are_dropped_by_name_but_responses_are_kept() -> None:
    decoder = AmiFrameDecoder(keep_event=lambda name: name != "VarSet")
    messages = decoder.feed(BANNER + VARSET + JOIN + RESPONSE)
    assert [m.event or m.response for m in messages] == ["QueueCallerJoin", "Success"]
    assert decoder.dropped == 1
    assert messages[1].action_id == "a-1"


def test_header_lookup_ignores_case_and_keeps_repeated_values() -> None:
    message = parse_message("Response: Follows\r\nOutput: line one\r\nOutput: line two")
    assert message["output"] == "line two"
    assert message.repeated("Output") == ["line one", "line two"]
    assert message.response == "Follows"


def test_a_peer_that_is_not_asterisk_is_refused() -> None:
    with pytest.raises(AmiProtocolError, match="not an AMI greeting"):
        AmiFrameDecoder().feed(b"HTTP/1.1 200 OK\r\n")


def test_line_breaks_cannot_inject_headers_into_an_action() -> None:
    with pytest.raises(AmiProtocolError):
        encode_action("QueuePause", {"Reason": "lunch\r\nAction: Originate"}, "x-1")
    wire = encode_action("QueuePause", {"Interface": "PJSIP/agent1", "Paused": "true"}, "x-2")
    assert wire.endswith(b"\r\n\r\n")
    assert b"ActionID: x-2\r\n" in wire


def test_list_answers_of_pending_actions_pass_the_name_filter() -> None:
    complete = b"Event: QueueStatusComplete\r\nActionID: qs-1\r\nEventList: Complete\r\n\r\n"
    decoder = AmiFrameDecoder(keep_event=lambda name: name == "QueueCallerJoin")
    decoder.feed(BANNER)
    assert decoder.feed(complete) == []  # nobody is waiting for it: dropped by name
    decoder.actions_pending = True
    [message] = decoder.feed(complete)
    assert message.action_id == "qs-1"


def test_a_whole_recording_decodes_as_the_live_socket_would() -> None:
    """``hotline replay`` reads a transcript at once; the live decoder reads it a socket read
    at a time. Every recorded session (and a damaged tail) must give the very same messages."""
    from pathlib import Path

    from ami.codec import decode_recording
    from ami.feed import keep_event
    from ami.replay import read_transcript, read_transcript_by_chunks

    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    sessions = sorted(fixtures.rglob("*.ami"))
    assert len(sessions) >= 5
    for path in sessions:
        for keep in (keep_event, None):
            whole = [(m.as_sent, str(m)) for m in read_transcript(path, keep)]
            chunked = [(m.as_sent, str(m)) for m in read_transcript_by_chunks(path, keep)]
            assert whole == chunked, path.name
            assert whole
    data = sessions[0].read_bytes()
    damaged = data + b"Event: Newchannel\r\nUniqueid: 1.1\r\nCallerIDName: \xe5\xbc\xa0\xff\r\n\r\n"
    damaged += b"Event: Hangup\r\nUniqueid: 1.1"  # cut off: never a message
    decoder = AmiFrameDecoder(keep_event)
    live = [
        m.as_sent
        for start in range(0, len(damaged), 7)
        for m in decoder.feed(damaged[start : start + 7])
    ]
    assert [m.as_sent for m in decode_recording(damaged, keep_event)] == live
    assert live[-1]["CallerIDName"] == "张\ufffd"


# -- a whole recording at once --------------------------------------------------------------

KEPT = frozenset({"QueueCallerJoin", "Hangup", "HangupRequest"}).__contains__
# Frames as Asterisk sends them, and the odd shapes the live decoder has rules for: an event
# kept or dropped by name, a name met for the first time, a response, "Event:" without its
# space, a blank line before a frame, an empty frame, a lone CR or LF, a broken UTF-8 byte,
# a line without ": ".
FRAME_PIECES = [
    b"Event: QueueCallerJoin\r\nUniqueid: 1.1\r\nQueue: hotline",
    b"Event: Hangup\r\nUniqueid: 1.1\r\nCause: 16",
    b"Event: HangupRequest",
    b"Event: VarSet\r\nVariable: A\r\nValue: b",
    b"Event: Newexten\r\nApplication: Queue",
    b"Event: HangupRequestX\r\nUniqueid: 1.2",
    b"Event: Hangup \r\nUniqueid: 1.3",
    b"Event: \r\nUniqueid: 1.4",
    b"Event: Hang\rup\r\nUniqueid: 1.5",
    b"Response: Success\r\nActionID: a-1",
    b"Event:Hangup\r\nUniqueid: 1.6",
    b"\r\nEvent: Hangup\r\nUniqueid: 1.7",
    b"\r\nEvent: VarSet",
    b"",
    b"\r\n",
    b"Event: Hangup\r\nCallerIDName: \xe5\xbc\xa0\xff\r\nUniqueid: 1.8",
    b"Event: Hangup\r\nOutput\r\nChannel:PJSIP/x",
    b"Event: QueueCallerJoin\r\nValue: a\nb\r\nUniqueid: 1.9",
]


def _live(data: bytes, keep_event: Callable[[str], bool] | None) -> list[tuple[dict, str]]:
    decoder = AmiFrameDecoder(keep_event)
    found = [m for start in range(0, len(data), 5) for m in decoder.feed(data[start : start + 5])]
    return [(dict(m.as_sent), m.get("Event", "")) for m in found]


def _recorded(data: bytes, keep_event: Callable[[str], bool] | None) -> list[tuple[dict, str]]:
    found = decode_recording(data, keep_event)
    return [(dict(m.as_sent), m.get("Event", "")) for m in found]


@settings(max_examples=300)
@given(
    pieces=st.lists(st.sampled_from(FRAME_PIECES), max_size=12),
    tail=st.sampled_from([b"", b"\r\n\r\n", b"\r\n\r\n\r\n", b"\r\nEvent: Hangup"]),
)
def test_a_recording_decodes_as_the_live_decoder_whatever_its_frames(
    pieces: list[bytes], tail: bytes
) -> None:
    """``decode_recording`` finds kept frames with a pattern over the bytes and falls back to
    a plain split after a run of blank lines; either way, the live decoder's messages."""
    data = BANNER + b"\r\n\r\n".join(pieces) + tail
    for keep in (KEPT, None, lambda name: "\ufffd" in name or name == ""):
        assert _recorded(data, keep) == _live(data, keep)


def test_a_name_met_late_in_a_long_recording_is_learned_not_asked_per_frame() -> None:
    asked: list[str] = []

    def keep(name: str) -> bool:
        asked.append(name)
        return name in ("Hangup", "Late")

    filler = b"Event: VarSet\r\nVariable: A\r\nValue: " + b"x" * 1000 + b"\r\n\r\n"
    data = BANNER + filler * 400 + b"Event: Late\r\nUniqueid: 1\r\n\r\n" + filler
    data += b"Event: Hangup\r\nUniqueid: 2\r\n\r\n" + b"Event: Late\r\nUniqueid: 3\r\n\r\n"
    assert [m["Uniqueid"] for m in decode_recording(data, keep)] == ["1", "2", "3"]
    assert set(asked) == {"Hangup", "Late", "VarSet"}
    assert len(asked) <= 4  # the first frame is judged on its own, the others by name


@pytest.mark.parametrize("blank_lines", [0, 1, 2, 3])
@pytest.mark.parametrize("extra", [-1, 0, 1, 2])
def test_an_overlong_frame_is_refused_before_any_message(
    monkeypatch: pytest.MonkeyPatch, blank_lines: int, extra: int
) -> None:
    """The length check jumps through the bytes; around a run of blank lines it defers to the
    plain split. Either way: refused exactly when a frame (bytes) is longer than the limit."""
    monkeypatch.setattr("ami.codec.MAX_PENDING_CHARS", 100)
    head = b"Event: Hangup\r\nUniqueid: 1\r\n\r\n"
    long = b"Event: Hangup\r\nX: " + b"y" * (100 - 18 + extra)
    data = BANNER + head + b"\r\n" * blank_lines + long + b"\r\n\r\n" + head
    frames = data[len(BANNER) :].split(b"\r\n\r\n")
    if max(map(len, frames)) > 100:
        with pytest.raises(AmiProtocolError, match="longer than 100"):
            next(read_recording(data, KEPT))
    else:  # every frame is a Hangup: kept by the filter, as by no filter at all
        plain = [m.as_sent for m in read_recording(data, None)]
        assert [m.as_sent for m in read_recording(data, KEPT)] == plain
        assert len(plain) == 3


def test_a_mapped_transcript_reads_as_the_bytes_do(tmp_path: Path) -> None:
    from ami.feed import keep_event
    from ami.replay import read_transcript

    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    empty = tmp_path / "empty.ami"
    empty.write_bytes(b"")
    for path in sorted(fixtures.rglob("*.ami")):
        read = [m.as_sent for m in read_transcript(path, keep_event)]
        assert [m.as_sent for m in read_transcript(path, keep_event, mapped=True)] == read
    with pytest.raises(AmiProtocolError, match="no AMI greeting"):
        list(read_transcript(empty, keep_event, mapped=True))


def test_the_replay_clock_holds_back_only_the_messages_before_the_first_timed_one() -> None:
    from ami.replay import ReplayClock

    untimed = parse_message("Event: Hangup\r\nUniqueid: 1795575485.0")
    timed = parse_message("Event: Newchannel\r\nUniqueid: 1795575486.1")
    later = parse_message("Event: Hangup\r\nUniqueid: 1795575486.1\r\nTimestamp: 1795575490.5")
    reference = ReplayClock()
    reference.seed([untimed, timed, later])
    clock = ReplayClock()
    stream = clock.seeded(iter([untimed, timed, later]))
    assert next(stream) is untimed
    assert clock.now == reference.now
    assert [*stream] == [timed, later]


# Frames of one event in the shapes a session can mix: the usual headers, a header more, a
# repeated one, a value with ": ", a lone CR or LF in a value, names that mean something in a
# pattern, a line that is no "name: value".
SHAPED_PIECES = [
    b"Event: Hangup\r\nChannel: PJSIP/a-1\r\nUniqueid: 1.1\r\nCause-txt: Normal",
    b"Event: Hangup\r\nChannel: PJSIP/a-2\r\nUniqueid: 1.2\r\nCause-txt: Busy",
    b"Event: Hangup\r\nChannel: PJSIP/a-3\r\nUniqueid: 1.3\r\nCause-txt: x: y",
    b"Event: Hangup\r\nChannel: PJSIP/a-4\r\nUniqueid: 1.4\r\nCause-txt: a\nb",
    b"Event: Hangup\r\nChannel: PJSIP/a-5\r\nUniqueid: 1.5\r\nCause-txt: a\rb",
    b"Event: Hangup\r\nChannel: PJSIP/a-6\r\nUniqueid: 1.6\r\nCause-txt: ",
    b"Event: Hangup\r\nChannel: PJSIP/a-7\r\nUniqueid: 1.7\r\nCause-txt: n\r\nChanVariable: A=1",
    b"Event: Hangup\r\nChanVariable: A=1\r\nChanVariable: B=2\r\nUniqueid: 1.8",
    b"Event: Hangup\r\nChanVariable: A=3\r\nChanVariable: B=4\r\nUniqueid: 1.9",
    b"Event: Hangup\r\nA.B*(x): 1\r\nUniqueid: 2.1",
    b"Event: Hangup\r\nA.B*(x): 2\r\nUniqueid: 2.2",
    b"Event: Hangup\r\nChannel:PJSIP/a-8\r\nUniqueid: 2.3\r\nCause-txt: Normal",
    b"Event: Hangup\r\nOutput\r\nUniqueid: 2.4\r\nCause-txt: Normal",
    b"Event: Hangup\r\nChannel: PJSIP/a-9\r\nUniqueid: 2.5",
    b"Event: HangupRequest\r\nChannel: PJSIP/a-1\r\nUniqueid: 1.1\r\nCause-txt: Normal",
]


@settings(max_examples=200)
@given(pieces=st.lists(st.sampled_from(SHAPED_PIECES), min_size=1, max_size=30))
def test_frames_read_by_their_learnt_shape_parse_as_line_by_line(pieces: list[bytes]) -> None:
    """Past a few frames of an event, ``decode_recording`` reads each in one match of the
    shape learnt from an earlier one; any frame that differs is parsed line by line."""
    data = BANNER + b"\r\n\r\n".join(pieces) + b"\r\n\r\n"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("ami.codec.SHAPE_AFTER_FRAMES", 1)
        patch.setattr("ami.codec.MAX_SHAPES_PER_EVENT", 3)
        for keep in (KEPT, lambda name: name == "Hangup"):
            recorded = decode_recording(data, keep)
            live = AmiFrameDecoder(keep).feed(data)
            assert [(dict(m.as_sent), list(m)) for m in recorded] == [
                (dict(m.as_sent), list(m)) for m in live
            ]
            assert [m.headers for m in recorded] == [m.headers for m in live]
