"""Tickets: the life cycle table, numbers, the store on SQLite and PostgreSQL, matching at routing
time, signing at answer and callbacks for unanswered callers."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from agi.routing import route_handler
from agi.server import FastAgiServer
from hotline.schema import upgrade_database
from infra.bus import InProcessBus
from infra.storage import (
    AsyncTransactions,
    Base,
    ThreadTransactions,
    Transactions,
    create_engine,
    session_factory,
    transactions_for,
)
from ivr_bypass.decision import IncomingCall, RoutingReason, RoutingRules, fallback_decision
from ivr_bypass.directory import DirectoryError, EnterpriseDirectory
from ivr_bypass.router import Router, free_agents_in
from queue_stats.calls import CallOutcome, CallRecord
from queue_stats.journal import CallJournal
from survey.scale import DEFAULT_SCALE
from tests.agi_commands import variables_set
from tickets.model import (
    ALLOWED_MOVES,
    OPEN_STATUSES,
    TicketError,
    TicketNumber,
    TicketStatus,
    TicketTransitionError,
    move,
)
from tickets.service import TicketService
from tickets.sla import ClockName, ClockState, SlaPolicy, WorkingCalendar, sla_report
from tickets.store import TicketEdit, TicketStore

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


# -- the pure life cycle ----------------------------------------------------------------------


def test_every_status_has_a_row_and_terminal_states_only_reopen() -> None:
    assert set(ALLOWED_MOVES) == set(TicketStatus)
    assert ALLOWED_MOVES[TicketStatus.CLOSED] == {TicketStatus.REOPENED}
    assert TicketStatus.RESOLVED not in OPEN_STATUSES and TicketStatus.CALLBACK in OPEN_STATUSES


def test_a_forbidden_move_raises_and_says_what_is_allowed() -> None:
    with pytest.raises(TicketTransitionError, match="a new ticket cannot become resolved"):
        move(TicketStatus.NEW, TicketStatus.RESOLVED, T0, {})


def test_first_times_are_kept_and_a_callback_contact_is_the_call_back() -> None:
    stamped = {"contacted_at": T0}
    assert "contacted_at" not in move(TicketStatus.REOPENED, TicketStatus.CONTACTED, T0, stamped)
    changes = move(TicketStatus.CALLBACK, TicketStatus.CONTACTED, T0, {})
    assert changes["called_back_at"] == T0 and changes["contacted_at"] == T0
    reopened = move(TicketStatus.RESOLVED, TicketStatus.REOPENED, T0, {"resolved_at": T0})
    assert reopened["resolved_at"] is None


def test_ticket_numbers_round_trip_and_refuse_garbage() -> None:
    number = TicketNumber("12345", "20261125", 123)
    assert str(number) == "12345-20261125-000123"
    assert TicketNumber.parse("12345-20261125-000123") == number
    for bad in ("", "12345-2026-1", "'; DROP TABLE tickets;--", "12345-20261125-00012x"):
        with pytest.raises(TicketError):
            TicketNumber.parse(bad)


# -- the store --------------------------------------------------------------------------------


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/hotline.db"


@pytest.fixture
async def store(database: str) -> AsyncIterator[TicketStore]:
    engine = create_engine(database)
    yield TicketStore(session_factory(engine), SHANGHAI)
    await engine.dispose()


async def test_migrations_create_exactly_the_models(database: str) -> None:
    engine = create_engine(database)
    async with engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    await engine.dispose()
    assert differences == []


async def test_numbers_count_per_local_day(store: TicketStore) -> None:
    late_evening_utc = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)  # 00:30 on the 25th locally
    first = await store.create("13800138000", late_evening_utc, caller_name="张三")
    second = await store.create("13900139000", T0)
    next_day = await store.create("13800138000", T0 + timedelta(days=1))
    assert (first, second, next_day) == (
        "12345-20261125-000001",
        "12345-20261125-000002",
        "12345-20261126-000001",
    )
    ticket = await store.get(first)
    assert (ticket.status, ticket.caller_name, ticket.opened_at) == (
        "new",
        "张三",
        late_evening_utc,
    )


async def test_concurrent_creation_never_repeats_a_number(store: TicketStore) -> None:
    numbers = await asyncio.gather(*(store.create(f"1380013{i:04d}", T0) for i in range(40)))
    assert len(set(numbers)) == 40
    assert sorted(TicketNumber.parse(n).serial for n in numbers) == list(range(1, 41))


async def test_open_tickets_are_matched_within_the_window(store: TicketStore) -> None:
    old = await store.create("13800138000", T0 - timedelta(days=30))
    recent = await store.create("13800138000", T0 - timedelta(days=1))
    other = await store.create("13900139000", T0)
    found = await store.open_tickets_for("13800138000", T0 - timedelta(days=7))
    assert [t.number for t in found] == [recent]
    await store.sign(recent, "PJSIP/agent2", T0)
    await store.set_status(recent, TicketStatus.CONTACTED, T0)
    await store.set_status(recent, TicketStatus.RESOLVED, T0)
    assert await store.open_tickets_for("13800138000", T0 - timedelta(days=7)) == ()
    assert await store.open_tickets_for("", T0 - timedelta(days=7)) == ()
    assert {old, other}.isdisjoint({recent})


async def test_signing_keeps_the_first_owner_and_time(store: TicketStore) -> None:
    number = await store.create("13800138000", T0)
    assert await store.sign(number, "PJSIP/agent2", T0 + timedelta(seconds=30))
    assert not await store.sign(number, "PJSIP/agent1", T0 + timedelta(hours=2))
    ticket = await store.get(number)
    assert (ticket.status, ticket.owner_agent) == ("signed", "PJSIP/agent2")
    assert ticket.signed_at == T0 + timedelta(seconds=30)
    assert ticket.updated_at == T0 + timedelta(hours=2)


async def test_an_unanswered_caller_becomes_a_callback_task(store: TicketStore) -> None:
    number = await store.create("13800138000", T0)
    assert await store.request_callback(number, T0 + timedelta(minutes=1))
    ticket = await store.get(number)
    assert ticket.status == "callback" and ticket.callback_requested_at == T0 + timedelta(minutes=1)
    contacted = await store.set_status(number, TicketStatus.CONTACTED, T0 + timedelta(minutes=20))
    assert contacted.called_back_at == T0 + timedelta(minutes=20)
    report = sla_report(
        contacted.clock_facts(), T0 + timedelta(hours=1), SlaPolicy(), WorkingCalendar(), SHANGHAI
    )
    assert report.clock(ClockName.CALLBACK).state is ClockState.MET


async def test_a_ticket_in_hand_gets_a_callback_clock_but_keeps_its_status(
    store: TicketStore,
) -> None:
    number = await store.create("13800138000", T0)
    await store.sign(number, "PJSIP/agent2", T0)
    assert await store.request_callback(number, T0 + timedelta(hours=1))
    assert not await store.request_callback(
        number, T0 + timedelta(hours=2)
    )  # one pending at a time
    ticket = await store.get(number)
    assert (ticket.status, ticket.callback_requested_at) == ("signed", T0 + timedelta(hours=1))


async def test_edits_are_checked(store: TicketStore) -> None:
    number = await store.create("13800138000", T0)
    ticket = await store.edit(number, TicketEdit(category="路灯", satisfaction=5), T0)
    assert (ticket.category, ticket.satisfaction) == ("路灯", 5)
    with pytest.raises(TicketError, match="1 to 5"):
        await store.edit(number, TicketEdit(satisfaction=6), T0)
    with pytest.raises(TicketError, match="no ticket"):
        await store.get("12345-20991231-000001")
    with pytest.raises(TicketTransitionError):
        await store.set_status(number, TicketStatus.CLOSED, T0)


async def test_the_directory_normalises_numbers(database: str) -> None:
    engine = create_engine(database)
    directory = EnterpriseDirectory(session_factory(engine))
    await directory.add("+86 21 6543-2100", "上海电力", T0)
    await directory.add("021 65432100", "国网上海电力", T0)  # same number: renamed
    assert await directory.lookup("2165432100") == "国网上海电力"
    assert [e.number for e in await directory.entries()] == ["2165432100"]
    with pytest.raises(DirectoryError):
        await directory.add("anonymous", "x", T0)
    with pytest.raises(DirectoryError):
        await directory.add("13800138000", "  ", T0)
    assert await directory.remove("021-6543-2100")
    assert await directory.lookup("2165432100") is None
    await engine.dispose()


@pytest.mark.parametrize("units_kind", ["routing thread", "pooled"])
async def test_tickets_opened_on_the_routing_path_read_back_through_the_orm(
    database: str, units_kind: str
) -> None:
    """Routing's statements bypass SQLAlchemy's execution layer on the SQLite routing thread:
    what they write and read must be what the ORM writes and reads, to the microsecond."""
    if units_kind == "routing thread" and not database.startswith("sqlite"):
        pytest.skip("the routing thread serves SQLite only")
    engine = create_engine(database)
    units: Transactions = AsyncTransactions(engine)
    if units_kind == "routing thread":
        units = ThreadTransactions(database)
    store = TicketStore(session_factory(engine), SHANGHAI, units=units)
    with_micros = datetime(2026, 11, 25, 9, 30, 15, 123456, tzinfo=SHANGHAI)
    whole_second = T0 + timedelta(hours=2)
    try:
        first = await units(
            lambda c: store.open_ticket_in(
                c, "13800138000", with_micros, caller_name="张三", emergency=True
            )
        )
        second = await units(lambda c: store.open_ticket_in(c, "13800138000", whole_second))
        assert (first, second) == ("12345-20261125-000001", "12345-20261125-000002")
        ticket = await store.get(first)
        assert (ticket.opened_at, ticket.updated_at) == (with_micros, with_micros)
        assert (ticket.caller_name, ticket.emergency, ticket.status) == ("张三", True, "new")
        assert (await store.get(second)).opened_at == whole_second
        # `since` is inclusive: the stored text and the bound text are the same format
        found = await units(lambda c: store.open_tickets_in(c, "13800138000", whole_second))
        assert [(t.number, t.emergency, t.last_activity_at) for t in found] == [
            (second, False, whole_second)
        ]
        both = await units(lambda c: store.open_tickets_in(c, "13800138000", with_micros))
        assert [t.number for t in both] == [second, first]
        assert both[1].last_activity_at == with_micros and both[1].emergency is True
        await store.sign(first, "PJSIP/agent1", T0 + timedelta(hours=3))
        await store.set_status(first, TicketStatus.CONTACTED, T0 + timedelta(hours=3))
        await store.set_status(first, TicketStatus.RESOLVED, T0 + timedelta(hours=3))
        still_open = await units(lambda c: store.open_tickets_in(c, "13800138000", with_micros))
        assert [t.number for t in still_open] == [second]
    finally:
        await units.close()
        await engine.dispose()


# -- routing with the real store ----------------------------------------------------------------


async def test_a_second_call_reaches_the_owner_of_the_ticket_the_first_call_opened(
    database: str,
) -> None:
    engine = create_engine(database)
    sessions = session_factory(engine)
    free = frozenset({"PJSIP/agent1", "PJSIP/agent2"})
    units = transactions_for(engine)
    store = TicketStore(sessions, SHANGHAI, units=units)
    router = Router(
        RoutingRules(),
        units,
        store,
        EnterpriseDirectory(sessions),
        lambda: free,
        match_days=7,
        clock=lambda: T0,
    )
    first = await router.route(IncomingCall("+86 138 0013 8000", "12345", "1.1", "张三"))
    assert first.reason is RoutingReason.DEFAULT and first.ticket == "12345-20261125-000001"
    await store.sign(first.ticket, "PJSIP/agent2", T0)
    second = await router.route(IncomingCall("013800138000", "12345", "1.2"))
    assert (second.reason, second.agent, second.ticket) == (
        RoutingReason.TICKET_OWNER,
        "PJSIP/agent2",
        first.ticket,
    )
    assert await store.count() == 1
    await units.close()
    await engine.dispose()


def test_free_agents_come_from_the_published_snapshot() -> None:
    snapshot = {
        "agents": {
            "PJSIP/agent1": {"state": "idle"},
            "PJSIP/agent2": {"state": "on_call"},
            "PJSIP/agent3": {"state": "paused"},
        }
    }
    assert free_agents_in(snapshot) == {"PJSIP/agent1"}
    assert free_agents_in(None) is None


# -- the AMI side: every call gets a ticket -----------------------------------------------------

CALL = CallRecord(
    uniqueid="1795575485.0",
    linkedid="1795575485.0",
    channel="PJSIP/citizens-00000000",
    caller_number="13800138000",
    caller_name="张三",
    dialled_number="12345",
    started_at=T0,
)


@pytest.fixture
async def ticket_service(sqlite_url: str) -> AsyncIterator[tuple[TicketService, TicketStore]]:
    await upgrade_database(sqlite_url)
    engine = create_engine(sqlite_url)
    store = TicketStore(session_factory(engine), SHANGHAI)
    service = TicketService(store, InProcessBus(), match_days=7, clock=lambda: T0)
    worker = asyncio.create_task(service.run())
    yield service, store
    worker.cancel()
    await engine.dispose()


async def test_a_call_routed_by_the_fallback_still_gets_one_ticket_signed_at_answer(
    ticket_service: tuple[TicketService, TicketStore],
) -> None:
    service, store = ticket_service
    answered = replace(
        CALL,
        outcome=CallOutcome.ANSWERED,
        agent_interface="PJSIP/agent1",
        answered_at=T0 + timedelta(seconds=5),
    )
    service.call_answered(answered)
    finished = replace(answered, ended_at=T0 + timedelta(seconds=65))
    linked = await service.link(finished)  # races the signer: still one ticket
    assert await service.drain(5)
    assert linked.ticket == "12345-20261125-000001"
    assert await store.count() == 1
    ticket = await store.get(linked.ticket)
    assert (ticket.status, ticket.owner_agent, ticket.signed_at) == (
        "signed",
        "PJSIP/agent1",
        T0 + timedelta(seconds=5),
    )


async def test_an_abandoned_call_on_its_routed_ticket_asks_for_a_callback(
    ticket_service: tuple[TicketService, TicketStore],
) -> None:
    service, store = ticket_service
    number = await store.create("13800138000", T0)
    abandoned = replace(
        CALL, ticket=number, outcome=CallOutcome.ABANDONED, ended_at=T0 + timedelta(seconds=40)
    )
    linked = await service.link(abandoned)
    assert linked.ticket == number
    ticket = await store.get(number)
    assert (ticket.status, ticket.callback_requested_at) == (
        "callback",
        T0 + timedelta(seconds=40),
    )
    assert service.counters["callbacks"] == 1


async def test_a_fallback_call_reuses_the_callers_open_ticket(
    ticket_service: tuple[TicketService, TicketStore],
) -> None:
    service, store = ticket_service
    number = await store.create("13800138000", T0 - timedelta(days=2))
    linked = await service.link(replace(CALL, outcome=CallOutcome.TIMEOUT, ended_at=T0))
    assert linked.ticket == number and await store.count() == 1


async def test_journal_rows_carry_the_linked_ticket(sqlite_url: str) -> None:
    await upgrade_database(sqlite_url)
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    store = TicketStore(sessions, SHANGHAI)
    service = TicketService(store, InProcessBus(), match_days=7, clock=lambda: T0)
    call = await service.link(replace(CALL, outcome=CallOutcome.ABANDONED, ended_at=T0))
    await CallJournal(sessions).record(call)
    assert [row.uniqueid for row in await store.calls_of(call.ticket or "")] == [CALL.uniqueid]
    await engine.dispose()


async def test_a_dead_database_leaves_the_call_without_a_ticket_instead_of_losing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tickets.service.FIRST_RETRY_DELAY", 0.001)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/never-migrated.db")
    store = TicketStore(session_factory(engine), SHANGHAI)
    service = TicketService(store, InProcessBus(), match_days=7, clock=lambda: T0)
    linked = await service.link(replace(CALL, outcome=CallOutcome.ABANDONED, ended_at=T0))
    assert linked.ticket is None
    assert service.counters["link_failures"] == 1 and service.counters["link_retries"] == 4
    await engine.dispose()


async def test_a_ticket_number_no_ticket_has_is_replaced_by_a_matched_one(
    ticket_service: tuple[TicketService, TicketStore],
) -> None:
    """E.g. a route recorded on the channel by a bridge on another database."""
    service, store = ticket_service
    stranger = replace(
        CALL,
        ticket="12345-20261125-999999",
        outcome=CallOutcome.ABANDONED,
        ended_at=T0 + timedelta(seconds=9),
    )
    linked = await service.link(stranger)
    assert linked.ticket == "12345-20261125-000001"
    assert (await store.get(linked.ticket)).status == "callback"
    assert service.counters["unknown_tickets"] == 1 and service.counters["link_retries"] == 0


async def asterisk_route(port: int, uniqueid: str, caller: str) -> dict[str, str]:
    """One ``route`` dialogue as Asterisk has it; the variables it leaves on the channel."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            "agi_network: yes\nagi_network_script: route\nagi_channel: PJSIP/citizens-1\n"
            f"agi_uniqueid: {uniqueid}\nagi_callerid: {caller}\nagi_extension: 12345\n\n"
        ).encode()
    )
    commands = []
    while line := await asyncio.wait_for(reader.readline(), 2):
        commands.append(line.decode().rstrip("\n"))
        writer.write(b"200 result=0\n")
    writer.close()
    return variables_set(commands)


