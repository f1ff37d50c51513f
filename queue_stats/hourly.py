"""Per-hour queue counters in the database, so a panel can draw the day and a restart keeps it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, String, UniqueConstraint, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, Session, mapped_column

from infra.storage import AsyncTransactions, Base, Transactions, orm_unit
from queue_stats.stats import QueueCounters

COUNTER_FIELDS = tuple(QueueCounters.__slots__)


class QueueHourRow(Base):
    __tablename__ = "queue_hours"
    __table_args__ = (UniqueConstraint("pbx", "queue", "hour_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The PBX of a hotline that runs several (``pbxs``); "" for the one PBX of a single bridge.
    pbx: Mapped[str] = mapped_column(String(16), default="", server_default="")
    queue: Mapped[str] = mapped_column(String(64))
    hour_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    offered: Mapped[int] = mapped_column(Integer, default=0)
    answered: Mapped[int] = mapped_column(Integer, default=0)
    abandoned: Mapped[int] = mapped_column(Integer, default=0)
    short_abandoned: Mapped[int] = mapped_column(Integer, default=0)
    timed_out: Mapped[int] = mapped_column(Integer, default=0)
    answered_within_sl: Mapped[int] = mapped_column(Integer, default=0)
    hold_seconds_answered: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    talk_seconds: Mapped[int] = mapped_column(Integer, default=0)


def _utc(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; they were stored as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class HourlyStore:
    def __init__(
        self, sessions: async_sessionmaker, units: Transactions | None = None, pbx: str = ""
    ) -> None:
        """``units`` write the buckets (see ``CallJournal``); the sessions serve the reads.
        ``pbx``: whose rows these are, when several PBXs share the database."""
        self._sessions = sessions
        self._units = units or AsyncTransactions(sessions.kw["bind"])
        self._pbx = pbx

    async def save(self, buckets: list[tuple[str, datetime, QueueCounters]]) -> None:
        """Upsert each bucket's totals (the core hands over totals, so a retry is harmless)."""
        if not buckets:
            return

        def saving(session: Session) -> None:
            for queue, hour, counters in buckets:
                row = session.scalar(
                    select(QueueHourRow).where(
                        QueueHourRow.pbx == self._pbx,
                        QueueHourRow.queue == queue,
                        QueueHourRow.hour_start == hour,
                    )
                )
                if row is None:
                    row = QueueHourRow(pbx=self._pbx, queue=queue, hour_start=hour)
                    session.add(row)
                for name in COUNTER_FIELDS:
                    setattr(row, name, getattr(counters, name))

        await self._units(orm_unit(saving))

    async def since(self, start: datetime) -> list[tuple[str, datetime, QueueCounters]]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(QueueHourRow)
                .where(QueueHourRow.hour_start >= start, QueueHourRow.pbx == self._pbx)
                .order_by(QueueHourRow.hour_start)
            )
            return [
                (
                    row.queue,
                    _utc(row.hour_start),
                    QueueCounters(**{name: getattr(row, name) for name in COUNTER_FIELDS}),
                )
                for row in rows
            ]
