"""Storage: the declarative base shared by every feature's tables, engines and migrations.

SQLite (through aiosqlite) is the default and PostgreSQL (through asyncpg) the production store;
the same models and the same Alembic migrations serve both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import Connection, MetaData, StaticPool, event, text
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session

log = logging.getLogger(__name__)

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base class of every table; constraint names are stable so migrations stay portable."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def sqlite_file(url: str) -> Path | None:
    """The SQLite file of ``url``; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; a SQLite file's folder is created and WAL mode switched on."""
    database_file = sqlite_file(url)
    if database_file is not None:
        database_file.parent.mkdir(parents=True, exist_ok=True)
    if database_file is None and make_url(url).get_backend_name() == "postgresql":
        # A process frozen inside a transaction (SIGSTOP, a stalled VM) would hold its row
        # locks for ever, the lease row among them: the server ends such a session instead.
        # The pool keeps up to 10 connections and opens 5 more for a moment (15 at most, as
        # SQLAlchemy's 5 + 10 did): with 5 kept, a bridge following four PBXs opened and closed
        # a connection 200 times in 4,000 calls, at about 1.4 ms of CPU each (a one-query
        # unit costs 0.3 ms).
        engine = create_async_engine(
            url,
            pool_size=POOL_KEPT,
            max_overflow=POOL_MOST - POOL_KEPT,
            connect_args={"server_settings": {"idle_in_transaction_session_timeout": "5000"}},
        )
    else:
        engine = create_async_engine(url)
    if database_file is not None:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        _ping_after_rest(engine, PING_AFTER_REST_SECONDS)
    return engine


PING_AFTER_REST_SECONDS = 1.0
POOL_KEPT, POOL_MOST = 10, 15


