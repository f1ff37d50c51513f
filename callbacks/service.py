"""The callback list at work: missed calls in, attempts out through the PBX, results back.

``requested`` puts a missed caller on the list (merged per caller). ``dial`` starts an attempt
for an agent: the PBX rings the agent's phone, then the citizen's (``Dialer``). The PBX reports
how it went as facts (``CallbackAgentMissed``, ``CallbackDialled``): the task moves on under
the retry policy, the attempt is journalled as an outbound call linked to the ticket, and a
reached citizen stops the ticket's callback clock. ``run`` dials the retries whose spacing
has passed, through the agent who began the task, once that agent is free.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from callbacks.policy import (
    CallbackStatus,
    DialOutcome,
    RetryPolicy,
    on_time,
    outcome_of,
    quiet_line_offers,
)
from callbacks.store import VISIT, CallbackError, CallbackStore, CallbackTask
from infra.bus import Bus
from ivr_bypass.decision import normalise_number
from pbx.control import PbxRefused, PbxUnavailable
from pbx.facts import CallbackAgentMissed, CallbackDialled, DomainEvent, VisitRated
from queue_stats.calls import CallOutcome, CallRecord
from survey.scale import NOT_RATED, RatingScale
from tickets.model import TicketStatus
from tickets.service import TICKETS_CHANNEL
from tickets.store import TicketStore

log = logging.getLogger(__name__)

CALLBACKS_CHANNEL = TICKETS_CHANNEL  # the panels' ticket news
OFFERS_CHANNEL = "calls"  # per agent: an offer reaches only the agent it is made to
RETRY_CHECK_SECONDS = 1.0
STALE_DIALLING = timedelta(minutes=10)  # an attempt the PBX never reported on
STALE_CHECK_EVERY = timedelta(minutes=1)  # a write unit: not every second


class Dialer(Protocol):
    """The PBX side of an attempt: ring ``agent``, then ``number``; raises ``PbxRefused`` or
    ``PbxUnavailable`` when the PBX would not start it."""

    async def call_back(
        self, agent: str, number: str, *, callback: int, ticket: str, visit: bool = False
    ) -> None:
        """``visit``: a return visit, whose citizen is asked for a rating of the case once the
        agent hangs up."""


class CallbackService:
    def __init__(
        self,
        store: CallbackStore,
        tickets: TicketStore,
        bus: Bus,
        *,
        policy: RetryPolicy,
        on_time_limit: timedelta,
        clock: Callable[[], datetime],
        journal: Callable[[CallRecord], None],
        free_agents: Callable[[], frozenset[str]],
        scale: RatingScale | None = None,
        quiet: Callable[[], bool] | None = None,
        offer_seconds: float = 20.0,
    ) -> None:
        """``quiet``: when set, callbacks are offered to free agents while it says nobody
        waits in any queue (off by default); an offer stands ``offer_seconds``."""
        self._store = store
        self._scale = scale
        self._quiet = quiet
        self._offer_for = timedelta(seconds=offer_seconds)
        self._offers: dict[int, tuple[str, datetime]] = {}
        self._tickets = tickets
        self._bus = bus
        self.policy = policy
        self._on_time_limit = on_time_limit
        self._clock = clock
        self._journal = journal
        self._free_agents = free_agents
        self.dialer: Dialer | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._stale_checked: datetime | None = None
        self.counters: Counter[str] = Counter()

    # -- in --------------------------------------------------------------------------------------

    async def requested(self, ticket: str, call: CallRecord) -> None:
        """A missed inbound call (``TicketService``'s hook): on the list, one task per caller."""
        digits = normalise_number(call.caller_number).digits
        if not digits:  # a withheld or invalid number: nothing to dial
            self.counters["not_callable"] += 1
            return
        at = call.ended_at or self._clock()
        task, merged = await self._store.request(ticket, digits, call.caller_name, at)
        self.counters["merged" if merged else "requested"] += 1
        await self._publish("callback.merged" if merged else "callback.requested", task)

    def on_fact(self, fact: DomainEvent) -> None:
        """The PBX's word on an attempt (from the AMI feed); handled in the background."""
        if isinstance(fact, CallbackDialled):
            self._in_background(self._on_dialled(fact))
        elif isinstance(fact, CallbackAgentMissed):
            self._in_background(self._on_agent_missed(fact))
        elif isinstance(fact, VisitRated):
            self._in_background(self._on_visit_rated(fact))

    async def visit(self, number: str, agent: str) -> CallbackTask:
        """The return visit (回访) of a resolved ticket, from ``agent``'s phone: the same path
        as a callback; once the agent hangs up, the citizen rates the whole case."""
        ticket = await self._tickets.get(number)
        if ticket.status not in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
            raise CallbackError(f"ticket {number} is {ticket.status}: visits follow a resolution")
        task = await self._store.visit(
            number, ticket.caller_number, ticket.caller_name, self._clock()
        )
        return await self.dial(task.id, agent)

    async def dial(self, task_id: int, agent: str) -> CallbackTask:
        """Start an attempt from ``agent``'s phone; ``CallbackError`` if the task is not
        waiting for one, ``PbxUnavailable``/``PbxRefused`` if the PBX would not dial."""
        if self.dialer is None:
            raise PbxUnavailable("no PBX to dial through (a replay, or none configured)")
        task = await self._store.start(task_id, agent, self._clock())
        self._offers.pop(task_id, None)
        try:
            await self.dialer.call_back(
                agent,
                task.caller_number,
                callback=task.id,
                ticket=task.ticket,
                visit=task.kind == VISIT,
            )
        except (PbxUnavailable, PbxRefused) as error:
            await self._store.give_back(task.id, "pbx_refused")
            self.counters["dial_refused"] += 1
            log.warning("callback %d: the PBX did not dial (%s)", task.id, error)
            raise
        self.counters["attempts_started"] += 1
        log.info("callback %d: ringing %s, then %s", task.id, agent, task.caller_number)
        await self._publish("callback.dialling", task)
        return task

    # -- the PBX's reports -------------------------------------------------------------------------

    async def _on_agent_missed(self, fact: CallbackAgentMissed) -> None:
        task = await self._store.finish(
            fact.callback, DialOutcome.AGENT_NO_ANSWER, fact.at, self.policy
        )
        if task is None:
            self.counters["unexpected_reports"] += 1
            return
        self.counters["agent_no_answer"] += 1
        log.info("callback %d: %s did not answer (%s)", task.id, fact.agent, fact.status)
        await self._publish("callback.agent_missed", task)

    async def _on_visit_rated(self, fact: VisitRated) -> None:
        answer = self._scale.answer_for_code(fact.rating) if self._scale else None
        code = answer.code if answer is not None else NOT_RATED
        review = answer is not None and answer.needs_review
        if await self._tickets.rate_visit(fact.ticket, code, fact.agent, fact.at, review=review):
            self.counters[f"visit_{code}"] += 1
            log.info("ticket %s: the return visit rated the case %s", fact.ticket, code)

    async def _on_dialled(self, fact: CallbackDialled) -> None:
        outcome = outcome_of(fact.status)
        answered_at = (
            fact.at - timedelta(seconds=fact.talk_seconds)
            if outcome is DialOutcome.REACHED
            else None
        )
        task = await self._store.finish(fact.callback, outcome, answered_at or fact.at, self.policy)
        if task is None:
            self.counters["unexpected_reports"] += 1
            log.warning("callback %d: a report for no attempt under way", fact.callback)
        self._journal(self._journal_row(fact, outcome, answered_at, task))
        if task is None:
            return
        self.counters[f"outcome_{outcome.value}"] += 1
        if answered_at and await self._tickets.reached_by_callback(task.ticket, answered_at):
            self.counters["ticket_clocks_stopped"] += 1
        log.info("callback %d: %s (%s), task %s", task.id, outcome.value, fact.status,
                 task.status.value)  # fmt: skip
        await self._publish("callback.attempted", task)

    def _journal_row(
        self,
        fact: CallbackDialled,
        outcome: DialOutcome,
        answered_at: datetime | None,
        task: CallbackTask | None,
    ) -> CallRecord:
        return CallRecord(
            uniqueid=fact.uniqueid,
            linkedid=fact.linkedid,
            channel=fact.channel,
            caller_number=fact.number,
            caller_name=task.caller_name if task is not None else "",
            dialled_number=fact.number,
            started_at=fact.started_at,
            agent_interface=fact.agent or (task.agent if task is not None else None),
            answered_at=answered_at,
            ended_at=fact.at,
            hold_seconds=(
                max(0, round((answered_at - fact.started_at).total_seconds()))
                if answered_at
                else None
            ),
            talk_seconds=fact.talk_seconds if answered_at else None,
            outcome=CallOutcome(outcome.value),  # the same words: reached, no_answer, ...
            ticket=fact.ticket or (task.ticket if task is not None else None),
            routing_reason="visit" if task is not None and task.kind == VISIT else "callback",
            direction="outbound",
        )

    # -- retries ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Dial each retry once its spacing has passed and its agent is free; when the line is
        quiet (and offers are on), offer the oldest due callbacks to free agents."""
        while True:
            await asyncio.sleep(RETRY_CHECK_SECONDS)
            try:
                await self.dial_due_retries()
                await self.offer_when_quiet()
            except Exception as error:  # the list stays as it is; the next round tries again
                self.counters["retry_failures"] += 1
                log.warning("callback retries not dialled: %s", error)

    async def offer_when_quiet(self) -> int:
        """Offer due callbacks to free agents while nobody waits: the agent's screen pops the
        offer and the agent accepts it (``dial``). An offer not taken in time lapses and may
        go to another agent."""
        if self._quiet is None or self.dialer is None:
            return 0
        now = self._clock()
        self._offers = {task: held for task, held in self._offers.items() if held[1] > now}
        free = sorted(self._free_agents())
        if not free or not self._quiet():
            return 0
        due = [
            task
            for task in await self._store.tasks(open_only=True, limit=50)
            if task.status is CallbackStatus.DUE and task.kind != VISIT
        ]
        by_id = {task.id: task for task in due}
        offered = {task: agent for task, (agent, _) in self._offers.items()}
        made = 0
        for task_id, agent in quiet_line_offers([t.id for t in due], free, offered):
            task = by_id[task_id]
            self._offers[task_id] = (agent, now + self._offer_for)
            await self._publish_offer(task, agent)
            made += 1
        self.counters["offers"] += made
        return made

    async def _publish_offer(self, task: CallbackTask, agent: str) -> None:
        try:
            await self._bus.publish(
                OFFERS_CHANNEL,
                {
                    "type": "callback.offer",
                    "agent": agent,
                    "callback": task.id,
                    "ticket": task.ticket,
                    "caller_number": task.caller_number,
                    "caller_name": task.caller_name,
                    "missed_calls": task.missed_calls,
                    "expires_in": self._offer_for.total_seconds(),
                },
            )
        except Exception as error:
            self.counters["publish_failures"] += 1
            log.warning("could not offer callback %d: %s", task.id, error)

    async def dial_due_retries(self) -> int:
        if self.dialer is None:
            return 0
        now = self._clock()
        if self._stale_checked is None or now - self._stale_checked >= STALE_CHECK_EVERY:
            self._stale_checked = now
            for task in await self._store.give_back_stale(now - STALE_DIALLING):
                self.counters["unreported_attempts"] += 1
                log.warning("callback %d: the PBX never reported its attempt; waiting again",
                            task.id)  # fmt: skip
        free = self._free_agents()
        dialled = 0
        for task in await self._store.due_retries(self._clock()):
            if task.agent is None or task.agent not in free:
                continue
            try:
                await self.dial(task.id, task.agent)
            except (CallbackError, PbxRefused, PbxUnavailable):
                continue
            free = free - {task.agent}
            dialled += 1
        return dialled

    # -- out -------------------------------------------------------------------------------------

    async def figures(self, since: datetime) -> dict[str, Any]:
        """Callbacks owed since ``since``: how many, reached, given up, still open, and the
        on-time rate (reached within the SLA's callback time / those whose time is up)."""
        now = self._clock()
        tasks = await self._store.requested_since(since)
        reached = [t for t in tasks if t.status is CallbackStatus.REACHED]
        decided = [
            t
            for t in tasks
            if t.reached_at is not None or now - t.requested_at > self._on_time_limit
        ]
        timely = [t for t in decided if on_time(t.requested_at, t.reached_at, self._on_time_limit)]
        return {
            "requested": len(tasks),
            "missed_calls": sum(t.missed_calls for t in tasks),
            "reached": len(reached),
            "gave_up": sum(t.status is CallbackStatus.GAVE_UP for t in tasks),
            "open": sum(t.is_open for t in tasks),
            "attempts": sum(t.attempts for t in tasks),
            "on_time_rate": round(len(timely) / len(decided), 4) if decided else None,
            "on_time_minutes": self._on_time_limit.total_seconds() / 60,
        }

    async def _publish(self, kind: str, task: CallbackTask) -> None:
        try:
            await self._bus.publish(
                CALLBACKS_CHANNEL,
                {"type": kind, "callback": task.id, "ticket": task.ticket,
                 "status": task.status.value, "attempts": task.attempts},
            )  # fmt: skip
        except Exception as error:  # the task is stored; a missed live update is only logged
            self.counters["publish_failures"] += 1
            log.warning("could not publish %s: %s", kind, error)

    def _in_background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        task.add_done_callback(self._report_failure)

    def _report_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.counters["report_failures"] += 1
            log.error("a callback report was not handled: %s", task.exception())
