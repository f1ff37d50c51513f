"""Domain objects built from the settings: routing rules, SLA policy, working calendar.

Kept apart from ``hotline.service`` so light entry points (the classic ``hotline-agi`` script,
which Asterisk starts once per call) do not import the whole service.
"""

from __future__ import annotations

from datetime import timedelta

from hotline.config import Settings
from ivr_bypass.decision import RoutingRules
from tickets.sla import SlaPolicy, WorkingCalendar


def routing_rules(settings: Settings) -> RoutingRules:
    return RoutingRules(
        default_queue=settings.default_queue,
        enterprise_queue=settings.enterprise_queue,
        emergency_queue=settings.emergency_queue,
        emergency_numbers=frozenset(settings.emergency_numbers),
    )


def sla_policy(settings: Settings) -> SlaPolicy:
    return SlaPolicy(
        contact_within=timedelta(minutes=settings.sla_contact_minutes),
        on_site_within=timedelta(minutes=settings.sla_on_site_minutes),
        resolve_working_days=settings.sla_resolve_working_days,
        callback_within=timedelta(minutes=settings.sla_callback_minutes),
    )


def working_calendar(settings: Settings) -> WorkingCalendar:
    return WorkingCalendar(
        extra_holidays=frozenset(settings.calendar_extra_holidays),
        extra_workdays=frozenset(settings.calendar_extra_workdays),
        use_official=settings.calendar_official,
    )
