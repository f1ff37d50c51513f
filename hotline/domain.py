"""Domain objects built from the settings: routing rules, SLA policy, working calendar.

Kept apart from ``hotline.service`` so light entry points (the classic ``hotline-agi`` script,
which Asterisk starts once per call) do not import the whole service.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from infra.config import Settings
from infra.storage import Transactions, session_factory
from ivr_bypass.decision import RoutingRules
from ivr_bypass.directory import EnterpriseDirectory
from ivr_bypass.router import FreeAgents, Router
from tickets.sla import SlaPolicy, WorkingCalendar
from tickets.store import TicketStore


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


def build_router(
    settings: Settings,
    engine: AsyncEngine,
    units: Transactions,
    free_agents: FreeAgents,
    clock: Callable[[], datetime],
) -> Router:
    """The routing decision with its data, as every routing entry point uses it."""
    sessions = session_factory(engine)
    return Router(
        routing_rules(settings),
        units,
        TicketStore(sessions, settings.zone, settings.ticket_prefix, units),
        EnterpriseDirectory(sessions),
        free_agents,
        match_days=settings.ticket_match_days,
        clock=clock,
    )
