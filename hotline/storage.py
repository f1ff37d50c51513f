"""Storage: the declarative base shared by every feature's tables, engines and migrations.

SQLite (through aiosqlite) is the default and PostgreSQL (through asyncpg) the production store;
the same models and the same Alembic migrations serve both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import Connection, MetaData, StaticPool, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
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


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; a SQLite file's folder is created and WAL mode switched on."""
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_pre_ping=sqlite_file is None)
    if sqlite_file is not None:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *extra: str) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "busy_timeout=5000", "foreign_keys=ON", *extra):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class Transactions(Protocol):
    """Runs a synchronous unit of work in one transaction without blocking the event loop.

    Hot paths (routing) use it instead of ORM sessions: a unit is one hop to the database
    thread or connection, not one per statement.
    """

    async def __call__(self, work: Callable[[Connection], T]) -> T: ...

    async def run_checkpoints(self, every: float = 5.0) -> None: ...

    async def close(self) -> None: ...


class ThreadTransactions:
    """SQLite: a synchronous engine on one dedicated thread; each unit is ``BEGIN IMMEDIATE``.

    One thread serialises this process's units, and taking the write lock up front means a unit
    that reads and then writes never fails on a snapshot another process changed meanwhile.
    A caller that stops waiting (a routing budget ran out) does not interrupt the unit: it
    commits or rolls back on its thread, so no lock is left behind. Automatic WAL checkpoints
    are off on this connection (one could stall a unit for 100 ms); ``checkpoint`` runs a
    passive one from another thread, and ``run_checkpoints`` does so every few seconds.
    """

    def __init__(self, url: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite")
        threads = {"check_same_thread": False}  # each engine is used by one thread at a time
        self._engine = sa_create_engine(sync_url, poolclass=StaticPool, connect_args=threads)
        event.listen(
            self._engine,
            "connect",
            lambda connection, record: (
                _sqlite_pragmas(connection, record, "wal_autocheckpoint=0"),
                setattr(connection, "isolation_level", None),
            ),
        )
        event.listen(self._engine, "begin", lambda c: c.exec_driver_sql("BEGIN IMMEDIATE"))
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-units")
        self._checkpoints = sa_create_engine(sync_url, poolclass=StaticPool, connect_args=threads)

    async def __call__(self, work: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._unit, work)

    def _unit(self, work: Callable[[Connection], T]) -> T:
        with self._engine.begin() as connection:
            return work(connection)

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
        await asyncio.to_thread(self._thread.shutdown)
        self._engine.dispose()
        self._checkpoints.dispose()


class AsyncTransactions:
    """Any other database: one pooled async connection per unit, the unit run with ``run_sync``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def __call__(self, work: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(work)

    async def run_checkpoints(self, every: float = 5.0) -> None:
        """Nothing to do: the server keeps its own log in order."""

    async def close(self) -> None:
        return None


def transactions_for(engine: AsyncEngine) -> ThreadTransactions | AsyncTransactions:
    url = engine.url.render_as_string(hide_password=False)
    if _sqlite_file(url) is not None:
        return ThreadTransactions(url)
    return AsyncTransactions(engine)


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # imported here: light entry points never migrate

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would eat a '%' in a password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database_sync(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Blocking: call it from a thread or the CLI."""
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply migrations without blocking the event loop (Alembic runs its own loop in a thread)."""
    await asyncio.to_thread(upgrade_database_sync, url, revision)
