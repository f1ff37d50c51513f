"""Recording rows and the playback audit log; each function is one step of a database unit.

A recording is linked to its call by the caller channel's uniqueid (the journal's ``calls``
row may be written before or after the file is ingested) and to its ticket by the number in its
name, or the call's ticket when the name has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import (
    Connection,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from infra.storage import Base
from queue_stats.journal import CallRow
from tickets.model import OPEN_STATUSES
from tickets.store import TicketRow

_OPEN = tuple(status.value for status in OPEN_STATUSES)


class RecordingRow(Base):
    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    uniqueid: Mapped[str] = mapped_column(String(64), index=True)
    ticket: Mapped[str | None] = mapped_column(String(64), index=True)
    recorded_on: Mapped[date] = mapped_column(Date, index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    duration_seconds: Mapped[float] = mapped_column(Float)
    format: Mapped[str] = mapped_column(String(64))
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    integrity: Mapped[str] = mapped_column(String(16), default="ok")


class RecordingAccessRow(Base):
    __tablename__ = "recording_access"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recording_id: Mapped[int | None] = mapped_column(
        ForeignKey("recordings.id", ondelete="SET NULL"), index=True
    )
    requested_id: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    remote: Mapped[str] = mapped_column(String(64))
    byte_range: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True, slots=True)
class Recording:
    id: int
    key: str
    uniqueid: str
    ticket: str | None
    recorded_on: date
    sha256: str
    size_bytes: int
    duration_seconds: float
    format: str
    ingested_at: datetime
    integrity: str
    agent_interface: str | None = None
    talk_seconds: int | None = None


_TABLE = RecordingRow.__table__
_CALLS = CallRow.__table__


def _select_recordings():
    return select(
        _TABLE.c.id,
        _TABLE.c.key,
        _TABLE.c.uniqueid,
        func.coalesce(_TABLE.c.ticket, _CALLS.c.ticket).label("ticket"),
        _TABLE.c.recorded_on,
        _TABLE.c.sha256,
        _TABLE.c.size_bytes,
        _TABLE.c.duration_seconds,
        _TABLE.c.format,
        _TABLE.c.ingested_at,
        _TABLE.c.integrity,
        _CALLS.c.agent_interface,
        _CALLS.c.talk_seconds,
    ).select_from(_TABLE.outerjoin(_CALLS, _CALLS.c.uniqueid == _TABLE.c.uniqueid))


def _recording(row: object) -> Recording:
    values = row._mapping  # type: ignore[attr-defined]
    ingested = values["ingested_at"]
    if ingested.tzinfo is None:
        ingested = ingested.replace(tzinfo=UTC)
    return Recording(**{**values, "ingested_at": ingested})


def key_is_recorded(connection: Connection, key: str) -> bool:
    return connection.execute(select(_TABLE.c.id).where(_TABLE.c.key == key)).first() is not None


def recorded_keys(connection: Connection, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` already have a row (looked up in slices: bound-parameter limits)."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        query = select(_TABLE.c.key).where(_TABLE.c.key.in_(list(keys[start : start + 500])))
        found.update(connection.execute(query).scalars())
    return found


def add_recording(connection: Connection, values: dict[str, object]) -> bool:
    """Insert unless an earlier run already recorded the key; True if new.

    Two processes racing on one key are stopped by the unique constraint (an IntegrityError).
    """
    if key_is_recorded(connection, str(values["key"])):
        return False
    connection.execute(insert(_TABLE).values(**values))
    return True


def recording_by_id(connection: Connection, recording_id: int) -> Recording | None:
    row = connection.execute(_select_recordings().where(_TABLE.c.id == recording_id)).first()
    return _recording(row) if row is not None else None


def recordings_of(
    connection: Connection, *, uniqueid: str | None = None, ticket: str | None = None
) -> list[Recording]:
    query = _select_recordings().order_by(_TABLE.c.id)
    if uniqueid is not None:
        query = query.where(_TABLE.c.uniqueid == uniqueid)
    if ticket is not None:
        query = query.where(func.coalesce(_TABLE.c.ticket, _CALLS.c.ticket) == ticket)
    return [_recording(row) for row in connection.execute(query)]


def purge_candidates(connection: Connection, older_than: date) -> list[Recording]:
    """Recordings made before ``older_than`` whose ticket is not open (or that have none)."""
    ticket = func.coalesce(_TABLE.c.ticket, _CALLS.c.ticket)
    open_ticket = (
        select(TicketRow.number)
        .where(TicketRow.number == ticket, TicketRow.status.in_(_OPEN))
        .exists()
    )
    query = (
        _select_recordings()
        .where(_TABLE.c.recorded_on < older_than, ~open_ticket)
        .order_by(_TABLE.c.id)
    )
    return [_recording(row) for row in connection.execute(query)]


def recordings_before(connection: Connection, day: date) -> int:
    """How many recordings were made before ``day``, open tickets' included."""
    query = select(func.count()).select_from(_TABLE).where(_TABLE.c.recorded_on < day)
    return int(connection.execute(query).scalar_one())


def mark_integrity(
    connection: Connection, recording_ids: Sequence[int], verdict: str, at: datetime
) -> None:
    if recording_ids:
        connection.execute(
            update(_TABLE)
            .where(_TABLE.c.id.in_(list(recording_ids)))
            .values(integrity=verdict, verified_at=at)
        )


def remove_recording(connection: Connection, recording_id: int) -> None:
    connection.execute(delete(_TABLE).where(_TABLE.c.id == recording_id))


def log_access(connection: Connection, values: dict[str, object]) -> None:
    connection.execute(insert(RecordingAccessRow.__table__).values(**values))


def access_log(connection: Connection, limit: int = 100) -> list[dict[str, object]]:
    table = RecordingAccessRow.__table__
    rows = connection.execute(select(table).order_by(table.c.id.desc()).limit(limit))
    return [dict(row._mapping) for row in rows]
