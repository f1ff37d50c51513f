"""The call tracker: a pure state machine from AMI domain events to one finished record per call.

A call is a caller's channel: it starts when Asterisk creates the channel in an inbound context
(or, if the bridge was not watching then, when it joins a queue) and ends at that channel's
``Hangup``. Hold and talk seconds come from Asterisk's own ``HoldTime``/``TalkTime`` so the journal
agrees with ``queue_log`` and ``QueueStatus``. No I/O happens here; memory holds live calls only.

Asterisk 22 sends ``QueueCallerAbandon`` for a caller who hung up and for one who timed out.
For a caller our dialplan queued, its ``HotlineQueueResult`` (``QueueExited``) says which: sent
when ``Queue()`` returns, never after a hang-up. For a caller another dialplan queued, AMI's order
does (see ``timed_out_in_queue``).
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pbx.facts import (
    AgentCompleted,
    AgentConnected,
    CallerAbandoned,
    CallerJoinedQueue,
    CallerLeftQueue,
    CallerReported,
    CallRated,
    ChannelCreated,
    ChannelHungUp,
    DialAnswered,
    DomainEvent,
    HangupRequested,
    PbxBooted,
    QueueExited,
    SurveyOffered,
)
from survey.scale import NOT_RATED

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
    # A callback (direction outbound): how its citizen leg ended.
    REACHED = "reached"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"


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
    source: str = "ami"
    """Who told the bridge of this call: ``ami`` live, or ``queue_log`` after an absence."""
    rating: str | None = None
    """The citizen's rating after the human: a scale code, ``not_rated``, or ``None`` for a
    call nobody answered (or with the survey off)."""
    rating_key: str | None = None
    rated_at: datetime | None = None
    direction: str = "inbound"
    """``inbound`` (a citizen called), or ``outbound`` (a callback: the agent, then the citizen)."""


def timed_out_in_queue(unrequested: bool, requests_heard: bool) -> bool:
    """Whether a ``QueueCallerAbandon`` was a timeout, on a dialplan that does not say.

    A caller who hangs up while waiting is asked to (``HangupRequest``; ``SoftHangupRequest``
    when hung up from the CLI) before app_queue's ``QueueCallerAbandon``; a caller who timed out
    is not, and goes on in the dialplan. ``unrequested``: a caller seen waiting, queued by a
    dialplan without our user event, and no request came first. That absence means something
    only on a login known to deliver ``HangupRequest`` (manager.conf may filter it out): one was
    heard since the login began. Until then it stays an abandon, as Asterisk's ``Abandoned``.
    The limit: AMI's Hangup action and a Redirect of a waiting caller send no request first, so
    such a caller counts as timed out where queue_log says ABANDON.
    """
    return unrequested and requests_heard


def _waiting_in_queue(fields: dict[str, Any]) -> bool:
    entered, left = fields.get("entered_queue_at"), fields.get("left_queue_at")
    return entered is not None and (left is None or left < entered)


def _asterisk_seconds(start: datetime | None, end: datetime | None) -> int | None:
    """app_queue's TalkTime is ``time(NULL) - callstart``: whole epoch seconds subtracted. The
    caller's Hangup can come before AgentComplete (the agent hung up); the estimate then
    agrees with Asterisk's own figure and queue_log instead of rounding the difference."""
    if start is None or end is None:
        return None
    return max(0, int(end.timestamp()) - int(start.timestamp()))


def _whole_seconds(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start).total_seconds()))


