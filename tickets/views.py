"""Tickets as people read them: local times, the SLA verdict, one JSON shape for CLI and web."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row

from queue_stats.journal import CallRow
from tickets.sla import SlaReport
from tickets.store import Ticket


def local_time(at: datetime | None, zone: Any) -> str:
    return "" if at is None else at.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def sla_verdict(report: SlaReport) -> str:
    if report.on_time is None:
        return "running"
    if report.on_time:
        return "on time"
    late = [c.name.value for c in report.clocks if c.state.value in ("missed", "overdue")]
    return "late: " + ",".join(late)


def ticket_json(ticket: Ticket, report: SlaReport, zone: Any) -> dict[str, Any]:
    return {
        "number": ticket.number,
        "status": ticket.status.value,
        "caller_number": ticket.caller_number,
        "caller_name": ticket.caller_name,
        "category": ticket.category,
        "description": ticket.description,
        "owner_agent": ticket.owner_agent,
        "department": ticket.department,
        "emergency": ticket.emergency,
        "satisfaction": ticket.satisfaction,
        "rating": (
            {
                "code": ticket.rating,
                "agent": ticket.rated_agent,
                "call": ticket.rated_call,
                "at": local_time(ticket.rated_at, zone),
                "to_review": ticket.awaits_review,
            }
            if ticket.rating
            else None
        ),
        "visit": (
            {
                "code": ticket.visit_rating,
                "agent": ticket.visit_agent,
                "at": local_time(ticket.visit_rated_at, zone),
            }
            if ticket.visit_rating
            else None
        ),
        "opened_at": local_time(ticket.opened_at, zone),
        "signed_at": local_time(ticket.signed_at, zone) or None,
        "on_time": report.on_time,
        "clocks": [
            {
                "name": clock.name.value,
                "due": local_time(clock.due, zone),
                "done_at": local_time(clock.done_at, zone) or None,
                "state": clock.state.value,
            }
            for clock in report.clocks
        ],
    }


def call_json(call: CallRow | Row[Any], zone: Any) -> dict[str, Any]:
    """A journal row (ORM object or plain row) as the CLI and the panel show it."""
    return {
        "uniqueid": call.uniqueid,
        "started_at": local_time(call.started_at, zone),
        "caller_number": call.caller_number,
        "caller_name": call.caller_name,
        "outcome": call.outcome,
        "queue": call.queue,
        "agent": call.agent_interface,
        "hold_seconds": call.hold_seconds,
        "talk_seconds": call.talk_seconds,
        "ticket": call.ticket,
        "rating": call.rating,
    }
