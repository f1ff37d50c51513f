"""Migrations and the call journal on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from hotline.storage import create_engine, session_factory, upgrade_database
from queue_stats.calls import CallOutcome, CallRecord
from queue_stats.journal import CallJournal

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CALL = CallRecord(
    uniqueid="1795575485.0",
    linkedid="1795575485.0",
    channel="PJSIP/citizens-00000000",
    caller_number="13800138000",
    caller_name="张三",
    dialled_number="12345",
    started_at=T0,
    queue="hotline",
    entered_queue_at=T0 + timedelta(seconds=1),
    agent_interface="PJSIP/agent1",
    agent_name="Agent One",
    answered_at=T0 + timedelta(seconds=4),
    ended_at=T0 + timedelta(seconds=64),
    hold_seconds=3,
    talk_seconds=60,
    outcome=CallOutcome.ANSWERED,
    hangup_cause=16,
    ticket="12345-20261125-000001",
    routing_reason="default",
)


async def exercise_journal(url: str) -> None:
    await upgrade_database(url)
    await upgrade_database(url)  # a second upgrade is a no-op
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
            version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        assert "calls" in tables
        assert version == "0006"
        assert {"recordings", "recording_access"} <= set(tables)
        journal = CallJournal(session_factory(engine))
        await journal.record(CALL)
        await journal.record(CALL)  # re-delivery of the same call: still one row
        rows = await journal.recent()
        assert len(rows) == 1
        row = rows[0]
        assert (row.caller_number, row.caller_name, row.queue, row.agent_interface) == (
            "13800138000",
            "张三",
            "hotline",
            "PJSIP/agent1",
        )
        assert (row.hold_seconds, row.talk_seconds, row.outcome) == (3, 60, "answered")
        assert row.ticket == "12345-20261125-000001"
        assert row.started_at.replace(tzinfo=row.started_at.tzinfo or UTC) == T0
    finally:
        await engine.dispose()


async def test_journal_on_sqlite(tmp_path: Path) -> None:
    await exercise_journal(f"sqlite+aiosqlite:///{tmp_path}/nested/hotline.db")
    assert (tmp_path / "nested" / "hotline.db").exists()


async def test_unfinished_calls_are_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/hotline.db"
    await upgrade_database(url)
    engine = create_engine(url)
    unfinished = CallRecord("1.1", "1.1", "c", "1", "", "12345", T0)
    with pytest.raises(ValueError, match="has not ended"):
        await CallJournal(session_factory(engine)).record(unfinished)
    await engine.dispose()


@pytest.mark.postgres
async def test_journal_on_real_postgresql(postgres_url: str) -> None:
    await exercise_journal(postgres_url)
