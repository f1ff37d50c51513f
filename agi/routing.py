"""The ``route`` FastAGI script: ask ``ivr_bypass`` and hand the answer to the dialplan.

The decision has a budget; past it, or on any error, the caller gets the default route at once
and the fallback is counted. The dialplan also falls back by itself if we never answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from agi.codec import AgiRequest
from agi.server import AgiHandler, AgiSession
from ivr_bypass.decision import IncomingCall, RoutingDecision

log = logging.getLogger(__name__)

Decider = Callable[[IncomingCall], Awaitable[RoutingDecision]]
RoutedHook = Callable[[str, RoutingDecision], None]


def route_handler(
    decide: Decider,
    fallback: RoutingDecision,
    *,
    budget_seconds: float,
    on_routed: RoutedHook,
    counters: Counter[str],
) -> AgiHandler:
    async def handle(request: AgiRequest, session: AgiSession) -> None:
        call = IncomingCall(
            caller_number=request.caller_number,
            dialled_number=request.extension or request.dialled_number,
            uniqueid=request.uniqueid,
            caller_name=request.caller_name,
        )
        try:
            decision = await asyncio.wait_for(decide(call), budget_seconds)
        except TimeoutError:
            counters["fallback_timeout"] += 1
            log.warning(
                "routing %s took over %.0f ms; default route", call.uniqueid, budget_seconds * 1000
            )
            decision = fallback
        except Exception:
            counters["fallback_error"] += 1
            log.exception("routing %s failed; default route", call.uniqueid)
            decision = fallback
        counters["routed"] += 1
        on_routed(request.uniqueid, decision)
        for name, value in decision.channel_variables().items():
            await session.set_variable(name, value)

    return handle
