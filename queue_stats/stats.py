"""Live queue and agent statistics: a pure, synchronous state machine fed by AMI domain events.

Counting follows Asterisk's own definitions so the numbers agree with ``QueueStatus`` and
``queue_log``: a call is *offered* when it joins a queue, *answered* at ``AgentConnect``,
*abandoned* when the caller hung up while waiting, *timed out* when it left the queue without
either (the Queue application's time limit, or an empty queue). Asterisk sends
``QueueCallerAbandon`` for a timeout too. For callers our dialplan queued, its
``HotlineQueueResult`` user event tells the two apart; for others AMI's order does
(``queue_stats.calls.timed_out_in_queue``): a caller who hangs up is asked to (``HangupRequest``)
before the ``QueueCallerAbandon``, one who timed out is not. So an abandon is settled at once when
that order decides it, else at the caller's ``Hangup``, at that event, or when the caller joins a
queue again, whichever comes first. On a login that has delivered no ``HangupRequest``
(manager.conf filters it) and without the user event, a timeout counts as abandoned, as
Asterisk's own ``Abandoned`` counter does. Answered *within the service level* means a
hold of at most the queue's ``servicelevel`` seconds, and ``service_level`` is that count over
answered calls, as Asterisk's ``ServicelevelPerf``. Rates leave out short abandons (callers who
hung up within ``short_abandon_seconds``), as contact centres usually do.

Windows: *today* since local midnight, per-minute buckets for the last 15 minutes and per-hour
buckets for the day (handed to the store through ``take_dirty_hours``). Memory depends on the
number of queues, agents and callers waiting now, never on how many calls were seen.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pbx.facts import (
    AgentCalled,
    AgentCompleted,
    AgentConnected,
    AgentRingNoAnswer,
    CallerAbandoned,
    CallerJoinedQueue,
    CallerLeftQueue,
    CallerReported,
    ChannelHungUp,
    DomainEvent,
    HangupRequested,
    MemberAdded,
    MemberPaused,
    MemberRemoved,
    MemberReported,
    MemberStatus,
    PbxBooted,
    QueueExited,
    QueueReported,
)
from queue_stats.calls import CallOutcome, CallRecord, timed_out_in_queue

log = logging.getLogger(__name__)

RECENT_MINUTES = 15
DEFAULT_SERVICE_LEVEL_SECONDS = 20
MAX_LEFT_CALLERS = 10_000


@dataclass(slots=True)
class QueueCounters:
    """Additive counts for one queue over one window (a day, an hour or a minute)."""

    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    timed_out: int = 0
    answered_within_sl: int = 0
    hold_seconds_answered: int = 0
    completed: int = 0
    talk_seconds: int = 0

    def add(self, other: QueueCounters) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def copy(self) -> QueueCounters:
        return QueueCounters(**asdict(self))


def queue_figures(
    counters: QueueCounters, service_level_seconds: int, waiting_now: int, longest_wait: float
) -> dict[str, Any]:
    """The published figures of one queue; the shape of ``hotline replay --json``."""
    decided = counters.answered + counters.abandoned + counters.timed_out
    rated = decided - counters.short_abandoned
    return {
        "offered": counters.offered,
        "answered": counters.answered,
        "abandoned": counters.abandoned,
        "timed_out": counters.timed_out,
        "short_abandoned": counters.short_abandoned,
        "answer_rate": _ratio(counters.answered, rated),
        "abandon_rate": _ratio(counters.abandoned - counters.short_abandoned, rated),
        "service_level": _ratio(counters.answered_within_sl, counters.answered),
        "service_level_seconds": service_level_seconds,
        "asa_seconds": _ratio(counters.hold_seconds_answered, counters.answered),
        "aht_seconds": _ratio(counters.talk_seconds, counters.completed),
        "longest_wait_seconds": round(longest_wait, 1),
        "waiting_now": waiting_now,
    }


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


class AgentState(StrEnum):
    IDLE = "idle"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"
    UNAVAILABLE = "unavailable"
    LOGGED_OUT = "logged_out"


# Asterisk device states in QueueMemberStatus/QueueMember ``Status``.
_DEVICE_IN_USE = frozenset({2, 3, 7, 8})  # in use, busy, ringing while in use, on hold
_DEVICE_RINGING = frozenset({6})
_DEVICE_UNAVAILABLE = frozenset({4, 5})  # invalid, unavailable


@dataclass(slots=True)
class AgentCounters:
    answered: int = 0
    ring_no_answer: int = 0
    talk_seconds: int = 0


@dataclass(slots=True)
class Agent:
    """One agent's device (interface) across all the queues it is a member of."""

    interface: str
    name: str
    queues: set[str] = field(default_factory=set)
    paused_in: set[str] = field(default_factory=set)
    pause_reason: str = ""
    device_status: int = 0
    on_call_with: str | None = None
    ringing_for: set[str] = field(default_factory=set)
    wrap_up_until: datetime | None = None
    state_since: datetime | None = None
    today: AgentCounters = field(default_factory=AgentCounters)

    def state(self, now: datetime) -> AgentState:
        if not self.queues:
            return AgentState.LOGGED_OUT
        if self.on_call_with is not None or self.device_status in _DEVICE_IN_USE:
            return AgentState.ON_CALL
        if self.device_status in _DEVICE_UNAVAILABLE:
            return AgentState.UNAVAILABLE
        if self.ringing_for or self.device_status in _DEVICE_RINGING:
            return AgentState.RINGING
        if self.paused_in:
            return AgentState.PAUSED
        if self.wrap_up_until is not None and now < self.wrap_up_until:
            return AgentState.WRAP_UP
        return AgentState.IDLE


