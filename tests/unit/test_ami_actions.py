from __future__ import annotations

import pytest

from ami.actions import InvalidAction, originate, queue_add, queue_pause, queue_remove


def test_actions_carry_the_headers_asterisk_expects() -> None:
    assert queue_add("hotline", "PJSIP/agent4", "Agent Four", penalty=2) == (
        "QueueAdd",
        {
            "Queue": "hotline",
            "Interface": "PJSIP/agent4",
            "Penalty": 2,
            "Paused": "false",
            "MemberName": "Agent Four",
        },
    )
    assert queue_pause("PJSIP/agent1", True, "午饭") == (
        "QueuePause",
        {"Interface": "PJSIP/agent1", "Paused": "true", "Reason": "午饭"},
    )
    assert queue_remove("hotline", "PJSIP/agent4")[1]["Queue"] == "hotline"
    name, headers = originate("PJSIP/agent2", "agents", "12345", variables={"HOTLINE_TICKET": "T1"})
    assert name == "Originate" and headers["Variable"] == ["HOTLINE_TICKET=T1"]
    assert headers["Timeout"] == 30000


@pytest.mark.parametrize(
    "build",
    [
        lambda: queue_add("hot line", "PJSIP/agent1"),
        lambda: queue_add("hotline", "agent1"),
        lambda: queue_pause("PJSIP/agent1", True, "lunch\r\nAction: Originate"),
        lambda: originate("PJSIP/agent1", "agents", "1;System(rm)"),
        lambda: originate("PJSIP/agent1", "agents", "1", variables={"A B": "x"}),
    ],
)
def test_odd_values_are_refused_before_sending(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidAction):
        build()
