"""The call-journal pipeline: AMI messages in, finished calls to the database and the bus.

``on_ami_message`` is the synchronous sink both shells (live AMI, transcript replay) feed. It only
parses and updates the pure tracker; writing happens in ``run_writer``, which retries a failed
write until it succeeds so a database hiccup delays a row but never loses it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from ami.codec import AmiMessage
from ami.events import AmiEventError, parse_event
from hotline.bus import Bus
from ivr_bypass.decision import RoutingDecision
from queue_stats.calls import CallRecord, CallTracker, Routing
from queue_stats.journal import CallJournal

log = logging.getLogger(__name__)

CALLS_CHANNEL = "calls"
MAX_RETRY_DELAY = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def call_summary(call: CallRecord) -> dict[str, object]:
    """The bus message for a finished call: small, JSON-ready, no caller name (privacy)."""
    return {
        "type": "call.finished",
        "uniqueid": call.uniqueid,
        "caller_number": call.caller_number,
        "queue": call.queue,
        "agent": call.agent_interface,
        "outcome": call.outcome.value if call.outcome else None,
        "hold_seconds": call.hold_seconds,
        "talk_seconds": call.talk_seconds,
        "ticket": call.ticket,
        "ended_at": call.ended_at.isoformat() if call.ended_at else None,
    }


class CallJournalService:
    def __init__(
        self,
        tracker: CallTracker,
        journal: CallJournal,
        bus: Bus,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._tracker = tracker
        self._journal = journal
        self._bus = bus
        self._clock = clock
        self._finished: asyncio.Queue[CallRecord] = asyncio.Queue()
        self.counters: Counter[str] = Counter()

    @property
    def pending_writes(self) -> int:
        return self._finished.qsize()

    def on_ami_message(self, message: AmiMessage) -> None:
        try:
            event = parse_event(message, self._clock())
        except AmiEventError as error:
            self.counters["malformed_events"] += 1
            log.warning("ignored a malformed AMI event: %s", error)
            return
        if event is None:
            return
        for call in self._tracker.handle(event):
            self.counters["calls_finished"] += 1
            self._finished.put_nowait(call)

    def on_routed(self, uniqueid: str, decision: RoutingDecision) -> None:
        self._tracker.routed(
            uniqueid,
            Routing(
                queue=decision.queue,
                reason=decision.reason.value,
                ticket=decision.ticket,
                agent=decision.agent,
            ),
        )

    async def run_writer(self) -> None:
        """Write finished calls in order, forever; a failed write is retried, never skipped."""
        while True:
            call = await self._finished.get()
            await self._write_until_done(call)
            self._finished.task_done()

    async def drain(self, timeout: float) -> bool:
        """Wait until every finished call is written (for shutdown and tests)."""
        try:
            await asyncio.wait_for(self._finished.join(), timeout)
        except TimeoutError:
            return False
        return True

    async def _write_until_done(self, call: CallRecord) -> None:
        delay = 0.5
        while True:
            try:
                await self._journal.record(call)
                break
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.counters["write_retries"] += 1
                log.error(
                    "journal write of %s failed (%s); retry in %.1f s", call.uniqueid, error, delay
                )
                await asyncio.sleep(delay)
                delay = min(MAX_RETRY_DELAY, delay * 2)
        self.counters["calls_written"] += 1
        log.info(
            "call %s from %s: %s (queue %s, agent %s, hold %s s, talk %s s)",
            call.uniqueid,
            call.caller_number or "withheld",
            call.outcome,
            call.queue,
            call.agent_interface,
            call.hold_seconds,
            call.talk_seconds,
        )
        try:
            await self._bus.publish(CALLS_CHANNEL, call_summary(call))
        except Exception as error:  # the row is safe; a missed live update is only logged
            self.counters["publish_failures"] += 1
            log.warning("could not publish call %s: %s", call.uniqueid, error)
