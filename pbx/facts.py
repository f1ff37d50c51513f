"""The call-center facts every PBX adapter produces and every feature takes, PBX-neutral.

``ami/`` parses AMI into them, ``esl/`` translates FreeSWITCH's Event Socket into them; the
statistics, the journal, tickets, recordings and the panel see nothing else. Each is typed and
immutable and carries ``at``: when the PBX says it happened. Channel facts carry the PBX's own
ids: Asterisk's uniqueid and linkedid, FreeSWITCH's channel uuid (its call uuid as linkedid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    at: datetime
    uniqueid: str
    linkedid: str
    channel: str


@dataclass(frozen=True, slots=True)
class ChannelCreated(ChannelEvent):
    caller_number: str
    caller_name: str
    context: str
    exten: str


@dataclass(frozen=True, slots=True)
class ChannelHungUp(ChannelEvent):
    cause: int
    cause_text: str


@dataclass(frozen=True, slots=True)
class HangupRequested(ChannelEvent):
    """Something asked Asterisk to hang the channel up: ``HangupRequest`` (its far end, such as
    the caller's BYE) or ``SoftHangupRequest`` (``soft``: the dialplan, a bridge, an operator).

    A caller who hangs up while queued is asked to *before* app_queue reports
    ``QueueCallerAbandon``; one who timed out is not (the channel goes on in the dialplan).
    On a dialplan without our ``HotlineQueueResult`` that order is what tells the two apart.
    ``cause`` is the Q.850 cause for ``HangupRequest`` and the soft-hangup flags otherwise.
    """

    cause: int
    soft: bool


@dataclass(frozen=True, slots=True)
class CallerJoinedQueue(ChannelEvent):
    queue: str
    caller_number: str
    caller_name: str
    position: int
    route: tuple[str | None, str | None] = field(default=(None, None), kw_only=True)


@dataclass(frozen=True, slots=True)
class CallerLeftQueue(ChannelEvent):
    queue: str


@dataclass(frozen=True, slots=True)
class CallerAbandoned(ChannelEvent):
    queue: str
    hold_seconds: int
    position: int
    original_position: int


@dataclass(frozen=True, slots=True)
class AgentEvent(ChannelEvent):
    queue: str
    interface: str
    member_name: str
    agent_channel: str


@dataclass(frozen=True, slots=True)
class AgentCalled(AgentEvent):
    pass


@dataclass(frozen=True, slots=True)
class AgentRingNoAnswer(AgentEvent):
    ring_seconds: int


@dataclass(frozen=True, slots=True)
class AgentConnected(AgentEvent):
    hold_seconds: int
    ring_seconds: int
    route: tuple[str | None, str | None] = field(default=(None, None), kw_only=True)


@dataclass(frozen=True, slots=True)
class AgentCompleted(AgentEvent):
    hold_seconds: int
    talk_seconds: int
    reason: str


@dataclass(frozen=True, slots=True)
class DialStarted(ChannelEvent):
    """The caller's channel began ringing ``interface`` (its own Dial, or one of Queue's)."""

    agent_channel: str
    interface: str


@dataclass(frozen=True, slots=True)
class DialAnswered(ChannelEvent):
    """A caller's own Dial (not Queue) was answered: the preferred-agent step of the dialplan."""

    agent_channel: str
    interface: str
    route: tuple[str | None, str | None] = field(default=(None, None), kw_only=True)


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """Something about a queue member (an agent's device in one queue)."""

    at: datetime
    queue: str
    interface: str
    member_name: str


@dataclass(frozen=True, slots=True)
class MemberAdded(MemberEvent):
    paused: bool
    pause_reason: str


@dataclass(frozen=True, slots=True)
class MemberRemoved(MemberEvent):
    pass


@dataclass(frozen=True, slots=True)
class MemberPaused(MemberEvent):
    paused: bool
    pause_reason: str


@dataclass(frozen=True, slots=True)
class MemberStatus(MemberEvent):
    """The member's device state (``Status``: 1 idle, 2 in use, 5 unavailable, 6 ringing...)."""

    device_status: int
    paused: bool
    pause_reason: str
    in_call: bool


@dataclass(frozen=True, slots=True)
class MemberReported(MemberEvent):
    """A ``QueueMember`` line of a ``QueueStatus`` answer (resync)."""

    device_status: int
    paused: bool
    pause_reason: str
    in_call: bool
    calls_taken: int


@dataclass(frozen=True, slots=True)
class QueueReported:
    """A ``QueueParams`` line of a ``QueueStatus`` answer: Asterisk's own counters (resync)."""

    at: datetime
    queue: str
    service_level_seconds: int
    completed: int
    abandoned: int
    waiting: int


