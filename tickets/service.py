"""The ticket side of live calls: every call matched to a ticket, signed when an agent answers.

Fed by the AMI pipeline (``queue_stats.service.CallObserver`` hooks and the journal's ticket
linker). A call normally arrives with the ticket routing opened for it; when routing fell back
(bridge down, budget exceeded) the caller's open ticket is matched here, or a new one is opened,
so no call is left without one. An answered call signs its ticket for the answering agent at the
moment of the connect; an unanswered one starts the ticket's callback clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar

from infra.bus import Bus
from ivr_bypass.decision import normalise_number
from queue_stats.calls import CallOutcome, CallRecord
from survey.scale import RatingScale
from tickets.model import TicketError
from tickets.store import TicketStore

log = logging.getLogger(__name__)

TICKETS_CHANNEL = "tickets"
REMEMBERED_CALLS = 10_000
ATTEMPTS = 5
FIRST_RETRY_DELAY = 0.2
T = TypeVar("T")
MissedCallHook = Callable[[str, CallRecord], Awaitable[None]]
_NOT_MISSED = frozenset({CallOutcome.ANSWERED, CallOutcome.UNKNOWN})


class TicketService:
    def __init__(
        self,
        store: TicketStore,
        bus: Bus,
        *,
        match_days: int,
        clock: Callable[[], datetime],
        scale: RatingScale | None = None,
        on_missed: MissedCallHook | None = None,
    ) -> None:
        """``scale``: the citizens' ratings of calls go onto their tickets with this scale.
        ``on_missed``: told of each missed call with its ticket (the callback list)."""
        self._store = store
        self._scale = scale
        self._on_missed = on_missed
        self._bus = bus
        self._match_window = timedelta(days=match_days)
        self._clock = clock
        self._answered: asyncio.Queue[CallRecord] = asyncio.Queue()
        self._ticket_of_call: OrderedDict[str, str] = OrderedDict()
        self._call_locks: dict[str, asyncio.Lock] = {}
        self.counters: Counter[str] = Counter()

    # -- CallObserver -------------------------------------------------------------------------

    def call_offered(self, call: CallRecord) -> None:
        return None

    def call_answered(self, call: CallRecord) -> None:
        self._answered.put_nowait(call)

    def call_finished(self, call: CallRecord) -> None:
        return None

    # -- work ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Sign tickets for answered calls, in answer order, forever."""
        while True:
            call = await self._answered.get()
            try:
                await self._with_retries("sign", call, self._sign)
            finally:
                self._answered.task_done()

    async def drain(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._answered.join(), timeout)
        except TimeoutError:
            return False
        return True

    async def link(self, call: CallRecord) -> CallRecord:
        """Before the journal row is written: the call's ticket, and a callback if unanswered.

        If the database stays down the row is written without a ticket rather than held back.
        """
        linked = await self._with_retries("link", call, self._link)
        return linked if linked is not None else call

    async def _sign(self, call: CallRecord) -> None:
        number = await self.ensure_ticket(call)
        agent = call.agent_interface or call.agent_name or "unknown"
        at = call.answered_at or self._clock()
        signed = await self._store.sign(number, agent, at)
        self.counters["signed" if signed else "answered_on_signed_ticket"] += 1
        log.info(
            "ticket %s %s by %s (call %s)",
            number,
            "signed" if signed else "answered",
            agent,
            call.uniqueid,
        )
        await self._publish(
            {
                "type": "ticket.signed" if signed else "ticket.answered",
                "ticket": number,
                "agent": agent,
                "call": call.uniqueid,
                "at": at.isoformat(),
            }
        )

    async def _link(self, call: CallRecord) -> CallRecord:
        number = await self.ensure_ticket(call)
        missed = call.direction == "inbound" and call.outcome not in _NOT_MISSED
        if missed:
            at = call.ended_at or self._clock()
            if await self._store.request_callback(number, at):
                self.counters["callbacks"] += 1
                log.info(
                    "ticket %s: call back the caller (%s, call %s)",
                    number,
                    call.outcome,
                    call.uniqueid,
                )
                await self._publish(
                    {
                        "type": "ticket.callback",
                        "ticket": number,
                        "call": call.uniqueid,
                        "at": at.isoformat(),
                    }
                )
        if missed and self._on_missed is not None:
            try:
                await self._on_missed(number, call)
            except Exception:  # the callback list's trouble must not hold the journal back
                self.counters["callback_list_failures"] += 1
                log.exception("call %s: not put on the callback list", call.uniqueid)
        await self._rate(number, call)
        self._call_locks.pop(call.uniqueid, None)
        return replace(call, ticket=number)

    async def _rate(self, number: str, call: CallRecord) -> None:
        """A scale answer goes onto the ticket with the agent; ``not_rated`` stays on the call."""
        answer = self._scale.answer_for_code(call.rating or "") if self._scale else None
        if answer is None:
            return
        at = call.rated_at or call.ended_at or self._clock()
        agent = call.agent_interface or ""
        review = answer.needs_review
        if not await self._store.rate(number, answer.code, agent, call.uniqueid, at, review=review):
            return
        self.counters["rated"] += 1
        if review:
            self.counters["to_review"] += 1
        log.info("ticket %s rated %s for %s (call %s)", number, answer.code, agent, call.uniqueid)
        await self._publish(
            {
                "type": "ticket.review" if review else "ticket.rated",
                "ticket": number,
                "rating": answer.code,
                "agent": agent,
                "call": call.uniqueid,
                "at": at.isoformat(),
            }
        )

    async def ensure_ticket(self, call: CallRecord) -> str:
        """The ticket of ``call``: routing's, else the caller's open one, else a new one."""
        if call.ticket:
            return call.ticket
        known = self._ticket_of_call.get(call.uniqueid)
        if known is not None:
            return known
        lock = self._call_locks.setdefault(call.uniqueid, asyncio.Lock())
        async with lock:
            known = self._ticket_of_call.get(call.uniqueid)
            if known is not None:
                return known
            digits = normalise_number(call.caller_number).digits
            since = self._clock() - self._match_window
            open_tickets = await self._store.open_tickets_for(digits, since)
            if open_tickets:
                number = open_tickets[0].number
                self.counters["matched_after_fallback"] += 1
            else:
                number = await self._store.create(
                    digits, call.started_at, caller_name=call.caller_name
                )
                self.counters["opened_after_fallback"] += 1
            self._ticket_of_call[call.uniqueid] = number
            while len(self._ticket_of_call) > REMEMBERED_CALLS:
                self._ticket_of_call.popitem(last=False)
            return number

    async def _with_retries(
        self, what: str, call: CallRecord, work: Callable[[CallRecord], Awaitable[T]]
    ) -> T | None:
        """Database trouble is retried with back-off. A ticket number no ticket here has (a route
        recorded by a bridge on another database) is dropped and the call matched afresh."""
        delay = FIRST_RETRY_DELAY
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await work(call)
            except asyncio.CancelledError:
                raise
            except TicketError as error:
                if not call.ticket:  # nothing left to drop: report it, never retry it
                    self.counters[f"{what}_failures"] += 1
                    log.error("ticket %s for call %s failed: %s", what, call.uniqueid, error)
                    return None
                self.counters["unknown_tickets"] += 1
                log.warning("call %s: %s; matching the caller instead", call.uniqueid, error)
                call = replace(call, ticket=None)
                continue
            except Exception as error:
                if attempt == ATTEMPTS:
                    self.counters[f"{what}_failures"] += 1
                    log.error(
                        "ticket %s for call %s failed for good: %s", what, call.uniqueid, error
                    )
                    return None
                self.counters[f"{what}_retries"] += 1
                log.warning(
                    "ticket %s for call %s failed (%s); retry in %.1f s",
                    what,
                    call.uniqueid,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay *= 2
        return None

    async def _publish(self, message: dict[str, object]) -> None:
        try:
            await self._bus.publish(TICKETS_CHANNEL, message)
        except Exception as error:  # the ticket is stored; a missed live update is only logged
            self.counters["publish_failures"] += 1
            log.warning("could not publish %s: %s", message.get("type"), error)
