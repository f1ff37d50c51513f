"""The ``route`` FastAGI script: ask ``ivr_bypass`` and hand the answer to the dialplan.

The decision and its budget are ``ivr_bypass.budget.BudgetedRouter``'s, shared with
FreeSWITCH's outbound socket; this shell reads the AGI environment and sets the variables.
"""

from __future__ import annotations

from collections import Counter

from agi.codec import AgiRequest
from agi.server import AgiHandler, AgiSession
from ivr_bypass.budget import MAX_LATE_DECISIONS, BudgetedRouter, Decider, RoutedHook
from ivr_bypass.decision import IncomingCall, RoutingDecision

__all__ = ["MAX_LATE_DECISIONS", "Decider", "RoutedHook", "route_handler", "route_handler_for"]


def route_handler(
    decide: Decider,
    fallback: RoutingDecision,
    *,
    budget_seconds: float,
    on_routed: RoutedHook,
    counters: Counter[str],
) -> AgiHandler:
    return route_handler_for(
        BudgetedRouter(
            decide, fallback, budget_seconds=budget_seconds, on_routed=on_routed, counters=counters
        )
    )


def route_handler_for(router: BudgetedRouter) -> AgiHandler:
    """The ``route`` script over a router that FreeSWITCH's outbound socket may share."""

    async def handle(request: AgiRequest, session: AgiSession) -> None:
        call = IncomingCall(
            caller_number=request.caller_number,
            dialled_number=request.extension or request.dialled_number,
            uniqueid=request.uniqueid,
            caller_name=request.caller_name,
        )
        decision = await router.route(call)
        await session.set_variables(decision.channel_variables())

    return handle
