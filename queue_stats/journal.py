"""The call journal table and its store: one row per call, written once the call has ended.

Writing is an upsert keyed by Asterisk's ``uniqueid`` so a replayed or re-delivered call never
makes a second row.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, DateTime, Integer, String, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from infra.storage import AsyncTransactions, Base, Transactions, utc
from queue_stats.calls import CallOutcome, CallRecord


class CallRow(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uniqueid: Mapped[str] = mapped_column(String(64), unique=True)
    linkedid: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(128))
    caller_number: Mapped[str] = mapped_column(String(64), index=True)
    caller_name: Mapped[str] = mapped_column(String(128))
    dialled_number: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str | None] = mapped_column(String(64), index=True)
    agent_interface: Mapped[str | None] = mapped_column(String(128), index=True)
    agent_name: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    entered_queue_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hold_seconds: Mapped[int | None] = mapped_column(Integer)
    talk_seconds: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32), index=True)
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    ticket: Mapped[str | None] = mapped_column(String(64), index=True)
    routing_reason: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16), default="ami", server_default="ami")
    rating: Mapped[str | None] = mapped_column(String(24), index=True)
    rating_key: Mapped[str | None] = mapped_column(String(4))
    rated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    direction: Mapped[str] = mapped_column(String(8), default="inbound", server_default="inbound")


_COPIED_FIELDS = (
    "linkedid",
    "channel",
    "caller_number",
    "caller_name",
    "dialled_number",
    "queue",
    "agent_interface",
    "agent_name",
    "started_at",
    "entered_queue_at",
    "answered_at",
    "ended_at",
    "hold_seconds",
    "talk_seconds",
    "hangup_cause",
    "ticket",
    "routing_reason",
    "source",
    "rating",
    "rating_key",
    "rated_at",
    "direction",
)


class Journal(Protocol):
    """What the queue service needs of a journal (``CallJournal``, or a PBX owner's
    ``StreamedJournal`` that writes through Redis)."""

    async def record(self, call: CallRecord) -> None: ...

    async def span(self) -> tuple[datetime, datetime] | None: ...

    async def ratings_since(self, since: datetime) -> list[tuple[str, str, datetime, str]]: ...

    async def uniqueids_since(self, since: datetime) -> set[str]: ...

    async def calls_since(self, since: datetime) -> list[CallRecord]: ...


@functools.cache
def _upsert(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (uniqueid) DO UPDATE`` of every copied field and the outcome.

    Built once per dialect: building it makes the ``excluded`` alias of the whole table (a copy
    of every column), about 0.5 ms of CPU, and the stream's writer used to pay that in every
    transaction."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(CallRow.__table__)
    changed = {name: statement.excluded[name] for name in (*_COPIED_FIELDS, "outcome")}
    return statement.on_conflict_do_update(index_elements=["uniqueid"], set_=changed)


def journal_rows(calls: Sequence[CallRecord]) -> list[dict[str, Any]]:
    """The journal rows of finished calls; a call that has not ended is refused."""
    rows = []
    for call in calls:
        if call.outcome is None:
            raise ValueError(f"call {call.uniqueid} has not ended")
        row = {name: getattr(call, name) for name in _COPIED_FIELDS}
        row["uniqueid"] = call.uniqueid
        row["outcome"] = call.outcome.value
        rows.append(row)
    return rows


def write_rows(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert ``rows`` (from ``journal_rows``) in one statement, inside a unit of work."""
    connection.execute(_upsert(connection.dialect.name), rows)


def _record_of(row: CallRow) -> CallRecord:
    values = {name: getattr(row, name) for name in _COPIED_FIELDS}
    for name in ("started_at", "entered_queue_at", "answered_at", "ended_at", "rated_at"):
        if values[name] is not None:
            values[name] = utc(values[name])
    return CallRecord(uniqueid=row.uniqueid, outcome=CallOutcome(row.outcome), **values)


