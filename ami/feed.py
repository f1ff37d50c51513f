"""AMI into the PBX-neutral core: each message becomes a ``pbx.facts`` fact, and at each login
Asterisk's present (QueueStatus, CoreShowChannels) becomes the resync's ``PresentState``.

Pure but for ``resync_from_asterisk``, which asks over AMI; the composition root wires
``AmiFeed.on_message`` as the AMI client's sink.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ami.codec import AmiMessage
from ami.events import WANTED_EVENTS, AmiEventError, parse_event
from ami.replay import ReplayClock, read_transcript
from pbx.facts import (
    CallerReported,
    ChannelReported,
    DomainEvent,
    MemberReported,
    QueueReported,
)
from queue_stats.calls import CallRecord
from queue_stats.pipeline import EventPipeline, PresentState

log = logging.getLogger(__name__)

# The events this pipeline consumes; the codec drops every other frame by name before parsing
# it. (MixMonitorStart has a parser but no consumer yet: the recording feature will add it.)
PIPELINE_EVENTS = WANTED_EVENTS - {"MixMonitorStart"}
keep_event = PIPELINE_EVENTS.__contains__


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


class AmiTranslator:
    """AMI messages as facts, in order. Keeps what AgentComplete may need of AgentConnect."""

    def __init__(self) -> None:
        self._agent_callers = AgentCallers()
        self.counters: Counter[str] = Counter()

    def translate(self, message: AmiMessage, at: datetime) -> DomainEvent | None:
        """The fact ``message`` tells, or None (an event no feature uses, or a malformed one:
        counted and logged, never raised)."""
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
                return None
            parsed = restored
        try:
            event = parse_event(parsed, at)
        except AmiEventError as error:
            self.counters["malformed_events"] += 1
            log.warning("ignored a malformed AMI event: %s", error)
            return None
        return event  # counted by the pipeline that takes it


class FactSink(Protocol):
    def on_fact(self, fact: DomainEvent) -> None: ...


class AmiFeed:
    """The AMI client's sink: each message, stamped when it came, as a fact for the service."""

    def __init__(self, sink: FactSink, clock: Callable[[], datetime]) -> None:
        self._sink = sink
        self._clock = clock
        self.translator = AmiTranslator()

    def on_message(self, message: AmiMessage, at: datetime | None = None) -> None:
        fact = self.translator.translate(message, at or self._clock())
        if fact is not None:
            self._sink.on_fact(fact)


class ActionSender(Protocol):
    async def send_action(self, action: str, **headers: str | int) -> Any: ...


class Resyncable(Protocol):
    """What the resync needs of ``queue_stats.service.QueueService``."""

    async def resync_from(
        self, ask: Callable[[], Any], read: Callable[[Any, datetime], PresentState]
    ) -> None: ...


async def resync_from_asterisk(queues: Resyncable, ami: ActionSender) -> None:
    """Ask Asterisk for the present (queues, members, callers, channels) and adopt it."""
    counters: Counter[str] = Counter()

    async def ask() -> tuple[Any, Any]:
        status = await ami.send_action("QueueStatus")
        await ami.send_action("QueueSummary")
        return status, await ami.send_action("CoreShowChannels")

    await queues.resync_from(ask, lambda answers, at: asterisk_present(answers, at, counters))


def asterisk_present(
    answers: tuple[Any, Any], at: datetime, counters: Counter[str] | None = None
) -> PresentState:
    """QueueStatus's and CoreShowChannels' answers as the present state."""
    status, channels = answers
    events = []
    for message in _listed(status) + _listed(channels):
        try:
            event = parse_event(message, at)
        except AmiEventError as error:
            if counters is not None:
                counters["malformed_events"] += 1
            log.warning("ignored a malformed resync line: %s", error)
            continue
        if event is not None:
            events.append(event)
    return PresentState(
        queues=[e for e in events if isinstance(e, QueueReported)],
        members=[e for e in events if isinstance(e, MemberReported)],
        callers=[e for e in events if isinstance(e, CallerReported)],
        channels={e.uniqueid for e in events if isinstance(e, ChannelReported)},
    )


def _listed(answer: Any) -> list[Mapping[str, str]]:
    """The event lines of a list action's answer (panoramisk returns the reply and its events)."""
    messages = answer if isinstance(answer, list) else [answer]
    return [m for m in messages if m.get("Event")]


def replay_file(
    path: Path,
    pipeline: EventPipeline,
    clock: ReplayClock,
    translator: AmiTranslator | None = None,
) -> list[CallRecord]:
    """Feed a recorded AMI transcript through ``pipeline`` at full speed; returns finished calls.

    The same decoder, name filter and pipeline as the live connection; only the clock differs.
    """
    finished: list[CallRecord] = []
    translator = translator or AmiTranslator()
    for message in clock.seeded(read_transcript(path, keep_event, mapped=True)):
        fact = translator.translate(message, clock.advance(message))
        if fact is not None:
            finished += pipeline.apply(fact)[0]
    return finished