def _ping_after_rest(engine: AsyncEngine, rest: float) -> None:
    """Ping a pooled connection at checkout only when it has rested ``rest`` seconds or more.

    Why not ``pool_pre_ping``: it pings at every checkout, and on asyncpg a ping is three round
    trips (BEGIN, an empty query, ROLLBACK). A busy bridge checks a connection out several times
    per call, a few milliseconds after it came back, so those pings made two in five of its
    database round trips. A connection back a moment ago is only asked whether its driver has
    seen it closed (no round trip: asyncpg knows once the server's goodbye and the socket's end
    have arrived, as they do at a restart or a terminated backend), and replaced if so. One that
    has rested is pinged, and a failed ping invalidates the whole pool as ``pool_pre_ping``
    does. Left open is a connection ended in the instant before its checkout, which fails its
    unit as one ended during a unit always did."""
    dialect = engine.sync_engine.dialect

    def rested(record: Any) -> None:
        record.info["rested_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("rested_since")
        if since is not None and time.monotonic() - since < rest:
            if _known_closed(dbapi_connection):
                raise DisconnectionError("the server ended this connection")
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise InvalidatePoolError() from error
            raise

    event.listen(engine.sync_engine, "connect", lambda _connection, record: rested(record))
    event.listen(engine.sync_engine, "checkin", lambda _connection, record: rested(record))
    event.listen(engine.sync_engine, "checkout", checkout)


def _known_closed(dbapi_connection: Any) -> bool:
    """Whether the driver already knows the connection is closed (asyncpg's ``is_closed``)."""
    is_closed = getattr(getattr(dbapi_connection, "driver_connection", None), "is_closed", None)
    return bool(is_closed()) if callable(is_closed) else False


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *extra: str) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "busy_timeout=5000", "foreign_keys=ON", *extra):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class HotStatement:
    """A statement on the routing path, written once in SQL that SQLite and PostgreSQL share.

    On the SQLite routing thread (the ``pysqlite`` driver) it runs on the DB-API connection
    itself: skipping SQLAlchemy's execution layer (cache lookup, execution context, result
    object) halved the CPU time of a routing unit, 0.56 to 0.28 ms on our test VM with the
    fsync left out. Anywhere else it runs through SQLAlchemy as ``text`` (also there for ORM
    sessions that run the same statement). Datetimes
    are bound as SQLAlchemy's SQLite ``DateTime`` stores them (naive UTC text, microseconds
    always written), so rows written here read back through the ORM unchanged.
    """

    def __init__(self, sql: str) -> None:
        self.sql = " ".join(sql.split())
        self.text = text(self.sql)

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        if connection.dialect.driver == "pysqlite":
            driver = connection.connection.driver_connection
            if driver is None:
                raise RuntimeError("the SQLite connection is closed")
            bound = {name: _sqlite_value(value) for name, value in params.items()}
            rows: Sequence[Sequence[Any]] = driver.execute(self.sql, bound).fetchall()
            return rows
        result = connection.execute(self.text, dict(params))
        return result.all() if result.returns_rows else []

    def run(self, connection: Connection, params: Mapping[str, Any]) -> None:
        """A statement that returns nothing (an insert)."""
        self.rows(connection, params)

    def value(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = self.rows(connection, params)
        return rows[0][0] if rows else None


def utc(value: datetime) -> datetime:
    """Aware UTC for storing; values read back from SQLite are naive UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")
    return value


def parsed_datetime(value: datetime | str) -> datetime:
    """A datetime column's value from ``HotStatement.rows``: text on SQLite, parsed elsewhere."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def orm_unit(work: Callable[[Session], T]) -> Callable[[Connection], T]:
    """``work`` with an ORM session, as a unit of work for ``Transactions``.

    Why: an async ORM session's transaction goes back to the event loop between statements, so
    on SQLite it holds the file's write lock for as long as the loop is late. Under a busy web
    side (2,000 viewers) that was hundreds of milliseconds, and routing in the other process
    waited on it and fell back. As a unit the whole transaction runs on the database thread.
    Where group commit puts several units in one transaction (each in a savepoint) the session
    keeps to a savepoint of its own: committed when ``work`` returns, rolled back when it
    raises. A unit alone in its transaction (always on PostgreSQL) has no savepoint: the
    transaction is the unit's, committed or rolled back with it, and a savepoint there cost
    two more round trips per unit for nothing.
    """

    def unit(connection: Connection) -> T:
        with Session(
            bind=connection, expire_on_commit=False, join_transaction_mode="conditional_savepoint"
        ) as session:
            result = work(session)
            session.commit()
            return result

    return unit


class UnitExpired(TimeoutError):
    """A unit of work was not started by its ``start_by`` time, so it was not run at all."""


class Transactions(Protocol):
    """Runs a synchronous unit of work in one transaction without blocking the event loop.

    Hot paths (routing) use it instead of ORM sessions: a unit is one hop to the database
    thread or connection, not one per statement. ``start_by`` (``time.monotonic()``) is when
    the unit stops being worth running: one still waiting then raises ``UnitExpired`` untouched.
    Routing needs this: a decision past its budget has been answered with the default route
    already, and queued work nobody waits for must not delay the calls behind it.
    """

    counters: Counter[str]  # what the units did (SQLite: commits, WAL syncs and their failures)

    async def __call__(
        self, work: Callable[[Connection], T], start_by: float | None = None
    ) -> T: ...

    async def run_checkpoints(self, every: float = 5.0) -> None: ...

    async def close(self) -> None: ...


MAX_BATCH_UNITS = 16
SyncMode = Literal["background", "in_commit"]
WRITE_LOCK_WAIT_SECONDS = 5.0  # as busy_timeout=5000 elsewhere
FIRST_RETRY_SECONDS, LONGEST_RETRY_SECONDS = 0.0002, 0.002


def begin_immediate(connection: Connection) -> None:
    """``BEGIN IMMEDIATE``, retried every 0.2 to 2 ms while another process holds the lock.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20 ms between tries: with routing in one
    process and the journal in another, a unit that met a lock held for 3 ms waited 8 and one
    held for 20 ms waited 33, past the routing budget. Short tries take the lock within about
    2 ms of its release; the connection's ``busy_timeout`` is 0, so a try never sleeps inside
    SQLite.
    """
    driver = connection.connection.driver_connection
    if driver is None:
        raise RuntimeError("the SQLite connection is closed")
    deadline = time.monotonic() + WRITE_LOCK_WAIT_SECONDS
    pause = FIRST_RETRY_SECONDS
    while True:
        try:
            driver.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_RETRY_SECONDS)


