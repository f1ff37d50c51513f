from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami.codec import AmiFrameDecoder, AmiProtocolError, encode_action, parse_message

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
