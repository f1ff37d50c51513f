"""Tickets in the database: creation with a per-day serial, matching, signing, listing.

Times are stored in UTC (SQLite keeps no zone, so every value is converted before it is written
and read back as UTC). Creation, and a change of fields with a status move, each run in one
transaction; the day's serial is taken with an upsert that PostgreSQL and SQLite both make atomic,
so two processes (``hotline run`` and ``hotline agi``) never hand out the same number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, Session, mapped_column

from infra.storage import (
    AsyncTransactions,
    Base,
    HotStatement,
    Transactions,
    orm_unit,
    parsed_datetime,
    utc,
)
from ivr_bypass.decision import OpenTicket
from queue_stats.journal import CallRow
from tickets.model import (
    ALLOWED_MOVES,
    OPEN_STATUSES,
    TicketError,
    TicketNumber,
    TicketStatus,
    move,
    ticket_day,
)
from tickets.sla import TicketClockFacts

MAX_TEXT = 4000
_OPEN = tuple(status.value for status in OPEN_STATUSES)


class TicketRow(Base):
    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_caller_open", "caller_number", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    caller_number: Mapped[str] = mapped_column(String(32))
    caller_name: Mapped[str] = mapped_column(String(128), default="")
    category: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    owner_agent: Mapped[str | None] = mapped_column(String(128), index=True)
    department: Mapped[str | None] = mapped_column(String(128))
    emergency: Mapped[bool] = mapped_column(Boolean, default=False)
    satisfaction: Mapped[int | None] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    contacted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    on_site_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    callback_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    called_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rating: Mapped[str | None] = mapped_column(String(24))
    rated_agent: Mapped[str | None] = mapped_column(String(128))
    rated_call: Mapped[str | None] = mapped_column(String(64))
    rated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), index=True
    )
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    visit_rating: Mapped[str | None] = mapped_column(String(24))
    visit_agent: Mapped[str | None] = mapped_column(String(128))
    visit_rated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TicketDayRow(Base):
    """The last serial handed out on each local day."""

    __tablename__ = "ticket_days"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last_serial: Mapped[int] = mapped_column(Integer)


_TIMESTAMPS = (
    "opened_at",
    "updated_at",
    "signed_at",
    "contacted_at",
    "on_site_at",
    "resolved_at",
    "closed_at",
    "callback_requested_at",
    "called_back_at",
)


_RATING_TIMESTAMPS = ("rated_at", "review_requested_at", "reviewed_at", "visit_rated_at")


@dataclass(frozen=True, slots=True)
class Ticket:
    number: str
    caller_number: str
    caller_name: str
    category: str
    description: str
    status: TicketStatus
    owner_agent: str | None
    department: str | None
    emergency: bool
    satisfaction: int | None
    opened_at: datetime
    updated_at: datetime
    signed_at: datetime | None
    contacted_at: datetime | None
    on_site_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    callback_requested_at: datetime | None
    called_back_at: datetime | None
    rating: str | None = None
    """The citizen's latest rating of a call about this ticket (a scale code), with who talked
    with them, which call and when; ``not_rated`` calls leave it as it is."""
    rated_agent: str | None = None
    rated_call: str | None = None
    rated_at: datetime | None = None
    review_requested_at: datetime | None = None
    """A rating asked for a supervisor's review (dissatisfied), until ``reviewed_at``."""
    reviewed_at: datetime | None = None
    visit_rating: str | None = None
    """The return visit's rating of the whole case (一事一评), a scale code or not_rated."""
    visit_agent: str | None = None
    visit_rated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: TicketRow) -> Ticket:
        values: dict[str, Any] = {
            name: getattr(row, name) for name in cls.__dataclass_fields__ if name != "status"
        }
        for name in (*_TIMESTAMPS, *_RATING_TIMESTAMPS):
            if values[name] is not None:
                values[name] = utc(values[name])
        return cls(status=TicketStatus(row.status), **values)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def awaits_review(self) -> bool:
        return self.review_requested_at is not None and self.reviewed_at is None

    def clock_facts(self) -> TicketClockFacts:
        return TicketClockFacts(
            opened_at=self.opened_at,
            emergency=self.emergency,
            contacted_at=self.contacted_at,
            on_site_at=self.on_site_at,
            resolved_at=self.resolved_at,
            callback_requested_at=self.callback_requested_at,
            called_back_at=self.called_back_at,
        )