@dataclass(slots=True)
class _PendingUnit:
    work: Callable[[Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    start_by: float | None

    def expired(self, now: float) -> bool:
        # Read from the database thread: at worst a unit cancelled this instant still runs.
        return self.future.cancelled() or (self.start_by is not None and now > self.start_by)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the caller stopped waiting; the unit ran all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class WalSync:
    """Makes SQLite's WAL durable on a thread of its own, right after each commit.

    Why: with ``synchronous=FULL`` every commit waits for the disk while it holds the database's
    write lock, so a call's route waited for its own fsync and for every other writer's. Loaded,
    the disk's fsync p99 grew from 2.3 to 5.8 ms and routes followed it. With
    ``synchronous=NORMAL`` a commit only writes the WAL into the kernel (a crash of the process
    loses nothing); this thread then fsyncs the WAL file, coalescing commits that came meanwhile,
    so a power cut can lose only what was committed in the last sync's few milliseconds.
    A checkpoint (``ThreadTransactions.checkpoint``) syncs what it copies on its own.
    """

    def __init__(self, wal_file: Path, counters: Counter[str]) -> None:
        self._wal_file = wal_file
        self._changed = threading.Condition()
        self._committed = 0  # commits made so far
        self._durable = 0  # of which synced to the disk
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.counters = counters

    def committed(self) -> None:
        """Called after each commit: the sync thread will fsync the WAL file soon."""
        with self._changed:
            self._committed += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="sqlite-wal-sync", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def wait_durable(self, timeout: float | None = None) -> bool:
        """Block until every commit made so far is on the disk (closing, tests)."""
        with self._changed:
            target = self._committed
            return self._changed.wait_for(lambda: self._durable >= target, timeout)

    def stop(self) -> None:
        """Sync what is left, then end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _serve(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._committed > self._durable or self._stopping)
                if self._committed == self._durable:
                    return
                target = self._committed
            try:
                self._sync()
                self.counters["wal_syncs"] += 1
            except OSError as error:  # the disk refused: nothing more we can do than say so
                self.counters["wal_sync_failures"] += 1
                log.error("could not sync the database's WAL to disk: %s", error)
            with self._changed:
                self._durable = target
                self._changed.notify_all()

    def _sync(self) -> None:
        try:
            descriptor = os.open(self._wal_file, os.O_RDONLY)
        except FileNotFoundError:  # the last connection closed: SQLite checkpointed and synced it
            return
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class ThreadTransactions:
    """SQLite: a synchronous engine on one dedicated thread; each unit is ``BEGIN IMMEDIATE``.

    One thread serialises this process's units, and taking the write lock up front means a unit
    that reads and then writes never fails on a snapshot another process changed meanwhile.
    Units that queue up while one runs are committed together (group commit): one transaction,
    each unit in its own savepoint (a failing unit is rolled back alone), one commit and so one
    WAL sync for all of them. A unit's result is only given once its commit is done. A caller
    that stops waiting does not interrupt a running unit: it commits or rolls back on its
    thread, so no lock is left behind. A unit not started yet whose caller gave up (cancelled,
    or past ``start_by``) is not run at all. Automatic WAL checkpoints are off on
    this connection (one could stall a unit for 100 ms); ``checkpoint`` runs a passive one from
    another thread, and ``run_checkpoints`` does so every few seconds.

    ``sync="background"`` (the default) commits with ``synchronous=NORMAL`` and leaves the
    fsync to ``WalSync``: a unit's result is given once its commit is in the WAL, and the disk
    follows a few milliseconds later. ``"in_commit"`` waits for the disk in every commit.

    ``read_only`` units (the web side's look-ups: sessions, lists) run on a thread and connection
    of their own in a deferred transaction with ``query_only`` on: in WAL mode they never take
    the write lock, so they never make routing (often in another process, waiting on SQLite's
    sleeping busy handler) wait, and they never queue behind writes.
    """

    def __init__(
        self,
        url: str,
        max_batch: int = MAX_BATCH_UNITS,
        *,
        read_only: bool = False,
        sync: SyncMode = "background",
    ) -> None:
        if sync not in ("background", "in_commit"):
            raise ValueError(f"unknown database sync mode {sync!r}")
        sync_url = make_url(url).set(drivername="sqlite")
        database_file = sqlite_file(url)
        self.counters: Counter[str] = Counter()
        self._wal_sync: WalSync | None = None
        if sync == "background" and not read_only and database_file is not None:
            self._wal_sync = WalSync(Path(f"{database_file}-wal"), self.counters)
        synchronous = "synchronous=NORMAL" if self._wal_sync is not None else "synchronous=FULL"
        threads = {"check_same_thread": False}  # each engine is used by one thread at a time
        self._engine = sa_create_engine(sync_url, poolclass=StaticPool, connect_args=threads)
        pragmas = (
            "wal_autocheckpoint=0",
            synchronous,
            *(("query_only=ON",) if read_only else ("busy_timeout=0",)),
        )

        def on_connect(connection: Any, record: Any) -> None:
            _sqlite_pragmas(connection, record, *pragmas)
            connection.isolation_level = None  # transactions are begun by the "begin" hook

        event.listen(self._engine, "connect", on_connect)
        if read_only:
            event.listen(self._engine, "begin", lambda c: c.exec_driver_sql("BEGIN DEFERRED"))
        else:
            event.listen(self._engine, "begin", begin_immediate)
        self._thread_name = "sqlite-reads" if read_only else "sqlite-units"
        self._checkpoints = sa_create_engine(sync_url, poolclass=StaticPool, connect_args=threads)
        self._max_batch = max_batch
        self._pending: queue.SimpleQueue[_PendingUnit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def __call__(self, work: Callable[[Connection], T], start_by: float | None = None) -> T:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._thread_name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.put(_PendingUnit(work, loop, future, start_by))
        return await future

    def _serve(self) -> None:
        while (first := self._pending.get()) is not None:
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    unit = self._pending.get_nowait()
                except queue.Empty:
                    break
                if unit is None:
                    stop = True
                    break
                batch.append(unit)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[_PendingUnit]) -> None:
        now = time.monotonic()
        live: list[_PendingUnit] = []
        for unit in batch:
            if unit.expired(now):
                self.counters["expired"] += 1
                self._answer(unit, None, UnitExpired("not started in time"))
            else:
                live.append(unit)
        if not live:
            return
        batch = live
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with self._engine.begin() as connection:
                if len(batch) == 1:
                    outcomes.append((batch[0].work(connection), None))
                else:
                    for unit in batch:
                        try:
                            with connection.begin_nested():
                                outcomes.append((unit.work(connection), None))
                        except Exception as error:
                            outcomes.append((None, error))
            if self._wal_sync is not None:
                self._wal_sync.committed()
        except Exception as error:  # the unit failed, or the commit did: nothing was kept
            outcomes = [(None, unit_error or error) for _, unit_error in outcomes]
            outcomes += [(None, error)] * (len(batch) - len(outcomes))
        self.counters["units"] += len(batch)
        self.counters["commits"] += 1
        for unit, (value, problem) in zip(batch, outcomes, strict=True):
            self._answer(unit, value, problem)

    @staticmethod
    def _answer(unit: _PendingUnit, value: Any, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # that caller's loop is closed: nobody waits
            unit.loop.call_soon_threadsafe(_settle, unit.future, value, error)

    def wait_durable(self, timeout: float | None = None) -> bool:
        """Block until every commit so far is on the disk (at once with ``sync="in_commit"``)."""
        return self._wal_sync is None or self._wal_sync.wait_durable(timeout)

    def checkpoint(self) -> None:
        with self._checkpoints.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    async def run_checkpoints(self, every: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception as error:  # the next one will do
                log.warning("WAL checkpoint failed: %s", error)

    async def close(self) -> None:
        if self._thread is not None:
            self._pending.put(None)  # after every unit already queued
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._wal_sync is not None:
            await asyncio.to_thread(self._wal_sync.stop)
        self._engine.dispose()
        self._checkpoints.dispose()


class AsyncTransactions:
    """Any other database: one pooled async connection per unit, the unit run with ``run_sync``.

    The transaction begins and ends inside that ``run_sync``, with the work: each async call of
    SQLAlchemy's is a hop into its synchronous side, and a begin and a commit of their own were
    two more hops, about a fifth of a one-query unit's CPU (0.44 against 0.36 ms here)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.counters: Counter[str] = Counter()  # nothing to count: the server syncs its log

    async def __call__(self, work: Callable[[Connection], T], start_by: float | None = None) -> T:
        async with self._engine.connect() as connection:  # waits for a pooled connection first
            if start_by is not None and time.monotonic() > start_by:
                raise UnitExpired("not started in time")
            return await connection.run_sync(_in_transaction, work)

    async def run_checkpoints(self, every: float = 5.0) -> None:
        """Nothing to do: the server keeps its own log in order."""

    async def close(self) -> None:
        return None


def _in_transaction(connection: Connection, work: Callable[[Connection], T]) -> T:
    """``work`` in a transaction of its own: committed when it returns, rolled back if not."""
    with connection.begin():
        return work(connection)


def transactions_for(
    engine: AsyncEngine, *, read_only: bool = False, sync: SyncMode = "background"
) -> ThreadTransactions | AsyncTransactions:
    """Units of work on ``engine``. ``read_only`` units must not write (SQLite refuses it); on
    SQLite they never hold the write lock that routing needs. ``sync``: see
    ``ThreadTransactions`` (SQLite only; PostgreSQL follows its own ``synchronous_commit``).

    On PostgreSQL ``read_only`` units run in autocommit: a look-up of one query is that query's
    round trip alone, not BEGIN, the query and COMMIT (a caller's open tickets, for every call).
    Under READ COMMITTED each statement of a transaction sees a snapshot of its own anyway, so a
    unit of several reads sees what it saw in a transaction."""
    url = engine.url.render_as_string(hide_password=False)
    if sqlite_file(url) is not None:
        return ThreadTransactions(url, read_only=read_only, sync=sync)
    if read_only and engine.dialect.name == "postgresql":
        return AsyncTransactions(engine.execution_options(isolation_level="AUTOCOMMIT"))
    return AsyncTransactions(engine)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
