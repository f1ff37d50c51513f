"""Callbacks: the retry rules, the task store (one per caller) and the service between the
panel, the PBX's reports, the journal and the ticket's callback clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ami.codec import parse_message
from ami.events import parse_event
from callbacks.policy import (
    AfterAttempt,
    CallbackStatus,
    DialOutcome,
    RetryPolicy,
    after_attempt,
    on_time,
    outcome_of,
    quiet_line_offers,
)
from callbacks.service import CallbackService
from callbacks.store import CallbackError, CallbackStore
from hotline.schema import upgrade_database
from infra.bus import InProcessBus
from infra.storage import create_engine, session_factory, transactions_for
from pbx.control import PbxUnavailable
from pbx.facts import CallbackAgentMissed, CallbackDialled, VisitRated
from queue_stats.calls import CallOutcome, CallRecord
from survey.scale import DEFAULT_SCALE
from tickets.model import TicketStatus
from tickets.store import TicketStore

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
POLICY = RetryPolicy(3, timedelta(minutes=10))


# -- the rules ---------------------------------------------------------------------------------


def test_dial_statuses_map_to_outcomes() -> None:
    assert [outcome_of(s) for s in ("ANSWER", "NOANSWER", "BUSY", "CHANUNAVAIL", "CANCEL")] == [
        DialOutcome.REACHED, DialOutcome.NO_ANSWER, DialOutcome.BUSY,
        DialOutcome.FAILED, DialOutcome.FAILED,
    ]  # fmt: skip


def test_attempts_retry_after_the_spacing_until_the_last_says_why() -> None:
    first = after_attempt(0, DialOutcome.NO_ANSWER, T0, POLICY)
    assert first == AfterAttempt(CallbackStatus.RETRY, 1, T0 + timedelta(minutes=10))
    second = after_attempt(1, DialOutcome.BUSY, T0, POLICY)
    assert (second.status, second.attempts) == (CallbackStatus.RETRY, 2)
    last = after_attempt(2, DialOutcome.NO_ANSWER, T0, POLICY)
    assert last == AfterAttempt(CallbackStatus.GAVE_UP, 3, None, "no answer after 3 attempts")
    assert after_attempt(2, DialOutcome.REACHED, T0, POLICY).status is CallbackStatus.REACHED


def test_an_agent_who_did_not_answer_costs_the_citizen_no_attempt() -> None:
    assert after_attempt(2, DialOutcome.AGENT_NO_ANSWER, T0, POLICY) == AfterAttempt(
        CallbackStatus.DUE, 2, None
    )


def test_on_time_is_reached_within_the_limit() -> None:
    limit = timedelta(minutes=30)
    assert on_time(T0, T0 + timedelta(minutes=30), limit)
    assert not on_time(T0, T0 + timedelta(minutes=31), limit)
    assert not on_time(T0, None, limit)
    with pytest.raises(ValueError, match="at least once"):
        RetryPolicy(0, timedelta(minutes=1))


# -- the store and the service over a real SQLite database ------------------------------------


@dataclass
class FakeDialer:
    """The PBX port, recording what it was asked; ``down`` makes it refuse like a lost AMI."""

    asked: list[tuple[str, str, int, str]] = field(default_factory=list)
    visits: list[bool] = field(default_factory=list)
    down: bool = False

    async def call_back(
        self, agent: str, number: str, *, callback: int, ticket: str, visit: bool = False
    ) -> None:
        if self.down:
            raise PbxUnavailable("AMI is down")
        self.asked.append((agent, number, callback, ticket))
        self.visits.append(visit)


@dataclass
class Bed:
    service: CallbackService
    store: CallbackStore
    tickets: TicketStore
    dialer: FakeDialer
    journal: list[CallRecord]
    free: set[str]
    now: list[datetime]


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    url = f"sqlite+aiosqlite:///{tmp_path}/hotline.db"
    await upgrade_database(url)
    engine = create_engine(url)
    units = transactions_for(engine)
    tickets = TicketStore(session_factory(engine), SHANGHAI, units=units)
    store = CallbackStore(units)
    journal: list[CallRecord] = []
    free: set[str] = set()
    now = [T0]
    service = CallbackService(
        store,
        tickets,
        InProcessBus(),
        policy=RetryPolicy(2, timedelta(minutes=5)),
        on_time_limit=timedelta(minutes=30),
        clock=lambda: now[0],
        journal=journal.append,
        free_agents=lambda: frozenset(free),
        scale=DEFAULT_SCALE,
    )
    dialer = FakeDialer()
    service.dialer = dialer
    yield Bed(service, store, tickets, dialer, journal, free, now)
    await units.close()
    await engine.dispose()


def missed(uniqueid: str, number: str = "+86 138-0013-8000", at: datetime = T0) -> CallRecord:
    return CallRecord(
        uniqueid, uniqueid, "PJSIP/citizens-1", number, "张三", "12345", at,
        ended_at=at, outcome=CallOutcome.ABANDONED,
    )  # fmt: skip


def dialled(callback: int, status: str, talk: int, at: datetime, ticket: str) -> CallbackDialled:
    return CallbackDialled(
        at, f"9.{callback}{talk}", f"9.{callback}{talk}", "Local/agent1@hotline-callback-agent-1;1",
        callback=callback, ticket=ticket, number="13800138000", agent="PJSIP/agent1",
        status=status, talk_seconds=talk, started_at=at - timedelta(seconds=talk + 5),
    )  # fmt: skip


async def settled(service: CallbackService) -> None:
    """Let the reports handed to the background finish."""
    for _ in range(50):
        if not service._pending:
            return
        await asyncio.sleep(0.01)


async def test_missed_calls_of_one_number_merge_into_one_task(bed: Bed) -> None:
    ticket = await bed.tickets.create("13800138000", T0)
    await bed.service.requested(ticket, missed("1.1"))  # +86 138-0013-8000: the same caller
    await bed.service.requested(ticket, missed("1.2", "13800138000", T0 + timedelta(minutes=3)))
    await bed.service.requested(ticket, missed("1.3", "13900139000"))
    await bed.service.requested(ticket, missed("1.4", ""))  # withheld: nobody to call
    first, other = await bed.store.tasks()
    assert (first.caller_number, first.missed_calls, first.ticket) == ("13800138000", 2, ticket)
    assert first.last_missed_at == T0 + timedelta(minutes=3) and other.missed_calls == 1
    assert bed.service.counters["merged"] == 1 and bed.service.counters["requested"] == 2
    assert bed.service.counters["not_callable"] == 1


async def test_a_reached_citizen_closes_the_task_journals_the_call_and_stops_the_clock(
    bed: Bed,
) -> None:
    ticket = await bed.tickets.create("13800138000", T0)
    assert await bed.tickets.request_callback(ticket, T0)
    await bed.service.requested(ticket, missed("2.1", "13800138000"))
    [task] = await bed.store.tasks()
    started = await bed.service.dial(task.id, "PJSIP/agent1")
    assert started.status is CallbackStatus.DIALLING
    assert bed.dialer.asked == [("PJSIP/agent1", "13800138000", task.id, ticket)]
    with pytest.raises(CallbackError, match="dialling"):
        await bed.service.dial(task.id, "PJSIP/agent2")  # one attempt at a time
    ended = T0 + timedelta(minutes=12)
    bed.service.on_fact(dialled(task.id, "ANSWER", 60, ended, ticket))
    await settled(bed.service)
    done = await bed.store.get(task.id)
    assert (done.status, done.attempts) == (CallbackStatus.REACHED, 1)
    assert done.reached_at == ended - timedelta(seconds=60)  # when the citizen answered
    [row] = bed.journal
    assert (row.direction, row.outcome, row.ticket, row.talk_seconds) == (
        "outbound", CallOutcome.REACHED, ticket, 60,
    )  # fmt: skip
    after = await bed.tickets.get(ticket)
    assert after.status == "contacted" and after.called_back_at == ended - timedelta(seconds=60)
    figures = await bed.service.figures(T0 - timedelta(hours=1))
    assert (figures["reached"], figures["on_time_rate"]) == (1, 1.0)


async def test_no_answer_is_retried_by_the_bridge_once_spaced_and_the_agent_is_free(
    bed: Bed,
) -> None:
    ticket = await bed.tickets.create("13800138000", T0)
    await bed.service.requested(ticket, missed("3.1", "13800138000"))
    [task] = await bed.store.tasks()
    await bed.service.dial(task.id, "PJSIP/agent1")
    bed.service.on_fact(dialled(task.id, "NOANSWER", 0, T0, ticket))
    await settled(bed.service)
    assert (await bed.store.get(task.id)).status is CallbackStatus.RETRY
    bed.free.add("PJSIP/agent1")
    bed.now[0] = T0 + timedelta(minutes=4)
    assert await bed.service.dial_due_retries() == 0  # not spaced enough yet
    bed.now[0] = T0 + timedelta(minutes=5)
    bed.free.clear()
    assert await bed.service.dial_due_retries() == 0  # the agent is busy
    bed.free.add("PJSIP/agent1")
    assert await bed.service.dial_due_retries() == 1
    bed.service.on_fact(dialled(task.id, "BUSY", 0, bed.now[0], ticket))
    await settled(bed.service)
    stopped = await bed.store.get(task.id)
    assert (stopped.status, stopped.stopped_because) == (
        CallbackStatus.GAVE_UP, "busy after 2 attempts",
    )  # fmt: skip
    assert [row.outcome for row in bed.journal] == [CallOutcome.NO_ANSWER, CallOutcome.BUSY]
    assert (await bed.tickets.get(ticket)).called_back_at is None
    bed.now[0] = T0 + timedelta(hours=1)
    assert (await bed.service.figures(T0 - timedelta(hours=1)))["on_time_rate"] == 0.0


async def test_an_agent_who_does_not_answer_or_a_pbx_that_is_down_leaves_the_task_due(
    bed: Bed,
) -> None:
    ticket = await bed.tickets.create("13800138000", T0)
    await bed.service.requested(ticket, missed("4.1", "13800138000"))
    [task] = await bed.store.tasks()
    await bed.service.dial(task.id, "PJSIP/agent1")
    bed.service.on_fact(CallbackAgentMissed(T0, task.id, "PJSIP/agent1", "NOANSWER"))
    await settled(bed.service)
    again = await bed.store.get(task.id)
    assert (again.status, again.attempts, again.last_outcome) == (
        CallbackStatus.DUE, 0, "agent_no_answer",
    )  # fmt: skip
    bed.dialer.down = True
    with pytest.raises(PbxUnavailable):
        await bed.service.dial(task.id, "PJSIP/agent1")
    assert (await bed.store.get(task.id)).status is CallbackStatus.DUE
    bed.service.on_fact(dialled(task.id, "ANSWER", 5, T0, ticket))  # no attempt under way
    await settled(bed.service)
    assert bed.service.counters["unexpected_reports"] == 1
    assert len(bed.journal) == 1  # the PBX's call is journalled all the same


async def test_an_attempt_the_pbx_never_reports_on_is_given_back_after_ten_minutes(
    bed: Bed,
) -> None:
    ticket = await bed.tickets.create("13800138000", T0)
    await bed.service.requested(ticket, missed("5.1", "13800138000"))
    [task] = await bed.store.tasks()
    await bed.service.dial(task.id, "PJSIP/agent1")
    bed.now[0] = T0 + timedelta(minutes=9)
    await bed.service.dial_due_retries()
    assert (await bed.store.get(task.id)).status is CallbackStatus.DIALLING
    bed.now[0] = T0 + timedelta(minutes=11)
    await bed.service.dial_due_retries()
    back = await bed.store.get(task.id)
    assert (back.status, back.last_outcome) == (CallbackStatus.DUE, "unreported")
    assert bed.service.counters["unreported_attempts"] == 1


async def test_a_return_visit_follows_a_resolution_and_its_rating_goes_to_the_ticket(
    bed: Bed,
) -> None:
    ticket = await bed.tickets.create("13800138000", T0, caller_name="张三")
    with pytest.raises(CallbackError, match="resolution"):
        await bed.service.visit(ticket, "PJSIP/agent1")
    for status in (TicketStatus.SIGNED, TicketStatus.CONTACTED, TicketStatus.RESOLVED):
        await bed.tickets.set_status(ticket, status, T0)
    visit = await bed.service.visit(ticket, "PJSIP/agent1")
    assert (visit.kind, visit.status, visit.caller_name) == (
        "visit",
        CallbackStatus.DIALLING,
        "张三",
    )
    assert bed.dialer.asked == [("PJSIP/agent1", "13800138000", visit.id, ticket)]
    assert await bed.service.figures(T0 - timedelta(hours=1)) == {
        **await bed.service.figures(T0 - timedelta(hours=1)),
        "requested": 0,
    }  # visits are not callbacks owed
    bed.service.on_fact(VisitRated(T0, ticket, "dissatisfied", "3", "PJSIP/agent1"))
    await settled(bed.service)
    rated = await bed.tickets.get(ticket)
    assert (rated.visit_rating, rated.visit_agent) == ("dissatisfied", "PJSIP/agent1")
    assert rated.awaits_review and rated.status is TicketStatus.RESOLVED
    bed.service.on_fact(VisitRated(T0, ticket, "wonderful", "9", "PJSIP/agent1"))
    await settled(bed.service)
    assert (await bed.tickets.get(ticket)).visit_rating == "not_rated"  # not on the scale


def test_the_dialplans_callback_events_become_facts() -> None:
    ended = parse_event(
        parse_message(
            "Event: UserEvent\r\nUserEvent: HotlineCallback\r\n"
            "Channel: Local/agent1@hotline-callback-agent-00000001;1\r\n"
            "Uniqueid: 1796668991.2\r\nLinkedid: 1796668991.2\r\nCallback: 7\r\n"
            "Ticket: 12345-20261208-000001\r\nNumber: 13700137001\r\n"
            "Agent: PJSIP/agent1\r\nStatus: ANSWER\r\nAnswered: 3\r\n"
            "Started: 1796668990\r\n\r\n"
        ),
        T0,
    )
    assert isinstance(ended, CallbackDialled)
    assert (ended.callback, ended.status, ended.talk_seconds) == (7, "ANSWER", 3)
    assert ended.started_at == datetime.fromtimestamp(1796668990, UTC)
    missed_agent = parse_event(
        parse_message(
            "Event: UserEvent\r\nUserEvent: HotlineCallbackAgent\r\nCallback: 7\r\n"
            "Agent: PJSIP/agent1\r\nStatus: NOANSWER\r\n\r\n"
        ),
        T0,
    )
    assert missed_agent == CallbackAgentMissed(T0, 7, "PJSIP/agent1", "NOANSWER")
    visit = parse_event(
        parse_message(
            "Event: UserEvent\r\nUserEvent: HotlineVisitRating\r\n"
            "Ticket: 12345-20261208-000001\r\nAgent: PJSIP/agent1\r\nRating: satisfied\r\n"
            "Key: 1\r\n\r\n"
        ),
        T0,
    )
    assert visit == VisitRated(T0, "12345-20261208-000001", "satisfied", "1", "PJSIP/agent1")


def test_quiet_line_offers_pair_the_oldest_due_with_free_agents_who_hold_none() -> None:
    assert quiet_line_offers([7, 8, 9], ["PJSIP/agent1", "PJSIP/agent2"], {}) == [
        (7, "PJSIP/agent1"), (8, "PJSIP/agent2"),
    ]  # fmt: skip
    # 7 is on offer to agent1 already: the next task goes to the next free agent.
    assert quiet_line_offers([7, 8], ["PJSIP/agent1", "PJSIP/agent2"], {7: "PJSIP/agent1"}) == [
        (8, "PJSIP/agent2")
    ]
    assert quiet_line_offers([7], [], {}) == []


async def test_offers_go_out_only_while_quiet_and_lapse_after_their_time(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/hotline.db"
    await upgrade_database(url)
    engine = create_engine(url)
    units = transactions_for(engine)
    tickets = TicketStore(session_factory(engine), SHANGHAI, units=units)
    store = CallbackStore(units)
    bus = InProcessBus()
    quiet, now = [False], [T0]
    service = CallbackService(
        store, tickets, bus, policy=POLICY, on_time_limit=timedelta(minutes=30),
        clock=lambda: now[0], journal=lambda call: None,
        free_agents=lambda: frozenset({"PJSIP/agent1"}), quiet=lambda: quiet[0],
        offer_seconds=20,
    )  # fmt: skip
    service.dialer = FakeDialer()
    heard: list[dict] = []

    async def listen() -> None:
        async for message in bus.subscribe("calls"):
            heard.append(message)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0)
    ticket = await tickets.create("13800138000", T0)
    await service.requested(ticket, missed("6.1", "13800138000"))
    assert await service.offer_when_quiet() == 0  # someone waits in a queue
    quiet[0] = True
    assert await service.offer_when_quiet() == 1
    assert await service.offer_when_quiet() == 0  # still on offer
    now[0] = T0 + timedelta(seconds=21)
    assert await service.offer_when_quiet() == 1  # lapsed: offered again
    await asyncio.sleep(0.01)
    assert [m["type"] for m in heard] == ["callback.offer"] * 2
    assert heard[0]["agent"] == "PJSIP/agent1" and heard[0]["missed_calls"] == 1
    [task] = await store.tasks()
    await service.dial(task.id, "PJSIP/agent1")  # the agent accepted
    assert await service.offer_when_quiet() == 0  # nothing due any more
    listener.cancel()
    await units.close()
    await engine.dispose()
