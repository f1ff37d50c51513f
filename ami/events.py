"""AMI messages made into the PBX-neutral facts of ``pbx.facts``, through one explicit
name-to-parser table.

Only the events named in ``EVENT_PARSERS`` are ever parsed; ``WANTED_EVENTS`` is what the codec
keeps. Every event carries ``at``: the ``Timestamp`` Asterisk adds when ``timestampevents`` is on,
or the time the shell received it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from ami.codec import AmiMessage
from pbx.facts import (
    AgentCalled,
    AgentCompleted,
    AgentConnected,
    AgentRingNoAnswer,
    CallbackAgentMissed,
    CallbackDialled,
    CallerAbandoned,
    CallerJoinedQueue,
    CallerLeftQueue,
    CallerReported,
    CallRated,
    ChannelCreated,
    ChannelHungUp,
    ChannelReported,
    DialAnswered,
    DialStarted,
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
    RecordingStarted,
    SurveyOffered,
    VisitRated,
)

log = logging.getLogger(__name__)


class AmiEventError(ValueError):
    """A wanted event lacks a header it must have, or has one that does not parse."""


QUEUE_RESULT_EVENT = "HotlineQueueResult"
RATING_EVENT = "HotlineRating"
SURVEY_EVENT = "HotlineSurvey"
CALLBACK_EVENT = "HotlineCallback"
CALLBACK_AGENT_EVENT = "HotlineCallbackAgent"
VISIT_RATING_EVENT = "HotlineVisitRating"


def _text(message: Mapping[str, str], name: str) -> str:
    try:
        return message[name]
    except KeyError:
        raise AmiEventError(f"{message.get('Event', '?')} without {name}") from None


def _number(message: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = message.get(name)
    if raw is None or raw == "":
        if default is not None:
            return default
        raise AmiEventError(f"{message.get('Event', '?')} without {name}")
    try:
        return int(raw)
    except ValueError:
        raise AmiEventError(f"{message.get('Event', '?')} has {name}={raw!r}") from None


def _caller_id(value: str | None) -> str:
    return "" if value in (None, "<unknown>") else value


def interface_of(channel: str) -> str:
    """``PJSIP/agent1-0000002a`` is a channel of the device ``PJSIP/agent1``."""
    head, sep, tail = channel.rpartition("-")
    # ``not tail.strip(HEX)``: every character of the tail is a hex digit, found in C.
    if sep and head and len(tail) >= 8 and not tail.strip("0123456789abcdef"):
        return head
    return channel


def _ids(message: Mapping[str, str]) -> tuple[str, str, str]:
    """(uniqueid, linkedid, channel): the fields every ChannelEvent starts with."""
    uniqueid = message.get("Uniqueid")
    channel = message.get("Channel")
    if not uniqueid or channel is None:
        raise AmiEventError(f"{message.get('Event', '?')} without Uniqueid or Channel")
    return uniqueid, message.get("Linkedid") or uniqueid, channel


def _agent_ids(message: Mapping[str, str]) -> tuple[str, str, str, str, str, str, str]:
    """The channel fields plus (queue, interface, member name, agent channel)."""
    interface = message.get("Interface")
    queue = message.get("Queue")
    if not interface or queue is None:
        raise AmiEventError(f"{message.get('Event', '?')} without Queue or Interface")
    return (
        *_ids(message),
        queue,
        interface,
        message.get("MemberName", ""),
        message.get("DestChannel", ""),
    )


ROUTE_VARIABLE = "HOTLINE_ROUTE="


def _route_of(message: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(routing reason, ticket) the dialplan recorded on the caller's channel, or Nones.

    manager.conf's ``channelvars`` puts ``HOTLINE_ROUTE=<reason>/<ticket>`` on every event of the
    channel, so a bridge process that did not route the call (``hotline agi`` runs apart) and
    calls routed by the dialplan's own fallback are known too. Only the event's own channel
    counts (``ChanVariable``, not ``DestChanVariable``).
    """
    value = message.get("ChanVariable")
    if not value or not value.startswith(ROUTE_VARIABLE):
        return None, None
    reason, _, ticket = value[len(ROUTE_VARIABLE) :].strip().partition("/")
    return reason or None, ticket or None


