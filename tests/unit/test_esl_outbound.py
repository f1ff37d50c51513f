"""Routing on FreeSWITCH: the bridge's outbound-socket router against FreeSWITCH's side of the
recorded socket sessions. ``connect`` goes out at once and ``resume`` never (the dialplan sets
``socket_resume``; a late ``resume`` dropped a queued call); the decision is FastAGI's, within
the same budget."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from esl.outbound import OutboundRouter, multiset_command
from ivr_bypass.budget import BudgetedRouter
from ivr_bypass.decision import IncomingCall, RoutingDecision, RoutingReason
from tests.esl_outbound import RecordedCall

FALLBACK = RoutingDecision("hotline", 0, RoutingReason.FALLBACK)
DECIDED = RoutingDecision("enterprise", 5, RoutingReason.ENTERPRISE, ticket="12345-20261207-000042")


class Decider:
    def __init__(self, behaviour: str = "answer") -> None:
        self.behaviour = behaviour
        self.calls: list[IncomingCall] = []
        self.started = asyncio.Event()

    async def __call__(self, call: IncomingCall, start_by: float) -> RoutingDecision:
        self.calls.append(call)
        self.started.set()
        if self.behaviour == "slow":
            await asyncio.sleep(1.0)
        if self.behaviour == "fail":
            raise RuntimeError("database gone")
        return DECIDED


@pytest.fixture
async def served() -> AsyncIterator[tuple[OutboundRouter, Decider, list]]:
    decider = Decider()
    routed: list = []
    budget = BudgetedRouter(
        decider,
        FALLBACK,
        budget_seconds=0.05,
        on_routed=lambda uniqueid, decision: routed.append((uniqueid, decision)),
        counters=Counter(),
    )
    router = OutboundRouter(budget, port=0, deadline=1.0)
    await router.start()
    yield router, decider, routed
    await router.close()


def variables_of(commands: list[str]) -> dict[str, str]:
    sendmsg = next(c for c in commands if c.startswith("sendmsg"))
    argument = next(line for line in sendmsg.splitlines() if line.startswith("execute-app-arg:"))
    pairs = argument.split(": ", 1)[1].removeprefix("^^|").split("|")
    return dict(pair.split("=", 1) for pair in pairs)


async def test_a_call_is_routed_connect_first_and_never_resume(served) -> None:  # type: ignore[no-untyped-def]
    router, decider, routed = served
    call = RecordedCall(connection=1)
    await call.run(router.port)
    assert [c.split("\n", 1)[0] for c in call.commands] == ["connect", "sendmsg", "exit"]
    assert "execute-app-name: multiset" in call.commands[1]
    assert "event-lock: true" in call.commands[1]
    assert variables_of(call.commands) == {
        "HOTLINE_QUEUE": "enterprise",
        "HOTLINE_PRIORITY": "5",
        "HOTLINE_AGENT": "",
        "HOTLINE_TICKET": "12345-20261207-000042",
        "HOTLINE_REASON": "enterprise",
    }
    # The call as routing saw it, from FreeSWITCH's channel data (URL-encoded UTF-8 name).
    assert decider.calls == [
        IncomingCall("13700000001", "12347", "3e623554-ebb0-4c35-83e5-7d7069d01f7c", "市民5号")
    ]
    assert routed == [("3e623554-ebb0-4c35-83e5-7d7069d01f7c", DECIDED)]
    assert router.counters["routed"] == 1


@pytest.mark.parametrize("behaviour", ["slow", "fail"])
async def test_a_late_or_failed_decision_sends_the_default_route_in_budget(
    served,
    behaviour: str,  # type: ignore[no-untyped-def]
) -> None:
    router, decider, _ = served
    decider.behaviour = behaviour
    call = RecordedCall(connection=2)
    await call.run(router.port)
    assert variables_of(call.commands)["HOTLINE_REASON"] == "fallback"
    assert variables_of(call.commands)["HOTLINE_QUEUE"] == "hotline"
    assert call.command_times[1] - call.command_times[0] < 0.5  # the budget, not the decision


async def test_a_freeswitch_that_stops_answering_is_let_go_at_the_deadline(served) -> None:  # type: ignore[no-untyped-def]
    """The dialplan's socket_resume continues the call once the socket closes (60 ms)."""
    router, _, _ = served
    call = RecordedCall(connection=3, stall_after=1)
    await call.run(router.port)
    assert [c.split("\n", 1)[0] for c in call.commands] == ["connect", "sendmsg"]
    assert call.closed_by_router_after is not None and call.closed_by_router_after < 2.0
    assert router.counters["failed_connections"] == 1


async def test_a_call_the_guard_already_moved_on_is_left_alone(served) -> None:  # type: ignore[no-untyped-def]
    """connect's reply says the channel runs another application now: only exit."""
    router, decider, _ = served
    call = RecordedCall(connection=2, current_application="callcenter")
    await call.run(router.port)
    assert [c.split("\n", 1)[0] for c in call.commands] == ["connect", "exit"]
    assert not decider.calls and router.counters["too_late"] == 1


async def test_connect_goes_out_before_anything_can_fail(served) -> None:  # type: ignore[no-untyped-def]
    """Even a connection that FreeSWITCH never answers gets ``connect`` at once."""
    router, decider, _ = served
    call = RecordedCall(connection=1, stall_after=0)
    await call.run(router.port)
    assert call.commands == ["connect\n\n"] and call.command_times[0] < 0.2
    assert not decider.calls


def test_variables_freeswitch_could_misread_are_refused() -> None:
    assert multiset_command({"HOTLINE_QUEUE": "hotline"}).endswith(
        b"execute-app-arg: ^^|HOTLINE_QUEUE=hotline\nevent-lock: true\n\n"
    )
    for bad in ("a|b", "a b", "x\nexecute-app-name: system"):
        with pytest.raises(ValueError, match="not safe"):
            multiset_command({"HOTLINE_QUEUE": bad})
