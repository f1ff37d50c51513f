"""The one pipeline both shells feed: AMI message -> domain event -> call tracker and statistics.

It is pure and synchronous; the live service and ``hotline replay`` wrap it with their own I/O.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from ami.codec import AmiMessage
from ami.events import (
    WANTED_EVENTS,
    AgentCalled,
    AgentConnected,
    AmiEventError,
    CallerJoinedQueue,
    CallerReported,
    DialAnswered,
    DialStarted,
    DomainEvent,
    MemberReported,
    QueueReported,
    parse_event,
)
from ami.replay import ReplayClock, read_transcript
from queue_stats.calls import CallRecord, CallTracker
from queue_stats.stats import QueueStats

log = logging.getLogger(__name__)


# The events this pipeline consumes; the codec drops every other frame by name before parsing
# it. (MixMonitorStart has a parser but no consumer yet: the recording feature will add it.)
PIPELINE_EVENTS = WANTED_EVENTS - {"MixMonitorStart"}
keep_event = PIPELINE_EVENTS.__contains__


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


# The caller's side of an AgentConnect/AgentComplete: the headers Asterisk writes for a channel
# snapshot without a prefix (the member's side carries the same names prefixed with ``Dest``).
CALLER_HEADERS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)
MAX_CONNECTED_AGENTS = 10_000


class AgentCallers:
    """Puts the caller back into an ``AgentComplete`` that Asterisk sent without one.

    app_queue writes AgentComplete from the latest snapshot of each channel; when the caller's
    channel is already gone from Asterisk's cache (it hung up first, a race), the event carries
    only the member's fields, and the completion (talk time, the agent going to wrap-up) would
    be lost. The caller is known from the AgentConnect of the same member channel, or failing
    that of the same queue and interface.
    """

    def __init__(self, limit: int = MAX_CONNECTED_AGENTS) -> None:
        self._by_member: dict[str, dict[str, str]] = {}
        self._by_seat: dict[tuple[str, str], dict[str, str]] = {}
        self._limit = limit

    def note_connect(self, message: Mapping[str, str]) -> None:
        if not message.get("Uniqueid"):
            return
        caller = {name: message[name] for name in CALLER_HEADERS if name in message}
        member = message.get("DestUniqueid")
        if member:
            _remember(self._by_member, member, caller, self._limit)
        seat = (message.get("Queue", ""), message.get("Interface", ""))
        _remember(self._by_seat, seat, caller, self._limit)

    def complete(self, message: Mapping[str, str]) -> Mapping[str, str] | None:
        """The AgentComplete to parse: as sent, or with its caller restored (None: unknown)."""
        member = message.get("DestUniqueid")
        seat = (message.get("Queue", ""), message.get("Interface", ""))
        caller = self._by_member.pop(member, None) if member else None
        if caller is None:
            caller = self._by_seat.get(seat)
        uniqueid = message.get("Uniqueid") or (caller or {}).get("Uniqueid")
        if uniqueid and self._by_seat.get(seat, {}).get("Uniqueid") == uniqueid:
            del self._by_seat[seat]
        if message.get("Uniqueid"):
            return message
        if caller is None:
            return None
        return {**message, **caller}


def _remember(
    table: dict[Any, dict[str, str]], key: Any, caller: dict[str, str], limit: int
) -> None:
    table.pop(key, None)
    table[key] = caller
    if len(table) > limit:  # completions that never came: forget the oldest
        del table[next(iter(table))]


@dataclass(frozen=True, slots=True)
class PresentState:
    """What a PBX reports at a resync: its queues, agents in them, callers waiting, channels."""

    queues: list[QueueReported] = field(default_factory=list)
    members: list[MemberReported] = field(default_factory=list)
    callers: list[CallerReported] = field(default_factory=list)
    channels: set[str] = field(default_factory=set)


class EventPipeline:
    def __init__(
        self, tracker: CallTracker, stats: QueueStats, clock: Callable[[], datetime]
    ) -> None:
        self.tracker = tracker
        self.stats = stats
        self._clock = clock
        self._agent_callers = AgentCallers()
        self.counters: Counter[str] = Counter()

    def on_ami_message(self, message: AmiMessage, at: datetime | None = None) -> PipelineResult:
        name = message.get("Event")
        parsed: Mapping[str, str] = message
        if name == "AgentConnect":
            self._agent_callers.note_connect(message)
        elif name == "AgentComplete":
            restored = self._agent_callers.complete(message)
            if restored is not message:
                self.counters["agent_complete_without_caller"] += 1
            if restored is None:
                self.counters["malformed_events"] += 1
                log.warning(
                    "ignored an AgentComplete without its caller (queue %s, member %s)",
                    message.get("Queue"),
                    message.get("Interface"),
                )
                return PipelineResult()
            parsed = restored
        try:
            event = parse_event(parsed, at or self._clock())
        except AmiEventError as error:
            self.counters["malformed_events"] += 1
            log.warning("ignored a malformed AMI event: %s", error)
            return PipelineResult()
        if event is None:
            return PipelineResult()
        return self.on_event(event)

    def on_event(self, event: DomainEvent) -> PipelineResult:
        """One call-center fact, whichever PBX it came from (AMI parsed, or ESL translated)."""
        self.counters["events"] += 1
        finished = self.tracker.handle(event)
        changed = self.stats.handle(event)
        result = PipelineResult(finished, changed)
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


def replay_file(path: Path, pipeline: EventPipeline, clock: ReplayClock) -> list[CallRecord]:
    """Feed a recorded AMI transcript through ``pipeline`` at full speed; returns finished calls.

    The same decoder, name filter and pipeline as the live connection; only the clock differs.
    """
    finished: list[CallRecord] = []
    messages = list(read_transcript(path, keep_event))
    clock.seed(messages)
    for message in messages:
        finished += pipeline.on_ami_message(message, clock.advance(message)).finished_calls
    return finished


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