async def test_a_burst_that_outruns_the_database_gets_the_default_route_without_queued_work(
    tmp_path: Path,
) -> None:
    """With the routing thread stuck, calls get the default route within the budget, and their
    decisions are not run later: queued work nobody waits for would make the calls after the
    burst late too. Once the thread is free, the next call is decided and gets its ticket."""
    url = f"sqlite+aiosqlite:///{tmp_path}/hotline.db"
    await upgrade_database(url)
    engine = create_engine(url)
    units = ThreadTransactions(url)
    store = TicketStore(session_factory(engine), SHANGHAI, units=units)
    router = Router(
        RoutingRules(),
        units,
        store,
        EnterpriseDirectory(session_factory(engine)),
        lambda: frozenset(),
        match_days=7,
        clock=lambda: T0,
    )
    counters: Counter[str] = Counter()
    rules = RoutingRules()
    agi = FastAgiServer(
        {
            "route": route_handler(
                router.route,
                fallback_decision(rules),
                budget_seconds=0.05,
                on_routed=lambda *_: None,
                counters=counters,
            )
        },
        host="127.0.0.1",
        port=0,
        read_timeout=1.0,
    )
    await agi.start()
    stuck = threading.Event()
    try:
        holder = asyncio.ensure_future(units(lambda _connection: stuck.wait(5)))
        await asyncio.sleep(0.05)
        burst = await asyncio.gather(
            *(asterisk_route(agi.port, f"1.{i}", f"1390013900{i}") for i in range(5))
        )
        assert [variables["HOTLINE_REASON"] for variables in burst] == ["fallback"] * 5
        stuck.set()
        await holder
        after = await asterisk_route(agi.port, "1.9", "13700137000")
        assert after["HOTLINE_REASON"] == "default" and after["HOTLINE_TICKET"]
        assert counters["fallback_timeout"] == 5
        assert counters["late_decisions_not_started"] == 5
        assert units.counters["expired"] == 5
        assert await store.count() == 1  # only the call after the burst opened a ticket
    finally:
        stuck.set()
        await agi.close()
        await units.close()
        await engine.dispose()


