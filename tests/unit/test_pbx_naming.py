"""Two PBXs, one journal: call ids carry the PBX's name (``pbx.naming``), so calls of two
Asterisks that hand out the same uniqueids never meet under one id."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from ami.feed import AmiTranslator, keep_event
from ami.queue_log import AsteriskQueueLog
from ami.replay import ReplayClock, read_transcript
from hotline.schema import upgrade_database
from hotline.service import DEMO_SESSION, build_pipeline
from infra.bus import InProcessBus
from infra.config import Settings
from infra.storage import create_engine, session_factory
from pbx.facts import CallerReported, ChannelCreated, MemberPaused
from pbx.naming import PbxName, PbxNameError
from queue_stats.hourly import HourlyStore
from queue_stats.journal import CallJournal, CallRow
from queue_stats.named import NamedPbx, named_present
from queue_stats.pipeline import PresentState
from queue_stats.service import QueueService

AT = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def test_a_named_id_carries_the_name_and_the_pbxs_own_id_whole() -> None:
    pbx = PbxName("pbx-a")
    assert pbx.call_id("1764666000.42") == "pbx-a/1764666000.42"
    assert pbx.own_id("pbx-a/1764666000.42") == "1764666000.42"
    assert pbx.call_id("") == ""  # no id stays no id
    with pytest.raises(PbxNameError):
        pbx.own_id("pbx-b/1764666000.42")
    for bad in ("", "a/b", "x" * 17, "名字", "a b"):
        with pytest.raises(PbxNameError):
            PbxName(bad)


def test_facts_and_the_present_are_named_and_member_facts_are_left_alone() -> None:
    pbx = PbxName("east")
    created = ChannelCreated(AT, "1.1", "1.0", "PJSIP/c-01", "139", "", "from-citizens", "12345")
    named = pbx.fact(created)
    assert isinstance(named, ChannelCreated)
    assert (named.uniqueid, named.linkedid, named.channel) == ("east/1.1", "east/1.0", "PJSIP/c-01")
    paused = MemberPaused(AT, "hotline", "PJSIP/agent1", "Agent One", True, "lunch")
    assert pbx.fact(paused) is paused
    caller = CallerReported(AT, "hotline", "2.2", "2.2", "PJSIP/c-02", "138", "", 1, 5)
    present = named_present(PresentState(callers=[caller], channels={"2.2", "3.3"}), pbx)
    assert [(c.uniqueid, c.linkedid) for c in present.callers] == [("east/2.2", "east/2.2")]
    assert present.channels == {"east/2.2", "east/3.3"}


async def journal_after(tmp_path: Path, names: Iterable[str | None]) -> tuple[list[str], int]:
    """The same recorded Asterisk session played once per PBX name (None: unnamed) into one
    queue service and journal: the journal's uniqueids and the calls offered in the figures."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'journal.db'}"
    await upgrade_database(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    clock = ReplayClock()
    service = QueueService(
        build_pipeline(Settings(_env_file=None), clock.current),  # type: ignore[call-arg]
        CallJournal(sessions),
        HourlyStore(sessions),
        InProcessBus(),
        clock=clock.current,
    )
    writer = asyncio.create_task(service.run_writer())
    messages = list(read_transcript(DEMO_SESSION, keep_event))
    clock.seed(messages)
    for name in names:
        entry = service if name is None else NamedPbx(service, PbxName(name))
        translator = AmiTranslator()  # one per PBX, as each AMI connection has its own
        for message in messages:
            fact = translator.translate(message, clock.advance(message))
            if fact is not None:
                entry.on_fact(fact)
    assert await service.drain(10)
    writer.cancel()
    async with sessions() as session:
        ids = list((await session.scalars(select(CallRow.uniqueid))).all())
    offered = sum(q.today.offered for q in service.pipeline.stats.queues.values())
    await engine.dispose()
    return sorted(ids), offered


async def test_two_asterisks_with_the_same_uniqueids_keep_every_call_apart(tmp_path: Path) -> None:
    one_ids, one_offered = await journal_after(tmp_path / "one", [None])
    assert one_ids and one_offered
    # Unnamed, the second PBX's calls land on the first one's rows: half the calls are lost.
    (tmp_path / "same").mkdir()
    merged_ids, _ = await journal_after(tmp_path / "same", [None, None])
    assert len(merged_ids) == len(one_ids)
    # Named, every call of both is journalled, under its PBX's name with its own uniqueid.
    (tmp_path / "named").mkdir()
    named_ids, named_offered = await journal_after(tmp_path / "named", ["pbx-a", "pbx-b"])
    assert named_ids == sorted([f"pbx-a/{i}" for i in one_ids] + [f"pbx-b/{i}" for i in one_ids])
    assert named_offered == 2 * one_offered


def test_calls_rebuilt_from_queue_log_are_named_like_the_live_ones(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    log.write_text(
        "1764900000|NONE|hotline|Agent One|PAUSE|lunch\n"
        "1764900010|1764900009.7|hotline|NONE|ENTERQUEUE||13800138000|1\n"
        "1764900016|1764900009.7|hotline|Agent One|CONNECT|6|1764900015.8|2\n"
        "1764900076|1764900009.7|hotline|Agent One|COMPLETECALLER|6|60|1\n"
    )
    since = datetime.fromtimestamp(1764900000, UTC)
    recovery = AsteriskQueueLog(log, PbxName("west")).recover(
        since, skip=set(), partial={}, agent_interfaces={"Agent One": "PJSIP/agent1"}
    )
    assert [call.uniqueid for call in recovery.calls] == ["west/1764900009.7"]
    assert recovery.calls[0].agent_interface == "PJSIP/agent1"
    skipped = AsteriskQueueLog(log, PbxName("west")).recover(
        since, skip={"west/1764900009.7"}, partial={}, agent_interfaces={}
    )
    assert skipped.calls == []