def _newchannel(m: Mapping[str, str], at: datetime) -> ChannelCreated:
    return ChannelCreated(
        at,
        *_ids(m),
        _caller_id(m.get("CallerIDNum")),
        _caller_id(m.get("CallerIDName")),
        m.get("Context", ""),
        m.get("Exten", ""),
    )


def _hangup(m: Mapping[str, str], at: datetime) -> ChannelHungUp:
    return ChannelHungUp(at, *_ids(m), _number(m, "Cause", default=0), m.get("Cause-txt", ""))


def _hangup_request(m: Mapping[str, str], at: datetime) -> HangupRequested:
    return HangupRequested(at, *_ids(m), _number(m, "Cause", default=0), soft=False)


def _soft_hangup_request(m: Mapping[str, str], at: datetime) -> HangupRequested:
    return HangupRequested(at, *_ids(m), _number(m, "Cause", default=0), soft=True)


def _caller_join(m: Mapping[str, str], at: datetime) -> CallerJoinedQueue:
    return CallerJoinedQueue(
        at,
        *_ids(m),
        _text(m, "Queue"),
        _caller_id(m.get("CallerIDNum")),
        _caller_id(m.get("CallerIDName")),
        _number(m, "Position", default=0),
        route=_route_of(m),
    )


def _caller_leave(m: Mapping[str, str], at: datetime) -> CallerLeftQueue:
    return CallerLeftQueue(at, *_ids(m), _text(m, "Queue"))


def _caller_abandon(m: Mapping[str, str], at: datetime) -> CallerAbandoned:
    return CallerAbandoned(
        at,
        *_ids(m),
        _text(m, "Queue"),
        _number(m, "HoldTime", default=0),
        _number(m, "Position", default=0),
        _number(m, "OriginalPosition", default=0),
    )


def _agent_called(m: Mapping[str, str], at: datetime) -> AgentCalled:
    return AgentCalled(at, *_agent_ids(m))


