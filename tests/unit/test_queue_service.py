"""The live shell: resync with buffering, deltas and snapshots on the bus, hour buckets saved."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from ami.codec import parse_message
from hotline.bus import InProcessBus
from hotline.storage import create_engine, session_factory, upgrade_database
from queue_stats.calls import CallTracker
from queue_stats.hourly import HourlyStore
from queue_stats.journal import CallJournal
from queue_stats.pipeline import EventPipeline
from queue_stats.service import QueueService, snapshot_delta
from queue_stats.stats import QueueStats

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
            self.service.on_ami_message(
                frame(
                    "Event: QueueCallerJoin\nChannel: PJSIP/citizens-0000000a\nUniqueid: 10.1\n"
                    "Linkedid: 10.1\nQueue: hotline\nPosition: 2\nCallerIDNum: 13900001111"
                )
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
    await service.resync(asterisk)
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
    service.on_ami_message(
        frame(
            "Event: QueueCallerJoin\nChannel: PJSIP/c-1\nUniqueid: 1.1\nLinkedid: 1.1\n"
            "Queue: hotline\nPosition: 1\nCallerIDNum: 1"
        )
    )
    delta = await asyncio.wait_for(first_delta, 2)
    assert delta["type"] == "stats.delta" and delta["seq"] == 1
    assert delta["queues"]["hotline"]["waiting_now"] == 1
    stored = await bus.load_snapshot("stats")
    assert stored["seq"] == 1 and stored["queues"]["hotline"]["offered"] == 1
    service.on_ami_message(
        frame(
            "Event: QueueCallerAbandon\nChannel: PJSIP/c-1\nUniqueid: 1.1\nLinkedid: 1.1\n"
            "Queue: hotline\nPosition: 1\nOriginalPosition: 1\nHoldTime: 7"
        )
    )
    service.on_ami_message(frame("Event: Hangup\nChannel: PJSIP/c-1\nUniqueid: 1.1\nCause: 16"))
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
        service.on_ami_message(
            frame(
                f"Event: QueueCallerJoin\nChannel: PJSIP/c\nUniqueid: {uid}\nLinkedid: {uid}\n"
                "Queue: hotline\nPosition: 1\nCallerIDNum: 1"
            )
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