class CallTracker:
    """Follows live calls; ``handle`` returns the calls that the event finished.

    Events about a call the tracker does not know are counted in ``anomalies`` and logged, never
    raised: a bridge that connects in the middle of the day must not crash on calls already up.
    """

    def __init__(
        self, inbound_contexts: frozenset[str] = frozenset(), *, surveys: bool = False
    ) -> None:
        """``surveys``: the dialplan asks answered callers for a rating, so an answered call
        that ends without one is ``not_rated`` (the caller hung up), never left blank."""
        self._inbound_contexts = inbound_contexts
        self._surveys = surveys
        # Live calls as plain field dicts (cheap to update); frozen into CallRecord at the end.
        self._calls: dict[str, dict[str, Any]] = {}
        self._pending_routings: OrderedDict[str, Routing] = OrderedDict()
        # Live calls only: callers our dialplan queued (it reports why Queue() returned), callers
        # waiting in a queue whose channel was asked to hang up, and callers who left a queue
        # unrequested (``timed_out_in_queue``) before any request was heard (their Hangup decides).
        self._reported_by_dialplan: set[str] = set()
        self._hangup_requested: set[str] = set()
        self._unrequested_abandons: set[str] = set()
        self._requests_heard = False
        self.anomalies: Counter[str] = Counter()
        self._handlers: dict[type, Callable[[Any], list[CallRecord] | None]] = {
            ChannelCreated: self._on_channel_created,
            CallerJoinedQueue: self._on_caller_joined,
            CallerReported: self._on_caller_reported,
            CallerLeftQueue: self._on_caller_left,
            CallerAbandoned: self._on_caller_abandoned,
            QueueExited: self._on_queue_exited,
            SurveyOffered: self._on_survey_offered,
            CallRated: self._on_rated,
            AgentConnected: self._on_agent_connected,
            AgentCompleted: self._on_agent_completed,
            DialAnswered: self._on_dial_answered,
            ChannelHungUp: self._on_hangup,
            HangupRequested: self._on_hangup_requested,
            PbxBooted: self._on_pbx_booted,
        }

    @property
    def surveys(self) -> bool:
        return self._surveys

    def settle_rating(self, call: CallRecord) -> CallRecord:
        """A finished call's rating as it stands: ``not_rated`` for an answered call without
        one (with surveys on), none for a call nobody answered. Live calls and calls rebuilt
        from queue_log go through it alike."""
        changes = self._settled_rating(call.outcome, call.rating, call.rated_at, call.ended_at)
        return replace(call, **changes) if changes else call

    def _settled_rating(
        self,
        outcome: CallOutcome | None,
        rating: str | None,
        rated_at: datetime | None,
        ended_at: datetime | None,
    ) -> dict[str, Any]:
        """The fields ``settle_rating`` changes (none: the rating stands)."""
        if outcome is CallOutcome.ANSWERED and self._surveys and rating is None:
            return {"rating": NOT_RATED, "rated_at": rated_at or ended_at}
        if outcome is not CallOutcome.ANSWERED and rating is not None:
            return {"rating": None, "rating_key": None, "rated_at": None}
        return {}

    @property
    def live_calls(self) -> int:
        return len(self._calls)

    def live_uniqueids(self) -> set[str]:
        return set(self._calls)

    def call(self, uniqueid: str) -> CallRecord | None:
        fields = self._calls.get(uniqueid)
        return None if fields is None else CallRecord(**fields)

    def routed(self, uniqueid: str, routing: Routing) -> None:
        """Attach the routing decision made for ``uniqueid`` (it may arrive before AMI's events)."""
        fields = self._calls.get(uniqueid)
        if fields is None:
            self._pending_routings[uniqueid] = routing
            while len(self._pending_routings) > MAX_PENDING_ROUTINGS:
                self._pending_routings.popitem(last=False)
            return
        fields["ticket"] = routing.ticket
        fields["routing_reason"] = routing.reason

    def resync(self, present: set[str], at: datetime) -> list[CallRecord]:
        """After a reconnect: calls Asterisk no longer has ended unseen; finish them as unknown."""
        gone = [uid for uid in self._calls if uid not in present]
        finished = []
        for uniqueid in gone:
            fields = self._calls.pop(uniqueid)
            self._forget(uniqueid)
            self.anomalies["call-ended-while-disconnected"] += 1
            fields["outcome"] = fields.get("outcome") or CallOutcome.UNKNOWN
            finished.append(CallRecord(**fields))
        return finished

    def handle(self, event: DomainEvent) -> list[CallRecord]:
        # One dict lookup by exact type: most frames (member status, ringing) concern no call.
        handler = self._handlers.get(type(event))
        if handler is None:
            return []
        return handler(event) or []

    def _on_caller_reported(self, event: CallerReported) -> None:
        if event.uniqueid in self._calls:
            return
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

    def _on_caller_left(self, event: CallerLeftQueue) -> None:
        self._update(event.uniqueid, "left", left_queue_at=event.at)

    def _on_caller_abandoned(self, event: CallerAbandoned) -> None:
        uniqueid = event.uniqueid
        fields = self._calls.get(uniqueid)
        # A call not seen waiting leaves nothing but Asterisk's word; our dialplan's user event
        # corrects it for a timeout.
        unrequested = (
            fields is not None
            and _waiting_in_queue(fields)
            and uniqueid not in self._hangup_requested
            and uniqueid not in self._reported_by_dialplan
        )
        self._hangup_requested.discard(uniqueid)
        timed_out = timed_out_in_queue(unrequested, self._requests_heard)
        if unrequested and not timed_out:
            self._unrequested_abandons.add(uniqueid)
        else:
            self._unrequested_abandons.discard(uniqueid)
        self._update(
            uniqueid,
            "abandon",
            outcome=CallOutcome.TIMEOUT if timed_out else CallOutcome.ABANDONED,
            hold_seconds=event.hold_seconds,
            left_queue_at=event.at,
        )

    def _on_hangup_requested(self, event: HangupRequested) -> None:
        if not event.soft:
            self._requests_heard = True
        fields = self._calls.get(event.uniqueid)
        if fields is not None and _waiting_in_queue(fields):
            self._hangup_requested.add(event.uniqueid)

    def _on_pbx_booted(self, event: PbxBooted) -> None:
        """A new login may come through a manager account that filters hang-up requests."""
        self._requests_heard = False

    def _on_queue_exited(self, event: QueueExited) -> None:
        if event.status == "TIMEOUT":
            # Asterisk also sent QueueCallerAbandon for this caller; the dialplan's word wins.
            self._update(event.uniqueid, "exit", outcome=CallOutcome.TIMEOUT)

    def _on_survey_offered(self, event: SurveyOffered) -> None:
        """The talk ended when the survey began: the preferred agent's Dial says how long it
        was (after Queue, ``AgentComplete`` said it already)."""
        fields = self._calls.get(event.uniqueid)
        if fields is None:
            self.anomalies["survey-unknown-call"] += 1
            return
        if fields.get("talk_seconds") is None and event.talk_seconds is not None:
            fields["talk_seconds"] = event.talk_seconds

    def _on_rated(self, event: CallRated) -> None:
        """One rating per call: the first the dialplan reports stands."""
        fields = self._calls.get(event.uniqueid)
        if fields is not None and fields.get("rating") not in (None, NOT_RATED):
            self.anomalies["second-rating"] += 1
            return
        self._update(
            event.uniqueid,
            "rating",
            rating=event.rating,
            rating_key=event.key or None,
            rated_at=event.at,
        )
        if fields is not None and event.agent and not fields.get("agent_interface"):
            fields["agent_interface"] = event.agent

    def _on_agent_connected(self, event: AgentConnected) -> None:
        self._update(
            event.uniqueid,
            "connect",
            outcome=CallOutcome.ANSWERED,
            agent_interface=event.interface,
            agent_name=event.member_name or None,
            answered_at=event.at,
            hold_seconds=event.hold_seconds,
        )
        self._adopt_route(event.uniqueid, event.route)

    def _on_agent_completed(self, event: AgentCompleted) -> None:
        self._update(event.uniqueid, "complete", talk_seconds=event.talk_seconds)

    def _start(
        self,
        uniqueid: str,
        linkedid: str,
        channel: str,
        number: str,
        name: str,
        dialled: str,
        at: datetime,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "uniqueid": uniqueid,
            "linkedid": linkedid,
            "channel": channel,
            "caller_number": number,
            "caller_name": name,
            "dialled_number": dialled,
            "started_at": at,
        }
        routing = self._pending_routings.pop(uniqueid, None)
        if routing is not None:
            fields["ticket"] = routing.ticket
            fields["routing_reason"] = routing.reason
        self._calls[uniqueid] = fields
        return fields

    def _on_channel_created(self, event: ChannelCreated) -> None:
        if event.context not in self._inbound_contexts or event.uniqueid != event.linkedid:
            return
        self._start(
            event.uniqueid,
            event.linkedid,
            event.channel,
            event.caller_number,
            event.caller_name,
            event.exten,
            event.at,
        )

    def _on_caller_joined(self, event: CallerJoinedQueue) -> None:
        fields = self._calls.get(event.uniqueid)
        if fields is None:
            # The bridge was not watching when the channel was created: start from the queue.
            fields = self._start(
                event.uniqueid,
                event.linkedid,
                event.channel,
                event.caller_number,
                event.caller_name,
                "",
                event.at,
            )
        fields["queue"] = event.queue
        fields["entered_queue_at"] = event.at
        if any(event.route):  # HOTLINE_ROUTE: queued by our dialplan, which reports the exit
            self._reported_by_dialplan.add(event.uniqueid)
        self._adopt_route(event.uniqueid, event.route)

    def _on_dial_answered(self, event: DialAnswered) -> None:
        fields = self._calls.get(event.uniqueid)
        if fields is None or fields.get("entered_queue_at") is not None:
            return  # Queue's own dials are reported by AgentConnect.
        fields["outcome"] = CallOutcome.ANSWERED
        fields["agent_interface"] = event.interface
        fields["answered_at"] = event.at
        fields["hold_seconds"] = _whole_seconds(fields["started_at"], event.at)
        self._adopt_route(event.uniqueid, event.route)

    def _adopt_route(self, uniqueid: str, route: tuple[str | None, str | None]) -> None:
        """The route the dialplan recorded on the channel (``channelvars``).

        Its reason wins: it says what the dialplan really did, a fallback included. Its ticket
        fills in one this process did not hand out (``hotline agi`` routes apart).
        """
        fields = self._calls.get(uniqueid)
        reason, ticket = route
        if fields is None:
            return
        if reason:
            fields["routing_reason"] = reason
        if ticket and not fields.get("ticket"):
            fields["ticket"] = ticket

    def _on_hangup(self, event: ChannelHungUp) -> list[CallRecord]:
        fields = self._calls.pop(event.uniqueid, None)
        if fields is None:
            return []
        outcome = fields.get("outcome")
        unrequested = event.uniqueid in self._unrequested_abandons
        self._forget(event.uniqueid)
        # A hang-up request heard since the abandon (its own, later in the dialplan, or another
        # channel's) shows that this login delivers them: none before it means a timeout.
        if outcome is CallOutcome.ABANDONED and timed_out_in_queue(
            unrequested, self._requests_heard
        ):
            outcome = CallOutcome.TIMEOUT
        entered = fields.get("entered_queue_at")
        left = fields.get("left_queue_at")
        if outcome is None and entered is not None:
            outcome = CallOutcome.TIMEOUT if left else CallOutcome.ABANDONED
            fields["hold_seconds"] = _whole_seconds(entered, left or event.at)
        elif outcome is None:
            outcome = CallOutcome.HUNG_UP_BEFORE_QUEUE
        if outcome is CallOutcome.ANSWERED and fields.get("talk_seconds") is None:
            fields["talk_seconds"] = _asterisk_seconds(fields.get("answered_at"), event.at)
        fields["outcome"] = outcome
        fields["ended_at"] = event.at
        fields["hangup_cause"] = event.cause
        # ``settle_rating`` on the fields: one CallRecord per finished call, not two.
        rating = fields.get("rating")
        fields.update(self._settled_rating(outcome, rating, fields.get("rated_at"), event.at))
        if rating is not None and fields["rating"] is None:
            self.anomalies["rating-of-unanswered-call"] += 1
        return [CallRecord(**fields)]

    def _forget(self, uniqueid: str) -> None:
        self._reported_by_dialplan.discard(uniqueid)
        self._hangup_requested.discard(uniqueid)
        self._unrequested_abandons.discard(uniqueid)

    def _update(self, uniqueid: str, what: str, **changes: object) -> None:
        fields = self._calls.get(uniqueid)
        if fields is None:
            self.anomalies[f"{what}-unknown-call"] += 1
            log.debug("%s for a call the tracker does not know: %s", what, uniqueid)
            return
        fields.update(changes)
