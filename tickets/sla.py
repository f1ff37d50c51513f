"""Service-level clocks of a 12345 work order, on the Chinese working calendar.

The city promises: the caller is contacted within 30 minutes of the ticket opening, an emergency
gets someone on site within an hour, every ticket is resolved within 2 working days, and an
abandoned caller is called back within 30 minutes. This module only computes deadlines and clock
states from facts the ticket store already holds; it does no I/O (besides a logger warning), so the
same answer comes out in the router, the agent desktop and the monthly report.

The working calendar comes from the ``chinese-calendar`` package (statutory holidays and make-up
working days, "调休"). Its data ends at some year; past that the calendar degrades to Monday-Friday
with a warning rather than failing, because a missing holiday table must never stop a call from
being routed or a ticket from being opened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cache
from zoneinfo import ZoneInfo

import chinese_calendar

__all__ = [
    "CalendarError",
    "Clock",
    "ClockName",
    "ClockState",
    "SlaPolicy",
    "SlaReport",
    "TicketClockFacts",
    "WorkingCalendar",
    "on_time_rate",
    "resolution_deadline",
    "sla_report",
]

logger = logging.getLogger(__name__)

_ONE_DAY = timedelta(days=1)

# Years for which the "no official data" warning was already logged. Process-wide on purpose:
# the gap is in the installed package, not in one calendar object, and a calendar may be rebuilt
# from settings on every request.
_warned_years: set[int] = set()
_warned_lock = threading.Lock()


class CalendarError(ValueError):
    """The configured working calendar contradicts itself."""


@cache
def _official_data_for(year: int) -> bool:
    """Whether the installed chinese-calendar knows the statutory holidays of `year`."""
    try:
        chinese_calendar.is_workday(date(year, 1, 1))
    except NotImplementedError:
        return False
    return True


def _warn_once_uncovered(year: int) -> None:
    with _warned_lock:
        if year in _warned_years:
            return
        _warned_years.add(year)
    logger.warning(
        "chinese-calendar has no statutory holiday data for %d; counting Monday-Friday plus the "
        "configured extra days for that year (configure extra_holidays/extra_workdays or "
        "upgrade chinese-calendar)",
        year,
    )


def _check_days(name: str, days: frozenset[date]) -> None:
    for day in days:
        # datetime is a subclass of date but never equals one, so it would silently never match.
        if not isinstance(day, date) or isinstance(day, datetime):
            raise CalendarError(f"{name} must hold dates, got {day!r}")


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    """Chinese working calendar; explicit extra days win over the package's data.

    Extra days let the centre follow a local decision (or next year's holidays announced before
    the package is upgraded) without a code change.
    """

    extra_holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()
    use_official: bool = True  # False: plain Monday-Friday plus the extra days

    def __post_init__(self) -> None:
        # Settings loaders hand over lists or sets; keep the calendar hashable and immutable.
        object.__setattr__(self, "extra_holidays", frozenset(self.extra_holidays))
        object.__setattr__(self, "extra_workdays", frozenset(self.extra_workdays))
        _check_days("extra_holidays", self.extra_holidays)
        _check_days("extra_workdays", self.extra_workdays)
        both = self.extra_holidays & self.extra_workdays
        if both:
            listed = ", ".join(day.isoformat() for day in sorted(both))
            raise CalendarError(
                f"days configured both as extra holiday and extra workday: {listed}"
            )

    def is_working_day(self, day: date) -> bool:
        """Whether the hotline's back office works on `day` (never raises for a missing year)."""
        if isinstance(day, datetime):
            day = day.date()
        if day in self.extra_workdays:
            return True
        if day in self.extra_holidays:
            return False
        if self.use_official:
            if _official_data_for(day.year):
                try:
                    return bool(chinese_calendar.is_workday(day))
                except NotImplementedError:  # pragma: no cover - data ends mid-year
                    pass
            _warn_once_uncovered(day.year)
        return day.weekday() < 5

    def covers(self, year: int) -> bool:
        """Whether this calendar counts `year` with official data (False when use_official is off).

        Lets a dashboard warn that next year's holidays still need configuring.
        """
        return self.use_official and _official_data_for(year)


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")


def _require_positive(name: str, value: timedelta) -> None:
    if value <= timedelta(0):
        raise ValueError(f"{name} must be a positive duration, got {value!r}")


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """The city's promises; each is configurable because districts negotiate their own."""

    contact_within: timedelta = timedelta(minutes=30)
    on_site_within: timedelta = timedelta(hours=1)  # emergencies only
    resolve_working_days: int = 2
    callback_within: timedelta = timedelta(minutes=30)

    def __post_init__(self) -> None:
        _require_positive("contact_within", self.contact_within)
        _require_positive("on_site_within", self.on_site_within)
        _require_positive("callback_within", self.callback_within)
        if self.resolve_working_days < 1:
            raise ValueError(
                f"resolve_working_days must be at least 1, got {self.resolve_working_days}"
            )