def _agent_ring_no_answer(m: Mapping[str, str], at: datetime) -> AgentRingNoAnswer:
    ring_milliseconds = _number(m, "RingTime", default=0)  # milliseconds here, unlike Connect
    return AgentRingNoAnswer(at, *_agent_ids(m), ring_milliseconds // 1000)


def _agent_connect(m: Mapping[str, str], at: datetime) -> AgentConnected:
    return AgentConnected(
        at,
        *_agent_ids(m),
        _number(m, "HoldTime", default=0),
        _number(m, "RingTime", default=0),
        route=_route_of(m),
    )


def _agent_complete(m: Mapping[str, str], at: datetime) -> AgentCompleted:
    return AgentCompleted(
        at,
        *_agent_ids(m),
        _number(m, "HoldTime", default=0),
        _number(m, "TalkTime", default=0),
        m.get("Reason", ""),
    )


def _dial_begin(m: Mapping[str, str], at: datetime) -> DialStarted | None:
    # No caller channel: an Originate (a callback) dials on nobody's behalf.
    if not m.get("DestChannel") or not m.get("Uniqueid"):
        return None
    return DialStarted(at, *_ids(m), m["DestChannel"], interface_of(m["DestChannel"]))


def _dial_end(m: Mapping[str, str], at: datetime) -> DialAnswered | None:
    if m.get("DialStatus") != "ANSWER" or not m.get("DestChannel") or not m.get("Uniqueid"):
        return None
    return DialAnswered(
        at, *_ids(m), m["DestChannel"], interface_of(m["DestChannel"]), route=_route_of(m)
    )


def _flag(message: Mapping[str, str], name: str) -> bool:
    value = message.get(name, "0")
    if value == "0" or value == "1":  # what Asterisk sends: no need to normalise
        return value == "1"
    return value.strip().lower() in ("1", "true", "yes")


def _member(message: Mapping[str, str], at: datetime) -> tuple[datetime, str, str, str]:
    """(at, queue, interface, member name): the fields every ``MemberEvent`` starts with."""
    interface = message.get("Interface") or message.get("Location")
    if not interface:
        raise AmiEventError(f"{message.get('Event', '?')} without Interface")
    name = message.get("MemberName") or message.get("Name") or interface
    return at, _text(message, "Queue"), interface, name


def _member_added(m: Mapping[str, str], at: datetime) -> MemberAdded:
    return MemberAdded(
        *_member(m, at), paused=_flag(m, "Paused"), pause_reason=m.get("PausedReason", "")
    )


def _member_removed(m: Mapping[str, str], at: datetime) -> MemberRemoved:
    return MemberRemoved(*_member(m, at))


def _member_pause(m: Mapping[str, str], at: datetime) -> MemberPaused:
    reason = m.get("PausedReason") or m.get("Reason") or ""
    return MemberPaused(*_member(m, at), paused=_flag(m, "Paused"), pause_reason=reason)


def _member_status(m: Mapping[str, str], at: datetime) -> MemberStatus:
    return MemberStatus(
        *_member(m, at),
        device_status=_number(m, "Status", default=0),
        paused=_flag(m, "Paused"),
        pause_reason=m.get("PausedReason", ""),
        in_call=_flag(m, "InCall"),
    )


def _queue_member(m: Mapping[str, str], at: datetime) -> MemberReported:
    return MemberReported(
        *_member(m, at),
        device_status=_number(m, "Status", default=0),
        paused=_flag(m, "Paused"),
        pause_reason=m.get("PausedReason", ""),
        in_call=_flag(m, "InCall"),
        calls_taken=_number(m, "CallsTaken", default=0),
    )


def _queue_params(m: Mapping[str, str], at: datetime) -> QueueReported:
    return QueueReported(
        at=at,
        queue=_text(m, "Queue"),
        service_level_seconds=_number(m, "ServiceLevel", default=0),
        completed=_number(m, "Completed", default=0),
        abandoned=_number(m, "Abandoned", default=0),
        waiting=_number(m, "Calls", default=0),
    )


def _queue_entry(m: Mapping[str, str], at: datetime) -> CallerReported:
    return CallerReported(
        at=at,
        queue=_text(m, "Queue"),
        uniqueid=_text(m, "Uniqueid"),
        linkedid=m.get("Linkedid") or _text(m, "Uniqueid"),
        channel=m.get("Channel", ""),
        caller_number=_caller_id(m.get("CallerIDNum")),
        caller_name=_caller_id(m.get("CallerIDName")),
        position=_number(m, "Position", default=0),
        wait_seconds=_number(m, "Wait", default=0),
    )


def _core_show_channel(m: Mapping[str, str], at: datetime) -> ChannelReported:
    return ChannelReported(
        at=at,
        uniqueid=_text(m, "Uniqueid"),
        linkedid=m.get("Linkedid") or _text(m, "Uniqueid"),
        channel=_text(m, "Channel"),
        context=m.get("Context", ""),
    )


def _mixmonitor_start(m: Mapping[str, str], at: datetime) -> RecordingStarted:
    return RecordingStarted(at, *_ids(m))


UserFact = (
    QueueExited | SurveyOffered | CallRated | CallbackDialled | CallbackAgentMissed | VisitRated
)


def _user_event(m: Mapping[str, str], at: datetime) -> UserFact | None:
    kind = m.get("UserEvent")
    if kind == QUEUE_RESULT_EVENT:
        return QueueExited(at, *_ids(m), m.get("Queue", ""), m.get("Status", "").upper())
    if kind == SURVEY_EVENT:
        talk = m.get("Talk", "")
        return SurveyOffered(
            at,
            *_ids(m),
            agent=m.get("Agent", ""),
            queue=m.get("Queue", ""),
            talk_seconds=int(talk) if talk.isdigit() else None,
        )
    if kind == CALLBACK_EVENT:
        started = _number(m, "Started", default=0)
        return CallbackDialled(
            at,
            *_ids(m),
            callback=_number(m, "Callback"),
            ticket=m.get("Ticket", ""),
            number=m.get("Number", ""),
            agent=m.get("Agent", ""),
            status=m.get("Status", "").upper(),
            talk_seconds=_number(m, "Answered", default=0),
            started_at=datetime.fromtimestamp(started, tz=UTC) if started else at,
        )
    if kind == CALLBACK_AGENT_EVENT:
        return CallbackAgentMissed(
            at, _number(m, "Callback"), m.get("Agent", ""), m.get("Status", "").upper()
        )
    if kind == VISIT_RATING_EVENT:
        return VisitRated(
            at,
            ticket=_text(m, "Ticket"),
            rating=_text(m, "Rating"),
            key=m.get("Key", ""),
            agent=m.get("Agent", ""),
        )
    if kind == RATING_EVENT:
        return CallRated(
            at,
            *_ids(m),
            rating=_text(m, "Rating"),
            key=m.get("Key", ""),
            agent=m.get("Agent", ""),
            queue=m.get("Queue", ""),
        )
    return None


def _fully_booted(m: Mapping[str, str], at: datetime) -> PbxBooted:
    return PbxBooted(at=at)


EventParser = Callable[[Mapping[str, str], datetime], DomainEvent | None]

EVENT_PARSERS: dict[str, EventParser] = {
    "Newchannel": _newchannel,
    "Hangup": _hangup,
    "HangupRequest": _hangup_request,
    "SoftHangupRequest": _soft_hangup_request,
    "QueueCallerJoin": _caller_join,
    "QueueCallerLeave": _caller_leave,
    "QueueCallerAbandon": _caller_abandon,
    "AgentCalled": _agent_called,
    "AgentRingNoAnswer": _agent_ring_no_answer,
    "AgentConnect": _agent_connect,
    "AgentComplete": _agent_complete,
    "DialBegin": _dial_begin,
    "DialEnd": _dial_end,
    "QueueMemberAdded": _member_added,
    "QueueMemberRemoved": _member_removed,
    "QueueMemberPause": _member_pause,
    "QueueMemberStatus": _member_status,
    "QueueMember": _queue_member,
    "QueueParams": _queue_params,
    "QueueEntry": _queue_entry,
    "CoreShowChannel": _core_show_channel,
    "MixMonitorStart": _mixmonitor_start,
    "UserEvent": _user_event,
    "FullyBooted": _fully_booted,
}

WANTED_EVENTS = frozenset(EVENT_PARSERS)


def event_time(message: Mapping[str, str], received_at: datetime) -> datetime:
    """Asterisk's own ``Timestamp`` (epoch seconds) when present, else when we received it."""
    stamp = message.get("Timestamp")
    if stamp:
        try:
            return datetime.fromtimestamp(float(stamp), tz=UTC)
        except (ValueError, OverflowError):
            log.warning("unreadable AMI Timestamp %r", stamp)
    return received_at


def parse_event(message: Mapping[str, str], received_at: datetime) -> DomainEvent | None:
    """The domain event for ``message``, or ``None`` when it is not one we use.

    Raises ``AmiEventError`` for a wanted event that is malformed; the shell logs and counts it.
    Our own ``AmiMessage`` is read through its exact-spelling dict (Asterisk's header names never
    vary); other mappings, such as panoramisk's replies to actions, through their own lookup.
    """
    headers = message.as_sent if isinstance(message, AmiMessage) else message
    parser = EVENT_PARSERS.get(headers.get("Event", ""))
    if parser is None:
        return None
    if "Timestamp" not in headers:  # recorded sessions often lack it: spare the call
        return parser(headers, received_at)
    return parser(headers, event_time(headers, received_at))
