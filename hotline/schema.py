"""The schema: Alembic migrations over every feature's tables, applied at start.

Here, in the composition root, because the migrations know every feature's tables; the
storage platform (``infra.storage``) knows none of them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from infra.storage import sqlite_file as sqlite_file_of

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # imported here: light entry points never migrate

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would eat a '%' in a password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database_sync(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Blocking: call it from a thread or the CLI."""
    sqlite_file = sqlite_file_of(url)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply migrations without blocking the event loop (Alembic runs its own loop in a thread)."""
    await asyncio.to_thread(upgrade_database_sync, url, revision)
