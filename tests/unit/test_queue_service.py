"""The live shell: resync with buffering, deltas and snapshots on the bus, hour buckets saved."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from ami.codec import parse_message
from ami.feed import resync_from_asterisk
from ami.queue_log import AsteriskQueueLog
from hotline.schema import upgrade_database
from infra.bus import InProcessBus
from infra.storage import create_engine, session_factory
from queue_stats.calls import CallRecord, CallTracker
from queue_stats.hourly import HourlyStore
from queue_stats.journal import CallJournal
from queue_stats.pipeline import EventPipeline
from queue_stats.service import QueueService, snapshot_delta
from queue_stats.stats import QueueStats
from tests.ami_feeding import into_service

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def frame(text: str):  # type: ignore[no-untyped-def]
    return parse_message(text.strip().replace("\n", "\r\n"))


QUEUE_STATUS = [
    frame("Response: Success\nActionID: 1\nEventList: start\nMessage: Queue status will follow"),
    frame(
        "Event: QueueParams\nQueue: hotline\nServiceLevel: 20\nCompleted: 3\nAbandoned: 1\n"
        "Calls: 1\nActionID: 1"
    ),
    frame(
        "Event: QueueMember\nQueue: hotline\nName: Agent One\nLocation: PJSIP/agent1\n"
        "Status: 2\nPaused: 0\nPausedReason: \nInCall: 1\nCallsTaken: 3\nActionID: 1"
    ),
    frame(
        "Event: QueueEntry\nQueue: hotline\nPosition: 1\nChannel: PJSIP/citizens-00000009\n"
        "Uniqueid: 9.9\nCallerIDNum: 13800009999\nCallerIDName: 李四\nWait: 12\nActionID: 1"
    ),
    frame("Event: QueueStatusComplete\nActionID: 1\nEventList: Complete\nListItems: 3"),
]
CHANNELS = [
    frame("Response: Success\nActionID: 3\nEventList: start\nMessage: Channels will follow"),
    frame(
        "Event: CoreShowChannel\nChannel: PJSIP/citizens-00000009\nUniqueid: 9.9\n"
        "Linkedid: 9.9\nContext: hotline-call\nActionID: 3"
    ),
    frame("Event: CoreShowChannelsComplete\nActionID: 3\nEventList: Complete\nListItems: 1"),
]


class FakeAsterisk:
    """Answers the resync actions with recorded-shape frames, after a delay."""

    def __init__(self, service: QueueService) -> None:
        self.service = service
        self.asked: list[str] = []

    async def send_action(self, action: str, **headers: str | int):  # type: ignore[no-untyped-def]
        self.asked.append(action)
        if action == "QueueStatus":
            # A live event arrives while Asterisk prepares the answer: it must be buffered.
            into_service(
                self.service,
                frame(
                    "Event: QueueCallerJoin\nChannel: PJSIP/citizens-0000000a\nUniqueid: 10.1\n"
                    "Linkedid: 10.1\nQueue: hotline\nPosition: 2\nCallerIDNum: 13900001111"
                ),
            )
            assert self.service.pipeline.stats.queues == {}  # not applied yet
            return QUEUE_STATUS
        if action == "CoreShowChannels":
            return CHANNELS
        return [frame("Response: Success\nActionID: 2\nMessage: Queue summary will follow")]


def build(tmp_path: Path, bus: InProcessBus) -> tuple[QueueService, object]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    sessions = session_factory(engine)
    pipeline = EventPipeline(
        CallTracker(frozenset({"from-citizens"})),
        QueueStats(ZoneInfo("Asia/Shanghai")),
        lambda: NOW,
    )
    service = QueueService(
        pipeline, CallJournal(sessions), HourlyStore(sessions), bus, clock=lambda: NOW
    )
    return service, engine


async def test_resync_adopts_asterisks_present_then_replays_buffered_events(tmp_path: Path) -> None:
    bus = InProcessBus()
    service, engine = build(tmp_path, bus)
    asterisk = FakeAsterisk(service)
    await resync_from_asterisk(service, asterisk)
    assert asterisk.asked == ["QueueStatus", "QueueSummary", "CoreShowChannels"]
    snapshot = service.snapshot()
    hotline = snapshot["queues"]["hotline"]
    assert hotline["waiting_now"] == 2  # 9.9 from the snapshot, 10.1 from the buffer
    assert hotline["offered"] == 2  # 10.1 joined live; 9.9 joined before we looked
    assert snapshot["agents"]["PJSIP/agent1"]["state"] == "on_call"
    assert [w["uniqueid"] for w in snapshot["waiting"]["hotline"]] == ["9.9", "10.1"]
    assert service.pipeline.tracker.call("9.9").caller_name == "李四"
    await engine.dispose()


async def test_a_late_subscriber_gets_the_snapshot_and_live_deltas(tmp_path: Path) -> None:
    bus = InProcessBus()
    service, engine = build(tmp_path, bus)
    publisher = asyncio.create_task(service.run_publisher())
    deltas = bus.subscribe("stats")
    first_delta = asyncio.ensure_future(anext(deltas))
    await asyncio.sleep(0)
    into_service(
        service,
        frame(
            "Event: QueueCallerJoin\nChannel: PJSIP/c-1\nUniqueid: 1.1\nLinkedid: 1.1\n"
            "Queue: hotline\nPosition: 1\nCallerIDNum: 1"
        ),
    )
    delta = await asyncio.wait_for(first_delta, 2)
    assert delta["type"] == "stats.delta" and delta["seq"] == 1
    assert delta["queues"]["hotline"]["waiting_now"] == 1
    stored = await bus.load_snapshot("stats")
    assert stored["seq"] == 1 and stored["queues"]["hotline"]["offered"] == 1
    into_service(
        service,
        frame(
            "Event: QueueCallerAbandon\nChannel: PJSIP/c-1\nUniqueid: 1.1\nLinkedid: 1.1\n"
            "Queue: hotline\nPosition: 1\nOriginalPosition: 1\nHoldTime: 7"
        ),
    )
    into_service(service, frame("Event: Hangup\nChannel: PJSIP/c-1\nUniqueid: 1.1\nCause: 16"))
    second = await asyncio.wait_for(anext(deltas), 2)
    assert second["seq"] == 2
    assert second["queues"]["hotline"]["abandoned"] == 1
    assert "agents" not in second  # nothing changed there: not repeated
    publisher.cancel()
    await deltas.aclose()
    await engine.dispose()


def test_snapshot_delta_names_changed_and_removed_entries() -> None:
    old = {"queues": {"a": {"x": 1}, "b": {"x": 1}}, "pbx": {"up": True}}
    new = {"queues": {"a": {"x": 2}, "c": {"x": 0}}, "pbx": {"up": True}}
    assert snapshot_delta(old, new) == {"queues": {"a": {"x": 2}, "c": {"x": 0}, "b": None}}
    assert snapshot_delta(new, new) == {}


async def test_hour_buckets_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    await upgrade_database(url)
    bus = InProcessBus()
    service, engine = build(tmp_path, bus)
    for uid in ("1.1", "2.2"):
        into_service(
            service,
            frame(
                f"Event: QueueCallerJoin\nChannel: PJSIP/c\nUniqueid: {uid}\nLinkedid: {uid}\n"
                "Queue: hotline\nPosition: 1\nCallerIDNum: 1"
            ),
        )
    await service.flush_hours()
    await service.flush_hours()  # nothing new: a no-op
    await engine.dispose()

    restarted, engine = build(tmp_path, bus)
    await restarted.load_today()
    assert restarted.snapshot()["queues"]["hotline"]["offered"] == 2
    rows = await HourlyStore(session_factory(engine)).since(NOW - timedelta(hours=1))
    assert [(queue, counters.offered) for queue, _, counters in rows] == [("hotline", 2)]
    await engine.dispose()


class Answers:
    """Observer that notes the calls announced as answered (the ticket signer's hook)."""

    def __init__(self) -> None:
        self.answered: list[str] = []

    def call_offered(self, call: CallRecord) -> None:
        return None

    def call_answered(self, call: CallRecord) -> None:
        self.answered.append(call.uniqueid)

    def call_finished(self, call: CallRecord) -> None:
        return None


class EmptyAsterisk:
    """After the absence: no caller waiting, no channel up."""

    async def send_action(self, action: str, **headers: str | int):  # type: ignore[no-untyped-def]
        complete = "QueueStatusComplete" if action == "QueueStatus" else f"{action}Complete"
        return [
            frame("Response: Success\nActionID: 1\nEventList: start"),
            frame(f"Event: {complete}\nActionID: 1\nEventList: Complete\nListItems: 0"),
        ]


async def test_calls_of_an_absence_are_journalled_from_queue_log(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    await upgrade_database(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    pipeline = EventPipeline(
        CallTracker(frozenset({"from-citizens"})),
        QueueStats(ZoneInfo("Asia/Shanghai")),
        lambda: NOW,
    )
    queue_log = tmp_path / "queue_log"
    answers = Answers()
    journal = CallJournal(sessions)
    service = QueueService(
        pipeline,
        journal,
        HourlyStore(sessions),
        InProcessBus(),
        clock=lambda: NOW,
        observers=[answers],
        queue_log=AsteriskQueueLog(queue_log),
    )
    writer = asyncio.create_task(service.run_writer())
    # The first login: the journal is new, nothing to read.
    await resync_from_asterisk(service, EmptyAsterisk())
    # Seen live: 5.5 joins the queue; then AMI is lost.
    into_service(
        service,
        frame(
            "Event: QueueCallerJoin\nChannel: PJSIP/citizens-00000005\nUniqueid: 5.5\n"
            "Linkedid: 5.5\nQueue: hotline\nPosition: 1\nCallerIDNum: 13800000005\n"
            "CallerIDName: 王五"
        ),
    )
    t = int(NOW.timestamp())
    queue_log.write_text(
        f"{t}|5.5|hotline|NONE|ENTERQUEUE||13800000005|1\n"
        f"{t + 20}|5.5|hotline|NONE|ABANDON|1|1|20\n"
        f"{t + 30}|6.6|hotline|NONE|ENTERQUEUE||13800000006|1\n"
        f"{t + 34}|6.6|hotline|Agent One|CONNECT|4|6.7|3\n"
        f"{t + 94}|6.6|hotline|Agent One|COMPLETECALLER|4|60|1\n"
        f"{t + 100}|7.7|hotline|NONE|ENTERQUEUE||13800000007|1\n"
        f"{t + 101}|7.7|hotline|Agent One|CONNECT|1|7.8|1\n"
    )
    await resync_from_asterisk(service, EmptyAsterisk())
    assert await service.drain(5)
    row = await journal.by_uniqueid("5.5")
    assert row is not None
    assert (row.outcome, row.hold_seconds, row.source) == ("abandoned", 20, "ami")
    assert (row.channel, row.caller_name) == ("PJSIP/citizens-00000005", "王五")
    row = await journal.by_uniqueid("6.6")
    assert row is not None
    assert (row.outcome, row.hold_seconds, row.talk_seconds, row.source) == (
        "answered",
        4,
        60,
        "queue_log",
    )
    assert row.agent_name == "Agent One" and row.caller_number == "13800000006"
    assert await journal.by_uniqueid("7.7") is None  # still talking: no row yet
    assert answers.answered == ["6.6"]
    counters = pipeline.stats.queues["hotline"].today
    assert (counters.offered, counters.answered, counters.abandoned) == (2, 1, 1)
    assert (counters.completed, counters.talk_seconds) == (1, 60)

    # 7.7 ends while AMI is up again: counted live, then journalled by the follow-up.
    into_service(
        service,
        frame(
            "Event: AgentComplete\nChannel: PJSIP/citizens-00000007\nUniqueid: 7.7\n"
            "Linkedid: 7.7\nQueue: hotline\nInterface: PJSIP/agent1\nMemberName: Agent One\n"
            "HoldTime: 1\nTalkTime: 60\nReason: agent"
        ),
    )
    with queue_log.open("a") as log:
        log.write(f"{t + 161}|7.7|hotline|Agent One|COMPLETEAGENT|1|60|1\n")
    assert await service.follow_up_queue_log() == 1
    assert await service.follow_up_queue_log() == 0
    assert await service.drain(5)
    row = await journal.by_uniqueid("7.7")
    assert row is not None and (row.outcome, row.talk_seconds) == ("answered", 60)
    assert answers.answered == ["6.6", "7.7"]
    assert (counters.offered, counters.answered, counters.abandoned) == (3, 2, 1)
    assert (counters.completed, counters.talk_seconds) == (2, 120)  # 7.7's end once, live

    # Another login finds nothing new: every call has its one row.
    await resync_from_asterisk(service, EmptyAsterisk())
    assert await service.drain(5)
    assert service.counters["queue_log_recovered"] == 3
    assert len(await journal.recent()) == 3
    writer.cancel()
    await engine.dispose()


async def test_a_call_that_never_ends_in_queue_log_is_not_waited_for_forever(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    await upgrade_database(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    now = [NOW]
    pipeline = EventPipeline(
        CallTracker(frozenset({"from-citizens"})),
        QueueStats(ZoneInfo("Asia/Shanghai")),
        lambda: now[0],
    )
    queue_log = tmp_path / "queue_log"
    service = QueueService(
        pipeline,
        CallJournal(sessions),
        HourlyStore(sessions),
        InProcessBus(),
        clock=lambda: now[0],
        queue_log=AsteriskQueueLog(queue_log),
    )
    await resync_from_asterisk(service, EmptyAsterisk())  # watching from now on
    into_service(service, frame("Event: FullyBooted\nStatus: Fully Booted"))
    # No queue_log where the setting says: a clear warning.
    await resync_from_asterisk(service, EmptyAsterisk())
    assert service.counters["queue_log_failures"] == 1
    t = int(NOW.timestamp())
    queue_log.write_text(
        f"{t + 5}|8.8|hotline|NONE|ENTERQUEUE||13800000008|1\n"
        f"{t + 6}|8.8|hotline|Agent One|CONNECT|1|8.9|1\n"  # then Asterisk crashed
    )
    into_service(service, frame("Event: FullyBooted\nStatus: Fully Booted"))
    await resync_from_asterisk(service, EmptyAsterisk())
    assert await service.follow_up_queue_log() == 0  # still talking, as far as the log says
    now[0] = NOW + timedelta(hours=7)
    assert await service.follow_up_queue_log() == 0
    assert service.counters["queue_log_calls_never_ended"] == 1
    await engine.dispose()
