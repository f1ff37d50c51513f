"""The routing decision: who a call goes to, decided from data, never from a menu.

``decide`` is pure: it takes the call, what the bridge knows about the caller (open tickets, the
enterprise directory, which agents are free) and the rules, and returns the route. The shell in
``ivr_bypass.router`` gathers those facts within the routing budget and opens the ticket the
decision asks for.

Rules, first match wins:

1. a dialled emergency number, or a caller with an open emergency ticket: the emergency queue,
   at the front;
2. a number in the enterprise directory: the enterprise queue, high priority;
3. a caller with an open ticket: the agent who owns it, rung alone first when free, and the
   default queue with raised priority after that (or at once when the owner is not free);
4. everyone else: the default queue.

A withheld or invalid caller ID matches nothing, so the caller goes to the default queue and the
reason says why. Every rule leads to a person.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

_SEPARATORS = re.compile(r"[\s\-().]")
_DIGITS = re.compile(r"^\d{3,20}$")


class RoutingReason(StrEnum):
    DEFAULT = "default"
    WITHHELD_CALLER_ID = "withheld-caller-id"
    INVALID_CALLER_ID = "invalid-caller-id"
    EMERGENCY_NUMBER = "emergency-number"
    EMERGENCY_TICKET = "emergency-ticket"
    ENTERPRISE = "enterprise"
    TICKET_OWNER = "ticket-owner"
    """Open ticket and its owner is free: ring the owner alone first."""
    OPEN_TICKET = "open-ticket"
    """Open ticket but its owner is busy or away: the queue, with raised priority."""
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class CallerNumber:
    """A caller ID reduced to the national digits we match on; ``problem`` says why if not."""

    digits: str
    problem: RoutingReason | None = None


def normalise_number(raw: str) -> CallerNumber:
    """``+86 138-0013-8000``, ``0086…`` and a leading trunk ``0`` all become national digits."""
    text = _SEPARATORS.sub("", raw or "")
    if text.lower() in ("", "anonymous", "unknown", "restricted", "private", "unavailable"):
        return CallerNumber("", RoutingReason.WITHHELD_CALLER_ID)
    if text.startswith("+"):
        text = text[1:]
        text = text.removeprefix("86") if text.startswith("86") else "00" + text
    elif text.startswith("0086"):
        text = text[4:]
    if not _DIGITS.match(text):
        return CallerNumber("", RoutingReason.INVALID_CALLER_ID)
    if text.startswith("0") and not text.startswith("00"):
        text = text[1:]  # trunk prefix of a landline: 010 1234 5678 -> 1012345678
    return CallerNumber(text)


def dialled_digits(raw: str) -> str:
    """A dialled number as digits only (``*``/``#`` and separators dropped)."""
    return "".join(ch for ch in raw or "" if ch.isdigit())


@dataclass(frozen=True, slots=True)
class IncomingCall:
    caller_number: str
    dialled_number: str
    uniqueid: str
    caller_name: str = ""


@dataclass(frozen=True, slots=True)
class OpenTicket:
    """A caller's ticket that is not resolved or closed, as routing needs to see it."""

    number: str
    owner_agent: str | None
    emergency: bool
    last_activity_at: datetime


@dataclass(frozen=True, slots=True)
class CallerFacts:
    """What the bridge knows about the caller when the call arrives.

    ``free_agents`` are the agent interfaces that are logged in, not paused and not on a call;
    ``None`` means the bridge cannot see the agents right now (then an owner is still preferred
    and the dialplan's own device-state check decides whether to ring them).
    """

    open_tickets: tuple[OpenTicket, ...] = ()
    enterprise_name: str | None = None
    free_agents: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class RoutingRules:
    default_queue: str = "hotline"
    enterprise_queue: str = "enterprise"
    emergency_queue: str = "emergency"
    emergency_numbers: frozenset[str] = field(
        default_factory=lambda: frozenset({"110", "119", "120", "122"})
    )
    open_ticket_priority: int = 5
    enterprise_priority: int = 10
    emergency_priority: int = 100


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Where the call goes. ``new_ticket`` asks the shell to open a ticket (``ticket`` is empty);
    ``emergency`` marks that ticket as an emergency."""

    queue: str
    priority: int
    reason: RoutingReason
    agent: str | None = None
    ticket: str | None = None
    new_ticket: bool = False
    emergency: bool = False
    caller_digits: str = ""

    def with_ticket(self, number: str) -> RoutingDecision:
        return replace(self, ticket=number, new_ticket=False)

    def channel_variables(self) -> dict[str, str]:
        """The ``HOTLINE_*`` variables the dialplan reads; empty strings clear stale values."""
        return {
            "HOTLINE_QUEUE": self.queue,
            "HOTLINE_PRIORITY": str(self.priority),
            "HOTLINE_AGENT": self.agent or "",
            "HOTLINE_TICKET": self.ticket or "",
            "HOTLINE_REASON": self.reason.value,
        }


def fallback_decision(rules: RoutingRules) -> RoutingDecision:
    """What a call gets when deciding failed or ran out of time: the default queue, at once.

    No ticket is opened here; the AMI side opens or matches one when the call is answered or ends.
    """
    return RoutingDecision(rules.default_queue, 0, RoutingReason.FALLBACK)


def _latest(tickets: Iterable[OpenTicket]) -> OpenTicket | None:
    return max(tickets, key=lambda ticket: ticket.last_activity_at, default=None)


def _owner_if_free(ticket: OpenTicket, free_agents: frozenset[str] | None) -> str | None:
    owner = ticket.owner_agent
    if not owner:
        return None
    if free_agents is None or owner in free_agents:
        return owner
    return None


def decide(call: IncomingCall, facts: CallerFacts, rules: RoutingRules) -> RoutingDecision:
    caller = normalise_number(call.caller_number)
    digits = caller.digits
    # Without a usable caller ID nothing can be matched: tickets found for "" would be strangers'.
    tickets = facts.open_tickets if digits else ()
    emergency_ticket = _latest(t for t in tickets if t.emergency)
    latest = _latest(tickets)

    if dialled_digits(call.dialled_number) in rules.emergency_numbers:
        return RoutingDecision(
            rules.emergency_queue,
            rules.emergency_priority,
            RoutingReason.EMERGENCY_NUMBER,
            ticket=emergency_ticket.number if emergency_ticket else None,
            new_ticket=emergency_ticket is None,
            emergency=True,
            caller_digits=digits,
        )
    if emergency_ticket is not None:
        return RoutingDecision(
            rules.emergency_queue,
            rules.emergency_priority,
            RoutingReason.EMERGENCY_TICKET,
            ticket=emergency_ticket.number,
            emergency=True,
            caller_digits=digits,
        )
    if digits and facts.enterprise_name is not None:
        return RoutingDecision(
            rules.enterprise_queue,
            rules.enterprise_priority,
            RoutingReason.ENTERPRISE,
            agent=_owner_if_free(latest, facts.free_agents) if latest else None,
            ticket=latest.number if latest else None,
            new_ticket=latest is None,
            caller_digits=digits,
        )
    if latest is not None:
        owner = _owner_if_free(latest, facts.free_agents)
        return RoutingDecision(
            rules.default_queue,
            rules.open_ticket_priority,
            RoutingReason.TICKET_OWNER if owner else RoutingReason.OPEN_TICKET,
            agent=owner,
            ticket=latest.number,
            caller_digits=digits,
        )
    return RoutingDecision(
        rules.default_queue,
        0,
        caller.problem or RoutingReason.DEFAULT,
        new_ticket=True,
        caller_digits=digits,
    )