@dataclass(slots=True)
class _Waiting:
    joined_at: datetime
    uniqueid: str
    offered_counted: bool = True
    hangup_requested: bool = False  # the caller's channel was asked to hang up while waiting
    reported_by_dialplan: bool = False  # queued by our dialplan, which says why Queue() returned


@dataclass(slots=True)
class _Exit:
    """A caller who left a queue; answered, abandoned or timed out is not settled yet."""

    queue: str
    at: datetime
    abandon_hold: int | None  # set when Asterisk reported QueueCallerAbandon
    unrequested: bool = False  # ... that AMI's order may call a timeout (timed_out_in_queue)


@dataclass(slots=True)
class Queue:
    name: str
    service_level_seconds: int
    waiting: dict[str, _Waiting] = field(default_factory=dict)
    today: QueueCounters = field(default_factory=QueueCounters)
    hours: dict[datetime, QueueCounters] = field(default_factory=dict)
    minutes: deque[tuple[datetime, QueueCounters]] = field(
        default_factory=lambda: deque(maxlen=RECENT_MINUTES)
    )
    reported: QueueReported | None = None


class QueueStats:
    """Per-queue and per-agent state; ``handle(event)`` applies one event, never raises."""

    def __init__(
        self,
        zone: ZoneInfo,
        short_abandon_seconds: float = 5.0,
        default_service_level_seconds: int = DEFAULT_SERVICE_LEVEL_SECONDS,
        wrap_up_seconds: float = 0.0,
    ) -> None:
        self._zone = zone
        self._short_abandon = short_abandon_seconds
        self._default_sl = default_service_level_seconds
        self._wrap_up = timedelta(seconds=wrap_up_seconds)
        self.queues: dict[str, Queue] = {}
        self.agents: dict[str, Agent] = {}
        # Callers who left a queue and whose outcome is not settled yet.
        self._left: dict[str, _Exit] = {}
        # A HangupRequest was heard since the AMI login: its absence before an abandon counts.
        self._requests_heard = False
        self._day: datetime | None = None
        self._next_day: datetime | None = None
        self._hour_cache: tuple[datetime, datetime] | None = None
        # Hour buckets to save: None = take the live bucket; a value = totals kept for saving.
        self._dirty_hours: dict[tuple[str, datetime], QueueCounters | None] = {}
        self.anomalies: Counter[str] = Counter()
        self.last_event_at: datetime | None = None
        # What each event type does; a handler returning None changed what supervisors see.
        self._handlers: dict[type, Callable[[Any], bool | None]] = {
            CallerJoinedQueue: self._on_join,
            CallerAbandoned: self._on_abandon,
            CallerLeftQueue: self._on_leave,
            AgentConnected: self._on_connect,
            AgentCompleted: self._on_complete,
            AgentCalled: self._on_agent_called,
            AgentRingNoAnswer: self._on_ring_no_answer,
            ChannelHungUp: self._on_hangup,
            MemberAdded: self._on_member,
            MemberReported: self._on_member,
            MemberRemoved: self._on_member_removed,
            MemberPaused: self._on_member_paused,
            MemberStatus: self._on_member_status,
            QueueReported: self._on_queue_reported,
            CallerReported: self._on_caller_reported,
            QueueExited: self._on_queue_exited,
            HangupRequested: self._on_hangup_requested,
            PbxBooted: self._on_pbx_booted,
        }

    # -- input ---------------------------------------------------------------------------------

    def handle(self, event: DomainEvent) -> bool:
        """Apply ``event``; returns whether anything a supervisor sees has changed."""
        at = event.at
        if at is not None:
            if self._next_day is None or at >= self._next_day:  # the hot path skips the call
                self._roll_day(at)
            self.last_event_at = at
        handler = self._handlers.get(type(event))  # one lookup by exact type, not a match chain
        if handler is None:
            return False
        changed = handler(event)
        return True if changed is None else changed

    def _on_agent_called(self, event: AgentCalled) -> None:
        self._agent(event.interface, event.member_name).ringing_for.add(event.uniqueid)

    def _on_ring_no_answer(self, event: AgentRingNoAnswer) -> None:
        agent = self._agent(event.interface, event.member_name)
        agent.ringing_for.discard(event.uniqueid)
        agent.today.ring_no_answer += 1

    def _on_member_paused(self, event: MemberPaused) -> None:
        self._on_pause(
            event.interface, event.member_name, event.queue, event.paused, event.pause_reason
        )

    def _on_queue_reported(self, event: QueueReported) -> None:
        queue = self._queue(event.queue)
        if event.service_level_seconds > 0:
            queue.service_level_seconds = event.service_level_seconds
        queue.reported = event

    def resync(
        self,
        at: datetime,
        queues: list[QueueReported],
        members: list[MemberReported],
        callers: list[CallerReported],
    ) -> None:
        """Make live state equal to a ``QueueStatus`` answer; counters of the day are kept."""
        self._roll_day(at)
        reported_queues = {report.queue for report in queues}
        for report in queues:
            self.handle(report)
        for queue_name in reported_queues:
            queue = self._queue(queue_name)
            present = {c.uniqueid for c in callers if c.queue == queue_name}
            for uniqueid in [u for u in queue.waiting if u not in present]:
                self.anomalies["waiting-caller-gone-at-resync"] += 1
                del queue.waiting[uniqueid]
        membership = {(m.queue, m.interface) for m in members}
        for agent in self.agents.values():
            for queue_name in [q for q in agent.queues if q in reported_queues]:
                if (queue_name, agent.interface) not in membership:
                    agent.queues.discard(queue_name)
                    agent.paused_in.discard(queue_name)
            agent.ringing_for.clear()
            agent.on_call_with = None
        for member in members:
            self.handle(member)
        for caller in callers:
            self.handle(caller)
        self._left.clear()

    def settle_resync(self) -> None:
        """After the buffered live events are replayed: callers who joined before the snapshot
        and whose join the bridge never saw are offered calls too, counted at their join time."""
        for queue in self.queues.values():
            for waiting in queue.waiting.values():
                if not waiting.offered_counted:
                    waiting.offered_counted = True
                    self._count(queue, waiting.joined_at, offered=1)

    def count_recovered(self, call: CallRecord, already: frozenset[str] = frozenset()) -> bool:
        """Count a call rebuilt from queue_log, at its own times, leaving out the steps live
        events counted already (``already`` holds ``offered``, ``answered``, ``completed``).
        Live agent states are left as the resync made them: the call is over."""
        if call.queue is None or call.entered_queue_at is None:
            return False
        queue = self._queue(call.queue)
        if "offered" not in already:
            self._count(queue, call.entered_queue_at, offered=1)
        agent = self.agents.get(call.agent_interface) if call.agent_interface else None
        hold = call.hold_seconds or 0
        if call.outcome is CallOutcome.ANSWERED:
            if call.answered_at is not None and "answered" not in already:
                within = int(hold <= queue.service_level_seconds)
                self._count(
                    queue,
                    call.answered_at,
                    answered=1,
                    answered_within_sl=within,
                    hold_seconds_answered=hold,
                )
                if agent is not None:
                    agent.today.answered += 1
            talk, ended = call.talk_seconds, call.ended_at
            if talk is not None and ended is not None and "completed" not in already:
                self._count(queue, ended, completed=1, talk_seconds=talk)
                if agent is not None:
                    agent.today.talk_seconds += talk
        elif call.ended_at is not None and call.outcome is CallOutcome.ABANDONED:
            short = int(hold < self._short_abandon)
            self._count(queue, call.ended_at, abandoned=1, short_abandoned=short)
        elif call.ended_at is not None and call.outcome is CallOutcome.TIMEOUT:
            self._count(queue, call.ended_at, timed_out=1)
        return True

    def seed_hours(self, rows: list[tuple[str, datetime, QueueCounters]], now: datetime) -> None:
        """Start from the hour buckets already stored for today (a restart keeps the day)."""
        self._roll_day(now)
        for queue_name, hour, counters in rows:
            if self._day is not None and hour >= self._day:
                queue = self._queue(queue_name)
                queue.hours[hour] = counters.copy()
                queue.today.add(counters)

    # -- handlers ------------------------------------------------------------------------------

    def _on_join(self, event: CallerJoinedQueue) -> None:
        # Back in a queue after leaving one unanswered: that was no hang-up, whatever Asterisk
        # called it (a dialplan that sends timed-out callers on to another queue).
        self._settle(event.uniqueid, timed_out=True)
        queue = self._queue(event.queue)
        known = queue.waiting.get(event.uniqueid)
        if known is not None and known.offered_counted:
            return  # the same join delivered twice
        if known is None:
            known = queue.waiting[event.uniqueid] = _Waiting(event.at, event.uniqueid)
        else:  # first seen in a resync snapshot; this is its real join, so count it now
            known.offered_counted = True
        known.reported_by_dialplan = any(event.route)  # HOTLINE_ROUTE: our dialplan queued it
        self._count(queue, event.at, offered=1)

    def _on_caller_reported(self, event: CallerReported) -> None:
        queue = self._queue(event.queue)
        joined = event.at - timedelta(seconds=event.wait_seconds)
        if event.uniqueid not in queue.waiting:
            queue.waiting[event.uniqueid] = _Waiting(joined, event.uniqueid, offered_counted=False)

    def _on_abandon(self, event: CallerAbandoned) -> None:
        queue = self._queue(event.queue)
        waiting = queue.waiting.pop(event.uniqueid, None)
        if waiting is None:
            self.anomalies["abandon-of-unknown-caller"] += 1
        # A caller not seen waiting leaves nothing but Asterisk's word; our dialplan's user event
        # corrects it for a timeout.
        unrequested = (
            waiting is not None
            and not waiting.hangup_requested
            and not waiting.reported_by_dialplan
        )
        self._exit(event.uniqueid, _Exit(event.queue, event.at, event.hold_seconds, unrequested))
        if timed_out_in_queue(unrequested, self._requests_heard):
            self._settle(event.uniqueid, timed_out=True)
        for agent in self.agents.values():
            agent.ringing_for.discard(event.uniqueid)

    def _on_hangup_requested(self, event: HangupRequested) -> bool:
        if not event.soft:
            self._requests_heard = True
        for queue in self.queues.values():
            waiting = queue.waiting.get(event.uniqueid)
            if waiting is not None:
                waiting.hangup_requested = True
        return False

    def _on_pbx_booted(self, event: PbxBooted) -> bool:
        """A new login may come through a manager account that filters hang-up requests."""
        self._requests_heard = False
        return False

    def _on_leave(self, event: CallerLeftQueue) -> None:
        queue = self._queue(event.queue)
        if queue.waiting.pop(event.uniqueid, None) is None:
            return  # after QueueCallerAbandon, or a caller we never saw join
        self._exit(event.uniqueid, _Exit(event.queue, event.at, None))

    def _exit(self, uniqueid: str, exit_: _Exit) -> None:
        self._left[uniqueid] = exit_
        if len(self._left) > MAX_LEFT_CALLERS:
            self._settle(next(iter(self._left)), timed_out=False)
            self.anomalies["left-callers-overflow"] += 1

    def _settle(self, uniqueid: str, timed_out: bool) -> bool:
        exit_ = self._left.pop(uniqueid, None)
        if exit_ is None:
            return False
        queue = self._queue(exit_.queue)
        if (
            timed_out
            or exit_.abandon_hold is None
            or timed_out_in_queue(exit_.unrequested, self._requests_heard)
        ):
            self._count(queue, exit_.at, timed_out=1)
        else:
            short = int(exit_.abandon_hold < self._short_abandon)
            self._count(queue, exit_.at, abandoned=1, short_abandoned=short)
        return True

    def _on_queue_exited(self, event: QueueExited) -> bool:
        """Queue() returned without a hangup: whatever Asterisk called it, not an abandon."""
        return self._settle(event.uniqueid, timed_out=True)

    def _on_connect(self, event: AgentConnected) -> None:
        queue = self._queue(event.queue)
        left = self._left.pop(event.uniqueid, None)
        if left is None and queue.waiting.pop(event.uniqueid, None) is None:
            self.anomalies["connect-of-unknown-caller"] += 1
        within = int(event.hold_seconds <= queue.service_level_seconds)
        self._count(
            queue,
            event.at,
            answered=1,
            answered_within_sl=within,
            hold_seconds_answered=event.hold_seconds,
        )
        agent = self._agent(event.interface, event.member_name)
        agent.ringing_for.discard(event.uniqueid)
        agent.on_call_with = event.uniqueid
        agent.wrap_up_until = None
        agent.state_since = event.at
        agent.today.answered += 1
        for other in self.agents.values():
            other.ringing_for.discard(event.uniqueid)

    def _on_complete(self, event: AgentCompleted) -> None:
        queue = self._queue(event.queue)
        self._count(queue, event.at, completed=1, talk_seconds=event.talk_seconds)
        agent = self._agent(event.interface, event.member_name)
        agent.today.talk_seconds += event.talk_seconds
        if agent.on_call_with == event.uniqueid:
            agent.on_call_with = None
        agent.wrap_up_until = event.at + self._wrap_up
        agent.state_since = event.at

    def _on_hangup(self, event: ChannelHungUp) -> bool:
        if self._settle(event.uniqueid, timed_out=False):
            return True
        changed = False
        for queue in self.queues.values():
            if queue.waiting.pop(event.uniqueid, None) is not None:
                # Hung up in a queue without QueueCallerAbandon: only if events were lost.
                self.anomalies["hangup-while-waiting"] += 1
                self._count(queue, event.at, abandoned=1)
                changed = True
        return changed

    def _on_member(self, event: MemberAdded | MemberReported) -> None:
        agent = self._agent(event.interface, event.member_name)
        agent.queues.add(event.queue)
        self._on_pause(
            event.interface, event.member_name, event.queue, event.paused, event.pause_reason
        )
        if isinstance(event, MemberReported):
            agent.device_status = event.device_status

    def _on_member_removed(self, event: MemberRemoved) -> None:
        agent = self._agent(event.interface, event.member_name)
        agent.queues.discard(event.queue)
        agent.paused_in.discard(event.queue)
        agent.state_since = event.at

    def _on_pause(self, interface: str, name: str, queue: str, paused: bool, reason: str) -> None:
        agent = self._agent(interface, name)
        if paused:
            agent.paused_in.add(queue)
            agent.pause_reason = reason
        else:
            agent.paused_in.discard(queue)
            if not agent.paused_in:
                agent.pause_reason = ""

    def _on_member_status(self, event: MemberStatus) -> None:
        agent = self._agent(event.interface, event.member_name)
        agent.queues.add(event.queue)
        agent.device_status = event.device_status
        if event.device_status not in _DEVICE_RINGING:
            agent.ringing_for.clear()
        self._on_pause(
            event.interface, event.member_name, event.queue, event.paused, event.pause_reason
        )

    # -- windows -------------------------------------------------------------------------------

    def _count(self, queue: Queue, at: datetime, **amounts: int) -> None:
        if self._day is not None and at < self._day:
            self.anomalies["event-from-a-past-day"] += 1
            return
        hour = self._hour_of(at)
        bucket = queue.hours.get(hour)
        if bucket is None:
            bucket = queue.hours[hour] = QueueCounters()
        self._dirty_hours[(queue.name, hour)] = None
        minute = at.replace(second=0, microsecond=0)
        minutes = queue.minutes
        if not minutes or minutes[-1][0] < minute:
            minutes.append((minute, QueueCounters()))
        latest, newest = minutes[-1]
        recent: QueueCounters | None = newest
        if latest != minute:  # an event older than the newest minute (the clock went back)
            recent = next((c for start, c in reversed(minutes) if start <= minute), None)
        windows = (queue.today, bucket) if recent is None else (queue.today, bucket, recent)
        for name, amount in amounts.items():
            for counters in windows:
                setattr(counters, name, getattr(counters, name) + amount)

    def _hour_of(self, at: datetime) -> datetime:
        """Start of the local hour holding ``at`` (zones with half-hour offsets included)."""
        if self._hour_cache is not None and self._hour_cache[0] <= at < self._hour_cache[1]:
            return self._hour_cache[0]
        local = at.astimezone(self._zone)
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        self._hour_cache = (start, start + timedelta(hours=1))
        return start

    def _roll_day(self, at: datetime) -> None:
        if self._next_day is not None and at < self._next_day:
            return
        local = at.astimezone(self._zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
        following = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        self._next_day = following.astimezone(UTC)
        if self._day is None or midnight > self._day:
            if self._day is not None:
                for queue in self.queues.values():
                    for hour, counters in queue.hours.items():
                        if hour < midnight and (queue.name, hour) in self._dirty_hours:
                            self._dirty_hours[(queue.name, hour)] = counters.copy()
                    queue.today = QueueCounters()
                    queue.hours = {h: c for h, c in queue.hours.items() if h >= midnight}
                for agent in self.agents.values():
                    agent.today = AgentCounters()
            self._day = midnight

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def return_dirty_hours(self, buckets: list[tuple[str, datetime, QueueCounters]]) -> None:
        """Put back buckets whose save failed, so the next flush tries them again."""
        for queue_name, hour, totals in buckets:
            self._dirty_hours.setdefault((queue_name, hour), totals)

    def take_dirty_hours(self) -> list[tuple[str, datetime, QueueCounters]]:
        """Hour buckets changed since the last call, as totals (for an upsert), then forgotten."""
        taken = []
        for (queue_name, hour), kept in self._dirty_hours.items():
            totals = kept if kept is not None else self.queues[queue_name].hours.get(hour)
            if totals is not None:
                taken.append((queue_name, hour, totals.copy()))
        self._dirty_hours.clear()
        return taken

    # -- output --------------------------------------------------------------------------------

    def _queue(self, name: str) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = Queue(name, self._default_sl)
        return queue

    def _agent(self, interface: str, name: str) -> Agent:
        agent = self.agents.get(interface)
        if agent is None:
            agent = self.agents[interface] = Agent(interface, name or interface)
        elif name and name != interface:
            agent.name = name
        return agent

    def recent(self, queue: Queue, now: datetime) -> QueueCounters:
        """Counts of the last 15 minutes (whole minutes) ending at ``now``."""
        since = now.replace(second=0, microsecond=0) - timedelta(minutes=RECENT_MINUTES - 1)
        total = QueueCounters()
        for start, counters in queue.minutes:
            if start >= since:
                total.add(counters)
        return total

    def snapshot(self, now: datetime) -> dict[str, Any]:
        """Today's figures per queue and the agents' board, as ``hotline replay --json`` prints."""
        queues = {}
        for name, queue in sorted(self.queues.items()):
            longest = max(
                ((now - w.joined_at).total_seconds() for w in queue.waiting.values()), default=0.0
            )
            queues[name] = queue_figures(
                queue.today, queue.service_level_seconds, len(queue.waiting), max(0.0, longest)
            )
        agents = {}
        for interface, agent in sorted(self.agents.items()):
            agents[interface] = {
                "name": agent.name,
                "state": agent.state(now).value,
                "paused": bool(agent.paused_in),
                "pause_reason": agent.pause_reason,
                "answered": agent.today.answered,
                "ring_no_answer": agent.today.ring_no_answer,
                "talk_seconds": agent.today.talk_seconds,
            }
        return {"queues": queues, "agents": agents}

    def recent_snapshot(self, now: datetime) -> dict[str, Any]:
        return {
            name: queue_figures(
                self.recent(queue, now), queue.service_level_seconds, len(queue.waiting), 0.0
            )
            for name, queue in sorted(self.queues.items())
        }

    def hourly_snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Today by local hour, per queue: ``{"hotline": {"09": {offered, answered, ...}}}``."""
        return {
            name: {
                f"{hour.astimezone(self._zone):%H}": {
                    "offered": counters.offered,
                    "answered": counters.answered,
                    "abandoned": counters.abandoned,
                    "answer_rate": queue_figures(counters, queue.service_level_seconds, 0, 0.0)[
                        "answer_rate"
                    ],
                }
                for hour, counters in sorted(queue.hours.items())
            }
            for name, queue in sorted(self.queues.items())
        }

    def counts_snapshot(self, now: datetime) -> dict[str, Any]:
        """The additive counts behind the figures (today, last 15 minutes, by local hour), and
        each queue's service-level threshold: what merging several PBXs' figures needs."""
        return {
            name: {
                "service_level_seconds": queue.service_level_seconds,
                "today": asdict(queue.today),
                "recent": asdict(self.recent(queue, now)),
                "hours": {
                    f"{hour.astimezone(self._zone):%H}": asdict(counters)
                    for hour, counters in sorted(queue.hours.items())
                },
            }
            for name, queue in sorted(self.queues.items())
        }

    def waiting_callers(self, now: datetime) -> dict[str, list[dict[str, Any]]]:
        return {
            name: [
                {"uniqueid": w.uniqueid, "wait_seconds": round((now - w.joined_at).total_seconds())}
                for w in sorted(queue.waiting.values(), key=lambda w: w.joined_at)
            ]
            for name, queue in sorted(self.queues.items())
        }
