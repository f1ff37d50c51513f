"""The panel's JSON API under ``/api/v1``: live statistics, tickets and calls.

Agents see only their own calls and recordings (their softphone's interface) and may change only
tickets they own or nobody has signed yet (the one popped up as their phone rings); supervisors
and admins see and change everything. Bad input is a 400 with a message that says what to fix;
an unknown ticket is a 404.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import Connection, Row, select

from hotline.storage import Transactions
from ivr_bypass.decision import normalise_number
from queue_stats.journal import CallRow
from recording.db import Recording, recordings_of
from tickets.model import TicketError, TicketStatus
from tickets.sla import SlaReport
from tickets.store import Ticket, TicketEdit, TicketStore
from tickets.views import call_json, local_time, ticket_json
from web.auth import current_user
from web.errors import json_error
from web.users import HEARS_EVERY_CALL, User

MAX_LIMIT = 500
EDITABLE = ("category", "description", "department", "satisfaction")


def _limit(request: web.Request, default: int = 50) -> int:
    text = request.query.get("limit", str(default))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise json_error(400, f"limit is a number from 1 to {MAX_LIMIT}")
    return int(text)


def _day(request: web.Request, name: str) -> date | None:
    text = request.query.get(name)
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise json_error(400, f"{name} is a day, YYYY-MM-DD") from None


def sees_every_call(user: User) -> bool:
    return user.role in HEARS_EVERY_CALL


def calls_query(
    connection: Connection,
    *,
    agent: str | None,
    since: datetime | None,
    caller_digits: str | None,
    limit: int,
) -> list[Row[Any]]:
    calls = CallRow.__table__.c
    query = (
        select(CallRow.__table__).order_by(calls.started_at.desc(), calls.id.desc()).limit(limit)
    )
    if agent is not None:
        query = query.where(calls.agent_interface == agent)
    if since is not None:
        query = query.where(calls.started_at >= since)
    if caller_digits:
        query = query.where(calls.caller_number == caller_digits)
    return list(connection.execute(query))


@dataclass
class PanelApi:
    """What the API reads from; built by the composition root."""

    tickets: TicketStore
    units: Transactions
    zone: ZoneInfo
    sla: Callable[[Ticket, datetime], SlaReport]
    stats: Callable[[], Awaitable[dict[str, Any] | None]]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/stats", self.get_stats, name="stats")
        app.router.add_get("/api/v1/tickets", self.list_tickets, name="tickets")
        app.router.add_get("/api/v1/tickets/{number}", self.get_ticket, name="ticket")
        app.router.add_patch("/api/v1/tickets/{number}", self.patch_ticket, name="ticket-edit")
        app.router.add_get("/api/v1/calls", self.list_calls, name="calls")

    async def get_stats(self, request: web.Request) -> web.Response:
        snapshot = await self.stats()
        if snapshot is None:
            return web.json_response({"error": "no statistics yet"}, status=503)
        return web.json_response(snapshot, dumps=_dumps)

    async def list_tickets(self, request: web.Request) -> web.Response:
        current_user(request)
        status = request.query.get("status")
        if status is not None and status not in {s.value for s in TicketStatus}:
            raise json_error(400, "status is one of " + ", ".join(s.value for s in TicketStatus))
        caller = request.query.get("caller")
        since = _day(request, "since")
        overdue = request.query.get("overdue") == "true"
        limit = _limit(request)
        found = await self.tickets.list(
            status=TicketStatus(status) if status else None,
            caller_digits=normalise_number(caller).digits if caller else None,
            opened_from=datetime.combine(since, time(), self.zone) if since else None,
            only_open=request.query.get("open") == "true" or overdue,
            limit=100_000 if overdue else limit,
        )
        now = self.clock()
        rows = [(ticket, self.sla(ticket, now)) for ticket in found]
        if overdue:
            rows = [(t, r) for t, r in rows if r.on_time is False][:limit]
        return web.json_response([ticket_json(t, r, self.zone) for t, r in rows], dumps=_dumps)

    async def _ticket(self, number: str) -> Ticket:
        try:
            return await self.tickets.get(number)
        except TicketError:
            raise json_error(404, "no such ticket") from None

    async def get_ticket(self, request: web.Request) -> web.Response:
        user = current_user(request)
        ticket = await self._ticket(request.match_info["number"])
        document = ticket_json(ticket, self.sla(ticket, self.clock()), self.zone)
        calls = await self.tickets.calls_of(ticket.number)
        recordings = await self.units(lambda c: recordings_of(c, ticket=ticket.number))
        if not sees_every_call(user):
            calls = [c for c in calls if c.agent_interface == user.agent_interface]
            recordings = [r for r in recordings if user.may_hear(r.agent_interface)]
        document["calls"] = [call_json(call, self.zone) for call in calls]
        document["recordings"] = [self._recording_json(r) for r in recordings]
        return web.json_response(document, dumps=_dumps)

    def _recording_json(self, recording: Recording) -> dict[str, Any]:
        return {
            "id": recording.id,
            "uniqueid": recording.uniqueid,
            "recorded_on": recording.recorded_on.isoformat(),
            "duration_seconds": recording.duration_seconds,
            "agent": recording.agent_interface,
            "integrity": recording.integrity,
            "audio": f"/api/v1/recordings/{recording.id}/audio",
            "ingested_at": local_time(recording.ingested_at, self.zone),
        }

    async def patch_ticket(self, request: web.Request) -> web.Response:
        user = current_user(request)
        ticket = await self._ticket(request.match_info["number"])
        if not sees_every_call(user) and ticket.owner_agent not in (None, user.agent_interface):
            raise json_error(403, "agents change only their own tickets, or unsigned ones")
        try:
            body = await request.json()
        except ValueError:
            raise json_error(400, "send a JSON object") from None
        if not isinstance(body, dict) or not body:
            raise json_error(400, "send a JSON object with the fields to change")
        unknown = set(body) - {*EDITABLE, "status"}
        if unknown:
            raise json_error(
                400, f"fields that cannot be changed here: {', '.join(sorted(unknown))}"
            )
        now = self.clock()
        try:
            if any(name in body for name in EDITABLE):
                ticket = await self.tickets.edit(
                    ticket.number, TicketEdit(*(body.get(name) for name in EDITABLE)), now
                )
            if "status" in body:
                ticket = await self.tickets.set_status(
                    ticket.number, TicketStatus(body["status"]), now
                )
        except (TicketError, ValueError, TypeError) as error:
            raise json_error(400, str(error)) from None
        return web.json_response(ticket_json(ticket, self.sla(ticket, now), self.zone))

    async def list_calls(self, request: web.Request) -> web.Response:
        user = current_user(request)
        since = _day(request, "since")
        caller = request.query.get("caller")
        agent = request.query.get("agent") if sees_every_call(user) else user.agent_interface
        limit = _limit(request)
        rows = await self.units(
            lambda connection: calls_query(
                connection,
                agent=agent,
                since=datetime.combine(since, time(), self.zone) if since else None,
                caller_digits=normalise_number(caller).digits if caller else None,
                limit=limit,
            )
        )
        return web.json_response([call_json(row, self.zone) for row in rows], dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
