"""A callback task's life as pure rules: what an attempt's outcome does to it.

One task per caller (并单): several missed calls of one number add to the open task instead of
making more. An attempt rings the agent first; only once the agent answers is the citizen
dialled. The citizen answering ends the task (*reached*); no answer, busy or a failed line
counts an attempt and, under the retry policy, waits ``spacing`` before the next one, until
``attempts`` are used up (*gave up*, with the reason). An agent who did not answer costs the
citizen nothing: the task is due again at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class CallbackStatus(StrEnum):
    DUE = "due"
    """Waiting for an agent to call back."""
    DIALLING = "dialling"
    """An attempt is under way (the agent's phone or the citizen's is ringing, or they talk)."""
    RETRY = "retry"
    """The citizen did not answer; the next attempt is due at ``next_attempt_at``."""
    REACHED = "reached"
    GAVE_UP = "gave_up"


OPEN_STATUSES = frozenset({CallbackStatus.DUE, CallbackStatus.DIALLING, CallbackStatus.RETRY})


class DialOutcome(StrEnum):
    REACHED = "reached"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"
    AGENT_NO_ANSWER = "agent_no_answer"


_BY_DIAL_STATUS = {
    "ANSWER": DialOutcome.REACHED,
    "NOANSWER": DialOutcome.NO_ANSWER,
    "BUSY": DialOutcome.BUSY,
}


def outcome_of(dial_status: str) -> DialOutcome:
    """The citizen leg's outcome from the PBX's dial status; anything else is a failed line
    (CHANUNAVAIL, CONGESTION, CANCEL: the agent hung up while it rang)."""
    return _BY_DIAL_STATUS.get(dial_status.upper(), DialOutcome.FAILED)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int
    spacing: timedelta

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a callback is attempted at least once")
        if self.spacing < timedelta(0):
            raise ValueError("the spacing between attempts cannot be negative")


@dataclass(frozen=True, slots=True)
class AfterAttempt:
    """The task's fields after an attempt ended."""

    status: CallbackStatus
    attempts: int
    next_attempt_at: datetime | None
    stopped_because: str | None = None


def after_attempt(
    attempts_before: int, outcome: DialOutcome, at: datetime, policy: RetryPolicy
) -> AfterAttempt:
    if outcome is DialOutcome.AGENT_NO_ANSWER:
        return AfterAttempt(CallbackStatus.DUE, attempts_before, None)
    attempts = attempts_before + 1
    if outcome is DialOutcome.REACHED:
        return AfterAttempt(CallbackStatus.REACHED, attempts, None)
    if attempts >= policy.attempts:
        reason = f"{outcome.value.replace('_', ' ')} after {attempts} attempts"
        return AfterAttempt(CallbackStatus.GAVE_UP, attempts, None, reason)
    return AfterAttempt(CallbackStatus.RETRY, attempts, at + policy.spacing)


def on_time(requested_at: datetime, reached_at: datetime | None, limit: timedelta) -> bool:
    """Whether the citizen was reached within ``limit`` of the missed call (the callback
    on-time rate's test; a task not reached is late once the limit has passed)."""
    return reached_at is not None and reached_at - requested_at <= limit


def quiet_line_offers(
    due: Sequence[int], free_agents: Sequence[str], offered: Mapping[int, str]
) -> list[tuple[int, str]]:
    """When nobody waits in a queue: the oldest due callbacks (``due``, oldest first) not on
    offer yet, each paired with a free agent who holds no offer. One offer per agent."""
    busy = set(offered.values())
    agents = [agent for agent in free_agents if agent not in busy]
    tasks = [task for task in due if task not in offered]
    return list(zip(tasks, agents, strict=False))
