"""The call tracker: a pure state machine from AMI domain events to one finished record per call.

A call is a caller's channel: it starts when Asterisk creates the channel in an inbound context
(or, if the bridge was not watching then, when it joins a queue) and ends at that channel's
``Hangup``. Hold and talk seconds come from Asterisk's own ``HoldTime``/``TalkTime`` so the journal
agrees with ``queue_log`` and ``QueueStatus``. No I/O happens here; memory holds live calls only.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ami.events import (
    AgentCompleted,
    AgentConnected,
    CallerAbandoned,
    CallerJoinedQueue,
    CallerLeftQueue,
    CallerReported,
    ChannelCreated,
    ChannelHungUp,
    DialAnswered,
    DomainEvent,
)

log = logging.getLogger(__name__)

MAX_PENDING_ROUTINGS = 10_000


class CallOutcome(StrEnum):
    ANSWERED = "answered"
    """An agent talked with the caller (through the queue or the preferred-agent step)."""
    ABANDONED = "abandoned"
    """The caller hung up while waiting in a queue."""
    TIMEOUT = "timeout"
    """The caller left the queue unanswered without hanging up (Queue's own time limit)."""
    HUNG_UP_BEFORE_QUEUE = "hung_up_before_queue"
    """The caller hung up before reaching a queue or an agent."""
    UNKNOWN = "unknown"
    """The call ended while the bridge could not see AMI; only its start is known."""


@dataclass(frozen=True, slots=True)
class Routing:
    """What the bridge decided for a call over FastAGI, kept with the journal row."""

    queue: str
    reason: str
    ticket: str | None = None
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class CallRecord:
    uniqueid: str
    linkedid: str
    channel: str
    caller_number: str
    caller_name: str
    dialled_number: str
    started_at: datetime
    queue: str | None = None
    entered_queue_at: datetime | None = None
    left_queue_at: datetime | None = None
    agent_interface: str | None = None
    agent_name: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    hold_seconds: int | None = None
    talk_seconds: int | None = None
    outcome: CallOutcome | None = None
    hangup_cause: int | None = None
    ticket: str | None = None
    routing_reason: str | None = None


def _whole_seconds(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start).total_seconds()))


