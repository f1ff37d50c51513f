"""FreeSWITCH's Event Socket feeding the call-center core: events in, facts out, resync on login.

Thin: the client delivers each event, the translator turns it into facts, the queue service
takes them. At every login (the first and each reconnect) the present is asked for again
(``callcenter_config`` lists and ``show channels``); facts that arrive meanwhile are held by the
service and applied after it, as on Asterisk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from esl.callcenter import CallcenterTranslator, EslEventError
from esl.codec import EslEvent
from esl.present import FreeswitchAnswers, ask_freeswitch, read_answers
from pbx.facts import DomainEvent, RecordingFinished
from queue_stats.pipeline import PresentState

log = logging.getLogger(__name__)


class FactSink(Protocol):
    """What the feed needs of ``queue_stats.service.QueueService``."""

    def on_fact(self, fact: DomainEvent) -> None: ...

    def begin_resync(self) -> None: ...

    async def resync_from(
        self,
        ask: Callable[[], Awaitable[FreeswitchAnswers]],
        read: Callable[[FreeswitchAnswers, datetime], PresentState],
    ) -> None: ...


class FreeswitchFeed:
    def __init__(
        self,
        sink: FactSink,
        api: Callable[[str], Awaitable[str]],
        translator: CallcenterTranslator | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_recording: Callable[[str], None] | None = None,
        on_resynced: Callable[[set[str]], None] | None = None,
    ) -> None:
        self._sink = sink
        self._api = api
        self._clock = clock
        self._on_recording = on_recording
        self._on_resynced = on_resynced
        self.translator = translator or CallcenterTranslator()
        self._resyncing: asyncio.Task[None] | None = None
        self.counters: dict[str, int] = {"malformed_events": 0, "resyncs_started": 0}

    def on_event(self, event: EslEvent) -> None:
        try:
            facts = self.translator.translate(event)
        except EslEventError as error:
            self.counters["malformed_events"] += 1
            log.warning("ignored a malformed FreeSWITCH event: %s", error)
            return
        for fact in facts:
            if isinstance(fact, RecordingFinished):
                if self._on_recording is not None:
                    self._on_recording(fact.path)
                continue
            self._sink.on_fact(fact)

    def on_login(self) -> None:
        """Hold live facts from now on, and ask for the present (runs in the background)."""
        self._sink.begin_resync()
        self.counters["resyncs_started"] += 1
        self._resyncing = asyncio.get_running_loop().create_task(
            self._sink.resync_from(lambda: ask_freeswitch(self._api), self._read),
            name="esl-resync",
        )

    def _read(self, answers: FreeswitchAnswers, at: datetime) -> PresentState:
        present, roster = read_answers(answers, at)
        self.translator.adopt_present(roster.tiers, roster.statuses, roster.waiting)
        if self._on_resynced is not None:  # e.g. recordings whose RECORD_STOP was missed
            self._on_resynced(present.channels)
        return present

    def tier_changed(self, queue: str, agent: str, added: bool) -> None:
        """A tier added or removed from the panel and accepted (FreeSWITCH tells nobody)."""
        for fact in self.translator.tier_changed(queue, agent, added, self._clock()):
            self._sink.on_fact(fact)

    def pause_reason(self, agent: str, reason: str) -> None:
        self.translator.pause_reason(agent, reason)

    async def resynced(self) -> None:
        """Wait for the resync of the last login (tests, and an orderly shutdown)."""
        if self._resyncing is not None:
            await self._resyncing
