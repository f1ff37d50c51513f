"""Callback tasks in the database: one open task per caller, its attempts and its end.

Every change is one unit of work on a locked row, so a click in the panel and the PBX's report
of the attempt never both win. Times are kept in UTC, as everywhere in the bridge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from callbacks.policy import (
    OPEN_STATUSES,
    CallbackStatus,
    DialOutcome,
    RetryPolicy,
    after_attempt,
)
from infra.storage import Base, Transactions, orm_unit, utc

_OPEN = tuple(status.value for status in OPEN_STATUSES)
CALLBACK, VISIT = "callback", "visit"


class CallbackError(ValueError):
    """A callback that does not exist, or cannot do what was asked in its state."""


class CallbackRow(Base):
    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), default="callback", server_default="callback")
    ticket: Mapped[str] = mapped_column(String(40), index=True)
    caller_number: Mapped[str] = mapped_column(String(32), index=True)
    caller_name: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    missed_calls: Mapped[int] = mapped_column(Integer, default=1)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_missed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    agent: Mapped[str | None] = mapped_column(String(128))
    dialling_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_outcome: Mapped[str | None] = mapped_column(String(24))
    reached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_because: Mapped[str | None] = mapped_column(String(128))


@dataclass(frozen=True, slots=True)
class CallbackTask:
    id: int
    kind: str
    """``callback`` (a missed caller) or ``visit`` (the return visit of a resolved ticket)."""
    ticket: str
    caller_number: str
    caller_name: str
    status: CallbackStatus
    missed_calls: int
    requested_at: datetime
    last_missed_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    agent: str | None
    dialling_since: datetime | None
    last_outcome: str | None
    reached_at: datetime | None
    closed_at: datetime | None
    stopped_because: str | None

    @classmethod
    def from_row(cls, row: CallbackRow) -> CallbackTask:
        values: dict[str, Any] = {f.name: getattr(row, f.name) for f in fields(cls)}
        for name, value in values.items():
            if isinstance(value, datetime):
                values[name] = utc(value)
        values["status"] = CallbackStatus(row.status)
        return cls(**values)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class CallbackStore:
    def __init__(self, units: Transactions, reads: Transactions | None = None) -> None:
        self._units = units
        self._reads = reads or units

    async def request(
        self, ticket: str, caller_digits: str, caller_name: str, at: datetime
    ) -> tuple[CallbackTask, bool]:
        """The caller was missed: their open task counts one more missed call, or a new task
        is opened. Returns the task and whether it was merged into an open one."""
        at = utc(at)

        def requesting(session: Session) -> tuple[CallbackTask, bool]:
            row = session.scalar(
                select(CallbackRow)
                .where(
                    CallbackRow.kind == CALLBACK,
                    CallbackRow.caller_number == caller_digits,
                    CallbackRow.status.in_(_OPEN),
                )
                .order_by(CallbackRow.requested_at)
                .limit(1)
                .with_for_update()
            )
            if row is not None and caller_digits:
                row.missed_calls += 1
                row.last_missed_at = max(utc(row.last_missed_at), at)
                return CallbackTask.from_row(row), True
            return _new_task(session, CALLBACK, ticket, caller_digits, caller_name, at), False

        return await self._units(orm_unit(requesting))

    async def visit(
        self, ticket: str, caller_digits: str, caller_name: str, at: datetime
    ) -> CallbackTask:
        """The return visit of ``ticket``: its open visit task, or a new one (due at once)."""
        at = utc(at)

        def visiting(session: Session) -> CallbackTask:
            row = session.scalar(
                select(CallbackRow)
                .where(
                    CallbackRow.kind == VISIT,
                    CallbackRow.ticket == ticket,
                    CallbackRow.status.in_(_OPEN),
                )
                .with_for_update()
            )
            if row is None:
                return _new_task(session, VISIT, ticket, caller_digits, caller_name, at)
            return CallbackTask.from_row(row)

        return await self._units(orm_unit(visiting))

    async def start(self, task_id: int, agent: str, at: datetime) -> CallbackTask:
        """An attempt begins with ``agent``'s phone; refused unless the task waits for one."""
        at = utc(at)

        def starting(session: Session) -> CallbackTask:
            row = _locked(session, task_id)
            if row.status not in (CallbackStatus.DUE.value, CallbackStatus.RETRY.value):
                raise CallbackError(f"callback {task_id} is {row.status}, not waiting for a call")
            if not row.caller_number:
                raise CallbackError(f"callback {task_id} has no number to call")
            row.status = CallbackStatus.DIALLING.value
            row.agent = agent[:128]
            row.dialling_since = at
            return CallbackTask.from_row(row)

        return await self._units(orm_unit(starting))

    async def finish(
        self, task_id: int, outcome: DialOutcome, at: datetime, policy: RetryPolicy
    ) -> CallbackTask | None:
        """The attempt under way ended with ``outcome``; ``None`` if none was under way (the PBX
        reported twice, or about a task it was not asked to dial)."""
        at = utc(at)

        def finishing(session: Session) -> CallbackTask | None:
            row = session.scalar(
                select(CallbackRow).where(CallbackRow.id == task_id).with_for_update()
            )
            if row is None or row.status != CallbackStatus.DIALLING.value:
                return None
            after = after_attempt(row.attempts, outcome, at, policy)
            row.status = after.status.value
            row.attempts = after.attempts
            row.next_attempt_at = after.next_attempt_at
            row.last_outcome = outcome.value
            row.dialling_since = None
            if after.status is CallbackStatus.REACHED:
                row.reached_at = at
            if after.status in (CallbackStatus.REACHED, CallbackStatus.GAVE_UP):
                row.closed_at = at
                row.stopped_because = after.stopped_because
            return CallbackTask.from_row(row)

        return await self._units(orm_unit(finishing))

    async def give_back(self, task_id: int, outcome: str) -> CallbackTask | None:
        """An attempt that never reached the PBX (it was down): the task waits again."""

        def giving_back(session: Session) -> CallbackTask | None:
            row = _locked(session, task_id)
            if row.status != CallbackStatus.DIALLING.value:
                return None
            _waiting_again(row, outcome)
            return CallbackTask.from_row(row)

        return await self._units(orm_unit(giving_back))

    async def give_back_stale(self, before: datetime) -> list[CallbackTask]:
        """Attempts begun before ``before`` that the PBX never reported on (it restarted, or
        the bridge was away when it did): the tasks wait again, nothing is left hanging."""
        before = utc(before)

        def stale(session: Session) -> list[CallbackTask]:
            rows = session.scalars(
                select(CallbackRow)
                .where(
                    CallbackRow.status == CallbackStatus.DIALLING.value,
                    CallbackRow.dialling_since < before,
                )
                .with_for_update()
            ).all()
            for row in rows:
                _waiting_again(row, "unreported")
            return [CallbackTask.from_row(row) for row in rows]

        return await self._units(orm_unit(stale))

    async def get(self, task_id: int) -> CallbackTask:
        def getting(session: Session) -> CallbackTask:
            row = session.get(CallbackRow, task_id)
            if row is None:
                raise CallbackError(f"no callback {task_id}")
            return CallbackTask.from_row(row)

        return await self._reads(orm_unit(getting))

    async def tasks(self, *, open_only: bool = True, limit: int = 100) -> list[CallbackTask]:
        """Oldest missed first: the order the hotline owes its callbacks in."""

        def listing(session: Session) -> list[CallbackTask]:
            query = select(CallbackRow).order_by(CallbackRow.requested_at, CallbackRow.id)
            if open_only:
                query = query.where(CallbackRow.status.in_(_OPEN))
            return [CallbackTask.from_row(row) for row in session.scalars(query.limit(limit))]

        return await self._reads(orm_unit(listing))

    async def due_retries(self, now: datetime) -> Sequence[CallbackTask]:
        now = utc(now)

        def due(session: Session) -> list[CallbackTask]:
            query = select(CallbackRow).where(
                CallbackRow.status == CallbackStatus.RETRY.value,
                CallbackRow.next_attempt_at <= now,
            )
            return [CallbackTask.from_row(row) for row in session.scalars(query)]

        return await self._reads(orm_unit(due))

    async def requested_since(self, since: datetime) -> Sequence[CallbackTask]:
        since = utc(since)

        def since_then(session: Session) -> list[CallbackTask]:
            query = select(CallbackRow).where(
                CallbackRow.kind == CALLBACK, CallbackRow.requested_at >= since
            )
            return [CallbackTask.from_row(row) for row in session.scalars(query)]

        return await self._reads(orm_unit(since_then))


def _new_task(
    session: Session, kind: str, ticket: str, digits: str, name: str, at: datetime
) -> CallbackTask:
    """A task due now: a callback for one missed call, or a visit (no missed call)."""
    row = CallbackRow(
        kind=kind,
        ticket=ticket,
        caller_number=digits,
        caller_name=name[:128],
        status=CallbackStatus.DUE.value,
        missed_calls=1 if kind == CALLBACK else 0,
        requested_at=at,
        last_missed_at=at,
        attempts=0,
    )
    session.add(row)
    session.flush()
    return CallbackTask.from_row(row)


def _waiting_again(row: CallbackRow, outcome: str) -> None:
    """An attempt that came to nothing: due again, as a retry when it had attempts before
    (due at once: its spacing began before this attempt)."""
    row.status = CallbackStatus.RETRY.value if row.attempts else CallbackStatus.DUE.value
    if row.attempts:
        row.next_attempt_at = row.dialling_since
    row.dialling_since = None
    row.last_outcome = outcome[:24]


def _locked(session: Session, task_id: int) -> CallbackRow:
    row = session.scalar(select(CallbackRow).where(CallbackRow.id == task_id).with_for_update())
    if row is None:
        raise CallbackError(f"no callback {task_id}")
    return row
