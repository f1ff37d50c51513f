"""The routing decision: who a call goes to, decided from data, never from a menu.

``decide`` is pure. So far it knows the default queue and why a caller ID could not be used;
the open-ticket, enterprise and emergency rules will extend ``RoutingRules`` (their own issue).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_SEPARATORS = re.compile(r"[\s\-().]")
_DIGITS = re.compile(r"^\d{3,20}$")


class RoutingReason(StrEnum):
    DEFAULT = "default"
    WITHHELD_CALLER_ID = "withheld-caller-id"
    INVALID_CALLER_ID = "invalid-caller-id"
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


@dataclass(frozen=True, slots=True)
class IncomingCall:
    caller_number: str
    dialled_number: str
    uniqueid: str


@dataclass(frozen=True, slots=True)
class RoutingRules:
    default_queue: str = "hotline"


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    queue: str
    priority: int
    reason: RoutingReason
    agent: str | None = None
    ticket: str | None = None

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
    """What a call gets when deciding failed or ran out of time: the default queue, at once."""
    return RoutingDecision(rules.default_queue, 0, RoutingReason.FALLBACK)


def decide(call: IncomingCall, rules: RoutingRules) -> RoutingDecision:
    caller = normalise_number(call.caller_number)
    reason = caller.problem or RoutingReason.DEFAULT
    return RoutingDecision(queue=rules.default_queue, priority=0, reason=reason)
