"""One hotline over two PBXs: two recorded real sessions, each the traffic of one PBX, merged."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ami.replay import read_transcript
from infra.bus import InProcessBus
from infra.leases import LeaseView
from infra.storage import create_engine, session_factory
from queue_stats.calls import CallTracker
from queue_stats.hotline_view import HotlineView
from queue_stats.hourly import HourlyStore
from queue_stats.journal import CallJournal
from queue_stats.merge import merge_snapshots
from queue_stats.pipeline import EventPipeline
from queue_stats.service import SNAPSHOT_KEY, QueueService
from queue_stats.stats import QueueStats
from tests.ami_feeding import into_service

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
UP = {"up": True, "since": 1.0}


def pbx_snapshot(tmp_path: Path, pbx: str, session: str) -> dict[str, Any]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/{pbx}.db")
    sessions = session_factory(engine)
    pipeline = EventPipeline(
        CallTracker(frozenset({"from-citizens"})),
        QueueStats(ZoneInfo("Asia/Shanghai")),
        lambda: NOW,
    )
    service = QueueService(
        pipeline,
        CallJournal(sessions, pbx=pbx),
        HourlyStore(sessions, pbx=pbx),
        InProcessBus(),
        clock=lambda: NOW,
        pbx=pbx,
    )
    for message in read_transcript(FIXTURES / session):
        into_service(service, message)
    return service.snapshot()


async def test_one_pbx_merged_alone_keeps_its_own_figures(tmp_path: Path) -> None:
    west = pbx_snapshot(tmp_path, "west", "hotline-3-agents-40-calls.ami")
    merged = merge_snapshots({"west": west}, {"west": UP})
    assert set(merged["queues"]) == set(west["queues"])
    for name, figures in west["queues"].items():
        assert {k: v for k, v in merged["queues"][name].items() if k != "by_pbx"} == figures
        assert merged["queues"][name]["by_pbx"] == {"west": figures}
    assert merged["last_15_minutes"] == west["last_15_minutes"]
    assert merged["hours"] == west["hours"]
    assert merged["pbx"] == {"up": True, "since": 1.0}


async def test_a_queue_on_two_pbxs_is_one_queue_with_rates_from_the_summed_counts(
    tmp_path: Path,
) -> None:
    west = pbx_snapshot(tmp_path, "west", "hotline-3-agents-40-calls.ami")
    east = pbx_snapshot(tmp_path, "east", "timeouts.ami")
    assert "hotline" in west["queues"] and "hotline" in east["queues"]
    merged = merge_snapshots({"west": west, "east": east}, {"west": UP, "east": UP})
    hotline = merged["queues"]["hotline"]
    w, e = west["counts"]["hotline"]["today"], east["counts"]["hotline"]["today"]
    for count in ("offered", "answered", "abandoned", "timed_out", "short_abandoned"):
        assert hotline[count] == w[count] + e[count]
    decided = sum(c["answered"] + c["abandoned"] + c["timed_out"] - c["short_abandoned"]
                  for c in (w, e))  # fmt: skip
    assert hotline["answer_rate"] == round((w["answered"] + e["answered"]) / decided, 4)
    answered = w["answered"] + e["answered"]
    held = w["hold_seconds_answered"] + e["hold_seconds_answered"]
    assert hotline["asa_seconds"] == round(held / answered, 4)
    assert set(hotline["by_pbx"]) == {"east", "west"}
    # The same phone names on two PBXs are two phones: both stay on the board, named.
    both = set(west["agents"]) & set(east["agents"])
    assert both, "the two sessions share agent names"
    for interface in both:
        assert interface not in merged["agents"]
        assert merged["agents"][f"west/{interface}"]["pbx"] == "west"
        assert merged["agents"][f"east/{interface}"]["pbx"] == "east"


async def test_a_pbx_nobody_follows_puts_the_banner_up(tmp_path: Path) -> None:
    west = pbx_snapshot(tmp_path, "west", "timeouts.ami")
    down = {"up": False, "since": 5.0, "problem": "no bridge process follows it"}
    merged = merge_snapshots({"west": west}, {"west": UP, "east": down})
    assert merged["pbx"] == {
        "up": False,
        "since": 5.0,
        "problem": "east: no bridge process follows it",
    }
    assert merged["pbxs"]["east"] == down


async def test_the_merged_view_tells_where_agents_are_and_whether_anyone_waits(
    tmp_path: Path,
) -> None:
    """What acting on an agent (its PBX) and the quiet line's callback offers read."""
    west = {**pbx_snapshot(tmp_path, "west", "hotline-3-agents-40-calls.ami"), "owner_token": 1}
    east = {**pbx_snapshot(tmp_path, "east", "timeouts.ami"), "owner_token": 4}
    bus = InProcessBus()
    await bus.store_snapshot(f"{SNAPSHOT_KEY}:west", west)
    await bus.store_snapshot(f"{SNAPSHOT_KEY}:east", east)

    async def leases() -> list[LeaseView]:
        return [LeaseView("pbx:west", "p1", 1, 4.0), LeaseView("pbx:east", "p2", 4, 4.0)]

    view = HotlineView(bus, InProcessBus(), ["west", "east"], leases, lambda: NOW)
    assert view.agents() == {} and not view.nobody_waiting()  # nothing known before a merge
    await view.refresh()
    assert {agent["pbx"] for agent in view.agents().values()} == {"west", "east"}
    assert all(q["waiting_now"] == 0 for q in west["queues"].values())
    assert view.nobody_waiting()
    east["queues"]["hotline"] = {**east["queues"]["hotline"], "waiting_now": 2}
    await bus.store_snapshot(f"{SNAPSHOT_KEY}:east", east)
    await view.refresh()
    assert not view.nobody_waiting()
