"""The routing shell: gathers what ``decide`` needs, runs it, opens the ticket it asks for.

Everything here runs inside the FastAGI handler's budget; a slow database makes the handler
answer with the default route, it never makes the caller wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection

from infra.storage import Transactions
from ivr_bypass.decision import (
    CallerFacts,
    IncomingCall,
    OpenTicket,
    RoutingDecision,
    RoutingRules,
    decide,
    normalise_number,
)

log = logging.getLogger(__name__)

FreeAgents = Callable[[], frozenset[str] | None]


class TicketData(Protocol):
    """The ticket store's units of work that routing needs (``tickets.store.TicketStore``)."""

    def open_tickets_in(
        self, connection: Connection, caller_digits: str, since: datetime, limit: int = 5
    ) -> tuple[OpenTicket, ...]: ...

    def open_ticket_in(
        self,
        connection: Connection,
        caller_digits: str,
        at: datetime,
        *,
        caller_name: str = "",
        emergency: bool = False,
    ) -> str: ...


class DirectoryData(Protocol):
    def name_in(self, connection: Connection, digits: str) -> str | None: ...


class Router:
    """``route(call)``: the decision for one call, with its ticket already open.

    The lookups, the pure decision and the new ticket are one unit of work: one hop to the
    database's thread (SQLite) or one pooled connection (PostgreSQL), one transaction.
    """

    def __init__(
        self,
        rules: RoutingRules,
        units: Transactions,
        tickets: TicketData,
        directory: DirectoryData,
        free_agents: FreeAgents,
        *,
        match_days: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._rules = rules
        self._units = units
        self._tickets = tickets
        self._directory = directory
        self._free_agents = free_agents
        self._match_window = timedelta(days=match_days)
        self._clock = clock

    async def warm_up(self) -> None:
        """Open the database connection and run the lookups once, before the first call."""
        since = self._clock()
        await self._units(
            lambda connection: (
                self._tickets.open_tickets_in(connection, "", since, 1),
                self._directory.name_in(connection, "0"),
            )
        )

    async def route(self, call: IncomingCall, start_by: float | None = None) -> RoutingDecision:
        """``start_by`` (``time.monotonic()``): past it the database work is not started and
        ``infra.storage.UnitExpired`` is raised; the caller has had the default route."""
        now = self._clock()
        free = self._free_agents()
        return await self._units(
            lambda connection: self._route_in(connection, call, now, free), start_by
        )

    def _route_in(
        self,
        connection: Connection,
        call: IncomingCall,
        now: datetime,
        free: frozenset[str] | None,
    ) -> RoutingDecision:
        digits = normalise_number(call.caller_number).digits
        facts = CallerFacts(free_agents=free)
        if digits:
            since = now - self._match_window
            facts = CallerFacts(
                self._tickets.open_tickets_in(connection, digits, since),
                self._directory.name_in(connection, digits),
                free,
            )
        decision = decide(call, facts, self._rules)
        if decision.new_ticket:
            number = self._tickets.open_ticket_in(
                connection,
                decision.caller_digits,
                now,
                caller_name=call.caller_name,
                emergency=decision.emergency,
            )
            decision = decision.with_ticket(number)
        return decision


def free_agents_in(snapshot: dict[str, Any] | None) -> frozenset[str] | None:
    """Agents shown idle in a statistics snapshot (the shape ``hotline replay --json`` prints)."""
    if not snapshot or "agents" not in snapshot:
        return None
    return frozenset(
        interface for interface, agent in snapshot["agents"].items() if agent["state"] == "idle"
    )


class SnapshotAvailability:
    """Free agents for a ``hotline agi`` process, from the snapshot the bridge keeps on the bus.

    Refreshed in the background; older than ``max_age`` seconds counts as unknown (``None``).
    """

    def __init__(self, load: Callable[[], Any], *, interval: float = 1.0, max_age: float = 10.0):
        self._load = load
        self._interval = interval
        self._max_age = max_age
        self._free: frozenset[str] | None = None
        self._loaded_at = 0.0

    def __call__(self) -> frozenset[str] | None:
        if time.monotonic() - self._loaded_at > self._max_age:
            return None
        return self._free

    async def run(self) -> None:
        while True:
            try:
                self._free = free_agents_in(await self._load())
                self._loaded_at = time.monotonic()
            except Exception as error:  # unknown availability is a supported state
                log.debug("agent availability unavailable: %s", error)
            await asyncio.sleep(self._interval)
