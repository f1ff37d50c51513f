"""The routing decision as a pure function: every rule, and that every caller reaches a person."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr_bypass.decision import (
    CallerFacts,
    IncomingCall,
    OpenTicket,
    RoutingReason,
    RoutingRules,
    decide,
    fallback_decision,
    normalise_number,
)

RULES = RoutingRules()
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CALLER = "+86 138-0013-8000"


def call(number: str = CALLER, dialled: str = "12345") -> IncomingCall:
    return IncomingCall(number, dialled, "1795575495.7", "张三")


def ticket(
    number: str = "12345-20261120-000007",
    owner: str | None = "PJSIP/agent2",
    emergency: bool = False,
    age_hours: float = 1,
) -> OpenTicket:
    return OpenTicket(number, owner, emergency, T0 - timedelta(hours=age_hours))


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("+86 138-0013-8000", "13800138000"),
        ("008613800138000", "13800138000"),
        ("13800138000", "13800138000"),
        ("010 6512 3456", "1065123456"),
        ("(0571) 8888-1234", "57188881234"),
        ("+1 415 555 0100", "0014155550100"),
    ],
)
def test_numbers_are_normalised(raw: str, digits: str) -> None:
    assert normalise_number(raw).digits == digits


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", RoutingReason.WITHHELD_CALLER_ID),
        ("anonymous", RoutingReason.WITHHELD_CALLER_ID),
        ("12", RoutingReason.INVALID_CALLER_ID),
        ("abc<script>", RoutingReason.INVALID_CALLER_ID),
        ("'; DROP TABLE tickets;--", RoutingReason.INVALID_CALLER_ID),
        ("9" * 4096, RoutingReason.INVALID_CALLER_ID),
    ],
)
def test_unusable_caller_ids_say_why_and_still_reach_the_default_queue(
    raw: str, problem: RoutingReason
) -> None:
    assert normalise_number(raw).problem is problem
    decision = decide(call(raw), CallerFacts(), RULES)
    assert (decision.queue, decision.reason, decision.new_ticket) == ("hotline", problem, True)


def test_a_new_caller_gets_the_default_queue_and_a_new_ticket() -> None:
    decision = decide(call(), CallerFacts(), RULES)
    assert (decision.queue, decision.priority, decision.reason) == ("hotline", 0, "default")
    assert decision.new_ticket and decision.ticket is None and decision.agent is None
    assert decision.caller_digits == "13800138000"


def test_the_owner_of_an_open_ticket_is_rung_first_when_free() -> None:
    facts = CallerFacts((ticket(),), free_agents=frozenset({"PJSIP/agent2", "PJSIP/agent1"}))
    decision = decide(call(), facts, RULES)
    assert decision.reason is RoutingReason.TICKET_OWNER
    assert decision.agent == "PJSIP/agent2"
    assert decision.ticket == "12345-20261120-000007" and not decision.new_ticket
    assert (decision.queue, decision.priority) == ("hotline", RULES.open_ticket_priority)


@pytest.mark.parametrize("free", [frozenset(), frozenset({"PJSIP/agent1"})])
def test_a_busy_owner_means_the_queue_with_raised_priority(free: frozenset[str]) -> None:
    decision = decide(call(), CallerFacts((ticket(),), free_agents=free), RULES)
    assert decision.reason is RoutingReason.OPEN_TICKET
    assert decision.agent is None
    assert decision.priority > 0 and decision.ticket == "12345-20261120-000007"


def test_unknown_availability_still_prefers_the_owner_for_the_dialplan_to_check() -> None:
    decision = decide(call(), CallerFacts((ticket(),), free_agents=None), RULES)
    assert decision.agent == "PJSIP/agent2"


def test_an_unowned_open_ticket_is_reused_without_a_preferred_agent() -> None:
    decision = decide(call(), CallerFacts((ticket(owner=None),), free_agents=frozenset()), RULES)
    assert (decision.reason, decision.agent) == (RoutingReason.OPEN_TICKET, None)


def test_the_most_recent_open_ticket_wins() -> None:
    older = ticket("12345-20261101-000001", owner="PJSIP/agent1", age_hours=200)
    newer = ticket("12345-20261124-000002", owner="PJSIP/agent3", age_hours=2)
    decision = decide(call(), CallerFacts((older, newer)), RULES)
    assert (decision.ticket, decision.agent) == ("12345-20261124-000002", "PJSIP/agent3")


def test_enterprises_go_to_their_queue_with_high_priority() -> None:
    decision = decide(call("021-6543 2100"), CallerFacts(enterprise_name="上海电力"), RULES)
    assert (decision.queue, decision.reason) == ("enterprise", RoutingReason.ENTERPRISE)
    assert decision.priority == RULES.enterprise_priority > RULES.open_ticket_priority
    assert decision.new_ticket


def test_an_enterprise_with_an_open_ticket_keeps_it_and_its_owner() -> None:
    facts = CallerFacts((ticket(),), "上海电力", frozenset({"PJSIP/agent2"}))
    decision = decide(call(), facts, RULES)
    assert (decision.queue, decision.ticket, decision.agent) == (
        "enterprise",
        "12345-20261120-000007",
        "PJSIP/agent2",
    )


@pytest.mark.parametrize("dialled", ["110", "1-1-0", "119"])
def test_a_dialled_emergency_number_goes_to_the_front(dialled: str) -> None:
    facts = CallerFacts((ticket(),), "上海电力", frozenset({"PJSIP/agent2"}))
    decision = decide(call(dialled=dialled), facts, RULES)
    assert (decision.queue, decision.reason) == ("emergency", RoutingReason.EMERGENCY_NUMBER)
    assert decision.priority == RULES.emergency_priority
    assert decision.emergency and decision.new_ticket and decision.agent is None


def test_an_emergency_reuses_the_callers_open_emergency_ticket() -> None:
    urgent = ticket("12345-20261125-000003", emergency=True)
    decision = decide(call(dialled="110"), CallerFacts((ticket(), urgent)), RULES)
    assert decision.ticket == "12345-20261125-000003" and not decision.new_ticket


def test_a_caller_with_an_open_emergency_ticket_goes_to_the_front() -> None:
    urgent = ticket("12345-20261125-000003", emergency=True, age_hours=5)
    facts = CallerFacts((ticket(age_hours=1), urgent), "上海电力", frozenset())
    decision = decide(call(), facts, RULES)
    assert (decision.queue, decision.reason, decision.ticket) == (
        "emergency",
        RoutingReason.EMERGENCY_TICKET,
        "12345-20261125-000003",
    )


def test_tickets_are_never_matched_without_a_caller_id() -> None:
    """A lookup for an empty number could return a stranger's ticket; it must not be used."""
    decision = decide(call("anonymous"), CallerFacts((ticket(),), "x", frozenset()), RULES)
    assert decision.ticket is None and decision.queue == "hotline"


