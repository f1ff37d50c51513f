"""Ticket life cycle and numbers: pure rules, no storage.

The status table is the single source of allowed moves (as h11 keeps its states); a move it does
not allow raises ``TicketTransitionError`` for the shell to report, never a silent change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo


class TicketStatus(StrEnum):
    NEW = "new"
    SIGNED = "signed"
    CONTACTED = "contacted"
    ON_SITE = "on_site"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"
    CALLBACK = "callback"
    """The caller hung up before anyone answered: someone must call them back."""


OPEN_STATUSES = frozenset(
    {
        TicketStatus.NEW,
        TicketStatus.SIGNED,
        TicketStatus.CONTACTED,
        TicketStatus.ON_SITE,
        TicketStatus.REOPENED,
        TicketStatus.CALLBACK,
    }
)

ALLOWED_MOVES: dict[TicketStatus, frozenset[TicketStatus]] = {
    TicketStatus.NEW: frozenset({TicketStatus.SIGNED, TicketStatus.CALLBACK}),
    TicketStatus.CALLBACK: frozenset({TicketStatus.SIGNED, TicketStatus.CONTACTED}),
    TicketStatus.SIGNED: frozenset({TicketStatus.CONTACTED}),
    TicketStatus.CONTACTED: frozenset({TicketStatus.ON_SITE, TicketStatus.RESOLVED}),
    TicketStatus.ON_SITE: frozenset({TicketStatus.RESOLVED}),
    TicketStatus.RESOLVED: frozenset({TicketStatus.CLOSED, TicketStatus.REOPENED}),
    TicketStatus.CLOSED: frozenset({TicketStatus.REOPENED}),
    TicketStatus.REOPENED: frozenset(
        {TicketStatus.SIGNED, TicketStatus.CONTACTED, TicketStatus.CALLBACK}
    ),
}

# The timestamp a move sets the first time it happens.
_STAMPED_BY: dict[TicketStatus, str] = {
    TicketStatus.SIGNED: "signed_at",
    TicketStatus.CONTACTED: "contacted_at",
    TicketStatus.ON_SITE: "on_site_at",
    TicketStatus.RESOLVED: "resolved_at",
    TicketStatus.CLOSED: "closed_at",
    TicketStatus.CALLBACK: "callback_requested_at",
}


class TicketError(ValueError):
    """A ticket operation that cannot be done (unknown ticket, bad field value)."""


class TicketTransitionError(TicketError):
    def __init__(self, current: TicketStatus, wanted: TicketStatus) -> None:
        allowed = ", ".join(sorted(ALLOWED_MOVES[current])) or "none"
        super().__init__(f"a {current} ticket cannot become {wanted} (allowed: {allowed})")
        self.current = current
        self.wanted = wanted


def move(
    current: TicketStatus, wanted: TicketStatus, at: datetime, stamped: dict[str, datetime | None]
) -> dict[str, object]:
    """The column changes for ``current -> wanted`` at ``at``; raises if the table forbids it.

    ``stamped`` holds the ticket's existing timestamps: a first time is never overwritten, so
    an SLA clock measures the first contact, not the latest. Contacting a callback ticket is the
    call back, so it also stamps ``called_back_at``; reopening clears the resolution.
    """
    if wanted not in ALLOWED_MOVES[current]:
        raise TicketTransitionError(current, wanted)
    changes: dict[str, object] = {"status": wanted.value, "updated_at": at}
    column = _STAMPED_BY.get(wanted)
    if column is not None and (stamped.get(column) is None or wanted is TicketStatus.CALLBACK):
        changes[column] = at
    if current is TicketStatus.CALLBACK and wanted is TicketStatus.CONTACTED:
        changes["called_back_at"] = at
    if wanted is TicketStatus.CALLBACK:
        changes["called_back_at"] = None
    if wanted is TicketStatus.REOPENED:
        changes["resolved_at"] = None
        changes["closed_at"] = None
    return changes


_NUMBER = re.compile(r"^(?P<prefix>[0-9A-Za-z]{1,16})-(?P<day>\d{8})-(?P<serial>\d{6,})$")


@dataclass(frozen=True, slots=True)
class TicketNumber:
    """``12345-20261125-000123``: hotline, local opening day, serial of that day."""

    prefix: str
    day: str
    serial: int

    def __str__(self) -> str:
        return f"{self.prefix}-{self.day}-{self.serial:06d}"

    @classmethod
    def parse(cls, text: str) -> TicketNumber:
        match = _NUMBER.match(text.strip())
        if match is None:
            raise TicketError(f"not a ticket number: {text[:40]!r}")
        return cls(match["prefix"], match["day"], int(match["serial"]))


def ticket_day(at: datetime, zone: ZoneInfo) -> str:
    """The local calendar day a ticket opened on, as its number shows it."""
    if at.tzinfo is None:
        raise ValueError("ticket times must be timezone-aware")
    return at.astimezone(zone).strftime("%Y%m%d")
