"""The inbound Event Socket client against FreeSWITCH's side of recorded sessions, over a real
loopback socket: login, subscriptions, commands, the resync on every login, reconnects and the
watchdog; and the figures that reach the queue service equal FreeSWITCH's own CDR."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from esl.client import EslClient, EslCommandFailed, EslNotConnected
from esl.codec import parse_event
from esl.feed import FreeswitchFeed
from hotline.service import build_pipeline
from infra.bus import InProcessBus
from infra.config import Settings
from infra.storage import create_engine, session_factory
from queue_stats.hourly import HourlyStore
from queue_stats.journal import CallJournal
from queue_stats.service import QueueService
from tests.esl_server import (
    PASSWORD,
    RecordedFreeswitch,
    moved_to_today,
    recorded_api_replies,
    recorded_event_frames,
)
from tests.unit.test_esl_recorded import cdr_figures

QUEUE_FIGURES = ("offered", "answered", "abandoned", "timed_out")
AGENT_FIGURES = ("answered", "ring_no_answer", "talk_seconds")


def resync_commands(*queues: str) -> list[str]:
    """What the client asks at each login: the queues, then each queue's lists, then channels."""
    lists = [
        f"api callcenter_config queue list {what} {queue}"
        for queue in queues
        for what in ("agents", "tiers", "members")
    ]
    return ["api callcenter_config queue list", *lists, "api show channels as json"]


RESYNC = resync_commands("hotline")


@dataclass
class Connected:
    client: EslClient
    feed: FreeswitchFeed
    queues: QueueService


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[tuple[QueueService, object]]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    sessions = session_factory(engine)
    clock_now = [None]

    def clock():  # type: ignore[no-untyped-def]
        from datetime import UTC, datetime

        return clock_now[0] or datetime.now(UTC)

    pipeline = build_pipeline(Settings(_env_file=None), clock)  # type: ignore[call-arg]
    queues = QueueService(
        pipeline, CallJournal(sessions), HourlyStore(sessions), InProcessBus(), clock=clock
    )
    yield queues, engine
    await engine.dispose()  # type: ignore[attr-defined]


def connect(port: int, queues: QueueService, **options: float) -> Connected:
    async def api(command: str) -> str:  # the client is made below: it needs the feed
        return await client.api(command)

    feed = FreeswitchFeed(queues, api)
    client = EslClient(
        host="127.0.0.1",
        port=port,
        password=PASSWORD,
        sink=feed.on_event,
        max_backoff=0.5,
        **options,
    )
    client.on_login = feed.on_login
    return Connected(client, feed, queues)


