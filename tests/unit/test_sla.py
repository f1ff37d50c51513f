"""SLA clocks of a work order: working-day deadlines on the Chinese calendar and clock states.

The 2026 dates below come from the installed chinese-calendar data (State Council arrangement);
`test_package_data_matches_the_dates_these_tests_rely_on` pins them, so a data change fails there
first instead of surfacing as a puzzling deadline mismatch.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickets import sla
from tickets.sla import (
    CalendarError,
    ClockName,
    ClockState,
    SlaPolicy,
    SlaReport,
    TicketClockFacts,
    WorkingCalendar,
    clock_on_time_rates,
    on_time_rate,
    resolution_deadline,
    sla_report,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICIAL = WorkingCalendar()
POLICY = SlaPolicy()
UNCOVERED_YEAR = 2099  # far beyond any published arrangement


def local(*parts: int) -> datetime:
    """A wall-clock moment in the hotline's zone."""
    return datetime(*parts, tzinfo=SHANGHAI)


def local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=SHANGHAI)


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which uncovered years were already reported, so a test sees its own warnings."""
    monkeypatch.setattr(sla, "_warned_years", set())


# --- the package data the calendar tests stand on -------------------------------------------


@pytest.mark.parametrize(
    ("day", "detail"),
    [
        (date(2026, 2, 13), (False, None)),  # Friday before Spring Festival
        (date(2026, 2, 14), (False, "Spring Festival")),  # make-up working Saturday
        (date(2026, 2, 15), (True, "Spring Festival")),
        (date(2026, 2, 23), (True, "Spring Festival")),  # last day off
        (date(2026, 2, 24), (False, None)),
        (date(2026, 2, 28), (False, "Spring Festival")),  # make-up working Saturday
        (date(2026, 4, 3), (False, None)),  # Friday before Tomb-sweeping Day
        (date(2026, 4, 4), (True, "Tomb-sweeping Day")),
        (date(2026, 4, 6), (True, "Tomb-sweeping Day")),
        (date(2026, 9, 20), (False, "National Day")),  # make-up working Sunday
        (date(2026, 9, 25), (True, "Mid-autumn Festival")),
        (date(2026, 9, 27), (True, "Mid-autumn Festival")),
        (date(2026, 10, 1), (True, "National Day")),
        (date(2026, 10, 7), (True, "National Day")),
        (date(2026, 10, 10), (False, "National Day")),  # make-up working Saturday
        (date(2026, 3, 7), (True, None)),  # plain Saturday
    ],
)
def test_package_data_matches_the_dates_these_tests_rely_on(
    day: date, detail: tuple[bool, str | None]
) -> None:
    assert chinese_calendar.get_holiday_detail(day) == detail


# --- working calendar ------------------------------------------------------------------------


def test_make_up_working_days_count_and_holidays_do_not() -> None:
    assert OFFICIAL.is_working_day(date(2026, 2, 14))  # Saturday, 调休
    assert OFFICIAL.is_working_day(date(2026, 9, 20))  # Sunday, 调休
    assert OFFICIAL.is_working_day(date(2026, 10, 10))  # Saturday, 调休
    assert not OFFICIAL.is_working_day(date(2026, 10, 5))  # Monday in the Golden Week
    assert not OFFICIAL.is_working_day(date(2026, 9, 25))  # Friday, Mid-Autumn
    assert not OFFICIAL.is_working_day(date(2026, 3, 7))  # plain Saturday
    assert OFFICIAL.is_working_day(date(2026, 3, 6))  # plain Friday


def test_plain_calendar_ignores_statutory_days() -> None:
    plain = WorkingCalendar(use_official=False)
    assert not plain.is_working_day(date(2026, 2, 14))  # Saturday stays off
    assert plain.is_working_day(date(2026, 10, 5))  # Monday stays on
    assert not plain.covers(2026)


def test_extra_days_override_the_package() -> None:
    calendar = WorkingCalendar(
        extra_holidays=frozenset({date(2026, 3, 6)}),  # an ordinary Friday off
        extra_workdays=frozenset({date(2026, 10, 5)}),  # a Golden Week Monday on duty
    )
    assert not calendar.is_working_day(date(2026, 3, 6))
    assert calendar.is_working_day(date(2026, 10, 5))
    assert calendar.is_working_day(date(2026, 3, 5))  # untouched days still follow the package
    assert not calendar.is_working_day(date(2026, 10, 6))


def test_extra_days_move_the_resolution_deadline() -> None:
    opened = local(2026, 3, 4, 10, 0)  # Wednesday
    base = resolution_deadline(opened, 2, OFFICIAL, SHANGHAI)
    assert base == local_midnight(date(2026, 3, 7))  # Thu + Fri
    day_off = WorkingCalendar(extra_holidays=frozenset({date(2026, 3, 6)}))
    assert resolution_deadline(opened, 2, day_off, SHANGHAI) == local_midnight(date(2026, 3, 10))
    saturday_on = WorkingCalendar(extra_workdays=frozenset({date(2026, 3, 7)}))
    opened_friday = local(2026, 3, 6, 10, 0)
    assert resolution_deadline(opened_friday, 1, saturday_on, SHANGHAI) == local_midnight(
        date(2026, 3, 8)
    )


def test_a_day_both_extra_holiday_and_extra_workday_is_rejected() -> None:
    clash = date(2026, 5, 6)
    with pytest.raises(CalendarError, match="2026-05-06"):
        WorkingCalendar(
            extra_holidays=frozenset({clash, date(2026, 5, 7)}),
            extra_workdays=frozenset({clash}),
        )


def test_calendar_error_is_a_value_error_and_datetimes_are_not_days() -> None:
    with pytest.raises(ValueError, match="extra_workdays must hold dates"):
        WorkingCalendar(extra_workdays=frozenset({datetime(2026, 5, 9, tzinfo=UTC)}))


def test_configured_days_from_plain_sets_keep_the_calendar_hashable() -> None:
    calendar = WorkingCalendar(extra_holidays={date(2026, 3, 6)})  # type: ignore[arg-type]
    assert isinstance(calendar.extra_holidays, frozenset)
    assert hash(calendar) == hash(WorkingCalendar(extra_holidays=frozenset({date(2026, 3, 6)})))


def test_coverage_follows_the_installed_data() -> None:
    assert OFFICIAL.covers(2026)
    assert OFFICIAL.covers(2004)
    assert not OFFICIAL.covers(2003)
    assert not OFFICIAL.covers(UNCOVERED_YEAR)


def test_uncovered_year_falls_back_to_weekdays_with_one_warning(
    fresh_warnings: None, caplog: pytest.LogCaptureFixture
) -> None:
    calendar = WorkingCalendar(extra_holidays=frozenset({date(UNCOVERED_YEAR, 10, 1)}))
    start = date(UNCOVERED_YEAR, 9, 28)
    with caplog.at_level(logging.WARNING, logger=sla.__name__):
        days = [start + timedelta(days=offset) for offset in range(14)]
        answers = [calendar.is_working_day(day) for day in days]
        calendar.is_working_day(date(UNCOVERED_YEAR, 1, 1))  # same year again: no new warning
    expected = [day.weekday() < 5 and day != date(UNCOVERED_YEAR, 10, 1) for day in days]
    assert answers == expected
    assert answers.count(True) == 9  # two weeks of Mon-Fri minus the configured holiday
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(UNCOVERED_YEAR) in warnings[0].getMessage()
    assert warnings[0].name == "tickets.sla"


def test_each_uncovered_year_warns_once(
    fresh_warnings: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=sla.__name__):
        for year in (UNCOVERED_YEAR, UNCOVERED_YEAR + 1, UNCOVERED_YEAR, 2003, 2003):
            OFFICIAL.is_working_day(date(year, 6, 1))
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    for year in (UNCOVERED_YEAR, UNCOVERED_YEAR + 1, 2003):
        assert sum(str(year) in message for message in messages) == 1


def test_covered_year_and_plain_calendar_do_not_warn(
    fresh_warnings: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=sla.__name__):
        OFFICIAL.is_working_day(date(2026, 10, 1))
        WorkingCalendar(use_official=False).is_working_day(date(UNCOVERED_YEAR, 6, 1))
    assert caplog.records == []


def test_deadline_into_an_uncovered_year_does_not_raise(fresh_warnings: None) -> None:
    opened = local(UNCOVERED_YEAR, 12, 31, 16, 0)  # Thursday
    deadline = resolution_deadline(opened, 2, OFFICIAL, SHANGHAI)
    # Friday 2100-01-01 and Monday 2100-01-04 count: no holiday data for either year.
    assert deadline == local_midnight(date(UNCOVERED_YEAR + 1, 1, 5))


# --- resolution deadline ----------------------------------------------------------------------


def test_friday_afternoon_before_spring_festival() -> None:
    opened = local(2026, 2, 13, 15, 40)
    deadline = resolution_deadline(opened, 2, OFFICIAL, SHANGHAI)
    # Sat 14 is a make-up working day (1), Sun 15 - Mon 23 off, Tue 24 is day 2.
    assert deadline == local_midnight(date(2026, 2, 25))


def test_friday_afternoon_before_tomb_sweeping_day() -> None:
    opened = local(2026, 4, 3, 16, 5)
    deadline = resolution_deadline(opened, 2, OFFICIAL, SHANGHAI)
    # Sat 4 - Mon 6 off; Tue 7 and Wed 8 count.
    assert deadline == local_midnight(date(2026, 4, 9))


def test_afternoon_before_mid_autumn_and_before_national_day() -> None:
    # Thursday before Mid-Autumn (Fri 25 - Sun 27 off): Mon 28 and Tue 29 count.
    assert resolution_deadline(local(2026, 9, 24, 15, 0), 2, OFFICIAL, SHANGHAI) == (
        local_midnight(date(2026, 9, 30))
    )
    # Last day before the Golden Week (Oct 1-7 off): Thu 8 and Fri 9 count, then make-up Sat 10.
    assert resolution_deadline(local(2026, 9, 30, 17, 0), 2, OFFICIAL, SHANGHAI) == (
        local_midnight(date(2026, 10, 10))
    )
    assert resolution_deadline(local(2026, 9, 30, 17, 0), 3, OFFICIAL, SHANGHAI) == (
        local_midnight(date(2026, 10, 11))
    )


def test_make_up_weekend_days_count_towards_the_deadline() -> None:
    # Friday Sep 18: Sat 19 off, Sun 20 is a make-up working day, Mon 21 second.
    friday = local(2026, 9, 18, 14, 0)
    assert resolution_deadline(friday, 2, OFFICIAL, SHANGHAI) == local_midnight(date(2026, 9, 22))
    # Thursday Oct 8: Fri 9, then the make-up Saturday Oct 10.
    thursday = local(2026, 10, 8, 9, 0)
    assert resolution_deadline(thursday, 2, OFFICIAL, SHANGHAI) == local_midnight(
        date(2026, 10, 11)
    )
    # The same Thursday on a plain calendar waits for Monday.
    plain = WorkingCalendar(use_official=False)
    assert resolution_deadline(thursday, 2, plain, SHANGHAI) == local_midnight(date(2026, 10, 13))


def test_ticket_opened_on_a_saturday_or_holiday() -> None:
    saturday = local(2026, 3, 7, 11, 0)
    assert resolution_deadline(saturday, 2, OFFICIAL, SHANGHAI) == local_midnight(date(2026, 3, 11))
    golden_week = local(2026, 10, 3, 11, 0)  # Saturday inside National Day
    assert resolution_deadline(golden_week, 2, OFFICIAL, SHANGHAI) == local_midnight(
        date(2026, 10, 10)
    )
    # Opened on the make-up Saturday itself: that day does not count, the next ones do.
    make_up = local(2026, 2, 14, 9, 0)
    assert resolution_deadline(make_up, 1, OFFICIAL, SHANGHAI) == local_midnight(date(2026, 2, 25))


def test_deadline_uses_the_local_date_and_returns_utc() -> None:
    # 17:30 UTC on Thursday Mar 5 is already 01:30 on Friday Mar 6 in Shanghai.
    opened = datetime(2026, 3, 5, 17, 30, tzinfo=UTC)
    deadline = resolution_deadline(opened, 2, OFFICIAL, SHANGHAI)
    assert deadline.tzinfo is UTC
    assert deadline == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)  # Wed Mar 11 00:00 local
    assert deadline.astimezone(SHANGHAI) == local_midnight(date(2026, 3, 11))
    # Counted on UTC dates it would end a day earlier: the zone matters.
    assert resolution_deadline(opened, 2, OFFICIAL, ZoneInfo("UTC")) == datetime(
        2026, 3, 10, 0, 0, tzinfo=UTC
    )


def test_deadline_rejects_naive_time_and_zero_days() -> None:
    with pytest.raises(ValueError, match="opened_at must be a timezone-aware"):
        resolution_deadline(datetime(2026, 3, 5, 9, 0), 2, OFFICIAL, SHANGHAI)
    with pytest.raises(ValueError, match="working_days"):
        resolution_deadline(local(2026, 3, 5, 9, 0), 0, OFFICIAL, SHANGHAI)


_DAY_WINDOW = st.dates(min_value=date(2025, 12, 1), max_value=date(2026, 12, 31))


@settings(max_examples=300, deadline=None)
@given(
    opened_at=st.datetimes(
        min_value=datetime(2004, 1, 1),
        max_value=datetime(2027, 12, 31),
        timezones=st.sampled_from([UTC, SHANGHAI, ZoneInfo("America/New_York")]),
    ),
    working_days=st.integers(min_value=1, max_value=15),
    zone=st.sampled_from([SHANGHAI, ZoneInfo("UTC"), ZoneInfo("Europe/Berlin")]),
    use_official=st.booleans(),
    holidays=st.frozensets(_DAY_WINDOW, max_size=20),
    workdays=st.frozensets(_DAY_WINDOW, max_size=20),
)
def test_deadline_is_after_opening_and_spans_exactly_n_working_days(
    opened_at: datetime,
    working_days: int,
    zone: ZoneInfo,
    use_official: bool,
    holidays: frozenset[date],
    workdays: frozenset[date],
) -> None:
    calendar = WorkingCalendar(
        extra_holidays=holidays - workdays, extra_workdays=workdays, use_official=use_official
    )
    deadline = resolution_deadline(opened_at, working_days, calendar, zone)
    assert deadline.tzinfo is UTC
    assert deadline > opened_at
    local_deadline = deadline.astimezone(zone)
    assert local_deadline.time().isoformat() == "00:00:00"
    opening_day = opened_at.astimezone(zone).date()
    deadline_day = local_deadline.date() - timedelta(days=1)  # the day the deadline ends
    assert calendar.is_working_day(deadline_day)
    span = (deadline_day - opening_day).days
    between = [opening_day + timedelta(days=offset) for offset in range(1, span + 1)]
    assert sum(calendar.is_working_day(day) for day in between) == working_days


# --- clocks -------------------------------------------------------------------------------------

OPENED = local(2026, 3, 4, 10, 0)  # Wednesday; resolve due Sat Mar 7 00:00 local


def report_for(now: datetime, **facts: object) -> SlaReport:
    return sla_report(
        TicketClockFacts(opened_at=OPENED, **facts),  # type: ignore[arg-type]
        now,
        POLICY,
        OFFICIAL,
        SHANGHAI,
    )


def state_of(report: SlaReport, name: ClockName) -> ClockState:
    clock = report.clock(name)
    assert clock is not None, f"no {name} clock"
    return clock.state


def test_policy_defaults_are_the_city_promises() -> None:
    assert POLICY.contact_within == timedelta(minutes=30)
    assert POLICY.on_site_within == timedelta(hours=1)
    assert POLICY.resolve_working_days == 2
    assert POLICY.callback_within == timedelta(minutes=30)


@pytest.mark.parametrize(
    "bad",
    [
        {"contact_within": timedelta(0)},
        {"on_site_within": timedelta(minutes=-5)},
        {"callback_within": timedelta(0)},
        {"resolve_working_days": 0},
    ],
)
def test_policy_rejects_promises_that_cannot_be_kept(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SlaPolicy(**bad)  # type: ignore[arg-type]


def test_contact_clock_met_missed_running_overdue() -> None:
    due = OPENED + timedelta(minutes=30)
    met = report_for(OPENED + timedelta(hours=2), contacted_at=due)  # exactly on the deadline
    missed = report_for(OPENED + timedelta(hours=2), contacted_at=due + timedelta(seconds=1))
    running = report_for(OPENED + timedelta(minutes=29))
    at_due = report_for(due)
    overdue = report_for(due + timedelta(seconds=1))
    assert state_of(met, ClockName.CONTACT) is ClockState.MET
    assert state_of(missed, ClockName.CONTACT) is ClockState.MISSED
    assert state_of(running, ClockName.CONTACT) is ClockState.RUNNING
    assert state_of(at_due, ClockName.CONTACT) is ClockState.RUNNING
    assert state_of(overdue, ClockName.CONTACT) is ClockState.OVERDUE
    contact = met.clock(ClockName.CONTACT)
    assert contact is not None
    assert (contact.due, contact.done_at) == (due, due)


def test_on_site_clock_only_for_emergencies() -> None:
    now = OPENED + timedelta(hours=3)
    ordinary = report_for(now, on_site_at=OPENED + timedelta(minutes=10))
    assert ordinary.clock(ClockName.ON_SITE) is None
    assert [clock.name for clock in ordinary.clocks] == [ClockName.CONTACT, ClockName.RESOLVE]

    met = report_for(now, emergency=True, on_site_at=OPENED + timedelta(minutes=55))
    missed = report_for(now, emergency=True, on_site_at=OPENED + timedelta(minutes=61))
    running = report_for(OPENED + timedelta(minutes=45), emergency=True)
    overdue = report_for(now, emergency=True)
    assert [clock.name for clock in met.clocks] == [
        ClockName.CONTACT,
        ClockName.ON_SITE,
        ClockName.RESOLVE,
    ]
    assert state_of(met, ClockName.ON_SITE) is ClockState.MET
    assert state_of(missed, ClockName.ON_SITE) is ClockState.MISSED
    assert state_of(running, ClockName.ON_SITE) is ClockState.RUNNING
    assert state_of(overdue, ClockName.ON_SITE) is ClockState.OVERDUE


def test_callback_clock_runs_from_the_abandon() -> None:
    abandoned = OPENED + timedelta(hours=1)
    now = abandoned + timedelta(hours=1)
    assert report_for(now).clock(ClockName.CALLBACK) is None
    met = report_for(
        now, callback_requested_at=abandoned, called_back_at=abandoned + timedelta(minutes=30)
    )
    missed = report_for(
        now, callback_requested_at=abandoned, called_back_at=abandoned + timedelta(minutes=31)
    )
    running = report_for(abandoned + timedelta(minutes=5), callback_requested_at=abandoned)
    overdue = report_for(now, callback_requested_at=abandoned)
    callback = met.clock(ClockName.CALLBACK)
    assert callback is not None
    assert callback.due == abandoned + timedelta(minutes=30)
    assert met.clocks[-1] is callback
    assert callback.state is ClockState.MET
    assert state_of(missed, ClockName.CALLBACK) is ClockState.MISSED
    assert state_of(running, ClockName.CALLBACK) is ClockState.RUNNING
    assert state_of(overdue, ClockName.CALLBACK) is ClockState.OVERDUE


def test_resolve_clock_uses_working_days_and_reports_in_utc() -> None:
    friday = local(2026, 2, 13, 15, 40)
    facts = TicketClockFacts(opened_at=friday, contacted_at=friday + timedelta(minutes=5))
    due = datetime(2026, 2, 24, 16, 0, tzinfo=UTC)  # Wed Feb 25 00:00 in Shanghai
    early = sla_report(facts, local(2026, 2, 24, 23, 59), POLICY, OFFICIAL, SHANGHAI)
    late = sla_report(facts, local(2026, 2, 25, 0, 1), POLICY, OFFICIAL, SHANGHAI)
    resolve = early.clock(ClockName.RESOLVE)
    assert resolve is not None
    assert resolve.due == due
    assert resolve.due.tzinfo is UTC
    assert resolve.state is ClockState.RUNNING
    assert state_of(late, ClockName.RESOLVE) is ClockState.OVERDUE
    longer = sla_report(
        facts, local(2026, 2, 25, 0, 1), SlaPolicy(resolve_working_days=3), OFFICIAL, SHANGHAI
    )
    assert state_of(longer, ClockName.RESOLVE) is ClockState.RUNNING


def test_configured_durations_are_used() -> None:
    policy = SlaPolicy(
        contact_within=timedelta(minutes=10),
        on_site_within=timedelta(minutes=20),
        callback_within=timedelta(minutes=5),
    )
    facts = TicketClockFacts(opened_at=OPENED, emergency=True, callback_requested_at=OPENED)
    report = sla_report(facts, OPENED, policy, OFFICIAL, SHANGHAI)
    dues = {clock.name: clock.due - OPENED for clock in report.clocks}
    assert dues[ClockName.CONTACT] == timedelta(minutes=10)
    assert dues[ClockName.ON_SITE] == timedelta(minutes=20)
    assert dues[ClockName.CALLBACK] == timedelta(minutes=5)


def test_on_time_verdict() -> None:
    done = OPENED + timedelta(minutes=20)
    kept = report_for(OPENED + timedelta(days=5), contacted_at=done, resolved_at=done)
    still_open = report_for(OPENED + timedelta(minutes=20), contacted_at=done)
    late_contact = report_for(OPENED + timedelta(minutes=40))  # resolve still running
    missed_resolve = report_for(
        OPENED + timedelta(days=5), contacted_at=done, resolved_at=local(2026, 3, 7, 0, 0, 1)
    )
    assert kept.on_time is True
    assert still_open.on_time is None
    assert late_contact.on_time is False
    assert missed_resolve.on_time is False
    assert SlaReport(clocks=()).on_time is None


def test_on_time_rate_over_a_mix() -> None:
    done = OPENED + timedelta(minutes=20)
    later = OPENED + timedelta(days=5)
    kept = report_for(later, contacted_at=done, resolved_at=done)
    kept_emergency = report_for(
        later, emergency=True, contacted_at=done, on_site_at=done, resolved_at=done
    )
    late_on_site = report_for(later, emergency=True, contacted_at=done, resolved_at=done)
    still_open = report_for(OPENED + timedelta(minutes=10))
    assert on_time_rate([kept, kept_emergency, late_on_site, still_open]) == pytest.approx(2 / 3)
    assert on_time_rate([still_open]) is None
    assert on_time_rate([]) is None
    assert on_time_rate(iter([kept, late_on_site])) == pytest.approx(0.5)


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2026, 3, 4, 10, 0)
    with pytest.raises(ValueError, match="opened_at must be a timezone-aware"):
        TicketClockFacts(opened_at=naive)
    with pytest.raises(ValueError, match="resolved_at must be a timezone-aware"):
        TicketClockFacts(opened_at=OPENED, resolved_at=naive)
    with pytest.raises(ValueError, match="now must be a timezone-aware"):
        sla_report(TicketClockFacts(opened_at=OPENED), naive, POLICY, OFFICIAL, SHANGHAI)


def test_call_back_without_a_request_runs_no_callback_clock() -> None:
    report = report_for(OPENED + timedelta(days=5), called_back_at=OPENED + timedelta(minutes=1))
    assert report.clock(ClockName.CALLBACK) is None
    assert [clock.name for clock in report.clocks] == [ClockName.CONTACT, ClockName.RESOLVE]


def test_each_clock_has_its_on_time_rate_and_the_callback_clocks_is_the_callback_rate() -> None:
    opened = local(2026, 11, 25, 10, 0)
    now = local(2026, 11, 25, 16, 0)
    called_in_time = TicketClockFacts(
        opened, contacted_at=opened + timedelta(minutes=5),
        callback_requested_at=opened, called_back_at=opened + timedelta(minutes=20),
    )  # fmt: skip
    called_late = TicketClockFacts(
        opened, contacted_at=opened + timedelta(minutes=50),
        callback_requested_at=opened, called_back_at=opened + timedelta(minutes=45),
    )  # fmt: skip
    never_called = TicketClockFacts(opened, callback_requested_at=opened)  # overdue by now
    rates = clock_on_time_rates(
        sla_report(facts, now, POLICY, OFFICIAL, SHANGHAI)
        for facts in (called_in_time, called_late, never_called)
    )
    assert rates["callback"] == pytest.approx(1 / 3)
    assert rates["contact"] == pytest.approx(1 / 3)  # 5 min met, 50 min missed, one overdue
    assert rates["resolve"] is None  # still running: nothing settled