@dataclass(frozen=True, slots=True)
class TicketEdit:
    """Fields an agent may change on a ticket; ``None`` leaves a field as it is."""

    category: str | None = None
    description: str | None = None
    department: str | None = None
    satisfaction: int | None = None

    def changes(self) -> dict[str, object]:
        changes: dict[str, object] = {}
        for name in ("category", "department"):
            value = getattr(self, name)
            if value is not None:
                if len(value) > 128:
                    raise TicketError(f"{name} is longer than 128 characters")
                changes[name] = value
        if self.description is not None:
            if len(self.description) > MAX_TEXT:
                raise TicketError(f"description is longer than {MAX_TEXT} characters")
            changes["description"] = self.description
        if self.satisfaction is not None:
            if not 1 <= self.satisfaction <= 5:
                raise TicketError("satisfaction is a score from 1 to 5")
            changes["satisfaction"] = self.satisfaction
        return changes


class TicketStore:
    """Tickets in the database. ``units`` runs the units of work (default: the sessions' engine,
    one async connection per unit) and ``reads`` the look-ups among them (default: ``units``;
    on SQLite, read-only units never take the write lock that routing in another process
    needs); ORM sessions serve the rest."""

    def __init__(
        self,
        sessions: async_sessionmaker,
        zone: ZoneInfo,
        prefix: str = "12345",
        units: Transactions | None = None,
        reads: Transactions | None = None,
    ) -> None:
        self._sessions = sessions
        self._zone = zone
        self._prefix = prefix
        self._units = units or AsyncTransactions(sessions.kw["bind"])
        self._reads = reads or self._units

    # -- routing ------------------------------------------------------------------------------

    async def open_tickets_for(
        self, caller_digits: str, since: datetime, limit: int = 5
    ) -> tuple[OpenTicket, ...]:
        """The caller's open tickets with activity since ``since``, newest first."""
        if not caller_digits:
            return ()
        return await self._reads(lambda c: self.open_tickets_in(c, caller_digits, since, limit))

    async def create(
        self,
        caller_digits: str,
        at: datetime,
        *,
        caller_name: str = "",
        emergency: bool = False,
        category: str = "",
        description: str = "",
    ) -> str:
        """Open a ticket and return its number (``12345-YYYYMMDD-NNNNNN``, local day)."""
        return await self._units(
            lambda c: self.open_ticket_in(
                c,
                caller_digits,
                at,
                caller_name=caller_name,
                emergency=emergency,
                category=category,
                description=description,
            )
        )

    # -- units of work (synchronous, inside one transaction; routing runs them in one go) --------

    def open_tickets_in(
        self, connection: Connection, caller_digits: str, since: datetime, limit: int = 5
    ) -> tuple[OpenTicket, ...]:
        rows = _OPEN_TICKETS_OF_CALLER.rows(
            connection, {"caller": caller_digits, "since": utc(since), "limit": limit}
        )
        return tuple(
            OpenTicket(number, owner, bool(emergency), utc(parsed_datetime(updated)))
            for number, owner, emergency, updated in rows
        )

    def open_ticket_in(
        self,
        connection: Connection,
        caller_digits: str,
        at: datetime,
        *,
        caller_name: str = "",
        emergency: bool = False,
        category: str = "",
        description: str = "",
    ) -> str:
        at = utc(at)
        day = ticket_day(at, self._zone)
        number = str(TicketNumber(self._prefix, day, _next_serial(connection, day)))
        _INSERT_TICKET.run(
            connection,
            {
                "number": number,
                "caller_number": caller_digits[:32],
                "caller_name": caller_name[:128],
                "category": category[:64],
                "description": description[:MAX_TEXT],
                "status": TicketStatus.NEW.value,
                "emergency": emergency,
                "opened_at": at,
                "updated_at": at,
            },
        )
        return number

    # -- the call's side ------------------------------------------------------------------------

    async def sign(self, number: str, agent: str, at: datetime) -> bool:
        """The agent who answered signs the ticket; returns False when it was signed already.

        A ticket that already has an owner keeps it (the caller reached a colleague this time);
        an unowned one becomes the answering agent's.
        """
        at = utc(at)

        def signing(session: Session) -> bool:
            row = _locked_row(session, number)
            status = TicketStatus(row.status)
            if row.owner_agent is None:
                row.owner_agent = agent[:128]
            row.updated_at = max(utc(row.updated_at), at)
            if TicketStatus.SIGNED not in _allowed(status):
                return False
            _apply(row, move(status, TicketStatus.SIGNED, at, _stamps(row)))
            return True

        return await self._units(orm_unit(signing))

    async def request_callback(self, number: str, at: datetime) -> bool:
        """The caller hung up unanswered: start the callback clock.

        A new or reopened ticket becomes a ``callback`` task; one already being handled keeps its
        status and only gets the callback clock (unless a callback is already pending).
        """
        at = utc(at)

        def asking(session: Session) -> bool:
            row = _locked_row(session, number)
            status = TicketStatus(row.status)
            if TicketStatus.CALLBACK in _allowed(status):
                _apply(row, move(status, TicketStatus.CALLBACK, at, _stamps(row)))
                return True
            if status in OPEN_STATUSES and (
                row.callback_requested_at is None or row.called_back_at is not None
            ):
                row.callback_requested_at = at
                row.called_back_at = None
                row.updated_at = at
                return True
            return False

        return await self._units(orm_unit(asking))

    async def reached_by_callback(self, number: str, at: datetime) -> bool:
        """A callback reached the citizen: the ticket's callback clock stops (a ``callback``
        ticket moves on to ``contacted``). False if no callback was pending."""
        at = utc(at)

        def reaching(session: Session) -> bool:
            row = _locked_row(session, number)
            status = TicketStatus(row.status)
            if status is TicketStatus.CALLBACK:
                _apply(row, move(status, TicketStatus.CONTACTED, at, _stamps(row)))
                return True
            if row.callback_requested_at is None or row.called_back_at is not None:
                return False
            row.called_back_at = at
            if row.contacted_at is None:
                row.contacted_at = at
            row.updated_at = max(utc(row.updated_at), at)
            return True

        return await self._units(orm_unit(reaching))

    async def rate(
        self, number: str, rating: str, agent: str, call: str, at: datetime, *, review: bool
    ) -> bool:
        """The citizen rated a call about this ticket: the latest rating stands on the ticket
        (an older one arriving late changes nothing); ``review`` puts it on the review list.
        Returns whether the ticket changed."""
        fields = {
            "rating": rating[:24],
            "rated_agent": agent[:128] or None,
            "rated_call": call[:64],
        }
        return await self._rated(number, "rated_at", fields, utc(at), review)

    async def rate_visit(
        self, number: str, rating: str, agent: str, at: datetime, *, review: bool
    ) -> bool:
        """The return visit's rating of the whole case (一事一评): the latest visit stands;
        ``review`` puts the ticket on the review list as a dissatisfied call would."""
        fields = {"visit_rating": rating[:24], "visit_agent": agent[:128] or None}
        return await self._rated(number, "visit_rated_at", fields, utc(at), review)

    async def _rated(
        self, number: str, stamp: str, fields: dict[str, str | None], at: datetime, review: bool
    ) -> bool:
        """A rating's ``fields`` onto the ticket unless a later one (``stamp``) is there."""

        def rating_it(session: Session) -> bool:
            row = _locked_row(session, number)
            latest = getattr(row, stamp)
            if latest is not None and utc(latest) > at:
                return False
            _apply(row, {**fields, stamp: at})
            if review:
                row.review_requested_at = at
                row.reviewed_at = None
            row.updated_at = max(utc(row.updated_at), at)
            return True

        return await self._units(orm_unit(rating_it))

    async def mark_reviewed(self, number: str, at: datetime) -> Ticket:
        """A supervisor has looked into the rating: the ticket leaves the review list."""
        at = utc(at)

        def reviewing(session: Session) -> Ticket:
            row = _locked_row(session, number)
            if row.review_requested_at is None:
                raise TicketError(f"ticket {number} is not on the review list")
            row.reviewed_at = at
            row.updated_at = max(utc(row.updated_at), at)
            return Ticket.from_row(row)

        return await self._units(orm_unit(reviewing))

    # -- people's side --------------------------------------------------------------------------

    async def set_status(self, number: str, wanted: TicketStatus, at: datetime) -> Ticket:
        return await self.update(number, None, wanted, at)

    async def edit(self, number: str, edit: TicketEdit, at: datetime) -> Ticket:
        return await self.update(number, edit, None, at)

    async def update(
        self, number: str, edit: TicketEdit | None, wanted: TicketStatus | None, at: datetime
    ) -> Ticket:
        """Change fields and move the status in one transaction: a refused move (or a bad
        field) leaves the ticket exactly as it was, the fields included."""
        changes = edit.changes() if edit is not None else None
        at = utc(at)

        def updating(session: Session) -> Ticket:
            row = _locked_row(session, number)
            if changes is not None:
                _apply(row, {**changes, "updated_at": at})
            if wanted is not None:
                _apply(row, move(TicketStatus(row.status), wanted, at, _stamps(row)))
                if wanted is TicketStatus.CONTACTED and row.callback_requested_at is not None:
                    row.called_back_at = row.called_back_at or at
            session.flush()
            return Ticket.from_row(row)

        return await self._units(orm_unit(updating))

    async def get(self, number: str) -> Ticket:
        async with self._sessions() as session:
            return Ticket.from_row(await self._row(session, number))

    async def list(
        self,
        *,
        status: TicketStatus | None = None,
        caller_digits: str | None = None,
        opened_from: datetime | None = None,
        opened_until: datetime | None = None,
        only_open: bool = False,
        owners_or_nobody: Sequence[str] | None = None,
        to_review: bool = False,
        limit: int = 100,
        after: Ticket | None = None,
    ) -> list[Ticket]:
        """Tickets newest first; ``owners_or_nobody`` keeps those these agent interfaces own
        and those nobody owns yet (what an agent may see). ``after``: the ones that come after
        this ticket in that order (the next page, found through the index)."""
        query = select(TicketRow).order_by(TicketRow.opened_at.desc(), TicketRow.id.desc())
        if owners_or_nobody is not None:
            owned = TicketRow.owner_agent.is_(None)
            if owners_or_nobody:
                owned = or_(owned, TicketRow.owner_agent.in_(list(owners_or_nobody)))
            query = query.where(owned)
        if status is not None:
            query = query.where(TicketRow.status == status.value)
        if only_open:
            query = query.where(TicketRow.status.in_(_OPEN))
        if to_review:
            query = query.where(
                TicketRow.review_requested_at.is_not(None), TicketRow.reviewed_at.is_(None)
            )
        if caller_digits:
            query = query.where(TicketRow.caller_number == caller_digits)
        if opened_from is not None:
            query = query.where(TicketRow.opened_at >= utc(opened_from))
        if opened_until is not None:
            query = query.where(TicketRow.opened_at < utc(opened_until))
        if after is not None:
            opened = utc(after.opened_at)
            its_id = select(TicketRow.id).where(TicketRow.number == after.number)
            query = query.where(
                or_(
                    TicketRow.opened_at < opened,
                    and_(TicketRow.opened_at == opened, TicketRow.id < its_id.scalar_subquery()),
                )
            )
        async with self._sessions() as session:
            rows = (await session.scalars(query.limit(limit))).all()
        return [Ticket.from_row(row) for row in rows]

    async def calls_of(self, number: str) -> Sequence[CallRow]:
        async with self._sessions() as session:
            query = select(CallRow).where(CallRow.ticket == number).order_by(CallRow.started_at)
            return (await session.scalars(query)).all()

    async def count(self) -> int:
        async with self._sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(TicketRow)) or 0)

    async def _row(self, session: AsyncSession, number: str) -> TicketRow:
        row = await session.scalar(select(TicketRow).where(TicketRow.number == number))
        if row is None:
            raise TicketError(f"no ticket {number[:40]!r}")
        return row


