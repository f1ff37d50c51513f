"""``hotline-agi``: the same routing as a classic AGI script, for AGI run on the PBX host.

Asterisk starts it once per call (``AGI(hotline-agi)``, optionally ``AGI(hotline-agi,CONFIG)``)
and talks over stdin/stdout; pyst2's ``AGI`` speaks that protocol. The decision is the very
``ivr_bypass`` code the FastAGI server runs, under the same budget and with the same fallback.
Nothing is written to stderr but our own one-line log: Asterisk shows a script's stderr on its
console.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from asterisk.agi import AGI

from infra.config import ConfigError, Settings, load_settings
from ivr_bypass.decision import IncomingCall, RoutingDecision, RoutingRules, fallback_decision

log = logging.getLogger("hotline.agi")


def call_from_environment(env: dict[str, str]) -> IncomingCall:
    """The call as the AGI environment (``agi_*`` lines) describes it."""

    def caller_field(name: str) -> str:
        value = env.get(name, "")
        return "" if value.lower() == "unknown" else value

    return IncomingCall(
        caller_number=caller_field("agi_callerid"),
        dialled_number=env.get("agi_extension") or env.get("agi_dnid", ""),
        uniqueid=env.get("agi_uniqueid", ""),
        caller_name=caller_field("agi_calleridname"),
    )


async def decide_within_budget(settings: Settings, call: IncomingCall) -> RoutingDecision:
    """Route like the FastAGI server; past the budget or on any error, the default route."""
    from hotline.domain import build_router, routing_rules
    from infra.storage import create_engine, transactions_for

    rules = routing_rules(settings)
    engine = create_engine(settings.database_url)
    units = transactions_for(engine, sync=settings.database_sync)
    try:
        free = await _free_agents(settings.redis_url) if settings.redis_url else None
        router = build_router(settings, engine, units, lambda: free, lambda: datetime.now(UTC))
        return await asyncio.wait_for(router.route(call), settings.routing_budget_ms / 1000)
    except Exception as error:
        log.warning("routing %s failed (%s); default route", call.uniqueid, error)
        return fallback_decision(rules)
    finally:
        await units.close()
        await engine.dispose()


async def _free_agents(redis_url: str) -> frozenset[str] | None:
    """Free agents from the snapshot ``hotline run`` keeps in Redis; None if it cannot be read."""
    from infra.bus import create_bus
    from ivr_bypass.router import free_agents_in
    from queue_stats.service import SNAPSHOT_KEY

    bus = create_bus(redis_url)
    snapshot: Any = None
    try:
        snapshot = await asyncio.wait_for(bus.load_snapshot(SNAPSHOT_KEY), 0.02)
    except Exception as error:  # routing works without the agents' states
        log.debug("no agent states: %s", error)
    finally:
        await bus.close()
    return free_agents_in(snapshot)


def main(
    argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="hotline-agi: %(message)s")
    # Asterisk may hand us bytes that are not UTF-8 in a caller name: replace, never crash.
    stdin = stdin or io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    stdout = stdout or sys.stdout
    agi = AGI(stdin=stdin, stdout=stdout, stderr=open(os.devnull, "w"))  # noqa: SIM115
    call = call_from_environment(agi.env)
    try:
        settings = load_settings(argv[0] if argv else None)
        decision = asyncio.run(decide_within_budget(settings, call))
    except ConfigError as error:
        log.error("configuration error: %s; default route", error)
        decision = fallback_decision(RoutingRules())
    for name, value in decision.channel_variables().items():
        agi.set_variable(name, value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