def test_rules_are_data() -> None:
    rules = RoutingRules(default_queue="citizens", emergency_numbers=frozenset({"12345110"}))
    assert decide(call(), CallerFacts(), rules).queue == "citizens"
    assert decide(call(dialled="12345110"), CallerFacts(), rules).queue == "emergency"
    assert decide(call(dialled="110"), CallerFacts(), rules).queue == "citizens"


def test_channel_variables_and_the_fallback() -> None:
    decision = decide(call(), CallerFacts((ticket(),)), RULES)
    assert decision.channel_variables() == {
        "HOTLINE_QUEUE": "hotline",
        "HOTLINE_PRIORITY": "5",
        "HOTLINE_AGENT": "PJSIP/agent2",
        "HOTLINE_TICKET": "12345-20261120-000007",
        "HOTLINE_REASON": "ticket-owner",
    }
    assert fallback_decision(RULES).channel_variables() == {
        "HOTLINE_QUEUE": "hotline",
        "HOTLINE_PRIORITY": "0",
        "HOTLINE_AGENT": "",
        "HOTLINE_TICKET": "",
        "HOTLINE_REASON": "fallback",
    }


tickets_strategy = st.lists(
    st.builds(
        OpenTicket,
        st.from_regex(r"12345-2026\d{4}-\d{6}", fullmatch=True),
        st.one_of(st.none(), st.sampled_from(["PJSIP/agent1", "PJSIP/agent2"])),
        st.booleans(),
        st.datetimes(timezones=st.just(UTC)),
    ),
    max_size=4,
)


@given(
    number=st.text(max_size=40),
    dialled=st.text(max_size=12),
    open_tickets=tickets_strategy,
    enterprise=st.one_of(st.none(), st.text(min_size=1, max_size=10)),
    free=st.one_of(st.none(), st.frozensets(st.sampled_from(["PJSIP/agent1", "PJSIP/agent2"]))),
)
def test_every_call_gets_a_known_queue_and_either_a_ticket_or_a_new_one(
    number: str,
    dialled: str,
    open_tickets: list[OpenTicket],
    enterprise: str | None,
    free: frozenset[str] | None,
) -> None:
    decision = decide(
        call(number, dialled), CallerFacts(tuple(open_tickets), enterprise, free), RULES
    )
    assert decision.queue in ("hotline", "enterprise", "emergency")
    assert (decision.ticket is None) == decision.new_ticket
    assert decision.ticket is None or decision.ticket in {t.number for t in open_tickets}
    if decision.agent is not None:
        assert free is None or decision.agent in free
    for value in decision.channel_variables().values():
        assert "\n" not in value and "\r" not in value