async def until(condition, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def figures(queues: QueueService) -> tuple[dict, dict]:
    snapshot = queues.pipeline.stats.snapshot(queues.pipeline.stats.last_event_at)
    got_queues = {n: {k: q[k] for k in QUEUE_FIGURES} for n, q in snapshot["queues"].items()}
    got_agents = {n: {k: a[k] for k in AGENT_FIGURES} for n, a in snapshot["agents"].items()}
    return got_queues, got_agents


def expected(session: str) -> tuple[dict, dict]:
    queues, agents = cdr_figures(session)
    return (
        {n: {k: q[k] for k in QUEUE_FIGURES} for n, q in queues.items()},
        {n: {k: a[k] for k in AGENT_FIGURES} for n, a in agents.items()},
    )


async def test_a_live_session_gives_the_cdrs_figures_after_its_resync(services) -> None:  # type: ignore[no-untyped-def]
    queues, _ = services
    async with RecordedFreeswitch("basic-queue") as freeswitch:
        connected = connect(freeswitch.port, queues)
        await connected.client.start()
        assert await connected.client.wait_connected(5)
        await until(lambda: freeswitch.all_sent)
        await connected.feed.resynced()
        await until(lambda: connected.client.counters["events"] >= freeswitch.events_sent)
        await connected.client.close()
    assert freeswitch.commands[0][:2] == [f"auth {PASSWORD}", freeswitch.commands[0][1]]
    assert freeswitch.commands[0][1].startswith("event plain ")
    assert "callcenter::info" in freeswitch.commands[0][1]
    assert freeswitch.commands[0][2:] == RESYNC
    assert queues.counters["resyncs"] == 1
    assert figures(queues) == expected("basic-queue")
    # The resync adopted the agents' status: agent3 was On Break in FreeSWITCH's lists.
    assert queues.snapshot()["agents"]["agent3"]["pause_reason"] == "On Break"


async def test_a_dropped_connection_is_reconnected_and_resynced(services) -> None:  # type: ignore[no-untyped-def]
    queues, _ = services
    async with RecordedFreeswitch(
        "timeouts-and-changes",
        cut_after=900,
        cut_not_before_commands=2 + len(resync_commands("hotline", "enterprise")),
    ) as freeswitch:
        connected = connect(freeswitch.port, queues)
        downs: list[str] = []
        connected.client.on_down = downs.append
        await connected.client.start()
        await until(lambda: freeswitch.all_sent and len(freeswitch.commands) == 2)
        await until(lambda: connected.client.counters["events"] >= freeswitch.events_sent)
        await connected.feed.resynced()
        assert downs == ["connection closed"] and connected.client.reconnects == 1
        await connected.client.close()
    both = resync_commands("hotline", "enterprise")
    assert [c[2:] for c in freeswitch.commands] == [both, both]
    assert queues.counters["resyncs"] == 2
    assert figures(queues) == expected("timeouts-and-changes")


async def test_api_and_bgapi_answers_and_an_error(services) -> None:  # type: ignore[no-untyped-def]
    queues, _ = services
    async with RecordedFreeswitch("basic-queue") as freeswitch:
        connected = connect(freeswitch.port, queues)
        await connected.client.start()
        assert await connected.client.wait_connected(5)
        command = "callcenter_config queue list agents hotline"
        recorded = recorded_api_replies("basic-queue")[command]
        assert await connected.client.api(command) == recorded
        assert await connected.client.bgapi(command) == recorded
        with pytest.raises(EslCommandFailed, match="Invalid"):
            await connected.client.api("callcenter_config queue count hotline")
        with pytest.raises(ValueError, match="one line"):
            await connected.client.api("status\n\napi fsctl shutdown")
        await connected.client.close()
        with pytest.raises(EslNotConnected):
            await connected.client.api("status")


async def test_a_refused_password_is_retried_and_never_connects(services) -> None:  # type: ignore[no-untyped-def]
    queues, _ = services
    async with RecordedFreeswitch("basic-queue", password="another") as freeswitch:
        connected = connect(freeswitch.port, queues)
        await connected.client.start()
        await until(lambda: len(freeswitch.commands) >= 2, within=5)
        assert not connected.client.connected
        assert "password refused" in connected.client.last_problem
        await connected.client.close()


async def test_a_freeswitch_that_never_answers_is_left_and_tried_again(services) -> None:  # type: ignore[no-untyped-def]
    queues, _ = services
    async with RecordedFreeswitch("basic-queue", silent=True) as freeswitch:
        connected = connect(freeswitch.port, queues, command_timeout=0.3)
        await connected.client.start()
        await until(lambda: len(freeswitch.commands) >= 2, within=5)
        assert not connected.client.connected
        assert "TimeoutError" in connected.client.last_problem or "Timeout" in (
            connected.client.last_problem
        )
        await connected.client.close()


async def test_the_watchdog_drops_a_session_gone_silent(services) -> None:  # type: ignore[no-untyped-def]
    """Logged in and resynced, then nothing: no HEARTBEAT, no answer to ``api status``:
    dropped and tried again."""
    queues, _ = services
    async with RecordedFreeswitch(
        "basic-queue", answer_only=2 + len(RESYNC), stream=False
    ) as freeswitch:
        connected = connect(freeswitch.port, queues, command_timeout=0.3, silence_timeout=0.6)
        await connected.client.start()
        assert await connected.client.wait_connected(5)
        await until(lambda: connected.client.reconnects >= 1, within=10)
        assert freeswitch.commands[0][2:] == [*RESYNC, "api status"]
        assert queues.counters["resyncs"] == 1
        await connected.client.close()


async def test_agent_control_on_freeswitch_commands_refusals_and_the_tiers_it_reports() -> None:
    from esl.agent_control import EslAgentControl
    from pbx.control import PbxRefused, PbxUnavailable
    from pbx.facts import MemberAdded, MemberRemoved

    sent: list[str] = []
    refused = EslCommandFailed("tier: -ERR Invalid Agent!")
    answers: dict[str, Exception] = {"callcenter_config tier add hotline ghost 1 1": refused}

    async def api(command: str) -> str:
        sent.append(command)
        if command in answers:
            raise answers[command]
        return "+OK\n"

    class Sink:
        facts: list = []  # noqa: RUF012

        def on_fact(self, fact) -> None:  # type: ignore[no-untyped-def]
            self.facts.append(fact)

        def begin_resync(self) -> None: ...

        async def resync_from(self, ask, read) -> None: ...  # type: ignore[no-untyped-def]

    sink = Sink()
    feed = FreeswitchFeed(sink, api)
    control = EslAgentControl(api, feed)
    await control.pause("agent1", True, "lunch")
    await control.join("hotline", "agent1")
    await control.leave("hotline", "agent1")
    await control.pause("agent1", False, "")
    assert sent == [
        "callcenter_config agent set status agent1 'On Break'",
        "callcenter_config tier add hotline agent1 1 1",
        "callcenter_config tier del hotline agent1",
        "callcenter_config agent set status agent1 'Available'",
    ]
    assert [type(f) for f in sink.facts] == [MemberAdded, MemberRemoved]
    with pytest.raises(PbxRefused, match="Invalid Agent"):
        await control.join("hotline", "ghost")
    with pytest.raises(PbxRefused, match="agent name"):
        await control.pause("agent1 'Available'", True, "")
    answers["callcenter_config agent set status agent2 'On Break'"] = EslNotConnected("down")
    with pytest.raises(PbxUnavailable):
        await control.pause("agent2", True, "")
    assert len(sink.facts) == 2  # refused changes tell the core nothing


TIMES_CHECKED = ("CC-Member-Joined-Time", "CC-Agent-Answered-Time", "Caller-Channel-Hangup-Time")


def test_recorded_times_move_to_the_given_day_and_keep_their_time_of_day() -> None:
    """The fake FreeSWITCH stamps a recording as of today; without it, the figures of a session
    recorded on another day fell into a past day, and these tests failed the day after."""
    frames = recorded_event_frames("basic-queue")
    later = moved_to_today(frames, date(2027, 2, 10))
    zone = ZoneInfo("Asia/Shanghai")
    before = [parse_event(frame.split(b"\n\n", 1)[1]) for frame in frames]
    after = [parse_event(frame.split(b"\n\n", 1)[1]) for frame in later]
    recorded_on = datetime.fromtimestamp(before[0].timestamp_us / 1e6, zone).date()
    days = (date(2027, 2, 10) - recorded_on).days
    assert days > 0
    for old, new in zip(before, after, strict=True):
        assert new.timestamp_us - old.timestamp_us == days * 86_400_000_000
        assert datetime.fromtimestamp(new.timestamp_us / 1e6, zone).date() == date(2027, 2, 10)
        for name in TIMES_CHECKED:
            value = old.get(name) or ""
            if value.isdigit() and int(value):
                unit = 1 if name.startswith("CC-") else 1_000_000
                assert int(new.get(name) or "") == int(value) + days * 86_400 * unit
            else:
                assert new.get(name) == old.get(name)  # absent, empty or 0: as recorded
        assert new.get("CC-Action") == old.get("CC-Action")
