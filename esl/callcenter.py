"""FreeSWITCH's mod_callcenter, in the call-center facts the statistics and the journal take.

Pure: ``CallcenterTranslator.translate(event)`` gives the facts one Event Socket event means, in
order. It keeps a little state because FreeSWITCH tells some facts in another order than the
facts' consumers need (all seen in the recorded 1.11 sessions):

- A caller who hangs up while waiting: the member channel's ``CHANNEL_HANGUP_COMPLETE`` comes
  first, then ``member-queue-end`` with ``Cancel``/``BREAK_OUT``. The hang-up is held back and
  told after the abandon, as Asterisk tells them.
- A caller who timed out (``TIMEOUT``) or pressed an exit key (``EXIT_WITH_KEY``) is still on
  the line: the dialplan goes on after ``callcenter``, and the channel's hang-up comes later
  with a normal clearing. So the exit is told as leaving the queue, not as an abandon.
- An answered call's ``member-queue-end`` (``Terminated``) comes after the whole call; the
  answer is ``bridge-agent-start``, the end of the talk ``bridge-agent-end``.
- ``bridge-agent-fail`` with ``ORIGINATOR_CANCEL`` is the caller giving up while the agent
  rang: not the agent's no-answer (FreeSWITCH does not count it against the agent either).

mod_callcenter's own times (``CC-*-Time``) are whole epoch seconds, sampled a moment apart from
the CDR's ``cc_queue_*_epoch`` variables: hold and ring seconds come from them, and may differ
by a second from the CDR's (2 of 45 answered calls in the recordings). Talk seconds are the
agent leg's ``billsec``, which ``bridge-agent-end`` carries: the CDR's own figure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar

from esl.codec import EslEvent
from pbx.facts import (
    AgentCalled,
    AgentCompleted,
    AgentConnected,
    AgentRingNoAnswer,
    CallerAbandoned,
    CallerJoinedQueue,
    CallerLeftQueue,
    ChannelHungUp,
    DomainEvent,
    HangupRequested,
    MemberAdded,
    MemberPaused,
    MemberRemoved,
    MemberStatus,
    QueueExited,
    RecordingFinished,
)

CALLCENTER_SUBCLASS = "callcenter::info"
CALLER_CANCELLED_RING = "ORIGINATOR_CANCEL"
MAX_REMEMBERED_MEMBERS = 10_000
# Agent states (agent-state-change, and the "state" column of agent lists) as the device states
# the statistics know from Asterisk: in use, ringing, or free.
DEVICE_IN_USE, DEVICE_RINGING, DEVICE_FREE = 2, 6, 1
DEVICE_OF_STATE = {"In a queue call": DEVICE_IN_USE, "Receiving": DEVICE_RINGING}
PAUSED_STATUS = "On Break"
LOGGED_OUT_STATUS = "Logged Out"
# member-queue-end's CC-Cancel-Reason, as the status Asterisk's dialplan sees (QUEUESTATUS).
EXIT_STATUS = {"TIMEOUT": "TIMEOUT", "EXIT_WITH_KEY": "EXITWITHKEY", "NO_AGENT_TIMEOUT": "TIMEOUT"}


class EslEventError(ValueError):
    """A wanted event without a field it must have."""


def event_time(event: EslEvent) -> datetime:
    """When FreeSWITCH created the event (``Event-Date-Timestamp``, µs since the epoch)."""
    stamp = event.timestamp_us
    if stamp is None:
        raise EslEventError(f"{event.name or 'an event'} without Event-Date-Timestamp")
    return datetime.fromtimestamp(stamp / 1_000_000, tz=UTC)


def _seconds_between(event: EslEvent, start: str, end: str) -> int:
    first, last = event.get(start), event.get(end)
    if not (first.isdigit() and last.isdigit()) or int(first) == 0:
        return 0
    return max(int(last) - int(first), 0)


def _talk_seconds(event: EslEvent) -> int:
    """The agent leg's ``billsec`` that ``bridge-agent-end`` carries (what the CDR will say);
    mod_callcenter's whole-second stamps were a second off it in 4 of 45 recorded calls."""
    billed = event.get("variable_billsec")
    if billed.isdigit():
        return int(billed)
    return _seconds_between(event, "CC-Agent-Answered-Time", "CC-Bridge-Terminated-Time")


def _required(event: EslEvent, name: str) -> str:
    value = event.get(name)
    if not value:
        raise EslEventError(f"{event.get('CC-Action') or event.name} without {name}")
    return value


