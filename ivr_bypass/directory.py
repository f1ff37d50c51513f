"""The enterprise directory: key enterprises' numbers, routed to the priority line.

Numbers are stored normalised (``ivr_bypass.decision.normalise_number``), so ``+86 21 6543 2100``
and ``021-65432100`` are one entry and match the caller ID however the trunk spells it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, DateTime, Integer, String, delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from infra.storage import Base, HotStatement
from ivr_bypass.decision import normalise_number


class DirectoryError(ValueError):
    """A directory entry that cannot be stored (bad number, empty or overlong name)."""


class EnterpriseRow(Base):
    __tablename__ = "enterprises"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class Enterprise:
    number: str
    name: str


def directory_number(raw: str) -> str:
    """The normalised digits of a directory number; refuses numbers no caller ID could match."""
    number = normalise_number(raw)
    if number.problem is not None:
        raise DirectoryError(f"not a usable phone number: {raw[:40]!r} ({number.problem})")
    return number.digits


_NAME_OF_NUMBER = HotStatement("SELECT name FROM enterprises WHERE number = :number")


class EnterpriseDirectory:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self._sessions = sessions

    async def add(self, raw_number: str, name: str, at: datetime) -> Enterprise:
        """Add or rename an entry; returns it as stored."""
        number = directory_number(raw_number)
        name = " ".join(name.split())
        if not name or len(name) > 200:
            raise DirectoryError("an enterprise needs a name of 1 to 200 characters")
        async with self._sessions.begin() as session:
            row = await session.scalar(select(EnterpriseRow).where(EnterpriseRow.number == number))
            if row is None:
                session.add(EnterpriseRow(number=number, name=name, added_at=at))
            else:
                row.name = name
        return Enterprise(number, name)

    async def remove(self, raw_number: str) -> bool:
        number = directory_number(raw_number)
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(EnterpriseRow).where(EnterpriseRow.number == number)
            )
        return bool(result.rowcount)

    async def lookup(self, digits: str) -> str | None:
        """The enterprise's name for a normalised caller number, or None."""
        if not digits:
            return None
        async with self._sessions() as session:
            return await session.scalar(_NAME_OF_NUMBER.text, {"number": digits})

    def name_in(self, connection: Connection, digits: str) -> str | None:
        """``lookup`` as part of a unit of work (routing does it in one go)."""
        if not digits:
            return None
        return _NAME_OF_NUMBER.value(connection, {"number": digits})

    async def entries(self) -> list[Enterprise]:
        async with self._sessions() as session:
            rows = (await session.execute(select(EnterpriseRow.number, EnterpriseRow.name))).all()
        return [Enterprise(number, name) for number, name in sorted(rows)]
