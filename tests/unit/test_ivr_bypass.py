from __future__ import annotations

import pytest

from ivr_bypass.decision import (
    IncomingCall,
    RoutingReason,
    RoutingRules,
    decide,
    fallback_decision,
    normalise_number,
)


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
    ],
)
def test_unusable_caller_ids_say_why(raw: str, problem: RoutingReason) -> None:
    assert normalise_number(raw).problem is problem


def test_every_caller_reaches_a_queue_even_without_a_caller_id() -> None:
    rules = RoutingRules(default_queue="hotline")
    for number in ("13800138000", "", "anonymous"):
        decision = decide(IncomingCall(number, "12345", "1.1"), rules)
        assert decision.queue == "hotline"
    variables = decide(IncomingCall("", "12345", "1.1"), rules).channel_variables()
    assert variables["HOTLINE_REASON"] == "withheld-caller-id"
    assert fallback_decision(rules).channel_variables() == {
        "HOTLINE_QUEUE": "hotline",
        "HOTLINE_PRIORITY": "0",
        "HOTLINE_AGENT": "",
        "HOTLINE_TICKET": "",
        "HOTLINE_REASON": "fallback",
    }
