"""The live shell around the event pipeline: facts in; journal rows, hour buckets and bus out.

``on_fact`` is the synchronous sink every PBX adapter feeds (live AMI, FreeSWITCH's Event Socket,
a transcript replay). It only runs the pure pipeline and notes what changed; the tasks started
by ``run`` do the writing: finished calls to the journal (retried until written: a database
hiccup delays a row, never loses it), hour buckets to the database, and compact snapshot deltas
to the bus. After every login ``resync_from`` makes the live state equal to what the PBX
reports, buffering live facts meanwhile, and, when the PBX's own log of queue calls is readable
here (``queue_stats.absence.AbsenceLog``: Asterisk's ``queue_log``), journals the queue calls
that began and ended while the bridge was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from infra.bus import Bus
from infra.leases import FencedOut
from ivr_bypass.decision import RoutingDecision
from pbx.facts import DomainEvent
from queue_stats.absence import AbsenceLog, Recovery
from queue_stats.calls import CallOutcome, CallRecord, Routing
from queue_stats.hourly import HourlyStore
from queue_stats.journal import Journal
from queue_stats.pipeline import EventPipeline, PresentState, RingingAgent
from queue_stats.satisfaction import Rating
from queue_stats.stats import AgentState

log = logging.getLogger(__name__)
T = TypeVar("T")

CALLS_CHANNEL = "calls"
STATS_CHANNEL = "stats"
SNAPSHOT_KEY = "stats"
MAX_RETRY_DELAY = 30.0
PUBLISH_COALESCE_SECONDS = 0.05
PUBLISH_IDLE_SECONDS = 1.0
HOUR_FLUSH_SECONDS = 30.0
MAX_RESYNC_BUFFER = 100_000
# queue_log is read from this long before the absence began: a call that was already going when
# a previous process stopped has no row yet, and the journal's keys keep every row single.
QUEUE_LOG_MARGIN = timedelta(hours=2)
QUEUE_LOG_MAX_LOOKBACK = timedelta(days=7)
QUEUE_LOG_FOLLOW_UP_SECONDS = 30.0
QUEUE_LOG_PENDING_LIMIT = timedelta(hours=6)


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


def ringing_summary(ringing: RingingAgent) -> dict[str, object]:
    """The bus message that pops a call up on the ringing agent's panel (no caller name)."""
    call = ringing.call
    return {
        "type": "call.ringing",
        "uniqueid": call.uniqueid,
        "caller_number": call.caller_number,
        "queue": call.queue,
        "agent": ringing.interface,
        "ticket": call.ticket,
        "routing_reason": call.routing_reason,
    }


