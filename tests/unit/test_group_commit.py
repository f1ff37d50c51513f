"""SQLite units of work that queue up are committed together, each in its own savepoint."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from infra.storage import (
    AsyncTransactions,
    ThreadTransactions,
    UnitExpired,
    create_engine,
    orm_unit,
)


@pytest.fixture
async def units(tmp_path: Path) -> AsyncIterator[tuple[ThreadTransactions, Path]]:
    path = tmp_path / "units.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE rows (name TEXT PRIMARY KEY)")
    transactions = ThreadTransactions(f"sqlite+aiosqlite:///{path}", max_batch=16)
    yield transactions, path
    await transactions.close()


def stored(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {name for (name,) in db.execute("SELECT name FROM rows")}


def insert(name: str, gate: threading.Event | None = None):  # type: ignore[no-untyped-def]
    def work(connection: Connection) -> str:
        if gate is not None:
            gate.wait(5)
        connection.exec_driver_sql("INSERT INTO rows VALUES (?)", (name,))
        return name

    return work


async def held_then_released(transactions: ThreadTransactions, *works):  # type: ignore[no-untyped-def]
    """Run a first unit that holds the thread until every other unit is queued behind it."""
    gate = threading.Event()
    first = asyncio.ensure_future(transactions(insert("first", gate)))
    await asyncio.sleep(0.05)
    rest = [asyncio.ensure_future(transactions(work)) for work in works]
    await asyncio.sleep(0.05)
    gate.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


async def test_queued_units_share_commits_and_all_land(
    units: tuple[ThreadTransactions, Path],
) -> None:
    transactions, path = units
    results = await held_then_released(transactions, *(insert(f"r{i}") for i in range(20)))
    assert results == ["first", *(f"r{i}" for i in range(20))]
    assert stored(path) == {"first", *(f"r{i}" for i in range(20))}
    # the first alone, then the 20 queued behind it in batches of at most 16
    assert (transactions.counters["units"], transactions.counters["commits"]) == (21, 3)


async def test_a_failing_unit_is_rolled_back_alone(units: tuple[ThreadTransactions, Path]) -> None:
    transactions, path = units

    def half_then_fail(connection: Connection) -> None:
        connection.exec_driver_sql("INSERT INTO rows VALUES ('half')")
        raise ValueError("bad input")

    results = await held_then_released(
        transactions, insert("a"), half_then_fail, insert("a"), insert("b")
    )
    assert results[:2] == ["first", "a"]
    assert isinstance(results[2], ValueError)
    assert isinstance(results[3], Exception) and "UNIQUE" in str(results[3])  # "a" twice
    assert results[4] == "b"
    assert stored(path) == {"first", "a", "b"}
    assert transactions.counters["commits"] == 2


async def test_an_orm_unit_that_fails_in_a_group_commit_is_rolled_back_alone(
    units: tuple[ThreadTransactions, Path],
) -> None:
    """An ORM unit among others in one transaction keeps to its savepoint: its own writes go,
    the others' stay (a unit alone in its transaction needs none, see ``orm_unit``)."""
    transactions, path = units

    def orm_insert(name: str, fail: bool = False):  # type: ignore[no-untyped-def]
        def work(session: Session) -> str:
            session.execute(text("INSERT INTO rows VALUES (:name)"), {"name": name})
            if fail:
                raise ValueError("bad input")
            return name

        return orm_unit(work)

    results = await held_then_released(
        transactions, orm_insert("a"), orm_insert("half", fail=True), orm_insert("b")
    )
    assert results[:2] == ["first", "a"]
    assert isinstance(results[2], ValueError)
    assert results[3] == "b"
    assert stored(path) == {"first", "a", "b"}
    assert transactions.counters["commits"] == 2


async def test_a_caller_that_stops_waiting_gets_a_running_unit_committed_and_a_queued_one_dropped(
    units: tuple[ThreadTransactions, Path],
) -> None:
    transactions, path = units
    gate = threading.Event()
    running = asyncio.ensure_future(transactions(insert("running", gate)))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(transactions(insert("queued")))
    await asyncio.sleep(0.01)
    running.cancel()
    queued.cancel()
    gate.set()
    assert await transactions(insert("next")) == "next"
    assert stored(path) == {"running", "next"}
    assert transactions.counters["expired"] == 1


async def test_close_finishes_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "units.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE rows (name TEXT PRIMARY KEY)")
    transactions = ThreadTransactions(f"sqlite+aiosqlite:///{path}")
    pending = [asyncio.ensure_future(transactions(insert(f"q{i}"))) for i in range(5)]
    await asyncio.sleep(0)
    await transactions.close()
    assert [task.result() for task in pending] == [f"q{i}" for i in range(5)]
    assert stored(path) == {f"q{i}" for i in range(5)}


async def test_units_not_started_by_their_deadline_are_not_run(
    units: tuple[ThreadTransactions, Path],
) -> None:
    """A routing decision past its budget has been answered already: queued behind a slow unit,
    it must not be run (nor delay the units behind it)."""
    transactions, path = units
    gate = threading.Event()
    first = asyncio.ensure_future(transactions(insert("first", gate)))
    await asyncio.sleep(0.05)
    soon = time.monotonic() + 0.05
    expiring = [asyncio.ensure_future(transactions(insert(f"x{i}"), soon)) for i in range(3)]
    patient = asyncio.ensure_future(transactions(insert("patient"), time.monotonic() + 60))
    forever = asyncio.ensure_future(transactions(insert("forever")))
    await asyncio.sleep(0.1)  # past `soon`, the first unit still running
    gate.set()
    results = await asyncio.gather(first, *expiring, patient, forever, return_exceptions=True)
    assert results[0] == "first" and results[4:] == ["patient", "forever"]
    assert all(isinstance(result, UnitExpired) for result in results[1:4])
    assert stored(path) == {"first", "patient", "forever"}
    assert transactions.wait_durable(5)
    counts = {name: transactions.counters[name] for name in ("units", "commits", "expired")}
    assert counts == {"units": 3, "commits": 2, "expired": 3}


async def test_a_pooled_unit_past_its_deadline_is_not_run(tmp_path: Path) -> None:
    """The same promise on the pooled engine (PostgreSQL in production)."""
    path = tmp_path / "pooled.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE rows (name TEXT PRIMARY KEY)")
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    transactions = AsyncTransactions(engine)
    try:
        with pytest.raises(UnitExpired):
            await transactions(insert("late"), time.monotonic() - 0.001)
        assert await transactions(insert("in time"), time.monotonic() + 60) == "in time"
    finally:
        await engine.dispose()
    assert stored(path) == {"in time"}