class CallJournal:
    """Writes finished calls and reads them back; the only code that touches table ``calls``."""

    def __init__(
        self, sessions: async_sessionmaker, units: Transactions | None = None, pbx: str = ""
    ) -> None:
        """``units`` write the rows (the bridge's: on SQLite a whole write stays on the database
        thread, see ``orm_unit``); the sessions serve the reads. ``pbx``: the reads see only
        that PBX's calls (ids ``<pbx>/...``), when several PBXs share the journal."""
        self._sessions = sessions
        self._units = units or AsyncTransactions(sessions.kw["bind"])
        self._mine = CallRow.uniqueid.startswith(pbx + "/", autoescape=True) if pbx else None

    def _own(self, query: Any) -> Any:
        return query if self._mine is None else query.where(self._mine)

    async def record(self, call: CallRecord) -> None:
        await self.record_many([call])

    @property
    def units(self) -> Transactions:
        """What writes the rows (a PBX owner's: fenced by its lease)."""
        return self._units

    async def record_many(self, calls: Sequence[CallRecord]) -> None:
        """Write finished calls in one transaction: one upsert statement for them all (a row
        per call id; a call written again replaces its row)."""
        rows = journal_rows(calls)
        if rows:
            await self._units(lambda connection: write_rows(connection, rows))

    async def span(self) -> tuple[datetime, datetime] | None:
        """When the oldest and the newest journalled calls began; ``None`` for a new journal."""
        async with self._sessions() as session:
            oldest, newest = (
                await session.execute(
                    self._own(select(func.min(CallRow.started_at), func.max(CallRow.started_at)))
                )
            ).one()
        return None if oldest is None or newest is None else (utc(oldest), utc(newest))

    async def ratings_since(self, since: datetime) -> list[tuple[str, str, datetime, str]]:
        """(queue, agent, ended_at, rating) of the rated calls that ended since ``since``: the
        day's satisfaction figures at a start."""
        async with self._sessions() as session:
            rows = await session.execute(
                self._own(
                    select(
                        CallRow.queue,
                        CallRow.agent_interface,
                        CallRow.ended_at,
                        CallRow.started_at,
                        CallRow.rating,
                    ).where(
                        CallRow.rating.is_not(None),
                        CallRow.ended_at >= since,
                        # the indexed bound: a call rated since then began a day before at most
                        CallRow.started_at >= since - timedelta(days=1),
                    )
                )
            )
            return [
                (queue or "", agent or "", utc(ended or started), rating)
                for queue, agent, ended, started, rating in rows.all()
            ]

    async def uniqueids_since(self, since: datetime) -> set[str]:
        async with self._sessions() as session:
            result = await session.scalars(
                self._own(select(CallRow.uniqueid).where(CallRow.started_at >= since))
            )
            return set(result.all())

    async def calls_since(self, since: datetime) -> list[CallRecord]:
        """The journalled calls that entered a queue since ``since``, as records: a process
        that takes a PBX over counts the day from them (hour rows lag by up to a flush)."""
        async with self._sessions() as session:
            rows = await session.scalars(
                self._own(
                    select(CallRow)
                    # started_at is indexed (a year's journal is 10 M rows); a call waits in a
                    # queue minutes, never a day, so the day before bounds the ones entered since.
                    .where(
                        CallRow.started_at >= since - timedelta(days=1),
                        CallRow.entered_queue_at >= since,
                    )
                    .order_by(CallRow.entered_queue_at)
                )
            )
            return [_record_of(row) for row in rows]

    async def recent(self, limit: int = 100) -> Sequence[CallRow]:
        async with self._sessions() as session:
            result = await session.scalars(
                select(CallRow).order_by(CallRow.started_at.desc(), CallRow.id.desc()).limit(limit)
            )
            return result.all()

    async def by_uniqueid(self, uniqueid: str) -> CallRow | None:
        async with self._sessions() as session:
            return await session.scalar(select(CallRow).where(CallRow.uniqueid == uniqueid))
