"""Which agent's phone rings with which call: the panel's pop-up, from a real recorded session."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ami.codec import AmiMessage
from ami.replay import ReplayClock, read_transcript
from hotline.config import Settings
from hotline.service import build_pipeline
from queue_stats.pipeline import RingingAgent, keep_event
from queue_stats.service import ringing_summary


def ringing_in(path: Path) -> tuple[list[RingingAgent], list[AmiMessage]]:
    clock = ReplayClock()
    pipeline = build_pipeline(Settings(), clock.current)
    messages = list(read_transcript(path, keep_event))
    clock.seed(messages)
    ringing = []
    for message in messages:
        result = pipeline.on_ami_message(message, clock.advance(message))
        if result.ringing is not None:
            ringing.append(result.ringing)
    return ringing, messages


def test_each_agent_called_by_the_queue_rings_once_not_again_for_queues_own_dial(
    real_session: Path,
) -> None:
    ringing, messages = ringing_in(real_session)
    called = [m.as_sent for m in messages if m.as_sent.get("Event") == "AgentCalled"]
    dials = [m for m in messages if m.as_sent.get("Event") == "DialBegin"]
    assert len(called) == 37 and len(dials) == 37  # Queue() dials each member it calls
    assert [(r.call.uniqueid, r.interface) for r in ringing] == [
        (m["Uniqueid"], m["Interface"]) for m in called
    ]
    assert Counter(r.interface for r in ringing) == Counter(m["Interface"] for m in called)


def test_the_pop_up_message_names_the_agent_and_the_caller_but_not_their_name(
    real_session: Path,
) -> None:
    ringing, _ = ringing_in(real_session)
    message = ringing_summary(ringing[0])
    assert message["type"] == "call.ringing"
    assert message["agent"] == ringing[0].interface
    assert message["caller_number"] == ringing[0].call.caller_number
    assert "caller_name" not in message
