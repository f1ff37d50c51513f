"""The recorder's own FastAGI ``route`` script: routes by caller number, nothing else.

Recordings of queue statistics need calls in several queues without a database of tickets and
enterprises behind them, so this stand-in routes by number prefix alone.  It speaks to the
dialplan exactly like the bridge (the ``HOTLINE_*`` channel
variables of :meth:`ivr_bypass.decision.RoutingDecision.channel_variables`).
"""

from __future__ import annotations

from collections import Counter

from agi.codec import AgiRequest
from agi.server import AgiSession, FastAgiServer
from ivr_bypass.decision import RoutingDecision, RoutingReason

AGI_HOST = "127.0.0.1"
AGI_PORT = 4573  # asterisk-conf/extensions.conf: HOTLINE_AGI_URL

# caller number prefix -> (queue, priority, HOTLINE_REASON)
PREFIX_ROUTES = (
    ("1390000", "enterprise", 5, "enterprise-caller"),
    ("1200000", "emergency", 10, "emergency-caller"),
)


def route_for(caller_number: str) -> tuple[str, int, str]:
    for prefix, queue, priority, reason in PREFIX_ROUTES:
        if caller_number.startswith(prefix):
            return queue, priority, reason
    return "hotline", 0, RoutingReason.DEFAULT.value


def channel_variables(caller_number: str) -> dict[str, str]:
    queue, priority, reason = route_for(caller_number)
    variables = RoutingDecision(queue, priority, RoutingReason.DEFAULT).channel_variables()
    variables["HOTLINE_REASON"] = reason
    return variables


def make_server(routed: Counter[str]) -> FastAgiServer:
    """A FastAGI server on 127.0.0.1:4573 with the ``route`` script; counts calls per queue."""

    async def handle(request: AgiRequest, session: AgiSession) -> None:
        variables = channel_variables(request.caller_number)
        routed[variables["HOTLINE_QUEUE"]] += 1
        for name, value in variables.items():
            await session.set_variable(name, value)

    return FastAgiServer({"route": handle}, host=AGI_HOST, port=AGI_PORT)
