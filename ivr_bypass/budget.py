"""A routing decision within a budget, whichever PBX asks (FastAGI or FreeSWITCH's socket).

The decision has a budget; past it, or on any error, the caller gets the default route at once
and the fallback is counted. The PBX's dialplan also falls back by itself if we never answer.

A decision that runs late is not cancelled: it may be in the middle of a database transaction,
and cancelling one there can leave SQLite write-locked until the garbage collector runs (seen in
the routing benchmark: every later call then waited out the 5 s busy timeout). It finishes in the
background, its ticket is found by the statistics side when the call is answered, and while too
many are still running new calls get the default route without starting another. A decision
whose database work has not even started when the budget runs out is not started at all: the
decider gets the budget's end as ``start_by`` and raises ``TimeoutError`` instead. Under a burst,
queued work nobody waits for would otherwise make every later call late too, and every route
would collapse to the default.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from ivr_bypass.decision import IncomingCall, RoutingDecision

log = logging.getLogger(__name__)

MAX_LATE_DECISIONS = 32

# (call, start_by): a coroutine, as it runs as a task of its own.
Decider = Callable[[IncomingCall, float], Coroutine[Any, Any, RoutingDecision]]
RoutedHook = Callable[[str, RoutingDecision], None]


class BudgetedRouter:
    """``route(call)``: the decision, or the fallback once the budget is spent; never raises."""

    def __init__(
        self,
        decide: Decider,
        fallback: RoutingDecision,
        *,
        budget_seconds: float,
        on_routed: RoutedHook,
        counters: Counter[str],
    ) -> None:
        self._decide = decide
        self.fallback = fallback
        self.budget_seconds = budget_seconds
        self._on_routed = on_routed
        self.counters = counters
        self._late: set[asyncio.Task[RoutingDecision]] = set()

    def _finish_late(self, task: asyncio.Task[RoutingDecision]) -> None:
        self._late.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, TimeoutError):  # the decider did not start (UnitExpired)
            self.counters["late_decisions_not_started"] += 1
        else:
            self.counters["late_decisions_failed" if error else "late_decisions"] += 1

    async def route(self, call: IncomingCall) -> RoutingDecision:
        decision = await self._within_budget(call)
        self.counters["routed"] += 1
        self._on_routed(call.uniqueid, decision)
        return decision

    async def _within_budget(self, call: IncomingCall) -> RoutingDecision:
        counters = self.counters
        if len(self._late) >= MAX_LATE_DECISIONS:
            counters["fallback_overload"] += 1
            log.warning(
                "routing %s: %d decisions still late; default route", call.uniqueid, len(self._late)
            )
            return self.fallback
        start_by = time.monotonic() + self.budget_seconds
        task = asyncio.create_task(self._decide(call, start_by), name=f"route-{call.uniqueid}")
        await asyncio.wait({task}, timeout=self.budget_seconds)
        if not task.done():
            counters["fallback_timeout"] += 1
            log.warning(
                "routing %s took over %.0f ms; default route",
                call.uniqueid,
                self.budget_seconds * 1000,
            )
            self._late.add(task)
            task.add_done_callback(self._finish_late)
            return self.fallback
        error = task.exception()
        if isinstance(error, TimeoutError):  # expired as the budget ran out
            counters["fallback_timeout"] += 1
            log.warning("routing %s: not started within the budget; default route", call.uniqueid)
            return self.fallback
        if error is not None:
            counters["fallback_error"] += 1
            log.error("routing %s failed; default route", call.uniqueid, exc_info=error)
            return self.fallback
        return task.result()