@dataclass(frozen=True, slots=True)
class CallerReported:
    """A ``QueueEntry`` line of a ``QueueStatus`` answer: a caller waiting now (resync)."""

    at: datetime
    queue: str
    uniqueid: str
    linkedid: str
    channel: str
    caller_number: str
    caller_name: str
    position: int
    wait_seconds: int


@dataclass(frozen=True, slots=True)
class ChannelReported:
    """A ``CoreShowChannel`` line: a channel that exists now (resync)."""

    at: datetime
    uniqueid: str
    linkedid: str
    channel: str
    context: str


@dataclass(frozen=True, slots=True)
class RecordingStarted(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class RecordingFinished(ChannelEvent):
    """The PBX closed a call's recording (FreeSWITCH's ``RECORD_STOP``) at ``path``."""

    path: str


@dataclass(frozen=True, slots=True)
class QueueExited(ChannelEvent):
    """The dialplan's ``UserEvent(HotlineQueueResult)`` after ``Queue()`` returned.

    Asterisk reports a caller who timed out of a queue with ``QueueCallerAbandon`` like one who
    hung up; ``QUEUESTATUS`` (``TIMEOUT``, ``LEAVEEMPTY``, ``JOINEMPTY``...) says which, so our
    dialplan publishes it (another dialplan leaves the bridge only ``HangupRequested`` to go
    by). A caller who hung up never reaches this step.
    """

    queue: str
    status: str


@dataclass(frozen=True, slots=True)
class SurveyOffered(ChannelEvent):
    """The agent has left and the caller, still on the line, is asked for a rating (our
    dialplan's ``HotlineSurvey``). ``talk_seconds``: the preferred agent's Dial talk
    (``ANSWEREDTIME``), which ends here and not at the caller's hang-up; ``None`` after Queue,
    whose ``AgentComplete`` says it."""

    agent: str
    queue: str
    talk_seconds: int | None


@dataclass(frozen=True, slots=True)
class CallRated(ChannelEvent):
    """The citizen's one-key rating after the human (our dialplan's ``HotlineRating``).

    ``rating`` is a code of the configured scale or ``not_rated`` (a wrong key twice, silence,
    or the survey could not run); ``agent`` the interface that talked with the caller. A
    caller who hangs up during the survey sends none: an answered call that ends without one
    is ``not_rated`` too (``queue_stats.calls``).
    """

    rating: str
    key: str
    agent: str
    queue: str


@dataclass(frozen=True, slots=True)
class CallbackAgentMissed:
    """A callback's first leg: the agent's phone did not answer (``status``: the PBX's dial
    status), so the citizen was never dialled (our dialplan's ``HotlineCallbackAgent``)."""

    at: datetime
    callback: int
    agent: str
    status: str


@dataclass(frozen=True, slots=True)
class CallbackDialled(ChannelEvent):
    """A callback's citizen leg ended (our dialplan's ``HotlineCallback``): the agent was on
    the line and the citizen's number was dialled from ``started_at``. ``status`` is the dial
    status (ANSWER, NOANSWER, BUSY, CHANUNAVAIL, CONGESTION, CANCEL); ``talk_seconds`` the
    talk when the citizen answered."""

    callback: int
    ticket: str
    number: str
    agent: str
    status: str
    talk_seconds: int
    started_at: datetime


@dataclass(frozen=True, slots=True)
class VisitRated:
    """The return visit's rating of the whole case (一事一评), our dialplan's
    ``HotlineVisitRating``: the citizen's key after the visiting agent hung up."""

    at: datetime
    ticket: str
    rating: str
    key: str
    agent: str


@dataclass(frozen=True, slots=True)
class PbxBooted:
    """Asterisk finished booting (or we logged in to a running one): channel state starts over."""

    at: datetime


DomainEvent = (
    ChannelCreated
    | ChannelHungUp
    | HangupRequested
    | CallerJoinedQueue
    | CallerLeftQueue
    | CallerAbandoned
    | AgentCalled
    | AgentRingNoAnswer
    | AgentConnected
    | AgentCompleted
    | DialStarted
    | DialAnswered
    | MemberAdded
    | MemberRemoved
    | MemberPaused
    | MemberStatus
    | MemberReported
    | QueueReported
    | CallerReported
    | ChannelReported
    | RecordingStarted
    | RecordingFinished
    | QueueExited
    | SurveyOffered
    | CallRated
    | CallbackAgentMissed
    | CallbackDialled
    | VisitRated
    | PbxBooted
)