def resolution_deadline(
    opened_at: datetime, working_days: int, calendar: WorkingCalendar, zone: ZoneInfo
) -> datetime:
    """Counted from the day after the ticket opens (12345 practice): the deadline is the end
    (next midnight, local time in `zone`) of the Nth working day after the local opening date.
    Returned as an aware datetime in UTC.

    A ticket opened on a Friday evening or a holiday therefore gets its full N working days.
    """
    _require_aware("opened_at", opened_at)
    if working_days < 1:
        raise ValueError(f"working_days must be at least 1, got {working_days}")
    day = opened_at.astimezone(zone).date()
    counted = 0
    while counted < working_days:
        day += _ONE_DAY
        if calendar.is_working_day(day):
            counted += 1
    end_of_day = datetime.combine(day + _ONE_DAY, time.min, tzinfo=zone)
    return end_of_day.astimezone(UTC)


class ClockName(StrEnum):
    """The promises a ticket is measured against."""

    CONTACT = "contact"
    ON_SITE = "on_site"
    RESOLVE = "resolve"
    CALLBACK = "callback"


class ClockState(StrEnum):
    """Where a clock stands at the moment of asking."""

    RUNNING = "running"  # not done, deadline not yet passed
    MET = "met"  # done at or before the deadline
    MISSED = "missed"  # done after the deadline
    OVERDUE = "overdue"  # not done and the deadline has passed


_FAILED = frozenset({ClockState.MISSED, ClockState.OVERDUE})


@dataclass(frozen=True, slots=True)
class TicketClockFacts:
    """What the ticket store knows about a ticket's milestones (all aware datetimes).

    A callback clock exists only once a callback was requested; a stray ``called_back_at``
    without a request promises nothing and is ignored rather than breaking a whole report.
    """

    opened_at: datetime
    emergency: bool = False
    contacted_at: datetime | None = None
    on_site_at: datetime | None = None
    resolved_at: datetime | None = None
    callback_requested_at: datetime | None = None  # when the caller abandoned
    called_back_at: datetime | None = None

    def __post_init__(self) -> None:
        _require_aware("opened_at", self.opened_at)
        for name in (
            "contacted_at",
            "on_site_at",
            "resolved_at",
            "callback_requested_at",
            "called_back_at",
        ):
            value = getattr(self, name)
            if value is not None:
                _require_aware(name, value)


@dataclass(frozen=True, slots=True)
class Clock:
    """One promise: when it is due, when it was kept (if yet) and how it stands."""

    name: ClockName
    due: datetime
    done_at: datetime | None
    state: ClockState


def _clock(name: ClockName, due: datetime, done_at: datetime | None, now: datetime) -> Clock:
    if done_at is not None:
        state = ClockState.MET if done_at <= due else ClockState.MISSED
    else:
        # At the due instant the promise can still be kept, so it is not overdue yet.
        state = ClockState.RUNNING if now <= due else ClockState.OVERDUE
    return Clock(name=name, due=due, done_at=done_at, state=state)


@dataclass(frozen=True, slots=True)
class SlaReport:
    """All clocks of one ticket at one moment."""

    clocks: tuple[Clock, ...]  # contact, on_site (emergencies only), resolve, callback (if any)

    @property
    def on_time(self) -> bool | None:
        """False once any promise failed, True once all were kept, None while still open."""
        states = [clock.state for clock in self.clocks]
        if any(state in _FAILED for state in states):
            return False
        if states and all(state is ClockState.MET for state in states):
            return True
        return None

    def clock(self, name: ClockName) -> Clock | None:
        """The clock called `name`, or None when this ticket does not run it."""
        for clock in self.clocks:
            if clock.name == name:
                return clock
        return None


def sla_report(
    facts: TicketClockFacts,
    now: datetime,
    policy: SlaPolicy,
    calendar: WorkingCalendar,
    zone: ZoneInfo,
) -> SlaReport:
    """Evaluate every clock the ticket runs as of `now`."""
    _require_aware("now", now)
    opened = facts.opened_at
    clocks = [_clock(ClockName.CONTACT, opened + policy.contact_within, facts.contacted_at, now)]
    if facts.emergency:
        clocks.append(
            _clock(ClockName.ON_SITE, opened + policy.on_site_within, facts.on_site_at, now)
        )
    resolve_due = resolution_deadline(opened, policy.resolve_working_days, calendar, zone)
    clocks.append(_clock(ClockName.RESOLVE, resolve_due, facts.resolved_at, now))
    if facts.callback_requested_at is not None:
        callback_due = facts.callback_requested_at + policy.callback_within
        clocks.append(_clock(ClockName.CALLBACK, callback_due, facts.called_back_at, now))
    return SlaReport(clocks=tuple(clocks))


def on_time_rate(reports: Iterable[SlaReport]) -> float | None:
    """Share of settled tickets that kept every promise; None when nothing has settled yet."""
    settled = [report.on_time for report in reports if report.on_time is not None]
    if not settled:
        return None
    return sum(settled) / len(settled)


def clock_on_time_rates(reports: Iterable[SlaReport]) -> dict[str, float | None]:
    """Per clock (contact, on site, resolve, callback): the share of its settled clocks met in
    time; a clock overdue counts as missed. The callback clock's is the callback on-time rate."""
    settled: dict[str, list[bool]] = {name.value: [] for name in ClockName}
    for report in reports:
        for clock in report.clocks:
            if clock.state is not ClockState.RUNNING:
                settled[clock.name.value].append(clock.state is ClockState.MET)
    return {name: (sum(done) / len(done) if done else None) for name, done in settled.items()}
