"""Migrations and the call journal on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, inspect, text

from hotline.schema import upgrade_database
from infra.storage import create_engine, session_factory, transactions_for
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
        assert version == "0010"
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


async def test_read_only_units_never_hold_the_write_lock(tmp_path: Path) -> None:
    """While the web side reads, another process (routing) takes the write lock at once; a
    read-only unit that tries to write is refused."""

    url = f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    await upgrade_database(url)
    engine = create_engine(url)
    reads = transactions_for(engine, read_only=True)
    inside, release = threading.Event(), threading.Event()

    def slow_read(connection: Connection) -> int:
        count = connection.execute(text("SELECT count(*) FROM calls")).scalar_one()
        inside.set()
        release.wait(5)
        return int(count)

    reading = asyncio.ensure_future(reads(slow_read))
    await asyncio.to_thread(inside.wait, 5)
    other = sqlite3.connect(tmp_path / "hotline.db", timeout=0, isolation_level=None)
    started = time.monotonic()
    other.execute("BEGIN IMMEDIATE")  # would raise "database is locked" at once if held
    other.execute("ROLLBACK")
    other.close()
    assert time.monotonic() - started < 0.5
    release.set()
    assert await reading == 0
    with pytest.raises(Exception, match="readonly"):
        await reads(lambda c: c.execute(text("DELETE FROM calls")))
    await reads.close()
    await engine.dispose()


async def test_a_unit_takes_the_write_lock_soon_after_another_process_lets_go(
    tmp_path: Path,
) -> None:
    """Another process (the journal, when routing runs apart) holds the lock 40 ms: the unit
    starts within a few ms of its release, not at SQLite's next sleeping retry (53 ms)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    await upgrade_database(url)
    engine = create_engine(url)
    units = transactions_for(engine)
    await units(lambda c: c.execute(text("SELECT 1")))  # the thread and connection are up
    lateness = []
    for _ in range(5):
        other = sqlite3.connect(
            tmp_path / "hotline.db", isolation_level=None, check_same_thread=False
        )
        other.execute("BEGIN IMMEDIATE")
        released_at: list[float] = []

        def let_go(other: sqlite3.Connection = other, released_at: list = released_at) -> None:
            time.sleep(0.04)
            released_at.append(time.monotonic())
            other.execute("ROLLBACK")

        holder = threading.Thread(target=let_go)
        holder.start()
        started = await units(lambda c: time.monotonic())
        holder.join()
        other.close()
        lateness.append(started - released_at[0])
    await units.close()
    await engine.dispose()
    assert sorted(lateness)[2] < 0.006, lateness


@pytest.mark.postgres
async def test_a_connection_is_pinged_after_a_rest_and_a_dead_one_replaced_unseen(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection back in the pool a moment ago is used without a ping (three round trips on
    asyncpg), unless its driver has seen the server end it; one that rested is pinged. Either
    way a connection the server ended is replaced before the unit runs."""
    import asyncpg

    import infra.storage

    monkeypatch.setattr(infra.storage, "PING_AFTER_REST_SECONDS", 0.3)
    engine = create_engine(postgres_url)
    pings = 0
    real_ping = engine.sync_engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        nonlocal pings
        pings += 1
        return real_ping(dbapi_connection)

    monkeypatch.setattr(engine.sync_engine.dialect, "do_ping", counted)
    units = transactions_for(engine)
    backend = "SELECT pg_backend_pid()"
    admin = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    try:
        first = await units(lambda c: c.execute(text(backend)).scalar())
        assert await units(lambda c: c.execute(text(backend)).scalar()) == first
        assert pings == 0
        await asyncio.sleep(0.35)
        assert await units(lambda c: c.execute(text(backend)).scalar()) == first
        assert pings == 1
        await admin.execute("SELECT pg_terminate_backend($1)", first)
        await asyncio.sleep(0.35)
        second = await units(lambda c: c.execute(text(backend)).scalar())
        assert second != first and pings == 2
        await admin.execute("SELECT pg_terminate_backend($1)", second)
        await asyncio.sleep(0.05)  # the server's goodbye arrives; the rest is not over
        third = await units(lambda c: c.execute(text(backend)).scalar())
        assert third not in (first, second) and pings == 2
    finally:
        await admin.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_read_only_units_on_postgresql_are_their_statements_alone(
    postgres_url: str,
) -> None:
    """No BEGIN and COMMIT around a look-up: each statement is its own transaction (now()
    moves between them). A writing unit on the same pool still gets one transaction."""
    engine = create_engine(postgres_url)
    reads = transactions_for(engine, read_only=True)
    units = transactions_for(engine)

    def two_moments(connection: Connection) -> tuple[datetime, datetime]:
        before = connection.execute(text("SELECT now()")).scalar_one()
        connection.execute(text("SELECT pg_sleep(0.01)"))
        return before, connection.execute(text("SELECT now()")).scalar_one()

    try:
        before, after = await reads(two_moments)
        assert after > before
        before, after = await units(two_moments)
        assert after == before
    finally:
        await engine.dispose()


async def test_an_orm_unit_alone_needs_no_savepoint_and_rolls_back_whole(database: str) -> None:
    """A unit alone in its transaction: the session's statements go straight in it (no
    SAVEPOINT round trips), and a unit that raises leaves nothing."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from infra.storage import orm_unit

    engine = create_engine(database)
    units = transactions_for(engine)
    statements: list[str] = []
    event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cursor, statement, *_: statements.append(statement),
    )

    def journal(uniqueid: str, fail: bool = False):  # type: ignore[no-untyped-def]
        def writing(session: Session) -> None:
            session.execute(
                text(
                    "INSERT INTO calls (uniqueid, linkedid, channel, caller_number, caller_name,"
                    " dialled_number, started_at, outcome, source, direction) VALUES (:u, :u,"
                    " 'c', '1', '', '12345', :at, 'answered', 'ami', 'inbound')"
                ),
                {"u": uniqueid, "at": T0},
            )
            if fail:
                raise ValueError("bad input")

        return orm_unit(writing)

    try:
        await units(journal("kept"))
        with pytest.raises(ValueError, match="bad input"):
            await units(journal("rolled-back", fail=True))
        assert not [s for s in statements if "SAVEPOINT" in s.upper()]
        rows = await units(lambda c: c.execute(text("SELECT uniqueid FROM calls")).scalars().all())
        assert rows == ["kept"]
    finally:
        await units.close()
        await engine.dispose()