class CallcenterTranslator:
    """One Event Socket connection's events, as call-center facts."""

    def __init__(self) -> None:
        self._members: dict[str, str] = {}  # member session uuid -> its queue, while waiting
        self._held_hangups: dict[str, ChannelHungUp] = {}
        # Agents' queues: from the tiers at a resync, and from each offer (mod_callcenter
        # sends no event when a tier is added or removed). Their status: Available, On Break...
        self._agent_queues: dict[str, set[str]] = {}
        self._agent_status: dict[str, str] = {}
        self._pause_reasons: dict[str, str] = {}  # given from the panel; FreeSWITCH keeps none
        self.counters: Counter[str] = Counter()

    def pause_reason(self, agent: str, reason: str) -> None:
        """The reason to show with this agent's next break (FreeSWITCH's status has none)."""
        self._pause_reasons[agent] = reason

    def tier_changed(self, queue: str, agent: str, added: bool, at: datetime) -> list[DomainEvent]:
        """A tier FreeSWITCH accepted (``tier add``/``del``): it sends no event of its own."""
        queues = self._agent_queues.setdefault(agent, set())
        if added:
            if queue in queues:
                return []
            queues.add(queue)
            reason = self._reason_of(agent)
            return [MemberAdded(at, queue, agent, agent, bool(reason), reason)]
        if queue not in queues:
            return []
        queues.discard(queue)
        return [MemberRemoved(at, queue, agent, agent)]

    def _reason_of(self, agent: str) -> str:
        """The pause reason to show, or "" when the agent is not on a break."""
        if self._agent_status.get(agent) != PAUSED_STATUS:
            return ""
        return self._pause_reasons.get(agent) or PAUSED_STATUS

    def adopt_present(
        self, tiers: dict[str, set[str]], statuses: dict[str, str], waiting: dict[str, str]
    ) -> None:
        """At a resync: each agent's queues (tiers) and status, and the callers waiting (session
        -> queue), as FreeSWITCH lists them now; what was learnt before the resync is dropped."""
        self._agent_queues = {agent: set(queues) for agent, queues in tiers.items()}
        self._agent_status = dict(statuses)
        self._members = dict(waiting)
        self._held_hangups = {s: h for s, h in self._held_hangups.items() if s in waiting}

    def translate(self, event: EslEvent) -> list[DomainEvent]:
        name = event.name
        if name == "CUSTOM" and event.subclass == CALLCENTER_SUBCLASS:
            return self._callcenter(event)
        if name == "CHANNEL_HANGUP_COMPLETE":
            return self._hangup(event)
        if name == "RECORD_STOP" and event.get("Record-File-Path") and event.get("Unique-ID"):
            uuid = event.get("Unique-ID")
            return [
                RecordingFinished(
                    event_time(event),
                    uuid,
                    event.get("Channel-Call-UUID") or uuid,
                    event.get("Channel-Name"),
                    event.get("Record-File-Path"),
                )
            ]
        return []

    def _hangup(self, event: EslEvent) -> list[DomainEvent]:
        uuid = event.get("Unique-ID")
        if not uuid:
            return []
        cause = event.get("variable_hangup_cause_q850")
        hung_up = ChannelHungUp(
            event_time(event),
            uuid,
            event.get("Channel-Call-UUID") or uuid,
            event.get("Channel-Name"),
            int(cause) if cause.isdigit() else 0,
            event.get("Hangup-Cause"),
        )
        if uuid in self._members:  # still waiting: its member-queue-end follows
            self._held_hangups[uuid] = hung_up
            return []
        return [hung_up]

    def _callcenter(self, event: EslEvent) -> list[DomainEvent]:
        action = event.get("CC-Action")
        self.counters[action or "(no action)"] += 1
        handler = self._ACTIONS.get(action)
        return [] if handler is None else handler(self, event)

    def _ids(self, event: EslEvent) -> tuple[datetime, str, str]:
        session = _required(event, "CC-Member-Session-UUID")
        return event_time(event), session, session

    def _agent_fields(
        self, event: EslEvent, agent_channel: str
    ) -> tuple[datetime, str, str, str, str, str, str, str]:
        """What every agent fact starts with: when, the caller's ids, queue, agent, its channel."""
        at, session, linked = self._ids(event)
        agent = _required(event, "CC-Agent")
        return at, session, linked, "", _required(event, "CC-Queue"), agent, agent, agent_channel

    def _joined(self, event: EslEvent) -> list[DomainEvent]:
        at, session, linked = self._ids(event)
        queue = _required(event, "CC-Queue")
        self._members[session] = queue
        while len(self._members) > MAX_REMEMBERED_MEMBERS:  # ends that never came
            self._members.pop(next(iter(self._members)))
            self.counters["members_forgotten"] += 1
        return [
            CallerJoinedQueue(
                at,
                session,
                linked,
                event.get("Channel-Name"),
                queue,
                event.get("CC-Member-CID-Number"),
                event.get("CC-Member-CID-Name"),
                0,
            )
        ]

    def _offered(self, event: EslEvent) -> list[DomainEvent]:
        at, session, linked = self._ids(event)
        agent = _required(event, "CC-Agent")
        queue = _required(event, "CC-Queue")
        facts: list[DomainEvent] = []
        queues = self._agent_queues.setdefault(agent, set())
        if queue not in queues:  # a tier we had not seen: the agent serves this queue
            queues.add(queue)
            reason = self._reason_of(agent)
            facts.append(MemberAdded(at, queue, agent, agent, bool(reason), reason))
        facts.append(AgentCalled(at, session, linked, "", queue, agent, agent, ""))
        return facts

    def _status_changed(self, event: EslEvent) -> list[DomainEvent]:
        """Available, On Break (a pause, its reason the status) or Logged Out, in every queue."""
        at, agent = event_time(event), _required(event, "CC-Agent")
        status = event.get("CC-Agent-Status")
        self._agent_status[agent] = status
        queues = sorted(self._agent_queues.get(agent, ()))
        if status == LOGGED_OUT_STATUS:
            self._agent_queues.pop(agent, None)
            return [MemberRemoved(at, queue, agent, agent) for queue in queues]
        if status != PAUSED_STATUS:
            self._pause_reasons.pop(agent, None)
        reason = self._reason_of(agent)
        return [MemberPaused(at, queue, agent, agent, bool(reason), reason) for queue in queues]

    def _state_changed(self, event: EslEvent) -> list[DomainEvent]:
        """Waiting, Receiving (ringing), In a queue call: the agent's phone, in every queue."""
        at, agent = event_time(event), _required(event, "CC-Agent")
        state = event.get("CC-Agent-State")
        device = DEVICE_OF_STATE.get(state, DEVICE_FREE)
        reason, busy = self._reason_of(agent), device == DEVICE_IN_USE
        return [
            MemberStatus(at, queue, agent, agent, device, bool(reason), reason, busy)
            for queue in sorted(self._agent_queues.get(agent, ()))
        ]

    def _bridged(self, event: EslEvent) -> list[DomainEvent]:
        fields = self._agent_fields(event, event.get("Channel-Name"))
        self._members.pop(fields[1], None)
        return [
            AgentConnected(
                *fields,
                hold_seconds=_seconds_between(
                    event, "CC-Member-Joined-Time", "CC-Agent-Answered-Time"
                ),
                ring_seconds=_seconds_between(
                    event, "CC-Agent-Called-Time", "CC-Agent-Answered-Time"
                ),
            )
        ]

    def _bridge_ended(self, event: EslEvent) -> list[DomainEvent]:
        return [
            AgentCompleted(
                *self._agent_fields(event, event.get("Channel-Name")),
                hold_seconds=_seconds_between(
                    event, "CC-Member-Joined-Time", "CC-Agent-Answered-Time"
                ),
                talk_seconds=_talk_seconds(event),
                reason=event.get("CC-Hangup-Cause"),
            )
        ]

    def _not_answered(self, event: EslEvent) -> list[DomainEvent]:
        if event.get("CC-Hangup-Cause") == CALLER_CANCELLED_RING:
            return []
        return [
            AgentRingNoAnswer(
                *self._agent_fields(event, ""),
                ring_seconds=_seconds_between(
                    event, "CC-Agent-Called-Time", "CC-Agent-Aborted-Time"
                ),
            )
        ]

    def _left(self, event: EslEvent) -> list[DomainEvent]:
        at, session, linked = self._ids(event)
        queue = _required(event, "CC-Queue")
        self._members.pop(session, None)
        held = self._held_hangups.pop(session, None)
        facts: list[DomainEvent] = []
        if event.get("CC-Cause") == "Cancel":
            reason = event.get("CC-Cancel-Reason")
            status = EXIT_STATUS.get(reason)
            if status is None:  # BREAK_OUT: the caller hung up, as Asterisk's order would say
                hold = _seconds_between(event, "CC-Member-Joined-Time", "CC-Member-Leaving-Time")
                cause = held.cause if held is not None else 0
                facts.append(HangupRequested(at, session, linked, "", cause, soft=False))
                facts.append(CallerAbandoned(at, session, linked, "", queue, hold, 0, 0))
            else:
                facts.append(CallerLeftQueue(at, session, linked, "", queue))
                facts.append(QueueExited(at, session, linked, "", queue, status))
        if held is not None:
            facts.append(held)
        return facts

    _ACTIONS: ClassVar[dict[str, Callable[[CallcenterTranslator, EslEvent], list[DomainEvent]]]] = {
        "member-queue-start": _joined,
        "agent-offering": _offered,
        "bridge-agent-start": _bridged,
        "bridge-agent-end": _bridge_ended,
        "bridge-agent-fail": _not_answered,
        "member-queue-end": _left,
        "agent-status-change": _status_changed,
        "agent-state-change": _state_changed,
    }
