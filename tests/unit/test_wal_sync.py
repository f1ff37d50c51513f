"""SQLite commits answer before the disk and reach it right after (``infra.storage.WalSync``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection

from infra.storage import ThreadTransactions, WalSync

ROOT = Path(__file__).resolve().parents[2]


def new_database(path: Path) -> str:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE rows (name TEXT PRIMARY KEY)")
    return f"sqlite+aiosqlite:///{path}"


def insert(name: str):  # type: ignore[no-untyped-def]
    def work(connection: Connection) -> str:
        connection.exec_driver_sql("INSERT INTO rows VALUES (?)", (name,))
        return name

    return work


def synchronous_level(connection: Connection) -> int:
    return int(connection.exec_driver_sql("PRAGMA synchronous").scalar_one())


@pytest.fixture
async def background(tmp_path: Path) -> AsyncIterator[ThreadTransactions]:
    transactions = ThreadTransactions(new_database(tmp_path / "wal.db"))
    yield transactions
    await transactions.close()


async def test_a_unit_is_answered_while_the_disk_sync_is_still_running(
    background: ThreadTransactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = threading.Event()
    syncing = threading.Event()
    real_sync = WalSync._sync

    def slow_disk(self: WalSync) -> None:
        syncing.set()
        disk.wait(10)
        real_sync(self)

    monkeypatch.setattr(WalSync, "_sync", slow_disk)
    assert await asyncio.wait_for(background(insert("a")), 2) == "a"
    assert await asyncio.to_thread(syncing.wait, 5)
    assert not background.wait_durable(0.05)  # answered, not on the disk yet
    assert await asyncio.wait_for(background(insert("b")), 2) == "b"  # nor does the next wait
    disk.set()
    assert await asyncio.to_thread(background.wait_durable, 5)
    assert background.counters["wal_syncs"] >= 1
    assert background.counters["wal_sync_failures"] == 0


async def test_background_commits_skip_sqlites_own_sync_and_in_commit_keeps_it(
    tmp_path: Path,
) -> None:
    background = ThreadTransactions(new_database(tmp_path / "a.db"))
    in_commit = ThreadTransactions(new_database(tmp_path / "b.db"), sync="in_commit")
    try:
        assert await background(synchronous_level) == 1  # NORMAL
        assert await in_commit(synchronous_level) == 2  # FULL
        await in_commit(insert("x"))
        assert in_commit.wait_durable(0)
        assert in_commit.counters["wal_syncs"] == 0
    finally:
        await background.close()
        await in_commit.close()


async def test_a_failing_disk_is_counted_and_never_hangs_the_units(
    background: ThreadTransactions,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(descriptor: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    assert await background(insert("a")) == "a"
    assert await asyncio.to_thread(background.wait_durable, 5)
    assert background.counters["wal_sync_failures"] >= 1
    assert "could not sync the database's WAL" in caplog.text


def test_an_unknown_sync_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown database sync mode"):
        ThreadTransactions(new_database(tmp_path / "c.db"), sync="sometimes")  # type: ignore[arg-type]


KILLED_AFTER_ANSWER = """
import asyncio, os, signal, sys
from infra.storage import ThreadTransactions

async def main():
    units = ThreadTransactions(sys.argv[1])
    def work(connection):
        connection.exec_driver_sql("INSERT INTO rows VALUES ('answered')")
        return "answered"
    print(await units(work), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint, no sync of our own

asyncio.run(main())
"""


def test_a_commit_answered_survives_the_process_being_killed_at_once(tmp_path: Path) -> None:
    """A crash of the bridge right after a route was answered keeps the ticket it opened."""
    path = tmp_path / "killed.db"
    url = new_database(path)
    done = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_ANSWER, url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "answered"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM rows").fetchall() == [("answered",)]
