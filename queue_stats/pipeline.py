"""The one pipeline every PBX adapter feeds: call-center fact -> call tracker and statistics.

It is pure and synchronous and knows no PBX: ``ami.feed`` and ``esl.callcenter`` turn what
Asterisk and FreeSWITCH send into ``pbx.facts``; the live service and ``hotline replay`` wrap it
with their own I/O.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from pbx.facts import (
    AgentCalled,
    AgentConnected,
    CallerJoinedQueue,
    CallerReported,
    DialAnswered,
    DialStarted,
    DomainEvent,
    MemberReported,
    QueueReported,
)
from queue_stats.calls import CallRecord, CallTracker
from queue_stats.satisfaction import SatisfactionStats
from queue_stats.stats import QueueStats

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PipelineResult:
    finished_calls: list[CallRecord] = field(default_factory=list)
    stats_changed: bool = False
    offered_call: CallRecord | None = None
    """The call just reached a queue (what help desks call a new call)."""
    answered_call: CallRecord | None = None
    """An agent just answered the call (through the queue or the preferred-agent step)."""
    ringing: RingingAgent | None = None
    """An agent's phone just began ringing with the call: their panel pops the caller up."""


@dataclass(frozen=True, slots=True)
class RingingAgent:
    call: CallRecord
    interface: str


@dataclass(frozen=True, slots=True)
class PresentState:
    """What a PBX reports at a resync: its queues, agents in them, callers waiting, channels."""

    queues: list[QueueReported] = field(default_factory=list)
    members: list[MemberReported] = field(default_factory=list)
    callers: list[CallerReported] = field(default_factory=list)
    channels: set[str] = field(default_factory=set)


class EventPipeline:
    def __init__(
        self,
        tracker: CallTracker,
        stats: QueueStats,
        clock: Callable[[], datetime],
        satisfaction: SatisfactionStats | None = None,
    ) -> None:
        self.tracker = tracker
        self.stats = stats
        self.satisfaction = satisfaction
        self._clock = clock
        self.counters: Counter[str] = Counter()

    def apply(self, event: DomainEvent) -> tuple[list[CallRecord], bool]:
        """One call-center fact into the call tracker and the figures: the calls it finished,
        and whether a figure supervisors see changed. All a replay needs; ``on_event`` also
        finds whom to notify, which costs a ``CallRecord`` per ringing, offered or answered."""
        self.counters["events"] += 1
        finished = self.tracker.handle(event)
        changed = self.stats.handle(event)
        if finished and self.satisfaction is not None:
            for finished_call in finished:
                changed = self.satisfaction.count_call(finished_call) or changed
        return finished, changed

    def on_event(self, event: DomainEvent) -> PipelineResult:
        """One call-center fact, whichever PBX it came from (AMI parsed, or ESL translated)."""
        result = PipelineResult(*self.apply(event))
        kind = type(event)  # exact types: cheaper than isinstance with unions on every frame
        if kind is CallerJoinedQueue:
            result.offered_call = self.tracker.call(cast(CallerJoinedQueue, event).uniqueid)
        elif kind is AgentCalled or kind is DialStarted:
            ringing = cast(AgentCalled | DialStarted, event)
            call = self.tracker.call(ringing.uniqueid)
            # Queue() rings its members with dials of its own: those count once, as AgentCalled.
            if call is not None and (kind is AgentCalled or not call.entered_queue_at):
                result.ringing = RingingAgent(call, ringing.interface)
        elif kind is AgentConnected or kind is DialAnswered:
            answered = cast(AgentConnected | DialAnswered, event)
            call = self.tracker.call(answered.uniqueid)
            queue_dial = kind is DialAnswered and call and call.entered_queue_at
            if call is not None and call.answered_at == answered.at and not queue_dial:
                result.answered_call = call
        return result

    def snapshot(self, now: datetime) -> dict[str, Any]:
        """Today's figures as ``hotline replay --json`` prints them (the panel adds live state)."""
        figures = self.stats.snapshot(now)
        if self.satisfaction is not None:
            figures["satisfaction"] = self.satisfaction.snapshot(now)
        return figures


def format_table(snapshot: dict[str, Any]) -> str:
    """The ``hotline replay`` report for people: one line per queue, one per agent."""
    lines = [
        f"{'queue':<12}{'offered':>8}{'answered':>9}{'abandon':>8}{'short':>6}{'timeout':>8}"
        f"{'answer%':>8}{'SL%':>6}{'SL s':>5}{'ASA s':>7}{'AHT s':>7}{'waiting':>8}"
    ]
    for name, q in snapshot["queues"].items():
        lines.append(
            f"{name:<12}{q['offered']:>8}{q['answered']:>9}{q['abandoned']:>8}"
            f"{q['short_abandoned']:>6}{q['timed_out']:>8}{_percent(q['answer_rate']):>8}"
            f"{_percent(q['service_level']):>6}{q['service_level_seconds']:>5}"
            f"{_number(q['asa_seconds']):>7}{_number(q['aht_seconds']):>7}{q['waiting_now']:>8}"
        )
    lines.append("")
    lines.append(
        f"{'agent':<16}{'name':<16}{'state':<12}{'answered':>9}{'no answer':>10}{'talk s':>8}"
        "  pause reason"
    )
    for interface, a in snapshot["agents"].items():
        lines.append(
            f"{interface:<16}{a['name'][:15]:<16}{a['state']:<12}{a['answered']:>9}"
            f"{a['ring_no_answer']:>10}{a['talk_seconds']:>8}  {a['pause_reason']}"
        )
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