async def test_a_rated_call_rates_its_ticket_and_dissatisfied_asks_for_a_review(
    sqlite_url: str,
) -> None:
    await upgrade_database(sqlite_url)
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    store = TicketStore(sessions, SHANGHAI)
    service = TicketService(
        store, InProcessBus(), match_days=7, clock=lambda: T0, scale=DEFAULT_SCALE
    )
    answered = replace(
        CALL,
        outcome=CallOutcome.ANSWERED,
        agent_interface="PJSIP/agent1",
        answered_at=T0 + timedelta(seconds=5),
        ended_at=T0 + timedelta(seconds=60),
    )
    basic = await service.link(
        replace(answered, rating="basic", rating_key="2", rated_at=T0 + timedelta(seconds=58))
    )
    await CallJournal(sessions).record(basic)
    ticket = await store.get(basic.ticket or "")
    assert (ticket.rating, ticket.rated_agent, ticket.rated_call) == (
        "basic", "PJSIP/agent1", CALL.uniqueid,
    )  # fmt: skip
    assert not ticket.awaits_review and await store.list(to_review=True) == []
    [row] = await store.calls_of(ticket.number)
    assert (row.rating, row.rating_key) == ("basic", "2")

    later = replace(
        answered,
        uniqueid="1795575999.1",
        ticket=ticket.number,
        agent_interface="PJSIP/agent2",
        rating="dissatisfied",
        rated_at=T0 + timedelta(minutes=30),
    )
    await service.link(later)
    reviewed = [t.number for t in await store.list(to_review=True)]
    assert reviewed == [ticket.number]
    ticket = await store.get(ticket.number)
    assert (ticket.rating, ticket.rated_agent) == ("dissatisfied", "PJSIP/agent2")
    # A late-arriving older rating changes nothing; "not rated" never reaches the ticket.
    await service.link(replace(answered, ticket=ticket.number, rating="satisfied"))
    await service.link(replace(later, uniqueid="1795576000.2", rating="not_rated"))
    assert (await store.get(ticket.number)).rating == "dissatisfied"
    done = await store.mark_reviewed(ticket.number, T0 + timedelta(hours=1))
    assert not done.awaits_review and await store.list(to_review=True) == []
    assert service.counters["rated"] == 2 and service.counters["to_review"] == 1
    await engine.dispose()


async def test_only_a_ticket_on_the_review_list_can_be_marked_reviewed(store: TicketStore) -> None:
    number = await store.create("13800138000", T0)
    with pytest.raises(TicketError, match="not on the review list"):
        await store.mark_reviewed(number, T0)