def snapshot_delta(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Only what changed: per section, the entries whose figures differ (None = removed)."""
    delta: dict[str, Any] = {}
    for section, entries in new.items():
        before = old.get(section, {})
        if not isinstance(entries, Mapping):
            if entries != before:
                delta[section] = entries
            continue
        changed = {key: value for key, value in entries.items() if before.get(key) != value}
        changed |= {key: None for key in before if key not in entries}
        if changed:
            delta[section] = changed
    return delta


class CallObserver(Protocol):
    """A feature that follows calls (tickets, the outbound webhook). Hooks must not block."""

    def call_offered(self, call: CallRecord) -> None: ...

    def call_answered(self, call: CallRecord) -> None: ...

    def call_finished(self, call: CallRecord) -> None: ...


TicketLinker = Callable[[CallRecord], Awaitable[CallRecord]]


# Messages waiting for the bus at most (pop-ups, call news): past it the oldest are dropped,
# so a bus that hangs costs bounded memory; the snapshot on the bus is the figures' truth.
OUTBOX_LIMIT = 10_000


class QueueService:
    def __init__(
        self,
        pipeline: EventPipeline,
        journal: Journal,
        hours: HourlyStore,
        bus: Bus,
        clock: Callable[[], datetime] = utc_now,
        *,
        observers: Sequence[CallObserver] = (),
        link_ticket: TicketLinker | None = None,
        queue_log: AbsenceLog | None = None,
        fact_listeners: Sequence[Callable[[DomainEvent], None]] = (),
        pbx: str = "",
        owner_token: int | None = None,
        still_owner: Callable[[], bool] | None = None,
    ) -> None:
        """``fact_listeners``: features that follow facts beside the statistics (callbacks);
        each is called with every fact and must not block. ``pbx``: the PBX this service
        follows when a hotline runs several; its snapshot is then that PBX's own
        (``stats:<pbx>``, no deltas), which every web process merges (``queue_stats.merge``)."""
        self.pbx = pbx
        # A PBX owner's lease token goes with its snapshots; once ``still_owner`` says no (a
        # process that was frozen and woke up), it publishes nothing more.
        self._owner_token = owner_token
        self._still_owner = still_owner
        self.snapshot_key = f"{SNAPSHOT_KEY}:{pbx}" if pbx else SNAPSHOT_KEY
        self.pipeline = pipeline
        self._journal = journal
        self._hours = hours
        self._bus = bus
        self._clock = clock
        self.observers = list(observers)
        self._link_ticket = link_ticket
        self._finished: asyncio.Queue[CallRecord] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._resync_buffer: deque[DomainEvent] | None = None
        self._published: dict[str, Any] = {}
        self._sequence = 0
        self.counters: Counter[str] = Counter()
        self.pbx_state: dict[str, Any] = {"up": False}
        self._outbox: deque[tuple[str, dict[str, object]]] = deque()
        self._sender: asyncio.Task[None] | None = None  # sends the outbox, while it has messages
        self._agent_states: dict[str, tuple[str, str]] = {}
        self._queue_log = queue_log
        self.fact_listeners = list(fact_listeners)
        # Calls found in queue_log still going at the last resync, and since when to look.
        self._queue_log_pending: set[str] = set()
        self._queue_log_pending_since: datetime | None = None
        self._watching_since: datetime | None = None

    @property
    def pending_writes(self) -> int:
        return self._finished.qsize()

    # -- input -----------------------------------------------------------------------------

    def on_fact(self, fact: DomainEvent) -> None:
        """A call-center fact from a PBX other than over AMI (FreeSWITCH's Event Socket)."""
        if self._resync_buffer is not None:
            if len(self._resync_buffer) == MAX_RESYNC_BUFFER:
                self.counters["resync_buffer_overflow"] += 1
            self._resync_buffer.append(fact)
            return
        self._apply(fact)

    def _apply(self, fact: DomainEvent) -> None:
        result = self.pipeline.on_event(fact)
        if result.offered_call is not None:
            self._notify("call_offered", result.offered_call)
        if result.answered_call is not None:
            self._notify("call_answered", result.answered_call)
        if result.ringing is not None:
            self._publish_soon(CALLS_CHANNEL, ringing_summary(result.ringing))
        for call in result.finished_calls:
            self.counters["calls_finished"] += 1
            self._finished.put_nowait(call)
        if result.stats_changed:
            self._changed.set()
        for listener in self.fact_listeners:
            try:
                listener(fact)
            except Exception:  # one feature's bug must not stop the statistics
                self.counters["listener_errors"] += 1
                log.exception("a fact listener failed on %s", type(fact).__name__)

    def journal_call(self, call: CallRecord) -> None:
        """A call a feature put together itself (a callback's outbound leg): linked to its
        ticket and written in order with the others."""
        self.counters["calls_finished"] += 1
        self._finished.put_nowait(call)

    def _publish_soon(self, channel: str, message: dict[str, object]) -> None:
        """Publish from a synchronous step; a failure is counted, never raised into the pipeline.

        One task sends the queued messages in order. A task per message took a Redis connection
        each: a burst of events (a busy PBX's backlog) ran the client's pool of 100 dry, and the
        messages past it were lost."""
        if len(self._outbox) >= OUTBOX_LIMIT:  # the bus is stuck: the oldest news is stale
            self._outbox.popleft()
            self.counters["publish_dropped"] += 1
        self._outbox.append((channel, message))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_outbox())

    async def _send_outbox(self) -> None:
        while self._outbox:
            channel, message = self._outbox.popleft()
            try:
                await self._bus.publish(channel, message)
            except Exception as error:
                self.counters["publish_failures"] += 1
                log.warning("could not publish %s: %s", message.get("type"), error)

    def _notify(self, hook: str, call: CallRecord) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(call)
            except Exception:  # one feature's bug must not stop the statistics
                self.counters["observer_errors"] += 1
                log.exception("%s.%s failed for %s", type(observer).__name__, hook, call.uniqueid)

    def free_agents(self) -> frozenset[str]:
        """Agents logged in, not paused and not on or ringing for a call: routing prefers them."""
        now = self._clock()
        return frozenset(
            interface
            for interface, agent in self.pipeline.stats.agents.items()
            if agent.state(now) is AgentState.IDLE
        )

    def nobody_waiting(self) -> bool:
        """No caller waits in any queue (the line is quiet: callbacks may be offered)."""
        return not any(queue.waiting for queue in self.pipeline.stats.queues.values())

    def on_routed(self, uniqueid: str, decision: RoutingDecision) -> None:
        self.pipeline.tracker.routed(
            uniqueid,
            Routing(
                queue=decision.queue,
                reason=decision.reason.value,
                ticket=decision.ticket,
                agent=decision.agent,
            ),
        )

    def set_pbx_state(self, up: bool, since: float, problem: str | None = None) -> None:
        """Shown on the panel: whether the PBX connection is up, and since when."""
        self.pbx_state = {"up": up, "since": since, **({"problem": problem} if problem else {})}
        self._changed.set()

    # -- resync ------------------------------------------------------------------------------

    def begin_resync(self) -> None:
        """Called at login, before any live event of the new session is applied."""
        if self._resync_buffer is None:
            self._resync_buffer = deque(maxlen=MAX_RESYNC_BUFFER)

    async def resync_from(
        self,
        ask: Callable[[], Awaitable[T]],
        read: Callable[[T, datetime], PresentState],
    ) -> None:
        """Make live state equal to what the PBX reports: ``ask`` fetches its answers (live
        events are buffered meanwhile), ``read`` turns them into the present state."""
        self.begin_resync()
        try:
            answers = await ask()
        except Exception as error:
            log.warning("resync failed (%s); live events go on unsynchronised", error)
            self.counters["resync_failures"] += 1
            self._end_resync()
            return
        at = self._clock()
        present = read(answers, at)
        queues, members, callers = present.queues, present.members, present.callers
        absent_since = self.pipeline.stats.last_event_at
        self.pipeline.stats.resync(at, queues, members, callers)
        tracker = self.pipeline.tracker
        for caller in callers:
            tracker.handle(caller)
        closed = tracker.resync(present.channels, at)
        if self._queue_log is not None:
            closed = await self._recover_absence(closed, absent_since, at)
        for call in closed:
            self._finished.put_nowait(call)
        self.counters["resyncs"] += 1
        log.info(
            "resynced: %d queues, %d members, %d callers waiting, %d channels",
            len(queues),
            len(members),
            len(callers),
            len(present.channels),
        )
        self._end_resync()
        self.pipeline.stats.settle_resync()

    # -- queue_log: the calls of an absence ----------------------------------------------------

    async def _recover_absence(
        self, closed: list[CallRecord], absent_since: datetime | None, at: datetime
    ) -> list[CallRecord]:
        """Journal the queue calls queue_log holds and the bridge never saw end; ``closed`` (the
        calls the resync ended unseen) come back completed from queue_log where it knows them.
        Returns the calls left for the writer. Any failure here only costs the recovery."""
        watching_since, self._watching_since = self._watching_since, self._watching_since or at
        try:
            span = await self._journal.span()
        except Exception as error:
            self._queue_log_failed("journal", error)
            return closed
        # The log's history from before this journal began watching is not ours to import.
        began = min(filter(None, (watching_since, span and span[0])), default=None)
        if began is None:
            return closed
        if absent_since is None and span is not None:
            absent_since = span[1]  # a new process: away since its predecessor's last call
        if absent_since is None:
            return closed
        floor = max(
            min([absent_since - QUEUE_LOG_MARGIN, *(call.started_at for call in closed)]),
            began,
            at - QUEUE_LOG_MAX_LOOKBACK,
        )
        seen = {call.uniqueid: call for call in closed}
        recovered = await self._read_queue_log(floor, seen)
        if recovered is None:
            return closed
        for call in recovered.calls:
            before = seen.pop(call.uniqueid, None)
            already = _counted_live(before)
            pending = call.uniqueid in self._queue_log_pending
            if pending and call.ended_at and call.ended_at <= absent_since:
                already |= {"completed"}  # it ended while AMI was up: counted live
            self._adopt_recovered(call, before, already)
        self._queue_log_pending = set(recovered.in_progress)
        self._queue_log_pending_since = floor if recovered.in_progress else None
        self.counters["queue_log_recovered"] += len(recovered.calls)
        log.info(
            "queue_log since %s: %d calls recovered, %d still going",
            floor.isoformat(timespec="seconds"),
            len(recovered.calls),
            len(recovered.in_progress),
        )
        return list(seen.values())

    async def follow_up_queue_log(self) -> int:
        """Journal the calls that were still going at the last resync and have ended since;
        their ends were live (AMI counted those), their starts were not."""
        since = self._queue_log_pending_since
        if self._queue_log is None or since is None or not self._queue_log_pending:
            return 0
        if self._clock() - since > QUEUE_LOG_PENDING_LIMIT:  # an Asterisk crash ends no call
            self.counters["queue_log_calls_never_ended"] += len(self._queue_log_pending)
            log.warning(
                "queue_log: %d calls begun since %s never ended there; no longer waiting",
                len(self._queue_log_pending),
                since.isoformat(timespec="seconds"),
            )
            self._queue_log_pending.clear()
            self._queue_log_pending_since = None
            return 0
        recovered = await self._read_queue_log(since, {}, only=self._queue_log_pending)
        if recovered is None:
            return 0
        for call in recovered.calls:
            self._queue_log_pending.discard(call.uniqueid)
            self._adopt_recovered(call, None, frozenset({"completed"}))
        if not self._queue_log_pending:
            self._queue_log_pending_since = None
        self.counters["queue_log_recovered"] += len(recovered.calls)
        return len(recovered.calls)

    async def run_queue_log_follow_up(self, interval: float = QUEUE_LOG_FOLLOW_UP_SECONDS) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.follow_up_queue_log()

    async def _read_queue_log(
        self,
        since: datetime,
        partial: Mapping[str, CallRecord],
        only: set[str] | None = None,
    ) -> Recovery | None:
        if self._queue_log is None:
            return None
        stats = self.pipeline.stats
        names = {agent.name: interface for interface, agent in stats.agents.items()}
        try:
            known = await self._journal.uniqueids_since(since)
            skip = known | self.pipeline.tracker.live_uniqueids()
            return await asyncio.to_thread(
                self._queue_log.recover,
                since,
                skip=skip,
                partial=partial,
                agent_interfaces=names,
                only=only,
            )
        except Exception as error:
            self._queue_log_failed("read", error)
            return None

    def _adopt_recovered(
        self, call: CallRecord, before: CallRecord | None, already: frozenset[str]
    ) -> None:
        call = self.pipeline.tracker.settle_rating(call)
        if self.pipeline.stats.count_recovered(call, already):
            self._changed.set()
        satisfaction = self.pipeline.satisfaction
        if satisfaction is not None and satisfaction.count_call(call):
            self._changed.set()
        if call.outcome is CallOutcome.ANSWERED and (before is None or before.answered_at is None):
            self._notify("call_answered", call)  # signs the ticket at queue_log's answer time
        self._finished.put_nowait(call)

    def _queue_log_failed(self, step: str, error: Exception) -> None:
        self.counters["queue_log_failures"] += 1
        log.warning("queue_log recovery skipped (%s: %s)", step, error)

    def _end_resync(self) -> None:
        buffered, self._resync_buffer = self._resync_buffer or deque(), None
        for message in buffered:
            self._apply(message)
        self._changed.set()

    # -- output tasks ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        stats = self.pipeline.stats
        figures = self.pipeline.snapshot(now)
        for interface, agent in figures["agents"].items():
            agent["state_since"] = self._state_since(interface, agent["state"], now)
            talking_to = stats.agents[interface].on_call_with
            call = self.pipeline.tracker.call(talking_to) if talking_to else None
            agent["caller"] = call.caller_number if call is not None else None
        return {
            **figures,
            "last_15_minutes": stats.recent_snapshot(now),
            "hours": stats.hourly_snapshot(),
            "waiting": stats.waiting_callers(now),
            "pbx": self.pbx_state,
            **({"counts": stats.counts_snapshot(now)} if self.pbx else {}),
        }

    def _state_since(self, interface: str, state: str, now: datetime) -> str:
        """When the agent's state was first seen as it is now (the board's time in state).

        States are looked at on every publication, at least once a second, so this is exact to
        about a second whatever event or timer changed the state."""
        seen = self._agent_states.get(interface)
        if seen is None or seen[0] != state:
            seen = self._agent_states[interface] = (state, now.isoformat(timespec="seconds"))
        return seen[1]

    async def publish_changes(self) -> None:
        """Publish the delta since the last publication and keep the full snapshot on the bus."""
        if self._still_owner is not None and not self._still_owner():
            return
        snapshot = self.snapshot()
        if self._owner_token is not None:
            snapshot["owner_token"] = self._owner_token
        delta = snapshot_delta(self._published, snapshot)
        if not delta:
            return
        self._sequence += 1
        self._published = snapshot
        at = self._clock().isoformat()
        await self._bus.store_snapshot(
            self.snapshot_key, {"seq": self._sequence, "at": at, **snapshot}
        )
        if not self.pbx:  # one of several PBXs: the web processes merge the snapshots instead
            await self._bus.publish(
                STATS_CHANNEL,
                {"type": "stats.delta", "seq": self._sequence, "at": at, **delta},
            )
        self.counters["deltas_published"] += 1

    async def run_publisher(self) -> None:
        """Publish after each change, at most once per ``PUBLISH_COALESCE_SECONDS`` (a burst of
        events makes one delta), and at least every second: some states change with time alone
        (a wrap-up ends, a caller's wait grows) and routing reads them. A change after a quiet
        spell goes out at once; only one that follows a publication closely waits its turn."""
        loop = asyncio.get_running_loop()
        last = -PUBLISH_COALESCE_SECONDS
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), PUBLISH_IDLE_SECONDS)
            turn = last + PUBLISH_COALESCE_SECONDS - loop.time()
            if turn > 0:
                await asyncio.sleep(turn)
            last = loop.time()
            self._changed.clear()
            try:
                await self.publish_changes()
            except Exception as error:  # the state is intact; the next change republishes
                self.counters["publish_failures"] += 1
                log.warning("could not publish statistics: %s", error)

    async def load_today(self) -> None:
        stats = self.pipeline.stats
        now = self._clock()
        midnight = now.astimezone(stats.zone).replace(hour=0, minute=0, second=0, microsecond=0)
        if self.pbx:
            # One of several PBXs, maybe just taken over from a process that died: the day is
            # counted again from the journal, which holds every call that process wrote (its
            # hour rows may be up to a flush behind); queue_log brings the rest at the resync.
            stats.seed_hours([], now)
            for call in await self._journal.calls_since(midnight.astimezone(UTC)):
                stats.count_recovered(call)
        else:
            stats.seed_hours(await self._hours.since(midnight.astimezone(UTC)), now)
        satisfaction = self.pipeline.satisfaction
        if satisfaction is not None:
            rows = await self._journal.ratings_since(midnight.astimezone(UTC))
            satisfaction.seed((Rating(q, a, at, code) for q, a, at, code in rows), now)

    async def flush_hours(self) -> None:
        buckets = self.pipeline.stats.take_dirty_hours()
        try:
            await self._hours.save(buckets)
        except Exception:
            self.pipeline.stats.return_dirty_hours(buckets)
            raise

    async def run_hour_flusher(self, interval: float = HOUR_FLUSH_SECONDS) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush_hours()
            except Exception as error:
                self.counters["hour_flush_failures"] += 1
                log.error("hour buckets not saved (%s); retrying later", error)

    async def run_writer(self) -> None:
        """Write finished calls in order, forever; a failed write is retried, never skipped."""
        while True:
            call = await self._finished.get()
            if self._link_ticket is not None:
                call = await self._link_ticket(call)
            await self._write_until_done(call)
            self._notify("call_finished", call)
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
            except FencedOut as error:
                # Another process owns the PBX now and journals this call from the PBX's own
                # log; retrying would only be refused again.
                self.counters["fenced_writes"] += 1
                log.warning("call %s not written: %s", call.uniqueid, error)
                return
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


def _counted_live(seen: CallRecord | None) -> frozenset[str]:
    """The steps of a call that live events already counted in the statistics."""
    if seen is None:
        return frozenset()
    steps = set()
    if seen.entered_queue_at is not None:
        steps.add("offered")
    if seen.answered_at is not None:
        steps.add("answered")
    if seen.talk_seconds is not None:
        steps.add("completed")
    return frozenset(steps)
