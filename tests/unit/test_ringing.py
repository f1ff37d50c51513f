"""Which agent's phone rings with which call: the panel's pop-up, from a real recorded session."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from ami.codec import AmiMessage
from ami.feed import keep_event
from ami.replay import ReplayClock, read_transcript
from hotline.service import build_pipeline
from infra.config import Settings
from queue_stats.pipeline import RingingAgent
from queue_stats.service import ringing_summary
from tests.ami_feeding import into_service, through_ami


def ringing_in(path: Path) -> tuple[list[RingingAgent], list[AmiMessage]]:
    clock = ReplayClock()
    pipeline = build_pipeline(Settings(), clock.current)
    messages = list(read_transcript(path, keep_event))
    clock.seed(messages)
    ringing = []
    for message in messages:
        result = through_ami(pipeline, message, clock.advance(message))
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


async def test_the_board_says_whom_an_agent_is_talking_to_and_since_when(
    real_session: Path, tmp_path: Path
) -> None:
    """Replayed to the first AgentConnect: that agent's entry names the caller and the moment
    the state began; the others talk to nobody."""
    from infra.bus import InProcessBus
    from infra.storage import create_engine, session_factory
    from queue_stats.hourly import HourlyStore
    from queue_stats.journal import CallJournal
    from queue_stats.service import QueueService

    clock = ReplayClock()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    sessions = session_factory(engine)
    service = QueueService(
        build_pipeline(Settings(), clock.current),
        CallJournal(sessions),
        HourlyStore(sessions),
        InProcessBus(),
        clock=clock.current,
    )
    messages = list(read_transcript(real_session, keep_event))
    clock.seed(messages)
    for message in messages:
        clock.advance(message)
        into_service(service, message)
        if message.as_sent.get("Event") == "AgentConnect":
            connect = message.as_sent
            break
    board = service.snapshot()["agents"]
    talking = board[connect["Interface"]]
    assert (talking["state"], talking["caller"]) == ("on_call", connect["CallerIDNum"])
    assert talking["state_since"] == clock.current().isoformat(timespec="seconds")
    assert [a["caller"] for i, a in board.items() if i != connect["Interface"]] == [None] * (
        len(board) - 1
    )
    await engine.dispose()


class OneAtATimeBus:
    """A bus that notes every message and how many publications were in flight at once."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, object]]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def publish(self, channel: str, message: dict[str, object]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)  # a round trip to Redis
        self.published.append((channel, message))
        self.in_flight -= 1


async def test_a_burst_of_pop_ups_goes_out_whole_in_order_one_publication_at_a_time(
    real_session: Path, tmp_path: Path
) -> None:
    """The whole recorded session fed at once (a PBX's backlog): every pop-up is published, in
    the order the agents rang, and never more than one at a time (one Redis connection, where a
    task per message ran the client's pool dry and lost the rest)."""
    from infra.storage import create_engine, session_factory
    from queue_stats.hourly import HourlyStore
    from queue_stats.journal import CallJournal
    from queue_stats.service import QueueService

    ringing, _ = ringing_in(real_session)
    clock = ReplayClock()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    sessions = session_factory(engine)
    bus = OneAtATimeBus()
    service = QueueService(
        build_pipeline(Settings(), clock.current),
        CallJournal(sessions),
        HourlyStore(sessions),
        bus,  # type: ignore[arg-type]
        clock=clock.current,
    )
    messages = list(read_transcript(real_session, keep_event))
    clock.seed(messages)
    for message in messages:
        clock.advance(message)
        into_service(service, message)
    for _ in range(10 * len(ringing)):
        if len(bus.published) == len(ringing):
            break
        await asyncio.sleep(0)
    assert bus.published == [("calls", ringing_summary(r)) for r in ringing]
    assert bus.most_in_flight == 1
    await engine.dispose()
