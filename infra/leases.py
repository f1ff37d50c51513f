"""Leases in the database: which bridge process ingests a PBX (or runs the singletons) now.

A lease is one row: its name (``pbx:west``), its holder (one id per process start), a fencing
token and when it expires, in the database's own clock so the processes' clocks never matter.
A claim is one statement: it takes a free or expired lease (the token goes up by one) or renews
the holder's own (the token stays). Nothing else ever takes a lease that has not expired.

Why a row and not PostgreSQL's advisory locks: an advisory lock lives as long as its
connection, and a frozen process (SIGSTOP, a stalled VM) keeps its connection open, so the lock
would never pass on. A row expires on time whatever the holder is doing; the token then stops
the old holder's late writes (``fence``): every write for a PBX checks, in its own transaction,
that its token is still the lease's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import BigInteger, Connection, Float, String, bindparam, text
from sqlalchemy.orm import Mapped, mapped_column

from infra.storage import Base, Transactions

log = logging.getLogger(__name__)

T = TypeVar("T")


class LeaseRow(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    token: Mapped[int] = mapped_column(BigInteger)
    # Seconds since the epoch, in the database's clock.
    expires_at: Mapped[float] = mapped_column(Float)
    taken_at: Mapped[float] = mapped_column(Float)


class FencedOut(RuntimeError):
    """A write by a process whose lease has passed to another: refused, not retried."""


@dataclass(frozen=True, slots=True)
class LeaseView:
    """A lease as the panel and health show it."""

    name: str
    holder: str
    token: int
    expires_in: float  # seconds; negative once expired


def _now_sql(dialect: str) -> str:
    """The database's own time in epoch seconds (one clock for every process)."""
    if dialect == "sqlite":
        return "((julianday('now') - 2440587.5) * 86400.0)"
    return "extract(epoch from clock_timestamp())"


def _claim_sql(dialect: str) -> str:
    now = _now_sql(dialect)
    return f"""
        INSERT INTO leases (name, holder, token, expires_at, taken_at)
        VALUES (:name, :holder, 1, {now} + :ttl, {now})
        ON CONFLICT (name) DO UPDATE SET
            token = CASE
                WHEN leases.holder = excluded.holder AND leases.expires_at >= {now}
                THEN leases.token ELSE leases.token + 1 END,
            taken_at = CASE
                WHEN leases.holder = excluded.holder AND leases.expires_at >= {now}
                THEN leases.taken_at ELSE excluded.taken_at END,
            holder = excluded.holder,
            expires_at = excluded.expires_at
        WHERE leases.holder = excluded.holder OR leases.expires_at < {now}
        RETURNING token
    """  # noqa: S608 (only the clock expression is formatted in; values are bound)


class LeaseStore:
    """Claims, renews, releases and fences leases through the bridge's units of work."""

    def __init__(self, units: Transactions, reads: Transactions) -> None:
        self._units = units
        self._reads = reads

    async def claim(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew ``name`` for ``ttl`` seconds: the token, or None while another holds it.

        A holder whose own lease expired gets a new token: whatever it did meanwhile may have
        overlapped with nobody, but it must resync as a new owner would."""

        def claiming(connection: Connection) -> int | None:
            if connection.dialect.name == "postgresql":
                # A claim that waits on a lock is late anyway: the next beat tries again.
                connection.execute(text("SET LOCAL lock_timeout = '1s'"))
            sql = _claim_sql(connection.dialect.name)
            row = connection.execute(
                text(sql), {"name": name, "holder": holder, "ttl": ttl}
            ).first()
            return None if row is None else int(row[0])

        return await self._units(claiming)

    async def release(self, name: str, holder: str, token: int) -> bool:
        """Give ``name`` up at once (a clean stop), so the next owner need not wait for expiry."""

        def releasing(connection: Connection) -> bool:
            now = _now_sql(connection.dialect.name)
            result = connection.execute(
                text(
                    f"UPDATE leases SET expires_at = {now} - 1 "  # noqa: S608 (a clock only)
                    "WHERE name = :name AND holder = :holder AND token = :token"
                ),
                {"name": name, "holder": holder, "token": token},
            )
            return bool(result.rowcount)

        return await self._units(releasing)

    async def leases(self, prefix: str = "") -> list[LeaseView]:
        def reading(connection: Connection) -> list[LeaseView]:
            now = _now_sql(connection.dialect.name)
            rows = connection.execute(
                text(
                    f"SELECT name, holder, token, expires_at - {now} FROM leases "  # noqa: S608
                    "WHERE name LIKE :prefix ORDER BY name"
                ),
                {"prefix": prefix + "%"},
            ).all()
            return [LeaseView(str(n), str(h), int(t), float(e)) for n, h, t, e in rows]

        return await self._reads(reading)


def fence(name: str, token: int, connection: Connection) -> None:
    """Refuse the transaction unless ``token`` is still ``name``'s: run it first in a unit.

    On PostgreSQL the row is locked FOR SHARE, so a takeover waits for this transaction to end
    and a write is either before it or refused; SQLite has one writer at a time anyway."""
    query = "SELECT token FROM leases WHERE name = :name"
    if connection.dialect.name == "postgresql":
        query += " FOR SHARE"
    current = connection.execute(text(query), {"name": name}).scalar()
    if current != token:
        raise fenced_out(name, token, current)


def fenced_out(name: str, token: int, current: int | None) -> FencedOut:
    """The refusal of a write under ``token``, one wording however the lease was checked."""
    return FencedOut(f"lease {name} has token {current}, this process holds {token}")


def current_tokens(names: Collection[str], connection: Connection) -> dict[str, int]:
    """The tokens of the leases ``names`` (those that exist), each row locked as ``fence``
    locks it: for a unit that writes for several leases and checks them all at once."""
    query = text("SELECT name, token FROM leases WHERE name IN :names ORDER BY name")
    if connection.dialect.name == "postgresql":
        query = text(f"{query.text} FOR SHARE")
    rows = connection.execute(
        query.bindparams(bindparam("names", expanding=True)), {"names": sorted(names)}
    )
    return {str(name): int(token) for name, token in rows}


def fenced(name: str, token: int, work: Callable[[Connection], T]) -> Callable[[Connection], T]:
    """``work`` as a unit that first checks the lease (``fence``)."""

    def unit(connection: Connection) -> T:
        fence(name, token, connection)
        return work(connection)

    return unit


class FencedTransactions:
    """A PBX owner's units of work: each is fenced by the owner's lease token."""

    def __init__(self, units: Transactions, name: str, token: int) -> None:
        self.units = units  # the bridge's, shared by every owner's fenced units
        self.name = name
        self.token = token
        self.counters = units.counters

    async def __call__(self, work: Callable[[Connection], T], start_by: float | None = None) -> T:
        return await self.units(fenced(self.name, self.token, work), start_by)

    async def run_checkpoints(self, every: float = 5.0) -> None:
        await self.units.run_checkpoints(every)

    async def close(self) -> None:
        """The shared units belong to the bridge, which closes them."""
