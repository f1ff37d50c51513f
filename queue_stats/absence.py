"""The port through which a PBX's own log tells the core about the calls of an absence.

AMI and the Event Socket only speak of the present: a call that begins and ends while the
bridge is away leaves no event for it. A PBX that keeps a log of its queue calls (Asterisk's
``queue_log``: ``ami.queue_log``) can give them back after each login. The queue service asks
through ``AbsenceLog`` and knows no PBX.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from queue_stats.calls import CallRecord


@dataclass(frozen=True, slots=True)
class Recovery:
    """What one reading of the log gave: finished calls to journal, and calls still going."""

    calls: list[CallRecord]
    in_progress: frozenset[str]
    """Calls begun in the window that have no end line yet (read again later)."""


class AbsenceLog(Protocol):
    """A PBX's log of queue calls, read since a moment (blocking: the service uses a thread)."""

    def recover(
        self,
        since: datetime,
        *,
        skip: Container[str],
        partial: Mapping[str, CallRecord],
        agent_interfaces: Mapping[str, str],
        only: Container[str] | None = None,
    ) -> Recovery:
        """The calls begun at or after ``since`` that ended, rebuilt; ``skip``: calls already
        journalled or followed live; ``partial``: calls seen begin but not end, to complete;
        ``only``: read just these calls (the ones still going last time)."""
        ...
