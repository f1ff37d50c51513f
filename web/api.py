"""The panel's JSON API under ``/api/v1``: live statistics, tickets and calls.

Agents see only their own calls and recordings (their softphone's interface), only the tickets
of their phones or nobody's yet (the one popped up as their phone rings), and the statistics
board without other agents' callers, as their live socket shows it; they may change only tickets
they own or nobody has signed yet. Supervisors and admins see and change everything. Another
agent's ticket is as unknown to an agent as a ticket that does not exist: a 404 either way.

Bad input is a 400 with a message that says what to fix (a body over ``MAX_BODY`` a 413), decided
before anything is written: a ticket's fields and status change together or not at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import Connection, Row, select

from infra.storage import Transactions
from ivr_bypass.decision import normalise_number
from queue_stats.journal import CallRow
from recording.db import Recording, recordings_of
from tickets.model import TicketError, TicketStatus
from tickets.sla import SlaReport
from tickets.store import Ticket, TicketEdit, TicketStore
from tickets.views import call_json, local_time, ticket_json
from web.auth import current_user
from web.bodies import query_text, read_json
from web.errors import json_error, json_refusals
from web.live import without_callers
from web.users import HEARS_EVERY_CALL, User

MAX_LIMIT = 500
MAX_BODY = 64 * 1024
EDITABLE = ("category", "description", "department", "satisfaction")
TEXT_FIELDS = ("category", "description", "department")
# Days a query may start from: converting a day far outside them to UTC overflows.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2200, 12, 31)
_LIMIT = re.compile(r"[0-9]{1,9}")  # ASCII only: "²".isdigit() is True, int("²") fails
TICKET_NUMBER = re.compile(r"[0-9A-Za-z]{1,16}-[0-9]{8}-[0-9]{6,9}")
_STATUSES = tuple(status.value for status in TicketStatus)
OVERDUE_PAGE = 200  # open tickets read at a time for the overdue list


def _limit(request: web.Request, default: int = 50) -> int:
    text = query_text(request, "limit")
    if text is None:
        return default
    if not _LIMIT.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise json_error(400, f"limit is a number from 1 to {MAX_LIMIT}")
    return int(text)


def _day(request: web.Request, name: str) -> date | None:
    text = query_text(request, name)
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise json_error(400, f"{name} is a day, YYYY-MM-DD") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise json_error(400, f"{name} is a day from {FIRST_DAY} to {LAST_DAY}")
    return day


def _caller_digits(request: web.Request) -> str | None:
    caller = query_text(request, "caller")
    return normalise_number(caller).digits if caller else None


def sees_every_call(user: User) -> bool:
    return user.role in HEARS_EVERY_CALL


def sees_ticket(user: User, ticket: Ticket) -> bool:
    """Supervisors see every ticket; an agent those of their phones and those nobody owns."""
    return sees_every_call(user) or ticket.owner_agent in (None, *user.phones)


def ticket_changes(body: object) -> tuple[TicketEdit | None, TicketStatus | None]:
    """A PATCH body checked whole, before anything is written: the field edit and the status.

    Text fields are text or null (null: leave as it is); satisfaction is a whole score from 1 to
    5 (JSON ``true`` and ``3.5`` are not scores, though Python would take them for one).
    """
    if not isinstance(body, dict) or not body:
        raise json_error(400, "send a JSON object with the fields to change")
    unknown = set(body) - {*EDITABLE, "status"}
    if unknown:
        shown = ", ".join(sorted(name[:40] for name in unknown))
        raise json_error(400, f"fields that cannot be changed here: {shown}")
    for name in TEXT_FIELDS:
        if not isinstance(body.get(name), str | None):
            raise json_error(400, f"{name} is text (or null to leave it as it is)")
    satisfaction = body.get("satisfaction")
    if satisfaction is not None and (type(satisfaction) is not int or not 1 <= satisfaction <= 5):
        raise json_error(400, "satisfaction is a whole score from 1 to 5")
    edit = None
    if any(name in body for name in EDITABLE):
        edit = TicketEdit(*(body.get(name) for name in EDITABLE))
        try:
            edit.changes()
        except TicketError as error:
            raise json_error(400, str(error)) from None
    status = None
    if "status" in body:
        if body["status"] not in _STATUSES:
            raise json_error(400, "status is one of " + ", ".join(_STATUSES))
        status = TicketStatus(body["status"])
    return edit, status


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
        routes = app.router
        routes.add_get("/api/v1/stats", json_refusals(self.get_stats), name="stats")
        routes.add_get("/api/v1/tickets", json_refusals(self.list_tickets), name="tickets")
        routes.add_get("/api/v1/tickets/{number}", json_refusals(self.get_ticket), name="ticket")
        routes.add_patch(
            "/api/v1/tickets/{number}", json_refusals(self.patch_ticket), name="ticket-edit"
        )
        routes.add_post(
            "/api/v1/tickets/{number}/reviewed",
            json_refusals(self.mark_reviewed),
            name="ticket-reviewed",
        )
        routes.add_get("/api/v1/calls", json_refusals(self.list_calls), name="calls")

    async def get_stats(self, request: web.Request) -> web.Response:
        user = current_user(request)
        snapshot = await self.stats()
        if snapshot is None:
            return web.json_response({"error": "no statistics yet"}, status=503)
        if not sees_every_call(user):
            snapshot = without_callers(snapshot)
        return web.json_response(snapshot, dumps=_dumps)

    async def list_tickets(self, request: web.Request) -> web.Response:
        user = current_user(request)
        status = query_text(request, "status")
        if status is not None and status not in _STATUSES:
            raise json_error(400, "status is one of " + ", ".join(_STATUSES))
        caller_digits = _caller_digits(request)
        since = _day(request, "since")
        overdue = request.query.get("overdue") == "true"
        limit = _limit(request)
        now = self.clock()

        async def page(after: Ticket | None, size: int) -> list[Ticket]:
            return await self.tickets.list(
                status=TicketStatus(status) if status else None,
                caller_digits=caller_digits,
                opened_from=datetime.combine(since, time(), self.zone) if since else None,
                only_open=request.query.get("open") == "true" or overdue,
                owners_or_nobody=None if sees_every_call(user) else user.phones,
                to_review=request.query.get("review") in ("1", "true"),
                limit=size,
                after=after,
            )

        if not overdue:
            rows = [(ticket, self.sla(ticket, now)) for ticket in await page(None, limit)]
        else:
            # Overdue is the SLA clocks' verdict, worked out here: open tickets are read newest
            # first a page at a time until ``limit`` are overdue (a centre keeps tens of
            # thousands open; reading them all took 1.3 s at 1 M tickets).
            rows, after = [], None
            while len(rows) < limit:
                batch = await page(after, OVERDUE_PAGE)
                rows += [(t, r) for t in batch if (r := self.sla(t, now)).on_time is False]
                if len(batch) < OVERDUE_PAGE:
                    break
                after = batch[-1]
            rows = rows[:limit]
        return web.json_response([ticket_json(t, r, self.zone) for t, r in rows], dumps=_dumps)

    async def _ticket(self, request: web.Request, user: User) -> Ticket:
        """The ticket the path names, if this user may see it (else the same 404 as unknown)."""
        number = request.match_info["number"]
        if TICKET_NUMBER.fullmatch(number):
            try:
                ticket = await self.tickets.get(number)
            except TicketError:
                pass
            else:
                if sees_ticket(user, ticket):
                    return ticket
        raise json_error(404, "no such ticket")

    async def get_ticket(self, request: web.Request) -> web.Response:
        user = current_user(request)
        ticket = await self._ticket(request, user)
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
        ticket = await self._ticket(request, user)
        if not sees_every_call(user) and ticket.owner_agent not in (None, user.agent_interface):
            raise json_error(403, "agents change only their own tickets, or unsigned ones")
        edit, status = ticket_changes(await read_json(request, max_bytes=MAX_BODY))
        now = self.clock()
        try:
            ticket = await self.tickets.update(ticket.number, edit, status, now)
        except TicketError as error:
            raise json_error(400, str(error)) from None
        return web.json_response(ticket_json(ticket, self.sla(ticket, now), self.zone))

    async def mark_reviewed(self, request: web.Request) -> web.Response:
        """A supervisor has followed up a dissatisfied rating: off the review list."""
        user = current_user(request)
        if not sees_every_call(user):
            raise json_error(403, "supervisors review ratings")
        ticket = await self._ticket(request, user)
        now = self.clock()
        try:
            ticket = await self.tickets.mark_reviewed(ticket.number, now)
        except TicketError as error:
            raise json_error(409, str(error)) from None
        return web.json_response(ticket_json(ticket, self.sla(ticket, now), self.zone))

    async def list_calls(self, request: web.Request) -> web.Response:
        user = current_user(request)
        since = _day(request, "since")
        caller_digits = _caller_digits(request)
        wanted = query_text(request, "agent")
        agent = wanted if sees_every_call(user) else user.agent_interface
        limit = _limit(request)
        rows = await self.units(
            lambda connection: calls_query(
                connection,
                agent=agent,
                since=datetime.combine(since, time(), self.zone) if since else None,
                caller_digits=caller_digits,
                limit=limit,
            )
        )
        return web.json_response([call_json(row, self.zone) for row in rows], dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
