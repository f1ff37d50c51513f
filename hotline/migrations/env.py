"""Alembic environment: runs migrations over the bridge's async engine (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# Each import registers its tables on Base.metadata.
import callbacks.store  # noqa: F401
import infra.leases  # noqa: F401
import ivr_bypass.directory  # noqa: F401
import queue_stats.hourly
import queue_stats.journal  # noqa: F401
import recording.db  # noqa: F401
import tickets.store  # noqa: F401
import web.users  # noqa: F401
from infra.storage import Base

target_metadata = Base.metadata
# Several bridge processes may start at once on one PostgreSQL: one migrates, the others wait
# on this lock and then find nothing left to do.
MIGRATION_LOCK = 0x686F746C696E65  # "hotline"


def _migrate(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=connection, target_metadata=target_metadata, render_as_batch=is_sqlite
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
