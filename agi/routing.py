"""The ``route`` FastAGI script: ask ``ivr_bypass`` and hand the answer to the dialplan.

The decision has a budget; past it, or on any error, the caller gets the default route at once
and the fallback is counted. The dialplan also falls back by itself if we never answer.

A decision that runs late is not cancelled: it may be in the middle of a database transaction,
and cancelling one there can leave SQLite write-locked until the garbage collector runs (seen in
the routing benchmark: every later call then waited out the 5 s busy timeout). It finishes in the
background, its ticket is found by the AMI side when the call is answered, and while too many
are still running new calls get the default route without starting another. A decision whose
database work has not even started when the budget runs out is not started at all: the decider
gets the budget's end as ``start_by`` and raises ``TimeoutError`` instead. Under a burst, queued
work nobody waits for would otherwise make every later call late too, and every route would
collapse to the default.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from agi.codec import AgiRequest
from agi.server import AgiHandler, AgiSession
from ivr_bypass.decision import IncomingCall, RoutingDecision

log = logging.getLogger(__name__)

MAX_LATE_DECISIONS = 32

Decider = Callable[[IncomingCall, float], Awaitable[RoutingDecision]]  # (call, start_by)
RoutedHook = Callable[[str, RoutingDecision], None]


def route_handler(
    decide: Decider,
    fallback: RoutingDecision,
    *,
    budget_seconds: float,
    on_routed: RoutedHook,
    counters: Counter[str],
) -> AgiHandler:
    late: set[asyncio.Task[RoutingDecision]] = set()

    def finish_late(task: asyncio.Task[RoutingDecision]) -> None:
        late.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, TimeoutError):  # the decider did not start (UnitExpired)
            counters["late_decisions_not_started"] += 1
        else:
            counters["late_decisions_failed" if error else "late_decisions"] += 1

    async def handle(request: AgiRequest, session: AgiSession) -> None:
        call = IncomingCall(
            caller_number=request.caller_number,
            dialled_number=request.extension or request.dialled_number,
            uniqueid=request.uniqueid,
            caller_name=request.caller_name,
        )
        decision = fallback
        if len(late) >= MAX_LATE_DECISIONS:
            counters["fallback_overload"] += 1
            log.warning(
                "routing %s: %d decisions still late; default route", call.uniqueid, len(late)
            )
        else:
            start_by = time.monotonic() + budget_seconds
            task = asyncio.create_task(decide(call, start_by), name=f"route-{call.uniqueid}")
            await asyncio.wait({task}, timeout=budget_seconds)
            if not task.done():
                counters["fallback_timeout"] += 1
                log.warning(
                    "routing %s took over %.0f ms; default route",
                    call.uniqueid,
                    budget_seconds * 1000,
                )
                late.add(task)
                task.add_done_callback(finish_late)
            elif isinstance(task.exception(), TimeoutError):  # expired as the budget ran out
                counters["fallback_timeout"] += 1
                log.warning(
                    "routing %s: not started within the budget; default route", call.uniqueid
                )
            elif task.exception() is not None:
                counters["fallback_error"] += 1
                log.error(
                    "routing %s failed; default route", call.uniqueid, exc_info=task.exception()
                )
            else:
                decision = task.result()
        counters["routed"] += 1
        on_routed(request.uniqueid, decision)
        await session.set_variables(decision.channel_variables())

    return handle