# Routing runs these on every call (``HotStatement``: no SQLAlchemy execution layer on SQLite).
_OPEN_TICKETS_OF_CALLER = HotStatement(  # the IN list is TicketStatus values, not input
    f"""
    SELECT number, owner_agent, emergency, updated_at FROM tickets
    WHERE caller_number = :caller AND status IN ({", ".join(f"'{s}'" for s in sorted(_OPEN))})
      AND updated_at >= :since
    ORDER BY updated_at DESC LIMIT :limit
    """  # noqa: S608
)
_INSERT_TICKET = HotStatement(
    """
    INSERT INTO tickets (number, caller_number, caller_name, category, description, status,
                         emergency, opened_at, updated_at)
    VALUES (:number, :caller_number, :caller_name, :category, :description, :status,
            :emergency, :opened_at, :updated_at)
    """
)
# An upsert both PostgreSQL and SQLite (3.35+) make atomic, so two processes never share a serial.
_NEXT_SERIAL = HotStatement(
    """
    INSERT INTO ticket_days (day, last_serial) VALUES (:day, 1)
    ON CONFLICT (day) DO UPDATE SET last_serial = ticket_days.last_serial + 1
    RETURNING last_serial
    """
)


def _next_serial(connection: Connection, day: str) -> int:
    """The day's next serial, atomically."""
    return int(_NEXT_SERIAL.value(connection, {"day": day}))


def _allowed(status: TicketStatus) -> frozenset[TicketStatus]:
    return ALLOWED_MOVES[status]


def _locked_row(session: Session, number: str) -> TicketRow:
    """The ticket's row, locked until the unit ends (PostgreSQL; SQLite's unit holds the lock)."""
    row = session.scalar(select(TicketRow).where(TicketRow.number == number).with_for_update())
    if row is None:
        raise TicketError(f"no ticket {number[:40]!r}")
    return row


def _stamps(row: TicketRow) -> dict[str, datetime | None]:
    return {name: getattr(row, name) for name in _TIMESTAMPS}


def _apply(row: TicketRow, changes: dict[str, object]) -> None:
    for name, value in changes.items():
        setattr(row, name, value)