class CallTracker:
    """Follows live calls; ``handle`` returns the calls that the event finished.

    Events about a call the tracker does not know are counted in ``anomalies`` and logged, never
    raised: a bridge that connects in the middle of the day must not crash on calls already up.
    """

    def __init__(self, inbound_contexts: frozenset[str] = frozenset()) -> None:
        self._inbound_contexts = inbound_contexts
        self._calls: dict[str, CallRecord] = {}
        self._pending_routings: OrderedDict[str, Routing] = OrderedDict()
        self.anomalies: Counter[str] = Counter()

    @property
    def live_calls(self) -> int:
        return len(self._calls)

    def call(self, uniqueid: str) -> CallRecord | None:
        return self._calls.get(uniqueid)

    def routed(self, uniqueid: str, routing: Routing) -> None:
        """Attach the routing decision made for ``uniqueid`` (it may arrive before AMI's events)."""
        record = self._calls.get(uniqueid)
        if record is None:
            self._pending_routings[uniqueid] = routing
            while len(self._pending_routings) > MAX_PENDING_ROUTINGS:
                self._pending_routings.popitem(last=False)
            return
        self._calls[uniqueid] = replace(
            record, ticket=routing.ticket, routing_reason=routing.reason
        )

    def resync(self, present: set[str], at: datetime) -> list[CallRecord]:
        """After a reconnect: calls Asterisk no longer has ended unseen; finish them as unknown."""
        gone = [uid for uid in self._calls if uid not in present]
        finished = []
        for uniqueid in gone:
            record = self._calls.pop(uniqueid)
            self.anomalies["call-ended-while-disconnected"] += 1
            outcome = record.outcome or CallOutcome.UNKNOWN
            finished.append(replace(record, outcome=outcome, ended_at=None))
        return finished

    def handle(self, event: DomainEvent) -> list[CallRecord]:
        match event:
            case ChannelCreated():
                self._on_channel_created(event)
            case CallerJoinedQueue():
                self._on_caller_joined(event)
            case CallerReported() if event.uniqueid not in self._calls:
                self._on_caller_joined(
                    CallerJoinedQueue(
                        event.at - timedelta(seconds=event.wait_seconds),
                        event.uniqueid,
                        event.linkedid,
                        event.channel,
                        event.queue,
                        event.caller_number,
                        event.caller_name,
                        event.position,
                    )
                )
            case CallerLeftQueue():
                self._update(event.uniqueid, "left", left_queue_at=event.at)
            case CallerAbandoned():
                self._update(
                    event.uniqueid,
                    "abandon",
                    outcome=CallOutcome.ABANDONED,
                    hold_seconds=event.hold_seconds,
                    left_queue_at=event.at,
                )
            case AgentConnected():
                self._update(
                    event.uniqueid,
                    "connect",
                    outcome=CallOutcome.ANSWERED,
                    agent_interface=event.interface,
                    agent_name=event.member_name or None,
                    answered_at=event.at,
                    hold_seconds=event.hold_seconds,
                )
            case AgentCompleted():
                self._update(event.uniqueid, "complete", talk_seconds=event.talk_seconds)
            case DialAnswered():
                self._on_dial_answered(event)
            case ChannelHungUp():
                return self._on_hangup(event)
        return []

    def _on_channel_created(self, event: ChannelCreated) -> None:
        if event.context not in self._inbound_contexts or event.uniqueid != event.linkedid:
            return
        record = CallRecord(
            uniqueid=event.uniqueid,
            linkedid=event.linkedid,
            channel=event.channel,
            caller_number=event.caller_number,
            caller_name=event.caller_name,
            dialled_number=event.exten,
            started_at=event.at,
        )
        self._calls[event.uniqueid] = self._with_pending_routing(record)

    def _on_caller_joined(self, event: CallerJoinedQueue) -> None:
        record = self._calls.get(event.uniqueid)
        if record is None:
            # The bridge was not watching when the channel was created: start from the queue.
            record = CallRecord(
                uniqueid=event.uniqueid,
                linkedid=event.linkedid,
                channel=event.channel,
                caller_number=event.caller_number,
                caller_name=event.caller_name,
                dialled_number="",
                started_at=event.at,
            )
            record = self._with_pending_routing(record)
        self._calls[event.uniqueid] = replace(record, queue=event.queue, entered_queue_at=event.at)

    def _on_dial_answered(self, event: DialAnswered) -> None:
        record = self._calls.get(event.uniqueid)
        if record is None or record.entered_queue_at is not None:
            return  # Queue's own dials are reported by AgentConnect.
        self._calls[event.uniqueid] = replace(
            record,
            outcome=CallOutcome.ANSWERED,
            agent_interface=event.interface,
            answered_at=event.at,
            hold_seconds=_whole_seconds(record.started_at, event.at),
        )

    def _on_hangup(self, event: ChannelHungUp) -> list[CallRecord]:
        record = self._calls.pop(event.uniqueid, None)
        if record is None:
            return []
        outcome = record.outcome
        hold = record.hold_seconds
        talk = record.talk_seconds
        if outcome is None and record.entered_queue_at is not None:
            outcome = CallOutcome.TIMEOUT if record.left_queue_at else CallOutcome.ABANDONED
            hold = _whole_seconds(record.entered_queue_at, record.left_queue_at or event.at)
        elif outcome is None:
            outcome = CallOutcome.HUNG_UP_BEFORE_QUEUE
        if outcome is CallOutcome.ANSWERED and talk is None:
            talk = _whole_seconds(record.answered_at, event.at)
        return [
            replace(
                record,
                outcome=outcome,
                hold_seconds=hold,
                talk_seconds=talk,
                ended_at=event.at,
                hangup_cause=event.cause,
            )
        ]

    def _update(self, uniqueid: str, what: str, **changes: object) -> None:
        record = self._calls.get(uniqueid)
        if record is None:
            self.anomalies[f"{what}-unknown-call"] += 1
            log.debug("%s for a call the tracker does not know: %s", what, uniqueid)
            return
        self._calls[uniqueid] = replace(record, **changes)  # type: ignore[arg-type]

    def _with_pending_routing(self, record: CallRecord) -> CallRecord:
        routing = self._pending_routings.pop(record.uniqueid, None)
        if routing is None:
            return record
        return replace(record, ticket=routing.ticket, routing_reason=routing.reason)
