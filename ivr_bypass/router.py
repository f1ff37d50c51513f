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


class TicketLookup(Protocol):
    async def open_tickets_for(
        self, caller_digits: str, since: datetime, limit: int = 5
    ) -> tuple[OpenTicket, ...]: ...

    async def create(
        self,
        caller_digits: str,
        at: datetime,
        *,
        caller_name: str = "",
        emergency: bool = False,
        category: str = "",
        description: str = "",
    ) -> str: ...


class DirectoryLookup(Protocol):
    async def lookup(self, digits: str) -> str | None: ...


class Router:
    """``route(call)``: the decision for one call, with its ticket already open."""

    def __init__(
        self,
        rules: RoutingRules,
        tickets: TicketLookup,
        directory: DirectoryLookup,
        free_agents: FreeAgents,
        *,
        match_days: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._rules = rules
        self._tickets = tickets
        self._directory = directory
        self._free_agents = free_agents
        self._match_window = timedelta(days=match_days)
        self._clock = clock

    async def route(self, call: IncomingCall) -> RoutingDecision:
        now = self._clock()
        digits = normalise_number(call.caller_number).digits
        if digits:
            open_tickets, enterprise = await asyncio.gather(
                self._tickets.open_tickets_for(digits, now - self._match_window),
                self._directory.lookup(digits),
            )
        else:
            open_tickets, enterprise = (), None
        facts = CallerFacts(open_tickets, enterprise, self._free_agents())
        decision = decide(call, facts, self._rules)
        if decision.new_ticket:
            number = await self._tickets.create(
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
